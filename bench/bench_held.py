#!/usr/bin/env python3
"""bench_held: commit and checkout of a *held* workspace beside git (issue 10).

A workspace is held when a process other than snapws has its current
directory, an open file or a memory map inside it. Then (kernel backend)
``snapws commit`` copies the changed files into the new layer through the
frozen live mount instead of renaming the upperdir and remounting, and
checkout rewrites only the differing paths through the live mount; the
workspace's state.json records ``base``. This bench measures that cost
beside git on the same tree and the same changes, and beside the free
(zero-copy remount) workspace.

For each tree size it builds one tree (bench_core's builder, mean file 10 kB)
under --workdir and copies it three times: a workspace that a ``sleep``
process keeps held (its cwd is inside), a workspace nothing holds (free), and
a git repository. Each workspace has its own explicit store in the work dir
(kernel backend; needs root). Then --rounds rounds; each applies the same
fresh --changes changes (a third rewrites, a third additions, a third
deletions) to the three trees and times, each command its own process, sync
before each step, the tool that goes first rotating:

    status    snapws status                       git status
    commit    snapws commit -m ...                git add -A && git commit -q -m ...
    checkout  snapws checkout HEAD~1 + main       git checkout -q HEAD~1 + main
    clean     snapws status (after checkout back) git status

"clean" is status on a committed tree: for the held workspace the upperdir
keeps every change since it became held, so this shows what the growing
upperdir costs. After each held step the bench checks that state.json has
``base`` (held) and that the free one has not. Medians of the times and of
the per-round ratios snapws/git (the machine is shared and noisy: read the
ratios).

    sudo python bench/bench_held.py                             # 5,000 + 100,000 files
    sudo python bench/bench_held.py --files 2000 --rounds 2     # quick check

Everything it made (trees, stores, mounts, the holder) is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_all
import bench_core as core

OPS = ("status", "commit", "checkout", "clean")
TOOLS = ("held", "free", "git")


class Workspace:
    """One snapws workspace with its own store."""

    def __init__(self, r: core.Runner, tree: Path, store: Path) -> None:
        self.r, self.tree, self.store = r, tree, store

    def sw(self, *args: str) -> tuple[float, str]:
        return self.r.sw("--store", str(self.store), *args, cwd=self.tree)

    def state(self) -> dict[str, Any]:
        (path,) = (self.store / "workspaces").glob("*/state.json")
        return dict(json.loads(path.read_text()))

    def unmount(self) -> None:
        if self.tree.exists() and core.is_mounted(self.tree):
            try:
                self.r.sw("--store", str(self.store), "umount", str(self.tree), cwd=Path("/"))
            except RuntimeError as e:
                log(f"bench: snapws umount failed, detaching: {e}")
            if core.is_mounted(self.tree):
                subprocess.run(["umount", "-l", str(self.tree)], check=False)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_size(args: argparse.Namespace, files: int, work: Path) -> dict[str, Any]:
    base = work / f"n{files}"
    r = core.Runner(
        bench_all.snapws_argv(args.snapws), args.verbose, work / "pycache", not args.no_server
    )
    held = Workspace(r, base / "held" / "tree", base / "held" / "store")
    free = Workspace(r, base / "free" / "tree", base / "free" / "store")
    git_tree = base / "git" / "tree"
    samples: dict[str, dict[str, list[float]]] = {op: {t: [] for t in TOOLS} for op in OPS}
    out: dict[str, Any] = {"files": files, "samples": samples, "held_checked": 0}
    holder: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.perf_counter()
        spec = core.plan_tree(files, files * args.mean_bytes, core.SEED)
        core.build_tree(held.tree, spec, core.random_buffer(core.SEED))
        for tree in (free.tree, git_tree):
            tree.parent.mkdir(parents=True)
            subprocess.run(["cp", "-a", str(held.tree), str(tree)], check=True)
        out["tree_bytes"] = sum(spec.sizes)
        log(
            f"{files:,} files: built {core.fmt_bytes(sum(spec.sizes))} x3 in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        r.warm_bytecode(work)
        for ws in (held, free):
            ws.sw("init", "--backend", "kernel", ".")
        for c in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
            r.git(*c, cwd=git_tree)
        holder = subprocess.Popen(["sleep", "1000000"], cwd=held.tree)
        r.warm_server(free.tree, "--store", str(free.store))
        cbuf = core.random_buffer(core.SEED + 2)
        per_kind = max(1, args.changes // 3)
        for rnd in range(args.rounds):
            cs = bench_all.round_changes(spec, per_kind, rnd)
            for tree in (held.tree, free.tree, git_tree):
                core.apply_changes(tree, cs, cbuf)
            spec = bench_all.apply_to_spec(spec, cs)
            steps: dict[str, tuple[list[list[str]], list[list[str]]]] = {
                "status": ([["status"]], [["status"]]),
                "commit": (
                    [["commit", "-m", f"round {rnd}"]],
                    [["add", "-A"], ["commit", "-q", "-m", f"round {rnd}"]],
                ),
                "checkout": (
                    [["checkout", "HEAD~1"], ["checkout", "main"]],
                    [["checkout", "-q", "HEAD~1"], ["checkout", "-q", "main"]],
                ),
                "clean": ([["status"]], [["status"]]),
            }
            for op, (sw_cmds, git_cmds) in steps.items():
                order = list(TOOLS[rnd % 3 :] + TOOLS[: rnd % 3])  # rotate who goes first
                for tool in order:
                    core.sync()
                    if tool == "git":
                        dt = sum(r.git(*c, cwd=git_tree)[0] for c in git_cmds)
                    else:
                        ws = held if tool == "held" else free
                        dt = sum(ws.sw(*c)[0] for c in sw_cmds)
                    samples[op][tool].append(dt)
                if op in ("commit", "checkout"):
                    check_states(held, free, holder)
                    out["held_checked"] += 1
            log(
                f"  round {rnd + 1}/{args.rounds}: "
                + ", ".join(
                    f"{op} held {samples[op]['held'][-1]:.2f}s free {samples[op]['free'][-1]:.2f}s"
                    f" git {samples[op]['git'][-1]:.2f}s"
                    for op in OPS
                )
                + f"   load {os.getloadavg()[0]:.1f}"
            )
        out["check_paths"] = {
            "held": core.count_lines(held.sw("diff", "--name-only", "HEAD~1", "HEAD")[1]),
            "free": core.count_lines(free.sw("diff", "--name-only", "HEAD~1", "HEAD")[1]),
            "git": core.count_lines(
                r.git("diff", "--name-only", "HEAD~1", "HEAD", cwd=git_tree)[1]
            ),
        }
        out["held_upper_files"] = sum(len(f) for _, _, f in os.walk(held.store / "workspaces"))
    finally:
        r.stop_servers()
        if holder is not None:
            holder.kill()
            holder.wait()
        for ws in (held, free):
            ws.unmount()
        shutil.rmtree(base, ignore_errors=True)
    summarise(out)
    return out


def check_states(held: Workspace, free: Workspace, holder: subprocess.Popen[bytes]) -> None:
    """The held workspace really was changed through its live mount, the free one not."""
    if holder.poll() is not None:
        raise RuntimeError("the holder process exited")
    if held.state().get("base") is None:
        raise RuntimeError(f"{held.tree} is not held: state.json has no base")
    if free.state().get("base") is not None:
        raise RuntimeError(f"{free.tree} is held: state.json has base")


def summarise(out: dict[str, Any]) -> None:
    med: dict[str, dict[str, float]] = {}
    for op, s in out["samples"].items():
        row = {t: statistics.median(s[t]) for t in TOOLS}
        for t in ("held", "free"):
            ratios = [a / b for a, b in zip(s[t], s["git"], strict=True) if b > 0]
            row[f"{t}/git"] = statistics.median(ratios)
            row[f"{t}/git min"] = min(ratios)
            row[f"{t}/git max"] = max(ratios)
        row["held last"] = s["held"][-1]
        med[op] = row
    out["median"] = med


def render(results: list[dict[str, Any]], argv: list[str]) -> str:
    lines = [
        f"`{' '.join(argv)}`  (medians of {len(results[0]['samples']['commit']['git'])} rounds; "
        "ratio = median of the per-round ratios snapws/git, [min-max])",
        "",
        "| files | step | held | free | git | held/git | free/git |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "status": "status (300 changes)",
        "commit": "commit",
        "checkout": "checkout HEAD~1 + back",
        "clean": "status, clean (after checkout)",
    }
    for res in results:
        for op in OPS:
            m = res["median"][op]
            lines.append(
                f"| {res['files']:,} | {names[op]} | {m['held']:.3f} s | {m['free']:.3f} s | "
                f"{m['git']:.3f} s | {m['held/git']:.2f} [{m['held/git min']:.2f}-"
                f"{m['held/git max']:.2f}] | {m['free/git']:.2f} [{m['free/git min']:.2f}-"
                f"{m['free/git max']:.2f}] |"
            )
    lines.append("")
    for res in results:
        lines.append(
            f"{res['files']:,} files: held state verified after {res['held_checked']} steps; "
            f"diff HEAD~1 HEAD paths {res['check_paths']}; files under the held store's "
            f"workspace dir at the end: {res['held_upper_files']:,}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", default="5000,100000", help="tree sizes in files (5000,100000)")
    ap.add_argument("--changes", type=int, default=300, help="changes per round, 1/3 each kind")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per size (3)")
    ap.add_argument("--mean-bytes", type=int, default=10_000, help="mean file size (10000)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"), help="where the trees go")
    ap.add_argument("--snapws", help="snapws command (default: the console script)")
    ap.add_argument(
        "--no-server", action="store_true", help="SNAPWS_SERVER=0 (default: the command server)"
    )
    ap.add_argument("--json", type=Path, help="write every sample here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_held: needs root (kernel backend)")
    work = Path(args.workdir) / f"snapws-bench-held-{os.getpid()}"
    work.mkdir(parents=True)
    results = []
    try:
        for n in (int(x) for x in args.files.split(",")):
            results.append(bench_size(args, n, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(render(results, ["python", "bench/bench_held.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
