"""snapws doctor: reports the machine and the store, names the backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import WorkspaceFactory, run_cli, unmount_all_under

from snapws.mounts.mounter import mount_overlay
from snapws.mounts.plan import MountPlan


def _checks(out: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_doctor_as_root_on_ext4_picks_the_kernel_backend(tmp_path: Path) -> None:
    r = run_cli("--store", tmp_path / "store", "doctor", "--json", cwd=tmp_path)
    report = json.loads(r.stdout)
    assert report["backend"] == "kernel"
    assert report["ok"] is True
    checks = _checks(r.stdout)
    assert checks["privileges"]["status"] == "ok"
    assert checks["overlayfs"]["status"] == "ok"
    assert checks["store on overlay"]["status"] == "ok"
    assert checks["store d_type"]["status"] == "ok"
    text = run_cli("--store", tmp_path / "store", "doctor", cwd=tmp_path).stdout
    assert "backend: kernel" in text


def test_doctor_refuses_a_store_on_overlay_and_says_why(tmp_path: Path) -> None:
    lower1, lower2, target = tmp_path / "l1", tmp_path / "l2", tmp_path / "ovl"
    for d in (lower1, lower2, target):
        d.mkdir()
    # a read-only view is enough to be "on overlay"; the store dir exists below it
    (lower1 / "store").mkdir()
    mount_overlay(MountPlan(target=target, lowers=(lower1, lower2)))
    try:
        r = run_cli("--store", target / "store", "doctor", "--json", cwd=tmp_path, check=False)
        assert r.returncode == 9, r.stderr
        report = json.loads(r.stdout)
        assert report["backend"] is None
        check = _checks(r.stdout)["store on overlay"]
        assert check["status"] == "warn"
        assert "volume" in check["fix"]
        # nothing can run on a read-only overlay: every backend says why
        backends = {b["name"]: b for b in report["backends"]}
        assert not any(b["available"] for b in backends.values())
        assert "overlay" in backends["kernel"]["reason"]
        assert "cannot write" in backends["plain"]["reason"]
    finally:
        unmount_all_under(tmp_path)
    assert not os.path.ismount(target)


def test_doctor_probes_every_backend_and_leaves_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = run_cli("--store", store, "doctor", "--json", cwd=tmp_path)
    report = json.loads(r.stdout)
    backends = {b["name"]: b for b in report["backends"]}
    assert list(backends) == ["kernel", "rootless", "fuse", "plain"]
    assert backends["kernel"]["available"] is True
    assert backends["rootless"]["available"] is False  # root uses the kernel backend
    assert backends["rootless"]["reason"] and backends["rootless"]["fix"]
    assert backends["plain"]["available"] is True
    if shutil.which("fuse-overlayfs"):
        assert backends["fuse"]["available"] is True, backends["fuse"]["reason"]
        assert _checks(r.stdout)["fuse-overlayfs"]["status"] == "ok"
    checks = _checks(r.stdout)
    for name in ("kernel", "overlay defaults", "user namespaces", "userxattr", "/dev/fuse"):
        assert name in checks, name
    assert "redirect_dir=" in checks["overlay defaults"]["found"]
    assert checks["user namespaces"]["status"] == "ok"  # a real unshare in a child
    # the probes mounted and removed their test directories
    assert os.listdir(tmp_path) == []
    text = run_cli("--store", store, "doctor", cwd=tmp_path).stdout
    assert "\nbackends:\n  kernel    available: " in text
    assert "  rootless  unavailable: " in text


def test_doctor_as_a_user_names_a_backend_without_root() -> None:
    from backends.users import UserArea

    area = UserArea()
    try:
        r = area.snapws("--store", area.root / "store", "doctor", "--json")
        report = json.loads(r.stdout)
        backends = {b["name"]: b for b in report["backends"]}
        assert backends["kernel"]["available"] is False
        assert "needs root" in backends["kernel"]["reason"]
        # auto gives a user a directory all her processes see: plain, never
        # rootless (listed, available, taken only when asked for)
        assert report["backend"] == "plain"
        assert backends["rootless"]["available"] is True, backends["rootless"]["reason"]
        assert "kernel skipped: needs root" in report["reason"]
        assert "rootless skipped" not in report["reason"]
    finally:
        area.cleanup()


def test_doctor_says_whether_its_workspace_is_held(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"a.txt": "one\n"})
    free = ws.json("doctor")["workspace"]
    assert free == {"path": str(ws.path), "backend": "kernel", "held": False, "base": None}
    assert f"\nworkspace: {ws.path}: not held (" in ws.run("doctor").stdout
    first = ws.head()
    holder = subprocess.Popen(["sleep", "60"], cwd=ws.path)  # keeps the mount busy
    try:
        (ws.path / "a.txt").write_text("two\n")
        ws.commit("while held")
        report = ws.json("doctor")
        assert report["workspace"]["held"] is True
        assert report["workspace"]["base"] == first  # the live mount is still on it
        text = ws.run("doctor").stdout
        assert (
            f"\nworkspace: {ws.path}: held: its mount still shows {first[:12]} below the "
            "changes; commit and checkout go through the live mount until nothing holds it\n"
            in text
        ), text
    finally:
        holder.kill()
        holder.wait()
    # nothing holds it any more, but the mount is still on the old chain
    report = ws.json("doctor")
    assert report["workspace"]["held"] is False and report["workspace"]["base"] == first
    assert (
        f"\nworkspace: {ws.path}: no longer held: its mount shows {first[:12]} below the "
        "changes until the next command that changes it, or `snapws mount`\n"
        in ws.run("doctor").stdout
    )
    # the next command that changes it re-bases the mount
    ws.run("mount")
    assert ws.json("doctor")["workspace"] == dict(free)


def test_doctor_outside_a_workspace_names_none(tmp_path: Path) -> None:
    r = run_cli("--store", tmp_path / "store", "doctor", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["workspace"] is None
    text = run_cli("--store", tmp_path / "store", "doctor", cwd=tmp_path).stdout
    assert "workspace:" not in text


def test_doctor_reports_a_pending_journal(make_workspace: WorkspaceFactory) -> None:
    """An operation interrupted after its journal (killed) is a problem doctor
    names (which operation, since when, how to finish or give it up); none
    pending is ok."""
    ws = make_workspace(spec={"a.txt": "one\n"})
    assert _checks(ws.run("doctor", "--json").stdout)["pending operation"]["status"] == "ok"
    (ws.path / "a.txt").write_text("two\n")
    killed = ws.run("commit", "-m", "x", env={"SNAPWS_CRASH_AT": "commit:journaled"}, check=False)
    assert killed.returncode == -9, killed.stderr
    journal = ws.store / "journal.json"
    report = ws.run("doctor", "--json", check=False)
    check = _checks(report.stdout)["pending operation"]
    assert check["status"] == "fail"
    assert check["found"].startswith("an interrupted commit is pending since 20")
    assert str(journal) in check["found"]
    assert "`snapws status`) to finish the commit" in check["fix"]
    assert f"move {journal} out of the store" in check["fix"]
    assert "[FAIL] pending operation: an interrupted commit" in ws.run("doctor", check=False).stdout
    ws.run("status")  # finishes it
    assert _checks(ws.run("doctor", "--json").stdout)["pending operation"]["status"] == "ok"


def test_doctor_from_her_home_checks_the_store_her_workspaces_get(tmp_path: Path) -> None:
    """An ordinary user in her home, whose parent she cannot write: doctor
    checks her data store (~/.local/share/snapws), where `init` of a
    directory here puts a workspace's store, not one beside her home."""
    from backends.users import UserArea

    area = UserArea()
    try:
        homes = area.root / "homes"
        homes.mkdir()  # root's, 0755: she cannot write it
        home = homes / "alice"
        home.mkdir()
        os.chown(home, area.uid, area.gid)
        r = area.snapws("doctor", "--json", cwd=home, check=False, env={"HOME": str(home)})
        report = json.loads(r.stdout)
        assert r.returncode == 0, r.stderr
        assert report["backend"] == "plain", report
    finally:
        area.cleanup()
