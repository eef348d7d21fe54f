"""bench_all: the issue-12 cases at several tree sizes, beside git, in one run.

For each tree size (5,000 and 100,000 files; 1,000,000 with --million) it
builds one tree (bench_core's builder), copies it, makes one copy a snapws
workspace and the other a git repository, then runs --rounds rounds. Each
round applies the same fresh 300 changes (100 rewrites, 100 additions, 100
deletions) to both trees and times, each command its own process, sync
before each step:

    status     snapws status                     git status
    commit     snapws commit -m ...              git add -A && git commit -m ...
    checkout   snapws checkout HEAD~1 + main     git checkout HEAD~1 + main (there and back)
    diff       snapws diff --stat HEAD~1 HEAD    git diff --stat HEAD~1 HEAD

Every round gives one sample of each step for both tools and its ratio
snapws/git (below 1: snapws faster); the table shows the medians of the
times and of the ratios, since the machine is shared and noisy. The
store-growth case (bench_depth's compaction scenario: --growth-commits
commits of 3 changes on --growth-files files, through the library) reports
the store's growth against the changed bytes. A plot of time against tree
size (SVG, drawn by hand: no dependency) goes to --plot.

    sudo python bench/bench_all.py              # 5,000 + 100,000 files: ~15 min, ~5 GB
    sudo python bench/bench_all.py --sizes 2000 --growth-commits 50 --growth-files 2000
    sudo python bench/bench_all.py --million    # + 1,000,000 files (~15 GB free)
    sudo python bench/bench_all.py --sizes 10000 --million --local   # flatness, same changes

The changes of a round fall anywhere in the tree; with --local, in its
first leaf directories, as many as the smallest size has: the same part of
the tree at every size. Spread changes touch more directories in a bigger
tree (300 changes: ~125 at 10,000 files, ~570 at 1,000,000), and an
overlay upperdir holds a copy of each, so the flatness table also prints
how many directories the rounds touched.

Needs root (overlay mounts) and git. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core as core

DOCS = Path(__file__).resolve().parent.parent / "docs"
OPS = ("status", "commit", "checkout", "diff")
#: issue 12's targets: ratio snapws/git at most this (None: no target)
TARGETS: dict[int, dict[str, float]] = {
    5_000: {"commit": 1.0, "status": 2.0, "checkout": 1.0},
    100_000: {"commit": 0.25, "status": 0.5, "checkout": 0.5, "diff": 1.0},
}


def snapws_argv(arg: str | None) -> list[str]:
    """The snapws command: --snapws, else the console script beside this
    Python (never a pyenv shim: a shim adds ~70 ms of bash to each call),
    else ``python -m snapws``."""
    if arg:
        return arg.split()
    script = Path(sys.executable).parent / "snapws"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snapws"]


def round_changes(
    spec: core.TreeSpec, n: int, rnd: int, leaves: int | None = None
) -> core.ChangeSet:
    """Fresh changes for round ``rnd`` on the live tree ``spec`` (added names
    carry the round, so no two rounds add the same path); ``leaves``: in
    the tree's first that many leaf directories."""
    cs = core.plan_changes(spec, n, core.SEED + 1000 * rnd, leaves)
    add = []
    for path, size, off in cs.add:
        d, name = path.rsplit("/", 1)
        add.append((f"{d}/r{rnd:02d}{name}", size, off))
    return core.ChangeSet(cs.modify, add, cs.delete)


def apply_to_spec(spec: core.TreeSpec, cs: core.ChangeSet) -> core.TreeSpec:
    """The tree after ``cs``: deleted files gone, added files in, sizes kept."""
    gone = set(cs.delete)
    out = core.TreeSpec(dirs=spec.dirs)
    for f, s, o in zip(spec.files, spec.sizes, spec.offsets, strict=True):
        if f not in gone:
            out.files.append(f)
            out.sizes.append(s)
            out.offsets.append(o)
    for path, size, off in cs.add:
        out.files.append(path)
        out.sizes.append(size)
        out.offsets.append(off)
    return out


def bench_size(args: argparse.Namespace, files: int, work: Path) -> dict[str, Any]:
    """One tree size: build, init both, then --rounds rounds of the four steps."""
    mean = args.mean_bytes if files < 1_000_000 else min(args.mean_bytes, 2_000)
    total = files * mean
    base = work / f"n{files}"
    sw_tree, git_tree = base / "snapws" / "tree", base / "git" / "tree"
    r = core.Runner(
        snapws_argv(args.snapws), args.verbose, work / "pycache", server=not args.no_server
    )
    r.env["SNAPWS_STORE"] = str(base / "store")  # in the work dir, not the user's store
    out: dict[str, Any] = {"files": files, "tree_bytes": 0, "samples": {}, "loadavg": []}
    samples: dict[str, dict[str, list[float]]] = {op: {"snapws": [], "git": []} for op in OPS}
    out["samples"] = samples
    try:
        t0 = time.perf_counter()
        spec = core.plan_tree(files, total, core.SEED)
        buf = core.random_buffer(core.SEED)
        core.build_tree(sw_tree, spec, buf)
        git_tree.parent.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(sw_tree), str(git_tree)], check=True)
        out["tree_bytes"] = sum(spec.sizes)
        out["build_seconds"] = time.perf_counter() - t0
        built = core.fmt_bytes(sum(spec.sizes))
        log(f"{files:,} files: built {built} in {out['build_seconds']:.1f}s")
        core.sync()
        out["init_snapws"] = r.sw("init", ".", cwd=sw_tree)[0]
        core.sync()
        out["init_git"] = sum(
            r.git(*c, cwd=git_tree)[0]
            for c in (
                ["init", "-q", "-b", "main"],
                ["add", "-A"],
                ["commit", "-q", "-m", "initial"],
            )
        )
        log(f"  init: snapws {out['init_snapws']:.2f}s, git {out['init_git']:.2f}s")
        r.warm_server(sw_tree)
        cbuf = core.random_buffer(core.SEED + 2)
        for rnd in range(args.rounds):
            cs = round_changes(spec, args.changes, rnd, args.local_leaves)
            out.setdefault("dirs_touched", []).append(core.dirs_touched(cs))
            for tree in (sw_tree, git_tree):
                core.apply_changes(tree, cs, cbuf)
            spec = apply_to_spec(spec, cs)
            steps = {
                "status": ([["status"]], [["status"]]),
                "commit": (
                    [["commit", "-m", f"round {rnd}"]],
                    [["add", "-A"], ["commit", "-q", "-m", f"round {rnd}"]],
                ),
                "checkout": (
                    [["checkout", "HEAD~1"], ["checkout", "main"]],
                    [["checkout", "-q", "HEAD~1"], ["checkout", "-q", "main"]],
                ),
                "diff": (
                    [["diff", "--stat", "HEAD~1", "HEAD"]],
                    [["diff", "--stat", "HEAD~1", "HEAD"]],
                ),
            }
            for op, (sw_cmds, git_cmds) in steps.items():
                # alternate which tool goes first, so neither always runs after the other
                order = [("snapws", sw_cmds), ("git", git_cmds)]
                for tool, cmds in order if rnd % 2 == 0 else order[::-1]:
                    core.sync()
                    if tool == "snapws":
                        dt = sum(r.sw(*c, cwd=sw_tree)[0] for c in cmds)
                    else:
                        dt = sum(r.git(*c, cwd=git_tree)[0] for c in cmds)
                    samples[op][tool].append(dt)
            out["loadavg"].append(os.getloadavg()[0])
            log(
                f"  round {rnd + 1}/{args.rounds}: "
                + ", ".join(
                    f"{op} {samples[op]['snapws'][-1] / samples[op]['git'][-1]:.2f}x" for op in OPS
                )
                + f"   load {os.getloadavg()[0]:.1f}"
            )
        out["check_paths"] = {
            "snapws": core.count_lines(
                r.sw("diff", "--name-only", "HEAD~1", "HEAD", cwd=sw_tree)[1]
            ),
            "git": core.count_lines(
                r.git("diff", "--name-only", "HEAD~1", "HEAD", cwd=git_tree)[1]
            ),
        }
        out["startup_seconds"] = statistics.median(r.sw("--version", cwd=work)[0] for _ in range(9))
    finally:
        core.cleanup(r, base, sw_tree, keep=True)  # unmount now; deleted at the very end
    summarise(out)
    return out


def summarise(out: dict[str, Any]) -> None:
    """Medians of the times and of the per-round ratios."""
    med: dict[str, dict[str, float]] = {}
    for op, s in out["samples"].items():
        ratios = [a / b for a, b in zip(s["snapws"], s["git"], strict=True) if b > 0]
        med[op] = {
            "snapws": statistics.median(s["snapws"]),
            "git": statistics.median(s["git"]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    out["median"] = med


def growth(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """bench_depth's compaction scenario: store bytes against changed bytes."""
    import bench_depth

    ns = argparse.Namespace(
        files=args.growth_files,
        commits=args.growth_commits,
        changes=3,
        repeat=1,
        verbose=args.verbose,
        json=None,
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    res: dict[str, Any] = bench_depth.scenario("compaction", 32, ns, work / "growth")
    return res


# ------------------------------------------------------------------ plot ----
def svg_plot(sizes: list[dict[str, Any]], title: str) -> str:
    """Four panels (status, commit, checkout, diff): median seconds against
    the number of files (log scale), snapws and git. Plain SVG."""
    pw, ph, pad_l, pad_b, pad_t, gap = 300, 220, 58, 42, 30, 24
    width = 2 * (pw + pad_l + gap)
    height = 2 * (ph + pad_b + pad_t) + 40
    colours = {"snapws": "#1f77b4", "git": "#d62728"}
    xs = [s["files"] for s in sizes]
    import math

    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for i, op in enumerate(OPS):
        ox = (i % 2) * (pw + pad_l + gap) + pad_l
        oy = (i // 2) * (ph + pad_b + pad_t) + pad_t + 30
        ymax = max(max(s["median"][op]["snapws"], s["median"][op]["git"]) for s in sizes) * 1.1
        ymax = _nice(ymax)

        def px(n: float, ox: float = ox) -> float:
            return ox + (math.log10(n) - lo) / (hi - lo) * pw

        def py(t: float, oy: float = oy, ymax: float = ymax) -> float:
            return oy + ph - t / ymax * ph

        parts.append(
            f'<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
        )
        parts.append(f'<text x="{ox + pw / 2}" y="{oy - 8}" text-anchor="middle">{op}</text>')
        for k in range(5):
            t = ymax * k / 4
            parts.append(
                f'<line x1="{ox}" x2="{ox + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
            )
            parts.append(
                f'<text x="{ox - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.3g} s</text>'
            )
        for n in xs:
            parts.append(
                f'<text x="{px(n):.1f}" y="{oy + ph + 16}" text-anchor="middle">{n:,}</text>'
            )
        for tool, colour in colours.items():
            pts = " ".join(f"{px(s['files']):.1f},{py(s['median'][op][tool]):.1f}" for s in sizes)
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
            for s in sizes:
                parts.append(
                    f'<circle cx="{px(s["files"]):.1f}" cy="{py(s["median"][op][tool]):.1f}" '
                    f'r="3.5" fill="{colour}"/>'
                )
        parts.append(
            f'<text x="{ox + pw / 2}" y="{oy + ph + 32}" text-anchor="middle" '
            f'fill="#555">files in the tree (log scale)</text>'
        )
    lx = width - 150
    for j, (tool, colour) in enumerate(colours.items()):
        y = 14 + j * 16
        parts.append(
            f'<line x1="{lx}" x2="{lx + 20}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{lx + 26}" y="{y + 4}">{tool}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _nice(x: float) -> float:
    """The next 'round' number at or above x (1, 2, 2.5, 5 times a power of 10)."""
    import math

    if x <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * p >= x:
            return float(m * p)
    return float(10 * p)


# ---------------------------------------------------------------- render ----
def render(result: dict[str, Any]) -> str:
    lines = [
        f"snapws vs git, {result['changes'] * 3} changes per round, {result['rounds']} rounds, "
        "medians (ratio = snapws / git: below 1, snapws is faster); "
        + (
            "snapws through its command server (the default)"
            if result.get("server", False)
            else "snapws with SNAPWS_SERVER=0 (each command starts Python)"
        ),
        "",
        "| files | op | snapws s | git s | ratio (median) | ratio range | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["sizes"]:
        for op in OPS:
            m = s["median"][op]
            target = TARGETS.get(s["files"], {}).get(op)
            met = "-" if target is None else ("yes" if m["ratio"] <= target else "no")
            lines.append(
                f"| {s['files']:,} | {op} | {m['snapws']:.3f} | {m['git']:.3f} | "
                f"{m['ratio']:.2f}x | {m['ratio_min']:.2f}-{m['ratio_max']:.2f} | "
                f"{'' if target is None else f'<= {target}x'} | {met} |"
            )
    lines.append("")
    for s in result["sizes"]:
        lines.append(
            f"{s['files']:,} files ({core.fmt_bytes(s['tree_bytes'])}): init snapws "
            f"{s['init_snapws']:.2f}s, git {s['init_git']:.2f}s; snapws start-up "
            f"(--version, median of 9) {s['startup_seconds']:.3f}s; last diff lists "
            f"{s['check_paths']['snapws']} / {s['check_paths']['git']} paths; load "
            f"{min(s['loadavg']):.1f}-{max(s['loadavg']):.1f}"
        )
    lines += flatness(result["sizes"])
    g = result.get("growth")
    if g:
        ratio = g["store_growth"] / max(1, g["changed_bytes"])
        lines += [
            "",
            f"store growth: {g['commits']:,} commits of 3 changes on {g['files']:,} files: "
            f"store grew {core.fmt_bytes(g['store_growth'])} for "
            f"{core.fmt_bytes(g['changed_bytes'])} changed = {ratio:.1f}x "
            f"(target <= 3x: {'met' if ratio <= 3 else 'not met'}); depth final "
            f"{g['depth_final']}, max {g['depth_max']}; commit median "
            f"{g['commit_median_s'] * 1000:.0f} ms, slowest {g['commit_slowest_s'] * 1000:.0f} ms "
            f"({g['commit_slowest_s'] / g['commit_median_s']:.1f}x the median; target <= 3x)",
        ]
    return "\n".join(lines)


def flatness(sizes: list[dict[str, Any]]) -> list[str]:
    """Each command's median time at the biggest size over the same at the
    smallest, snapws and git (issue 12: at most 1.3x from 10,000 to
    1,000,000 files, while git's grows)."""
    if len(sizes) < 2:
        return []
    small, big = min(sizes, key=lambda s: s["files"]), max(sizes, key=lambda s: s["files"])
    out = [
        "",
        f"flatness: median time at {big['files']:,} files / at {small['files']:,} files "
        "(target for snapws, 10,000 to 1,000,000 files: <= 1.3x)",
        "",
        "| op | snapws | git |",
        "|---|---|---|",
    ]
    for op in OPS:
        a, b = small["median"][op], big["median"][op]
        sw = b["snapws"] / a["snapws"] if a["snapws"] else float("inf")
        gt = b["git"] / a["git"] if a["git"] else float("inf")
        out.append(f"| {op} | {sw:.2f}x | {gt:.2f}x |")
    if small.get("dirs_touched") and big.get("dirs_touched"):
        ds, db = (statistics.median(s["dirs_touched"]) for s in (small, big))
        out += [
            "",
            f"directories a round's changes touch (an upperdir copies each): {ds:.0f} at "
            f"{small['files']:,} files, {db:.0f} at {big['files']:,}",
        ]
    return out


def log(msg: str) -> None:
    print(f"bench_all: {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="5000,100000", help="tree sizes in files (5000,100000)")
    ap.add_argument("--million", action="store_true", help="also 1,000,000 files (~15 GB)")
    ap.add_argument("--changes", type=int, default=100, help="rewrites = adds = deletes (100)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of changes per size (5)")
    ap.add_argument(
        "--local",
        action="store_true",
        help="each round's changes fall in the first leaf directories of the tree, as many "
        "as the smallest size has (the same part of the tree at every size; by default "
        "they spread over the whole tree, so a bigger tree has more directories touched)",
    )
    ap.add_argument("--mean-bytes", type=int, default=10_000, help="mean file size (10000)")
    ap.add_argument(
        "--growth-commits", type=int, default=1000, help="store-growth commits; 0 skips it (1000)"
    )
    ap.add_argument("--growth-files", type=int, default=100_000, help="store-growth tree (100000)")
    ap.add_argument(
        "--plot",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "docs" / "bench-tree-size.svg",
    )
    ap.add_argument(
        "--no-server",
        action="store_true",
        help="SNAPWS_SERVER=0: every command starts Python and imports snapws (default: "
        "the command server, as a user gets it)",
    )
    ap.add_argument("--json", type=Path, help="write every sample here")
    ap.add_argument("--workdir", type=Path, help="fresh dir (default /var/tmp/snapws-all-<pid>)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (unmounted)")
    ap.add_argument("--snapws", help="snapws command line (default: the script beside python)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command's time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_all: snapws mounts overlayfs: run as root")
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.million:
        sizes.append(1_000_000)
    args.local_leaves = (
        max(1, round(min(sizes) / core.FILES_PER_DIR)) if args.local and sizes else None
    )
    work = (args.workdir or Path(f"/var/tmp/snapws-all-{os.getpid()}")).absolute()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"bench_all: {work} is not empty; give a fresh --workdir")
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "argv": sys.argv[1:],
        "changes": args.changes,
        "local_leaves": args.local_leaves,
        "rounds": args.rounds,
        "server": not args.no_server,
        "sizes": [],
    }
    try:
        warm = core.Runner(snapws_argv(args.snapws), False, work / "pycache", server=False)
        warm.warm_bytecode(work)
        warm.stop_servers()
        for n in sizes:
            result["sizes"].append(bench_size(args, n, work))
        if args.json:  # the sizes' samples survive a failure of what follows
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        if args.growth_commits > 0:
            log(f"store growth: {args.growth_commits} commits on {args.growth_files:,} files")
            try:
                result["growth"] = growth(args, work)
            except Exception as e:  # report the sizes' table all the same
                log(f"store growth failed: {type(e).__name__}: {e}")
                result["growth_error"] = f"{type(e).__name__}: {e}"
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            log(f"removing {work}")
            shutil.rmtree(work, ignore_errors=True)
    table = render(result)
    print(table)
    if result["sizes"]:
        args.plot.write_text(
            svg_plot(
                result["sizes"],
                f"snapws vs git: median seconds, {args.changes * 3} changes "
                f"({result['date'][:10]}, {result['cpus']} cores)",
            )
        )
        log(f"plot written to {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
