"""snapws.mounts.plan: what to mount, as pure data (no mounts here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapws.mounts.plan import FIXED_OPTIONS, MountPlan


def test_absolute_dirs_and_their_common_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plan = MountPlan(
        Path("mnt"), (Path("store/l2"), tmp_path / "store/l1"), Path("ws/upper"), Path("ws/work")
    )
    base, lowers, upper, work = plan.absolute_dirs()
    assert base == str(tmp_path)
    assert lowers == [str(tmp_path / "store/l2"), str(tmp_path / "store/l1")]  # order kept
    assert (upper, work) == (str(tmp_path / "ws/upper"), str(tmp_path / "ws/work"))


def test_a_view_has_no_upper_and_its_base_is_the_lowers_parent(tmp_path: Path) -> None:
    plan = MountPlan(tmp_path / "v", (tmp_path / "a" / "x", tmp_path / "a" / "y"))
    assert plan.is_view
    assert plan.absolute_dirs() == (
        os.fspath(tmp_path / "a"),
        [os.fspath(tmp_path / "a" / "x"), os.fspath(tmp_path / "a" / "y")],
        None,
        None,
    )


def test_options_and_inconsistent_plans(tmp_path: Path) -> None:
    plan = MountPlan(tmp_path, (tmp_path,), userxattr=True)
    assert plan.options() == [*FIXED_OPTIONS, ("userxattr", None)]
    with pytest.raises(ValueError):
        MountPlan(tmp_path, ())
    with pytest.raises(ValueError):
        MountPlan(tmp_path, (tmp_path,), upper=tmp_path)
    with pytest.raises(ValueError):
        MountPlan(tmp_path, (tmp_path,), source="a,b")
