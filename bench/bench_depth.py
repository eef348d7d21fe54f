#!/usr/bin/env python3
"""Chain depth, commit cost and lookup cost over a long history.

Builds a tree of N small files (default 100,000; three directory levels, ~100
files per leaf directory, 100-2,000 bytes each, deterministic), makes it a
workspace (``snapws init``), then makes C commits in a row (default 1,000)
through the library (``open_session`` + ``commit``, one session per commit,
as the CLI does, without the interpreter start-up). Each commit has a few
changes (default 3) in random leaf directories: a file rewritten (60%),
added (30%) or deleted (10%).

Reported, per scenario:

- chain depth after the commits, and its mean and maximum over them;
- total commit time, the median and the slowest commit (compaction spikes),
  and their ratio (issue 12's target: at most 3), the 99th percentile over
  the median, how many commits took more than 3x the median, and the same
  figures in CPU time (the wall-clock spikes of a shared machine are mostly
  waits on its disk: fsync, syncfs);
- ``snapws log -n 20`` and ``snapws diff --stat HEAD~1 HEAD`` (each its own
  process, median of 5) right after init and after the commits: neither
  may grow with the history's length;
- how many layers compaction made (layers in the store, less init's and
  the commits');
- store size growth over the commits (GNU ``du`` of the store: hardlinks
  counted once) against the sum of the changed files' bytes;
- a ``find WS -printf '%s %m\\n'`` (an lstat of every path) through the
  workspace, warm (one run to warm up, then best of 3), against the same on
  the same content in one layer (``snapws flatten --keep 0`` at the end),
  as a ratio (target: at most 1.2);
- the same ``find`` right after a fresh mount (``snapws umount`` and
  ``snapws mount``; best of 3): every lookup then goes through the layers,
  the layers' own filesystem staying cached. A warm ``find`` hardly depends
  on depth (the overlay caches its dentries); this one does.

Scenarios (each with its own copy of the tree and its own store):

- ``compaction``: the default settings (max_depth 32, compaction on);
- ``no-compaction``: max_depth 400, its maximum: no compaction, only the
  cap (a full flatten whenever the chain passes 400 layers);
- ``full-flatten``: the scheme before compaction, for reference: max_depth
  32 without the policy (the commit past 32 layers flattens all but the
  newest layer). The library has no setting for it: the bench lowers
  ``snapws.ops.maintenance.compaction.NO_COMPACTION`` to 32 in its own process.

Needs root (snapws mounts overlayfs). See bench/README.md.

    sudo python bench/bench_depth.py                         # 100,000 files, 1,000 commits
    sudo python bench/bench_depth.py --files 5000 --commits 100   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 20260301
FILES_PER_DIR = 100
#: scenario -> max_depth
SCENARIOS = {"compaction": 32, "no-compaction": 400, "full-flatten": 32}


# ---------------------------------------------------------------- tree ----
@dataclass
class Tree:
    """The workspace's files, kept in memory to pick changes from."""

    dirs: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)  # leaf dir -> file names


def plan_tree(n_files: int) -> Tree:
    n_leaves = max(1, round(n_files / FILES_PER_DIR))
    fan = 1
    while fan**3 < n_leaves:
        fan += 1
    dirs = [
        f"d{i:02d}/d{j:02d}/d{k:02d}" for i in range(fan) for j in range(fan) for k in range(fan)
    ]
    tree = Tree(dirs[:n_leaves])
    for d in tree.dirs:
        tree.files[d] = []
    for n in range(n_files):
        tree.files[tree.dirs[n % n_leaves]].append(f"f{n:06d}.txt")
    return tree


def content(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(100, 2000))


def build(root: Path, tree: Tree, seed: int) -> int:
    rng = random.Random(seed)
    total = 0
    for d, names in tree.files.items():
        os.makedirs(root / d, exist_ok=True)
        for name in names:
            data = content(rng)
            (root / d / name).write_bytes(data)
            total += len(data)
    return total


def change(root: Path, tree: Tree, rng: random.Random, commit_no: int, k: int) -> int:
    """One change in a random leaf directory; returns the bytes written."""
    d = rng.choice(tree.dirs)
    names = tree.files[d]
    r = rng.random()
    if r < 0.1 and len(names) > 1:
        os.unlink(root / d / names.pop(rng.randrange(len(names))))
        return 0
    if r < 0.4 or not names:
        name = f"n{commit_no:05d}-{k}.txt"
        names.append(name)
    else:
        name = rng.choice(names)
    data = content(rng)
    (root / d / name).write_bytes(data)
    return len(data)


# ------------------------------------------------------------- helpers ----
def snapws(*args: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "snapws", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"snapws {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def du_bytes(path: Path, apparent: bool = False) -> int:
    """GNU du of ``path`` in bytes (hardlinks counted once): disk usage, or
    the apparent size (file sizes, directories' own sizes)."""
    argv = ["du", "-s", "-B1", *(["--apparent-size"] if apparent else []), str(path)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def find_time(ws: Path, repeat: int) -> float:
    """Warm ``find`` with an lstat of every path: one run to warm up, then
    the best of ``repeat``."""
    argv = ["find", str(ws), "-printf", "%s %m\n"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def mounts_under(root: Path) -> list[str]:
    real = os.path.realpath(root)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == real or p.startswith(real + "/")]


def find_after_mount(ws: Path, repeat: int, env: dict[str, str]) -> float:
    """``find`` right after a fresh mount of the workspace (``snapws umount``
    + ``snapws mount``): the overlay's own dentries are new, so every lookup
    goes through the layers, while the layers' filesystem stays cached. The
    best of ``repeat``."""
    argv = ["find", str(ws), "-printf", "%s %m\n"]
    best = float("inf")
    for _ in range(repeat):
        snapws("umount", str(ws), cwd=ws.parent, env=env)
        snapws("mount", str(ws), cwd=ws.parent, env=env)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def lower_layers(ws: Path) -> int:
    """Lower layers of the mount on ``ws``, from /proc/self/mountinfo."""
    real = os.path.realpath(ws)
    found = 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] != real:
                continue
            opts = line.split(" - ", 1)[1].split()[2].split(",")
            plus = [o for o in opts if o.startswith("lowerdir+=")]
            legacy = [o for o in opts if o.startswith("lowerdir=")]
            found = len(plus) if plus else len(legacy[0].split(":")) if legacy else 0
    return found


# --------------------------------------------------------------- bench ----
def scenario(name: str, max_depth: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from snapws.config import Config
    from snapws.ops.maintenance import compaction
    from snapws.ops.session import open_session
    from snapws.ops.worktree.commit import commit
    from snapws.store.store import Store

    base = work / name
    ws = base / "ws"
    store_path = base / ".snapws"
    base.mkdir(parents=True)
    cfg = base / "snapws.toml"
    cfg.write_text(f"max_depth = {max_depth}\nlock_timeout = 600\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    env.update(SNAPWS_CONFIG=str(cfg), SNAPWS_AUTHOR="bench <bench@example.invalid>")
    env["SNAPWS_STORE"] = str(store_path)  # beside the tree, not the user's default store
    env["XDG_CONFIG_HOME"] = str(base / "xdg")
    config = Config(author=env["SNAPWS_AUTHOR"], lock_timeout=600, max_depth=max_depth)
    log = (lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True)) if args.verbose else None

    tree = plan_tree(args.files)
    tree_bytes = build(ws, tree, SEED)
    t0 = time.perf_counter()
    snapws("init", str(ws), cwd=base, env=env)
    init_s = time.perf_counter() - t0
    subprocess.run(["sync"], check=True)
    store = Store.open(store_path)
    layers_after_init = len(store.layer_ids())
    store_after_init = du_bytes(store_path)
    apparent_after_init = du_bytes(store_path, apparent=True)
    compaction.NO_COMPACTION = 32 if name == "full-flatten" else 400
    log_before = cli_time(ws, env, "log", "-n", "20")

    rng = random.Random(SEED + 1)
    times: list[float] = []
    cpu: list[float] = []  # this process's CPU time: what the machine's load hardly moves
    depths: list[int] = []
    changed = 0
    try:
        for c in range(args.commits):
            for k in range(args.changes):
                changed += change(ws, tree, rng, c, k)
            t, t_cpu = time.perf_counter(), time.process_time()
            with open_session(ws, config, store_path) as session:
                made = commit(session, f"commit {c}", config.author)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - t_cpu)
            assert made.snapshot is not None, f"commit {c} recorded nothing"
            depths.append(len(store.chain_layers(made.snapshot)))
            if log and (c + 1) % 100 == 0:
                log(f"{c + 1} commits, depth {depths[-1]}, last {times[-1] * 1000:.0f} ms")
        subprocess.run(["sync"], check=True)
        layers = len(store.layer_ids())
        store_after = du_bytes(store_path)
        apparent_after = du_bytes(store_path, apparent=True)
        depth = lower_layers(ws)
        assert depth == depths[-1], (depth, depths[-1])
        log_after = cli_time(ws, env, "log", "-n", "20")
        diff_after = cli_time(ws, env, "diff", "--stat", "HEAD~1", "HEAD")
        find_deep = find_time(ws, args.repeat)
        mount_deep = find_after_mount(ws, args.repeat, env)
        t = time.perf_counter()
        snapws("-C", str(ws), "flatten", "--keep", "0", cwd=base, env=env)
        flatten_s = time.perf_counter() - t
        assert lower_layers(ws) == 1
        find_flat = find_time(ws, args.repeat)
        mount_flat = find_after_mount(ws, args.repeat, env)
    finally:
        subprocess.run(
            [sys.executable, "-m", "snapws", "-C", str(ws), "umount", "--lazy"],
            cwd=base,
            env=env,
            capture_output=True,
            check=False,
        )
    slowest = max(range(len(times)), key=times.__getitem__)
    return {
        "scenario": name,
        "max_depth": max_depth,
        "files": args.files,
        "tree_bytes": tree_bytes,
        "init_s": init_s,
        "commits": args.commits,
        "changes_per_commit": args.changes,
        "depth_final": depths[-1],
        "depth_mean": statistics.fmean(depths),
        "depth_max": max(depths),
        "commit_total_s": sum(times),
        "commit_median_s": statistics.median(times),
        "commit_p99_s": percentile(times, 0.99) if len(times) >= 100 else None,
        "commit_slowest_s": times[slowest],
        "commit_slowest_no": slowest,
        "commit_slowest_over_median": times[slowest] / statistics.median(times),
        "commit_p99_over_median": percentile(times, 0.99) / statistics.median(times),
        "commit_cpu_median_s": statistics.median(cpu),
        "commit_cpu_slowest_over_median": max(cpu) / statistics.median(cpu),
        "commit_cpu_p99_over_median": percentile(cpu, 0.99) / statistics.median(cpu),
        "commit_over_3x_median": sum(1 for x in times if x > 3 * statistics.median(times)),
        "commit_cpu_over_3x_median": sum(1 for x in cpu if x > 3 * statistics.median(cpu)),
        "log20_after_init_s": log_before,
        "log20_after_commits_s": log_after,
        "diff_stat_after_commits_s": diff_after,
        "merged_layers": layers - layers_after_init - args.commits,
        "changed_bytes": changed,
        "store_after_init": store_after_init,
        "store_after_commits": store_after,
        "store_growth": store_after - store_after_init,
        "store_growth_apparent": apparent_after - apparent_after_init,
        "find_deep_s": find_deep,
        "find_flat_s": find_flat,
        "find_ratio": find_deep / find_flat,
        "find_after_mount_deep_s": mount_deep,
        "find_after_mount_flat_s": mount_flat,
        "find_after_mount_ratio": mount_deep / mount_flat,
        "flatten_keep0_s": flatten_s,
        "commit_times_s": times if args.json else None,
        "commit_cpu_s": cpu if args.json else None,
        "depths": depths if args.json else None,
    }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0.99: the 99th percentile) of ``values``, by rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * q) - 1))]


def cli_time(ws: Path, env: dict[str, str], *args: str, runs: int = 5) -> float:
    """Median wall time of ``snapws -C WS ARGS`` (its own process each run)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        snapws("-C", str(ws), *args, cwd=ws.parent, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    raise AssertionError


def render(results: list[dict[str, Any]]) -> str:
    rows = [
        ("chain depth after the commits", lambda r: str(r["depth_final"])),
        (
            "chain depth: mean / max over the commits",
            lambda r: f"{r['depth_mean']:.1f} / {r['depth_max']}",
        ),
        ("commits: total time", lambda r: f"{r['commit_total_s']:.1f} s"),
        ("commit: median", lambda r: f"{r['commit_median_s'] * 1000:.0f} ms"),
        (
            "commit: 99th percentile",
            lambda r: f"{r['commit_p99_s'] * 1000:.0f} ms" if r["commit_p99_s"] else "-",
        ),
        (
            "commit: slowest (commit no.)",
            lambda r: f"{r['commit_slowest_s'] * 1000:.0f} ms (#{r['commit_slowest_no']})",
        ),
        (
            "commit: slowest / median (target <= 3)",
            lambda r: f"{r['commit_slowest_over_median']:.1f}",
        ),
        (
            "commits over 3x the median",
            lambda r: str(r["commit_over_3x_median"]),
        ),
        ("commit: 99th percentile / median", lambda r: f"{r['commit_p99_over_median']:.1f}"),
        (
            "commit CPU time: median; slowest / median; p99 / median; over 3x",
            lambda r: (
                f"{r['commit_cpu_median_s'] * 1000:.0f} ms; "
                f"{r['commit_cpu_slowest_over_median']:.1f}; "
                f"{r['commit_cpu_p99_over_median']:.1f}; {r['commit_cpu_over_3x_median']}"
            ),
        ),
        (
            "log -n 20: after init / after the commits",
            lambda r: f"{r['log20_after_init_s']:.3f} s / {r['log20_after_commits_s']:.3f} s",
        ),
        (
            "diff --stat HEAD~1 HEAD, after the commits",
            lambda r: f"{r['diff_stat_after_commits_s']:.3f} s",
        ),
        ("layers made by compaction", lambda r: str(r["merged_layers"])),
        ("changed bytes (sum over commits)", lambda r: fmt_bytes(r["changed_bytes"])),
        ("store growth over the commits", lambda r: fmt_bytes(r["store_growth"])),
        (
            "store growth / changed bytes",
            lambda r: f"{r['store_growth'] / max(1, r['changed_bytes']):.1f}",
        ),
        ("store growth, apparent size", lambda r: fmt_bytes(r["store_growth_apparent"])),
        ("find + lstat, final chain (warm, best of 3)", lambda r: f"{r['find_deep_s']:.3f} s"),
        ("find + lstat, one layer (warm, best of 3)", lambda r: f"{r['find_flat_s']:.3f} s"),
        ("find ratio (target <= 1.2)", lambda r: f"{r['find_ratio']:.2f}x"),
        (
            "find after a fresh mount, final chain / one layer",
            lambda r: (
                f"{r['find_after_mount_deep_s']:.3f} s / {r['find_after_mount_flat_s']:.3f} s"
            ),
        ),
        ("find after a fresh mount, ratio", lambda r: f"{r['find_after_mount_ratio']:.2f}x"),
    ]
    head = ["", *(f"{r['scenario']} (max_depth {r['max_depth']})" for r in results)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, fn in rows:
        lines.append("| " + " | ".join([label, *(fn(r) for r in results)]) + " |")
    r0 = results[0]
    lines.append("")
    lines.append(
        f"{r0['files']:,} files ({fmt_bytes(r0['tree_bytes'])}), {r0['commits']:,} commits of "
        f"{r0['changes_per_commit']} changes; init {r0['init_s']:.1f} s; store after init "
        f"{fmt_bytes(r0['store_after_init'])}"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=3, help="changes per commit (3)")
    ap.add_argument("--repeat", type=int, default=3, help="find runs, best taken (3)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="default /var/tmp/snapws-depth-<pid>"
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from " + ", ".join(SCENARIOS) + " (all)",
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="write the results (and every commit's time) here"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (unmounted)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}")
    if os.geteuid() != 0:
        raise SystemExit("bench_depth needs root (snapws mounts overlayfs)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    work = args.workdir or Path(f"/var/tmp/snapws-depth-{os.getpid()}")
    work.mkdir(parents=True)
    results = []
    try:
        for name in args.scenarios.split(","):
            results.append(scenario(name, SCENARIOS[name], args, work))
    finally:
        left = mounts_under(work)
        for point in reversed(left):  # a failed run: never delete through a mount
            subprocess.run(["umount", "-l", point], check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = render(results)
    print(table)
    if args.json:
        meta = {"kernel": platform.release(), "cpus": os.cpu_count(), "argv": sys.argv[1:]}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
