"""Asking for a backend that cannot run here: exit 9 (UNSUPPORTED), a message
that says why, and a hint naming the backend that would work. The non-root
cases run the real CLI as the test user ``snapwst`` (tests/backends/users.py)
in a directory it owns; nothing changes on refusal."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from backends.users import UserArea
from snapws.mounts import fuse


@pytest.fixture
def area() -> Iterator[UserArea]:
    a = UserArea()
    try:
        yield a
    finally:
        a.cleanup()


def refused(proc_stderr: str, backend: str, suggested: str) -> None:
    assert f"snapws: error: the {backend} backend cannot run here: " in proc_stderr
    assert f"hint: use `--backend {suggested}`, which works here" in proc_stderr


def auto_choice(area: UserArea) -> str:
    """The backend auto picks for the test user (rootless where user
    namespaces work, else plain), as doctor reports it."""
    r = area.snapws("--store", area.root / "probe-store", "doctor", "--json", check=False)
    return str(json.loads(r.stdout)["backend"])


def test_kernel_as_non_root_fails_naming_a_backend_that_works(area: UserArea) -> None:
    (area.root / "ws").mkdir()
    (area.root / "ws" / "f").write_text("data\n")
    os.chown(area.root / "ws", area.uid, area.gid)
    os.chown(area.root / "ws" / "f", area.uid, area.gid)
    want = auto_choice(area)
    assert want in ("rootless", "plain")
    r = area.snapws("init", "--backend", "kernel", "ws", check=False)
    assert r.returncode == 9, r.stderr
    refused(r.stderr, "kernel", want)
    assert "needs root" in r.stderr
    # nothing changed: no store, the content is where it was
    assert sorted(os.listdir(area.root)) == ["ws"]
    assert (area.root / "ws" / "f").read_text() == "data\n"


def test_fuse_as_non_root_fails_naming_a_backend_that_works(area: UserArea) -> None:
    if fuse.find_program() is None:
        pytest.skip("fuse-overlayfs is not installed (CI installs it)")
    want = auto_choice(area)
    r = area.snapws("init", "--backend", "fuse", "ws", check=False)
    assert r.returncode == 9, r.stderr
    refused(r.stderr, "fuse", want)
    assert not (area.root / "ws").exists()


def test_rootless_as_root_fails_naming_the_kernel_backend(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    r = run_cli("init", "--backend", "rootless", "ws", cwd=tmp_path, check=False)
    assert r.returncode == 9, r.stderr
    refused(r.stderr, "rootless", "kernel")
    assert sorted(os.listdir(tmp_path)) == ["ws"]


def test_the_configured_backend_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    r = run_cli("init", "ws", cwd=tmp_path, check=False, env={"SNAPWS_BACKEND": "rootless"})
    assert r.returncode == 9, r.stderr
    refused(r.stderr, "rootless", "kernel")
    bad = run_cli("init", "ws", cwd=tmp_path, check=False, env={"SNAPWS_BACKEND": "zfs"})
    assert bad.returncode == 13, bad.stderr  # CONFIG
    assert "backend must be one of" in bad.stderr
