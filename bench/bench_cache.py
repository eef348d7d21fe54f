#!/usr/bin/env python3
"""CI cache through a registry: bytes moved by `snapws cache save/restore`
next to what actions/cache would move (a tar.gz of the whole tree, each time).

Builds bench_core.py's tree (default 100,000 files, ~1 GB, incompressible
content), starts a real registry (/usr/bin/docker-registry) on 127.0.0.1,
then, each step a separate process (warm page cache, `sync` before each):

    save 1     snapws cache save bench-1 --path A/build     the directory becomes a
                                                            workspace and is pushed whole
    (changes)  bench_core's 100 rewrites + 100 additions + 100 deletions in A/build
    save 2     snapws cache save bench-2 --path A/build     commit + push of the new layer
    restore    snapws cache restore bench-3 --restore-key bench- --path B/build
                                                            a fresh runner: everything downloads
    save 3     (the same 300 changes again, other files) snapws cache save bench-3 --path B/build
                                                            a save after a restore
    tar czf    tar czf tree.tgz -C A/build .                what actions/cache uploads per save
    tar xzf    tar xzf tree.tgz -C C                        what it downloads per restore

and prints bytes sent / received (from the commands' --json summaries) and
times. Needs root, docker-registry and tar. Usage:

    sudo python bench/bench_cache.py                              # 100,000 files, ~1 GB
    sudo python bench/bench_cache.py --files 2000 --size-mb 20    # smoke test
    sudo python bench/bench_cache.py --json out.json

Disk: about 5x the tree on --workdir's filesystem (tree in the store, blob
cache, registry, a second runner, the tar.gz and its extraction).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_core as core  # noqa: E402
from registry import running_registry  # noqa: E402

REPO = "bench/cache"


def fmt_bytes(n: int) -> str:
    return core.fmt_bytes(n)


class Steps:
    """Runs commands (each timed, after an untimed sync) and keeps results."""

    def __init__(self, env: dict[str, str], verbose: bool) -> None:
        self.env = env
        self.verbose = verbose
        self.rows: dict[str, dict[str, Any]] = {}

    def run(self, name: str, args: list[str], cwd: Path) -> tuple[float, str]:
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        proc = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True)
        took = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"{name}: {' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
        if self.verbose:
            print(f"  {name}: {took:.2f} s  ({' '.join(args)})", file=sys.stderr)
        return took, proc.stdout

    def snapws(self, name: str, snapws: list[str], args: list[str], cwd: Path) -> dict[str, Any]:
        took, out = self.run(name, [*snapws, *args, "--json"], cwd)
        data: dict[str, Any] = json.loads(out)
        self.rows[name] = {"seconds": round(took, 3), **data}
        return data


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.workdir
    work.mkdir(parents=True)
    snapws = core.snapws_cmd(args.snapws)
    print(f"building {args.files:,} files, {args.size_mb} MB in {work} ...", file=sys.stderr)
    spec = core.plan_tree(args.files, args.size_mb << 20, core.SEED)
    buf = core.random_buffer(core.SEED)
    a, b = work / "A" / "build", work / "B" / "build"
    core.build_tree(a, spec, buf)
    tree_bytes = sum(spec.sizes)
    with running_registry(work / "registry") as reg:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
        env.update(
            {
                "SNAPWS_CACHE_REMOTE": f"{reg.url}/{REPO}",
                "SNAPWS_CACHE_INSECURE": "1",
                "SNAPWS_AUTHOR": "bench <bench@example.invalid>",
            }
        )
        steps = Steps(env, args.verbose)
        try:
            steps.snapws("save 1", snapws, ["cache", "save", "bench-1", "--path", str(a)], work)
            changes = core.plan_changes(spec, args.changes, core.SEED)
            core.apply_changes(a, changes, buf)
            steps.snapws("save 2", snapws, ["cache", "save", "bench-2", "--path", str(a)], work)
            (work / "B").mkdir()
            restore = ["cache", "restore", "bench-3", "--restore-key", "bench-", "--path", str(b)]
            steps.snapws("restore", snapws, restore, work)
            # the same kind of change on the restored runner (another seed: other files)
            left = core.TreeSpec(spec.dirs, [], [], [])
            gone = set(changes.delete)
            for f, s, o in zip(spec.files, spec.sizes, spec.offsets, strict=True):
                if f not in gone:
                    left.files.append(f)
                    left.sizes.append(s)
                    left.offsets.append(o)
            more = core.plan_changes(left, args.changes, core.SEED + 7)
            more.add = [(p.replace("/new", "/more"), s, o) for p, s, o in more.add]
            core.apply_changes(b, more, buf)
            steps.snapws("save 3", snapws, ["cache", "save", "bench-3", "--path", str(b)], work)
            tgz = work / "tree.tgz"
            took, _ = steps.run("tar czf", ["tar", "czf", str(tgz), "-C", str(a), "."], work)
            steps.rows["tar czf"] = {"seconds": round(took, 3), "bytes": tgz.stat().st_size}
            (work / "C").mkdir()
            took, _ = steps.run("tar xzf", ["tar", "xzf", str(tgz), "-C", str(work / "C")], work)
            steps.rows["tar xzf"] = {"seconds": round(took, 3), "bytes": tgz.stat().st_size}
        finally:
            for d in (a, b):
                subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)
    return {
        "files": args.files,
        "tree_bytes": tree_bytes,
        "changes": 3 * args.changes,
        "change_bytes": core.change_bytes(spec, changes),
        "steps": steps.rows,
    }


def render(r: dict[str, Any]) -> str:
    s = r["steps"]
    lines = [
        f"tree: {r['files']:,} files, {fmt_bytes(r['tree_bytes'])}; "
        f"{r['changes']} changed files between saves",
        "",
        "| step | sent | received | blobs sent / skipped | time |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("save 1", "save 2", "restore", "save 3"):
        x = s[name]
        lines.append(
            f"| snapws cache {name} | {fmt_bytes(x['bytes_sent'])} | "
            f"{fmt_bytes(x['bytes_received'])} | {x['blobs_sent']} / {x['blobs_skipped']} | "
            f"{x['seconds']:.1f} s |"
        )
    tgz = s["tar czf"]
    lines.append(
        f"| tar czf (actions/cache, every save) | {fmt_bytes(tgz['bytes'])} | | | "
        f"{tgz['seconds']:.1f} s |"
    )
    lines.append(
        f"| tar xzf (actions/cache, every restore) | | {fmt_bytes(s['tar xzf']['bytes'])} | | "
        f"{s['tar xzf']['seconds']:.1f} s |"
    )
    ratio = tgz["bytes"] / max(s["save 2"]["bytes_sent"], 1)
    lines += ["", f"incremental save sends {ratio:,.0f}x fewer bytes than a tar.gz of the tree"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=100, help="each of modify/add/delete (100)")
    ap.add_argument(
        "--workdir", type=Path, default=Path(f"/var/tmp/snapws-bench-cache-{os.getpid()}")
    )
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--snapws", help="snapws command line (default: the `snapws` script)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_cache.py needs root (snapws mounts overlayfs)")
    if args.workdir.exists():
        sys.exit(f"{args.workdir} exists; give a fresh --workdir")
    try:
        result = bench(args)
        print(render(result), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not args.keep:
            print(f"removing {args.workdir} ...", file=sys.stderr)
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
