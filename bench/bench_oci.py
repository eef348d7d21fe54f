#!/usr/bin/env python3
"""Export and import throughput: a snapshot as an OCI image layout and back.

Builds a tree of N files (default 10,000, 200 MB: mixed sizes, half of the
bytes compressible text, half random, deterministic), makes it a workspace,
then times (each a separate ``snapws`` process, warm page cache):

    export gzip (cold)   snapws export HEAD -o DIR             layers compressed now
    export gzip (cached) snapws export HEAD -o DIR2            blob cache hit: a copy
    export zstd (cold)   snapws export HEAD -o DIR3 --compression zstd
    import gzip          snapws --store NEW import DIR         into an empty store
    import zstd          snapws --store NEW2 import DIR3
    umoci unpack         for comparison (if umoci is installed)

and prints MB/s of tree bytes for each. Needs root. Usage:

    sudo python bench/bench_oci.py                       # 10,000 files, 200 MB
    sudo python bench/bench_oci.py --files 1000 --size-mb 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SEED = 20261128
FILES_PER_DIR = 100


def build_tree(root: Path, files: int, size_mb: int) -> int:
    """Deterministic tree; returns its bytes."""
    rng = random.Random(SEED)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(2000)
    ]
    text = b" ".join(rng.choice(words) for _ in range(4 << 20))[: 16 << 20]
    noise = rng.randbytes(16 << 20)
    sizes = [rng.lognormvariate(8, 1.5) for _ in range(files)]
    scale = size_mb * (1 << 20) / sum(sizes)
    total = 0
    for i, s in enumerate(sizes):
        n = min(int(s * scale), 8 << 20)
        src = text if i % 2 else noise
        start = rng.randrange(0, len(src) - n) if n < len(src) else 0
        d = root / f"d{i // (FILES_PER_DIR * 10):02d}" / f"e{(i // FILES_PER_DIR) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.dat").write_bytes(src[start : start + n])
        total += n
    return total


def run(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return took


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument(
        "--workdir", type=Path, default=Path(f"/var/tmp/snapws-bench-oci-{os.getpid()}")
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    opts = ap.parse_args()
    snapws = [sys.executable, "-m", "snapws"]
    work = opts.workdir
    work.mkdir(parents=True)
    ws = work / "ws"
    try:
        tree_bytes = build_tree(ws, opts.files, opts.size_mb)
        run([*snapws, "init", str(ws)], work)
        subprocess.run(["sync"], check=True)
        steps: dict[str, float] = {}
        steps["export gzip (cold)"] = run(
            [*snapws, "-C", str(ws), "export", "HEAD", "-o", str(work / "gz")], work
        )
        steps["export gzip (cached)"] = run(
            [*snapws, "-C", str(ws), "export", "HEAD", "-o", str(work / "gz2")], work
        )
        try:
            import zstandard  # noqa: F401

            have_zstd = True
        except ImportError:
            have_zstd = False
        if have_zstd:
            steps["export zstd (cold)"] = run(
                [
                    *snapws,
                    "-C",
                    str(ws),
                    "export",
                    "HEAD",
                    "-o",
                    str(work / "zst"),
                    "--compression",
                    "zstd",
                ],
                work,
            )
        subprocess.run(["sync"], check=True)
        steps["import gzip"] = run(
            [*snapws, "--store", str(work / "s1"), "import", str(work / "gz")], work
        )
        if have_zstd:
            steps["import zstd"] = run(
                [*snapws, "--store", str(work / "s2"), "import", str(work / "zst")], work
            )
        if shutil.which("umoci"):
            steps["umoci unpack (gzip)"] = run(
                ["umoci", "unpack", "--image", f"{work / 'gz'}:latest", str(work / "bundle")], work
            )
        sizes = {"tree": tree_bytes, "gzip blobs": du(work / "gz" / "blobs")}
        if have_zstd:
            sizes["zstd blobs"] = du(work / "zst" / "blobs")
        print(f"tree: {opts.files} files, {tree_bytes / 1e6:.1f} MB")
        for name, size in sizes.items():
            print(f"  {name:12s} {size / 1e6:8.1f} MB")
        print(f"{'step':24s} {'seconds':>8s} {'MB/s':>8s}")
        for name, t in steps.items():
            print(f"{name:24s} {t:8.2f} {tree_bytes / 1e6 / t:8.1f}")
        if opts.json:
            out: dict[str, Any] = {"files": opts.files, "sizes": sizes, "seconds": steps}
            opts.json.write_text(json.dumps(out, indent=2))
    finally:
        subprocess.run(["umount", "-l", str(ws)], check=False, capture_output=True)
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
