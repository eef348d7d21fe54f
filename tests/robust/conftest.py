"""Fixtures for the robustness tests: real workspaces driven through the CLI
(``python -m snapws`` in subprocesses), built declaratively, and torn down
without leaving a mount behind even when a test fails.

Layout of one test's ``tmp_path``::

    ws/          the workspace (the overlay mount)
    .snapws/     its store (named in snapws.toml)
    snapws.toml  the config every command reads (SNAPWS_CONFIG)
    xdg/         an empty XDG_CONFIG_HOME, so no user config leaks in
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from snapws.model import WorkspaceState
from snapws.store.store import Store

pytestmark = pytest.mark.root

AUTHOR = "robust <robust@example.test>"
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)

#: A tree description: name -> text (a file), bytes (a file), or a dict (a directory).
TreeSpec = Mapping[str, Any]


# --------------------------------------------------------------------------- trees


def gen(base: Path, spec: TreeSpec) -> None:
    """Create the files and directories of ``spec`` under ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        p = base / name
        if isinstance(value, Mapping):
            gen(p, value)
        elif isinstance(value, bytes):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(value)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(value)


def tree_of(root: Path) -> dict[str, tuple[str, int, bytes | None]]:
    """Every path below ``root`` (``"."`` is the root itself) mapped to
    (kind, permission bits, content): file bytes, symlink target, or None
    for directories and other kinds. Content and mode, nothing else."""
    out: dict[str, tuple[str, int, bytes | None]] = {}

    def visit(rel: str, abspath: str) -> None:
        st = os.lstat(abspath)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", mode, None)
            for name in sorted(os.listdir(abspath)):
                visit(name if rel == "." else f"{rel}/{name}", os.path.join(abspath, name))
        elif stat.S_ISREG(st.st_mode):
            with open(abspath, "rb") as f:
                out[rel] = ("file", mode, f.read())
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = ("symlink", mode, os.fsencode(os.readlink(abspath)))
        else:
            out[rel] = (f"other:{stat.S_IFMT(st.st_mode):o}:{st.st_rdev}", mode, None)

    visit(".", os.fspath(root))
    return out


# --------------------------------------------------------------------------- mounts


def mounts_under(root: Path) -> list[tuple[int, str, str]]:
    """(mount id, mountpoint, fstype) of every mount at or below ``root``,
    read from /proc/self/mountinfo, deepest (latest) first."""
    real = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().splitlines():
            fields = line.split(b" ")
            sep = fields.index(b"-", 6)
            point = os.fsdecode(
                fields[4]
                .replace(b"\\040", b" ")
                .replace(b"\\011", b"\t")
                .replace(b"\\012", b"\n")
                .replace(b"\\134", b"\\")
            )
            if point == real or point.startswith(real + "/"):
                found.append((int(fields[0]), point, os.fsdecode(fields[sep + 1])))
    return list(reversed(found))


def detach_all_under(root: Path) -> None:
    """umount2(MNT_DETACH) every mount at or below ``root`` until none is left."""
    for _ in range(1000):
        left = mounts_under(root)
        if not left:
            return
        for _mid, point, _fstype in left:
            _libc.umount2(os.fsencode(point), _MNT_DETACH)
    raise AssertionError(f"mounts left under {root}: {mounts_under(root)}")


def mount_line(path: Path) -> bytes | None:
    """The raw /proc/self/mountinfo line of the topmost mount on ``path``."""
    real = os.fsencode(os.path.realpath(path))
    found = None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().splitlines():
            if line.split(b" ")[4] == real:
                found = line
    return found


def mount_flags(path: Path) -> tuple[str, ...] | None:
    """Per-mount and superblock options of the mount on ``path`` (None: not mounted)."""
    line = mount_line(path)
    if line is None:
        return None
    fields = line.split(b" ")
    sep = fields.index(b"-", 6)
    opts = fields[5].split(b",") + fields[sep + 3].split(b",")
    return tuple(o.decode(errors="replace") for o in opts)


def is_mounted_rw(path: Path) -> bool:
    flags = mount_flags(path)
    return flags is not None and "ro" not in flags


# --------------------------------------------------------------------------- the workspace


class Workspace:
    """One test's workspace, store and config, driven through the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "ws"
        self.store_path = root / ".snapws"
        self.config = root / "snapws.toml"
        self.children: list[subprocess.Popen[str]] = []  # helpers (spawn)
        self.commands: list[subprocess.Popen[str]] = []  # snapws (popen)
        (root / "xdg").mkdir()
        self.set_config(lock_timeout=30)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
        self.env.update(
            SNAPWS_CONFIG=str(self.config),
            XDG_CONFIG_HOME=str(root / "xdg"),
            PYTHONDONTWRITEBYTECODE="1",
        )

    # ---- setup ---------------------------------------------------------------
    def set_config(self, **settings: Any) -> None:
        lines = [f'author = "{AUTHOR}"', f"store = {json.dumps(str(self.store_path))}"]
        for key, value in settings.items():
            lines.append(f"{key} = {json.dumps(value)}")
        self.config.write_text("\n".join(lines) + "\n")

    def gen(self, spec: TreeSpec) -> None:
        gen(self.path, spec)

    def init(self, spec: TreeSpec) -> None:
        """Create the directory with ``spec`` and make it a workspace."""
        gen(self.path, spec)
        self.run("init")
        assert is_mounted_rw(self.path), "init did not mount the workspace"

    # ---- running snapws ------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "snapws", "-C", str(self.path), *args]

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``snapws -C WS ARGS`` (in this process unless a real one
        matters: see tests/conftest.py); with ``check``, fail unless it exits 0."""
        from conftest import needs_real_process, run_in_process

        argv = ["-C", str(self.path), *args]
        if needs_real_process(argv, env):
            proc = subprocess.run(
                self.argv(*args),
                env={**self.env, **(env or {})},
                capture_output=True,
                text=True,
                timeout=300,
                cwd=self.root,
            )
        else:
            proc = run_in_process(argv, self.root, {**self.env, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(
                f"snapws {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv(*args),
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.root,
        )
        self.commands.append(proc)
        return proc

    def commit(self, message: str) -> str:
        """Commit (must succeed and record something); returns the new HEAD id."""
        out = json.loads(self.run("commit", "-m", message, "--json").stdout)
        assert out["id"] is not None, "nothing was committed"
        return str(out["id"])

    def status(self) -> list[str]:
        """``snapws status --porcelain`` lines."""
        return self.run("status", "--porcelain").stdout.splitlines()

    def log_ids(self, *args: str) -> list[str]:
        return [e["id"] for e in json.loads(self.run("log", "--json", *args).stdout)["snapshots"]]

    # ---- reading the store directly -----------------------------------------
    def store(self) -> Store:
        return Store.open(self.store_path)

    def state(self) -> WorkspaceState:
        states = self.store().workspaces()
        assert len(states) == 1, states
        return states[0]

    def tree(self) -> dict[str, tuple[str, int, bytes | None]]:
        return tree_of(self.path)

    # ---- helper processes ----------------------------------------------------
    def spawn(self, code: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        """Start ``python -c code args``; waits until it prints ``ready``."""
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=self.env,
        )
        self.children.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", f"helper did not start: {line!r}"
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            if proc.stdin is not None:
                with suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def teardown(self) -> None:
        try:
            for proc in self.commands:  # let snapws finish (killing it is a crash)
                try:
                    proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
            for proc in self.children:
                self.stop(proc)
        finally:
            detach_all_under(self.root)


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """An empty workspace description (call ``ws.init(spec)``); every mount
    under ``tmp_path`` is detached at teardown, whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("the robustness tests need root and real overlay mounts")
    it = Workspace(tmp_path)
    try:
        yield it
    finally:
        it.teardown()


def crash(ws: Workspace, *args: str, step: str) -> None:
    """Run ``snapws ARGS`` with a crash injected at ``step``: it must die by SIGKILL."""
    proc = ws.run(*args, env={"SNAPWS_CRASH_AT": step}, check=False)
    assert proc.returncode == -signal.SIGKILL, (
        f"snapws {' '.join(args)} with SNAPWS_CRASH_AT={step} exited {proc.returncode}, "
        f"not by SIGKILL\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


def recover(ws: Workspace) -> list[str]:
    """The next command after a crash: ``snapws status``, which must recover;
    the store must then verify and the workspace be mounted read-write.
    Returns the status lines."""
    from .verify import assert_store_ok

    lines = ws.status()
    assert_store_ok(ws.store_path)
    assert is_mounted_rw(ws.path), f"not mounted read-write after recovery: {mount_flags(ws.path)}"
    return lines
