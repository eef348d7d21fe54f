"""An import and Python's cyclic garbage collector: the collector is off
while an image is imported (each full collection would walk every entry
made so far), and the extractor's tables are freed by reference counting
alone once it is done (no cycle leaves them to a collection)."""

from __future__ import annotations

import gc
import io
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapws.oci import importer
from snapws.oci.tarextractor import LayerExtractor
from snapws.oci.tarformat import TarReader
from snapws.store.store import Store

from .ocitools import d, f, import_layout, make_layout, tar_of

MEMBERS = [d("a"), *(f(f"a/f{i}", b"x" * i) for i in range(1, 30))]


@pytest.fixture
def collector_on() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        (gc.enable if enabled else gc.disable)()


@pytest.mark.usefixtures("collector_on")
@pytest.mark.parametrize("before", [True, False])
def test_the_collector_is_off_during_an_import_and_as_it_was_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: bool
) -> None:
    seen: list[bool] = []
    real = importer.extract_layer

    def extract(*a: Any, **kw: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*a, **kw)

    monkeypatch.setattr(importer, "extract_layer", extract)
    make_layout(tmp_path / "layout", [tar_of(MEMBERS)])
    if not before:
        gc.disable()
    import_layout(Store.create(tmp_path / "store"), tmp_path / "layout")
    assert seen == [False]
    assert gc.isenabled() is before


@pytest.mark.usefixtures("collector_on")
@pytest.mark.parametrize("helper_after", [0, None])  # with the helper process, without
def test_an_extractor_is_freed_without_a_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper_after: int | None
) -> None:
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", helper_after)
    tree = tmp_path / "tree"
    tree.mkdir()
    reader = TarReader(io.BytesIO(tar_of(MEMBERS)).read, "layer 1")
    gc.disable()
    x = LayerExtractor(tree, None, "layer 1", "trusted.overlay.opaque")
    try:
        x.extract(reader)
    finally:
        x.close()
    assert len(x.entries(1)) == len(MEMBERS) + 1  # (and the root)
    gone = weakref.ref(x)
    del x
    assert gone() is None
