#!/usr/bin/env python3
"""push / pull through a registry: bytes moved by a first push, by a push
after 300 changed files, and by a pull into a fresh store, next to the size
of a tar.gz of the whole tree (what a tarball-based cache uploads each time).

Builds bench_core.py's tree (default 20,000 files, 200 MB; --files 100000
--size-mb 1000 is the design brief's size; incompressible content), starts a
real registry (/usr/bin/docker-registry) on 127.0.0.1, then, each step a
separate process (warm page cache, `sync` before each):

    init       snapws init A/tree
    push 1     snapws push                 every layer is compressed and sent
    (changes)  bench_core's 100 rewrites + 100 additions + 100 deletions
    commit     snapws commit -m changes
    push 2     snapws push                 only the new layer (and the config)
    pull       snapws pull (fresh store)   a new machine: everything downloads
    tar czf    tar czf tree.tgz -C A/tree .

Needs root, docker-registry and tar. Usage:

    sudo python bench/bench_transfer.py                              # 20,000 files
    sudo python bench/bench_transfer.py --files 100000 --size-mb 1000
    sudo python bench/bench_transfer.py --files 2000 --size-mb 20    # smoke test
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

REPO = "bench/transfer"


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
        self.rows.setdefault(name, {})["seconds"] = round(took, 3)
        return took, proc.stdout

    def snapws(self, name: str, snapws: list[str], args: list[str], cwd: Path) -> dict[str, Any]:
        _took, out = self.run(name, [*snapws, *args, "--json"], cwd)
        data: dict[str, Any] = json.loads(out)
        self.rows[name].update(data)
        return data


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.workdir
    work.mkdir(parents=True)
    snapws = core.snapws_cmd(args.snapws)
    print(f"building {args.files:,} files, {args.size_mb} MB in {work} ...", file=sys.stderr)
    spec = core.plan_tree(args.files, args.size_mb << 20, core.SEED)
    buf = core.random_buffer(core.SEED)
    a, b = work / "A" / "tree", work / "B" / "tree"
    core.build_tree(a, spec, buf)
    b.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    env["SNAPWS_AUTHOR"] = "bench <bench@example.invalid>"
    steps = Steps(env, args.verbose)
    sa = [*snapws, "--store", str(work / "A" / ".snapws")]
    sb = [*snapws, "--store", str(work / "B" / ".snapws")]
    try:
        with running_registry(work / "registry") as reg:
            url = f"{reg.url}/{REPO}"
            steps.run("init", [*sa, "init", str(a)], work)
            steps.run(
                "remote add",
                [*sa, "-C", str(a), "remote", "add", "origin", url, "--insecure"],
                work,
            )
            steps.snapws("push 1", sa, ["-C", str(a), "push"], work)
            changes = core.plan_changes(spec, args.changes, core.SEED)
            core.apply_changes(a, changes, buf)
            steps.run("commit", [*sa, "-C", str(a), "commit", "-m", "changes"], work)
            steps.snapws("push 2", sa, ["-C", str(a), "push"], work)
            steps.run("init B", [*sb, "init", str(b)], work)
            steps.run(
                "remote add B",
                [*sb, "-C", str(b), "remote", "add", "origin", url, "--insecure"],
                work,
            )
            steps.snapws("pull", sb, ["-C", str(b), "pull"], work)
            registry_bytes = sum(f.stat().st_size for f in (reg.data).rglob("*") if f.is_file())
            tgz = work / "tree.tgz"
            steps.run("tar czf", ["tar", "czf", str(tgz), "-C", str(a), "."], work)
            steps.rows["tar czf"]["bytes"] = tgz.stat().st_size
    finally:
        for d in (a, b):
            subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)
    return {
        "files": args.files,
        "tree_bytes": sum(spec.sizes),
        "changes": 3 * args.changes,
        "change_bytes": core.change_bytes(spec, changes),
        "registry_bytes": registry_bytes,
        "steps": steps.rows,
    }


def render(r: dict[str, Any]) -> str:
    fb = core.fmt_bytes
    s = r["steps"]
    lines = [
        f"tree: {r['files']:,} files, {fb(r['tree_bytes'])}; changes: {r['changes']} files "
        f"({json.dumps(r['change_bytes'])})",
        "",
        "| step | blobs sent / skipped / received | bytes on the wire | time | rate |",
        "|---|---|---|---|---|",
    ]
    for name in ("push 1", "push 2", "pull"):
        row = s[name]
        moved = row["bytes_sent"] or row["bytes_received"]
        rate = moved / max(row["seconds"], 1e-6) / (1 << 20)
        blobs = f"{row['blobs_sent']} / {row['blobs_skipped']} / {row['blobs_received']}"
        lines.append(
            f"| {name} | {blobs} | {fb(moved)} | {row['seconds']:.1f} s | {rate:.1f} MiB/s |"
        )
    lines.append(f"| commit (300 changes) | | | {s['commit']['seconds']:.2f} s | |")
    tgz = s["tar czf"]
    lines.append(
        f"| tar czf of the tree (a tarball cache, every save) | | {fb(tgz['bytes'])} | "
        f"{tgz['seconds']:.1f} s | |"
    )
    ratio = tgz["bytes"] / max(s["push 2"]["bytes_sent"], 1)
    lines += [
        "",
        f"registry storage after both pushes: {fb(r['registry_bytes'])}",
        f"the incremental push sends {ratio:,.0f}x fewer bytes than a tar.gz of the tree",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--changes", type=int, default=100, help="each of modify/add/delete (100)")
    ap.add_argument(
        "--workdir", type=Path, default=Path(f"/var/tmp/snapws-bench-transfer-{os.getpid()}")
    )
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--snapws", help="snapws command line (default: the `snapws` script)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_transfer.py needs root (snapws mounts overlayfs)")
    if args.workdir.exists():
        sys.exit(f"{args.workdir} exists; give a fresh --workdir")
    try:
        result = bench(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
