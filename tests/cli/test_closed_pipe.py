"""A reader that goes away (``snapws log | head -1``) is no error: snapws
ends as git does, killed by SIGPIPE (the shell's exit 141) or, when all its
output fitted in the pipe before the reader left, with 0; never exit 70 and
never a word on stderr. Real processes: the pipe is the point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _clean_env, run_cli

QUIET_ENDS = (0, -signal.SIGPIPE)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain-backend workspace with a few snapshots and, uncommitted,
    3,000 new files with long names: ~250 KB of status, more than a pipe holds."""
    root = tmp_path_factory.mktemp("pipe")
    ws = root / "ws"
    ws.mkdir()
    (ws / "a").write_text("0")
    run_cli("init", "-q", "--backend", "plain", ws, cwd=root)
    for i in range(1, 4):
        (ws / "a").write_text(str(i))
        run_cli("-C", ws, "commit", "-q", "-m", f"change {i}", cwd=root)
    for i in range(3000):
        (ws / f"{i:04d}-{'x' * 72}").write_text("")
    return ws


def start(ws: Path, *args: str, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapws", "-C", str(ws), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=_clean_env(None),
        cwd=ws.parent,
    )


@pytest.mark.parametrize(
    "args", [["status", "--porcelain"], ["status"], ["log"], ["diff", "--name-only"]], ids=" ".join
)
def test_reader_leaves_after_one_line(ws: Path, args: list[str]) -> None:
    proc = start(ws, *args, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert first
    assert (code, err) in [(c, b"") for c in QUIET_ENDS], (code, err)
    if args[-1] in ("--porcelain", "--name-only"):  # ~250 KB: cannot all fit in the pipe
        assert code == -signal.SIGPIPE


@pytest.mark.parametrize("args", [["status", "--porcelain"], ["log"]], ids=" ".join)
def test_reader_gone_before_the_first_line(ws: Path, args: list[str]) -> None:
    """The reader exits before snapws writes anything: the first write fails."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = start(ws, *args, stdout=w)
    finally:
        os.close(w)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (-signal.SIGPIPE, b"")


@pytest.mark.parametrize(
    ("args", "code"),
    [(["log", "nosuchrev"], 4), (["diff", "--exit-code", "nosuchrev", "--", "x"], 4)],
    ids=["log", "diff"],
)
def test_a_failing_command_keeps_its_code_when_stderr_is_a_closed_pipe(
    ws: Path, args: list[str], code: int
) -> None:
    """docs/exit-codes.md: when standard error is what fails, the message
    is lost and a command that had already failed keeps its own code (not
    click's 1 for EPIPE). ``snapws log nosuchrev 2>&1 | true``."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snapws", "-C", str(ws), *args],
            stdout=w,
            stderr=w,
            stdin=subprocess.DEVNULL,
            env=_clean_env(None),
            cwd=ws.parent,
        )
    finally:
        os.close(w)
    assert proc.wait(timeout=120) == code
