"""snapws.mounts.newapi: the new mount API path on its own (we are root).

mount_overlay's choice between this path, the bind of a single view and the
legacy path is tested in test_mounter.py."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import MountError
from snapws.mounts import newapi
from snapws.mounts.mounter import detach, mount_at
from snapws.mounts.plan import MountPlan
from snapws.mounts.syscalls import FallBack

pytestmark = pytest.mark.root


@pytest.fixture
def view(tmp_path: Path) -> Iterator[MountPlan]:
    """A plan for a view of one lower layer; unmounted afterwards."""
    lower, target = tmp_path / "lower", tmp_path / "view"
    lower.mkdir()
    (lower / "f").write_text("a")
    target.mkdir()
    yield MountPlan(target=target, lowers=(lower,))
    while mount_at(target) is not None:
        detach(target)


def test_mounts_a_single_lower_view_over_an_empty_layer(view: MountPlan) -> None:
    newapi.mount_new(view, view.target)
    info = mount_at(view.target)
    assert info is not None
    assert info.fstype == "overlay"
    assert len(info.super_values("lowerdir+")) == 2
    assert (view.target / "f").read_text() == "a"


def test_a_missing_fsopen_asks_for_the_fallback(
    view: MountPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(newapi, "_SYS_FSOPEN", 999_999)  # ENOSYS, like an old kernel
    with pytest.raises(FallBack, match="fsopen"):
        newapi.mount_new(view, view.target)
    assert mount_at(view.target) is None


def test_a_refused_empty_layer_carries_the_error(
    view: MountPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = newapi.syscall

    def old_kernel(what: str, *args: int | bytes | None) -> int:
        if what == "fsconfig create":
            raise OSError(errno.EINVAL, f"{what}: Invalid argument")
        return real(what, *args)

    monkeypatch.setattr(newapi, "syscall", old_kernel)
    with pytest.raises(newapi.EmptyLayerRefused) as caught:
        newapi.mount_new(view, view.target)
    assert isinstance(caught.value.error, MountError)
    assert "EINVAL" in caught.value.error.message
    assert mount_at(view.target) is None


def test_move_beneath_of_nothing_mounted_is_a_mount_error(tmp_path: Path) -> None:
    with pytest.raises(MountError):
        newapi.move_beneath(tmp_path / "missing", tmp_path)
