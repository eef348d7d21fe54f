"""One store, two backends: snapshots committed through a kernel overlay
workspace are checked out by a plain workspace (the same trees, the same
ids), and the plain workspace's commits by the kernel workspace."""

from __future__ import annotations

import os
import shutil

from helpers import File, Symlink, state_diff, tree_state

from backends.conftest import BackendFactory

BASE = {
    "a.txt": "alpha\n",
    "run.sh": File("#!/bin/sh\n", mode=0o755, xattrs={"user.k": b"v"}),
    "link": Symlink("a.txt"),
    "dir": {"x": "x\n", "sub": {"y": "y\n"}},
    "gone": {"g": "g\n"},
}


def test_kernel_snapshots_in_a_plain_workspace_and_back(
    make_backend_workspace: BackendFactory,
) -> None:
    kernel = make_backend_workspace("kernel", name="k", spec=BASE)
    k = kernel.path
    s0 = kernel.head()
    t0 = tree_state(k)
    (k / "a.txt").write_text("alpha 2\n")
    shutil.rmtree(k / "gone")
    (k / "gone").write_text("a file now\n")
    (k / "dir" / "sub" / "y").unlink()
    os.chmod(k / "dir", 0o750)
    s1 = kernel.commit("kernel change")
    t1 = tree_state(k)

    plain = make_backend_workspace("plain", name="p", branch="p")  # an empty directory
    p = plain.path
    plain.run("checkout", s0)
    assert plain.head() == s0
    assert state_diff(tree_state(p), t0) == []
    assert plain.porcelain() == []
    plain.run("checkout", s1)
    assert state_diff(tree_state(p), t1) == []
    assert plain.porcelain() == []
    # the same snapshots, listed by both
    assert plain.log_ids(s1) == kernel.log_ids() == [s1, s0]

    plain.run("checkout", "-b", "from-plain", s1)
    (p / "gone").unlink()
    (p / "gone").mkdir()
    (p / "gone" / "again").write_text("again\n")
    (p / "dir" / "new").write_text("new\n")
    os.chmod(p / "run.sh", 0o700)
    s2 = plain.commit("plain change")
    t2 = tree_state(p)
    kernel.run("checkout", s2)
    assert kernel.head() == s2
    assert state_diff(tree_state(k), t2) == []
    assert kernel.porcelain() == []
    kernel.run("checkout", "main")
    assert state_diff(tree_state(k), t1) == []
    plain.run("verify")
