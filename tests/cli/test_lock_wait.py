"""A command waiting for the store lock says so once on stderr after about
a second, naming the holder (its pid and command), unless -q; the error at
the timeout names it too (exit 7)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from snapws.store.store import Store
    sys.argv = ["snapws", "checkout", "--discard", "HEAD~2"]  # as that command would
    with Store.open(Path(STORE)).lock(True, 10):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a").write_text("a")
    run_cli("--store", tmp_path / "st", "init", "-q", "--backend", "plain", ws, cwd=tmp_path)
    (tmp_path / "snapws.toml").write_text("lock_timeout = 1.5\n")
    return ws


@pytest.fixture
def holder(ws: Path) -> Iterator[subprocess.Popen[str]]:
    code = HOLD.replace("STORE", repr(str(ws.parent / "st")))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("quiet", [False, True])
def test_a_command_waiting_for_the_lock_says_who_holds_it(
    ws: Path, holder: subprocess.Popen[str], quiet: bool
) -> None:
    env = {"SNAPWS_CONFIG": str(ws.parent / "snapws.toml"), "SNAPWS_STORE": str(ws.parent / "st")}
    r = run_cli(*(["-q"] if quiet else []), "-C", ws, "status", cwd=ws.parent, check=False, env=env)
    who = f"pid {holder.pid}: snapws checkout --discard 'HEAD~2'"
    lines = r.stderr.splitlines()
    assert r.returncode == 7, r.stderr
    waiting = [f"snapws: waiting for the store lock (held by {who})"]
    assert lines[:-2] == ([] if quiet else waiting), r.stderr
    assert lines[-2].startswith(f"snapws: error: the store is locked by {who} ("), r.stderr
    assert lines[-1].startswith("hint: "), r.stderr
