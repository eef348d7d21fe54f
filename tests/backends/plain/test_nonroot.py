"""A plain workspace as an ordinary user (``snapwst``, see
tests/backends/users.py): no mount, no root, in a /tmp directory the user
owns. The same commands, and deletions and replaced directories still take
the overlay form in the store (a 0/0 whiteout, ``user.overlay.opaque``)."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.users import UserArea

from .test_crash import assert_plain_store_ok

#: Run as the user: make a tree (path -> text), then print its state.
MAKE = """
import json, os, sys
root = sys.argv[1]
for rel, text in json.loads(sys.argv[2]).items():
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text)
"""

#: Rewrite a file with other bytes of the same size, keeping its mtime.
SAME_SIZE_SAME_MTIME = """
import os, sys
p, text = sys.argv[1], sys.argv[2].encode()
st = os.stat(p)
assert len(text) == st.st_size
with open(p, "wb") as f:
    f.write(text)
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
"""


@pytest.fixture
def area() -> Iterator[UserArea]:
    a = UserArea()
    try:
        yield a
    finally:
        a.cleanup()


def _status(area: UserArea, ws: Path) -> list[str]:
    return area.snapws("-C", ws, "status", "--porcelain").stdout.splitlines()


def _json(area: UserArea, ws: Path, *args: str) -> object:
    return json.loads(area.snapws("-C", ws, *args, "--json").stdout)


def test_a_plain_workspace_as_an_ordinary_user(area: UserArea) -> None:
    ws = area.root / "ws"
    tree = {"a.txt": "alpha\n", "d/x": "x\n", "d/sub/y": "y\n", "gone/g": "g\n"}
    area.run(sys.executable, "-c", MAKE, ws, json.dumps(tree))
    store = area.root / ".snapws"  # (the default is ~/.local/share/snapws)
    out = _json(area, ws.parent, "--store", str(store), "init", "--backend", "plain", "ws")
    assert isinstance(out, dict) and out["backend"] == "plain"
    assert os.stat(store).st_uid == area.uid
    assert json.loads((store / "snapws-store.json").read_text())["xattrs"] == "user"
    assert _status(area, ws) == []

    # an edit in the same second, same size, same mtime, after a commit
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"a.txt": "ALPHA\n"}))
    area.snapws("-C", ws, "commit", "-m", "upper")
    assert _status(area, ws) == []
    area.run(sys.executable, "-c", SAME_SIZE_SAME_MTIME, ws / "a.txt", "alpha\n")
    assert _status(area, ws) == [" M a.txt"]

    # deletions, a file replaced by a directory, a mode
    area.run("rm", "-r", ws / "gone", ws / "d" / "x")
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"d/x/in": "in\n"}))
    area.run("chmod", "700", ws / "d" / "sub")
    assert _status(area, ws) == [
        " M a.txt",
        " M d/sub/",
        " T d/x/",
        " D gone/",
        " D gone/g",
        "?? d/x/in",
    ]
    commit = _json(area, ws, "commit", "-m", "as a user")
    assert isinstance(commit, dict)
    sid = str(commit["id"])
    chain = json.loads((store / "chains" / f"{sid}.json").read_text())
    top = store / "layers" / chain[-1] / "tree"
    white = os.lstat(top / "gone")
    assert stat.S_ISCHR(white.st_mode) and white.st_rdev == 0 and white.st_uid == area.uid
    assert os.getxattr(top / "d" / "x", "user.overlay.opaque") == b"y"
    assert _status(area, ws) == []

    # checkout back and forth rewrites the tree; restore brings paths back
    area.snapws("-C", ws, "checkout", "HEAD~2")
    assert (ws / "a.txt").read_text() == "alpha\n" and (ws / "d" / "x").read_text() == "x\n"
    assert (ws / "gone" / "g").read_text() == "g\n"
    assert os.lstat(ws / "a.txt").st_uid == area.uid
    assert _status(area, ws) == []
    area.snapws("-C", ws, "checkout", "main")
    assert (ws / "d" / "x" / "in").read_text() == "in\n" and not (ws / "gone").exists()
    area.snapws("-C", ws, "restore", "--source", "HEAD~2", "gone")
    assert _status(area, ws) == ["?? gone/", "?? gone/g"]
    area.snapws("-C", ws, "reset", "--hard", "HEAD")
    assert _status(area, ws) == []
    area.snapws("-C", ws, "verify")

    # a file this user cannot read is an error, not a deletion
    area.run("chmod", "000", ws / "a.txt")
    refused = area.snapws("-C", ws, "status", check=False)
    assert refused.returncode == 12 and "cannot read" in refused.stderr, refused.stderr
    area.run("chmod", "644", ws / "a.txt")
    assert _status(area, ws) == []

    # a crash in the middle of a commit, recovered by the next command
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"new.txt": "new\n"}))
    crashed = area.snapws(
        "-C", ws, "commit", "-m", "x", check=False, env={"SNAPWS_CRASH_AT": "commit:logged"}
    )
    assert crashed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), crashed.stderr
    assert _status(area, ws) == []
    assert (ws / "new.txt").read_text() == "new\n"
    assert_plain_store_ok(store)


def test_the_default_workspace_of_a_user_is_visible_to_her_other_processes(
    area: UserArea,
) -> None:
    # auto picks plain for a user who is not root, never rootless: a second
    # process that never ran snapws (cat, outside any namespace) reads the
    # workspace after init, commit and checkout
    ws = area.root / "ws"
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"a.txt": "one\n"}))
    out = _json(area, area.root, "init", "ws")
    assert isinstance(out, dict) and out["backend"] == "plain"
    assert area.run("cat", ws / "a.txt").stdout == "one\n"
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"a.txt": "two\n", "b.txt": "b\n"}))
    area.snapws("-C", ws, "commit", "-m", "two")
    assert area.run("cat", ws / "a.txt", ws / "b.txt").stdout == "two\nb\n"
    area.snapws("-C", ws, "checkout", "HEAD~1")
    assert area.run("cat", ws / "a.txt").stdout == "one\n"
    assert area.run("ls", "-A", ws).stdout.split() == ["a.txt"]
    area.snapws("-C", ws, "checkout", "main")
    assert area.run("cat", ws / "b.txt").stdout == "b\n"
    doctor = _json(area, ws, "doctor")
    assert isinstance(doctor, dict) and doctor["backend"] == "plain"
