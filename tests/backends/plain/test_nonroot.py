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
from dataclasses import replace
from pathlib import Path

import pytest

from backends.users import UserArea
from snapws.backends.plain.index import MAGIC, Index
from snapws.backends.plain.records import (
    ScanRecord,
    entry_tuple,
    split_names,
    tuple_entry,
    unpack_stats,
)
from snapws.model import Entry, Kind, decode_manifest

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


def _top_manifest(store: Path, sid: str) -> dict[str, Entry]:
    chain = json.loads((store / "chains" / f"{sid}.json").read_text())
    data = (store / "layers" / chain[-1] / "manifest").read_bytes()
    return {os.fsdecode(e.path): e for e in decode_manifest(data)}


def test_owners_the_user_cannot_record_are_recorded_as_hers(area: UserArea) -> None:
    # a tree made by root and given to the user with `chown -R USER`, which
    # leaves group root (she is not in it), and a file of root she may only
    # read: the store's copies are hers (her uid, her primary gid), so that is
    # what a commit records, and status shows no difference she cannot record
    ws = area.root / "ws"
    (ws / "d").mkdir(parents=True)
    for rel in ("f1", "f2", "d/f3"):
        (ws / rel).write_text(rel + "\n")
    for p in (ws, ws / "d", ws / "f1", ws / "f2", ws / "d" / "f3"):
        os.chown(p, area.uid, 0)
    (ws / "roots").write_text("root's\n")  # 0:0, mode 0644
    store = area.root / ".snapws"
    out = _json(area, area.root, "--store", str(store), "init", "ws")
    assert isinstance(out, dict) and out["backend"] == "plain"
    assert _status(area, ws) == []
    clean = _json(area, ws, "status")
    assert isinstance(clean, dict) and clean["clean"] is True and clean["changes"] == []
    base = str(clean["id"])
    manifest = _top_manifest(store, base)
    assert {(e.uid, e.gid) for e in manifest.values()} == {(area.uid, area.gid)}
    nothing = area.snapws("-C", ws, "commit", "-m", "nothing", check=False)
    assert "nothing to commit" in nothing.stdout + nothing.stderr, nothing

    # what she can change is shown and recorded, and nothing else
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"f1": "one\n", "d/f3": "three\n"}))
    os.chown(ws / "f2", 0, 0)  # given away: she could not record that either
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"new": "new\n"}))
    os.chown(ws / "new", 0, 0)
    st = _json(area, ws, "status")
    assert isinstance(st, dict)
    got = {c["path"]: (c["status"], c.get("what", [])) for c in st["changes"]}
    assert got == {"d/f3": ("M", ["content"]), "f1": ("M", ["content"]), "new": ("A", [])}
    for c in st["changes"]:
        assert (c["new"]["uid"], c["new"]["gid"]) == (area.uid, area.gid), c
    commit = _json(area, ws, "commit", "-m", "edits")
    assert isinstance(commit, dict)
    top = _top_manifest(store, str(commit["id"]))
    assert sorted(p for p in top if top[p].kind is not Kind.DIR) == ["d/f3", "f1", "new"]
    assert {(e.uid, e.gid) for e in top.values()} == {(area.uid, area.gid)}
    assert _status(area, ws) == []

    # against an older snapshot, the working tree reads as a commit would record it
    diff = _json(area, ws, "diff", base)
    assert isinstance(diff, dict)
    changes = {c["path"]: (c["status"], c.get("what", [])) for c in diff["changes"]}
    assert changes == {"d/f3": ("M", ["content"]), "f1": ("M", ["content"]), "new": ("A", [])}

    # a checkout writes her own files, and status stays clean
    area.snapws("-C", ws, "checkout", base)
    assert _status(area, ws) == []
    area.snapws("-C", ws, "checkout", "main")
    assert _status(area, ws) == []
    area.snapws("-C", ws, "verify")
    assert_plain_store_ok(store)


def test_an_index_of_an_earlier_form_is_read_with_her_owners(area: UserArea) -> None:
    # before form 7 of the index, a scan recorded a file of group root as
    # differing from HEAD (her copy, of her group): an upgrade reads it again
    ws = area.root / "ws"
    area.run(sys.executable, "-c", MAKE, ws, json.dumps({"f1": "1\n", "f2": "2\n"}))
    os.chown(ws / "f1", area.uid, 0)
    store = area.root / ".snapws"
    area.snapws("--store", store, "init", "ws")
    assert _status(area, ws) == []
    (path,) = store.glob("workspaces/*/index")
    index = Index.decode(path.read_bytes())
    assert index is not None
    rec, head = index.scan_record(b"."), index.head_map(b".")
    assert rec is not None and rec.dirty is None
    stale = {b"f1": entry_tuple(replace(tuple_entry(b"f1", head[b"f1"]), gid=0))}
    keys = unpack_stats(rec.stats)
    index.set_scan(b".", ScanRecord.build(split_names(rec.names), keys, stale, True, rec.full))
    data = index.encode()
    assert data.startswith(MAGIC)
    path.write_bytes(data)  # (what the earlier form showed, for good)
    assert _status(area, ws) == [" M f1"]
    path.write_bytes(b"snapws-plain-index 6\n" + data[len(MAGIC) :])
    assert _status(area, ws) == []
    assert path.read_bytes().startswith(MAGIC)
    (ws / "f1").chmod(0o600)
    assert _status(area, ws) == [" M f1"]
