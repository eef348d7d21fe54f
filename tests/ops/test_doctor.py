"""snapws doctor: reports the machine and the store, names the backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_cli, unmount_all_under

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
        assert check["status"] == "fail"
        assert "volume" in check["fix"]
    finally:
        unmount_all_under(tmp_path)
    assert not os.path.ismount(target)
