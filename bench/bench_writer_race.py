"""A writer racing snapws's remounts: files lost, ENOENT seen, and the freeze
as a writer sees it (the EROFS window of each operation).

    sudo python bench/bench_writer_race.py                 # 5,000 files, 300 changes, 20 rounds
    sudo python bench/bench_writer_race.py --files 100000 --rounds 10 --backend fuse

A workspace of ``--files`` small files is made; a writer process then creates
files in a loop (open, write, close; ``--rate`` files a second, 0 for as fast
as it can) by absolute path and logs each success
with its time and each failure's errno with its time. Each round makes
``--changes`` changes (rewrites of existing files) and runs ``commit``, then
``reset HEAD`` (a remount keeping changes) and ``flatten`` every 5th round.
Reported: files the writer wrote and how many of them are missing afterwards
(must be 0), ENOENT errors (must be 0), the directory under the mount (must
be empty), and per operation the freeze as the writer saw it: the time from
its first to its last EROFS in that operation (0 when it never hit one),
beside the command's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITER = r"""
import errno, os, select, sys, time
root, log, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
parent = os.getppid()
n = 0
with open(log, "w") as out:
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0] and os.getppid() == parent:
        if n >= 200_000:  # bounded: never fills a disk
            time.sleep(0.05)
            continue
        rel = f"race/w{n:07d}"
        n += 1
        try:
            fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, rel.encode())
            finally:
                os.close(fd)
        except OSError as e:
            out.write(f"{time.monotonic()} ! {errno.errorcode.get(e.errno, e.errno)}\n")
            continue
        out.write(f"{time.monotonic()} + {rel}\n")
        if pause:
            time.sleep(pause)
"""


def snapws(ws: Path, *args: str) -> tuple[float, float, int]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "snapws", "-C", str(ws), *args], capture_output=True, text=True
    )
    if proc.returncode:
        print(f"snapws {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return t0, time.monotonic(), proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--changes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--backend", default="kernel")
    ap.add_argument(
        "--rate", type=float, default=500, help="files/s the writer aims at (0: flat out)"
    )
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="snapws-race-", dir="/var/tmp"))
    ws = root / "ws"
    for i in range(args.files):
        d = ws / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"f{i:06d}.txt").write_text(f"file {i}\n" * 4)
    (ws / "race").mkdir()
    os.environ["SNAPWS_STORE"] = str(root / "store")  # not the user's default store
    subprocess.run(
        [sys.executable, "-m", "snapws", "init", "--backend", args.backend, str(ws)],
        check=True,
        capture_output=True,
    )
    log = root / "writer.log"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ws), str(log), str(1 / args.rate if args.rate else 0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "ready"
    ops: list[tuple[str, float, float, int]] = []
    try:
        for r in range(args.rounds):
            for k in range(args.changes):
                i = (r * args.changes + k) % args.files
                (ws / f"d{i // 100:04d}" / f"f{i:06d}.txt").write_text(f"round {r}\n")
            ops.append(("commit", *snapws(ws, "commit", "-m", f"round {r}")))
            ops.append(("reset", *snapws(ws, "reset", "HEAD")))
            if r % 5 == 4:
                ops.append(("flatten", *snapws(ws, "flatten")))
    finally:
        writer.stdin.write("stop\n")
        writer.stdin.close()
        writer.wait()
    written, errors = [], []
    for line in log.read_text().splitlines():
        when, kind, what = line.split(" ", 2)
        (written if kind == "+" else errors).append((float(when), what))
    missing = [rel for _, rel in written if not (ws / rel).is_file()]
    view = Path(tempfile.mkdtemp(prefix="snapws-below-"))
    subprocess.run(["mount", "--bind", str(ws.parent), str(view)], check=True)
    below = os.listdir(view / ws.name)
    subprocess.run(["umount", "-l", str(view)], check=True)
    view.rmdir()
    rows = []
    for name, t0, t1, rc in ops:
        erofs = [w for w, e in errors if e == "EROFS" and t0 <= w <= t1]
        rows.append(
            {
                "op": name,
                "exit": rc,
                "wall_s": round(t1 - t0, 4),
                "erofs": len(erofs),
                "freeze_s": round(max(erofs) - min(erofs), 4) if erofs else 0.0,
            }
        )
    result = {
        "files": args.files,
        "changes": args.changes,
        "backend": args.backend,
        "written": len(written),
        "lost": len(missing),
        "enoent": sum(1 for _, e in errors if e == "ENOENT"),
        "other_errors": sorted({e for _, e in errors} - {"EROFS", "ENOENT"}),
        "below_mount": len(below),
        "ops": rows,
    }
    print(f"{args.backend}, {args.files} files, {args.changes} changes/round, {args.rounds} rounds")
    print(
        f"writer wrote {result['written']} files; lost {result['lost']}; "
        f"ENOENT {result['enoent']}; under the mount {result['below_mount']}; "
        f"other errors {result['other_errors']}"
    )
    for name in ("commit", "reset", "flatten"):
        sel = [r for r in rows if r["op"] == name]
        if not sel:
            continue
        fr = [float(r["freeze_s"]) for r in sel]
        wall = [float(r["wall_s"]) for r in sel]
        print(
            f"{name:8s} n={len(sel):3d} exit!=0: {sum(1 for r in sel if r['exit'])}  "
            f"wall median {statistics.median(wall):.3f} s  freeze median "
            f"{statistics.median(fr):.3f} s  max {max(fr):.3f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    subprocess.run([sys.executable, "-m", "snapws", "-C", str(ws), "umount"], capture_output=True)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not missing and not below and not result["enoent"] else 1


if __name__ == "__main__":
    sys.exit(main())
