#!/usr/bin/env python3
"""snapws vs git on one big tree, side by side, in one run.

Builds a tree of N files (default 100,000, about 1 GB: mixed sizes, three
directory levels, deterministic content from a seeded RNG), copies it, and
times on the two identical copies:

    init       snapws init                vs  git init && git add -A && git commit
    (changes)  the same 100 modifications, 100 additions, 100 deletions in both
    status     snapws status              vs  git status
    commit     snapws commit -m           vs  git add -A && git commit -m
    checkout   snapws checkout HEAD~1     vs  git checkout HEAD~1   (detached)
    back       snapws checkout main       vs  git checkout main
    diff       snapws diff --stat HEAD~1 HEAD  vs  git diff --stat HEAD~1 HEAD

init and commit run once; status, checkout (there and back) and diff are
repeated --repeat times (default 3) and the table shows the best sample (all
samples go to the JSON): the machine may be shared, and these steps take
tenths of a second.

Measured warm: the page cache is not dropped; ``sync`` runs (untimed) before
every measured step so that no step pays for an earlier step's writeback.
Every command is a separate process timed with time.perf_counter() around
subprocess.run, so interpreter start-up (snapws is Python) is included.

The work directory is created fresh under --workdir and deleted only at the
end (after unmounting the workspace): on this machine's journal-less ext4,
creating files is several times slower for a few minutes after deleting a
100,000-file tree, so nothing big is deleted before a measurement. Leave a
few minutes between two full-size runs for the same reason.

Needs root (snapws mounts overlayfs). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 20261127
FILES_PER_DIR = 100
SIZE_CAP = 16 << 20  # largest file
BUF_SIZE = 64 << 20  # random bytes that file contents are sliced from
EXTS = (".c", ".h", ".py", ".json", ".txt", ".bin", ".dat", ".o")


# ---------------------------------------------------------------- tree ----
@dataclass
class TreeSpec:
    """The files of the generated tree: relative paths, sizes, content offsets."""

    dirs: list[str] = field(default_factory=list)  # leaf dirs, relative
    files: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)


def plan_tree(n_files: int, total_bytes: int, seed: int) -> TreeSpec:
    """Deterministic layout: ~100 files per leaf directory, leaves three levels
    deep (d00/d00/d00), log-normal sizes scaled so they sum to ~total_bytes."""
    rng = random.Random(seed)
    n_leaves = max(1, round(n_files / FILES_PER_DIR))
    fan = max(1, math.ceil(n_leaves ** (1 / 3)))
    spec = TreeSpec()
    for i in range(fan):
        for j in range(fan):
            for k in range(fan):
                if len(spec.dirs) < n_leaves:
                    spec.dirs.append(f"d{i:02d}/d{j:02d}/d{k:02d}")
    mean = total_bytes / n_files
    sigma = 1.5
    mu = math.log(mean) - sigma * sigma / 2
    raw = [min(SIZE_CAP, rng.lognormvariate(mu, sigma)) for _ in range(n_files)]
    scale = total_bytes / sum(raw)
    spec.sizes = [max(0, min(SIZE_CAP, int(r * scale))) for r in raw]
    for n in range(n_files):
        d = spec.dirs[n % n_leaves]
        spec.files.append(f"{d}/f{n:06d}{EXTS[n % len(EXTS)]}")
        spec.offsets.append(rng.randrange(BUF_SIZE - spec.sizes[n] + 1))
    return spec


def random_buffer(seed: int) -> memoryview:
    return memoryview(random.Random(seed).randbytes(BUF_SIZE))


def write_file(path: str, data: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = data
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def build_tree(root: Path, spec: TreeSpec, buf: memoryview) -> None:
    """Write the tree: os.write of slices of one reused random buffer."""
    root.mkdir(parents=True)
    for d in spec.dirs:
        os.makedirs(root / d, exist_ok=True)
    base = str(root) + "/"
    for rel, size, off in zip(spec.files, spec.sizes, spec.offsets, strict=True):
        write_file(base + rel, buf[off : off + size])


# ------------------------------------------------------------- changes ----
@dataclass
class ChangeSet:
    modify: list[tuple[str, int, int, int]]  # path, file offset, length, buffer offset
    add: list[tuple[str, int, int]]  # path, size, buffer offset
    delete: list[str]


def plan_changes(spec: TreeSpec, n: int, seed: int, leaves: int | None = None) -> ChangeSet:
    """n modifications (a block rewritten in place: the file keeps its size),
    n additions (new files in existing leaf dirs), n deletions; disjoint.
    ``leaves``: all in the tree's first that many leaf dirs (default: anywhere)."""
    rng = random.Random(seed + 1)
    dirs = spec.dirs[:leaves] if leaves else spec.dirs
    pool: Sequence[int] = range(len(spec.files))
    if leaves:
        near = set(dirs)
        pool = [i for i, f in enumerate(spec.files) if f.rpartition("/")[0] in near]
    picked = rng.sample(pool, 2 * n)
    modify = []
    for i in picked[:n]:
        size = spec.sizes[i]
        length = min(size, 4096) if size else 1  # an empty file grows by one byte
        at = rng.randrange(size - length + 1) if size >= length else 0
        modify.append((spec.files[i], at, length, rng.randrange(BUF_SIZE - length)))
    delete = [spec.files[i] for i in picked[n:]]
    mean = sum(spec.sizes) / len(spec.sizes)
    add = []
    for k in range(n):
        size = min(SIZE_CAP, int(rng.lognormvariate(math.log(mean) - 1.125, 1.5)))
        d = dirs[rng.randrange(len(dirs))]
        add.append((f"{d}/new{k:04d}.dat", size, rng.randrange(BUF_SIZE - size + 1)))
    return ChangeSet(modify, add, delete)


def dirs_touched(cs: ChangeSet) -> int:
    """The directories ``cs`` changes something in or below (root excluded):
    what an overlay upperdir gets copies of."""
    out = set()
    for path in [m[0] for m in cs.modify] + [a[0] for a in cs.add] + cs.delete:
        d = path.rpartition("/")[0]
        while d and d not in out:
            out.add(d)
            d = d.rpartition("/")[0]
    return len(out)


def apply_changes(root: Path, cs: ChangeSet, buf: memoryview) -> None:
    base = str(root) + "/"
    for rel, at, length, off in cs.modify:
        fd = os.open(base + rel, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, buf[off : off + length], at)
        finally:
            os.close(fd)
    for rel, size, off in cs.add:
        write_file(base + rel, buf[off : off + size])
    for rel in cs.delete:
        os.unlink(base + rel)


def change_bytes(spec: TreeSpec, cs: ChangeSet) -> dict[str, int]:
    size_of = dict(zip(spec.files, spec.sizes, strict=True))
    written = sum(length for _, _, length, _ in cs.modify)
    modified_files = sum(max(size_of[p], at + length) for p, at, length, _ in cs.modify)
    added = sum(size for _, size, _ in cs.add)
    return {
        "bytes_written_by_modifications": written,
        "bytes_of_modified_files": modified_files,
        "bytes_added": added,
        "bytes_deleted": sum(size_of[p] for p in cs.delete),
        # what any file-granular store must keep for this snapshot
        "changed_file_bytes": modified_files + added,
    }


# ------------------------------------------------------------- running ----
class Runner:
    """Runs snapws and git with a clean environment. ``server``: the console
    script hands commands to a command server as it does for a user
    (snapws.cli.launch), one of the bench's own (a private runtime
    directory; :meth:`stop_servers` ends it); else SNAPWS_SERVER=0."""

    def __init__(
        self, snapws: list[str], verbose: bool, pycache: Path | None, server: bool = True
    ) -> None:
        self.snapws = snapws
        self.verbose = verbose
        self.server = server
        self.runtime = Path(tempfile.mkdtemp(prefix="snapws-bench-run-"))
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("GIT_", "SNAPWS_")) or k == "CI":
                del env[k]
        if server:
            env["XDG_RUNTIME_DIR"] = str(self.runtime)
        else:
            env["SNAPWS_SERVER"] = "0"
        if pycache is not None:
            # new workspaces' default store in the bench's work dir (beside
            # the bytecode cache), not the user's own (/var/lib/snapws)
            env["XDG_DATA_HOME"] = str(pycache.parent / "xdg-data")
            # an installed snapws runs from cached bytecode; keep the cache
            # out of the source tree (PYTHONDONTWRITEBYTECODE would make every
            # snapws command recompile its modules: ~40 ms each)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(pycache)
        env.update(
            {
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_AUTHOR_NAME": "Bench",
                "GIT_AUTHOR_EMAIL": "bench@example.invalid",
                "GIT_COMMITTER_NAME": "Bench",
                "GIT_COMMITTER_EMAIL": "bench@example.invalid",
                "SNAPWS_AUTHOR": "Bench <bench@example.invalid>",
                "LC_ALL": "C",
                "PAGER": "cat",
                "GIT_PAGER": "cat",
            }
        )
        self.env = env

    def run(self, argv: list[str], cwd: Path) -> tuple[float, str]:
        """Run one command; return (seconds, stdout). Raises on failure."""
        t0 = time.perf_counter()
        p = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if self.verbose:
            print(f"    {dt:8.3f}s  {' '.join(argv)}", file=sys.stderr)
        if p.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} (in {cwd}) exited {p.returncode}\n{p.stdout}\n{p.stderr}"
            )
        return dt, p.stdout

    def warm_server(self, cwd: Path, *options: str) -> None:
        """Start the command server before anything is measured (the first
        served command starts it and runs without it); ``options``: global
        options of that ``snapws status`` (``--store DIR``)."""
        if not self.server:
            return
        self.sw(*options, "status", cwd=cwd)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(self.runtime.glob("snapws/*.sock")):
            time.sleep(0.05)
        time.sleep(0.5)  # its imports done

    def stop_servers(self) -> None:
        """End the bench's command servers (those still starting too)."""
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this repo's
        from snapws.cli.launch import server_pids

        for pid in server_pids(str(self.runtime / "snapws")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.runtime, ignore_errors=True)

    def warm_bytecode(self, cwd: Path) -> None:
        """Compile snapws's modules into the cache (imports done lazily
        included), so that no measured step pays for compiling."""
        code = "import os, snapws; print(os.path.dirname(snapws.__file__))"
        pkg = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True
        ).stdout.strip()
        if pkg:
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", pkg], env=self.env, check=False
            )
        self.sw("--version", cwd=cwd)

    def sw(self, *args: str, cwd: Path) -> tuple[float, str]:
        return self.run([*self.snapws, *args], cwd)

    def git(self, *args: str, cwd: Path) -> tuple[float, str]:
        return self.run(["git", "-c", "gc.auto=0", *args], cwd)


def sync() -> None:
    subprocess.run(["sync"], check=True)


def du_bytes(path: Path) -> dict[str, int]:
    """Disk usage (allocated blocks) and apparent size, as du counts them."""
    disk = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True)
    app = subprocess.run(["du", "-s", "-b", str(path)], capture_output=True, text=True)
    return {
        "disk": int(disk.stdout.split()[0]) if disk.returncode == 0 else -1,
        "apparent": int(app.stdout.split()[0]) if app.returncode == 0 else -1,
    }


def layer_contents(layer: Path) -> dict[str, int]:
    """What a layer directory holds: its tree's nodes by kind, and the sizes."""
    out = {"files": 0, "file_bytes": 0, "dirs": 0, "whiteouts": 0, "other": 0}
    for dirpath, dirnames, filenames in os.walk(layer / "tree"):
        out["dirs"] += len(dirnames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                out["files"] += 1
                out["file_bytes"] += st.st_size
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out["whiteouts"] += 1
            else:
                out["other"] += 1
    out["dirs"] += 1  # the tree's root
    manifest = layer / "manifest"
    out["manifest_bytes"] = manifest.stat().st_size if manifest.exists() else 0
    return out


def count_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def snapws_cmd(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    exe = shutil.which("snapws")
    return [exe] if exe else [sys.executable, "-m", "snapws"]


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# ---------------------------------------------------------------- main ----
def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or f"/var/tmp/snapws-bench-{os.getpid()}").absolute()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"bench: {work} exists and is not empty; give a fresh --workdir")
    work.mkdir(parents=True, exist_ok=True)
    r = Runner(snapws_cmd(args.snapws), args.verbose, None if args.no_pycache else work / "pycache")
    r.warm_bytecode(work)
    sw_tree = work / "snapws" / "tree"  # store: work/snapws/.snapws (beside it)
    git_tree = work / "git" / "tree"
    store = work / "snapws" / ".snapws"
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "snapws": r.sw("--version", cwd=work)[1].strip(),
        # the floor of every snapws step: interpreter start-up and imports
        "snapws_startup_seconds": min(r.sw("--version", cwd=work)[0] for _ in range(9)),
        "bytecode_cache": not args.no_pycache,
        "loadavg_start": os.getloadavg(),
        "snapws_cmd": r.snapws,
        "workdir": str(work),
        "files": args.files,
        "size_mb": args.size_mb,
        "changes": args.changes,
        "repeat": args.repeat,
        "timings": [],
    }
    timings: list[dict[str, Any]] = result["timings"]

    rows: dict[str, dict[str, Any]] = {}

    def step(name: str, sw_cmds: list[list[str]], git_cmds: list[list[str]]) -> None:
        """Measure one sample of ``name`` for both tools (sync first). Repeated
        samples of the same step keep every time; the row shows the best."""
        if name not in rows:
            rows[name] = {"operation": name, "snapws_samples": [], "git_samples": []}
            timings.append(rows[name])
        row = rows[name]
        for tool, cmds, tree in (("snapws", sw_cmds, sw_tree), ("git", git_cmds, git_tree)):
            sync()
            parts = []
            out = ""
            for c in cmds:
                dt, out = r.sw(*c, cwd=tree) if tool == "snapws" else r.git(*c, cwd=tree)
                parts.append(dt)
            row[f"{tool}_samples"].append(sum(parts))
            row[tool] = min(row[f"{tool}_samples"])
            row[f"{tool}_parts"] = parts
            row[f"{tool}_output_lines"] = count_lines(out)
        row["ratio"] = row["git"] / row["snapws"] if row["snapws"] > 0 else float("inf")
        row["snapws_minus_startup"] = (
            row["snapws"] - len(sw_cmds) * result["snapws_startup_seconds"]
        )
        row.setdefault("loadavg_1min", []).append(os.getloadavg()[0])
        sw_s, git_s = row["snapws_samples"][-1], row["git_samples"][-1]
        print(
            f"  {name:<28} snapws {sw_s:8.3f}s   git {git_s:8.3f}s   git/snapws "
            f"{git_s / sw_s:7.1f}x   load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )

    try:
        total = args.size_mb * 1_000_000
        print(f"bench: building {args.files} files, ~{args.size_mb} MB in {work}", file=sys.stderr)
        t0 = time.perf_counter()
        spec = plan_tree(args.files, total, SEED)
        buf = random_buffer(SEED)
        build_tree(sw_tree, spec, buf)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        git_tree.parent.mkdir()
        subprocess.run(["cp", "-a", str(sw_tree), str(git_tree)], check=True)
        t_copy = time.perf_counter() - t0
        result["tree_bytes"] = sum(spec.sizes)
        result["tree_dirs"] = len(spec.dirs)
        result["build_seconds"] = t_build
        result["copy_seconds"] = t_copy
        print(
            f"bench: built {fmt_bytes(sum(spec.sizes))} in {t_build:.1f}s, copied in {t_copy:.1f}s",
            file=sys.stderr,
        )

        step(
            "init (+ initial commit)",
            [["init", "."]],
            [["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]],
        )
        layers_before = set(os.listdir(store / "layers"))
        result["store_after_init"] = du_bytes(store / "layers")
        result["git_after_init"] = du_bytes(git_tree / ".git")

        cs = plan_changes(spec, args.changes, SEED)
        result["change_bytes"] = change_bytes(spec, cs)
        cbuf = random_buffer(SEED + 2)
        for tool, tree in (("snapws", sw_tree), ("git", git_tree)):
            sync()
            t0 = time.perf_counter()
            apply_changes(tree, cs, cbuf)
            result[f"apply_changes_seconds_{tool}"] = time.perf_counter() - t0

        for _ in range(args.repeat):
            step("status", [["status"]], [["status"]])
        step(
            "commit",
            [["commit", "-m", "changes"]],
            [["add", "-A"], ["commit", "-q", "-m", "changes"]],
        )
        new_layers = sorted(set(os.listdir(store / "layers")) - layers_before)
        result["new_layers"] = new_layers
        result["store_new_layer"] = (
            du_bytes(store / "layers" / new_layers[0]) if len(new_layers) == 1 else None
        )
        if len(new_layers) == 1:
            result["new_layer_contents"] = layer_contents(store / "layers" / new_layers[0])
        result["store_after_commit"] = du_bytes(store / "layers")
        result["git_after_commit"] = du_bytes(git_tree / ".git")

        for _ in range(args.repeat):
            step(
                "checkout HEAD~1 (detached)",
                [["checkout", "HEAD~1"]],
                [["checkout", "-q", "HEAD~1"]],
            )
            step("checkout main (back)", [["checkout", "main"]], [["checkout", "-q", "main"]])
        for _ in range(args.repeat):
            step(
                "diff --stat HEAD~1 HEAD",
                [["diff", "--stat", "HEAD~1", "HEAD"]],
                [["diff", "--stat", "HEAD~1", "HEAD"]],
            )
        # sanity: both tools see the same number of changes
        result["check_git_changes"] = count_lines(
            r.git("diff", "--name-only", "HEAD~1", "HEAD", cwd=git_tree)[1]
        )
        result["check_snapws_changes"] = count_lines(
            r.sw("diff", "--name-only", "HEAD~1", "HEAD", cwd=sw_tree)[1]
        )
        return result
    finally:
        cleanup(r, work, sw_tree, args.keep)


def cleanup(r: Runner, work: Path, sw_tree: Path, keep: bool) -> None:
    """Unmount the workspace (always), then delete the work dir (unless --keep)."""
    r.stop_servers()
    if sw_tree.exists() and is_mounted(sw_tree):
        try:
            r.sw("umount", str(sw_tree), cwd=work)
        except RuntimeError as e:
            print(f"bench: snapws umount failed, detaching: {e}", file=sys.stderr)
        if is_mounted(sw_tree):
            subprocess.run(["umount", "-l", str(sw_tree)], check=False)
    if keep:
        print(f"bench: kept {work} (workspace unmounted)", file=sys.stderr)
        return
    print(f"bench: removing {work}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"snapws vs git: {result['files']:,} files, {fmt_bytes(result['tree_bytes'])}, "
        f"{result['changes']} modified + {result['changes']} added + "
        f"{result['changes']} deleted; warm cache, sync before each step; "
        f"status/checkout/diff best of {result['repeat']}, init/commit once",
        "",
        f"| {'operation':<28} | {'snapws s':>9} | {'git s':>9} | {'git/snapws':>10} "
        f"| {'snapws s minus start-up':>23} |",
        f"|{'-' * 30}|{'-' * 11}|{'-' * 11}|{'-' * 12}|{'-' * 25}|",
    ]
    for t in result["timings"]:
        lines.append(
            f"| {t['operation']:<28} | {t['snapws']:9.3f} | {t['git']:9.3f} | "
            f"{t['ratio']:9.1f}x | {t['snapws_minus_startup']:23.3f} |"
        )
    cb = result["change_bytes"]
    lines += [
        "",
        f"changes: {fmt_bytes(cb['bytes_written_by_modifications'])} rewritten in "
        f"{result['changes']} files of {fmt_bytes(cb['bytes_of_modified_files'])}, "
        f"{fmt_bytes(cb['bytes_added'])} added, {fmt_bytes(cb['bytes_deleted'])} deleted "
        f"(changed-file bytes {fmt_bytes(cb['changed_file_bytes'])})",
    ]
    nl = result.get("store_new_layer")
    if nl:
        c = result["new_layer_contents"]
        lines.append(
            f"snapws new layer: {fmt_bytes(nl['apparent'])} apparent, "
            f"{fmt_bytes(nl['disk'])} on disk: {c['files']} files of "
            f"{fmt_bytes(c['file_bytes'])}, {c['whiteouts']} whiteouts, {c['dirs']} directories, "
            f"manifest {fmt_bytes(c['manifest_bytes'])}"
        )
    for label, key in (("after init", "after_init"), ("after commit", "after_commit")):
        s, g = result[f"store_{key}"], result[f"git_{key}"]
        lines.append(
            f"{label}: snapws layers/ {fmt_bytes(s['disk'])} on disk "
            f"({fmt_bytes(s['apparent'])} apparent); "
            f"git .git {fmt_bytes(g['disk'])} ({fmt_bytes(g['apparent'])} apparent)"
        )
    sw_growth = result["store_after_commit"]["disk"] - result["store_after_init"]["disk"]
    git_growth = result["git_after_commit"]["disk"] - result["git_after_init"]["disk"]
    lines.append(
        f"commit growth (on disk): snapws {fmt_bytes(sw_growth)}, git {fmt_bytes(git_growth)}"
    )
    lines.append(
        f"snapws start-up (`snapws --version`, best of 9): {result['snapws_startup_seconds']:.3f}s"
        f" (bytecode cache: {'yes' if result['bytecode_cache'] else 'as the environment says'}); "
        f"load average at start {result['loadavg_start'][0]:.2f}"
    )
    lines.append(
        f"applying the changes: {result['apply_changes_seconds_snapws']:.3f}s through the "
        f"overlay, {result['apply_changes_seconds_git']:.3f}s on plain ext4; "
        f"diff HEAD~1 HEAD lists {result['check_snapws_changes']} (snapws) / "
        f"{result['check_git_changes']} (git) paths"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000, help="number of files (100000)")
    ap.add_argument("--size-mb", type=int, default=1000, help="total size in MB (1000)")
    ap.add_argument(
        "--changes", type=int, default=100, help="modifications = additions = deletions (100)"
    )
    ap.add_argument(
        "--workdir",
        help="fresh directory to work in (default /var/tmp/snapws-bench-<pid>); deleted at the end",
    )
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (unmounted)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="samples of the steps that can be repeated (status, checkout there and back, "
        "diff); the table shows the best (3). init and commit run once",
    )
    ap.add_argument(
        "--no-pycache",
        action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE as it is (default: cache snapws's bytecode in "
        "the work dir, as an installed snapws has it)",
    )
    ap.add_argument("--snapws", help="snapws command line (default: the `snapws` script)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command's time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: snapws mounts overlayfs: run as root")
    if args.changes * 2 > args.files:
        raise SystemExit("bench: --changes must be at most half of --files")
    result = bench(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
