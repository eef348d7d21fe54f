"""docs/quickstart.sh runs as documented: history, a branch, a rollback, and
no mount left behind. Needs root and real overlay mounts (fails otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import MountError
from snapws.mounts.mounter import detach, read_mountinfo

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "quickstart.sh"

pytestmark = pytest.mark.root


def mounts_below(root: Path) -> list[Path]:
    """Mount points at or below ``root``, innermost (newest) last."""
    real = Path(os.path.realpath(root))
    return [m.mountpoint for m in read_mountinfo() if m.mountpoint.is_relative_to(real)]


@pytest.fixture
def demo_root(tmp_path: Path) -> Iterator[Path]:
    """tmp_path; teardown detaches (MNT_DETACH) whatever the script left mounted."""
    try:
        yield tmp_path
    finally:
        for _ in range(20):
            left = mounts_below(tmp_path)
            if not left:
                break
            try:
                detach(left[-1])
            except MountError:
                subprocess.run(["umount", "-l", str(left[-1])], check=False)


def test_quickstart(demo_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    env.update(
        DEMO=str(demo_root / "demo"),
        XDG_CONFIG_HOME=str(demo_root / "no-config"),
        XDG_DATA_HOME=str(demo_root / "data"),  # the default store: $XDG_DATA_HOME/snapws
        # the snapws installed beside this interpreter comes first
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    proc = subprocess.run(
        ["sh", str(SCRIPT)],
        cwd=demo_root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: the `set -x` trace stays in order
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    lines = out.splitlines()
    # the rollback: after `reset --hard HEAD~1`, app.py is the committed
    # "second version", not the "experiment"
    shown = lines[lines.index("+ cat src/app.py") + 1]
    assert shown == 'print("hello, world")', out
    assert "HEAD is now at" in out
    assert "[experiment " in out
    assert f", store {demo_root / 'data' / 'snapws'})" in out  # init says where
    assert "quickstart done: the store is your own" in out
    assert mounts_below(demo_root) == [], out
    assert (demo_root / "data" / "snapws" / "snapws-store.json").is_file()
    assert not (demo_root / "demo" / ".snapws").exists()
