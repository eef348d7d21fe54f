"""Image indexes (issue 14): fetch and pull take the host's platform, or
--platform's, from a multi-platform index on a real registry; they refuse
only when nothing matches, naming the platforms there are."""

from __future__ import annotations

import json

import pytest
from conftest import Workspace, WorkspaceFactory
from registry import Registry

from snapws.errors import BadImageError
from snapws.ids import BlobDigest
from snapws.oci.image import OCI_INDEX, OCI_MANIFEST, canonical_json
from snapws.oci.platform import Platform, choose_manifest, host_platform
from snapws.remote.registry import RegistryRemote
from snapws.remote.url import parse_remote_url

REPO = "team/multi"
HOST = host_platform()
OTHER = "s390x" if HOST.architecture != "s390x" else "amd64"


def entry(digest: BlobDigest, plat: dict[str, str], size: int = 100) -> dict[str, object]:
    return {"mediaType": OCI_MANIFEST, "digest": str(digest), "size": size, "platform": plat}


D1, D2, D3 = (BlobDigest(c * 64) for c in "123")


def test_choose_manifest_picks_the_platform() -> None:
    index = {
        "manifests": [
            entry(D3, {"os": "unknown", "architecture": "unknown"}),
            entry(D1, {"os": "linux", "architecture": "arm", "variant": "v6"}),
            entry(D2, {"os": "linux", "architecture": "arm", "variant": "v7"}),
            entry(D3, {"os": "linux", "architecture": "arm64"}),
        ]
    }
    assert choose_manifest(index, "x", Platform.parse("linux/arm/v7")).digest == D2
    assert choose_manifest(index, "x", Platform.parse("linux/arm64/v8")).digest == D3
    with pytest.raises(BadImageError) as e:
        choose_manifest(index, "x", Platform.parse("linux/riscv64"))
    assert "has linux/arm/v6, linux/arm/v7, linux/arm64" in e.value.message
    assert "unknown" not in e.value.message  # attestation entries are not platforms
    with pytest.raises(ValueError):
        Platform.parse("linux")


@pytest.fixture
def multi(make_workspace: WorkspaceFactory, registry: Registry) -> tuple[Workspace, list[str]]:
    """Tag ``multi`` names an index of two snapws images: snapshot A for this
    machine, B for OTHER, and an attestation-like unknown/unknown entry."""
    ws = make_workspace("ws", {"f": "A\n"})
    ws.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    a = ws.head()
    ws.run("push", "--tag", "a")
    (ws.path / "f").write_text("B\n")
    b = ws.commit("B")
    ws.run("push", "--tag", "b")
    remote = RegistryRemote(parse_remote_url(f"{registry.url}/{REPO}", insecure=True), push=True)
    ma, mb = remote.get_manifest("a"), remote.get_manifest("b")
    assert ma is not None and mb is not None
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry(ma.digest, {"os": "unknown", "architecture": "unknown"}, len(ma.data)),
            entry(mb.digest, {"os": "linux", "architecture": OTHER}, len(mb.data)),
            entry(ma.digest, {"os": "linux", "architecture": HOST.architecture}, len(ma.data)),
        ],
    }
    remote.put_manifest("multi", canonical_json(index), OCI_INDEX)
    remote.close()
    return ws, [a, b]


def test_fetch_takes_the_host_platform_or_the_one_asked_for(
    multi: tuple[Workspace, list[str]], make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    ws, (a, b) = multi
    bob = make_workspace("bob", store=ws.store.parent / "bob-store")
    bob.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    bob.run("fetch", "origin", "multi")
    assert bob.log_ids("origin/multi") == [a]
    bob.run("fetch", "--platform", f"linux/{OTHER}", "origin", "multi")
    assert bob.log_ids("origin/multi")[0] == b


def test_no_matching_platform_is_refused_naming_those_there_are(
    multi: tuple[Workspace, list[str]], make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    ws, _ids = multi
    bob = make_workspace("bob", store=ws.store.parent / "bob-store")
    bob.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    res = bob.run("pull", "--platform", "linux/riscv64", "origin", "multi", check=False)
    assert res.returncode == 16
    have = ", ".join(sorted([f"linux/{OTHER}", f"linux/{HOST.architecture}"]))
    assert f"has no image for linux/riscv64 (it has {have})" in res.stderr
    assert "hint: choose one with --platform" in res.stderr
    bad = bob.run("fetch", "--platform", "linux", "origin", "multi", check=False)
    assert bad.returncode == 2 and "is not a platform" in bad.stderr
    listed = json.loads(bob.run("remote", "list", "--json").stdout)["remotes"]
    assert listed[0]["tracking"] == {}  # nothing was recorded
