"""Owners in a plain workspace of a user who is not root: a commit records
the owner the store's copy can be given (:class:`Owners`), and status reads
the working tree the same way (:func:`as_recorded`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from snapws.backends.plain.index import Index
from snapws.backends.plain.owners import Owners
from snapws.backends.plain.records import VIRTUAL, ScanRecord, entry_tuple
from snapws.backends.plain.workentry import WorkRules, as_recorded
from snapws.ids import ContentHash, SnapshotId
from snapws.model import Entry, Kind, classify

ME, MINE, OTHER_GROUP = 1001, 1001, 27  # she is in MINE (primary) and OTHER_GROUP
USER = Owners(ME, MINE, frozenset({MINE, OTHER_GROUP}))
ROOT = Owners(None, 0, frozenset())


def entry(uid: int, gid: int, content: str = "0") -> Entry:
    return Entry(b"f", Kind.FILE, 0o644, uid, gid, 1, 1, ContentHash(content * 32), xattrs={})


def user_rules() -> WorkRules:
    return WorkRules(False, ME, True, USER)


@pytest.mark.parametrize(
    ("owner", "copy"),
    [
        ((ME, MINE), (ME, MINE)),
        ((ME, OTHER_GROUP), (ME, OTHER_GROUP)),  # a group of hers: kept
        ((ME, 0), (ME, MINE)),  # `chown -R USER` of root's files
        ((0, 0), (ME, MINE)),  # root's file
        ((0, OTHER_GROUP), (ME, OTHER_GROUP)),
        ((4321, 8765), (ME, MINE)),
    ],
)
def test_the_owner_a_users_copy_gets(owner: tuple[int, int], copy: tuple[int, int]) -> None:
    assert USER.settable(*owner) == copy
    assert ROOT.settable(*owner) == owner


def test_root_reads_owners_as_they_are() -> None:
    rules = WorkRules(True, 0, True, ROOT)
    assert as_recorded(entry(ME, 0), entry(ME, MINE), rules) == entry(ME, 0)
    assert as_recorded(entry(0, 0), None, rules) == entry(0, 0)


@pytest.mark.parametrize(
    ("work", "head", "shown"),
    [
        # what init or a commit of hers stored, the workspace keeping group root
        ((ME, 0), (ME, MINE), (ME, MINE)),
        # a file given to root since (she could not record that)
        ((0, 0), (ME, MINE), (ME, MINE)),
        # a snapshot root made, as her checkout writes it (her own files)
        ((ME, MINE), (0, 0), (0, 0)),
        ((ME, MINE), (4321, 0), (4321, 0)),
        # a change she can record: chgrp to a group of hers, and back
        ((ME, OTHER_GROUP), (ME, MINE), (ME, OTHER_GROUP)),
        ((ME, MINE), (ME, OTHER_GROUP), (ME, MINE)),
        ((ME, OTHER_GROUP), (0, 0), (ME, OTHER_GROUP)),
    ],
)
def test_status_shows_the_owner_a_commit_records(
    work: tuple[int, int], head: tuple[int, int], shown: tuple[int, int]
) -> None:
    got = as_recorded(entry(*work), entry(*head), user_rules())
    assert (got.uid, got.gid) == shown
    assert (classify(b"f", entry(*head), got) is None) == (shown == head)


def test_a_path_a_commit_copies_shows_the_copys_owner() -> None:
    # root's snapshot, her edit: the commit copies the file and the copy is hers
    got = as_recorded(entry(ME, MINE, "1"), entry(0, 0), user_rules())
    assert (got.uid, got.gid) == (ME, MINE)
    change = classify(b"f", entry(0, 0), got)
    assert change is not None and change.what == ("content", "owner")
    # an addition of root's file is recorded as hers
    new = as_recorded(entry(0, 0), None, user_rules())
    assert (new.uid, new.gid) == (ME, MINE)
    assert replace(new, uid=0, gid=0) == entry(0, 0)


def test_after_her_commit_over_roots_snapshot_the_index_is_clean() -> None:
    # HEAD made by root (0:0); she edits d/f and commits: the layer holds her
    # copies of d/f and of d above it (hers: ME:MINE). What the scan saw of
    # d (clean: an owner she could not record) is clean against them too.
    def tree(uid: int, gid: int, content: str) -> list[Entry]:
        f = replace(entry(uid, gid, content), path=b"d/f")
        return [Entry(p, Kind.DIR, 0o755, uid, gid) for p in (b".", b"d")] + [f]

    index = Index.from_entries(SnapshotId("1" * 32), tree(0, 0, "0"))
    edited = entry_tuple(
        as_recorded(replace(entry(ME, MINE, "1"), path=b"d/f"), None, user_rules())
    )
    index.set_scan(VIRTUAL, ScanRecord.build([b"."], [(1, 1, 1, 1, 1)], {}, False, True))
    index.set_scan(b".", ScanRecord.build([b"d"], [(1, 1, 1, 2, 1)], {}, False, True))
    index.set_scan(b"d", ScanRecord.build([b"f"], [(1, 1, 1, 3, 1)], {b"f": edited}, True, True))
    index.rebase(index.apply_layer(tree(ME, MINE, "1")), user_rules())
    for d in (VIRTUAL, b".", b"d"):
        rec = index.scan_record(d)
        assert rec is not None and rec.dirty_map() == {}, d
