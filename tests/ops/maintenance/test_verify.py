"""``snapws verify``: planted faults in real layers are all found, a clean
store passes, data subsets partition the files."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import File, Symlink

from snapws.ops.maintenance.verify import DataSubset, verify
from snapws.store.store import Store

pytestmark = pytest.mark.root

STORE_CORRUPT = 11
Key = tuple[str, str, str]  # (kind, layer hex, path)


# ---- building a store with history ------------------------------------------


def build_history(make_workspace: WorkspaceFactory, seed: int, extras: bool = True) -> Workspace:
    """A workspace with five snapshots: files in nested dirs, then commits that
    modify, add, delete (whiteouts), replace a directory (opaque) and, with
    ``extras``, add hardlinks, a fifo, xattrs and symlinks."""
    rng = random.Random(seed)
    spec: dict[str, Any] = {
        f"d{i}": {
            f"f{j}.bin": rng.randbytes(rng.randint(2, 4000)) for j in range(rng.randint(4, 8))
        }
        for i in range(4)
    }
    spec["d0"]["sub"] = {"deep.txt": "deep\n" * 50}
    spec["top.txt"] = File("top\n" * 20, mode=0o640)
    if extras:
        spec["link"] = Symlink("top.txt")
    ws = make_workspace(spec=spec)
    p = ws.path
    # 1: modify and add
    (p / "d1" / "f0.bin").write_bytes(rng.randbytes(3000))
    (p / "new").mkdir()
    for j in range(5):
        (p / "new" / f"n{j}.txt").write_bytes(rng.randbytes(rng.randint(2, 2000)))
    ws.commit("modify and add")
    # 2: delete a directory (whiteout), replace another (opaque), delete a file
    shutil.rmtree(p / "d2")
    shutil.rmtree(p / "d3")
    (p / "d3").mkdir()
    (p / "d3" / "fresh.txt").write_text("fresh\n" * 30)
    os.unlink(p / "d0" / "f1.bin")
    ws.commit("delete and replace")
    # 3: metadata and special files
    (p / "meta").mkdir()
    (p / "meta" / "x.txt").write_text("x\n" * 100)
    if extras:
        os.setxattr(p / "meta" / "x.txt", "user.note", b"hello")
        os.link(p / "meta" / "x.txt", p / "meta" / "x-hardlink.txt")
        os.mkfifo(p / "meta" / "fifo")
        os.symlink("../top.txt", p / "meta" / "up")
        os.mknod(p / "meta" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(p / "top.txt", 0o600)
    ws.commit("metadata")
    # 4: more files in old and new directories
    for j in range(4):
        (p / "d1" / f"late{j}.bin").write_bytes(rng.randbytes(rng.randint(2, 5000)))
    (p / "d0" / "sub" / "deep.txt").write_text("changed\n" * 40)
    ws.commit("more")
    return ws


def layer_ids(ws: Workspace) -> list[str]:
    return sorted(p.name for p in (ws.store / "layers").iterdir())


def tree_of(ws: Workspace, lid: str) -> Path:
    return ws.store / "layers" / lid / "tree"


def chains(ws: Workspace) -> dict[str, list[str]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((ws.store / "chains").glob("*.json"))}


def users_of(ws: Workspace, lid: str) -> list[str]:
    return sorted(sid for sid, chain in chains(ws).items() if lid in chain)


def files_in(ws: Workspace, lid: str) -> list[str]:
    """Regular files of a layer (no hardlinks), relative to its tree."""
    root = tree_of(ws, lid)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            full = Path(dirpath) / f
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size >= 2:
                out.append(str(full.relative_to(root)))
    return sorted(out)


def dirs_in(ws: Workspace, lid: str) -> list[str]:
    root = tree_of(ws, lid)
    out = ["."]
    for dirpath, dirs, _files in os.walk(root):
        out.extend(str((Path(dirpath) / d).relative_to(root)) for d in dirs)
    return sorted(out)


def run_verify(ws: Workspace, *args: str, inside: bool = False) -> tuple[int, dict[str, Any]]:
    """``snapws verify --json ARGS`` with ``--store`` (``inside``: with
    ``-C <workspace>``, which gives HEAD a meaning)."""
    if inside:
        r = ws.run("verify", "--json", *args, check=False)
    else:
        r = run_cli("--store", ws.store, "verify", "--json", *args, cwd=ws.outside, check=False)
    assert r.returncode in (0, STORE_CORRUPT), r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] == (r.returncode == 0)
    return r.returncode, report


def keys(report: dict[str, Any]) -> set[Key]:
    return {(p["kind"], p["layer"], p["path"]) for p in report["problems"]}


def keep_times(path: Path) -> os.stat_result:
    return os.lstat(path)


def restore_times(path: Path, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# ---- planting faults ------------------------------------------------------------


def plant(ws: Workspace, kind: str, lid: str, rel: str, rng: random.Random) -> Key:
    """Damage ``rel`` in layer ``lid`` (``add`` creates a file in the
    directory ``rel``). Returns the problem verify must report. Content
    faults keep the mtime, and deleting or adding a file keeps its
    directory's, so only the planted fault shows."""
    path = tree_of(ws, lid) / rel
    if kind == "flip":
        st = keep_times(path)
        data = bytearray(path.read_bytes())
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        restore_times(path, st)
        return ("corrupted", lid, rel)
    if kind == "truncate":
        st = keep_times(path)
        os.truncate(path, rng.randrange(st.st_size))
        restore_times(path, st)
        return ("truncated", lid, rel)
    if kind == "delete":
        st = keep_times(path.parent)
        os.unlink(path)
        restore_times(path.parent, st)
        return ("missing", lid, rel)
    if kind == "add":
        name = f"planted-{rng.randrange(10**9)}"
        st = keep_times(path)
        (path / name).write_bytes(rng.randbytes(100))
        restore_times(path, st)
        return ("extra", lid, name if rel == "." else f"{rel}/{name}")
    if kind == "mode":
        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) ^ 0o100)
        return ("metadata", lid, rel)
    if kind == "owner":
        os.chown(path, 4321, 4321)
        return ("metadata", lid, rel)
    if kind == "xattr":
        os.setxattr(path, "user.planted", b"1")
        return ("metadata", lid, rel)
    raise AssertionError(kind)


FAULTS = ("flip", "truncate", "delete", "add", "mode", "owner", "xattr")
WHAT = {"mode": "mode", "owner": "owner", "xattr": "xattrs"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_finds_every_planted_fault(make_workspace: WorkspaceFactory, seed: int) -> None:
    ws = build_history(make_workspace, seed)
    code, clean = run_verify(ws)
    assert code == 0 and clean["problems"] == []
    rng = random.Random(seed * 7919)
    candidates = {lid: files_in(ws, lid) for lid in layer_ids(ws)}
    candidates = {lid: files for lid, files in candidates.items() if files}
    assert len(candidates) >= 4
    planted: dict[Key, str] = {}
    for kind in FAULTS * 2:
        lid = rng.choice(sorted(lid for lid, files in candidates.items() if files))
        if kind == "add":
            rel = rng.choice(dirs_in(ws, lid))
        else:
            rel = candidates[lid].pop(rng.randrange(len(candidates[lid])))
        planted[plant(ws, kind, lid, rel, rng)] = kind
    assert len({k[1] for k in planted}) >= 3, "faults should spread over several layers"

    code, report = run_verify(ws)
    assert code == STORE_CORRUPT
    assert keys(report) == set(planted), "exactly the planted faults are reported"
    for p in report["problems"]:
        kind = planted[(p["kind"], p["layer"], p["path"])]
        if kind in WHAT:
            assert p["what"] == [WHAT[kind]]
        assert sorted(p["affected"]) == users_of(ws, p["layer"])
        assert p["affected"], "every faulty layer here is used by a snapshot"

    text = run_cli("--store", ws.store, "verify", cwd=ws.outside, check=False)
    assert text.returncode == STORE_CORRUPT
    assert f"verify found {len(planted)} problems in" in text.stderr
    for _kind, lid, rel in planted:
        assert f"layer {lid} (used by " in text.stdout
        assert f" {rel}: " in text.stdout


def test_clean_store_passes(make_workspace: WorkspaceFactory) -> None:
    ws = build_history(make_workspace, 11)
    r = ws.run("verify")
    assert r.returncode == 0
    code, report = run_verify(ws)
    assert code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0] == (
        f"checked 5 snapshots, {len(layer_ids(ws))} layers, {report['entries_checked']} "
        f"entries ({report['files_checked']} files)"
    )
    assert lines[1].startswith(
        f"hashed {report['files_hashed']} of {report['files_to_hash']} files, "
    )
    assert "MB/s" in lines[1] and "files/s" in lines[1]
    assert lines[-1] == "no problems found"
    assert report["complete"] is True
    assert report["files_hashed"] == report["files_to_hash"] > 0
    assert report["bytes_hashed"] == report["bytes_to_hash"] > 0
    # a hardlinked pair is read once
    assert report["files_to_hash"] < report["files_checked"]
    assert set(report["throughput"]) == {"mb_per_s", "files_per_s"}
    quiet = run_cli("-q", "--store", ws.store, "verify", cwd=ws.outside)
    assert quiet.stdout == "" and quiet.stderr == ""


def test_data_subsets_partition_the_files(make_workspace: WorkspaceFactory) -> None:
    ws = build_history(make_workspace, 5, extras=False)
    rng = random.Random(5)
    flipped: set[Key] = set()
    for lid in layer_ids(ws):
        for rel in files_in(ws, lid):
            flipped.add(plant(ws, "flip", lid, rel, rng))
    assert len(flipped) > 20
    short_lid = layer_ids(ws)[0]
    victim = sorted(k for k in flipped if k[1] != short_lid)[0]
    truncated = plant(ws, "truncate", victim[1], victim[2], rng)
    flipped.discard(victim)

    found = []
    for part in ("1/2", "2/2"):
        code, report = run_verify(ws, "--read-data-subset", part)
        assert code == STORE_CORRUPT
        assert report["subset"] == part
        got = keys(report)
        assert truncated in got, "sizes are checked whatever the subset"
        found.append({k for k in got if k[0] == "corrupted"})
        assert 0 < report["files_hashed"] < len(flipped)
    first, second = found
    assert first | second == flipped
    assert not first & second

    _, everything = run_verify(ws, "--read-data-subset", "100%")
    assert {k for k in keys(everything) if k[0] == "corrupted"} == flipped
    _, some = run_verify(ws, "--read-data-subset", "50%")
    _, again = run_verify(ws, "--read-data-subset", "50%")
    assert keys(some) == keys(again), "a percentage picks the same files every run"
    assert keys(some) < keys(everything)


def test_bad_subset_is_a_usage_error(workspace: Workspace) -> None:
    for bad in ("0/3", "4/3", "x", "0%", "150%", "1/"):
        r = workspace.run("verify", "--read-data-subset", bad, check=False)
        assert r.returncode == 2, bad
        assert "--read-data-subset" in r.stderr


def test_subset_parsing() -> None:
    assert DataSubset.parse("2/5").slice_no == 2
    assert DataSubset.parse("12.5%").permille == 125_000
    with pytest.raises(ValueError):
        DataSubset.parse("3/2")


def test_revisions_limit_the_layers(make_workspace: WorkspaceFactory) -> None:
    ws = build_history(make_workspace, 21, extras=False)
    head = ws.head()
    chain = chains(ws)[head]
    top = chain[-1]
    rel = files_in(ws, top)[0]
    fault = plant(ws, "flip", top, rel, random.Random(0))
    code, older = run_verify(ws, "HEAD~1", inside=True)
    assert code == 0
    assert older["layers_checked"] == len(chains(ws)[ws.log_ids("HEAD~1")[0]])
    code, report = run_verify(ws, "HEAD", inside=True)
    assert code == STORE_CORRUPT
    assert keys(report) == {fault}
    assert report["problems"][0]["affected"] == [head]
    r = ws.run("verify", "no-such-rev", check=False)
    assert r.returncode == 4
    # outside a workspace, --store with a full id works; HEAD means nothing
    code, by_id = run_verify(ws, head)
    assert code == STORE_CORRUPT and keys(by_id) == {fault}
    r = run_cli("--store", ws.store, "verify", "HEAD", cwd=ws.outside, check=False)
    assert r.returncode == 4


def test_max_duration_stops_hashing_but_keeps_findings(
    make_workspace: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = build_history(make_workspace, 31, extras=False)
    lid = layer_ids(ws)[-1]
    while not files_in(ws, lid):
        lid = layer_ids(ws)[0]
    fault = plant(ws, "truncate", lid, files_in(ws, lid)[0], random.Random(1))
    code, full = run_verify(ws, "--max-duration", "3600")
    assert code == STORE_CORRUPT and full["complete"] is True

    class Clock:
        """Each reading is 10 s after the previous one: the deadline passes
        before the first file is hashed, whatever the machine's speed."""

        now = 0.0

        def monotonic(self) -> float:
            self.now += 10.0
            return self.now

    clock = Clock()  # one clock for verify's deadline and the hashing pool's checks
    monkeypatch.setattr("snapws.ops.maintenance.verify.time", clock)
    monkeypatch.setattr("snapws.layers.hashing.time", clock)
    report = verify(Store.open(ws.store), max_duration=5.0)
    assert report.complete is False
    assert report.files_hashed == 0 < report.files_to_hash
    assert [
        (p.kind, p.layer.hex if p.layer else None, os.fsdecode(p.path or b""))
        for p in report.problems
    ] == [fault]


def test_structural_damage(make_workspace: WorkspaceFactory) -> None:
    ws = build_history(make_workspace, 41, extras=False)
    store = ws.store
    ids = ws.log_ids()
    # a ref to a missing snapshot
    (store / "refs" / "heads" / "ghost").write_text("deadbeef" * 4 + "\n")
    # a snapshot record that no longer hashes to its name
    rec = store / "snapshots" / f"{ids[-1]}.json"
    os.chmod(rec, 0o644)
    rec.write_text(rec.read_text().replace("initial snapshot", "tampered"))
    # a manifest that no longer hashes to its layer id
    lids = chains(ws)[ids[0]]
    manifest = store / "layers" / lids[1] / "manifest"
    os.chmod(manifest, 0o644)
    manifest.write_bytes(manifest.read_bytes() + b"\n")
    # a layer that is gone
    gone = lids[2]
    os.rename(store / "layers" / gone, ws.outside / gone)

    code, report = run_verify(ws)
    assert code == STORE_CORRUPT
    got = {(p["kind"], p["ref"] or p["snapshot"] or p["layer"]) for p in report["problems"]}
    assert ("dangling-ref", "refs/heads/ghost") in got
    assert ("bad-snapshot", ids[-1]) in got
    assert ("bad-manifest", lids[1]) in got
    missing = [p for p in report["problems"] if p["kind"] == "missing-layer"]
    users = {sid for sid, chain in chains(ws).items() if gone in chain}
    assert {p["snapshot"] for p in missing} == users
    assert all(set(p["affected"]) == users and p["layer"] == gone for p in missing)
    assert {p["kind"] for p in report["problems"]} == {
        "dangling-ref",
        "bad-snapshot",
        "bad-manifest",
        "missing-layer",
    }
    os.rename(ws.outside / gone, store / "layers" / gone)


def find_layer(ws: Workspace, rel: str, test: Any) -> str:
    """The layer whose tree has ``rel`` passing ``test(lstat)``."""
    for lid in layer_ids(ws):
        path = tree_of(ws, lid) / rel
        if os.path.lexists(path) and test(os.lstat(path)):
            return lid
    raise AssertionError(f"no layer holds {rel}")


def test_every_kind_of_metadata_change(make_workspace: WorkspaceFactory) -> None:
    ws = build_history(make_workspace, 51)
    expect: dict[tuple[str, str], list[str]] = {}
    # a symlink pointing elsewhere
    lid = find_layer(ws, "link", lambda st: stat.S_ISLNK(st.st_mode))
    path = tree_of(ws, lid) / "link"
    st, up = os.lstat(path), os.lstat(path.parent)
    os.unlink(path)
    os.symlink("elsewhere", path)
    restore_times(path, st)
    restore_times(path.parent, up)
    expect[(lid, "link")] = ["target"]
    # an opaque directory that lost its mark
    lid = next(
        lid
        for lid in layer_ids(ws)
        if (tree_of(ws, lid) / "d3").is_dir()
        and "trusted.overlay.opaque" in os.listxattr(tree_of(ws, lid) / "d3")
    )
    os.removexattr(tree_of(ws, lid) / "d3", "trusted.overlay.opaque")
    expect[(lid, "d3")] = ["opaque"]
    # a whiteout turned into a file
    lid = find_layer(ws, "d2", lambda st: stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
    up = os.lstat(tree_of(ws, lid))
    os.unlink(tree_of(ws, lid) / "d2")
    (tree_of(ws, lid) / "d2").write_text("not a whiteout")
    restore_times(tree_of(ws, lid), up)
    expect[(lid, "d2")] = ["kind"]
    # a device with another number
    lid = find_layer(ws, "meta/null", lambda st: stat.S_ISCHR(st.st_mode) and st.st_rdev != 0)
    path = tree_of(ws, lid) / "meta" / "null"
    st, up = os.lstat(path), os.lstat(path.parent)
    os.unlink(path)
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    restore_times(path, st)
    restore_times(path.parent, up)
    expect[(lid, "meta/null")] = ["rdev"]
    # a file's mtime, and a directory's (the manifest records both)
    lid = find_layer(ws, "top.txt", lambda st: stat.S_ISREG(st.st_mode))
    os.utime(tree_of(ws, lid) / "top.txt", ns=(0, 123_456_789))
    expect[(lid, "top.txt")] = ["mtime"]
    os.utime(tree_of(ws, lid), ns=(0, 42))
    expect[(lid, ".")] = ["mtime"]

    code, report = run_verify(ws)
    assert code == STORE_CORRUPT
    got = {(p["layer"], p["path"]): p["what"] for p in report["problems"]}
    assert got == expect
    assert all(p["kind"] == "metadata" for p in report["problems"])


def test_flattened_layers_share_inodes(make_workspace: WorkspaceFactory, tmp_path: Path) -> None:
    """Flatten hardlinks old layers' files into the flat layer: a clean store
    still verifies, and damage to a shared inode is reported in each layer."""
    cfg = tmp_path / "snapws.toml"
    cfg.write_text("max_depth = 3\n")
    env = {"SNAPWS_CONFIG": str(cfg)}
    ws = make_workspace(spec={"shared.bin": os.urandom(5000), "d": {"x": "x\n"}})
    for i in range(6):
        (ws.path / f"f{i}.txt").write_text(f"{i}\n" * 100)
        ws.run("commit", "-m", f"c{i}", env=env)
    holders = [lid for lid in layer_ids(ws) if (tree_of(ws, lid) / "shared.bin").exists()]
    inodes = {os.stat(tree_of(ws, lid) / "shared.bin").st_ino for lid in holders}
    assert len(holders) >= 2 and len(inodes) == 1, "flatten should hardlink, not copy"
    code, clean = run_verify(ws)
    assert code == 0, clean["problems"]
    assert clean["files_to_hash"] < clean["files_checked"]

    fault = plant(ws, "flip", holders[0], "shared.bin", random.Random(3))
    code, report = run_verify(ws)
    assert code == STORE_CORRUPT
    assert keys(report) == {("corrupted", lid, "shared.bin") for lid in holders}
    assert fault in keys(report)
