"""Crash safety of the fuse backend: the robustness suite's commit and
checkout/reset crash tests (tests/robust/test_crash.py), run on a workspace
made with ``backend = "fuse"``: SIGKILL at the named steps, then the next
command recovers, through the fuse backend's freeze, detach and mount. (The
kernel backend runs the whole suite in tests/robust.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from robust import test_crash as shared
from robust.conftest import Workspace

from snapws.mounts import fuse

pytestmark = pytest.mark.skipif(
    fuse.find_program() is None, reason="fuse-overlayfs is not installed (CI installs it)"
)


@pytest.fixture
def fuse_ws(tmp_path: Path) -> Iterator[Workspace]:
    """The robustness suite's workspace, configured for the fuse backend."""
    assert os.geteuid() == 0, "the fuse backend tests need root"
    it = Workspace(tmp_path)
    it.set_config(lock_timeout=30, backend="fuse")
    try:
        yield it
    finally:
        it.teardown()


def is_fuse(ws: Workspace) -> bool:
    """True if a fuse mount of snapws is on the workspace."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return any(f" {ws.path} " in line and " - fuse.snapws-" in line for line in lines)


#: The steps where the fuse backend acts differently (freeze, mount beneath, the
#: upperdir made canonical, mount); the store steps between are the kernel's.
COMMIT_STEPS = [
    "commit:frozen",
    "commit:journaled",
    "commit:staged",
    "commit:beneath",
    "commit:layer-published",
    "commit:state-written",
    "commit:shown",
]
SWITCH_STEPS = ["checkout:journaled", "checkout:beneath", "checkout:shown"]


def test_the_chosen_steps_exist() -> None:
    assert set(COMMIT_STEPS) <= set(shared.steps("commit"))
    assert set(SWITCH_STEPS) <= set(shared.steps("checkout"))


@pytest.mark.parametrize("step", COMMIT_STEPS)
def test_crash_during_a_fuse_commit(fuse_ws: Workspace, step: str) -> None:
    shared.test_crash_during_commit(fuse_ws, step)
    assert is_fuse(fuse_ws)


@pytest.mark.parametrize("step", SWITCH_STEPS)
def test_crash_during_a_fuse_reset_that_keeps_changes(fuse_ws: Workspace, step: str) -> None:
    # (reset without --hard keeps the upperdir: the case with the most to do)
    shared.test_crash_during_switch(fuse_ws, "reset-keep", step)
    assert is_fuse(fuse_ws)
