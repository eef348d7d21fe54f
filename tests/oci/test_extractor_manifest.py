"""The extractor makes each file's manifest line with its entry, while the
tar is read; the manifest it gives at the end is ``encode_manifest`` of
its entries, byte for byte (the layer id hashes it), whoever wrote the
files (the extractor, its helper process) and whatever got a hardlink
later (its line is made again)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from snapws.model import encode_manifest
from snapws.oci.tarextractor import LayerExtractor
from snapws.oci.tarformat import TarReader

from .ocitools import Member, d, f, tar_of

MEMBERS = [
    d("a"),
    *(f(f"a/f{i}", b"x" * i, mtime=1_700_000_000 + i) for i in range(1, 30)),
    f('a/\u00e9t\u00e9 \\ "q"', b"quoted\n"),  # quoted in JSON
    f(b"a/raw\xff", b"not utf-8\n"),
    f("a/exec", b"#!/bin/sh\n", mode=0o755),
    Member("a/link", tarfile.LNKTYPE, linkname="a/f7"),  # f7's line is made again
    Member("sym", tarfile.SYMTYPE, linkname="a/f3"),
    f("b/deep/er", b"implied directories\n"),
]


@pytest.mark.parametrize("helper_after", [0, 5, None])
def test_the_manifest_is_encode_manifest_of_the_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper_after: int | None
) -> None:
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", helper_after)
    tree = tmp_path / "tree"
    tree.mkdir()
    reader = TarReader(io.BytesIO(tar_of(MEMBERS)).read, "layer 1")
    x = LayerExtractor(tree, None, "layer 1", "trusted.overlay.opaque")
    try:
        x.extract(reader)
    finally:
        x.close()
    entries = x.entries(1)
    assert b"a/f7" not in x.files.lines  # dropped when a/link was made
    assert len(x.files.lines) >= 25  # the rest made while unpacking
    assert x.manifest(entries) == encode_manifest(entries)
    linked = {e.path: e.link for e in entries if e.link is not None}
    assert linked == {b"a/link": b"a/f7"}
