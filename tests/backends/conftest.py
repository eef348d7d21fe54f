"""Workspaces of a chosen backend, made by ``snapws init --backend NAME`` as root.

``backend_workspace`` is the workspace of the backend named by the
``backend_name`` fixture (parametrize it: ``@pytest.mark.parametrize(
"backend_name", ROOT_BACKENDS)``); ``make_backend_workspace`` makes more.
They serve the backends root runs (kernel, fuse, plain); the rootless
backend's tests run as another user (tests/backends/users.py).

Teardown unmounts every kernel and fuse-overlayfs mount under the test's
``tmp_path`` (conftest's ``mount_guard``), even when the test failed. A
fuse test fails, never skips, when fuse-overlayfs is installed but cannot
mount; it skips only where fuse-overlayfs is not installed (CI installs it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Workspace, run_cli
from helpers import Spec, gen, mounts_under

from snapws.mounts import fuse

#: Backends root can run on a CI machine, in the order auto tries them.
ROOT_BACKENDS = ("kernel", "fuse", "plain")

BackendFactory = Callable[..., Workspace]


def require_backend(name: str) -> None:
    """Skip a fuse test where fuse-overlayfs is not installed (only there)."""
    if name == "fuse" and fuse.find_program() is None:
        pytest.skip("fuse-overlayfs is not installed (CI installs it)")


def mount_kind(path: Path) -> list[str]:
    """Fstypes mounted exactly on ``path``: ["overlay"], ["fuse.snapws-..."] or []."""
    return [t for p, t in mounts_under(path) if p == str(path)]


def backend_factory(root: Path) -> BackendFactory:
    """``make(backend, name="ws", spec=None, branch=None, store=None)``: build
    ``spec`` in ``root/name`` and ``snapws init --backend BACKEND`` it, with
    its store at ``root/.snapws`` (the default) unless given. Asserts what is
    mounted on it."""
    outside = root / "outside"
    outside.mkdir(exist_ok=True)

    def make(
        backend: str,
        name: str = "ws",
        spec: Spec | None = None,
        branch: str | None = None,
        store: Path | None = None,
    ) -> Workspace:
        require_backend(backend)
        path = root / name
        store_path = store or root / ".snapws"  # the default: found without the mount
        if spec is not None:
            gen(path, spec)
        args: list[str | Path] = ["--store", store_path, "init", "--backend", backend, path]
        if branch:
            args += ["--branch", branch]
        run_cli(*args, cwd=outside)
        kinds = mount_kind(path)
        if backend == "kernel":
            assert kinds == ["overlay"], f"{path}: {kinds}"
        elif backend == "fuse":
            assert len(kinds) == 1 and kinds[0].startswith("fuse.snapws-"), f"{path}: {kinds}"
        elif backend == "plain":
            assert kinds == [], f"{path}: {kinds}"
        return Workspace(path, store_path, outside)

    return make


@pytest.fixture
def make_backend_workspace(mount_guard: Path) -> BackendFactory:
    """A factory of workspaces of any root-run backend below ``tmp_path``;
    every mount is undone after the test."""
    return backend_factory(mount_guard)


@pytest.fixture(params=ROOT_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test (every root-run backend unless parametrized)."""
    return str(request.param)


@pytest.fixture
def backend_workspace(make_backend_workspace: BackendFactory, backend_name: str) -> Workspace:
    """An empty workspace of ``backend_name``, made by ``snapws init --backend``."""
    return make_backend_workspace(backend_name)
