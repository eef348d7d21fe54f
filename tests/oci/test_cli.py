"""``snapws export``, ``import`` and ``init --from`` from the command line:
outputs, errors and their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import tree_state

from .ocitools import f, make_layout, tar_of


def test_export_and_import_without_a_workspace(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = make_workspace(spec={"a": "1"}, branch="trunk")
    sid = ws.head()
    out = ws.outside
    layout = tmp_path / "layout"
    # --store alone (no workspace around the current directory), a branch name
    res = run_cli("--store", ws.store, "export", "trunk", "-o", layout, "--json", cwd=out)
    exported = json.loads(res.stdout)
    assert exported["id"] == sid and exported["tag"] == "latest"
    assert exported["output"] == str(layout)
    # a second image in the same layout, under another tag
    res = run_cli("--store", ws.store, "export", sid[:8], "-o", layout, "--tag", "v2", cwd=out)
    assert f"Exported snapshot {sid[:12]} to {layout} (tag v2): 1 layer," in res.stdout
    index = json.loads((layout / "index.json").read_text())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == ["latest", "v2"]
    # import into a new store, naming a tag; several images: --ref chooses
    other = tmp_path / "other-store"
    res = run_cli("--store", other, "import", layout, "--tag", "got", cwd=out, check=False)
    assert res.returncode == 4 and "holds 2 images" in res.stderr and "latest, v2" in res.stderr
    res = run_cli("--store", other, "import", layout, "--ref", "v2", "--tag", "got", cwd=out)
    assert res.stdout == sid + "\n"
    assert "as tag got: 1 layers" in res.stderr
    res = run_cli("--store", other, "import", layout, "--ref", "v2", "--json", cwd=out)
    assert json.loads(res.stdout) == {
        "version": 1,
        "id": sid,
        "source": f"{layout}:v2",
        "layers": 1,
        "branch": None,
        "tag": None,
    }
    # a relative SRC is relative to -C DIR, as other paths are
    res = run_cli(
        "-C", layout.parent, "--store", other, "import", f"oci:{layout.name}:latest", cwd=out
    )
    assert res.stdout == sid + "\n"
    # the tag exists now: another snapshot may not take its name
    make_layout(tmp_path / "foreign", [tar_of([f("x", b"y")])])
    res = run_cli(
        "--store", other, "import", tmp_path / "foreign", "--tag", "got", cwd=out, check=False
    )
    assert res.returncode == 8 and "already exists" in res.stderr


def test_errors_and_exit_codes(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    out = ws.outside
    # outside a workspace, without --store
    res = run_cli("export", "HEAD", "-o", tmp_path / "x", cwd=out, check=False)
    assert res.returncode == 3
    # a hostile image: exit 16, with a hint
    make_layout(tmp_path / "evil", [tar_of([f("../../evil", b"x")])])
    res = ws.run("import", tmp_path / "evil", check=False)
    assert res.returncode == 16
    assert "snapws: error: layer 1 (sha256:" in res.stderr and "climbs out" in res.stderr
    assert "hint: nothing was imported" in res.stderr
    # not an image at all
    (tmp_path / "plain").mkdir()
    res = ws.run("import", tmp_path / "plain", check=False)
    assert res.returncode == 16 and "neither an OCI image layout nor a docker archive" in res.stderr
    # export into a directory that holds other things
    (tmp_path / "plain" / "file").write_text("x")
    res = ws.run("export", "HEAD", "-o", tmp_path / "plain", check=False)
    assert res.returncode == 12 and "not an OCI image layout" in res.stderr
    # a bad tag
    res = ws.run("export", "HEAD", "-o", tmp_path / "t", "--tag", "no spaces", check=False)
    assert res.returncode == 8
    # init --from into a directory that is not empty
    res = run_cli(
        "--store",
        ws.store,
        "init",
        "--from",
        tmp_path / "evil",
        tmp_path / "plain",
        cwd=out,
        check=False,
    )
    assert res.returncode == 12 and "is not empty" in res.stderr


def test_zstd_without_zstandard_says_how_to_get_it(workspace: Workspace, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "zstandard").mkdir(parents=True)
    (fake / "zstandard" / "__init__.py").write_text("raise ImportError('not installed')\n")
    res = workspace.run(
        "export",
        "HEAD",
        "-o",
        tmp_path / "z",
        "--compression",
        "zstd",
        check=False,
        env={"PYTHONPATH": str(fake)},
    )
    assert res.returncode == 9
    assert "zstd needs the Python package zstandard" in res.stderr
    assert "pip install 'snapws[zstd]'" in res.stderr
    assert not (tmp_path / "z").exists()


def test_init_from_a_foreign_image(tmp_path: Path, workspace: Workspace) -> None:
    layout = tmp_path / "rootfs"
    make_layout(
        layout,
        [
            tar_of([f("etc/os-release", b"ID=test\n")]),
            tar_of([f("etc/.wh.os-release"), f("etc/motd", b"hi\n")]),
        ],
    )
    target = tmp_path / "fromimage"
    res = run_cli(
        "--store",
        workspace.store,
        "init",
        "--from",
        layout,
        target,
        "-b",
        "img",
        "--json",
        cwd=workspace.outside,
    )
    info = json.loads(res.stdout)
    assert info["branch"] == "img" and info["workspace"] == str(target)
    assert sorted(p.name for p in (target / "etc").iterdir()) == ["motd"]
    ws2 = Workspace(target, workspace.store, workspace.outside)
    log = ws2.json("log")["snapshots"]
    config = json.loads((layout / "index.json").read_text())  # the image's id: its config's
    manifest = layout / "blobs" / "sha256" / config["manifests"][0]["digest"][7:]
    image_id = json.loads(manifest.read_text())["config"]["digest"][7:19]
    assert [e["message"] for e in log] == [f"import image {image_id}"]
    (target / "etc" / "motd").write_text("changed\n")
    ws2.commit("on top of an image")
    assert ws2.porcelain() == []


@pytest.mark.parametrize("backend", ["fuse", "plain"])
def test_init_from_with_other_backends(
    tmp_path: Path, make_workspace: WorkspaceFactory, backend: str
) -> None:
    """init --from makes a workspace of the chosen backend on the very
    snapshot exported (same id), showing its tree; commits go on top."""
    ws = make_workspace(spec={"d": {"a": "1", "b": "2"}, "top": "3"})
    (ws.path / "d" / "a").unlink()
    ws.commit("second")
    layout = tmp_path / "layout"
    run_cli("export", "HEAD", "-o", layout, cwd=ws.path)
    target = tmp_path / f"on-{backend}" / "ws"  # its store: .snapws beside it
    store = target.parent / ".snapws"
    res = run_cli("init", "--from", layout, target, "--backend", backend, "--json", cwd=ws.outside)
    info = json.loads(res.stdout)
    assert (info["backend"], info["id"]) == (backend, ws.head())
    assert tree_state(target) == tree_state(ws.path)
    ws2 = Workspace(target, store, ws.outside)
    assert ws2.porcelain() == []
    (target / "new").write_text("n\n")
    ws2.commit("on top")
    assert [e["message"] for e in ws2.json("log")["snapshots"]][:2] == ["on top", "second"]


def test_device_nodes_need_root(tmp_path: Path) -> None:
    """A real non-root user (snapwst, which CI creates) is refused a device
    node with exit 9, and a file it may own is imported."""
    import shutil
    import subprocess
    import sys
    import tarfile
    import tempfile

    from .ocitools import Member

    base = Path(tempfile.mkdtemp(prefix="snapws-oci-nonroot-", dir="/tmp"))
    try:
        base.chmod(0o777)
        make_layout(
            base / "dev", [tar_of([Member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)])]
        )
        uid = int(
            subprocess.run(
                ["id", "-u", "snapwst"], capture_output=True, text=True, check=True
            ).stdout
        )
        make_layout(base / "mine", [tar_of([Member("f", data=b"x", uid=uid, gid=uid, mode=0o600)])])
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)

        def run(src: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    shutil.which("runuser") or "/usr/sbin/runuser",
                    "-u",
                    "snapwst",
                    "--",
                    sys.executable,
                    "-m",
                    "snapws",
                    "--store",
                    str(base / "store"),
                    "import",
                    src,
                ],
                capture_output=True,
                text=True,
                cwd=base,
                check=False,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base)},
            )

        res = run(str(base / "dev"))
        assert res.returncode == 9, res.stderr
        assert "null is a device node; only root can create one" in res.stderr
        res = run(str(base / "mine"))
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.strip()) == 32
    finally:
        shutil.rmtree(base, ignore_errors=True)
