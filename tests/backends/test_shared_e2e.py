"""One end-to-end suite over every backend: the same scenarios, the same
command lines, the same expected results.

Variants (every scenario runs for each; only the open-for-writing test is
for the root-mounted overlays, and the one-store test runs on pairs):

- ``kernel``, ``fuse``, ``plain``: workspaces made and edited by root;
- ``rootless``: the kernel overlay in a user namespace, as the unprivileged
  test user ``snapwst`` (tests/backends/users.py); its mount lives only in
  the namespace, so every edit and every look at the tree runs through
  ``snapws run`` there;
- ``plain-user``: the plain backend as ``snapwst``.

A :class:`Driver` hides the difference: ``cli(*args)`` runs snapws on the
workspace as the right user, ``edit(*ops)`` applies file operations in the
workspace (in its namespace) and returns the resulting listing. The same
operations are applied to a model of the tree (:func:`apply_model`), so each
test knows, from the operations alone, the tree every backend must show and
the changes ``status --json`` / ``diff`` must report (:func:`expected_changes`,
an oracle independent of snapws). Every backend is held to that one answer.

The fuse and rootless variants fail, never skip, when their backend cannot
work here (CI installs fuse-overlayfs and creates ``snapwst``: .ci/run).
"""

from __future__ import annotations

import abc
import inspect
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import xxhash
from conftest import run_cli, unmount_all_under
from helpers import File, Symlink

from backends.conftest import BackendFactory, mount_kind
from backends.users import UserArea, require_rootless
from snapws.cli.gitformat import quote_path
from snapws.mounts import fuse

pytestmark = pytest.mark.root

#: Every variant; ``plain-user`` is the plain backend run by ``snapwst``.
VARIANTS = ("kernel", "fuse", "plain", "rootless", "plain-user")
ROOT_VARIANTS = ("kernel", "fuse", "plain")
BACKEND_OF = {"plain-user": "plain"}

# ---- file operations, on a workspace and on a model of it ----------------------

#: One file operation, JSON-ready: ("file", path, content, mode),
#: ("dir", path, mode), ("link", path, target), ("rm", path) (recursive),
#: ("chmod", path, mode), ("touch", path, mtime_ns). Modes are octal strings.
Op = tuple[str, ...]
#: A listing: path -> "d MODE", "f MODE CONTENT" or "l TARGET" (no root entry).
Tree = dict[str, str]


def write(path: str, content: str, mode: str = "644") -> Op:
    return ("file", path, content, mode)


def mkdir(path: str, mode: str = "755") -> Op:
    return ("dir", path, mode)


def link(path: str, target: str) -> Op:
    return ("link", path, target)


def rm(path: str) -> Op:
    return ("rm", path)


def chmod(path: str, mode: str) -> Op:
    return ("chmod", path, mode)


def touch(path: str, mtime_ns: int = 1_700_000_000 * 10**9) -> Op:
    """Set the mtime (and atime) only: no change for snapws."""
    return ("touch", path, str(mtime_ns))


def edit_tree(root: str, ops: Sequence[Sequence[str]]) -> dict[str, str]:
    """Apply ``ops`` below ``root`` (umask 022) and return the listing of
    ``root``. Self-contained: it also runs as a script (as the test user,
    inside a rootless workspace's namespace), see :func:`editor_script`."""
    old_umask = os.umask(0o022)
    try:
        for op, rel, *args in ops:
            p = os.path.join(root, rel)
            if op == "file":
                if os.path.islink(p):
                    os.unlink(p)
                with open(p, "w", encoding="utf-8") as f:
                    f.write(args[0])
                os.chmod(p, int(args[1], 8))
            elif op == "dir":
                os.makedirs(p, exist_ok=True)
                os.chmod(p, int(args[0], 8))
            elif op == "link":
                os.symlink(args[0], p)
            elif op == "rm":
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
            elif op == "chmod":
                os.chmod(p, int(args[0], 8))
            elif op == "touch":
                os.utime(p, ns=(int(args[0]), int(args[0])), follow_symlinks=False)
            else:
                raise ValueError(f"unknown operation {op!r}")
    finally:
        os.umask(old_umask)
    listing: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = f"{stat.S_IMODE(st.st_mode):o}"
            if stat.S_ISLNK(st.st_mode):
                listing[rel] = "l " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                listing[rel] = "d " + mode
            elif stat.S_ISREG(st.st_mode):
                with open(p, encoding="utf-8", errors="replace") as f:
                    listing[rel] = f"f {mode} " + f.read()
            else:
                listing[rel] = f"? {st.st_mode:o}"
    return dict(sorted(listing.items()))


def editor_script() -> str:
    """:func:`edit_tree` as a script: ``python3 SCRIPT ROOT OPS_JSON``
    prints the listing as JSON."""
    return (
        "import json, os, shutil, stat, sys\n"
        "from collections.abc import Sequence\n\n"
        + textwrap.dedent(inspect.getsource(edit_tree))
        + "\n\nprint(json.dumps(edit_tree(sys.argv[1], json.loads(sys.argv[2]))))\n"
    )


def apply_model(tree: Mapping[str, str], ops: Sequence[Op]) -> Tree:
    """What :func:`edit_tree` makes of ``tree`` (a listing) by ``ops``."""
    out = dict(tree)
    for op, rel, *args in ops:
        if op == "file":
            out[rel] = f"f {args[1]} {args[0]}"
        elif op == "dir":
            parts = rel.split("/")
            for i in range(1, len(parts)):
                out.setdefault("/".join(parts[:i]), "d 755")
            out[rel] = f"d {args[0]}"
        elif op == "link":
            out[rel] = f"l {args[0]}"
        elif op == "rm":
            assert rel in out, f"model: rm of missing {rel}"
            for p in [p for p in out if p == rel or p.startswith(rel + "/")]:
                del out[p]
        elif op == "touch":
            assert rel in out, f"model: touch of missing {rel}"
        elif op == "chmod":
            kind, _, rest = out[rel].partition(" ")
            assert kind in ("f", "d"), f"model: chmod of {out[rel]}"
            content = rest.partition(" ")[2]
            out[rel] = f"f {args[0]} {content}" if kind == "f" else f"d {args[0]}"
        else:
            raise ValueError(op)
    return dict(sorted(out.items()))


def spec_ops(spec: Mapping[str, Any], prefix: str = "") -> list[Op]:
    """Operations that build ``spec`` (str: a file, helpers.File with a mode,
    helpers.Symlink, dict: a directory)."""
    ops: list[Op] = []
    for name, value in spec.items():
        path = prefix + name
        if isinstance(value, Mapping):
            ops.append(mkdir(path))
            ops += spec_ops(value, path + "/")
        elif isinstance(value, Symlink):
            assert isinstance(value.target, str)
            ops.append(link(path, value.target))
        elif isinstance(value, File):
            assert isinstance(value.content, str)
            ops.append(write(path, value.content, f"{value.mode or 0o644:o}"))
        else:
            ops.append(write(path, value))
    return ops


# ---- the oracle: what status and diff must say -----------------------------------


def _node(value: str, uid: int, gid: int) -> dict[str, Any]:
    kind, _, rest = value.partition(" ")
    if kind == "l":
        return {"kind": "symlink", "mode": "0777", "uid": uid, "gid": gid, "target": rest}
    mode, _, content = rest.partition(" ")
    out: dict[str, Any] = {"kind": "dir" if kind == "d" else "file", "mode": f"{int(mode, 8):04o}"}
    out.update(uid=uid, gid=gid)
    if kind == "f":
        data = content.encode()
        out.update(size=len(data), hash=xxhash.xxh3_128(data).hexdigest())
    return out


def expected_changes(
    old: Mapping[str, str], new: Mapping[str, str], uid: int, gid: int
) -> list[dict[str, Any]]:
    """The ``changes`` of ``status --json`` / ``diff --json`` from the tree
    ``old`` to ``new`` (every file owned by ``uid:gid``): per path, A, D, T
    (another kind) or M (content, link target or mode differ)."""
    out = []
    for path in sorted(set(old) | set(new), key=os.fsencode):
        a = _node(old[path], uid, gid) if path in old else None
        b = _node(new[path], uid, gid) if path in new else None
        what: list[str] = []
        if a is None:
            status = "A"
        elif b is None:
            status = "D"
        elif a["kind"] != b["kind"]:
            status, what = "T", ["type"]
        else:
            if a.get("hash") != b.get("hash") or a.get("target") != b.get("target"):
                what.append("target" if a["kind"] == "symlink" else "content")
            if a["mode"] != b["mode"]:
                what.append("mode")
            if not what:
                continue
            status = "M"
        out.append({"path": path, "status": status, "what": what, "old": a, "new": b})
    return out


def name_status(changes: Sequence[Mapping[str, Any]]) -> list[str]:
    """``diff --name-status`` lines of ``changes`` (directories end in /)."""
    lines = []
    for c in changes:
        side = c["new"] or c["old"]
        slash = "/" if side["kind"] == "dir" else ""
        name = quote_path(os.fsencode(c["path"] + slash))
        lines.append(f"{c['status']}\t{name}")
    return lines


def porcelain(changes: Sequence[Mapping[str, Any]]) -> list[str]:
    """``status --porcelain`` lines of ``changes``: new paths (``??``) last."""
    code = {"M": " M", "D": " D", "T": " T", "A": "??"}
    lines = []
    for c in sorted(changes, key=lambda c: c["status"] == "A"):
        side = c["new"] or c["old"]
        slash = "/" if side["kind"] == "dir" else ""
        name = quote_path(os.fsencode(c["path"] + slash), quote_space=True)
        lines.append(f"{code[c['status']]} {name}")
    return lines


# ---- drivers: one interface over backends and users ----------------------------


class Driver(abc.ABC):
    """A workspace of one variant: run snapws on it, edit and list it."""

    def __init__(
        self, variant: str, path: Path, store: Path, uid: int, gid: int, model: Tree
    ) -> None:
        self.variant = variant
        self.backend = BACKEND_OF.get(variant, variant)
        self.path = path
        self.store = store
        self.uid = uid
        self.gid = gid
        #: what the tree must be: follows every edit (tests set it after checkouts)
        self.model = model

    @abc.abstractmethod
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``snapws -C WORKSPACE ARGS``, as this variant's user, from outside
        the workspace; ``check`` asserts exit code 0."""

    @abc.abstractmethod
    def _edit(self, ops: Sequence[Op]) -> Tree:
        """Apply ``ops`` in the workspace; return its listing."""

    def edit(self, *ops: Op) -> Tree:
        """Apply ``ops`` to the workspace and to :attr:`model`; assert the
        workspace then shows the model; return the listing."""
        got = self._edit(ops)
        self.model = apply_model(self.model, ops)
        assert got == self.model, f"{self.variant}: the tree after {ops}"
        return got

    def tree(self) -> Tree:
        """The workspace's listing (as its user, in its namespace)."""
        return self._edit(())

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def head(self) -> str:
        return str(self.json("status")["id"])

    def commit(self, message: str) -> str:
        out = self.json("commit", "-m", message)
        assert out["id"], f"nothing was committed: {out}"
        return str(out["id"])

    def porcelain(self) -> list[str]:
        return self.cli("status", "--porcelain").stdout.splitlines()

    def changes(self, old: Mapping[str, str], new: Mapping[str, str]) -> list[dict[str, Any]]:
        """The oracle's changes from ``old`` to ``new``, owned by this user."""
        return expected_changes(old, new, self.uid, self.gid)

    def log(self, *revs: str) -> list[tuple[str, list[str], list[int]]]:
        """``log --json REVS`` as (message, refs, parent positions) per entry:
        what must be equal whichever backend made the history."""
        entries = self.json("log", *revs)["snapshots"]
        pos = {e["id"]: n for n, e in enumerate(entries)}
        return [(e["message"], e["refs"], [pos[p] for p in e["parents"]]) for e in entries]

    def switch(self, *args: str, tree: Mapping[str, str]) -> None:
        """``snapws ARGS`` (a checkout, reset or restore); the workspace
        must then show ``tree``, the new :attr:`model`."""
        self.cli(*args)
        self.model = dict(tree)
        assert self.tree() == tree, f"{self.variant}: the tree after {args}"


class RootDriver(Driver):
    """A root-run backend: the CLI as root, edits straight on the workspace."""

    def __init__(self, variant: str, path: Path, store: Path, outside: Path, model: Tree) -> None:
        super().__init__(variant, path, store, 0, 0, model)
        self.outside = outside

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli("-C", self.path, *args, cwd=self.outside, check=check)

    def _edit(self, ops: Sequence[Op]) -> Tree:
        return edit_tree(str(self.path), ops)


class UserDriver(Driver):
    """A backend run by the test user: the CLI as ``snapwst``; edits by the
    editor script as that user, through ``snapws run`` (in the workspace's
    namespace) for the rootless backend."""

    def __init__(
        self, variant: str, path: Path, store: Path, area: UserArea, script: Path, model: Tree
    ) -> None:
        super().__init__(variant, path, store, area.uid, area.gid, model)
        self.area = area
        self.script = script

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.area.snapws("-C", self.path, *args, check=check)

    def _edit(self, ops: Sequence[Op]) -> Tree:
        words = [sys.executable, str(self.script), str(self.path), json.dumps(ops)]
        if self.backend == "rootless":
            proc = self.area.snapws("run", "-C", str(self.path), "--", *words)
        else:
            proc = self.area.run(*words)
        listing = json.loads(proc.stdout)
        assert isinstance(listing, dict)
        return listing


class Drivers:
    """Makes workspaces of any variant for one test; :meth:`close` removes
    what they left (mounts, the test user's area and processes)."""

    def __init__(self, root: Path, make_root: BackendFactory) -> None:
        self.root = root
        self.make_root = make_root
        self._area: UserArea | None = None

    def area(self) -> UserArea:
        """The test user's area (made once per test)."""
        if self._area is None:
            self._area = UserArea()
        return self._area

    def make(
        self,
        variant: str,
        name: str = "ws",
        spec: Mapping[str, Any] | None = None,
        store: Path | None = None,
        branch: str | None = None,
    ) -> Driver:
        """``spec`` built in a new directory ``name`` and ``snapws init
        --backend`` of it (store: ``store``, default ``.snapws`` beside it)."""
        backend = BACKEND_OF.get(variant, variant)
        ops = spec_ops(spec or {})
        model = apply_model({}, ops)
        if variant in ROOT_VARIANTS:
            if variant == "fuse":
                assert fuse.find_program() is not None, (
                    "fuse-overlayfs is not installed: install it (apt-get install "
                    "fuse-overlayfs fuse3), as .ci/run does"
                )
            path = self.root / name
            path.mkdir()
            assert edit_tree(str(path), ops) == model
            ws = self.make_root(backend, name=name, store=store, branch=branch)
            return RootDriver(variant, ws.path, ws.store, ws.outside, model)
        area = self.area()
        if backend == "rootless":
            require_rootless(area)
        script = area.root / "edit_tree.py"
        if not script.exists():
            script.write_text(editor_script())
            script.chmod(0o644)
        path = area.root / name
        store = store or area.root / ".snapws"
        area.run("mkdir", path)
        listing = json.loads(area.run(sys.executable, script, path, json.dumps(ops)).stdout)
        assert listing == model
        args = ["--store", str(store), "init", "--backend", backend, str(path)]
        area.snapws(*args, *(["--branch", branch] if branch else []))
        return UserDriver(variant, path, store, area, script, model)

    def close(self) -> None:
        """Kill the test user's processes, remove its area (root-made mounts
        below ``root`` are the ``mount_guard``'s)."""
        if self._area is not None:
            try:
                unmount_all_under(self._area.root)
            finally:
                self._area.cleanup()


@pytest.fixture
def drivers(mount_guard: Path, make_backend_workspace: BackendFactory) -> Iterator[Drivers]:
    d = Drivers(mount_guard, make_backend_workspace)
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


BASE: dict[str, Any] = {
    "a.txt": "alpha\n",
    "empty": "",
    "run.sh": File("#!/bin/sh\necho hi\n", mode=0o755),
    "link": Symlink("a.txt"),
    "dangling": Symlink("no/such/file"),
    "dir": {
        "b.txt": "beta\n",
        "sub": {"c.txt": "gamma\n", "deeper": {"d.txt": "delta\n"}},
        "up": Symlink("../a.txt"),
    },
    "gone": "gone\n",
    "hollow": {},
    "keep.txt": "keep\n",
}
BASE_TREE = apply_model({}, spec_ops(BASE))


@pytest.fixture
def drv(drivers: Drivers, variant: str) -> Driver:
    """A workspace of ``variant`` whose base snapshot holds BASE."""
    return drivers.make(variant, spec=BASE)


# ---- the suite -------------------------------------------------------------------


def test_init_of_files_dirs_and_symlinks(drv: Driver) -> None:
    assert drv.tree() == BASE_TREE
    status = drv.json("status")
    assert status == {
        "version": 1,
        "id": status["id"],
        "branch": "main",
        "clean": True,
        "changes": [],
    }
    assert drv.log() == [("initial snapshot", ["main"], [])]
    (listed,) = drv.json("workspaces")["workspaces"]
    assert listed["backend"] == drv.backend
    state = json.loads(next(drv.store.glob("workspaces/*/state.json")).read_text())
    assert state["backend"] == drv.backend
    drv.cli("verify")


EDIT = (
    write("a.txt", "alpha 2\n"),  # modified
    write("empty", "not empty now\n"),  # modified from empty
    write("new.txt", "new\n"),  # added
    rm("gone"),  # deleted
    chmod("run.sh", "644"),  # mode only
    rm("link"),
    link("link", "empty"),  # another target
    rm("dir/sub"),  # a directory with its subtree
    mkdir("fresh/deep"),
    write("fresh/deep/f", "f\n"),  # new directories
    rm("hollow"),
    write("hollow", "a file now\n"),  # a directory became a file
    rm("dangling"),
    mkdir("dangling"),  # a symlink became a directory
    chmod("dir", "700"),  # a directory's mode
    mkdir("void"),  # a new empty directory
    write("sp ace ünï.txt", "odd name\n"),
    touch("keep.txt"),  # copy-ups that change nothing are no change
    touch("dir/b.txt"),
    touch("dir/up"),
)

#: diff --stat of EDIT (the same for every backend; names quoted as git's)
EDIT_STAT = [
    " a.txt                          | 2 +-",
    " dangling                       | 1 -",
    " dir/sub/c.txt                  | 1 -",
    " dir/sub/deeper/d.txt           | 1 -",
    " empty                          | 1 +",
    " fresh/deep/f                   | 1 +",
    " gone                           | 1 -",
    " hollow                         | 1 +",
    " link                           | 2 +-",
    " new.txt                        | 1 +",
    " run.sh                         | 0",
    ' "sp ace \\303\\274n\\303\\257.txt" | 1 +',
    " 12 files changed, 7 insertions(+), 6 deletions(-)",
]


def test_edit_status_diff_commit(drv: Driver) -> None:
    after = drv.edit(*EDIT)
    want = drv.changes(BASE_TREE, after)
    assert {c["status"] for c in want} == {"A", "D", "M", "T"}
    status = drv.json("status")
    assert status["clean"] is False and status["branch"] == "main"
    assert status["changes"] == want
    assert drv.cli("diff", "--name-status").stdout.splitlines() == name_status(want)
    assert drv.json("diff")["changes"] == want
    stat_worktree = drv.cli("diff", "--stat").stdout

    sid = drv.commit("edit")
    assert drv.porcelain() == []
    assert drv.tree() == after
    assert drv.head() == sid
    assert drv.log() == [("edit", ["main"], [1]), ("initial snapshot", [], [])]
    committed = drv.cli("diff", "--name-status", "HEAD~1", "HEAD").stdout.splitlines()
    assert committed == name_status(want)
    assert drv.json("diff", "HEAD~1", "HEAD")["changes"] == want
    stat_committed = drv.cli("diff", "--stat", "HEAD~1", "HEAD").stdout
    assert stat_committed == stat_worktree
    assert stat_committed.splitlines() == EDIT_STAT, stat_committed
    drv.cli("verify")  # the layer holds no backend bookkeeping


SIDE = (write("side.txt", "side\n"), write("dir/b.txt", "beta on side\n"), rm("dir/up"))
MAIN = (write("a.txt", "alpha on main\n"), rm("dir/sub/deeper"))


def test_branch_and_switch_back_and_forth(drv: Driver) -> None:
    drv.cli("checkout", "-b", "side")
    side = drv.edit(*SIDE)
    drv.commit("on side")
    drv.switch("checkout", "main", tree=BASE_TREE)
    main = drv.edit(*MAIN)
    drv.commit("on main")
    for _ in range(2):
        drv.switch("checkout", "side", tree=side)
        drv.switch("checkout", "main", tree=main)
    branches = drv.cli("branch").stdout
    assert "side" in branches and "main" in branches
    assert drv.log("side") == [
        ("on side", ["side"], [1]),
        ("initial snapshot", [], []),
    ]
    assert drv.json("status")["branch"] == "main"
    changes = drv.json("diff", "side", "main")["changes"]
    assert changes == drv.changes(side, main)

    # uncommitted changes that do not touch what differs are carried over,
    # as git's checkout carries them
    dirty = drv.edit(write("wip.txt", "wip\n"), rm("run.sh"))
    drv.cli("checkout", "side")
    assert drv.porcelain() == [" D run.sh", "?? wip.txt"]
    assert drv.json("status")["branch"] == "side"
    drv.cli("checkout", "main")
    assert drv.tree() == dirty
    # one that does (a.txt differs between main and side): exit 5, nothing moved
    dirty = drv.edit(write("a.txt", "alpha, uncommitted\n"))
    refused = drv.cli("checkout", "side", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "uncommitted changes touch paths that differ" in refused.stderr
    assert drv.tree() == dirty
    assert drv.porcelain() == [" M a.txt", " D run.sh", "?? wip.txt"]
    assert drv.json("status")["branch"] == "main"


def test_reset_hard_and_reset_keeping_changes(drv: Driver) -> None:
    base = drv.head()
    edited = drv.edit(*EDIT)
    second = drv.commit("second")
    drv.switch("reset", "--hard", "HEAD~1", tree=BASE_TREE)
    assert drv.head() == base and drv.porcelain() == []
    drv.switch("reset", "--hard", second, tree=edited)
    assert drv.head() == second

    # without --hard (git's --keep): refused when an uncommitted change
    # touches a path that differs between HEAD and the target ...
    conflict = drv.edit(write("a.txt", "alpha 3\n"))
    refused = drv.cli("reset", base, check=False)
    assert refused.returncode == 5 and "a.txt" in refused.stderr, refused.stderr
    assert drv.head() == second and drv.tree() == conflict
    # ... else HEAD moves and the uncommitted changes stay, on top of the
    # target; a.txt rewritten with HEAD's content is no change: it neither
    # blocks the reset nor stays
    wip = (write("wip.txt", "wip\n"), write("keep.txt", "keep 2\n"))
    drv.edit(write("a.txt", "alpha 2\n"), *wip)
    kept = apply_model(BASE_TREE, wip)
    drv.switch("reset", base, tree=kept)
    assert drv.head() == base
    assert drv.json("status")["changes"] == drv.changes(BASE_TREE, kept)
    assert drv.log() == [("initial snapshot", ["main"], [])]


def test_restore_paths_from_an_older_snapshot(drv: Driver) -> None:
    edited = drv.edit(*EDIT)
    drv.commit("edit")
    # from HEAD~1: a deleted file, a deleted subtree, a modified file, a
    # directory where a file is now, a symlink where a directory is now
    paths = ("gone", "dir/sub", "a.txt", "hollow", "dangling")
    back = {p: v for p, v in BASE_TREE.items() if p in paths or p.startswith("dir/sub/")}
    restored = dict(sorted({**edited, **back}.items()))
    drv.switch("restore", "--source", "HEAD~1", *paths, tree=restored)
    assert drv.json("status")["changes"] == drv.changes(edited, restored)
    # uncommitted edits undone from HEAD: a rewritten file, a deleted subtree
    drv.edit(write("new.txt", "scribbled\n"), rm("fresh"), write("gone", "scribbled\n"))
    drv.switch("restore", "new.txt", "fresh", tree={**restored, "gone": "f 644 scribbled\n"})
    assert drv.porcelain() == porcelain(drv.changes(edited, drv.model))
    drv.commit("restored")
    committed = drv.cli("diff", "--name-status", "HEAD~2", "HEAD").stdout.splitlines()
    assert committed == name_status(drv.changes(BASE_TREE, drv.model))


def test_directory_replaced_by_a_file_and_back(drv: Driver) -> None:
    as_file = drv.edit(rm("dir"), write("dir", "dir is a file\n"))
    assert drv.json("status")["changes"] == drv.changes(BASE_TREE, as_file)
    assert drv.porcelain()[:2] == [" T dir", " D dir/b.txt"]
    drv.commit("dir is a file")
    as_dir = drv.edit(rm("dir"), mkdir("dir"), write("dir/b.txt", "beta again\n"))
    assert drv.json("status")["changes"] == drv.changes(as_file, as_dir)
    drv.commit("dir again")
    # nothing of the first directory shows through the second
    assert drv.tree() == as_dir
    drv.switch("checkout", "HEAD~1", tree=as_file)
    drv.switch("checkout", "main~2", tree=BASE_TREE)
    drv.switch("checkout", "main", tree=as_dir)
    changes = drv.json("diff", "HEAD~2", "HEAD")["changes"]
    assert changes == drv.changes(BASE_TREE, as_dir)


def test_deleted_directory_recreated_with_other_content(drv: Driver) -> None:
    # in one commit: the new directory hides every old child (opaque)
    renewed = drv.edit(
        rm("dir"), mkdir("dir"), write("dir/b.txt", "other beta\n"), mkdir("dir/sub")
    )
    want = drv.changes(BASE_TREE, renewed)
    assert [c["path"] for c in want if c["status"] == "D"] == [
        "dir/sub/c.txt",
        "dir/sub/deeper",
        "dir/sub/deeper/d.txt",
        "dir/up",
    ]
    assert drv.json("status")["changes"] == want
    drv.commit("renewed")
    assert drv.tree() == renewed
    # over two commits: deleted, then made again
    gone = drv.edit(rm("dir"))
    drv.commit("deleted")
    again = drv.edit(mkdir("dir/sub/deeper"), write("dir/sub/x", "x\n"))
    assert drv.json("status")["changes"] == drv.changes(gone, again)
    drv.commit("again")
    assert drv.tree() == again
    drv.switch("checkout", "HEAD~3", tree=BASE_TREE)
    drv.switch("checkout", "main~1", tree=gone)
    drv.switch("checkout", "main", tree=again)
    drv.cli("verify")


def test_only_content_counts(drv: Driver) -> None:
    """A path deleted and made again as it was is no change; a rewrite that
    keeps size and mtime is one."""
    same = drv.edit(
        rm("keep.txt"),
        write("keep.txt", "keep\n"),
        rm("dir/sub"),
        mkdir("dir/sub"),
        *spec_ops(BASE["dir"]["sub"], "dir/sub/"),
        touch("a.txt"),
    )
    assert same == BASE_TREE
    assert drv.json("status")["changes"] == []
    stamp = touch("a.txt", 1_600_000_000 * 10**9)
    drv.edit(write("a.txt", "alpha\n"), stamp)
    assert drv.porcelain() == []  # an mtime alone is no change either
    edited = drv.edit(write("a.txt", "ALPHA\n"), stamp)
    assert drv.json("status")["changes"] == drv.changes(BASE_TREE, edited)


STEPS: tuple[tuple[Op, ...], ...] = (
    (rm("a.txt"),),
    (rm("dir"), mkdir("dir"), write("dir/one", "1\n")),
    (write("dir/two", "2\n"), rm("keep.txt")),
    (rm("dir"), mkdir("dir/e"), write("dir/e/three", "3\n")),
    (write("a.txt", "back\n"),),
    (rm("a.txt"), mkdir("a.txt"), write("a.txt/x", "in\n")),
    (write("keep.txt", "k2\n"), rm("hollow")),
)


def test_history_through_merged_layers(drv: Driver) -> None:
    """Enough commits for the chain to be compacted (merged layers must keep
    deletions and opaque directories), then flatten: every snapshot still
    shows its own tree."""
    trees = [BASE_TREE]
    for n, step in enumerate(STEPS):
        trees.append(drv.edit(*step))
        drv.commit(f"step {n}")
    assert len(drv.log()) == len(trees)
    chain = json.loads((drv.store / "chains" / f"{drv.head()}.json").read_text())
    assert len(chain) < len(trees), chain  # commits merged layers
    drv.switch("checkout", "main~5", tree=trees[2])
    drv.switch("checkout", "main~3", tree=trees[4])
    drv.switch("checkout", "main", tree=trees[-1])
    drv.cli("flatten")
    assert drv.tree() == trees[-1]
    drv.switch("checkout", "main~1", tree=trees[-2])
    assert drv.json("diff", "main~7", "main")["changes"] == drv.changes(trees[0], trees[-1])
    drv.cli("verify")


def test_uncommitted_changes_survive_umount_and_mount(drv: Driver) -> None:
    kept = drv.edit(write("kept.txt", "kept\n"))
    drv.cli("umount")
    if drv.variant in ("kernel", "fuse"):
        assert mount_kind(drv.path) == []
    drv.cli("mount")
    assert drv.tree() == kept
    assert drv.porcelain() == ["?? kept.txt"]


@pytest.mark.parametrize("variant", ["kernel", "fuse"])
def test_a_file_open_for_writing_does_not_block_a_commit(drv: Driver) -> None:
    """The commit copies through the live mount; a checkout still refuses
    (for the uncommitted change that clashes, before anything is frozen;
    discarding it, for the file open for writing)."""
    drv.edit(write("w.txt", "w\n"))
    with open(drv.path / "w.txt", "a") as held:
        drv.commit("while open")
        held.write("more\n")  # still writable where it was
        held.flush()
        os.fsync(held.fileno())  # (fuse: out of the kernel's write-back cache, into U)
        assert drv.porcelain() == [" M w.txt"]
        r = drv.cli("checkout", "HEAD~1", check=False)
        assert r.returncode == 5, r.stderr  # its uncommitted change clashes: refused first
        assert "w.txt" in r.stderr
        r = drv.cli("checkout", "--discard", "HEAD~1", check=False)
        assert r.returncode == 6, r.stderr  # it would be rewritten while open for writing
        assert f"pid {os.getpid()}" in r.stderr
    assert drv.json("diff", "HEAD~1", "HEAD")["changes"][0]["path"] == "w.txt"
    drv.commit("after")
    assert (drv.path / "w.txt").read_text() == "w\nmore\n"
    assert drv.porcelain() == []


@pytest.mark.parametrize(
    ("first", "second"), [("kernel", "plain"), ("kernel", "fuse"), ("rootless", "plain-user")]
)
def test_one_store_two_backends(drivers: Drivers, first: str, second: str) -> None:
    """Snapshots committed by one backend check out in the other's workspace
    of the same store, and back: same ids, same trees."""
    a = drivers.make(first, name="a", spec=BASE)
    b = drivers.make(second, name="b", store=a.store, branch="b")  # an empty directory
    assert b.store == a.store
    edited = a.edit(*EDIT)
    s1 = a.commit("edit in a")
    b.switch("checkout", s1, tree=edited)
    assert b.porcelain() == []
    # (b's branch namespace is its own: the same snapshots, not the same ref names)
    no_refs = [{**e, "refs": []} for e in a.json("log")["snapshots"]]
    assert [{**e, "refs": []} for e in b.json("log", s1)["snapshots"]] == no_refs

    b.cli("checkout", "-b", "from-b", s1)
    changed = b.edit(*SIDE, rm("hollow"), mkdir("hollow/in"), write("hollow/in/x", "x\n"))
    s2 = b.commit("edit in b")
    a.switch("checkout", s2, tree=changed)
    assert a.head() == s2 and a.porcelain() == []
    assert [e["id"] for e in a.json("log")["snapshots"]] == [
        e["id"] for e in b.json("log")["snapshots"]
    ]
    assert a.json("diff", s1, s2)["changes"] == a.changes(edited, changed)
    a.cli("verify")
