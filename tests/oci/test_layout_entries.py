"""Imports read only what the layout owns: every layout entry (oci-layout,
index.json, blobs/, blobs/sha256/, each blob) must be a regular file or a
real directory beneath the layout. A symlink (to a file holding secrets),
a symlinked blobs/ directory, a FIFO (which would block a reader forever)
and a directory where a blob should be are refused with the bad-image exit
code, and no byte of anything outside the layout appears in the output."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import _clean_env

from snapws.errors import ExitCode

from .ocitools import f, make_layout, sha, tar_of

#: recognisable bytes of a file outside the layout (shaped like /etc/shadow)
SECRET = b"root:$6$SeCrEtHaSh$q9zZ:19999:0:99999:7:::\n"
MARKERS = ("SeCrEtHaSh", "99999", "19999")


def _layer() -> tuple[bytes, str]:
    blob = gzip.compress(tar_of([f("a", b"content")]), mtime=0)
    return blob, sha(blob)[7:]


def _import(tmp_path: Path, src: Path) -> subprocess.CompletedProcess[str]:
    """``snapws import SRC`` into a fresh store, killed after 60 s (a hang
    is a failure, not a stuck test run)."""
    return subprocess.run(
        [sys.executable, "-m", "snapws", "--store", str(tmp_path / "store"), "import", str(src)],
        cwd=tmp_path,
        env=_clean_env(None),
        capture_output=True,
        text=True,
        errors="surrogateescape",
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _symlinked_layer_blob(tmp_path: Path, layout: Path) -> None:
    _, hexd = _layer()
    blob = layout / "blobs" / "sha256" / hexd
    blob.unlink()
    blob.symlink_to(_secret(tmp_path))


def _symlinked_manifest_blob(tmp_path: Path, layout: Path) -> None:
    index = (layout / "index.json").read_text()
    hexd = index.split('"digest": "sha256:')[1][:64]
    blob = layout / "blobs" / "sha256" / hexd
    blob.unlink()
    blob.symlink_to(_secret(tmp_path))


def _symlinked_blobs_dir(tmp_path: Path, layout: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (layout / "blobs").rename(elsewhere)
    (layout / "blobs").symlink_to(elsewhere)


def _symlinked_sha256_dir(tmp_path: Path, layout: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (layout / "blobs" / "sha256").rename(elsewhere)
    (layout / "blobs" / "sha256").symlink_to(elsewhere)


def _symlinked_index(tmp_path: Path, layout: Path) -> None:
    real = tmp_path / "index-elsewhere.json"
    (layout / "index.json").rename(real)
    (layout / "index.json").symlink_to(real)


def _symlinked_oci_layout(tmp_path: Path, layout: Path) -> None:
    (layout / "oci-layout").unlink()
    (layout / "oci-layout").symlink_to(_secret(tmp_path))


def _fifo_layer_blob(tmp_path: Path, layout: Path) -> None:
    _, hexd = _layer()
    blob = layout / "blobs" / "sha256" / hexd
    blob.unlink()
    os.mkfifo(blob)


def _fifo_index(tmp_path: Path, layout: Path) -> None:
    (layout / "index.json").unlink()
    os.mkfifo(layout / "index.json")


def _directory_blob(tmp_path: Path, layout: Path) -> None:
    _, hexd = _layer()
    blob = layout / "blobs" / "sha256" / hexd
    blob.unlink()
    blob.mkdir()
    (blob / "x").write_bytes(b"x")


CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "symlinked-layer-blob": (_symlinked_layer_blob, "is a symlink"),
    "symlinked-manifest-blob": (_symlinked_manifest_blob, "is a symlink"),
    "symlinked-blobs-dir": (_symlinked_blobs_dir, "blobs in the image is a symlink"),
    "symlinked-sha256-dir": (_symlinked_sha256_dir, "blobs/sha256 in the image is a symlink"),
    "symlinked-index": (_symlinked_index, "index.json in the image is a symlink"),
    "symlinked-oci-layout": (_symlinked_oci_layout, "oci-layout in the image is a symlink"),
    "fifo-layer-blob": (_fifo_layer_blob, "is a FIFO"),
    "fifo-index": (_fifo_index, "index.json in the image is a FIFO"),
    "directory-blob": (_directory_blob, "is a directory"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layout_entry_that_is_not_a_regular_file_is_refused(tmp_path: Path, case: str) -> None:
    mutate, expect = CASES[case]
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of([f("a", b"content")])])
    mutate(tmp_path, layout)
    proc = _import(tmp_path, layout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.BAD_IMAGE, out
    assert expect in out, out
    for marker in MARKERS:
        assert marker not in out, out
    store = tmp_path / "store"
    if (store / "snapshots").is_dir():
        assert os.listdir(store / "snapshots") == []


def test_forged_layer_blob_is_refused_without_quoting_it(tmp_path: Path) -> None:
    """A regular blob whose bytes are not the ones its digest names (here the
    secret's) is refused as not matching its descriptor: the tar parser's
    complaint, which would quote the bytes, is not shown."""
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of([f("a", b"content")])], compress=lambda b: b)
    blob = layout / "blobs" / "sha256" / sha(tar_of([f("a", b"content")]))[7:]
    blob.write_bytes(SECRET * 200)  # not a tar: parsed before the digest is known
    proc = _import(tmp_path, layout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.BAD_IMAGE, out
    assert "does not match its descriptor" in out, out
    for marker in MARKERS:
        assert marker not in out, out
