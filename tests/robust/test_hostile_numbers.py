"""Hostile numbers and decompression bombs in image tars: every numeric
field of a tar header is range-checked (a PAX uid of 10^19 is BadImageError,
exit 16, never an OverflowError), and one import reads at most a budget of
entries and bytes however well its layers compress."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from snapws.errors import BadImageError, ExitCode
from snapws.oci import tarformat as tf
from snapws.store.store import Store
from tests.oci.ocitools import d, f, import_layout, make_layout, store_listing, tar_of


def _pax_tar(pax: dict[str, str], name: str = "x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = 1
        info.pax_headers = pax
        t.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


HUGE = {
    "uid": {"uid": "99999999999999999999"},
    "gid": {"gid": "18446744073709551616"},
    "uid -1": {"uid": "4294967295"},
    "mtime": {"mtime": "9999999999999999999.5"},
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_numbers_are_refused(tmp_path: Path, case: str) -> None:
    store = Store.create(tmp_path / "store")
    layout = tmp_path / "layout"
    make_layout(layout, [_pax_tar(HUGE[case])])
    before = store_listing(store)
    with pytest.raises(BadImageError):
        import_layout(store, layout)
    assert store_listing(store) == before


def test_huge_uid_through_the_cli(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [_pax_tar(HUGE["uid"])])
    r = subprocess.run(
        [sys.executable, "-m", "snapws", "--store", tmp_path / "store", "import", layout],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == int(ExitCode.BAD_IMAGE), r.stderr
    assert "Traceback" not in r.stderr and "uid" in r.stderr


def test_entry_budget_spans_every_layer(tmp_path: Path) -> None:
    """A gzip bomb of empty files: a few KiB compressed, refused once the
    import's entry budget is spent, across layers."""
    many = tar_of([d("a"), *(f(f"a/{i}") for i in range(3000))])
    assert len(gzip.compress(many)) < len(many) // 20
    reader = tf.TarReader(io.BytesIO(many).read, "bomb", budget=tf.ImportBudget(entries=2000))
    with pytest.raises(BadImageError, match="more than 2000 entries"):
        for _ in reader.entries():
            pass
    budget = tf.ImportBudget(entries=4000)
    for _ in tf.TarReader(io.BytesIO(many).read, "layer 1", budget=budget).entries():
        pass
    with pytest.raises(BadImageError, match="entries in one import"):
        for _ in tf.TarReader(io.BytesIO(many).read, "layer 2", budget=budget).entries():
            pass


def test_byte_budget_counts_claimed_sizes(tmp_path: Path) -> None:
    """Sizes count from headers, before any data is read or written."""
    data = tar_of([f("big", b"\0" * (1 << 20))])
    reader = tf.TarReader(io.BytesIO(data).read, "bomb", budget=tf.ImportBudget(nbytes=1 << 19))
    with pytest.raises(BadImageError, match="bytes of uncompressed tar"):
        next(reader.entries())


def test_import_has_a_default_budget() -> None:
    budget = tf.TarReader(io.BytesIO(b"").read, "x").budget
    assert budget.max_entries == tf.MAX_IMPORT_ENTRIES
    assert budget.max_bytes == tf.MAX_IMPORT_BYTES
