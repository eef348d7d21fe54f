"""Overlay attributes in both forms: trusted.* (stores made by root) and
user.* (stores made for rootless ``userxattr`` mounts).

Readers accept both forms and never record either as a user attribute;
writers use the store's form; owner ids seen inside a rootless namespace are
recorded as the real ids. The rootless end-to-end tests are in
tests/backends/test_rootless.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import StoreCorruptError
from snapws.layers import entries
from snapws.layers.entries import has_opaque_marker, host_ids, ns_ids, read_node
from snapws.layers.merge import RunLayer, build_merged_tree
from snapws.layers.scan import entries_of, read_tree, strip_overlay_xattrs
from snapws.layers.view import ChainView
from snapws.model import Entry, Kind, decode_manifest
from snapws.mounts.mounter import detach, mount_overlay
from snapws.mounts.plan import MountPlan
from snapws.store.store import MARKER, Store

pytestmark = pytest.mark.root  # trusted.* attributes need root


def _mk(root: Path, spec: dict[str, str | None]) -> None:
    """Files (str) and directories (None) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in spec.items():
        p = root / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)


@pytest.mark.parametrize("form", ["trusted", "user"])
def test_opaque_markers_of_either_form_hide_older_layers(tmp_path: Path, form: str) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _mk(lower, {"d/old": "old", "d/sub/x": "x"})
    _mk(upper, {"d/new": "new"})
    os.setxattr(upper / "d", f"{form}.overlay.opaque", b"y")
    os.setxattr(upper / "d", f"{form}.overlay.origin", b"bookkeeping")
    os.setxattr(upper / "d", "user.mine", b"kept")
    assert has_opaque_marker(os.fsencode(upper / "d"))
    node = read_node(b"d", os.fsencode(upper / "d"))
    assert node.opaque and node.xattrs == {"user.mine": b"kept"}
    view = ChainView([upper, lower])
    assert list(view.listdir(b"d")) == [b"new"]
    assert view.locate(b"d/old") is None


def test_opaque_means_y_only(tmp_path: Path) -> None:
    _mk(tmp_path, {"d": None})
    os.setxattr(tmp_path / "d", "user.overlay.opaque", b"x")  # "x": not opaque
    assert not has_opaque_marker(os.fsencode(tmp_path / "d"))
    assert not read_node(b"d", os.fsencode(tmp_path / "d")).opaque


def test_strip_keeps_only_the_opaque_marker_of_the_stores_form(tmp_path: Path) -> None:
    _mk(tmp_path, {"d": None, "e": None, "f": "x"})
    os.setxattr(tmp_path / "d", "trusted.overlay.opaque", b"y")
    os.setxattr(tmp_path / "d", "user.overlay.impure", b"y")
    os.setxattr(tmp_path / "e", "user.overlay.opaque", b"y")
    os.setxattr(tmp_path / "f", "user.overlay.origin", b"o")
    os.setxattr(tmp_path / "f", "user.other", b"u")
    nodes = read_tree(os.fsencode(tmp_path))
    strip_overlay_xattrs(nodes)  # no form: opaque markers stay as they are
    assert os.listxattr(tmp_path / "d") == ["trusted.overlay.opaque"]
    assert os.listxattr(tmp_path / "e") == ["user.overlay.opaque"]
    assert os.listxattr(tmp_path / "f") == ["user.other"]
    strip_overlay_xattrs(read_tree(os.fsencode(tmp_path)), "user")  # into the user form
    assert os.listxattr(tmp_path / "d") == ["user.overlay.opaque"]
    assert os.listxattr(tmp_path / "e") == ["user.overlay.opaque"]


@pytest.mark.parametrize("form", ["trusted", "user"])
def test_merged_layers_get_the_stores_marker_and_a_userxattr_mount_honours_it(
    tmp_path: Path, form: str
) -> None:
    bottom, mid, top = tmp_path / "l0", tmp_path / "l1", tmp_path / "l2"
    _mk(bottom, {"d/old": "old", "keep": "k"})
    _mk(mid, {"d/mid": "m"})
    os.setxattr(mid / "d", f"{form}.overlay.opaque", b"y")
    _mk(top, {"d/top": "t"})
    run = [RunLayer(os.fsencode(t), entries_of(read_tree(os.fsencode(t)))) for t in (top, mid)]
    dest = tmp_path / "merged"
    manifest = build_merged_tree(run, os.fsencode(dest), bottom=False, xattr_form=form)
    (d,) = [e for e in decode_manifest(manifest) if e.path == b"d"]
    assert d.opaque
    other = "user" if form == "trusted" else "trusted"
    assert os.getxattr(dest / "d", f"{form}.overlay.opaque") == b"y"
    assert f"{other}.overlay.opaque" not in os.listxattr(dest / "d")
    target = tmp_path / "mnt"
    target.mkdir()
    mount_overlay(MountPlan(target, lowers=(dest, bottom), userxattr=form == "user"))
    try:
        assert sorted(os.listdir(target / "d")) == ["mid", "top"]
        assert (target / "keep").read_text() == "k"
    finally:
        detach(target)


@pytest.fixture
def namespace_owner() -> Iterator[None]:
    """Pretend to be inside a rootless namespace of uid/gid 1234/2345."""
    entries.set_namespace_owner(1234, 2345)
    try:
        yield
    finally:
        entries._namespace_owner = None


def test_owner_ids_are_recorded_as_the_real_ids(tmp_path: Path, namespace_owner: None) -> None:
    assert host_ids(0, 0) == (1234, 2345)
    assert host_ids(65534, 7) == (65534, 7)  # unmapped ids stay as seen
    assert ns_ids(1234, 2345) == (0, 0)
    assert ns_ids(99, 98) == (99, 98)
    f = tmp_path / "f"
    f.write_text("x")
    os.chown(f, 0, 0)
    (e,) = entries_of([read_node(b"f", os.fsencode(f))])
    assert (e.uid, e.gid) == (1234, 2345)
    # and written back (merge: directories) as uid 0 of the namespace
    manifest_dir = Entry(path=b".", kind=Kind.DIR, mode=0o755, uid=1234, gid=2345)
    run = [RunLayer(os.fsencode(tmp_path / "l"), [manifest_dir])]
    (tmp_path / "l").mkdir()
    build_merged_tree(run, os.fsencode(tmp_path / "m"), bottom=True)
    st = os.stat(tmp_path / "m")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_store_records_its_form(tmp_path: Path) -> None:
    made = Store.create(tmp_path / "root-store")
    assert made.xattr_form == "trusted"  # made by root on the host
    assert json.loads((tmp_path / "root-store" / MARKER).read_bytes())["xattrs"] == "trusted"
    user = Store.create(tmp_path / "user-store", "user")
    assert Store.open(tmp_path / "user-store").xattr_form == "user" == user.xattr_form
    assert Store.create(tmp_path / "user-store").xattr_form == "user"  # existing: kept
    (tmp_path / "user-store" / MARKER).write_text('{"format": 1}\n')  # an older store
    assert Store.open(tmp_path / "user-store").xattr_form == "trusted"
    (tmp_path / "user-store" / MARKER).write_text('{"format": 1, "xattrs": "odd"}\n')
    with pytest.raises(StoreCorruptError):
        Store.open(tmp_path / "user-store")
    with pytest.raises(ValueError):
        Store.create(tmp_path / "bad", "odd")
