"""Overlay metadata cannot be planted (issue 15, item 5), as root on real mounts.

Someone who can write into the store's layer trees (or a damaged disk) sets an
overlayfs attribute snapws never writes. A ``redirect`` on a directory makes a
mount with ``redirect_dir=off`` show another directory's content on kernels
built with ``redirect_always_follow``; snapws mounts with
``redirect_dir=nofollow``, so the kernel refuses the lookup instead, and
``verify`` names the attribute. verify also compares directory mtimes, which
the manifest records.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

STORE_CORRUPT = 11


def _layer_holding(ws: Workspace, rel: str) -> Path:
    """The tree of the one layer that holds ``rel``."""
    trees = [p / "tree" for p in sorted((ws.store / "layers").iterdir())]
    found = [t for t in trees if os.path.lexists(t / rel)]
    assert len(found) == 1, found
    return found[0]


def _verify(ws: Workspace) -> tuple[int, list[dict[str, Any]]]:
    r = run_cli("--store", ws.store, "verify", "--json", cwd=ws.outside, check=False)
    assert r.returncode in (0, STORE_CORRUPT), r.stderr
    return r.returncode, json.loads(r.stdout)["problems"]


def _remount(ws: Workspace) -> None:
    ws.run("umount")
    run_cli("--store", ws.store, "mount", ws.path, cwd=ws.outside)


def _two_layers(make_workspace: WorkspaceFactory) -> Workspace:
    """Layer 1 holds ``real/secret.txt``; layer 2 adds the directory ``shown``."""
    ws = make_workspace(spec={"real": {"secret.txt": "not yours\n"}})
    (ws.path / "shown").mkdir()
    (ws.path / "shown" / "g").write_text("mine\n")
    ws.commit("shown")
    return ws


def test_planted_redirect_is_reported_and_never_followed(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = _two_layers(make_workspace)
    assert _verify(ws) == (0, [])
    ws.run("umount")
    tree = _layer_holding(ws, "shown")
    st = os.lstat(tree / "shown")
    os.setxattr(tree / "shown", "trusted.overlay.redirect", b"/real")
    os.utime(tree / "shown", ns=(st.st_atime_ns, st.st_mtime_ns))
    run_cli("--store", ws.store, "mount", ws.path, cwd=ws.outside)

    # the kernel refuses the redirect (nofollow) rather than show real/ there
    try:
        names = sorted(os.listdir(ws.path / "shown"))
    except PermissionError as e:
        assert e.errno == errno.EPERM
    else:
        assert names == ["g"]
    assert not os.path.lexists(ws.path / "shown" / "secret.txt")

    code, problems = _verify(ws)
    assert code == STORE_CORRUPT
    assert [(p["kind"], p["path"], p["what"]) for p in problems] == [
        ("overlay-xattr", "shown", ["trusted.overlay.redirect"])
    ]
    assert "a mount would act on it" in problems[0]["message"]


@pytest.mark.parametrize(
    ("rel", "name", "value"),
    [
        ("shown", "trusted.overlay.redirect", b"/real"),
        ("shown", "trusted.overlay.opaque", b"x"),  # "look for xattr whiteouts here"
        ("shown/g", "trusted.overlay.whiteout", b""),  # a file read as a whiteout
        ("shown/g", "trusted.overlay.metacopy", b""),
        ("shown/g", "trusted.overlay.origin", b"\x00\xfb\x1d"),
        ("shown", "user.overlay.opaque", b"y"),  # the other form's marker
        ("shown", "user.overlay.redirect", b"/real"),
    ],
)
def test_verify_reports_every_overlay_xattr_snapws_never_writes(
    make_workspace: WorkspaceFactory, rel: str, name: str, value: bytes
) -> None:
    ws = _two_layers(make_workspace)
    ws.run("umount")
    tree = _layer_holding(ws, "shown")
    st = os.lstat(tree / rel)
    os.setxattr(tree / rel, name, value)
    os.utime(tree / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, problems = _verify(ws)
    assert code == STORE_CORRUPT
    expect = [("overlay-xattr", rel, [name])]
    if name == "user.overlay.opaque":  # snapws's own reader takes it for a marker too
        expect.insert(0, ("metadata", rel, ["opaque"]))
    assert [(p["kind"], p["path"], p["what"]) for p in problems] == expect


def test_the_opaque_marker_snapws_writes_passes(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"d": {"old": "1"}})
    os.unlink(ws.path / "d" / "old")
    os.rmdir(ws.path / "d")
    (ws.path / "d").mkdir()
    (ws.path / "d" / "new").write_text("2\n")
    ws.commit("replace d")
    tree = _layer_holding(ws, "d/new")
    assert os.getxattr(tree / "d", "trusted.overlay.opaque") == b"y"
    assert _verify(ws) == (0, [])


def test_changed_directory_mtime_is_reported(make_workspace: WorkspaceFactory) -> None:
    ws = _two_layers(make_workspace)
    ws.run("umount")
    tree = _layer_holding(ws, "shown")
    os.utime(tree / "shown", ns=(0, 1_000_000_000))
    code, problems = _verify(ws)
    assert code == STORE_CORRUPT
    assert [(p["kind"], p["path"], p["what"]) for p in problems] == [
        ("metadata", "shown", ["mtime"])
    ]
    assert "mtime 1000000000" in problems[0]["message"]


def test_commit_refuses_an_opaque_marker_of_the_other_form(
    make_workspace: WorkspaceFactory,
) -> None:
    """A trusted-form mount ignores ``user.overlay.opaque``, which anyone who
    can write the workspace can set: recording the directory as opaque would
    make the layer hide what the mount showed. commit refuses, changes nothing."""
    ws = make_workspace(spec={"dir": {"kept.txt": "kept\n"}})
    head = ws.log_ids()[0]
    (ws.path / "dir" / "new.txt").write_text("new\n")
    os.setxattr(ws.path / "dir", "user.overlay.opaque", b"y")
    proc = ws.run("commit", "-m", "planted", check=False)
    assert proc.returncode == 9, proc.stderr  # LayerRejectedError: UNSUPPORTED
    assert "user.overlay.opaque" in proc.stderr and "setfattr -x" in proc.stderr
    assert ws.log_ids()[0] == head
    assert sorted(os.listdir(ws.path / "dir")) == ["kept.txt", "new.txt"]
    os.removexattr(ws.path / "dir", "user.overlay.opaque")
    ws.commit("clean")
    ws.run("checkout", "HEAD~1")
    ws.run("checkout", "main")
    assert (ws.path / "dir" / "kept.txt").read_text() == "kept\n"
