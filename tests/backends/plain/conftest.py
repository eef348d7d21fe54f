"""Plain workspaces (``snapws init --backend plain``) for the plain backend's
tests: ``make_plain(name="ws", spec=None, branch=None)`` builds ``spec`` in
``tmp_path/name`` and makes it a workspace with the default store
(``tmp_path/.snapws``, found from the path alone: nothing is mounted).

Helpers read a workspace's layers and index straight from the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Workspace
from helpers import Spec

from backends.conftest import BackendFactory

PlainFactory = Callable[..., Workspace]


@pytest.fixture
def make_plain(make_backend_workspace: BackendFactory) -> PlainFactory:
    def make(name: str = "ws", spec: Spec | None = None, branch: str | None = None) -> Workspace:
        return make_backend_workspace("plain", name=name, spec=spec, branch=branch)

    return make


def inodes(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, ctime_ns) of every non-directory below ``root``: a node
    nobody rewrote, chmod'ed or touched keeps both."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_ctime_ns)
    return out


def layer_tree(ws: Workspace, sid: str) -> Path:
    """The tree of the top layer of snapshot ``sid``."""
    import json

    chain = json.loads((ws.store / "chains" / f"{sid}.json").read_text())
    return ws.store / "layers" / chain[-1] / "tree"


@pytest.fixture
def ws_plain(make_plain: PlainFactory) -> Workspace:
    """A plain workspace holding one file."""
    return make_plain(spec={"f": "f\n"})
