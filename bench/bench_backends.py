#!/usr/bin/env python3
"""snapws's four backends and git on one big tree, side by side, in one run.

Builds the tree of bench_core.py (N files, default 100,000, ~1 GB, seeded),
copies it once per backend and once for git (all copies are made before
anything is measured), and times the same steps on every copy:

    init        snapws init --backend B .   vs  git init && git add -A && git commit
    (changes)   the same 100 modifications, 100 additions, 100 deletions everywhere
    status      snapws status               vs  git status
    diff --stat snapws diff --stat          vs  git diff --stat  (git: tracked files only)
    commit      snapws commit -m            vs  git add -A && git commit -m
    diff HEADs  snapws diff --stat HEAD~1 HEAD  vs  the same in git
    checkout    snapws checkout HEAD~1      vs  git checkout HEAD~1   (detached)
    back        snapws checkout main        vs  git checkout main

Backends: ``kernel``, ``fuse`` and ``plain`` run as root; ``rootless`` runs
as an unprivileged user (``--user``, default ``snapwst``) through setpriv(1):
every one of its commands enters (or makes) the workspace's user namespace
and mounts there, and that cost is part of its times. The changes are made
inside its namespace (``snapws run -- python3 bench_backends.py
apply-changes ...``).

Steps are interleaved: each step runs on every backend and on git before the
next step starts, so a change in the machine's load touches all alike.
status, both diffs and the checkout pair run --repeat times (default 3); the
table shows the best sample, the JSON has them all. init and commit run once.
Warm cache, ``sync`` (untimed) before every measured command; every command
is a separate process timed around subprocess.run (Python's start-up
included; the script reports it per user).

After init, one untimed ``status`` per backend lets the plain backend settle
its stat cache (bench_plain.py does the same; git's index is fresh from
``add -A``).

Needs root, git, fuse-overlayfs for the fuse backend, the user for rootless,
and for the full size ~7 GB free on the work dir's filesystem. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_core import (  # noqa: E402
    SEED,
    Runner,
    apply_changes,
    build_tree,
    count_lines,
    fmt_bytes,
    is_mounted,
    plan_changes,
    plan_tree,
    random_buffer,
    sync,
)

BACKENDS = ("kernel", "rootless", "fuse", "plain")
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


class UserRunner(Runner):
    """bench_core's runner, every command run as another user (setpriv, a
    clean environment: PATH, HOME, LC_ALL, the author, the bytecode cache)."""

    def __init__(
        self, snapws: list[str], verbose: bool, pycache: Path | None, user: pwd.struct_passwd
    ) -> None:
        super().__init__(snapws, verbose, pycache)
        self.user = user.pw_name
        keep = ("PATH", "LC_ALL", "SNAPWS_AUTHOR", "PYTHONPYCACHEPREFIX", "PAGER")
        env = {k: self.env[k] for k in keep if k in self.env}
        env["HOME"] = user.pw_dir if os.path.isdir(user.pw_dir) else "/tmp"
        self.prefix = [
            SETPRIV,
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--reset-env",
            "/usr/bin/env",
            *(f"{k}={v}" for k, v in env.items()),
        ]

    def run(self, argv: list[str], cwd: Path) -> tuple[float, str]:
        verbose, self.verbose = self.verbose, False
        try:
            dt, out = super().run([*self.prefix, *argv], cwd)
        finally:
            self.verbose = verbose
        if verbose:
            print(f"    {dt:8.3f}s  [{self.user}] {' '.join(argv)}", file=sys.stderr)
        return dt, out


@dataclass
class Target:
    """One tree under test: a snapws backend's workspace, or git's copy."""

    name: str  # kernel, rootless, fuse, plain, git
    tree: Path
    runner: Runner
    samples: dict[str, list[float]] = field(default_factory=dict)

    def cmd(self, args: list[str]) -> tuple[float, str]:
        if self.name == "git":
            return self.runner.git(*args, cwd=self.tree)
        return self.runner.sw(*args, cwd=self.tree)


def snapws_command(arg: str | None) -> list[str]:
    """The snapws console script beside this interpreter (no wrapper such as
    a pyenv shim), else ``python -m snapws``; or the words of ``arg``."""
    if arg:
        return arg.split()
    beside = Path(sys.executable).parent / "snapws"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "snapws"]


def fuse_installed() -> bool:
    return shutil.which("fuse-overlayfs") is not None


# ---------------------------------------------------------------- steps ----
#: Each step: (name, commands for snapws, commands for git, repeated?)
INIT = "init (+ initial commit)"
STEPS_AFTER_CHANGES: list[tuple[str, list[list[str]], list[list[str]], bool]] = [
    ("status", [["status"]], [["status"]], True),
    ("diff --stat", [["diff", "--stat"]], [["diff", "--stat"]], True),
    (
        "commit",
        [["commit", "-m", "changes"]],
        [["add", "-A"], ["commit", "-q", "-m", "changes"]],
        False,
    ),
    (
        "diff --stat HEAD~1 HEAD",
        [["diff", "--stat", "HEAD~1", "HEAD"]],
        [["diff", "--stat", "HEAD~1", "HEAD"]],
        True,
    ),
]
CHECKOUT = "checkout HEAD~1 (detached)"
#: stands for the target's backend name in a snapws command
BACKEND = "{backend}"
BACK = "checkout main (back)"


def bench(args: argparse.Namespace) -> dict[str, Any]:
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b not in BACKENDS:
            raise SystemExit(f"bench: unknown backend {b!r} (choose from {', '.join(BACKENDS)})")
    if "fuse" in backends and not fuse_installed():
        raise SystemExit("bench: fuse-overlayfs is not installed (drop fuse from --backends)")
    user = pwd.getpwnam(args.user) if "rootless" in backends else None

    work = Path(args.workdir or f"/var/tmp/snapws-bench-backends-{os.getpid()}").absolute()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"bench: {work} exists and is not empty; give a fresh --workdir")
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # the rootless user works below it
    snapws = snapws_command(args.snapws)
    root_runner = Runner(snapws, args.verbose, None if args.no_pycache else work / "pycache")
    root_runner.warm_bytecode(work)
    user_runner: UserRunner | None = None
    if user is not None:
        user_home = work / "rootless"
        user_home.mkdir()
        os.chown(user_home, user.pw_uid, user.pw_gid)
        user_runner = UserRunner(
            snapws, args.verbose, None if args.no_pycache else user_home / "pycache", user
        )
        user_runner.sw("--version", cwd=user_home)  # fills its bytecode cache

    targets: list[Target] = []
    for b in backends:
        runner = user_runner if b == "rootless" and user_runner is not None else root_runner
        targets.append(Target(b, work / b / "tree", runner))
    git = Target("git", work / "git" / "tree", root_runner)
    everyone = [*targets, git]

    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "snapws": root_runner.sw("--version", cwd=work)[1].strip(),
        "snapws_cmd": snapws,
        "startup_seconds": {
            "root": min(root_runner.sw("--version", cwd=work)[0] for _ in range(9)),
        },
        "loadavg_start": os.getloadavg(),
        "workdir": str(work),
        "backends": backends,
        "rootless_user": args.user if user is not None else None,
        "files": args.files,
        "size_mb": args.size_mb,
        "changes": args.changes,
        "repeat": args.repeat,
        "operations": [],
    }
    if user_runner is not None:
        result["startup_seconds"]["user"] = min(
            user_runner.sw("--version", cwd=work / "rootless")[0] for _ in range(9)
        )
    rows: dict[str, dict[str, Any]] = {}

    def step(name: str, sw_cmds: list[list[str]], git_cmds: list[list[str]]) -> None:
        """One sample of ``name`` on every target (sync before each)."""
        row = rows.get(name)
        if row is None:
            row = rows[name] = {"operation": name, "samples": {}, "best": {}, "lines": {}}
            result["operations"].append(row)
        parts = []
        for t in everyone:
            sync()
            total = 0.0
            out = ""
            for c in git_cmds if t.name == "git" else sw_cmds:
                dt, out = t.cmd([t.name if w == BACKEND else w for w in c])
                total += dt
            row["samples"].setdefault(t.name, []).append(total)
            row["best"][t.name] = min(row["samples"][t.name])
            row["lines"][t.name] = count_lines(out)
            parts.append(f"{t.name} {total:7.3f}s")
        row.setdefault("loadavg_1min", []).append(os.getloadavg()[0])
        print(f"  {name:<26} {'  '.join(parts)}  load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    try:
        print(f"bench: building {args.files} files, ~{args.size_mb} MB in {work}", file=sys.stderr)
        spec = plan_tree(args.files, args.size_mb * 1_000_000, SEED)
        t0 = time.perf_counter()
        git.tree.parent.mkdir()
        build_tree(git.tree, spec, random_buffer(SEED))
        result["build_seconds"] = time.perf_counter() - t0
        result["tree_bytes"] = sum(spec.sizes)
        t0 = time.perf_counter()
        for t in targets:
            t.tree.parent.mkdir(exist_ok=True)
            subprocess.run(["cp", "-a", str(git.tree), str(t.tree)], check=True)
            if t.name == "rootless" and user is not None:
                subprocess.run(
                    ["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(t.tree.parent)],
                    check=True,
                )
        result["copy_seconds"] = time.perf_counter() - t0
        print(
            f"bench: built {fmt_bytes(sum(spec.sizes))} in {result['build_seconds']:.1f}s, "
            f"{len(targets)} copies in {result['copy_seconds']:.1f}s",
            file=sys.stderr,
        )

        step(
            INIT,
            [["init", "--backend", BACKEND, "."]],
            [["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]],
        )
        for t in targets:  # settle (plain's stat cache); untimed
            t.cmd(["status"])

        result["apply_changes_seconds"] = {}
        for t in everyone:
            sync()
            t0 = time.perf_counter()
            make_changes(t, args)
            result["apply_changes_seconds"][t.name] = time.perf_counter() - t0

        for name, sw_cmds, git_cmds, repeated in STEPS_AFTER_CHANGES:
            for _ in range(args.repeat if repeated else 1):
                step(name, sw_cmds, git_cmds)
        for _ in range(args.repeat):
            step(CHECKOUT, [["checkout", "HEAD~1"]], [["checkout", "-q", "HEAD~1"]])
            step(BACK, [["checkout", "main"]], [["checkout", "-q", "main"]])

        # sanity: every tool lists the same changed paths, and all are clean
        result["check_changes"] = {
            t.name: count_lines(t.cmd(["diff", "--name-only", "HEAD~1", "HEAD"])[1])
            for t in everyone
        }
        result["check_clean"] = {
            t.name: t.cmd(["status", "--porcelain"])[1] == "" for t in everyone
        }
        return result
    finally:
        cleanup(root_runner, work, targets, args.keep)


def make_changes(t: Target, args: argparse.Namespace) -> None:
    """The same changes in every tree: in-process as root, inside the
    workspace's namespace (``snapws run``) for rootless."""
    words = ["--files", str(args.files), "--size-mb", str(args.size_mb)]
    words += ["--changes", str(args.changes)]
    if t.name == "rootless":
        t.runner.sw(
            "run", "--", sys.executable, str(Path(__file__).resolve()), "apply-changes",
            str(t.tree), *words, cwd=t.tree,
        )  # fmt: skip
    else:
        spec = plan_tree(args.files, args.size_mb * 1_000_000, SEED)
        apply_changes(t.tree, plan_changes(spec, args.changes, SEED), random_buffer(SEED + 2))


def cleanup(r: Runner, work: Path, targets: list[Target], keep: bool) -> None:
    """Unmount the root-mounted workspaces, then delete the work dir (unless
    --keep). Rootless mounts died with their namespaces."""
    for t in targets:
        if t.name in ("kernel", "fuse") and t.tree.exists() and is_mounted(t.tree):
            try:
                r.sw("umount", str(t.tree), cwd=work)
            except RuntimeError as e:
                print(f"bench: snapws umount failed, detaching: {e}", file=sys.stderr)
            if is_mounted(t.tree):
                subprocess.run(["umount", "-l", str(t.tree)], check=False)
    if keep:
        print(f"bench: kept {work} (workspaces unmounted)", file=sys.stderr)
        return
    print(f"bench: removing {work}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


def render(result: dict[str, Any]) -> str:
    names = [*result["backends"], "git"]
    head = f"| {'operation':<28} |" + "".join(f" {n + ' s':>10} |" for n in names)
    rule = f"|{'-' * 30}|" + "".join(f"{'-' * 12}|" for _ in names)
    lines = [
        f"snapws backends vs git: {result['files']:,} files, {fmt_bytes(result['tree_bytes'])}, "
        f"{result['changes']} modified + {result['changes']} added + {result['changes']} "
        f"deleted; warm cache, sync before each step; repeated steps best of "
        f"{result['repeat']}, init/commit once",
        "",
        head,
        rule,
    ]
    for row in result["operations"]:
        cells = "".join(f" {row['best'][n]:10.3f} |" for n in names)
        lines.append(f"| {row['operation']:<28} |{cells}")
    lines.append("")
    lines.append("backend time / git time (below 1: faster than git):")
    lines.append("")
    lines.append(f"| {'operation':<28} |" + "".join(f" {n:>10} |" for n in names[:-1]))
    lines.append(f"|{'-' * 30}|" + "".join(f"{'-' * 12}|" for _ in names[:-1]))
    for row in result["operations"]:
        g = row["best"]["git"]
        cells = "".join(
            f" {row['best'][n] / g:9.2f}x |" if g > 0 else f" {'-':>10} |" for n in names[:-1]
        )
        lines.append(f"| {row['operation']:<28} |{cells}")
    st = result["startup_seconds"]
    lines += [
        "",
        "start-up (`snapws --version`, best of 9): "
        + ", ".join(f"{k} {v:.3f}s" for k, v in st.items())
        + f"; load average at start {result['loadavg_start'][0]:.2f}",
        "applying the changes: "
        + ", ".join(f"{k} {v:.3f}s" for k, v in result["apply_changes_seconds"].items())
        + " (rootless: inside `snapws run`)",
        "diff --name-only HEAD~1 HEAD lists "
        + ", ".join(f"{k} {v}" for k, v in result["check_changes"].items())
        + " paths; clean at the end: "
        + ", ".join(f"{k} {v}" for k, v in result["check_clean"].items()),
        "git diff --stat (working tree) shows tracked files only: not the 100 additions",
    ]
    return "\n".join(lines)


def apply_changes_main(argv: list[str]) -> None:
    """``bench_backends.py apply-changes ROOT --files N --size-mb M --changes K``:
    make the bench's changes in ROOT (run inside a rootless namespace)."""
    ap = argparse.ArgumentParser(prog="bench_backends.py apply-changes")
    ap.add_argument("root", type=Path)
    ap.add_argument("--files", type=int, required=True)
    ap.add_argument("--size-mb", type=int, required=True)
    ap.add_argument("--changes", type=int, required=True)
    a = ap.parse_args(argv)
    spec = plan_tree(a.files, a.size_mb * 1_000_000, SEED)
    apply_changes(a.root, plan_changes(spec, a.changes, SEED), random_buffer(SEED + 2))


def main() -> None:
    if sys.argv[1:2] == ["apply-changes"]:
        apply_changes_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000, help="number of files (100000)")
    ap.add_argument("--size-mb", type=int, default=1000, help="total size in MB (1000)")
    ap.add_argument(
        "--changes", type=int, default=100, help="modifications = additions = deletions (100)"
    )
    ap.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated backends to measure (default {','.join(BACKENDS)})",
    )
    ap.add_argument(
        "--user", default="snapwst", help="the unprivileged user rootless runs as (snapwst)"
    )
    ap.add_argument(
        "--workdir",
        help="fresh directory (default /var/tmp/snapws-bench-backends-<pid>); deleted at the end",
    )
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (unmounted)")
    ap.add_argument("--repeat", type=int, default=3, help="samples of repeated steps (3)")
    ap.add_argument(
        "--no-pycache", action="store_true", help="do not cache snapws's bytecode in the work dir"
    )
    ap.add_argument("--snapws", help="snapws command line (default: the `snapws` script)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command's time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: the kernel and fuse backends mount overlays: run as root")
    if args.changes * 2 > args.files:
        raise SystemExit("bench: --changes must be at most half of --files")
    result = bench(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
