"""The hash cache kept across processes: a file is hashed again exactly when
its inode, size, mtime or ctime moved, or when it had changed just before it
was hashed (racy); a damaged cache file is an empty cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapws.layers import hashcache
from snapws.layers.hashcache import HashCache
from snapws.layers.hashing import hash_file


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The paths hashcache reads and hashes; changes settle at once (no racy
    window), unless a test sets RACY_NS back."""
    read: list[bytes] = []

    def counting(path: bytes | str) -> object:
        read.append(os.fsencode(path))
        return hash_file(path)

    monkeypatch.setattr(hashcache, "hash_file", counting)
    monkeypatch.setattr(hashcache, "RACY_NS", 0)
    return read


def _b(p: Path) -> bytes:
    return os.fsencode(p)


def test_a_file_hashed_once_is_not_read_by_the_next_process(
    tmp_path: Path, counted: list[bytes]
) -> None:
    (tmp_path / "upper").mkdir()
    f = tmp_path / "upper" / "f"
    f.write_bytes(b"one")
    first = HashCache()
    h = first.get(_b(f))
    assert h == hash_file(_b(f)) and counted == [_b(f)]
    first.save(tmp_path / "hashes")
    second = HashCache.load(tmp_path / "hashes")
    assert second.get(_b(f)) == h
    assert counted == [_b(f)]  # not read again
    # by inode: the same file in a renamed directory (a published layer) too
    os.rename(tmp_path / "upper", tmp_path / "layer")
    assert HashCache.load(tmp_path / "hashes").get(_b(tmp_path / "layer" / "f")) == h
    assert counted == [_b(f)]


def test_a_changed_file_is_hashed_again(tmp_path: Path, counted: list[bytes]) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one")
    st = f.stat()
    cache = HashCache()
    cache.get(_b(f))
    cache.save(tmp_path / "hashes")
    f.write_bytes(b"two")  # same size, and the same mtime put back: the ctime moved
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert HashCache.load(tmp_path / "hashes").get(_b(f)) == hash_file(_b(f))
    assert counted == [_b(f), _b(f)]
    g = tmp_path / "g"  # another file renamed over it: another inode
    g.write_bytes(b"six")
    os.replace(g, f)
    cache = HashCache.load(tmp_path / "hashes")
    assert cache.get(_b(f)) == hash_file(_b(f))
    assert len(counted) == 3


def test_a_file_changed_just_before_it_was_hashed_is_not_kept(
    tmp_path: Path, counted: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashcache, "RACY_NS", 2_000_000_000)
    f = tmp_path / "f"
    f.write_bytes(b"fresh")
    cache = HashCache()
    cache.get(_b(f))
    assert cache.get(_b(f)) and len(counted) == 1  # kept for this process
    cache.save(tmp_path / "hashes")
    assert not (tmp_path / "hashes").exists()  # nothing to keep across processes
    HashCache.load(tmp_path / "hashes").get(_b(f))
    assert len(counted) == 2


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"snapws-hashes-1\n" + b"x" * 7, b"snapws-hashes-0\n" + b"x" * 56],
)
def test_a_damaged_cache_is_an_empty_one(
    tmp_path: Path, counted: list[bytes], content: bytes
) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one")
    (tmp_path / "hashes").write_bytes(content)
    assert HashCache.load(tmp_path / "hashes").get(_b(f)) == hash_file(_b(f))
    assert counted == [_b(f)]


def test_save_leaves_no_temporary_copy(tmp_path: Path, counted: list[bytes]) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one")
    old = tmp_path / f".hashes.tmp-{os.getpid()}"  # a killed save's, long ago
    old.write_bytes(b"torn")
    os.utime(old, (0, 0))
    gone = tmp_path / ".hashes.tmp-999999999"  # a killed save's, just now
    gone.write_bytes(b"torn")
    cache = HashCache()
    cache.get(_b(f))
    cache.save(tmp_path / "hashes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "hashes"]
    # a cache that learnt nothing writes nothing
    (tmp_path / "hashes").unlink()
    again = HashCache.load(tmp_path / "hashes")
    again.save(tmp_path / "hashes")
    assert not (tmp_path / "hashes").exists()


def test_a_command_that_changes_something_trusts_no_stamp(
    tmp_path: Path, counted: list[bytes]
) -> None:
    """A commit or checkout (an exclusive session) hashes again what an
    earlier process stamped: a write through a shared mapping may not have
    moved the ctime yet. It still records what it hashed."""
    f = tmp_path / "f"
    f.write_bytes(b"one")
    first = HashCache()
    first.get(_b(f))
    first.save(tmp_path / "hashes")
    untrusting = HashCache.load(tmp_path / "hashes", trust=False)
    assert untrusting.get(_b(f)) == hash_file(_b(f))
    assert counted == [_b(f), _b(f)]
    assert HashCache.load(tmp_path / "hashes").get(_b(f)) == hash_file(_b(f))
    assert len(counted) == 2  # a read-only command does trust it
