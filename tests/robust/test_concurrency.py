"""Concurrent snapws commands on one workspace: the store lock serialises
them; each either succeeds or fails cleanly (exit 7, locked), the store
verifies afterwards and no change is lost."""

from __future__ import annotations

import json
import subprocess

import pytest

from snapws.errors import ExitCode
from snapws.store.lock import StoreLock

from .conftest import Workspace, is_mounted_rw
from .verify import assert_store_ok

pytestmark = pytest.mark.root

BASE = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "dir": {"x.txt": "x\n", "y.txt": "y\n"},
    "gone": {"g.txt": "g\n"},
}
LOCKED = int(ExitCode.LOCKED)


def change_something(ws: Workspace, n: int) -> None:
    p = ws.path
    (p / f"new-{n}.txt").write_text(f"new {n}\n")
    (p / "a.txt").write_text(f"alpha {n}\n")
    (p / "dir" / f"y-{n}.txt").write_text("y\n")
    if (p / "b.txt").exists():
        (p / "b.txt").unlink()
    if (p / "gone").exists():
        (p / "gone" / "g.txt").unlink()
        (p / "gone").rmdir()


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        out.append((proc.returncode, stdout, stderr))
    return out


def test_two_commits_at_once(ws: Workspace) -> None:
    ws.set_config(lock_timeout=2)
    ws.init(BASE)
    for rnd in range(4):
        change_something(ws, rnd)
        before_tree = ws.tree()
        before_changes = ws.status()
        old_head = ws.state().head.hex
        n_snaps = len(ws.store().snapshot_ids())

        results = finish([ws.popen("commit", "-m", f"racer {i}", "--json") for i in range(2)])

        codes = sorted(code for code, _, _ in results)
        assert codes in ([0, 0], [0, LOCKED]), results
        made = [json.loads(out)["id"] for code, out, _ in results if code == 0]
        made = [sid for sid in made if sid is not None]
        assert len(made) == 1, f"expected exactly one new snapshot: {results}"
        for code, _out, err in results:
            if code == LOCKED:
                assert "locked" in err, err
        assert_store_ok(ws.store_path)
        assert len(ws.store().snapshot_ids()) == n_snaps + 1
        assert ws.log_ids("-n", "2") == [made[0], old_head]
        assert ws.state().head.hex == made[0]
        assert ws.status() == []
        assert ws.tree() == before_tree
        assert is_mounted_rw(ws.path)
        shown = ws.run("show", "--name-only", made[0]).stdout
        for line in before_changes:
            assert line.split(None, 1)[1].rstrip("/") in shown


def test_commit_racing_status(ws: Workspace) -> None:
    """Readers during a commit see the state before it or after it."""
    ws.init(BASE)
    change_something(ws, 1)
    before_tree = ws.tree()
    before_changes = ws.status()
    procs = [ws.popen("commit", "-m", "racing readers")]
    procs += [ws.popen("status", "--porcelain") for _ in range(4)]
    results = finish(procs)
    assert results[0][0] == 0, results[0]
    for code, out, err in results[1:]:
        assert code == 0, err
        assert out.splitlines() in (before_changes, []), out
    assert_store_ok(ws.store_path)
    assert ws.status() == []
    assert ws.tree() == before_tree
    assert is_mounted_rw(ws.path)


def test_commit_racing_checkout(ws: Workspace) -> None:
    ws.set_config(lock_timeout=2)
    ws.init(BASE)
    base = ws.state().head.hex
    ws.run("branch", "feature")
    (ws.path / "main-only.txt").write_text("main\n")
    ws.commit("on main")
    ws.run("checkout", "feature")
    feature_tree = ws.tree()
    ws.run("checkout", "main")
    for rnd in range(4):
        change_something(ws, rnd)
        # a change to a path that differs between main and feature: while it
        # is uncommitted, checkout refuses (it carries only changes that do
        # not clash, as git's does)
        (ws.path / "main-only.txt").write_text(f"main, round {rnd}\n")
        before_tree = ws.tree()
        before_changes = ws.status()
        main_before = ws.store().read_ref("heads", "main")

        (c_code, c_out, c_err), (k_code, _k_out, k_err) = finish(
            [ws.popen("commit", "-m", f"race {rnd}"), ws.popen("checkout", "feature")]
        )

        assert c_code in (0, LOCKED), (c_code, c_out, c_err)
        assert k_code in (0, int(ExitCode.UNCOMMITTED_CHANGES), LOCKED), (k_code, k_err)
        assert_store_ok(ws.store_path)
        state = ws.state()
        main_after = ws.store().read_ref("heads", "main")
        if c_code == 0:
            assert main_after != main_before, "commit succeeded but main did not move"
            assert main_after is not None
            record = ws.store().read_snapshot(main_after)
            assert record.parents == (main_before,)
        else:
            assert main_after == main_before
        if k_code == 0:
            # checkout ran on a clean tree: after the commit (or with no changes)
            assert c_code == 0, "checkout succeeded over uncommitted changes"
            assert state.branch == "feature"
            assert state.head.hex == base
            assert ws.status() == []
            assert ws.tree() == feature_tree
            ws.run("checkout", "main")
        else:
            assert state.branch == "main"
        # no change lost: main's working tree holds every change
        assert ws.state().branch == "main"
        if c_code == 0:
            assert ws.status() == []
        else:
            assert ws.status() == before_changes
        assert ws.tree() == before_tree
        assert is_mounted_rw(ws.path)
        if c_code != 0:
            ws.commit(f"after race {rnd}")


def test_commit_while_store_is_locked_fails_cleanly(ws: Workspace) -> None:
    ws.init(BASE)
    change_something(ws, 1)
    ws.set_config(lock_timeout=1)
    before_tree = ws.tree()
    before_changes = ws.status()
    head = ws.state().head
    with StoreLock(ws.store_path / "lock", exclusive=True, timeout=5):
        proc = ws.run("commit", "-m", "blocked", check=False)
    assert proc.returncode == LOCKED, (proc.returncode, proc.stderr)
    assert "locked" in proc.stderr
    assert "hint:" in proc.stderr
    assert ws.state().head == head
    assert ws.status() == before_changes
    assert ws.tree() == before_tree
    assert is_mounted_rw(ws.path)
    assert_store_ok(ws.store_path)
    ws.commit("unblocked")
    assert ws.status() == []
