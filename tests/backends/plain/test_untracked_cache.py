"""The plain backend's untracked cache: a directory whose own stat is as its
parent's record holds it (and not racy) is not read, its recorded names are
lstat'ed instead. Every way of changing a directory's entries must still be
seen: the mtime set back (the ctime moves), the directory replaced by
another (the inode moves), ignore rules that change what the record left
out."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import Workspace

from snapws.backends.plain.dirtimes import (
    RELIABLE_FSTYPES,
    UNTRACKED_CACHE_ENV,
    dir_times_reliable,
    fstype_of,
)
from snapws.backends.plain.index import Index
from snapws.backends.plain.records import ScanRecord, split_names, stat_key, unpack_stats
from snapws.backends.plain.scan import ScanResult, scan
from snapws.backends.plain.workentry import WorkRules
from snapws.layers.ignore import IgnoreRules

from .conftest import PlainFactory

SPEC = {
    "top.txt": "top\n",
    "d": {"x": "x\n", "y": "y\n", "sub": {"z": "z\n"}},
    "e": {"f": "f\n"},
}
DIRS = 5  # the root's parent, ".", d, d/sub, e


def wait_for_the_clock(where: Path) -> None:
    """Return once a file made now in ``where`` gets a later timestamp than
    everything made so far (the filesystem's clock is coarse): a status
    that starts after this records every stat made before as not racy."""
    probe = where / ".clock-probe"
    probe.write_bytes(b"")
    first = os.lstat(probe).st_ctime_ns
    while True:
        time.sleep(0.002)
        probe.write_bytes(b"")
        if os.lstat(probe).st_ctime_ns > first:
            break
    probe.unlink()


def settled(ws: Workspace) -> None:
    """A status that records every directory, started after the clock moved
    past all their stats (so the next scan trusts them)."""
    wait_for_the_clock(ws.outside)
    ws.porcelain()


def scan_now(ws: Workspace) -> ScanResult:
    """A scan in this process, as status runs it (one walking process; the
    index is read, not written)."""
    (path,) = ws.store.glob("workspaces/*/index")
    index = Index.decode(path.read_bytes())  # (ws.head() would run a status)
    assert index is not None
    root = os.fsencode(ws.path)
    rules = WorkRules.for_workspace(root)
    return scan(index, root, rules, 1, IgnoreRules.for_tree(root), dir_times_reliable(root))


@pytest.fixture
def ws(make_plain: PlainFactory) -> Workspace:
    w = make_plain(spec=SPEC)
    settled(w)
    return w


def test_unchanged_directories_are_not_read(ws: Workspace) -> None:
    got = scan_now(ws)
    assert (got.listed, got.reused, got.changes) == (0, DIRS - 1, [])
    (ws.path / "d" / "sub" / "new").write_text("n\n")
    got = scan_now(ws)
    assert got.listed == 1  # d/sub only
    assert [c.path for c in got.changes] == [b"d/sub/new"]
    assert ws.porcelain() == ["?? d/sub/new"]


def test_an_entry_renamed_with_the_directory_mtime_set_back(ws: Workspace) -> None:
    d = ws.path / "d"
    before = os.lstat(d)
    os.rename(d / "x", d / "x2")
    (d / "y").unlink()
    (d / "w").write_text("y\n")  # another name, the same bytes
    os.utime(d, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(d).st_mtime_ns == before.st_mtime_ns
    assert ws.porcelain() == [" D d/x", " D d/y", "?? d/w", "?? d/x2"]


def test_an_entry_added_with_the_directory_mtime_set_back(ws: Workspace) -> None:
    e = ws.path / "e"
    before = os.lstat(e)
    (e / "g").write_text("g\n")
    os.utime(e, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(e).st_mtime_ns == before.st_mtime_ns  # (its ctime moved)
    assert ws.porcelain() == ["?? e/g"]


def _record_root_child(
    path: Path, old: bytes, name: bytes, st: os.stat_result, ref_ns: int
) -> None:
    """Write the index ``old`` to ``path``, saying now: the root's child
    ``name`` has stat ``st`` (its own record unchanged), with reference
    time ``ref_ns``."""
    index = Index.decode(old)
    assert index is not None
    rec = index.scan_record(b".")
    assert rec is not None and not rec.changed
    names = split_names(rec.names)
    keys = unpack_stats(rec.stats)
    keys[names.index(name)] = stat_key(st)
    index.set_scan(b".", ScanRecord.build(names, keys, {}, False, True))
    index.ref_ns, index.slack_ns = ref_ns, 0
    path.write_bytes(index.encode())


def test_a_racy_directory_is_read(ws: Workspace) -> None:
    """A scan that recorded a directory's names, then its stat after an
    entry came in the same clock tick, holds a stat that no longer tells
    the change: the racy rule makes the next scan read the directory."""
    (path,) = ws.store.glob("workspaces/*/index")
    old = path.read_bytes()
    (ws.path / "e" / "g").write_text("g\n")
    st = os.lstat(ws.path / "e")
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    _record_root_child(path, old, b"e", st, newest)
    assert ws.porcelain() == ["?? e/g"]
    # the control: with a reference after the change the record is trusted
    # (and wrong), so it is the racy rule that finds the change
    _record_root_child(path, old, b"e", st, newest + 1)
    got = scan_now(ws)
    assert (got.listed, got.changes) == (0, [])


def test_a_directory_replaced_by_a_copy_with_one_more_entry(ws: Workspace) -> None:
    d = ws.path / "d"
    before = os.lstat(d)
    shutil.copytree(d, ws.path / "d.new", symlinks=True)
    (ws.path / "d.new" / "extra").write_text("e\n")
    os.utime(ws.path / "d.new", ns=(before.st_atime_ns, before.st_mtime_ns))
    shutil.rmtree(d)
    os.rename(ws.path / "d.new", d)
    assert os.lstat(d).st_mtime_ns == before.st_mtime_ns
    assert "?? d/extra" in ws.porcelain()


def test_a_subdirectory_emptied_and_filled_again(ws: Workspace) -> None:
    sub = ws.path / "d" / "sub"
    (sub / "z").unlink()
    (sub / "z2").write_text("z\n")
    assert ws.porcelain() == [" D d/sub/z", "?? d/sub/z2"]
    settled(ws)
    (sub / "z2").unlink()
    (sub / "z").write_text("z\n")
    assert ws.porcelain() == []


def test_a_pattern_removed_shows_what_it_ignored(make_plain: PlainFactory) -> None:
    ws = make_plain(spec={**SPEC, ".snapwsignore": "*.log\n"})
    (ws.path / "d" / "a.log").write_text("log\n")
    (ws.path / "e" / "b.log").write_text("log\n")
    settled(ws)
    assert ws.porcelain() == []
    got = scan_now(ws)
    # d and e left an ignored entry out of their records: they are read again
    assert (got.listed, got.reused) == (2, DIRS - 3)
    (ws.path / ".snapwsignore").write_text("e/\n")
    assert ws.porcelain() == [" M .snapwsignore", "?? d/a.log"]
    (ws.path / ".snapwsignore").write_text("")
    assert ws.porcelain() == [" M .snapwsignore", "?? d/a.log", "?? e/b.log"]


def test_a_pattern_added_hides_an_entry_of_an_unchanged_directory(ws: Workspace) -> None:
    (ws.path / "d" / "sub" / "tmp.o").write_text("o\n")
    settled(ws)
    assert ws.porcelain() == ["?? d/sub/tmp.o"]
    (ws.path / ".snapwsignore").write_text("*.o\n")
    assert ws.porcelain() == ["?? .snapwsignore"]
    r = ws.run("status", "--porcelain", "--ignored")
    assert "!! d/sub/tmp.o" in r.stdout.splitlines()


def test_the_forked_walk_takes_the_same_shortcut(make_plain: PlainFactory) -> None:
    spec = {
        f"d{i}": {f"s{j}": {f"f{k}": f"{i}{j}{k}\n" for k in range(3)} for j in range(4)}
        for i in range(5)
    }
    ws = make_plain(spec=spec)
    settled(ws)
    one = ws.run("status", "--json", env={"SNAPWS_PLAIN_SCAN_PROCS": "1"}).stdout
    d = ws.path / "d3" / "s2"
    before = os.lstat(d)
    (d / "g").write_text("g\n")  # (no recorded name is gone)
    os.utime(d, ns=(before.st_atime_ns, before.st_mtime_ns))
    many = ws.run("status", "--json", env={"SNAPWS_PLAIN_SCAN_PROCS": "3"}).stdout
    assert many != one
    assert '"path": "d3/s2/g"' in many
    assert ws.run("status", "--json", env={"SNAPWS_PLAIN_SCAN_PROCS": "1"}).stdout == many


def test_only_filesystems_known_to_move_directory_times(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = os.fsencode(ws.path)
    assert fstype_of(root) in RELIABLE_FSTYPES  # (the tests' filesystem)
    assert fstype_of(b"/proc/self") == "proc"
    monkeypatch.setenv(UNTRACKED_CACHE_ENV, "0")
    assert not dir_times_reliable(root)
    got = scan_now(ws)
    assert (got.listed, got.reused) == (DIRS - 1, 0)
    e = ws.path / "e"
    before = os.lstat(e)
    (e / "g").write_text("g\n")
    os.utime(e, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ws.porcelain() == ["?? e/g"]
