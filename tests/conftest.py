"""Shared fixtures: real workspaces driven through the real CLI.

Every workspace lives under the test's ``tmp_path`` with its store beside it
(same filesystem). Teardown unmounts every overlay (kernel or fuse-overlayfs)
mounted under ``tmp_path`` (detaching as a last resort), whether or not the
test passed. Tests that need mounts fail, never skip, when mounts do not
work: ``snapws init`` fails then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import Spec, gen, mounts_under


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a script (``cmd &``, ``nohup``)
    inherits SIGINT ignored, as would every process it starts: the tests of
    Ctrl-C need Python's own handler, as in a terminal or a CI runner."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


MNT_DETACH = 2

#: The default store of this test run ($XDG_DATA_HOME/snapws): never the
#: user's ~/.local/share or root's /var/lib/snapws, for every snapws the
#: tests start (the environment is inherited); removed when the run ends.
TEST_DATA_HOME = tempfile.mkdtemp(prefix="snapws-tests-data-")
os.environ["XDG_DATA_HOME"] = TEST_DATA_HOME
#: No command server (snapws.cli.launch) for the snapws the tests start: none
#: would outlive the run; tests/cli/test_server.py starts its own.
os.environ["SNAPWS_SERVER"] = "0"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", TEST_DATA_HOME], check=False)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def unmount_all_under(root: Path) -> list[str]:
    """Detach every overlay mount below ``root``, and every FUSE mount
    (fuse-overlayfs: its server exits then), newest first, stacked mounts
    too. Returns the mount points it had to detach."""
    done: list[str] = []
    for _ in range(100):
        overlays = [p for p, t in mounts_under(root) if t == "overlay" or t.startswith("fuse.")]
        if not overlays:
            return done
        point = overlays[-1]
        if _libc.umount2(os.fsencode(point), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            lazy = subprocess.run(["umount", "-l", point], check=False, capture_output=True)
            if lazy.returncode != 0:
                raise OSError(err, f"cannot detach {point}: {os.strerror(err)}")
        done.append(point)
    raise RuntimeError(f"overlay mounts remain under {root} after 100 detaches")


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    env["SNAPWS_AUTHOR"] = "Test Author <test@example.org>"
    env["SNAPWS_SERVER"] = "0"
    env["XDG_CONFIG_HOME"] = "/nonexistent-snapws-test-config"
    # cache bytecode outside the repository: each CLI run then starts ~30% faster
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "snapws-tests-pycache")
    if extra:
        env.update(extra)
    return env


#: Commands that always run in a real process: they exec or fork programs
#: (shell, run) or enter namespaces.
_REAL_PROCESS_COMMANDS = {"shell", "run"}


def needs_real_process(argv: list[str], env: Mapping[str, str] | None) -> bool:
    """A real ``python -m snapws`` where it matters: a crash injection (the
    process kills itself), PYTHON* variables (read at start-up), a
    namespace-entering command, a non-root user, or
    SNAPWS_TESTS_REAL_PROCESS=1 (run the whole suite that way)."""
    if os.environ.get("SNAPWS_TESTS_REAL_PROCESS") == "1" or os.geteuid() != 0:
        return True
    if env and any("CRASH" in key or key.startswith("PYTHON") for key in env):
        return True  # a crash kills the process; PYTHON* settings act at start-up
    return bool(_REAL_PROCESS_COMMANDS & set(argv))


def run_in_process(
    argv: list[str], cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (click's test runner): the same code as
    ``python -m snapws`` without the interpreter's start-up. ``env`` replaces
    the environment for the call; the cwd is changed for the call."""
    from click.testing import CliRunner

    from snapws.cli.main import cli

    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, argv, env=overrides, prog_name="snapws")
    finally:
        os.chdir(old)
    stdout = result.stdout_bytes.decode("utf-8", "surrogateescape")
    stderr = (result.stderr_bytes or b"").decode("utf-8", "surrogateescape")
    code = result.exit_code
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        stderr += "".join(traceback.format_exception(exc))
        code = 70
    return subprocess.CompletedProcess(["snapws", *argv], code, stdout, stderr)


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``snapws ARGS`` in ``cwd``; ``check`` asserts exit code 0. In this
    process unless :func:`needs_real_process` says otherwise."""
    argv = [os.fspath(a) for a in args]
    if needs_real_process(argv, env):
        proc = subprocess.run(
            [sys.executable, "-m", "snapws", *argv],
            cwd=cwd,
            env=_clean_env(env),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
    else:
        proc = run_in_process(argv, cwd, _clean_env(env))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snapws {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
        )
    return proc


class Workspace:
    """A mounted workspace: ``path`` (the mount), ``store``, and ``run``."""

    def __init__(self, path: Path, store: Path, outside: Path) -> None:
        self.path = path
        self.store = store
        self.outside = outside  # a directory outside every mount (the cwd)

    def run(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``snapws -C <workspace> ARGS``, run from outside the mount."""
        return run_cli("-C", self.path, *args, cwd=self.outside, check=check, env=env)

    # -- conveniences built on the CLI ----------------------------------
    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def log_ids(self, *revs: str) -> list[str]:
        """Snapshot ids reachable from REVS (default HEAD), newest first."""
        return [e["id"] for e in self.json("log", *revs)["snapshots"]]

    def head(self) -> str:
        return str(self.json("status")["id"])

    def commit(self, message: str, *extra: str) -> str:
        """Commit and return the new snapshot's id."""
        out = self.json("commit", "-m", message, *extra)
        assert out["id"], f"nothing was committed: {out}"
        return str(out["id"])

    def porcelain(self) -> list[str]:
        return self.run("status", "--porcelain").stdout.splitlines()

    def gen(self, spec: Spec) -> None:
        gen(self.path, spec)


WorkspaceFactory = Callable[..., Workspace]


@pytest.fixture
def mount_guard(tmp_path: Path) -> Iterator[Path]:
    """Yields ``tmp_path``; teardown detaches every overlay mounted below it,
    even when the test failed."""
    try:
        yield tmp_path
    finally:
        unmount_all_under(tmp_path)


def workspace_factory(root: Path) -> WorkspaceFactory:
    """``make(name="ws", spec=None, branch=None, store=None)``: build ``spec``
    in ``root/name``, ``snapws init`` it with a store beside it (``root/store``
    unless given), and return the mounted :class:`Workspace`."""
    outside = root / "outside"
    outside.mkdir(exist_ok=True)

    def make(
        name: str = "ws",
        spec: Spec | None = None,
        branch: str | None = None,
        store: Path | None = None,
    ) -> Workspace:
        path = root / name
        store_path = store or root / "store"
        if spec is not None:
            gen(path, spec)
        args: list[str | Path] = ["--store", store_path, "init", path]
        if branch:
            args += ["--branch", branch]
        run_cli(*args, cwd=outside)
        assert [t for p, t in mounts_under(path) if p == str(path)] == ["overlay"], (
            f"{path} is not an overlay mount after init"
        )
        return Workspace(path, store_path, outside)

    return make


@pytest.fixture
def make_workspace(mount_guard: Path) -> WorkspaceFactory:
    """A factory of workspaces below this test's ``tmp_path`` (see
    :func:`workspace_factory`); all are unmounted after the test."""
    return workspace_factory(mount_guard)


@pytest.fixture(scope="module")
def make_module_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceFactory]:
    """As ``make_workspace``, for a module's read-only tests to share one
    workspace (saves building the same history again). Tests using it must
    leave its working tree, HEAD and refs as they found them."""
    root = tmp_path_factory.mktemp("shared")
    try:
        yield workspace_factory(root)
    finally:
        unmount_all_under(root)


@pytest.fixture
def workspace(make_workspace: WorkspaceFactory) -> Workspace:
    """An empty, freshly initialised workspace."""
    return make_workspace()
