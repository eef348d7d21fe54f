"""Entry names of a hostile layer tar, checked from their bytes alone."""

from __future__ import annotations

import pytest

from snapws.errors import BadImageError
from snapws.model import ROOT
from snapws.oci import tarformat as tf
from snapws.oci.tarnames import escapes, normalize


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        (b"a/b", b"a/b"),
        (b"a/b/", b"a/b"),
        (b"./a//b/./c", b"a/b/c"),
        (b"/", ROOT),
        (b"./", ROOT),
        (b"/./", ROOT),
        (b"x" * tf.MAX_COMPONENT, b"x" * tf.MAX_COMPONENT),
    ],
)
def test_names_in_the_layer(name: bytes, rel: bytes) -> None:
    assert normalize(name, "layer 1") == rel


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (b"/etc/passwd", "absolute path"),
        (b"", "empty name"),
        (b"a/../../b", "climbs out"),
        (b"./..", "climbs out"),
        (b"/..", "absolute path"),
        (b"a/" + b"x" * (tf.MAX_COMPONENT + 1), "longer than 255"),
        (b"./a/" + b"x" * (tf.MAX_COMPONENT + 1), "longer than 255"),
    ],
)
def test_names_leaving_the_layer_are_refused(name: bytes, why: str) -> None:
    with pytest.raises(BadImageError, match=f"^layer 1: .*{why}"):
        normalize(name, "layer 1")


@pytest.mark.parametrize(
    ("link", "target", "out"),
    [
        (b"a/l", b"../x", False),
        (b"a/l", b"../../x", True),
        (b"l", b"..", True),
        (b"a/b/l", b"./../.././x", False),
        (b"a/l", b"/anywhere/../..", False),  # absolute: resolved in the container
        (b"a/l", b"b/../../../x", True),
    ],
)
def test_symlinks_climbing_out(link: bytes, target: bytes, out: bool) -> None:
    assert escapes(link, target) is out
