"""``snapws clone`` and ``init --from`` with every kind of SOURCE: a registry
reference (real registry on 127.0.0.1), a dir: remote, an OCI layout and
archive; and the same foreign image giving the same snapshot from each."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import tree_state
from registry import Registry

from tests.oci.ocitools import d, f, make_layout, tar_of

REPO = "team/app"
TREE = {"src": {"main.c": "int main(void) { return 0; }\n"}, "README": "hello\n"}


def clone(cwd: Path, *args: str | Path) -> dict[str, Any]:
    return dict(json.loads(run_cli("clone", *args, "--json", cwd=cwd).stdout))


def test_clone_a_registry_reference_then_pull(
    make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path
) -> None:
    origin = make_workspace("origin", TREE)
    origin.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    origin.run("push")
    out = clone(origin.outside, f"{registry.url}/{REPO}", "--insecure")
    # DIR from the repository's name, as git clone names it; the pushed
    # snapshot comes back with its id; origin and origin/main recorded
    ws = Workspace(origin.outside / "app", origin.outside / ".snapws", origin.outside)
    assert out["workspace"] == str(origin.outside / "app")
    assert (out["id"], out["branch"], out["remote"], out["tag"]) == (
        origin.head(),
        "main",
        "origin",
        "main",
    )
    assert out["url"] == f"{registry.url}/{REPO}"
    assert tree_state(ws.path) == tree_state(origin.path)
    assert ws.porcelain() == []
    (remote,) = ws.json("remote", "list")["remotes"]
    assert (remote["name"], remote["insecure"], remote["tracking"]) == (
        "origin",
        True,
        {"main": origin.head()},
    )
    # later pushes come in with a plain pull
    (origin.path / "README").write_text("changed\n")
    tip = origin.commit("change")
    origin.run("push")
    pulled = ws.json("pull")
    assert (pulled["action"], pulled["id"]) == ("fast-forward", tip)
    assert (ws.path / "README").read_text() == "changed\n"


def test_clone_a_tag_into_a_directory_and_init_from(
    make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    origin = make_workspace("origin", TREE)
    origin.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    origin.run("push", "--tag", "v1")
    origin.run("push", "--tag", "v2")
    cwd = origin.outside
    # several tags, none main or latest: it says which there are
    r = run_cli("clone", f"{registry.url}/{REPO}", "--insecure", cwd=cwd, check=False)
    assert r.returncode == 4 and "several tags (v1, v2)" in r.stderr and ":TAG" in r.stderr
    assert not (cwd / "app").exists()  # nothing left behind
    out = clone(cwd, f"{registry.url}/{REPO}:v1", cwd / "here", "-b", "work", "--insecure")
    assert (out["id"], out["branch"], out["tag"]) == (origin.head(), "work", "v1")
    # init --from takes the same references
    init = run_cli(
        "init",
        "--from",
        f"{registry.url}/{REPO}:v2",
        cwd / "viainit",
        "--insecure",
        "--json",
        cwd=cwd,
    )
    info = json.loads(init.stdout)
    assert (info["id"], info["branch"]) == (origin.head(), "v2")
    assert tree_state(cwd / "viainit") == tree_state(origin.path)
    # a reference that is neither a path nor a registry says so
    r = run_cli("clone", "no-such-thing", cwd=cwd, check=False)
    assert r.returncode == 2 and "no file or directory here, nor a registry" in r.stderr


def test_clone_a_dir_remote_and_an_exported_layout(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    origin = make_workspace("origin", TREE)
    shared = tmp_path / "shared.oci"
    origin.run("remote", "add", "origin", f"dir:{shared}")
    origin.run("push")
    out = clone(origin.outside, f"dir:{shared}", "fromdir")
    assert (out["id"], out["remote"], out["url"]) == (origin.head(), "origin", f"oci:{shared}")
    # an exported layout and tar: no remote
    origin.run("export", "HEAD", "-o", tmp_path / "img")
    origin.run("export", "HEAD", "-o", tmp_path / "img.tar")
    for src, name in ((tmp_path / "img", "img"), (tmp_path / "img.tar", "img-tar")):
        out = clone(origin.outside, src, name, "-b", name)  # the store is shared: own branch
        assert (out["id"], out["remote"]) == (origin.head(), None)
        assert tree_state(origin.outside / name) == tree_state(origin.path)


def test_the_same_image_is_the_same_snapshot_from_layout_tar_and_registry(
    registry: Registry, mount_guard: Path
) -> None:
    """A foreign image (a "/" root entry, as umoci writes it) imported from
    an OCI layout, an OCI archive, a docker archive and a registry."""
    tmp_path = mount_guard
    layout = tmp_path / "layout"
    layers = [
        tar_of([d("/", mode=0o755), d("etc"), f("etc/os-release", b"ID=test\n")]),
        tar_of([f("etc/motd", b"hi\n", mode=0o600)]),
    ]
    make_layout(layout, layers)
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tf:
        for child in sorted(layout.iterdir()):
            tf.add(child, arcname=child.name)
    docker = tmp_path / "docker.tar"
    for dst in (f"docker-archive:{docker}:img:latest", f"docker://{registry.url}/foreign:latest"):
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", dst],
            check=True,
            capture_output=True,
        )
    sources = {
        "layout": [str(layout)],
        "archive": [f"oci-archive:{archive}"],
        "docker": [f"docker-archive:{docker}"],
        "registry": [f"{registry.url}/foreign", "--insecure"],
    }
    ids = {}
    for name, args in sources.items():
        store = ("--store", str(tmp_path / f"store-{name}"))  # each imports on its own
        out = json.loads(
            run_cli(*store, "clone", *args, tmp_path / f"ws-{name}", "--json", cwd=tmp_path).stdout
        )
        ids[name] = out["id"]
        assert (tmp_path / f"ws-{name}" / "etc" / "motd").read_text() == "hi\n"
    assert len(set(ids.values())) == 1, ids
