"""A failed write to standard output or error (``snapws log >/dev/full``)
is reported as that, exit 74 (OUTPUT_FAILED), never as a full or failing
store (17, 18) nor as an internal error (70); a closed pipe stays quiet
(SIGPIPE, tests/cli/test_closed_pipe.py)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import Workspace, _clean_env

from snapws.cli.main import CLOSED_PIPE, cli
from snapws.errors import ExitCode

Run = Callable[..., tuple[int, str]]


class _FailingRaw(io.RawIOBase):
    """A device whose every write fails with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(self.code, os.strerror(self.code))


def failing(code: int) -> IO[str]:
    return io.TextIOWrapper(io.BufferedWriter(_FailingRaw(code)), encoding="utf-8")


@pytest.fixture
def run_with(monkeypatch: pytest.MonkeyPatch, workspace: Workspace) -> Iterator[Run]:
    """``run(*args, stdout=S, stderr=E)``: ``snapws -C WS ARGS`` in this
    process with those streams (default: a buffer for stderr, whose text is
    returned with the exit code)."""
    for key in os.environ:
        if key.startswith("SNAPWS_"):
            monkeypatch.delenv(key)
    for key, value in _clean_env(None).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(workspace.outside)
    opened: list[IO[str]] = []

    def run(*args: str, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> Any:
        captured = io.BytesIO()
        err = stderr or io.TextIOWrapper(captured, encoding="utf-8", line_buffering=True)
        out = stdout or io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        opened.extend((out, err))
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        try:
            cli.main(args=["-C", str(workspace.path), *args], prog_name="snapws")
            code: Any = 0
        except SystemExit as e:
            code = e.code
        err.flush()
        return code, captured.getvalue().decode()

    yield run
    monkeypatch.undo()
    for stream in opened:
        with contextlib.suppress(OSError):
            stream.close()


def full() -> IO[str]:
    return open("/dev/full", "w", encoding="utf-8")  # closed by run_with


def test_log_to_a_full_device_says_so(run_with: Run) -> None:
    code, err = run_with("log", stdout=full())
    assert code == 74 == ExitCode.OUTPUT_FAILED
    assert err.splitlines() == [
        "snapws: error: cannot write to standard output: No space left on device",
        "hint: standard output is /dev/full: free space there, or send the output "
        "elsewhere, then run the command again; this is no error of the store",
    ]


@pytest.mark.parametrize("args", [["status"], ["log", "--json"], ["--version"], ["log", "-h"]])
def test_every_output_to_a_full_device_is_exit_74(run_with: Run, args: list[str]) -> None:
    """Inside a command and outside one (--version is printed before any
    command runs)."""
    code, err = run_with(*args, stdout=full())
    assert code == 74, err
    assert err.startswith("snapws: error: cannot write to standard output: ")
    assert "store's filesystem" not in err


def test_an_io_error_on_stdout_is_no_error_of_the_store(run_with: Run) -> None:
    code, err = run_with("log", stdout=failing(errno.EIO))
    assert code == 74, err
    first = err.splitlines()[0]
    assert first == "snapws: error: cannot write to standard output: Input/output error"
    assert "goes to a full or failing file" in err  # no descriptor to name


def test_a_closed_pipe_stays_quiet(run_with: Run) -> None:
    code, err = run_with("log", stdout=failing(errno.EPIPE))
    assert (code, err) == (CLOSED_PIPE, "")


def test_an_error_that_cannot_be_shown_keeps_its_exit_code(run_with: Run) -> None:
    """stderr on /dev/full: the message is lost, the exit code still says
    which error it was (4: a bad revision)."""
    code, _ = run_with("log", "no-such-rev", stderr=full())
    assert code == ExitCode.BAD_REVISION


def test_a_real_process_ends_with_the_message_alone(workspace: Workspace, tmp_path: Path) -> None:
    """The interpreter's last flush at exit finds nothing to fail on (no
    "Exception ignored" and exit 120), with Python's own buffering."""
    env = _clean_env(None)
    env.pop("PYTHONUNBUFFERED", None)
    with open("/dev/full", "wb") as dev_full:
        proc = subprocess.run(
            [sys.executable, "-m", "snapws", "-C", str(workspace.path), "log"],
            stdout=dev_full,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workspace.outside,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "snapws: error: cannot write to standard output: No space left on device"
    assert len(lines) == 2 and lines[1].startswith("hint: standard output is /dev/full")
