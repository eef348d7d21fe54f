"""Exports that real tools read, and imports that give the snapshot back:
umoci unpacks an export into the checkout of REV (modes, owners, mtimes,
xattrs, hardlinks, devices); skopeo copies it to another layout or a docker
archive, and importing those gives the same snapshot; digests are
reproducible; zstd works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import State, state_diff, tree_state
from ops.worktree.test_roundtrip import SMALL_SPARSE, build_everything, hardlinked, sparse_ok

from snapws.model import decode_manifest


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    proc = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return bundle / "rootfs"


def skopeo_copy(src: str, dst: str) -> None:
    proc = subprocess.run(
        ["skopeo", "copy", "--quiet", src, dst], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def same_tree(expected: dict[bytes, State], root: Path, when: str) -> None:
    problems = state_diff(expected, tree_state(root))
    assert problems == [], f"{when}:\n" + "\n".join(problems)


def test_every_kind_survives_umoci_skopeo_and_import(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = make_workspace()
    build_everything(ws.path, SMALL_SPARSE)
    os.setxattr(ws.path, "user.rootnote", b"root")
    os.chmod(ws.path, 0o750)
    sid = ws.commit("everything")
    expected = tree_state(ws.path)

    layout = tmp_path / "image"
    out = ws.json("export", "HEAD", "-o", str(layout), "--tag", "v1")
    assert out["id"] == sid and out["layers"] == 2  # init's empty base + everything
    rootfs = umoci_unpack(layout, "v1", tmp_path / "bundle")
    same_tree(expected, rootfs, "umoci unpack")
    assert hardlinked(rootfs)  # (umoci writes the holes of sparse files out: no sparse_ok)

    # skopeo: to another layout (same snapshot back) and to a docker archive
    skopeo_copy(f"oci:{layout}:v1", f"oci:{tmp_path / 'copy'}:v2")
    skopeo_copy(f"oci:{layout}:v1", f"docker-archive:{tmp_path / 'docker.tar'}:snap/ws:v3")
    outside = ws.outside
    for n, src in enumerate(
        [str(layout), f"oci:{tmp_path / 'copy'}:v2", str(tmp_path / "docker.tar")]
    ):
        store = tmp_path / f"store{n}"
        got = run_cli("--store", store, "import", src, cwd=outside).stdout.strip()
        assert got == sid, src
        target = tmp_path / f"ws{n}"
        run_cli("--store", store, "init", "--from", src, target, cwd=outside)
        same_tree(expected, target, f"init --from {src}")
        assert hardlinked(target)
        sparse_ok(target, SMALL_SPARSE)  # import makes the holes again
        other = Workspace(target, store, outside)
        assert other.porcelain() == []
        assert other.head() == sid


def test_deletions_and_replaced_directories_unpack_right(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = make_workspace(
        spec={
            "keep": "k",
            "gone": "g",
            "dir": {"a": "1", "sub": {"b": "2"}},
            "f2d": "file becoming a directory",
            "d2f": {"y": "directory becoming a file"},
            "deep": {"er": {"x": "1", "y": "2"}},
        }
    )
    p = ws.path
    (p / "gone").unlink()
    shutil.rmtree(p / "dir")
    (p / "dir").mkdir()
    (p / "dir" / "new").write_text("replaced")
    (p / "f2d").unlink()
    (p / "f2d").mkdir()
    (p / "f2d" / "z").write_text("z")
    shutil.rmtree(p / "d2f")
    (p / "d2f").write_text("now a file")
    (p / "deep" / "er" / "x").unlink()
    ws.commit("two")
    expected = tree_state(p)
    top = ws.json("show")["layer"]
    entries = {
        e.path: e for e in decode_manifest((ws.store / "layers" / top / "manifest").read_bytes())
    }
    assert entries[b"dir"].opaque  # overlay made the replaced directory opaque
    layout = tmp_path / "image.tar"
    ws.run("export", "HEAD", "-o", str(layout))
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xf", str(layout), "-C", str(unpacked)], check=True)
    rootfs = umoci_unpack(unpacked, "latest", tmp_path / "bundle")
    same_tree(expected, rootfs, "umoci unpack of a chain with deletions")
    assert sorted(os.listdir(rootfs / "dir")) == ["new"]


def test_exports_are_reproducible(make_workspace: WorkspaceFactory, tmp_path: Path) -> None:
    ws = make_workspace(spec={"a": "1", "d": {"b": "2"}})
    (ws.path / "c").write_text("3")
    ws.commit("two")
    first = ws.json("export", "HEAD", "-o", str(tmp_path / "one.tar"))
    shutil.rmtree(ws.store / "oci")  # no cache: compress again
    second = ws.json("export", "HEAD", "-o", str(tmp_path / "two.tar"))
    third = ws.json("export", "HEAD", "-o", str(tmp_path / "dir"))
    assert first["manifest"] == second["manifest"] == third["manifest"]
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    index = json.loads((tmp_path / "dir" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == first["manifest"]


def test_zstd_round_trip(make_workspace: WorkspaceFactory, tmp_path: Path) -> None:
    ws = make_workspace(spec={"a": "zstd " * 1000, "d": {"b": "2"}})
    sid = ws.head()
    layout = tmp_path / "z"
    ws.run("export", "HEAD", "-o", str(layout), "--compression", "zstd")
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_text())
    assert {x["mediaType"] for x in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    outside = ws.outside
    got = run_cli("--store", tmp_path / "s2", "import", layout, cwd=outside).stdout.strip()
    assert got == sid
    target = tmp_path / "ws2"
    run_cli("--store", tmp_path / "s2", "init", "--from", layout, target, cwd=outside)
    same_tree(tree_state(ws.path), target, "zstd import")
