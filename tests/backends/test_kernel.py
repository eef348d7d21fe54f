"""The kernel backend through the backend interface, for real (as root):
probe, mount, mount_state, owner_of, freeze/thaw, detach, unmount."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from backends.conftest import BackendFactory, mount_kind
from snapws.backends import get_backend
from snapws.errors import WorkspaceBusyError
from snapws.mounts import mounter
from snapws.mounts.plan import MountPlan
from snapws.store.store import Store


def test_probe_mounts_a_test_overlay_and_leaves_nothing(tmp_path: Path) -> None:
    found = get_backend("kernel").probe(tmp_path / "store-to-be")
    assert found.ok, found.reason
    assert "test overlay mount" in found.reason
    assert list(tmp_path.iterdir()) == []  # probe directory removed
    assert mount_kind(tmp_path) == []


def test_freeze_thaw_detach_on_a_plain_plan(mount_guard: Path) -> None:
    for sub in ("lower", "upper", "work", "m"):
        (mount_guard / sub).mkdir()
    (mount_guard / "lower" / "f").write_text("f\n")
    plan = MountPlan(
        target=mount_guard / "m",
        lowers=(mount_guard / "lower",),
        upper=mount_guard / "upper",
        work=mount_guard / "work",
    )
    backend = get_backend("kernel")
    backend.mount(plan)
    m = plan.target
    assert mount_kind(m) == ["overlay"]
    backend.freeze(m, "commit")
    info = mounter.mount_at(m)
    assert info is not None and mounter.is_readonly(info)
    with pytest.raises(OSError) as err:
        (m / "g").write_text("g")
    assert err.value.errno == errno.EROFS
    backend.thaw(m)
    with open(m / "g", "w"), pytest.raises(WorkspaceBusyError) as busy:
        backend.freeze(m, "test the freeze")
    assert "cannot test the freeze" in busy.value.message
    assert busy.value.holders[0][0] == os.getpid()
    backend.freeze(m, "commit")
    backend.detach(m)
    assert mount_kind(m) == []
    assert (mount_guard / "upper" / "g").exists()


def test_mount_state_and_owner_of_a_kernel_workspace(
    make_backend_workspace: BackendFactory,
) -> None:
    ws = make_backend_workspace("kernel", spec={"f": "1\n"})
    store = Store.open(ws.store)
    (state,) = store.workspaces()
    backend = get_backend("kernel")
    assert backend.mount_state(store, state) == "mounted"
    assert backend.owner_of(ws.path) == (store.root, state.id)
    assert get_backend("fuse").owner_of(ws.path) is None
    backend.freeze(ws.path, "test")
    assert backend.mount_state(store, state) == "frozen"
    backend.thaw(ws.path)
    backend.unmount(ws.path)
    assert backend.mount_state(store, state) == "unmounted"
    # something else mounted there is foreign; ensure_shown refuses it
    mounter.mount_overlay(
        MountPlan(target=ws.path, lowers=(store.layer_tree(store.chain(state.head)[-1]),))
    )
    assert backend.mount_state(store, state) == "foreign"
    r = ws.run("mount", check=False)
    assert r.returncode == 10, r.stderr
    assert "something else is mounted" in r.stderr
