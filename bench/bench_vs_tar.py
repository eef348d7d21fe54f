#!/usr/bin/env python3
"""CI cache against a tarball, on a realistic tree: the first `snapws cache
save` (the directory becomes a workspace and is pushed whole) against
`tar czf`, and `snapws cache restore` into an empty directory (everything
downloads) against `tar xzf`, each repeated (default 3 times), with ratios.

The tree is copied from this machine (real file size mix, real compressibility):
Python's standard library, /usr/share/man and /usr/share/icons, and the
largest binaries of /usr/bin (about 38,000 files and 400 MB here; --source
DIR... for others). A real registry (/usr/bin/docker-registry) runs on
127.0.0.1; each repeat pushes to its own repository with a fresh store, so
nothing is skipped, and restores into a fresh store. Each command runs in
its own process, after an untimed `sync`, with a warm page cache for the
source (as the tar commands have).

    sudo python bench/bench_vs_tar.py                # 3 repeats
    sudo python bench/bench_vs_tar.py --repeat 1 --json out.json
    sudo python bench/bench_vs_tar.py --synthetic 100000 1000   # issue 14's 1 GB tree
    sudo python bench/bench_vs_tar.py --synthetic 100000 1000 \\
        --variant before=HEAD~3 --variant after=HEAD    # each commit in a venv of its own
    sudo python bench/bench_vs_tar.py --snapws 'python3 -m snapws' \\
        --variant before=/tmp/old-checkout --variant after=/tmp/new-checkout

Nothing is deleted before the end: on this machine's journal-less ext4,
creating files is several times slower (kernel time in the inode
allocator) for minutes after a big tree is deleted, which would slow
whatever runs next. Disk: about 5x the tree per repeat and variant, plus
the tarball, under --workdir (default /tmp); all removed at the end.
On a tmpfs (steady figures: no disk, no such slowness) --discard removes
each step's trees once it is timed, so that about 8x the tree is enough
for any number of repeats and variants:

    mount -t tmpfs -o size=10g tmpfs /mnt/t
    sudo python bench/bench_vs_tar.py --synthetic 100000 1000 --workdir /mnt/t/w --discard

That slowness is large and lasts: on 2026-12-07, `tar xzf` of the 1 GB
tree took 10 s in a quiet moment and 17-27 s within minutes of deleting
big trees (tests, an earlier bench), creating a file then costing
80-320 us of kernel time instead of 15-20 us. Compare only within one run
(its `sys` time shows the state), let the machine settle a few minutes
before one, and prefer --repeat 2 or more (the order alternates).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_core as core  # noqa: E402
from registry import running_registry  # noqa: E402


def default_sources() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib, Path("/usr/share/man"), Path("/usr/share/icons")]


def build_tree(dest: Path, sources: list[Path], big: int) -> tuple[int, int]:
    """Copy ``sources`` (site-packages left out) and the ``big`` largest
    files of /usr/bin into ``dest``; return (files, bytes)."""
    dest.mkdir(parents=True)
    for i, src in enumerate(sources):
        subprocess.run(
            ["cp", "-a", "--no-preserve=links", str(src), str(dest / f"{i}-{src.name}")],
            check=True,
        )
        shutil.rmtree(dest / f"{i}-{src.name}" / "site-packages", ignore_errors=True)
    bins = sorted(
        (p for p in Path("/usr/bin").iterdir() if p.is_file() and not p.is_symlink()),
        key=lambda p: p.stat().st_size,
        reverse=True,
    )[:big]
    (dest / "bin").mkdir()
    for p in bins:
        shutil.copy2(p, dest / "bin" / p.name)
    files = size = 0
    for root, _dirs, names in os.walk(dest):
        for n in names:
            st = os.lstat(os.path.join(root, n))
            files += 1
            size += st.st_size
    return files, size


CPU: dict[str, list[float]] = {}  # CPU seconds (user + sys) of each step's processes
SYNCED: dict[str, list[float]] = {}  # a tar step's seconds including a `sync` after it


def timed(
    name: str, args: list[str], env: dict[str, str], cwd: Path, verbose: bool
) -> tuple[float, str]:
    """Run ``args`` after an untimed sync; its wall time (and, in
    :data:`CPU`, the CPU time of it and its children: steadier than wall
    time on a loaded machine; the registry's own share is not in it)."""
    subprocess.run(["sync"], check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(name, []).append(cpu)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
    if name.startswith("tar"):  # snapws makes what it writes durable (syncfs); tar does not
        t = time.perf_counter()
        subprocess.run(["sync"], check=True)
        SYNCED.setdefault(name, []).append(took + time.perf_counter() - t)
    if verbose:
        print(f"  {took:7.2f} s  (cpu {cpu:6.2f} s)  {' '.join(args)}", file=sys.stderr)
    return took, proc.stdout


#: one snapws to time: its name, its command, extra environment
Variant = tuple[str, list[str], dict[str, str]]


def variants(args: argparse.Namespace, snapws: list[str], work: Path) -> list[Variant]:
    """Each snapws to time: --variant NAME=COMMIT (a git commit of this
    repository, installed into a venv of its own as the README does),
    NAME=DIR (--snapws's command with DIR first on PYTHONPATH), else the
    one --snapws runs. Several variants run interleaved in one bench."""
    if not args.variant:
        return [("snapws", snapws, {})]
    out: list[Variant] = []
    for v in args.variant:
        name, _, what = v.partition("=")
        if Path(what).is_dir():
            out.append((name, snapws, {"PYTHONPATH": what}))
        else:
            out.append((name, [str(install_commit(what, work / f"venv-{name}"))], {}))
    return out


def install_commit(commit: str, dest: Path) -> Path:
    """``pip install`` the tree of ``commit`` (of the repository this
    script is in) into a new venv at ``dest``; its ``snapws`` script."""
    repo = HERE.parent
    full = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    src = dest / "src"
    src.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", full], stdout=subprocess.PIPE)
    subprocess.run(["tar", "x", "-C", str(src)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        sys.exit(f"git archive {commit} failed")
    subprocess.run([sys.executable, "-m", "venv", str(dest / "venv")], check=True)
    pip = [str(dest / "venv" / "bin" / "pip"), "install", "-q", str(src)]
    subprocess.run(pip, check=True, capture_output=True)
    print(f"variant {dest.name}: {commit} ({full[:10]}) installed", file=sys.stderr)
    return dest / "venv" / "bin" / "snapws"


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.workdir
    work.mkdir(parents=True)
    snapws = core.snapws_cmd(args.snapws)
    src = work / "src"
    print(f"copying the tree into {src} ...", file=sys.stderr)
    if args.synthetic:
        nfiles, mb = args.synthetic
        spec = core.plan_tree(nfiles, mb << 20, core.SEED)
        core.build_tree(src, spec, core.random_buffer(core.SEED))
        files, size = len(spec.files), sum(spec.sizes)
    else:
        files, size = build_tree(src, args.source or default_sources(), args.big)
    print(f"tree: {files:,} files, {size / 1e6:.0f} MB", file=sys.stderr)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    base["SNAPWS_AUTHOR"] = "bench <bench@example.invalid>"
    base["SNAPWS_CACHE_INSECURE"] = "1"
    names = variants(args, snapws, work)
    times: dict[str, list[float]] = {"tar czf": [], "tar xzf": []}
    tgz = work / "tree0.tgz"
    mounted: list[Path] = []
    try:
        with running_registry(work / "registry") as reg:
            for i in range(args.repeat):
                if args.discard and i:
                    tgz.unlink()  # the last repeat's
                tgz = work / f"tree{i}.tgz"
                cmd = ["tar", "czf", str(tgz), "-C", str(src), "."]
                times["tar czf"].append(timed("tar czf", cmd, base, work, args.v)[0])
                out = work / f"x{i}"
                out.mkdir()
                cmd = ["tar", "xzf", str(tgz), "-C", str(out)]
                times["tar xzf"].append(timed("tar xzf", cmd, base, work, args.v)[0])
                if args.discard:
                    shutil.rmtree(out)
                # alternate the order (what runs first pays for the writeback
                # of what ran before)
                for name, command, extra in names if i % 2 == 0 else names[::-1]:
                    run = work / f"run{i}-{name}"
                    a, b = run / "A" / "tree", run / "B" / "tree"  # two stores: B has nothing
                    a.parent.mkdir(parents=True)
                    b.parent.mkdir()
                    subprocess.run(["cp", "-a", str(src), str(a)], check=True)
                    env = {**base, **extra}
                    env["SNAPWS_CACHE_REMOTE"] = f"{reg.url}/bench/vs-tar-{i}-{name}"
                    mounted += [a, b]
                    for step, path in (("save", a), ("restore", b)):
                        cmd = [*command, "cache", step, "k", "--path", str(path), "--json"]
                        key = f"{step} [{name}]"
                        # each machine its own store (the per-user default would be shared)
                        env["XDG_DATA_HOME"] = str(path.parent / "data")
                        times.setdefault(key, []).append(timed(key, cmd, env, run, args.v)[0])
                    for d in (a, b):
                        subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)
                    if args.discard:  # (the registry stores a blob pushed again once)
                        shutil.rmtree(run)
            tgz_bytes = tgz.stat().st_size
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)
    return {
        "files": files,
        "tree_bytes": size,
        "tgz_bytes": tgz_bytes,
        "variants": [n for n, _, _ in names],
        "seconds": times,
        "cpu_seconds": CPU,
        "with_sync": SYNCED,
    }


def render(r: dict[str, Any]) -> str:
    t, c, w = r["seconds"], r["cpu_seconds"], r["with_sync"]
    med = {k: statistics.median(v) for k, v in t.items()}
    cmed = {k: statistics.median(v) for k, v in c.items()}
    wmed = {k: statistics.median(v) for k, v in w.items()}

    def row(k: str, label: str, tar: str | None) -> str:
        runs = ", ".join(f"{x:.2f}" for x in t[k])
        ratio = f"{med[k] / med[tar]:.2f}x" if tar else ""
        synced = f"{med[k] / wmed[tar]:.2f}x" if tar else f"{wmed[k]:.2f}"
        cpu = f"{cmed[k]:.2f}" + (f" ({cmed[k] / cmed[tar]:.2f}x)" if tar else "")
        return f"| {label} | {runs} | {med[k]:.2f} | {ratio} | {synced} | {cpu} |"

    lines = [
        f"tree: {r['files']:,} files, {r['tree_bytes'] / 1e6:.0f} MB "
        f"(tar.gz {r['tgz_bytes'] / 1e6:.0f} MB)",
        "",
        "| step | runs (s) | median | to tar | to tar + sync | CPU s, median (to tar) |",
        "|---|---|---:|---:|---:|---:|",
        row("tar czf", "tar czf", None),
        row("tar xzf", "tar xzf", None),
    ]
    for name in r["variants"]:
        lines.append(row(f"save [{name}]", f"cache save, first ({name})", "tar czf"))
        lines.append(row(f"restore [{name}]", f"cache restore, empty ({name})", "tar xzf"))
    lines += [
        "",
        "to tar + sync: against tar followed by `sync` (for tar rows: that time), as snapws",
        "makes what it writes durable (syncfs) and tar does not; CPU: the commands' own",
        "processes (the registry's share is not counted)",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--source", type=Path, action="append", help="a directory to copy (repeat)")
    ap.add_argument(
        "--synthetic",
        type=int,
        nargs=2,
        metavar=("FILES", "MB"),
        help="instead: bench_core's tree of incompressible files (e.g. 100000 1000)",
    )
    ap.add_argument("--big", type=int, default=12, help="largest /usr/bin files to add (12)")
    ap.add_argument("--workdir", type=Path, default=Path(f"/tmp/snapws-bench-vs-tar-{os.getpid()}"))
    ap.add_argument(
        "--discard",
        action="store_true",
        help="remove each step's trees once timed (for a tmpfs)",
    )
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--snapws", help="snapws command line (default: the `snapws` script)")
    ap.add_argument(
        "--variant",
        action="append",
        metavar="NAME=COMMIT|DIR",
        help="time a git commit of this repository (installed in a venv of its own), or "
        "the --snapws command with DIR first on PYTHONPATH, as NAME (repeat: interleaved)",
    )
    ap.add_argument("-v", action="store_true", help="print each command's time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_vs_tar.py needs root (snapws mounts overlayfs)")
    if args.workdir.exists():
        sys.exit(f"{args.workdir} exists; give a fresh --workdir")
    try:
        result = bench(args)
        print(render(result), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        print(f"removing {args.workdir} ...", file=sys.stderr)
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
