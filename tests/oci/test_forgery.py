"""Snapshot ids cannot be forged through import: an image carrying snapshot
S1's record and labels but other layers is refused (BadImageError, exit 16)
and leaves nothing behind, so the genuine S1 imports afterwards; a stored
snapshot is never trusted over the content an image gives it; compacted
snapshots (merged top layer) still travel; verify reports a chain that does
not show its record's layer."""

from __future__ import annotations

import base64
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.errors import BadImageError, ExitCode
from snapws.ids import LayerId, SnapshotId
from snapws.ops.maintenance.verify import verify
from snapws.store.store import EMPTY_LAYER, Store

from .ocitools import import_layout, store_listing

SHA = "blobs/sha256/"


def _read(layout: Path, digest: str) -> bytes:
    return (layout / SHA / digest[7:]).read_bytes()


def _write(layout: Path, data: bytes) -> dict[str, Any]:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / SHA / digest[7:]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _image(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_read(layout, index["manifests"][0]["digest"]))
    return manifest, json.loads(_read(layout, manifest["config"]["digest"]))


def forge(genuine: Path, donor: Path, dest: Path, keep_top: bool = False) -> None:
    """``dest``: the layout ``genuine`` with the layers of ``donor`` (or,
    ``keep_top``, the donor's layers with genuine's top layer on them),
    genuine's record and labels, and every digest redone so the layout is
    consistent (the labels list the layers it carries)."""
    shutil.copytree(genuine, dest)
    for blob in (donor / SHA).iterdir():
        shutil.copy(blob, dest / SHA / blob.name)
    gman, gcfg = _image(genuine)
    dman, dcfg = _image(donor)
    layers = list(dman["layers"])
    diff_ids = list(dcfg["rootfs"]["diff_ids"])
    if keep_top:
        layers.append(gman["layers"][-1])
        diff_ids.append(gcfg["rootfs"]["diff_ids"][-1])
    cfg = dict(gcfg)
    cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    labels = dict(cfg["config"]["Labels"])
    labels["org.snapws.layers"] = ",".join(d["annotations"]["org.snapws.layer"] for d in layers)
    cfg["config"] = {"Labels": labels}
    cdesc = _write(dest, json.dumps(cfg).encode())
    manifest = dict(gman)
    manifest["layers"] = layers
    manifest["config"] = {**gman["config"], **cdesc}
    mdesc = _write(dest, json.dumps(manifest).encode())
    index = json.loads((dest / "index.json").read_text())
    index["manifests"][0].update(mdesc)
    (dest / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def exports(
    make_module_workspace: WorkspaceFactory, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """S0 (a.txt), S1 = S0 + f.txt "genuine" (and s1.txt), S2 = S1 + f.txt
    "evil" (and s2.txt); each exported as a layout."""
    ws = make_module_workspace("origin", {"a.txt": "base\n"})
    out: dict[str, Any] = {"ws": ws}
    base = tmp_path_factory.mktemp("exports")
    for name, content in (("s1", "genuine\n"), ("s2", "evil\n")):
        (ws.path / "f.txt").write_text(content)
        (ws.path / f"{name}.txt").write_text(content)
        out[name] = ws.commit(name)
    out["s0"] = ws.log_ids("HEAD~2")[0]
    for name in ("s0", "s1", "s2"):
        ws.run("export", out[name], "-o", str(base / name))
        out[name + "_layout"] = base / name
    return out


def _content(tmp_path: Path, store: Path, src: Path, name: str, outside: Path) -> str:
    target = tmp_path / name
    run_cli("--store", store, "init", "--from", src, target, cwd=outside)
    return (target / "f.txt").read_text()


def test_forged_image_is_refused_and_the_genuine_one_imports_after(
    exports: dict[str, Any], tmp_path: Path, mount_guard: Path
) -> None:
    ws: Workspace = exports["ws"]
    forged = tmp_path / "forged"
    forge(exports["s1_layout"], exports["s2_layout"], forged)
    store = tmp_path / "store"
    proc = run_cli("--store", store, "import", forged, cwd=ws.outside, check=False)
    assert proc.returncode == ExitCode.BAD_IMAGE, proc.stderr
    assert "are not the record's" in proc.stderr, proc.stderr
    assert not (store / "snapshots" / f"{exports['s1']}.json").exists()
    got = run_cli("--store", store, "import", exports["s1_layout"], cwd=ws.outside).stdout.strip()
    assert got == exports["s1"]
    assert _content(tmp_path, store, exports["s1_layout"], "w1", ws.outside) == "genuine\n"


def test_forged_lower_layers_are_refused_when_the_parent_is_known(
    exports: dict[str, Any], tmp_path: Path
) -> None:
    """S1's own layer on S2's lower layers: the top matches the record, but
    the chain does not show S1's parent (which the store has) below it."""
    forged = tmp_path / "forged"
    forge(exports["s1_layout"], exports["s2_layout"], forged, keep_top=True)
    store = Store.create(tmp_path / "store")
    assert import_layout(store, exports["s0_layout"]) == SnapshotId(exports["s0"])
    before = store_listing(store)
    with pytest.raises(BadImageError, match="do not show its parent"):
        import_layout(store, forged)
    assert store_listing(store) == before
    assert import_layout(store, exports["s1_layout"]) == SnapshotId(exports["s1"])


def test_a_stored_snapshot_is_not_trusted_over_content(
    exports: dict[str, Any], tmp_path: Path
) -> None:
    """Without the parent, lower layers cannot be checked on the way in (a
    shallow import); but a later image of the same id showing other content
    is refused, whichever came first."""
    forged = tmp_path / "forged"
    forge(exports["s1_layout"], exports["s2_layout"], forged, keep_top=True)
    store = Store.create(tmp_path / "store")
    sid = import_layout(store, forged)
    assert sid == SnapshotId(exports["s1"])
    with pytest.raises(BadImageError, match="other content than the image gives it"):
        import_layout(store, exports["s1_layout"])
    assert import_layout(store, forged) == sid  # the same content again: fine


def test_verify_reports_a_chain_that_is_not_its_records(
    exports: dict[str, Any], tmp_path: Path
) -> None:
    store = Store.create(tmp_path / "store")
    s1 = import_layout(store, exports["s1_layout"])
    s2 = import_layout(store, exports["s2_layout"])
    with store.lock(False, 10):
        assert verify(store).ok
    store.write_chain(s1, store.chain(s2))  # S1 now mounts S2's content
    with store.lock(False, 10):
        report = verify(store)
    kinds = [(p.kind, p.snapshot) for p in report.problems]
    assert ("chain-mismatch", s1) in kinds, report.problems


def test_compacted_snapshots_travel_and_a_missing_proof_is_refused(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    """After compaction an older snapshot's chain ends in a merged layer:
    its export carries the record layer's manifest, import checks the top
    holds it (and keeps the layer, so the importer can export it again);
    without that manifest the image cannot be told from a forgery."""
    ws = make_workspace("ws", {"a.txt": "a\n"})
    sids = []
    for i in range(1, 9):
        ws.gen({f"f{i}-{j}.txt": f"{i}.{j}\n" for j in range(3 * i)})
        sids.append(ws.commit(f"c{i}"))
    store = Store.open(ws.store)
    merged = [
        s
        for s in map(SnapshotId, sids)
        if [lid for lid in store.chain(s) if lid != EMPTY_LAYER][-1] != store.read_snapshot(s).layer
    ]
    assert merged, "compaction merged no snapshot's top (the policy changed?)"
    old = merged[0]
    layout = tmp_path / "old"
    ws.run("export", old.hex, "-o", str(layout))
    _, cfg = _image(layout)
    assert "org.snapws.layer-manifest" in cfg["config"]["Labels"]

    fresh = Store.create(tmp_path / "fresh")
    assert import_layout(fresh, layout) == old
    rec = fresh.read_snapshot(old)
    assert fresh.has_layer(rec.layer)  # kept: an export from here proves the top too
    again = tmp_path / "again"
    run_cli("--store", fresh.root, "export", old.hex, "-o", again, cwd=ws.outside)
    assert import_layout(Store.create(tmp_path / "third"), again) == old

    stripped = tmp_path / "stripped"
    shutil.copytree(layout, stripped)
    man, cfg = _image(stripped)
    del cfg["config"]["Labels"]["org.snapws.layer-manifest"]
    man["config"].update(_write(stripped, json.dumps(cfg).encode()))
    index = json.loads((stripped / "index.json").read_text())
    index["manifests"][0].update(_write(stripped, json.dumps(man).encode()))
    (stripped / "index.json").write_text(json.dumps(index))
    with pytest.raises(BadImageError, match="does not carry that layer's manifest"):
        import_layout(Store.create(tmp_path / "fourth"), stripped)

    # a proof that is another layer's manifest is refused too
    wrong = tmp_path / "wrong"
    shutil.copytree(layout, wrong)
    man, cfg = _image(wrong)
    other = store.read_manifest(LayerId(store.read_snapshot(SnapshotId(sids[-1])).layer.hex))
    cfg["config"]["Labels"]["org.snapws.layer-manifest"] = base64.b64encode(
        zlib.compress(other)
    ).decode()
    man["config"].update(_write(wrong, json.dumps(cfg).encode()))
    index = json.loads((wrong / "index.json").read_text())
    index["manifests"][0].update(_write(wrong, json.dumps(man).encode()))
    (wrong / "index.json").write_text(json.dumps(index))
    with pytest.raises(BadImageError, match="is not the manifest of layer"):
        import_layout(Store.create(tmp_path / "fifth"), wrong)
