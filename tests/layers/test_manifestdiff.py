"""snapws.layers.manifestdiff: diffs from manifests give exactly what
diffs from layer trees (:func:`snapws.layers.diff.diff_views`) give.

Differential: random chains (hand-built layer trees with whiteouts, opaque
directories, files over directories and the reverse, hardlinks, symlinks,
fifos, random modes, owners and xattrs; chains sharing prefixes, and merged
layers standing for runs of other chains), every ordered pair compared,
whole and restricted to paths; then real commits of a workspace, every pair
of snapshots through ``ops.diff`` against the tree diff (and the contents it
reads against the trees')."""

from __future__ import annotations

import mmap
import os
import random
from pathlib import Path

import pytest
from conftest import WorkspaceFactory

from layers.test_merge import layer_manifest, random_edit, random_layer
from snapws.config import Config
from snapws.ids import LayerId
from snapws.layers import fences as fence_form
from snapws.layers.diff import diff_views
from snapws.layers.manifestdiff import (
    ManifestChain,
    SortedManifest,
    _index_lines,
    _line_path,
    diff_chains,
    line_kind,
)
from snapws.layers.merge import RunLayer, build_merged_tree
from snapws.layers.view import ChainView
from snapws.model import Entry, Kind, decode_manifest, encode_manifest, manifest_id
from snapws.ops.session import open_session
from snapws.ops.worktree.commit import commit
from snapws.ops.worktree.diff import diff as ops_diff

Layer = tuple[LayerId, bytes, bytes]  # id, tree, manifest bytes


def _chain(layers: list[Layer], big: bool) -> ManifestChain:
    """Topmost first. ``big``: search every manifest in place (as for a
    base layer) instead of decoding it whole."""
    out = []
    for lid, _, data in layers:
        m = SortedManifest(data)
        if big:
            m = _searched(data)
        out.append((lid, m))
    return ManifestChain(out)


def _searched(data: bytes) -> SortedManifest:
    return SortedManifest(data, small=-1)


def _unshared_trees(a: list[Layer], b: list[Layer]) -> list[bytes]:
    ra, rb = list(reversed(a)), list(reversed(b))
    common = 0
    while common < min(len(ra), len(rb)) and ra[common][0] == rb[common][0]:
        common += 1
    return [x[1] for x in ra[common:]] + [x[1] for x in rb[common:]]


def _tree_diff(a: list[Layer], b: list[Layer], under: tuple[bytes, ...] = ()) -> list[object]:
    return list(
        diff_views(
            ChainView([x[1] for x in a]),
            ChainView([x[1] for x in b]),
            _unshared_trees(a, b),
            under,
        )
    )


def _layer(tree: Path) -> Layer:
    data = encode_manifest(layer_manifest(tree))
    return manifest_id(data), os.fsencode(tree), data


def _merged(root: Path, run: list[Layer], name: str, bottom: bool) -> Layer:
    """One layer equal to ``run`` (topmost first), as compaction makes it."""
    layers = [RunLayer(t, decode_manifest(data)) for _, t, data in run]
    dest = root / name
    data = build_merged_tree(layers, os.fsencode(dest), bottom)
    return manifest_id(data), os.fsencode(dest), data


@pytest.mark.root
def test_manifest_diffs_equal_tree_diffs_on_random_chains(tmp_path: Path) -> None:
    compared = changed = 0
    for it in range(6):
        rng = random.Random(7100 + it)
        root = tmp_path / f"s{it}"
        pool = [_layer(random_layer(rng, root / f"L{n}", n)) for n in range(7)]
        base = pool[0]
        chains: list[list[Layer]] = [[]]  # topmost first; the empty chain too
        for _ in range(6):
            k = rng.randrange(1, 5)
            picks = rng.sample(pool[1:], k)
            chains.append([*picks, base])
        # chains that share prefixes with others and go on differently
        for c in list(chains[1:4]):
            chains.append([rng.choice(pool[1:]), *c])
        # merged layers standing for runs: equivalent chains, other layer ids
        for n, c in enumerate(list(chains[1:])):
            if len(c) >= 3:
                run_end = rng.randrange(2, len(c) + 1)
                merged = _merged(root, c[:run_end], f"M{n}", run_end == len(c))
                chains.append([merged, *c[run_end:]])
        for a in chains:
            for b in chains:
                want = _tree_diff(a, b)
                big = rng.random() < 0.5
                got = diff_chains(_chain(a, big), _chain(b, big))
                assert got == want, (it, [x[0].short() for x in a], [x[0].short() for x in b])
                compared += 1
                changed += bool(want)
                under = (rng.choice((b"a", b"b/c", b"c/a/b", b"zz")),)
                got = diff_chains(_chain(a, not big), _chain(b, not big), under)
                assert got == _tree_diff(a, b, under)
    assert compared > 500 and changed > compared // 2


def test_searched_manifest_finds_every_entry_and_subtree() -> None:
    names = [b"a", b"a-b", b"a/b", b"a/b/c", b"a0", b"b", b'q"uote', b"sl\\ash", b"\xff\xfe"]
    entries = [Entry(path=b".", kind=Kind.DIR)]
    entries += [Entry(path=n, kind=Kind.FILE, hash=None, size=len(n)) for n in names]
    data = encode_manifest(entries)
    m = _searched(data)
    for e in entries:
        got = m.get(e.path)
        assert got is not None and got.path == e.path and got.size == e.size
    for missing in (b"", b"0", b"a/", b"a/a", b"zz", b"a-", b"\xff"):
        assert m.get(missing) is None
    assert [e.path for e in m.below(b"a")] == [b"a/b", b"a/b/c"]
    assert [e.path for e in m.below(b".")] == sorted(names)
    assert [e.path for e in m.entries()] == [b".", *sorted(names)]


def _view_read(view: ChainView, path: bytes) -> bytes | None:
    loc = view.locate(path)
    if loc is None or loc.node.kind is not Kind.FILE:
        return None
    return Path(os.fsdecode(loc.node.abspath)).read_bytes()


@pytest.mark.root
def test_snapshot_diffs_from_manifests_equal_tree_diffs_on_real_commits(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    # compaction on (max_depth 6): chains get merged layers as they would
    config = Config(author="diff-test <t@example.org>", lock_timeout=30, max_depth=6)
    spec = {
        "src": {"a": "a0\n", "b": "b0\n", "sub": {"s": "s0\n", "t": {"deep": "d\n"}}},
        "doc": {"a": "doc a\n", "sub": {"x": "x\n"}},
        "x": "plain file\n",
        "counter": "0\n",
    }
    compared = 0
    for it in range(2):
        rng = random.Random(4200 + it)
        ws = make_workspace(name=f"ws{it}", spec=spec, store=tmp_path / f"store{it}")
        sids = []
        for step in range(1, 12):
            random_edit(rng, ws.path, step)
            with open_session(ws.path, config) as session:
                made = commit(session, f"step {step}", config.author)
            assert made.snapshot is not None
            sids.append(made.snapshot)
        with open_session(ws.path, config, exclusive=False) as session:
            store = session.store
            for a in sids:
                for b in sids:
                    result = ops_diff(session, a, b)
                    got = result.changes
                    unshared = [
                        os.fsencode(store.layer_tree(x)) for x in store.unshared_layers(a, b)
                    ]
                    old_view, new_view = session.chain_view(a), session.chain_view(b)
                    want = diff_views(old_view, new_view, unshared)
                    assert got == want
                    # contents read where the manifests say: as read through the trees
                    assert result.old_files is not None and result.new_files is not None
                    for c in got:
                        assert result.read_old(c.path) == _view_read(old_view, c.path)
                        assert result.read_new(c.path) == _view_read(new_view, c.path)
                    compared += 1
    assert compared == 2 * 11 * 11


def _random_paths(rng: random.Random, count: int) -> set[bytes]:
    names = [*b"a b a-b a0 0 z".split(), b'q"t', b"s\\l", b"caf\xc3\xa9", b"\xff", b"s p"]
    paths: set[bytes] = set()
    while len(paths) < count:
        parts = [rng.choice(names) for _ in range(rng.randrange(1, 5))]
        for n in range(1, len(parts) + 1):
            paths.add(b"/".join(parts[:n]))
    return paths


def _lookups(rng: random.Random, pool: list[bytes], order: str) -> list[bytes]:
    keys = rng.sample(pool, rng.randrange(1, len(pool)))
    if order == "sorted":
        keys.sort()
    elif order == "mostly":  # sorted runs with jumps back, as ancestors and subtrees give
        keys.sort()
        for _ in range(len(keys) // 10):
            i = rng.randrange(len(keys))
            keys.insert(rng.randrange(i + 1), keys[i])
    return keys


def _random_manifest(
    rng: random.Random, count: int, form: str
) -> tuple[bytes, dict[bytes, Entry], list[bytes]]:
    """A manifest of about ``count`` random paths in ``form`` ("canonical",
    "spaced": spaces after the separators, "escaped": escaped slashes), its
    entries by path, and paths to look up (present, absent, odd)."""
    paths = _random_paths(rng, count)
    entries = [Entry(path=b".", kind=Kind.DIR)]
    for p in sorted(paths):
        kind = Kind.DIR if any(q.startswith(p + b"/") for q in paths) else Kind.FILE
        entries.append(Entry(path=p, kind=kind, size=len(p), mtime_ns=rng.randrange(10**18)))
    data = encode_manifest(entries)
    if form == "spaced":
        data = data.replace(b'":', b'": ').replace(b",", b", ")
    elif form == "escaped":
        data = data.replace(b"/", b"\\/")
    truth = {e.path: e for e in decode_manifest(data)}
    assert len(truth) == len(entries)
    absent = [p + b"x" for p in rng.sample(sorted(paths), 100)]
    return data, truth, [*truth, *absent, b"", b"-", b"~", b"\xff\xff"]


@pytest.mark.parametrize("form", ["canonical", "spaced", "escaped"])
def test_searched_manifest_lookups_in_any_order_find_what_a_dict_finds(
    form: str, tmp_path: Path
) -> None:
    """The forward search (gallop, bisection, substring search of a short
    bracket) and the binary search from scratch agree with a whole decode,
    for paths present and absent, in sorted, nearly sorted and random order,
    at every window and span; also on manifests not in the canonical form
    (spaces after the separators, escaped slashes), where the substring
    search cannot see a path's line. A small manifest (lines indexed, then
    decoded whole) too."""
    rng = random.Random(880 + len(form))
    data, truth, pool = _random_manifest(rng, 600, form)
    mapped = tmp_path / "manifest"
    mapped.write_bytes(data)
    with open(mapped, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for window, span in ((1, 1), (64, 16), (300, 4096), (8192, 4096), (1 << 20, 1 << 20)):
            for order in ("sorted", "mostly", "random"):
                for buf in (data, mm):
                    m = SortedManifest(buf, small=-1, window=window, span=span)
                    for p in _lookups(rng, pool, order):
                        assert m.get(p) == truth.get(p), (window, span, order, p)
    small = SortedManifest(data)  # its lines indexed by path, then decoded whole
    for p in _lookups(rng, pool, "random"):
        assert small.get(p) == truth.get(p), p
    assert list(small.entries()) == list(truth.values())
    for p in _lookups(rng, pool, "random"):
        assert small.get(p) == truth.get(p), p


def _spaced(layer: Layer) -> Layer:
    """The same layer with its manifest in another JSON form (spaces after
    the separators): read by decoding lines, not by their canonical bytes."""
    lid, tree, data = layer
    return lid, tree, data.replace(b'":', b'": ').replace(b",", b", ")


def test_manifest_diffs_in_another_json_form_equal_tree_diffs(tmp_path: Path) -> None:
    # line_kind, the whiteout test and the mtime-only comparison read the
    # canonical bytes; on other forms they decode the lines instead
    rng = random.Random(7300)
    pool = [_layer(random_layer(rng, tmp_path / f"L{n}", n)) for n in range(6)]
    chains = [[*rng.sample(pool[1:], rng.randrange(1, 4)), pool[0]] for _ in range(6)]
    compared = 0
    for a in chains:
        for b in chains:
            want = _tree_diff(a, b)
            for big in (False, True):
                got = diff_chains(
                    _chain([_spaced(x) for x in a], big), _chain([_spaced(x) for x in b], big)
                )
                assert got == want
                compared += 1
    assert compared == 72


def test_line_kind_reads_kind_and_opaque_as_decoding_does() -> None:
    entries = [
        Entry(path=b"d", kind=Kind.DIR, mode=0o755),
        Entry(path=b"o", kind=Kind.DIR, opaque=True),
        Entry(path=b"f", kind=Kind.FILE, size=3),
        Entry(path=b"w", kind=Kind.WHITEOUT),
        Entry(path=b"l", kind=Kind.SYMLINK, target=b'"k":"w"'),
        Entry(path=b'"k":"w"', kind=Kind.FILE),  # the key's text inside a name
        Entry(path=b"x", kind=Kind.FILE, xattrs={"user.k": b"w", "k": b"\x0d"}),
        Entry(path=b"xd", kind=Kind.DIR, opaque=True, xattrs={"user.o": b"1"}),
    ]
    data = encode_manifest(entries)
    lines = [line for line in data.split(b"\n") if line]
    spaced = [line.replace(b'":', b'": ').replace(b",", b", ") for line in lines]
    for line in [*lines, *spaced]:
        e = decode_manifest(line + b"\n")[0]
        assert line_kind(line) == (e.kind, e.opaque and e.kind is Kind.DIR), line
    with pytest.raises(ValueError):
        line_kind(b'{"p":"a","k":')


def test_outline_lists_paths_lines_and_what_hides_below() -> None:
    entries = [
        Entry(path=b".", kind=Kind.DIR),
        Entry(path=b"d", kind=Kind.DIR),
        Entry(path=b"d/o", kind=Kind.DIR, opaque=True),
        Entry(path=b"f", kind=Kind.FILE),
        Entry(path=b"w", kind=Kind.WHITEOUT),
        Entry(path=b"\xff", kind=Kind.SYMLINK, target=b"t"),
    ]
    data = encode_manifest(entries)
    want = [(e.path, e.kind is not Kind.DIR or e.opaque) for e in entries]
    for m in (SortedManifest(data), _searched(data)):
        assert [(p, hides) for p, _, hides in m.outline()] == want
    small = SortedManifest(data)
    lines = {p: line for p, line, _ in small.outline()}
    assert all(small.get_line(p) == lines[p] for p in lines)
    for bad in (data + b'{"p":"zz","k":\n', data.replace(b"\n", b"\n\n", 1)):
        m = SortedManifest(bad)
        if b"zz" in bad:
            with pytest.raises(ValueError):
                list(m.outline())
        else:  # a blank line: read a line at a time
            assert [(p, h) for p, _, h in m.outline()] == want


def test_entries_equal_but_for_mtime_are_no_change() -> None:
    base = [Entry(path=b".", kind=Kind.DIR), Entry(path=b"d", kind=Kind.DIR, mtime_ns=1)]
    base.append(Entry(path=b"d/f", kind=Kind.FILE, mode=0o644, mtime_ns=1, size=1))
    top = [
        Entry(path=b".", kind=Kind.DIR, mtime_ns=5),
        Entry(path=b"d", kind=Kind.DIR, mtime_ns=2),
        Entry(path=b"d/f", kind=Kind.FILE, mode=0o600, mtime_ns=2, size=1),
    ]
    lower = (LayerId("1" * 32), SortedManifest(encode_manifest(base)))
    upper = (LayerId("2" * 32), SortedManifest(encode_manifest(top)))
    got = diff_chains(ManifestChain([lower]), ManifestChain([upper, lower]))
    assert [(c.path, c.what) for c in got] == [(b"d/f", ("mode",))]


def test_lines_are_indexed_by_path_as_line_by_line_reading_does() -> None:
    rng = random.Random(91)
    paths = sorted(_random_paths(rng, 200))
    entries = [Entry(path=p, kind=Kind.FILE, size=1, target=None) for p in paths]
    entries.append(Entry(path=b"l", kind=Kind.SYMLINK, target=b'"p":"x"'))
    entries.append(Entry(path=b"h", kind=Kind.FILE, link=b"other"))  # "hl":"..." too
    canonical = encode_manifest(entries)
    plain = encode_manifest([e for e in entries if b"\\" not in encode_manifest([e])])
    for data in (
        canonical,
        plain,
        plain.replace(b'":', b'": '),
        plain.replace(b"\n", b"\n\n", 3),
        plain[:-1],  # no newline at the end
    ):
        want = {_line_path(line): line for line in data.split(b"\n") if line.strip()}
        got = _index_lines(data)
        assert got == want and list(got) == list(want)
    with pytest.raises(ValueError):  # a line cut short: named, not read into the next
        _index_lines(b'{"p":"ab\n{"k":"d","p":"cd"}\n')


def test_a_path_looked_up_after_a_longer_absent_one_is_found() -> None:
    # An absent path's bracket may hold lines below it: a path of one of
    # them, looked up next, was searched for before the bracket only (a
    # directory after the paths below it, as a chain walks a tree)
    entries = [
        Entry(path=b".", kind=Kind.DIR),
        Entry(path=b"a", kind=Kind.WHITEOUT),
        Entry(path=b"b", kind=Kind.FIFO),
        Entry(path=b"c", kind=Kind.SYMLINK, target=b"t"),
    ]
    data = encode_manifest(entries)
    for window, span in ((8192, 4096), (1, 1 << 20), (64, 64)):
        m = SortedManifest(data, small=-1, window=window, span=span)
        for p in (b"a", b"c/b", b"c/b/a", b"c/c"):
            m.get_line(p)
        got = m.get(b"c")
        assert got is not None and got.kind is Kind.SYMLINK, (window, span)
        assert m.get(b"b") is not None and m.get(b"c/a") is None


def _fenced(data: bytes) -> SortedManifest:
    """A searched manifest looked up through fences (a tiny stride: many)."""
    fences = fence_form.compute(data, len(data), _line_path)
    assert fences is not None
    assert len(data) < 400 or len(fences.offsets) > 2
    return SortedManifest(data, small=-1, fences=fences)


@pytest.mark.parametrize("form", ["canonical", "spaced", "escaped"])
@pytest.mark.parametrize("stride", [1, 48, 700])
def test_lookups_through_fences_find_what_a_dict_finds(
    form: str, stride: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fences (:mod:`snapws.layers.fences`) bracket each lookup: present and
    absent paths in any order, subtrees, and the fences' file form."""
    monkeypatch.setattr(fence_form, "STRIDE", stride)
    rng = random.Random(990 + stride + len(form))
    data, truth, pool = _random_manifest(rng, 500, form)
    m = _fenced(data)
    assert m._fences is not None
    again = fence_form.decode(m._fences.encode(), len(data))
    assert again is not None and again.paths == m._fences.paths
    assert list(again.offsets) == list(m._fences.offsets)
    assert fence_form.decode(m._fences.encode(), len(data) + 1) is None
    for order in ("sorted", "mostly", "random"):
        for p in _lookups(rng, pool, order):
            assert m.get(p) == truth.get(p), (order, p)
    for d in rng.sample([e.path for e in truth.values() if e.kind is Kind.DIR], 20):
        want = [e for e in truth.values() if e.path.startswith(d + b"/")] if d != b"." else None
        if want is not None:
            assert list(_fenced(data).below(d)) == want, d


def test_manifest_diffs_through_fences_equal_tree_diffs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random chains of the first test, every searched manifest looked
    up through fences."""
    import sys

    monkeypatch.setattr(fence_form, "STRIDE", 40)
    monkeypatch.setattr(sys.modules[__name__], "_searched", _fenced)
    test_manifest_diffs_equal_tree_diffs_on_random_chains(tmp_path)
    test_searched_manifest_finds_every_entry_and_subtree()


def test_fences_are_none_for_lines_out_of_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fence_form, "STRIDE", 1)
    data = encode_manifest([Entry(path=b".", kind=Kind.DIR), Entry(path=b"b", kind=Kind.FILE)])
    data += encode_manifest([Entry(path=b"a", kind=Kind.FILE)])
    assert fence_form.compute(data, len(data), _line_path) is None
