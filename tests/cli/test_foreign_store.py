"""Another user's store: root (or anyone) may read it, but a command that
changes it is refused before it writes anything (exit 9), since the files
it made would not be the owner's, who could then not remove them
(docs/commands.md, docs/exit-codes.md). A store already holding such files
names them and the chown that gives them back. Privileged: run as root,
with the unprivileged test user of tests/backends/users.py."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends.users import UserArea
from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def area() -> Iterator[UserArea]:
    assert os.geteuid() == 0, "these tests run as root (CI does)"
    a = UserArea()
    try:
        yield a
    finally:
        a.cleanup()


def as_user(
    area: UserArea, *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return area.snapws(*args, check=False, cwd=cwd, env={"PYTHONPATH": str(REPO)})


@pytest.fixture
def users_ws(area: UserArea) -> tuple[Path, Path]:
    """The test user's plain workspace ``proj`` in its default store
    (``$HOME/.local/share/snapws``, HOME being the area), one snapshot and
    one uncommitted change."""
    ws = area.root / "proj"
    area.run("mkdir", ws)
    area.run("sh", "-c", f"echo one > {ws}/a")
    r = as_user(area, "init", "--backend", "plain", ws)
    assert r.returncode == 0, r.stderr
    area.run("sh", "-c", f"echo two > {ws}/a")
    return ws, area.root / ".local" / "share" / "snapws"


def not_the_users(area: UserArea, store: Path) -> list[str]:
    out = []
    for top, dirs, files in os.walk(store):
        for name in [*dirs, *files]:
            p = os.path.join(top, name)
            if os.lstat(p).st_uid != area.uid:
                out.append(p)
    return out


def test_root_may_not_change_a_users_store_but_may_read_it(
    area: UserArea, users_ws: tuple[Path, Path]
) -> None:
    ws, store = users_ws
    env = {"SNAPWS_STORE": str(store)}
    for args in (
        ["commit", "-m", "by root"],
        ["commit", "--allow-empty", "-m", "by root"],
        ["reset", "--hard", "HEAD"],
        ["prune", "--keep-last", "1"],
        ["gc", "--grace", "0"],
        ["flatten"],
        ["export", "HEAD", "-o", str(area.root / "image.tar")],  # (it fills the blob cache)
    ):
        r = run_cli("-C", ws, *args, cwd=area.root, check=False, env=env)
        assert r.returncode == 9, (args, r.stdout, r.stderr)
        assert r.stderr.startswith(f"snapws: error: the store {store} belongs to snapwst"), r.stderr
        assert "nothing was changed" in r.stderr
        assert "hint: run the command as the store's owner: `runuser -u snapwst -- snapws" in (
            r.stderr
        )
        assert "Traceback" not in r.stderr
    for args in (["status"], ["log"], ["diff"], ["show"], ["verify"], ["du"]):
        r = run_cli("-C", ws, *args, cwd=area.root, check=False, env=env)
        assert r.returncode == 0, (args, r.stderr)
    assert not_the_users(area, store) == []
    log = as_user(area, "-C", ws, "log", "--json")
    assert log.returncode == 0, log.stderr
    assert len(json.loads(log.stdout)["snapshots"]) == 1
    # the user goes on as before
    r = as_user(area, "-C", ws, "commit", "-m", "mine")
    assert r.returncode == 0, r.stderr
    r = as_user(area, "-C", ws, "gc", "--grace", "0")
    assert r.returncode == 0, r.stderr


def test_root_without_a_store_is_told_whose_workspace_it_is(
    area: UserArea, users_ws: tuple[Path, Path]
) -> None:
    ws, store = users_ws
    r = run_cli("-C", ws, "status", cwd=area.root, check=False)
    assert r.returncode == 3, r.stderr
    assert r.stderr.splitlines()[0] == (
        f"snapws: error: {ws} is inside a snapws workspace of snapwst (uid {area.uid}), "
        f"in its store {store}, which is not one of this user's (root (uid 0))"
    )
    assert f"SNAPWS_STORE={store} snapws" in r.stderr
    assert "runuser -u snapwst -- snapws" in r.stderr
    assert run_cli("-C", ws, "status", cwd=area.root, env={"SNAPWS_STORE": str(store)}).stdout


def test_files_root_left_in_a_users_store_are_named_with_the_chown(
    area: UserArea, users_ws: tuple[Path, Path]
) -> None:
    """A store damaged before root was refused: a directory of root's in
    it that the next command must remove (here in trash/, as an
    interrupted gc leaves a layer)."""
    ws, store = users_ws
    left = store / "trash" / "0123abcd"
    left.mkdir()
    (left / "f").write_text("x")
    for args in (["log"], ["status"], ["commit", "-m", "x"]):
        r = as_user(area, "-C", ws, *args)
        assert r.returncode == 9, (args, r.stderr)
        assert f"holds {left}, owned by root (uid 0), not by the store's owner snapwst" in (
            r.stderr
        )
        assert f"hint: give the store's files back: `sudo chown -R snapwst {store}`" in r.stderr
    subprocess.run(["chown", "-R", f"{area.uid}:{area.gid}", str(store)], check=True)
    r = as_user(area, "-C", ws, "log")
    assert r.returncode == 0, r.stderr
    assert not left.exists()


def test_a_permission_error_on_another_users_file_in_the_store_names_it(tmp_path: Path) -> None:
    """As an interrupted gc meets a layer of root's in a user's store (the
    OS names the layer's path): the highest such directory is named, with
    the chown; an error on a file of the store's owner stays as it was."""
    from snapws.errors import ExitCode, PermissionDeniedError
    from snapws.ops.recovery import foreign_files_error
    from snapws.store.store import Store

    store = Store.create(tmp_path / "st")
    layer = store.root / "layers" / ("97" * 16)
    (layer / "tree" / "d").mkdir(parents=True)
    os.chown(layer, 4242, 4242)
    os.chown(layer / "tree", 4242, 4242)
    e = PermissionError(13, "Permission denied", str(layer / "tree" / "d"))
    err = foreign_files_error(store, e)
    assert err is not None and err.exit_code == ExitCode.UNSUPPORTED
    assert f"the store {store.root} holds {layer}, owned by uid 4242" in err.message
    assert err.hint is not None and f"sudo chown -R root {store.root}" in err.hint
    wrapped = PermissionDeniedError("permission denied: somewhere")
    wrapped.__cause__ = e
    assert foreign_files_error(store, wrapped) is not None
    os.chown(layer, 0, 0)
    os.chown(layer / "tree", 0, 0)
    assert foreign_files_error(store, e) is None


def test_root_reading_a_big_manifest_leaves_no_cache_in_a_users_store(area: UserArea) -> None:
    """A manifest big enough for fences (snapws.store.manifests): root's
    reads compute them and keep nothing; the owner's reads keep them."""
    ws = area.root / "big"
    area.run("mkdir", ws)
    area.run("sh", "-c", f"cd {ws} && for i in $(seq 3000); do echo $i > file-$i.txt; done")
    r = as_user(area, "init", "--backend", "plain", ws)
    assert r.returncode == 0, r.stderr
    store = area.root / ".local" / "share" / "snapws"
    area.run("sh", "-c", f"echo changed > {ws}/file-7.txt")
    env = {"SNAPWS_STORE": str(store)}
    for args in (["status"], ["diff"], ["show", "--stat"], ["log"]):
        r = run_cli("-C", ws, *args, cwd=area.root, check=False, env=env)
        assert r.returncode == 0, (args, r.stderr)
    assert not_the_users(area, store) == []
    assert not (store / "cache" / "fences").exists() or not os.listdir(store / "cache" / "fences")
    for args in (["status"], ["diff"], ["show", "--stat"]):
        assert as_user(area, "-C", ws, *args).returncode == 0
    assert os.listdir(store / "cache" / "fences"), "the owner's reads keep the fences"
