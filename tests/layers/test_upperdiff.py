"""diff_upper (U's nodes over manifests) gives what diff_views gives from
the layer trees, for free workspaces (U over HEAD's chain) and held ones (U
over an older chain, compared with a newer HEAD)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from layers.test_manifestdiff import Layer, _chain, _layer, _unshared_trees
from layers.test_merge import random_layer
from snapws.layers.diff import diff_views
from snapws.layers.entries import Node
from snapws.layers.scan import read_tree
from snapws.layers.upperdiff import UpperOver, diff_upper
from snapws.layers.view import ChainView, HashCache
from snapws.model import Kind


def _tree_diff(upper: bytes, lower: list[Layer], head: list[Layer]) -> list[object]:
    work = ChainView([upper, *[x[1] for x in lower]])
    dirs = [upper, *_unshared_trees(head, lower)]
    return list(diff_views(ChainView([x[1] for x in head]), work, dirs))


@pytest.mark.root
def test_upper_diffs_equal_tree_diffs_on_random_chains(tmp_path: Path) -> None:
    compared = changed = held = 0
    for it in range(5):
        rng = random.Random(9300 + it)
        root = tmp_path / f"s{it}"
        pool = [_layer(random_layer(rng, root / f"L{n}", n)) for n in range(7)]
        uppers = [os.fsencode(random_layer(rng, root / f"U{n}", 10 + n)) for n in range(3)]
        chains: list[list[Layer]] = [[]]
        for _ in range(5):
            chains.append([*rng.sample(pool[1:], rng.randrange(0, 4)), pool[0]])
        for upper in uppers:
            nodes = read_tree(upper)
            for lower in chains:
                for head in chains:
                    if head is not lower and rng.random() < 0.5:
                        continue  # every free pair, half the held ones
                    want = _tree_diff(upper, lower, head)
                    big = rng.random() < 0.5
                    got = diff_upper(nodes, _chain(lower, big), _chain(head, big), HashCache())
                    assert got == want, (it, len(lower), len(head))
                    compared += 1
                    changed += bool(want)
                    held += head is not lower
    assert compared > 100 and held > 50 and changed > compared // 2


def test_a_path_below_a_whiteout_or_opaque_directory_of_u_is_hidden(tmp_path: Path) -> None:
    upper = tmp_path / "U"
    (upper / "d" / "e").mkdir(parents=True)
    (upper / "f").write_text("a file where the chain may have a directory\n")
    nodes = {n.path: n for n in read_tree(os.fsencode(upper))}
    over = UpperOver(nodes.values(), _chain([], False))
    assert over.hides_below(b"f") and not over.hides_below(b"d") and not over.hides_below(b"d/e")
    assert over.locate(b"f/x") is None
    located = over.locate(b"d/e")
    assert located is nodes[b"d/e"] and nodes[b"d/e"].kind is Kind.DIR
    assert over.locate(b"d/zz") is None  # not in U, and the chain is empty


def test_hiding_is_found_without_recursion_in_a_tree_deeper_than_path_max(
    tmp_path: Path,
) -> None:
    """A path 10,000 levels below an opaque directory of U (a deep tree
    deleted and made again) is hidden; the lookup walks up iteratively
    (issue 13's depth: Python's recursion stops at about 1,000)."""
    st = os.lstat(tmp_path)
    nodes = [
        Node(b".", os.fsencode(tmp_path), st, Kind.DIR, {}, False, (), None),
        Node(b"top", os.fsencode(tmp_path), st, Kind.DIR, {}, True, (), None),
        Node(b"other", os.fsencode(tmp_path), st, Kind.DIR, {}, False, (), None),
    ]
    over = UpperOver(nodes, _chain([], False))
    deep = b"/".join([b"top", *[b"d"] * 10_000, b"f"])
    assert over.hides_below(deep) is True
    assert over.locate(deep) is None
    shown = b"/".join([b"other", *[b"d"] * 10_000, b"f"])
    assert over.hides_below(shown) is False
