"""Cache keys, tags, matching and pruning plans (pure; no registry)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from snapws.errors import BadNameError, BadPathError
from snapws.ops.transfer.cache.keys import (
    MAX_TAG,
    CacheEntry,
    cache_tag,
    check_key,
    choose_entry,
    format_time,
    key_from_files,
    parse_time,
    plan_cache_prune,
    tag_may_match,
)
from snapws.remote.base import is_tag


def entry(key: str, created: int | None) -> CacheEntry:
    return CacheEntry(key, cache_tag(key), f"sha256:{'0' * 64}", created, 1, 1, None)


@pytest.mark.parametrize("key", ["linux-build-v1", "A_b.c-9", "_x", "x" * MAX_TAG])
def test_a_valid_tag_is_its_own_tag(key: str) -> None:
    assert cache_tag(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "Linux/x64 build@1",
        ".hidden",
        "-dash",
        "x" * (MAX_TAG + 1),
        "é-unicode",
        "a:b",
        "y" * 500,
    ],
)
def test_other_keys_get_a_sanitised_tag_with_a_hash(key: str) -> None:
    tag = cache_tag(key)
    assert is_tag(tag) and tag != key and len(tag) <= MAX_TAG
    assert tag == cache_tag(key)  # stable
    # the hash tells apart keys that sanitise alike
    assert cache_tag(key + "!") != cache_tag(key + "?")


def test_keys_that_sanitise_alike_get_different_tags() -> None:
    tags = {cache_tag(k) for k in ["a/b", "a b", "a:b", "a@b", "a-b"]}
    assert len(tags) == 5


def test_bad_keys_are_refused() -> None:
    for bad in ["", "a\nb", "tab\there", "x" * 513]:
        with pytest.raises(BadNameError):
            check_key(bad)
        with pytest.raises(BadNameError):
            cache_tag(bad)


def test_prefix_filter_never_drops_a_matching_key() -> None:
    keys = ["deps-linux-abc", "deps/linux abc", ".deps", "-x", "d" * 300, "deps-" + "é" * 200]
    for key in keys:
        for cut in range(0, len(key) + 1, 7):
            assert tag_may_match(cache_tag(key), key[:cut]), (key, cut)
    assert not tag_may_match(cache_tag("build-linux"), "deps-")


def test_exact_hit_wins() -> None:
    entries = [entry("deps-a", 5), entry("deps-b", 9)]
    hit, e, prefix = choose_entry("deps-a", ["deps-"], entries)
    assert (hit, e and e.key, prefix) == ("exact", "deps-a", None)


def test_first_matching_restore_key_then_newest() -> None:
    entries = [entry("deps-a", 5), entry("deps-b", 9), entry("other-z", 20), entry("deps-c", None)]
    hit, e, prefix = choose_entry("deps-x", ["nothing-", "deps-", "other-"], entries)
    # deps- is the first prefix that matches: its newest entry, though other-z is newer
    assert (hit, e and e.key, prefix) == ("prefix", "deps-b", "deps-")
    hit, e, prefix = choose_entry("k", ["other-", "deps-"], entries)
    assert (hit, e and e.key, prefix) == ("prefix", "other-z", "other-")


def test_miss() -> None:
    assert choose_entry("k", ["z"], [entry("deps-a", 1)]) == ("miss", None, None)
    assert choose_entry("k", [], []) == ("miss", None, None)


def test_prune_plan_splits_by_save_time() -> None:
    entries = [entry("old", 10), entry("edge", 100), entry("new", 200), entry("undated", None)]
    old, kept, undated = plan_cache_prune(entries, 100)
    assert [e.key for e in old] == ["old"]
    assert [e.key for e in kept] == ["edge", "new"]
    assert [e.key for e in undated] == ["undated"]


def test_times_round_trip() -> None:
    for ns in [0, 1_700_000_000_000_000_000, 1_700_000_000_123_456_789, 1_700_000_000_500_000_000]:
        assert parse_time(format_time(ns)) == ns
    assert format_time(1_700_000_000_500_000_000) == "2023-11-14T22:13:20.5Z"
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000 * 10**9
    for bad in ["", "yesterday", "2023-11-14", "2023-13-40T00:00:00Z"]:
        assert parse_time(bad) is None


def test_key_from_files_follows_contents(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "package-lock.json").write_text("v1")
    (tmp_path / "b.lock").write_text("b")
    k1 = key_from_files("deps", ["**/package-lock.json", "b.lock"], tmp_path)
    assert k1.startswith("deps-") and len(k1) == len("deps-") + 16
    assert key_from_files("deps", ["b.lock", "a/package-lock.json"], tmp_path) == k1  # order
    (tmp_path / "a" / "package-lock.json").write_text("v2")
    k2 = key_from_files("deps", ["**/package-lock.json", "b.lock"], tmp_path)
    assert k2 != k1
    assert key_from_files("deps", [str(tmp_path / "b.lock")], tmp_path) != k2
    with pytest.raises(BadPathError, match="no such file"):
        key_from_files("deps", ["missing.lock"], tmp_path)


def test_tags_of_many_keys_are_valid() -> None:
    alphabet = "aZ9_.-/ @é"
    for n in (1, 2, 3):
        for chars in itertools.product(alphabet, repeat=n):
            assert is_tag(cache_tag("".join(chars)))
