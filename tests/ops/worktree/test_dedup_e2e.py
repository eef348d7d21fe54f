"""Deduplication through real workspaces: identical files (content and
metadata) are stored once across branches and workspaces of a store, and a
write through a workspace never reaches the shared copy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import file_hash
from robust.verify import assert_store_ok

from snapws.crash import ENV as CRASH_ENV

pytestmark = pytest.mark.root

MB = 1_000_000
BIG = 5 * MB
SLACK = 256 * 1024  # directories, manifests and small files of a few layers
T = 1_650_000_000_111_222_333


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A 5 MB file outside every workspace, copied in with ``cp -a``."""
    p = tmp_path / "src" / "big.bin"
    p.parent.mkdir()
    p.write_bytes(os.urandom(BIG))
    os.utime(p, ns=(T, T))
    return p


def cp_a(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def total(ws: Workspace) -> int:
    report: dict[str, Any] = ws.json("du")
    return int(report["store"]["total_bytes"])


def layer_files(ws: Workspace, name: str) -> list[Path]:
    """``name`` in every layer tree of the store that holds it."""
    return sorted(
        p / "tree" / name for p in (ws.store / "layers").iterdir() if (p / "tree" / name).exists()
    )


def inodes(paths: list[Path]) -> set[int]:
    return {os.lstat(p).st_ino for p in paths}


def verifies(ws: Workspace) -> None:
    assert_store_ok(ws.store)
    proc = ws.run("verify", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def config(tmp_path: Path, text: str) -> dict[str, str]:
    cfg = tmp_path / "snapws.toml"
    cfg.write_text(text)
    return {"SNAPWS_CONFIG": str(cfg)}


# --------------------------------------------------------------------------- sharing


def test_two_branches_store_the_same_file_once(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    ws = make_workspace(spec={"readme": "r\n"})
    ws.run("branch", "other")
    before = total(ws)
    cp_a(source, ws.path / "big.bin")
    (ws.path / "main-only").write_text("main\n")
    ws.commit("main adds big.bin")
    after_main = total(ws)
    ws.run("checkout", "other")
    assert not (ws.path / "big.bin").exists()
    cp_a(source, ws.path / "big.bin")
    (ws.path / "other-only").write_text("other\n")
    ws.commit("other adds big.bin")
    after_other = total(ws)

    copies = layer_files(ws, "big.bin")
    assert len(copies) == 2  # two layers (they differ), one inode
    assert len(inodes(copies)) == 1
    assert BIG <= after_main - before <= BIG + SLACK
    assert after_other - after_main <= SLACK  # du counts the shared inode once
    verifies(ws)
    # both branches still show the file
    assert file_hash(ws.path / "big.bin") == file_hash(source)
    ws.run("checkout", "main")
    assert file_hash(ws.path / "big.bin") == file_hash(source)


def test_workspaces_of_one_store_share_files_from_init_and_commit(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    first_dir = source.parent.parent / "one"
    second_dir = source.parent.parent / "two"
    for d in (first_dir, second_dir):
        d.mkdir()
        cp_a(source, d / "base.bin")
    (second_dir / "own.txt").write_text("two\n")
    one = make_workspace("one")
    two = make_workspace("two", branch="two")
    assert one.store == two.store
    assert len(inodes(layer_files(one, "base.bin"))) == 1  # init shared it
    for ws, name in ((one, "a"), (two, "b")):
        sub = ws.path / "data"
        sub.mkdir()
        cp_a(source, sub / "big.bin")
        (ws.path / name).write_text(name)
        ws.commit(f"{name}: data/big.bin")
    shared = layer_files(one, "base.bin") + layer_files(one, "data/big.bin")
    assert len(shared) == 4 and len(inodes(shared)) == 1
    assert total(one) <= BIG + 4 * SLACK
    verifies(one)


def test_dedup_off_stores_every_copy(
    make_workspace: WorkspaceFactory, source: Path, tmp_path: Path
) -> None:
    env = config(tmp_path, "dedup = false\n")
    ws = make_workspace(spec={"readme": "r\n"})
    cp_a(source, ws.path / "big.bin")
    ws.run("commit", "-m", "one", env=env)
    (ws.path / "d").mkdir()
    cp_a(source, ws.path / "d" / "big.bin")
    before = total(ws)
    ws.run("commit", "-m", "two", env=env)
    assert len(inodes(layer_files(ws, "big.bin") + layer_files(ws, "d/big.bin"))) == 2
    assert total(ws) - before >= BIG
    verifies(ws)


@pytest.mark.parametrize("change", ["mtime", "mode", "owner", "xattr"])
def test_different_metadata_is_not_shared(
    make_workspace: WorkspaceFactory, source: Path, change: str
) -> None:
    ws = make_workspace(spec={"readme": "r\n"})
    cp_a(source, ws.path / "big.bin")
    ws.commit("first")
    (ws.path / "d").mkdir()
    copy = ws.path / "d" / "big.bin"
    cp_a(source, copy)
    if change == "mtime":
        os.utime(copy, ns=(T + 1, T + 1))
    elif change == "mode":
        os.chmod(copy, 0o600)
    elif change == "owner":
        os.chown(copy, 1234, 1234)
    else:
        os.setxattr(copy, "user.note", b"copy")
    ws.commit("second")
    assert len(inodes(layer_files(ws, "big.bin") + layer_files(ws, "d/big.bin"))) == 2
    verifies(ws)


def test_moving_a_committed_directory_stores_no_new_data(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    """``mv`` of a lower directory fails with EXDEV and copies (keeping mode,
    owner and mtimes): the copies become links of the committed files."""
    ws = make_workspace(spec={"readme": "r\n"})
    (ws.path / "old").mkdir()
    cp_a(source, ws.path / "old" / "big.bin")
    (ws.path / "old" / "small.txt").write_text("small\n" * 100)
    ws.commit("old/")
    before = total(ws)
    subprocess.run(["mv", str(ws.path / "old"), str(ws.path / "new")], check=True)
    assert ws.porcelain() == [
        " D old/",
        " D old/big.bin",
        " D old/small.txt",
        "?? new/",
        "?? new/big.bin",
        "?? new/small.txt",
    ]
    ws.commit("mv old new")
    assert total(ws) - before <= SLACK
    assert len(inodes(layer_files(ws, "old/big.bin") + layer_files(ws, "new/big.bin"))) == 1
    verifies(ws)


def test_a_damaged_index_is_replaced(make_workspace: WorkspaceFactory, source: Path) -> None:
    """A damaged index costs the sharing of one commit: the commit works, the
    index is moved aside and started again."""
    ws = make_workspace(spec={"readme": "r\n"})
    cp_a(source, ws.path / "big.bin")
    ws.commit("first")
    index = ws.store / "dedup" / "index.sqlite"
    assert sorted(os.listdir(ws.store / "dedup")) == ["index.sqlite", "tmp"]
    index.write_bytes(os.urandom(8192))
    for n, name in enumerate(("two", "three", "four")):
        (ws.path / name).mkdir()
        cp_a(source, ws.path / name / "big.bin")
        ws.commit(name)
        if n == 0:
            assert (ws.store / "dedup" / "index.sqlite.corrupt").is_file()
            assert not index.exists()
    first, two, three, four = (
        inodes(layer_files(ws, p))
        for p in ("big.bin", "two/big.bin", "three/big.bin", "four/big.bin")
    )
    assert len(first | two | three) == 3  # "three" was indexed in a new index
    assert four == three
    verifies(ws)


# ----------------------------------------------------------------------- writes and shared inodes


def test_appending_through_the_workspace_copies_up(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    ws = make_workspace(spec={"readme": "r\n"})
    ws.run("branch", "other")
    cp_a(source, ws.path / "big.bin")
    (ws.path / "m").write_text("m\n")
    ws.commit("main")
    ws.run("checkout", "other")
    cp_a(source, ws.path / "big.bin")
    (ws.path / "o").write_text("o\n")
    ws.commit("other")
    copies = layer_files(ws, "big.bin")
    assert len(inodes(copies)) == 1
    digest = file_hash(source)

    with open(ws.path / "big.bin", "ab") as f:
        f.write(b"appended through the workspace\n")
    os.chmod(ws.path / "big.bin", 0o600)
    for p in copies:  # neither layer's copy changed
        assert file_hash(p) == digest
        assert os.lstat(p).st_size == BIG
        assert os.lstat(p).st_mtime_ns == T
    assert ws.porcelain() == [" M big.bin"]
    ws.commit("append")
    assert (ws.path / "big.bin").read_bytes().endswith(b"workspace\n")
    ws.run("checkout", "main")
    assert file_hash(ws.path / "big.bin") == digest
    verifies(ws)


def test_restore_keeps_files_of_different_layers_apart(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    """Two paths on one shared inode, from two layers, are no hardlinks:
    restored, they are two files."""
    ws = make_workspace(spec={"readme": "r\n"})
    (ws.path / "d").mkdir()
    cp_a(source, ws.path / "d" / "one")
    ws.commit("one")
    cp_a(source, ws.path / "d" / "two")
    ws.commit("two")
    assert len(inodes(layer_files(ws, "d/one") + layer_files(ws, "d/two"))) == 1
    shutil.rmtree(ws.path / "d")
    ws.run("restore", "d")
    with open(ws.path / "d" / "one", "ab") as f:
        f.write(b"more\n")
    assert file_hash(ws.path / "d" / "two") == file_hash(source)
    assert sorted(ws.porcelain()) == [" M d/one"]
    ws.commit("one grew")
    verifies(ws)


def test_flatten_after_dedup_keeps_the_store_valid(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    ws = make_workspace(spec={"readme": "r\n"})
    (ws.path / "d").mkdir()
    cp_a(source, ws.path / "d" / "one")
    ws.commit("one")
    cp_a(source, ws.path / "d" / "two")
    ws.commit("two")
    shared = layer_files(ws, "d/one") + layer_files(ws, "d/two")
    assert len(inodes(shared)) == 1
    out = json.loads(ws.run("flatten", "--keep", "0", "--json").stdout)
    assert out["layer"]
    verifies(ws)
    digest = file_hash(source)
    with open(ws.path / "d" / "one", "ab") as f:
        f.write(b"more\n")
    assert file_hash(ws.path / "d" / "two") == digest
    for p in shared:
        assert file_hash(p) == digest
    assert ws.porcelain() == [" M d/one"]
    ws.commit("after flatten")
    verifies(ws)


# --------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("at", ["link:1", "rename:1", "link:2", "rename:2", "commit:1"])
def test_sigkill_mid_dedup_of_a_commit(
    make_workspace: WorkspaceFactory, source: Path, at: str
) -> None:
    ws = make_workspace(spec={"readme": "r\n"})
    cp_a(source, ws.path / "big.bin")
    small = source.parent / "small.txt"
    small.write_text("small\n" * 1000)
    cp_a(small, ws.path / "small.txt")
    first = ws.commit("first")
    (ws.path / "d").mkdir()
    cp_a(source, ws.path / "d" / "big.bin")
    cp_a(small, ws.path / "d" / "small.txt")
    (ws.path / "d" / "new").write_text("new\n")
    proc = ws.run("commit", "-m", "copies", env={CRASH_ENV: "dedup:" + at}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    # the workspace is unmounted: name the store; the command recovers first
    status = ws.run("--store", ws.store, "status", "--porcelain")
    assert status.stdout == ""  # the commit was finished
    assert ws.porcelain() == []
    log = ws.log_ids()
    assert len(log) == 3 and log[1] == first
    for name in ("big.bin", "small.txt"):
        assert len(inodes(layer_files(ws, name) + layer_files(ws, f"d/{name}"))) == 1
    assert file_hash(ws.path / "d" / "big.bin") == file_hash(source)
    assert not list((ws.store / "dedup" / "tmp").iterdir())
    verifies(ws)
    (ws.path / "after").write_text("after\n")
    ws.commit("after")
    verifies(ws)


@pytest.mark.parametrize("at", ["link:1", "rename:1", "commit:1"])
def test_sigkill_mid_dedup_of_an_init(
    make_workspace: WorkspaceFactory, source: Path, tmp_path: Path, at: str
) -> None:
    one_dir = tmp_path / "one"
    one_dir.mkdir()
    cp_a(source, one_dir / "big.bin")
    one = make_workspace("one")
    two_dir = tmp_path / "two"
    (two_dir / "sub").mkdir(parents=True)
    cp_a(source, two_dir / "sub" / "big.bin")
    (two_dir / "own").write_text("own\n")
    proc = run_cli(
        "--store",
        one.store,
        "init",
        "--branch",
        "two",
        two_dir,
        cwd=one.outside,
        env={CRASH_ENV: "dedup:" + at},
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    # the layer id was journaled before dedup began: recovery rolls forward
    status = run_cli("-C", two_dir, "--store", one.store, "status", cwd=one.outside)
    assert "nothing to commit" in status.stdout
    assert file_hash(two_dir / "sub" / "big.bin") == file_hash(source)
    assert len(inodes(layer_files(one, "big.bin") + layer_files(one, "sub/big.bin"))) == 1
    verifies(one)


def test_restore_after_flatten_keeps_copies_apart(
    make_workspace: WorkspaceFactory, source: Path
) -> None:
    """Flattening two layers whose files dedup made one inode gives two
    files, not a hardlink pair: restored from the flat layer, writing one
    leaves the other alone."""
    ws = make_workspace(spec={"readme": "r\n"})
    (ws.path / "d").mkdir()
    cp_a(source, ws.path / "d" / "one")
    ws.commit("one")
    cp_a(source, ws.path / "d" / "two")
    ws.commit("two")
    out = json.loads(ws.run("flatten", "--keep", "0", "--json").stdout)
    manifest = (ws.store / "layers" / out["layer"] / "manifest").read_text()
    assert '"hl"' not in manifest
    verifies(ws)
    shutil.rmtree(ws.path / "d")
    ws.run("restore", "d")
    with open(ws.path / "d" / "one", "ab") as f:
        f.write(b"more\n")
    assert file_hash(ws.path / "d" / "two") == file_hash(source)
    assert ws.porcelain() == [" M d/one"]
