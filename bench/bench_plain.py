#!/usr/bin/env python3
"""snapws's plain backend vs git on one big tree, side by side, in one run.

The plain backend mounts nothing: the workspace is an ordinary directory and
``snapws status`` compares it with HEAD through a stat cache, as ``git
status`` does with its index. This builds the tree of bench_core.py (N files,
default 100,000, ~1 GB, seeded), copies it, and times on the two copies:

    init       snapws init --backend plain  vs  git init && git add -A && git commit
    (changes)  the same 100 modifications, 100 additions, 100 deletions in both
    status     snapws status                vs  git status     (the target: <= 2x git)
    status/1   the same, the walk in one process (SNAPWS_PLAIN_SCAN_PROCS=1)
    status/w   with --watch: the same with the file-system watcher
               (plain_watch = true; started and its token recorded untimed)
    commit     snapws commit -m             vs  git add -A && git commit -m
    clean      snapws status                vs  git status     (after the commit)
    checkout   snapws checkout HEAD~1       vs  git checkout HEAD~1   (detached)
    back       snapws checkout main         vs  git checkout main

status, clean and the checkout pair are repeated --repeat times (default 5;
the table shows the best sample, the JSON has them all); init and commit run
once (--status-only: init and the status steps). Warm cache, ``sync``
(untimed) before every measured step; every command is a separate process
timed around subprocess.run. snapws runs as a user gets it: the console
script hands the command to a command server of the bench's own (a
private XDG_RUNTIME_DIR, started before the first measured step and ended
at the end); --no-server runs each command in a process of its own, so
Python's start-up is included (the table shows it).

Needs no root (nothing is mounted); git. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    SEED,
    Runner,
    apply_changes,
    build_tree,
    count_lines,
    fmt_bytes,
    plan_changes,
    plan_tree,
    random_buffer,
    snapws_cmd,
    sync,
)


class PlainRunner(Runner):
    """bench_core's runner, with per-command environment additions."""

    def sw_env(self, extra: dict[str, str], *args: str, cwd: Path) -> tuple[float, str]:
        saved = self.env
        self.env = {**saved, **extra}
        try:
            return self.sw(*args, cwd=cwd)
        finally:
            self.env = saved


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or f"/var/tmp/snapws-bench-plain-{os.getpid()}").absolute()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"bench: {work} exists and is not empty; give a fresh --workdir")
    work.mkdir(parents=True, exist_ok=True)
    r = PlainRunner(
        snapws_command(args.snapws),
        args.verbose,
        None if args.no_pycache else work / "pycache",
        server=not args.no_server,
    )
    try:
        return run_steps(args, r, work)
    finally:
        r.stop_servers()  # the bench's own command server (a private runtime dir)
        stop_watchers(work)
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            print(f"bench: removing {work}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)


def run_steps(args: argparse.Namespace, r: PlainRunner, work: Path) -> dict[str, Any]:
    """Build the trees and time the steps (see the module docstring)."""
    r.warm_bytecode(work)
    sw_tree = work / "plain" / "tree"  # store: work/plain/.snapws (beside it)
    git_tree = work / "git" / "tree"
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "user": "root" if os.geteuid() == 0 else str(os.geteuid()),
        "python": platform.python_version(),
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "snapws": r.sw("--version", cwd=work)[1].strip(),
        "snapws_startup_seconds": min(r.sw("--version", cwd=work)[0] for _ in range(9)),
        "loadavg_start": os.getloadavg(),
        "workdir": str(work),
        "files": args.files,
        "size_mb": args.size_mb,
        "changes": args.changes,
        "repeat": args.repeat,
        "server": not args.no_server,
        "timings": [],
    }
    rows: dict[str, dict[str, Any]] = {}

    def step(
        name: str,
        sw_cmds: list[list[str]],
        git_cmds: list[list[str]],
        env: dict[str, str] | None = None,
    ) -> None:
        if name not in rows:
            rows[name] = {"operation": name, "snapws_samples": [], "git_samples": []}
            result["timings"].append(rows[name])
        row = rows[name]
        for tool, cmds, tree in (("snapws", sw_cmds, sw_tree), ("git", git_cmds, git_tree)):
            sync()
            total = 0.0
            out = ""
            before = cpu_of_children()
            for c in cmds:
                if tool == "snapws":
                    dt, out = r.sw_env(env or {}, *c, cwd=tree)
                else:
                    dt, out = r.git(*c, cwd=tree)
                total += dt
            row.setdefault(f"{tool}_cpu_samples", []).append(cpu_of_children() - before)
            row[f"{tool}_samples"].append(total)
            row[tool] = min(row[f"{tool}_samples"])
            row[f"{tool}_output_lines"] = count_lines(out)
        row["snapws_over_git"] = row["snapws"] / row["git"] if row["git"] > 0 else float("inf")
        sc, gc = (statistics.median(row[f"{t}_cpu_samples"]) for t in ("snapws", "git"))
        row["cpu_snapws_over_git"] = sc / gc if gc > 0 else float("inf")
        row.setdefault("loadavg_1min", []).append(os.getloadavg()[0])
        s, g = row["snapws_samples"][-1], row["git_samples"][-1]
        sc, gc = row["snapws_cpu_samples"][-1], row["git_cpu_samples"][-1]
        print(
            f"  {name:<26} snapws {s:7.3f}s   git {g:7.3f}s   snapws/git {s / g:5.2f}   "
            f"cpu {sc:6.3f}s / {gc:6.3f}s   load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )

    print(f"bench: building {args.files} files, ~{args.size_mb} MB in {work}", file=sys.stderr)
    spec = plan_tree(args.files, args.size_mb * 1_000_000, SEED)
    t0 = time.perf_counter()
    build_tree(sw_tree, spec, random_buffer(SEED))
    result["build_seconds"] = time.perf_counter() - t0
    git_tree.parent.mkdir()
    subprocess.run(["cp", "-a", str(sw_tree), str(git_tree)], check=True)
    result["tree_bytes"] = sum(spec.sizes)

    step(
        "init (+ initial commit)",
        [["init", "--backend", "plain", "."]],
        [["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]],
    )
    # both tools have just read the whole tree: one status each to settle
    # (and snapws's command server started, its imports done)
    r.warm_server(sw_tree)
    r.sw("status", cwd=sw_tree)
    r.git("status", cwd=git_tree)
    cs = plan_changes(spec, args.changes, SEED)
    cbuf = random_buffer(SEED + 2)
    for tree in (sw_tree, git_tree):
        apply_changes(tree, cs, cbuf)
    for n in range(args.repeat):
        step("status", [["status"]], [["status"]])
        if n == 0:  # the first status after the edits refreshed the index
            rows["status"]["first_snapws"] = rows["status"]["snapws_samples"][0]
            rows["status"]["first_git"] = rows["status"]["git_samples"][0]
    for _ in range(args.repeat):
        step("status (walk in 1 process)", [["status"]], [["status"]], {PROCS: "1"})
    if args.watch:
        config = work / "watch.toml"
        config.write_text("plain_watch = true\n")
        watched = {"SNAPWS_CONFIG": str(config), "SNAPWS_PLAIN_WATCH_IDLE": "900"}
        for _ in range(3):  # start the watcher; record its token (stats no longer racy)
            r.sw_env(watched, "status", cwd=sw_tree)
            time.sleep(1.0)
        for _ in range(args.repeat):
            step("status (watcher)", [["status"]], [["status"]], watched)
    if args.status_only:
        return result
    step(
        "commit",
        [["commit", "-m", "changes"]],
        [["add", "-A"], ["commit", "-q", "-m", "changes"]],
    )
    for _ in range(args.repeat):
        step("status after commit", [["status"]], [["status"]])
    for _ in range(args.repeat):
        step(
            "checkout HEAD~1 (detached)",
            [["checkout", "HEAD~1"]],
            [["checkout", "-q", "HEAD~1"]],
        )
        step("checkout main (back)", [["checkout", "main"]], [["checkout", "-q", "main"]])
    result["check_snapws_changes"] = count_lines(
        r.sw("diff", "--name-only", "HEAD~1", "HEAD", cwd=sw_tree)[1]
    )
    result["check_git_changes"] = count_lines(
        r.git("diff", "--name-only", "HEAD~1", "HEAD", cwd=git_tree)[1]
    )
    result["check_clean"] = r.sw("status", "--porcelain", cwd=sw_tree)[1] == ""
    return result


PROCS = "SNAPWS_PLAIN_SCAN_PROCS"


def stop_watchers(work: Path) -> None:
    """End the file-system watchers of the bench's workspaces (--watch)."""
    mine = os.fsencode(work)
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"snapws.backends.plain.fswatch" in argv and any(a.startswith(mine) for a in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)


def cpu_of_children() -> float:
    """User + system seconds of the waited-for children so far (a step's
    CPU time tells less of the machine's other load than its wall time)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def snapws_command(arg: str | None) -> list[str]:
    """The snapws console script beside this interpreter (an installed
    snapws: no wrapper such as a pyenv shim, which costs ~50 ms a call),
    else bench_core's choice."""
    if not arg:
        beside = Path(sys.executable).parent / "snapws"
        if beside.is_file() and os.access(beside, os.X_OK):
            return [str(beside)]
    return snapws_cmd(arg)


def ratio_median(row: dict[str, Any]) -> float:
    """The median of the samples' ratios snapws/git (each pair ran back to
    back: steadier than the ratio of the best times on a busy machine)."""
    pairs = zip(row["snapws_samples"], row["git_samples"], strict=True)
    return statistics.median(s / g if g > 0 else float("inf") for s, g in pairs)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"snapws (plain backend) vs git: {result['files']:,} files, "
        f"{fmt_bytes(result['tree_bytes'])}, {result['changes']} modified + "
        f"{result['changes']} added + {result['changes']} deleted; warm cache, sync before "
        f"each step; repeated steps best of {result['repeat']} (snapws/git: of the best times; "
        "median ratio: of each pair's), init/commit once",
        "",
        f"| {'operation':<28} | {'snapws s':>9} | {'git s':>9} | {'snapws/git':>10} "
        f"| {'median ratio':>12} | {'cpu s/git':>9} |",
        f"|{'-' * 30}|{'-' * 11}|{'-' * 11}|{'-' * 12}|{'-' * 14}|{'-' * 11}|",
    ]
    for t in result["timings"]:
        lines.append(
            f"| {t['operation']:<28} | {t['snapws']:9.3f} | {t['git']:9.3f} | "
            f"{t['snapws_over_git']:9.2f}x | {ratio_median(t):11.2f}x | "
            f"{t['cpu_snapws_over_git']:8.2f}x |"
        )
    st = next(t for t in result["timings"] if t["operation"] == "status")
    lines += [
        "",
        f"first status after the edits (refreshes the index): snapws {st['first_snapws']:.3f}s, "
        f"git {st['first_git']:.3f}s",
        f"snapws start-up (`snapws --version`, best of 9): {result['snapws_startup_seconds']:.3f}s;"
        f" load average at start {result['loadavg_start'][0]:.2f}; user {result['user']}; "
        + ("through the command server" if result["server"] else "no command server"),
    ]
    if "check_clean" in result:
        lines.append(
            f"diff HEAD~1 HEAD lists {result['check_snapws_changes']} (snapws) / "
            f"{result['check_git_changes']} (git) paths; clean after the bench: "
            f"{result['check_clean']}"
        )
    lines += [
        f"target: status within 2x of git status: "
        f"{'met' if st['snapws_over_git'] <= 2.0 else 'NOT met'} "
        f"({st['snapws_over_git']:.2f}x); within 1.0x (issue 12): "
        f"{'met' if st['snapws_over_git'] <= 1.0 else 'NOT met'}"
        + "".join(
            f"; with the watcher: {t['snapws_over_git']:.2f}x (median ratio {ratio_median(t):.2f}x)"
            for t in result["timings"]
            if t["operation"] == "status (watcher)"
        ),
        "cpu s/git: median user + system seconds of the commands, snapws over git "
        "(less sensitive to other load than wall time)"
        + (
            "; through the command server it counts snapws's client only, not the worker "
            "that did the work (not comparable)"
            if result["server"]
            else ""
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000, help="number of files (100000)")
    ap.add_argument("--size-mb", type=int, default=1000, help="total size in MB (1000)")
    ap.add_argument(
        "--changes", type=int, default=100, help="modifications = additions = deletions (100)"
    )
    ap.add_argument("--workdir", help="fresh directory (default /var/tmp/snapws-bench-plain-<pid>)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--repeat", type=int, default=5, help="samples of repeated steps (5)")
    ap.add_argument(
        "--no-pycache", action="store_true", help="do not cache snapws's bytecode in the work dir"
    )
    ap.add_argument(
        "--status-only",
        action="store_true",
        help="time init and the status steps only (no commit, checkout)",
    )
    ap.add_argument(
        "--watch",
        action="store_true",
        help="also time status with the file-system watcher (plain_watch = true)",
    )
    ap.add_argument(
        "--no-server",
        action="store_true",
        help="run each snapws command in a process of its own (default: through the bench's "
        "own command server, as a user gets it)",
    )
    ap.add_argument("--snapws", help="snapws command line (default: the `snapws` script)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command's time")
    args = ap.parse_args()
    if args.changes * 2 > args.files:
        raise SystemExit("bench: --changes must be at most half of --files")
    result = bench(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
