"""``snapws shell`` and ``snapws run``: a shell or a command in the mounted
workspace, for every backend.

The workspace is opened as any command opens it (recovering an interrupted
operation, mounting it if needed), then the store lock is released and the
program runs with its current directory in the workspace. For a rootless
workspace this process first moves into the workspace's user + mount
namespace (:mod:`snapws.backends.userns`) and stays there until the program
exits: the mount it sees lives in that namespace, and other snapws commands
(from inside or outside) find and enter it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from snapws.config import Config
from snapws.ops.session import open_session

#: Set in the program's environment: the workspace root (for prompts).
ENV_WORKSPACE = "SNAPWS_WORKSPACE"

#: Signals passed on to the program. SIGINT and SIGQUIT are ignored here
#: instead (as system(3) does): the terminal sends them to the program too.
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a program runs: the workspace root, the directory to start in
    (``start`` if it is inside the workspace, else the root), the
    environment, and the workspace's backend."""

    workspace: Path
    cwd: Path
    env: dict[str, str]
    backend: str


def prepare(start: Path, config: Config, store_path: Path | None = None) -> Place:
    """Open the workspace containing ``start`` for a program to run in it.

    Effects: for a rootless workspace, this process moves into its namespace
    (it must be single-threaded: call this first); an interrupted operation
    is finished; the workspace is mounted if it was not. The store lock is
    released on return. Raises NotAWorkspaceError, StoreLockedError,
    MountError, UnsupportedError."""
    from snapws.backends.userns import enter_for_workspace

    enter_for_workspace(start, config, store_path)
    with open_session(start, config, store_path, exclusive=True, mount=True) as session:
        root = session.path
        backend = session.state.backend
    real_root = os.path.realpath(root)
    real = os.path.realpath(start)
    cwd = start if real == real_root or real.startswith(real_root + os.sep) else root
    env = dict(os.environ)
    env[ENV_WORKSPACE] = str(root)
    return Place(root, cwd, env, backend)


def run_program(argv: Sequence[str], place: Place) -> int:
    """Run ``argv`` in ``place`` and wait for it. Returns its exit status,
    or 128 + N when signal N killed it (as shells report it).

    While it runs, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to this process
    are passed on to it; SIGINT and SIGQUIT are ignored here (the terminal
    delivers them to the program). Raises FileNotFoundError or
    PermissionError when ``argv[0]`` cannot be run."""
    proc = subprocess.Popen(list(argv), cwd=place.cwd, env=place.env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.returncode is None:
            proc.send_signal(signum)

    saved = {}
    for signum in (signal.SIGINT, signal.SIGQUIT):
        saved[signum] = signal.signal(signum, signal.SIG_IGN)
    for signum in FORWARDED:
        saved[signum] = signal.signal(signum, forward)
    try:
        code = proc.wait()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


def default_shell() -> str:
    """``$SHELL`` if set, else /bin/sh."""
    return os.environ.get("SHELL") or "/bin/sh"
