"""A long history: 400 commits in a row give a 401-layer mount (the new
mount API, one ``lowerdir+`` per layer), whose content, log and checkout of
the first commit all work; one more commit with the default depth bound
flattens the chain without changing ids, history or content."""

from __future__ import annotations

import pytest

from snapws.config import Config
from snapws.ops.session import open_session
from snapws.ops.worktree.commit import commit

from .conftest import AUTHOR, Workspace, is_mounted_rw, mount_line
from .verify import assert_store_ok

pytestmark = [pytest.mark.root, pytest.mark.slow]

COMMITS = 400


def lower_layers(ws: Workspace) -> int:
    """The number of lower layers of the mount on the workspace, from the
    raw /proc/self/mountinfo line (``lowerdir+=`` entries, or a legacy
    ``lowerdir=a:b:c`` list)."""
    line = mount_line(ws.path)
    assert line is not None, "the workspace is not mounted"
    fields = line.split(b" ")
    supers = fields[fields.index(b"-", 6) + 3].split(b",")
    plus = [o for o in supers if o.startswith(b"lowerdir+=")]
    if plus:
        return len(plus)
    legacy = [o for o in supers if o.startswith(b"lowerdir=")]
    assert len(legacy) == 1, supers
    return len(legacy[0].removeprefix(b"lowerdir=").split(b":"))


def test_400_commits_in_a_row(ws: Workspace) -> None:
    ws.init({"counter.txt": "0\n", "early.txt": "from the start\n", "dir": {"d.txt": "d\n"}})
    # the library takes any depth the kernel mounts (500); the config file
    # caps max_depth lower, and its default flattens long before 400
    config = Config(author=AUTHOR, lock_timeout=30, max_depth=COMMITS + 1)
    made = []
    for i in range(1, COMMITS + 1):
        (ws.path / "counter.txt").write_text(f"{i}\n")
        with open_session(ws.path, config) as session:
            result = commit(session, f"commit {i}", AUTHOR)
        assert result.snapshot is not None, f"commit {i} recorded nothing"
        assert len(result.changes) == 1, result.changes
        made.append(result.snapshot.hex)

    assert lower_layers(ws) == COMMITS + 1
    assert len(ws.store().chain(ws.state().head)) == COMMITS + 1
    assert is_mounted_rw(ws.path)
    assert (ws.path / "counter.txt").read_text() == f"{COMMITS}\n"
    assert (ws.path / "early.txt").read_text() == "from the start\n"
    assert (ws.path / "dir" / "d.txt").read_text() == "d\n"
    assert ws.status() == []

    log = ws.run("log", "-n", "5").stdout
    assert log.count("\nsnapshot ") + log.startswith("snapshot ") == 5
    assert f"commit {COMMITS}" in log and f"commit {COMMITS - 4}" in log
    assert f"commit {COMMITS - 5}\n" not in log
    assert ws.log_ids("-n", "5") == made[::-1][:5]

    ws.run("checkout", f"HEAD~{COMMITS - 1}")
    assert ws.state().head.hex == made[0]
    assert lower_layers(ws) == 2
    assert (ws.path / "counter.txt").read_text() == "1\n"
    assert (ws.path / "early.txt").read_text() == "from the start\n"

    ws.run("checkout", "main")
    assert lower_layers(ws) == COMMITS + 1
    assert (ws.path / "counter.txt").read_text() == f"{COMMITS}\n"
    assert_store_ok(ws.store_path)

    # one more commit through the CLI, with the default max_depth: flattened
    (ws.path / "counter.txt").write_text("last\n")
    last = ws.commit("last")
    depth = lower_layers(ws)
    assert depth < 40, depth
    assert len(ws.store().chain(ws.state().head)) == depth
    assert (ws.path / "counter.txt").read_text() == "last\n"
    assert (ws.path / "early.txt").read_text() == "from the start\n"
    assert ws.status() == []
    assert ws.log_ids() == [last, *made[::-1], ws.log_ids()[-1]]
    ws.run("checkout", f"HEAD~{COMMITS}")
    assert ws.state().head.hex == made[0]
    assert (ws.path / "counter.txt").read_text() == "1\n"
    assert_store_ok(ws.store_path)
