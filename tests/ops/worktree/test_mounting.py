"""snapws mount / umount / workspaces, and what mounting refuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import Workspace, mounts_under, run_cli


def _mounted(ws: Workspace) -> list[str]:
    return [t for p, t in mounts_under(ws.path) if p == str(ws.path)]


def test_umount_keeps_uncommitted_changes_and_mount_brings_them_back(
    workspace: Workspace,
) -> None:
    (workspace.path / "wip.txt").write_text("work in progress\n")
    workspace.run("umount")
    assert _mounted(workspace) == []
    assert list(workspace.path.iterdir()) == []  # the bare mount point
    listing = json.loads(workspace.run("--store", workspace.store, "workspaces", "--json").stdout)[
        "workspaces"
    ]
    assert [w["mount"] for w in listing] == ["unmounted"]
    workspace.run("--store", workspace.store, "mount")
    assert _mounted(workspace) == ["overlay"]
    assert (workspace.path / "wip.txt").read_text() == "work in progress\n"
    assert workspace.porcelain() == ["?? wip.txt"]


def test_mount_refuses_to_hide_files_written_while_unmounted(workspace: Workspace) -> None:
    workspace.run("umount")
    (workspace.path / "stray.txt").write_text("written while unmounted\n")
    r = workspace.run("--store", workspace.store, "mount", check=False)
    assert r.returncode == 12, r.stderr
    assert "not empty" in r.stderr and "hint:" in r.stderr
    assert _mounted(workspace) == []
    assert (workspace.path / "stray.txt").exists()


def test_mount_refuses_a_foreign_mount_on_the_workspace(workspace: Workspace) -> None:
    workspace.run("umount")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(workspace.path)], check=True)
    try:
        r = workspace.run("--store", workspace.store, "mount", check=False)
        assert r.returncode == 10, r.stderr
        assert "something else is mounted" in r.stderr
        assert _mounted(workspace) == ["tmpfs"]
    finally:
        subprocess.run(["umount", str(workspace.path)], check=True)


def test_umount_busy_then_lazy(workspace: Workspace) -> None:
    proc = subprocess.Popen(["sleep", "30"], cwd=workspace.path)
    try:
        r = workspace.run("umount", check=False)
        assert r.returncode == 10, r.stderr
        assert "hint:" in r.stderr
        workspace.run("umount", "--lazy")
        assert _mounted(workspace) == []
    finally:
        proc.kill()
        proc.wait()


def test_status_of_an_unmounted_workspace_says_so_never_clean(workspace: Workspace) -> None:
    (workspace.path / "wip.txt").write_text("work in progress\n")
    workspace.run("umount")
    for args in (["status"], ["status", "--porcelain"], ["status", "--json"]):
        r = workspace.run("--store", workspace.store, *args, check=False)
        assert r.returncode == 19, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        assert "clean" not in r.stderr
        assert f"snapws: error: the workspace {workspace.path} is not mounted" in r.stderr
        assert f"hint: mount it with `snapws -C {workspace.path} mount`" in r.stderr
    workspace.run("--store", workspace.store, "mount")
    assert workspace.porcelain() == ["?? wip.txt"]


def test_stray_entries_that_block_a_mount_are_named(workspace: Workspace) -> None:
    workspace.run("umount")
    names = [f"stray{i:02}.txt" for i in range(12)]
    for name in names:
        (workspace.path / name).write_text("x\n")
    for verb in ("mount", "status"):
        r = workspace.run("--store", workspace.store, verb, check=False)
        assert r.returncode == 12, r.stderr
        assert "12 entries written there while it was unmounted: " in r.stderr
        assert ", ".join(names[:10]) + " ... and 2 more" in r.stderr
        assert f"through `snapws -C {workspace.path} mount`" in r.stderr
    for name in names[1:]:
        (workspace.path / name).unlink()
    r = workspace.run("--store", workspace.store, "status", check=False)
    assert "1 entry written there while it was unmounted: stray00.txt\n" in r.stderr


def test_workspaces_outside_a_workspace_lists_the_default_store(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "f").write_text("f\n")
    (tmp_path / "elsewhere").mkdir()
    run_cli("init", "--backend", "plain", tmp_path / "proj", cwd=tmp_path)  # the default store
    listed = run_cli("workspaces", cwd=tmp_path / "elsewhere").stdout
    assert str(tmp_path / "proj") in listed and "[plain]" in listed, listed


def test_leftovers_of_a_killed_command_are_cleared(tmp_path: Path) -> None:
    """A write of the workspace record killed before its rename leaves a
    temporary copy; a deletion killed between its move to trash and its
    removal leaves trash/. The next commit sweeps the first, the next
    read-only command (which takes the lock to recover) the second."""
    store = tmp_path / "store"
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "f").write_text("f\n")
    run_cli("--store", store, "init", "--backend", "plain", tmp_path / "ws", cwd=tmp_path)
    (wsdir,) = (store / "workspaces").iterdir()
    torn = wsdir / ".state.json.tmp-99999"
    torn.write_text("{")
    (store / "trash" / "layer-x").mkdir()
    (store / "trash" / "layer-x" / "a").write_text("a")
    status = run_cli("--store", store, "-C", tmp_path / "ws", "status", "--porcelain", cwd=tmp_path)
    assert status.stdout == ""
    assert list((store / "trash").iterdir()) == []
    (tmp_path / "ws" / "g").write_text("g\n")
    run_cli("--store", store, "-C", tmp_path / "ws", "commit", "-m", "g", cwd=tmp_path)
    assert not torn.exists()


def test_doctor_says_a_plain_workspace_is_an_ordinary_directory(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    store = tmp_path / "store"
    run_cli("--store", store, "init", "--backend", "plain", tmp_path / "ws", cwd=tmp_path)
    text = run_cli("--store", store, "-C", tmp_path / "ws", "doctor", cwd=tmp_path).stdout
    assert f"workspace: {tmp_path / 'ws'}: an ordinary directory" in text, text
