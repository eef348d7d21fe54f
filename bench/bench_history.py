#!/usr/bin/env python3
"""Long histories: how the read-side commands scale with 2,000 snapshots.

Builds a workspace with a small tree (--files, default 200) and commits
--snapshots times (default 2,000) through the library (``open_session`` +
``commit`` in one process, a small change each: one file rewritten, one
added every 10th commit, one deleted every 25th), with the default
``max_depth`` (chains are flattened automatically as they grow). Then times,
each command a separate process, best of --repeat runs:

    snapws log                                   the whole history
    snapws log -n 20                             its newest 20
    snapws du                                    per-snapshot disk usage
    snapws prune --keep-last 10 --dry-run        the retention plan
    snapws verify --read-data-subset 1/10        re-hash a tenth of the files

and prints a Markdown table (also --json). Needs root (overlay mounts).
The work dir is unmounted and deleted at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snapws import __version__
from snapws.config import load_config
from snapws.ops.session import open_session
from snapws.ops.worktree.commit import commit
from snapws.ops.worktree.init import init

COMMANDS: list[tuple[str, list[str]]] = [
    ("log", ["log"]),
    ("log -n 20", ["log", "-n", "20"]),
    ("du", ["du"]),
    ("prune --keep-last 10 --dry-run", ["prune", "--keep-last", "10", "--dry-run"]),
    ("verify --read-data-subset 1/10", ["verify", "--read-data-subset", "1/10"]),
]


def build(work: Path, n_files: int, n_snapshots: int) -> dict[str, Any]:
    """The workspace ``work/ws`` with ``n_snapshots`` commits; build timings."""
    ws = work / "ws"
    for d in range(max(1, n_files // 50)):
        (ws / f"d{d:02}").mkdir(parents=True)
    for i in range(n_files):
        (ws / f"d{i % max(1, n_files // 50):02}" / f"f{i:04}.txt").write_text(f"file {i}\n" * 20)
    config = load_config()
    t0 = time.perf_counter()
    init(ws, work / ".snapws", config)
    t_init = time.perf_counter() - t0
    author = "bench <bench@example.test>"
    t0 = time.perf_counter()
    for n in range(1, n_snapshots):  # the init is snapshot 1
        i = n % n_files
        path = ws / f"d{i % max(1, n_files // 50):02}" / f"f{i:04}.txt"
        path.write_text(f"file {i}, version {n}\n" * 20)
        if n % 10 == 0:
            (ws / f"new{n:05}.txt").write_text(f"new {n}\n")
        if n % 25 == 0:
            (ws / f"new{n - 20:05}.txt").unlink(missing_ok=True)
        with open_session(ws, config, work / ".snapws") as s:
            result = commit(s, f"change {n}", author)
            assert result.snapshot is not None
        if n % 200 == 0:
            rate = n / (time.perf_counter() - t0)
            print(f"bench: {n + 1} snapshots ({rate:.0f} commits/s)", file=sys.stderr)
    t_commits = time.perf_counter() - t0
    return {"init_s": t_init, "commits_s": t_commits, "commits": n_snapshots - 1}


def run_timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, proc.stdout


def measure(work: Path, snapws: list[str], repeat: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    ws = work / "ws"
    out: dict[str, Any] = {}
    run_timed([*snapws, "--version"], work, env)  # compile bytecode once
    floor = min(run_timed([*snapws, "--version"], work, env)[0] for _ in range(9))
    out["startup_s"] = floor
    for label, args in COMMANDS:
        argv = [*snapws, "-C", str(ws), *args]
        run_timed(argv, work, env)  # warm
        samples = []
        stdout = ""
        for _ in range(repeat):
            subprocess.run(["sync"], check=False)
            t, stdout = run_timed(argv, work, env)
            samples.append(t)
        out[label] = {"samples": samples, "best": min(samples), "lines": len(stdout.splitlines())}
        print(f"bench: {label}: {min(samples):.3f} s", file=sys.stderr)
    return out


def render(result: dict[str, Any]) -> str:
    m = result["measured"]
    lines = [
        "| command | best s | minus start-up s | output lines |",
        "|---|---|---|---|",
    ]
    for label, _ in COMMANDS:
        r = m[label]
        lines.append(
            f"| `snapws {label}` | {r['best']:.3f} | {r['best'] - m['startup_s']:.3f} "
            f"| {r['lines']:,} |"
        )
    b = result["build"]
    lines.append("")
    lines.append(
        f"{result['snapshots']:,} snapshots, {result['files']} files; start-up floor "
        f"(`snapws --version`) {m['startup_s']:.3f} s; building took {b['init_s']:.2f} s "
        f"(init) + {b['commits_s']:.1f} s ({b['commits'] / b['commits_s']:.0f} commits/s "
        "through the library); store: "
        f"{result['store_layers']} layers, deepest chain {result['max_chain']}."
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshots", type=int, default=2000)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (unmounted)")
    ap.add_argument("--snapws", default=None, help="the snapws command (default: python -m snapws)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (snapws mounts overlayfs)")
    work = args.workdir or Path(f"/var/tmp/snapws-bench-history-{os.getpid()}")
    work.mkdir(parents=True)
    snapws = args.snapws.split() if args.snapws else [sys.executable, "-m", "snapws"]
    os.chdir(work)
    try:
        build_info = build(work, args.files, args.snapshots)
        measured = measure(work, snapws, args.repeat)
        store = work / ".snapws"
        chains = [json.loads(p.read_bytes()) for p in (store / "chains").iterdir()]
        result = {
            "date": datetime.date.today().isoformat(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "snapws": __version__,
            "loadavg_1min": os.getloadavg()[0],
            "snapshots": args.snapshots,
            "files": args.files,
            "build": build_info,
            "measured": measured,
            "store_layers": len(os.listdir(store / "layers")),
            "max_chain": max(len(c) for c in chains),
        }
    finally:
        subprocess.run([*snapws, "-C", str(work / "ws"), "umount"], check=False)
        subprocess.run(["umount", "-l", str(work / "ws")], check=False, capture_output=True)
        os.chdir("/")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(render(result))


if __name__ == "__main__":
    main()
