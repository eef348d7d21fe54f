"""Crash safety of plain workspaces: SIGKILL at every named step of init,
commit and checkout/reset/restore (``SNAPWS_CRASH_AT``), then the next
command recovers. The store verifies, the workspace is in the state before
or after the command, and no uncommitted change is lost (commit never
touches the directory; an interrupted rewrite is finished)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from conftest import Workspace, run_cli
from helpers import gen, state_diff, tree_state
from robust.verify import store_problems

from snapws.crash import steps_of

from .conftest import PlainFactory

BASE = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "docs": {"readme": "readme\n", "guide": "guide\n"},
    "old": {"x": "x\n", "sub": {"y": "y\n", "z": bytes(range(256))}},
    "keep": {"k": "k\n"},
}


def steps(op: str) -> list[str]:
    """The steps of ``op`` a plain workspace reaches: the one flow's, and
    the plain backend's own (rewriting in place)."""
    found = list(steps_of(op, "plain"))
    assert found, op
    return found


def assert_plain_store_ok(store: Path) -> None:
    """The store verifies (a plain workspace keeps an index and has no
    upper or work directory; an index write cut short leaves a temp file)."""
    allowed = (r"workspace \w+: plain is missing", r"workspace \w+ has leftovers: \[.*\]")
    problems = []
    for p in store_problems(store):
        m = re.fullmatch(r"workspace \w+ has leftovers: \[(.*)\]", p)
        if m and all(
            n.strip("' ") == "index" or n.strip("' ").startswith(".index.tmp-")
            for n in m.group(1).split(",")
        ):
            continue
        if re.fullmatch(allowed[0], p):
            continue
        problems.append(p)
    assert not problems, "the store does not verify:\n  " + "\n  ".join(problems)


def crash(ws: Workspace, *args: str, step: str) -> None:
    proc = ws.run(*args, env={"SNAPWS_CRASH_AT": step}, check=False)
    assert proc.returncode == -signal.SIGKILL, (
        f"snapws {' '.join(args)} with SNAPWS_CRASH_AT={step} exited {proc.returncode}\n"
        f"{proc.stdout}{proc.stderr}"
    )


def recover(ws: Workspace) -> list[str]:
    lines = ws.porcelain()
    assert_plain_store_ok(ws.store)
    ws.run("verify")
    return lines


def uncommitted(ws: Workspace) -> None:
    p = ws.path
    (p / "new.txt").write_text("new\n")
    (p / "b.txt").write_text("bravo, changed\n")
    (p / "docs" / "guide").unlink()
    for sub in ("old/sub/y", "old/sub/z", "old/x"):
        (p / sub).unlink()
    (p / "old" / "sub").rmdir()
    (p / "old").rmdir()
    (p / "keep" / "k").chmod(0o600)


EXPECTED = [
    "M\tb.txt",
    "D\tdocs/guide",
    "M\tkeep/k",
    "A\tnew.txt",
    "D\told/",
    "D\told/sub/",
    "D\told/sub/y",
    "D\told/sub/z",
    "D\told/x",
]
#: the same changes as ``status --porcelain`` lines (new paths last)
EXPECTED_STATUS = [
    " M b.txt",
    " D docs/guide",
    " M keep/k",
    " D old/",
    " D old/sub/",
    " D old/sub/y",
    " D old/sub/z",
    " D old/x",
    "?? new.txt",
]


@pytest.mark.parametrize("step", steps("commit"))
def test_crash_during_commit(make_plain: PlainFactory, step: str) -> None:
    ws = make_plain(spec=BASE)
    head = ws.head()
    uncommitted(ws)
    before = tree_state(ws.path)
    crash(ws, "commit", "-m", "crashed", step=step)
    assert state_diff(tree_state(ws.path), before) == []  # commit only reads the directory
    lines = recover(ws)
    assert state_diff(tree_state(ws.path), before) == []
    if step in ("commit:frozen", "commit:staged"):  # before the journal: nothing happened
        assert ws.head() == head and lines == EXPECTED_STATUS
    else:  # journaled: rolled forward
        assert ws.head() != head and lines == []
        assert ws.log_ids()[1] == head
        assert ws.run("diff", "--name-status", "HEAD~1", "HEAD").stdout.splitlines() == EXPECTED
    if lines:
        ws.commit("after the crash")
    assert ws.porcelain() == []


@pytest.mark.parametrize("step", steps("checkout"))
def test_crash_during_checkout_discard(make_plain: PlainFactory, step: str) -> None:
    ws = make_plain(spec=BASE)
    s0 = ws.head()
    t0 = tree_state(ws.path)
    uncommitted(ws)
    ws.commit("second")
    (ws.path / "a.txt").write_text("uncommitted, to be discarded\n")
    crash(ws, "checkout", "--discard", s0, step=step)
    assert recover(ws) == []
    assert ws.head() == s0
    assert state_diff(tree_state(ws.path), t0) == []
    assert ws.json("reflog")["entries"][0]["message"].startswith("checkout: moving from main to ")


@pytest.mark.parametrize("step", ["checkout:journaled", "checkout:rewriting"])
def test_crash_during_reset_then_restore(make_plain: PlainFactory, step: str) -> None:
    ws = make_plain(spec=BASE)
    s0 = ws.head()
    t0 = tree_state(ws.path)
    uncommitted(ws)
    s1 = ws.commit("second")
    t1 = tree_state(ws.path)
    crash(ws, "reset", "--hard", s0, step=step)
    assert recover(ws) == []
    assert ws.head() == s0 and state_diff(tree_state(ws.path), t0) == []
    assert ws.run("branch").stdout.count(s0[:12]) == 1
    (ws.path / "keep" / "mine").write_text("mine\n")  # must survive the restore
    # restore writes through the directory as any edit does (no journal)
    ws.run("restore", "--source", s1, "new.txt", "b.txt", "docs")
    assert recover(ws) == [" M b.txt", " D docs/guide", "?? keep/mine", "?? new.txt"]
    assert ws.head() == s0
    assert (ws.path / "keep" / "mine").read_text() == "mine\n"
    for path in (b"b.txt", b"new.txt", b"docs", b"docs/readme"):
        assert tree_state(ws.path)[path] == t1[path]


@pytest.mark.parametrize("step", steps("init"))
def test_crash_during_init(tmp_path: Path, step: str) -> None:
    ws_dir = tmp_path / "ws"
    gen(ws_dir, BASE)
    before = tree_state(ws_dir)
    store = tmp_path / ".snapws"
    proc = run_cli(
        "--store",
        store,
        "init",
        "--backend",
        "plain",
        ws_dir,
        cwd=tmp_path,
        check=False,
        env={"SNAPWS_CRASH_AT": step},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ws = Workspace(ws_dir, store, tmp_path)
    assert state_diff(tree_state(ws_dir), before) == []  # init only reads the directory
    if step in ("init:journaled", "init:moved"):  # before the layer was hashed: rolled back
        proc = ws.run("status", "--porcelain", check=False)
        assert proc.returncode == 3 and "not inside a snapws workspace" in proc.stderr
        assert_plain_store_ok(store)
        assert not (store / "journal.json").exists()
        assert state_diff(tree_state(ws_dir), before) == []
        run_cli("--store", store, "init", "--backend", "plain", ws_dir, cwd=tmp_path)  # again
    else:
        assert recover(ws) == []  # found by its path: the journal names it
    assert state_diff(tree_state(ws_dir), before) == []
    assert len(ws.log_ids()) == 1
    (ws_dir / "a.txt").write_text("after\n")
    assert ws.porcelain() == [" M a.txt"]
