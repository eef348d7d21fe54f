"""Every error a user can act on prints ``snapws: error: ...`` then a
``hint: ...`` line on stderr, and exits with its documented code
(docs/exit-codes.md, :class:`snapws.errors.ExitCode`)."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends.users import UserArea
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.errors import ExitCode

Shared = tuple[Workspace, list[str]]


def assert_error(r: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    """The documented shape of a failure."""
    where = f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"
    assert r.returncode == code, where
    lines = r.stderr.splitlines()
    assert lines, where
    assert lines[0].startswith("snapws: error: "), where
    assert fragment in r.stderr, where
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(hints) == 1, where
    assert lines[-1] == hints[0], where
    assert len(hints[0]) > len("hint: ") + 10, where
    assert "Traceback" not in r.stderr, where
    assert r.stdout == "", where


@pytest.fixture(scope="module")
def shared(make_module_workspace: WorkspaceFactory) -> Shared:
    """A workspace with two snapshots (c0, c1) and a tag; tests must leave it
    as they found it."""
    ws = make_module_workspace(spec={"a": "a0", "dir": {"f": "f"}})
    ids = [ws.head()]
    (ws.path / "a").write_text("a1")
    ids.append(ws.commit("c1"))
    ws.run("tag", "v1")
    return ws, ids


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plain"
    d.mkdir()
    (d / "file").write_text("x")
    return d


def test_exit_code_table() -> None:
    """The numbers scripts rely on."""
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0,
        "DIFFERENCES": 1,
        "USAGE": 2,
        "NOT_A_WORKSPACE": 3,
        "BAD_REVISION": 4,
        "UNCOMMITTED_CHANGES": 5,
        "BUSY": 6,
        "LOCKED": 7,
        "BAD_NAME": 8,
        "UNSUPPORTED": 9,
        "MOUNT_FAILED": 10,
        "STORE_CORRUPT": 11,
        "BAD_PATH": 12,
        "CONFIG": 13,
        "AUTH": 14,
        "REMOTE": 15,
        "BAD_IMAGE": 16,
        "NO_SPACE": 17,
        "STORE_UNWRITABLE": 18,
        "NOT_MOUNTED": 19,
        "INTERNAL": 70,
        "OUTPUT_FAILED": 74,
        "INTERRUPTED": 130,
    }


# ---- 3: not a workspace -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("log",),
        ("commit", "-m", "x"),
        ("diff",),
        ("branch",),
        ("checkout", "main"),
        ("restore", "file"),
        ("show",),
    ],
)
def test_outside_a_workspace(plain_dir: Path, args: tuple[str, ...]) -> None:
    r = run_cli("-C", plain_dir, *args, cwd=plain_dir, check=False)
    assert_error(r, 3, "is not inside a snapws workspace")
    assert "snapws init" in r.stderr
    assert (plain_dir / "file").read_text() == "x"


def test_store_not_found(plain_dir: Path) -> None:
    r = run_cli("--store", plain_dir / "nostore", "status", cwd=plain_dir, check=False)
    assert_error(r, 3, "no snapws store at")
    assert "--store" in r.stderr
    r = run_cli(
        "status", cwd=plain_dir, check=False, env={"SNAPWS_STORE": str(plain_dir / "nostore")}
    )
    assert_error(r, 3, "no snapws store at")


# ---- errors on the shared workspace -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("show", "nosuch"), 4, "unknown revision 'nosuch'"),
        (("checkout", "feedface99"), 4, "unknown revision 'feedface99'"),
        (("diff", "HEAD~2"), 4, "has only 1 ancestor"),
        (("log", "HEAD^^"), 4, "HEAD^^"),
        (("show", "main@{1}"), 4, "not supported"),
        (("diff", "a..b"), 4, "ranges"),
        (("reset", "--hard", "v2"), 4, "unknown revision 'v2'"),
        (("restore", "--source", "x~", "a"), 4, "unknown revision"),
        (("branch", "a..b"), 8, "invalid branch name 'a..b'"),
        (("branch", "--", "-x"), 8, "invalid branch name '-x'"),
        (("tag", "x.lock"), 8, "invalid tag name 'x.lock'"),
        (("tag", "v1"), 8, "a tag named 'v1' already exists"),
        (("branch", "-d", "main"), 8, "cannot delete branch 'main'"),
        (("checkout", "-b", "main"), 8, "already exists"),
        (("branch", "-d", "nosuch"), 4, "no branch named 'nosuch'"),
        (("tag", "-d", "nosuch"), 4, "no tag named 'nosuch'"),
        (("restore", "nope"), 12, "did not match any path in snapshot"),
        (("restore", "--source", "HEAD~1", "dir/nope"), 12, "dir/nope"),
        (("restore", "a", "nope*"), 12, "(HEAD): nope*"),
        (("restore", "../outside"), 12, "is outside the workspace"),
        (("diff", "--", "/etc"), 12, "is outside the workspace"),
    ],
)
def test_errors(shared: Shared, args: tuple[str, ...], code: int, fragment: str) -> None:
    ws, ids = shared
    r = ws.run(*args, check=False)
    assert_error(r, code, fragment)
    # nothing changed
    assert ws.json("status") == {
        "version": 1,
        "id": ids[1],
        "branch": "main",
        "clean": True,
        "changes": [],
    }


def test_uncommitted_changes(shared: Shared) -> None:
    ws, ids = shared
    (ws.path / "scratch").write_text("s")
    (ws.path / "a").write_text("dirty")  # a differs between HEAD and HEAD~1
    try:
        r = ws.run("checkout", "HEAD~1", check=False)
        assert_error(
            r, 5, "cannot check out: uncommitted changes touch paths that differ between HEAD"
        )
        assert r.stderr.splitlines()[0].endswith(": a"), r.stderr
        r = ws.run("reset", "HEAD~1", check=False)
        assert_error(r, 5, "uncommitted changes touch paths that differ between HEAD and HEAD~1")
        assert ws.head() == ids[1]
    finally:
        (ws.path / "scratch").unlink()
        (ws.path / "a").write_text("a1")
    assert ws.porcelain() == []


def test_busy(shared: Shared) -> None:
    ws, ids = shared
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nf = open(sys.argv[1], 'w')\nprint('ready', flush=True)\nsys.stdin.read()",
            str(ws.path / "held"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ws.outside,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        # (a commit does not wait for it: tests/robust/test_busy.py)
        r = ws.run("checkout", "--discard", "HEAD~1", check=False)
        assert_error(r, 6, "cannot switch")
        assert f"pid {holder.pid}" in r.stderr and "held" in r.stderr
        assert "ignored files count too" in r.stderr
        r = ws.run("reset", "--hard", "HEAD~1", check=False)
        assert_error(r, 6, f"pid {holder.pid}")
        assert ws.log_ids() == [ids[1], ids[0]]
    finally:
        holder.communicate(timeout=30)
    # the workspace is writable again and nothing was lost
    assert ws.porcelain() == ["?? held"]
    (ws.path / "held").unlink()
    assert ws.porcelain() == []


def test_busy_reading_a_file_restore_replaced(make_workspace: WorkspaceFactory) -> None:
    """A program that only reads a file that ``restore`` then replaced holds
    the old, deleted file open: the kernel refuses the read-only remount, so
    checkout and reset exit 6 (``deleted-open``) until it closes it; the
    hint says so (docs/guide.md, "Busy files")."""
    ws = make_workspace(spec={"a": "one"})
    (ws.path / "a").write_text("two")
    ws.commit("two")
    (ws.path / "a").write_text("three")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nf = open(sys.argv[1])\nprint('ready', flush=True)\nsys.stdin.read()",
            str(ws.path / "a"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ws.outside,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "ready\n"
        ws.run("restore", "a")
        r = ws.run("reset", "--hard", "HEAD~1", check=False)
        assert_error(r, 6, f"pid {reader.pid} (python")
        assert f"deleted-open {ws.path / 'a'}" in r.stderr
        hint = r.stderr.splitlines()[-1]
        assert "deleted-open" in hint and "only to read" in hint, hint
    finally:
        reader.communicate(timeout=30)
    ws.run("reset", "--hard", "HEAD~1")
    assert (ws.path / "a").read_text() == "one"


def test_umount_busy(shared: Shared) -> None:
    ws, _ = shared
    inside = subprocess.Popen(
        [sys.executable, "-c", "import sys\nprint('ready', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ws.path,
    )
    try:
        assert inside.stdout is not None
        assert inside.stdout.readline() == "ready\n"
        r = ws.run("umount", check=False)
        assert_error(r, 10, "")
    finally:
        inside.communicate(timeout=30)
    assert (ws.path / "a").read_text() == "a1"


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "snapws.toml"


def test_locked(shared: Shared, config_file: Path) -> None:
    ws, _ = shared
    config_file.write_text("lock_timeout = 0.3\n")
    env = {"SNAPWS_CONFIG": str(config_file)}
    fd = os.open(ws.store / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = ws.run("status", check=False, env=env)
        assert_error(r, 7, "the store is locked by another snapws command")
        r = ws.run("commit", "--allow-empty", "-m", "x", check=False, env=env)
        assert_error(r, 7, "gave up after 0.3 s")
    finally:
        os.close(fd)
    assert ws.run("status", env=env).returncode == 0
    assert len(ws.log_ids()) == 2


@pytest.mark.parametrize(
    "content",
    ["lock_timeout = 'soon'\n", "no_such_key = 1\n", "this is not toml\n", None],
)
def test_config_errors(shared: Shared, config_file: Path, content: str | None) -> None:
    ws, _ = shared
    if content is not None:
        config_file.write_text(content)
    r = ws.run("status", check=False, env={"SNAPWS_CONFIG": str(config_file)})
    assert_error(r, 13, str(config_file))


def test_store_corrupt(shared: Shared) -> None:
    ws, _ = shared
    bad = ws.store / "refs" / "heads" / "broken"
    bad.write_text("not an id\n")
    try:
        r = ws.run("branch", check=False)
        assert_error(r, 11, "broken")
        r = ws.run("log", "broken", check=False)
        assert_error(r, 11, "broken")
    finally:
        bad.unlink()
    assert ws.run("branch").returncode == 0


def test_unexpected_os_error(shared: Shared) -> None:
    """An OS error nobody expected still prints the two lines (exit 70)."""
    ws, ids = shared
    fake = "f" * 4 + secrets.token_hex(14)
    weird = ws.store / "snapshots" / f"{fake}.json"
    weird.mkdir()
    try:
        r = ws.run("show", fake[:8], check=False)
        assert_error(r, 70, fake)
    finally:
        weird.rmdir()
    assert ws.head() == ids[1]


# ---- init errors ------------------------------------------------------------------


def test_init_errors(make_workspace: WorkspaceFactory, tmp_path: Path) -> None:
    ws = make_workspace("ws")
    (tmp_path / "afile").write_text("x")
    cases = [
        (("--store", tmp_path / "s2", "init", tmp_path / "afile"), 12, "is not a directory"),
        (("--store", ws.store, "init", ws.path), 12, "already a mounted workspace"),
        (("--store", tmp_path / "n" / "st", "init", tmp_path / "n"), 12, "would be inside"),
        (
            ("--store", ws.store, "init", "--shared", tmp_path / "other"),
            8,
            "branch 'main' already exists",
        ),
        (("--store", tmp_path / "s3", "init", "-b", "a b", tmp_path / "x"), 8, "invalid branch"),
        (("--store", tmp_path / "s4", "init", "/"), 12, "refusing to make / a workspace"),
    ]
    for args, code, fragment in cases:
        r = run_cli(*args, cwd=ws.outside, check=False)
        assert_error(r, code, fragment)
    assert not (tmp_path / "other").exists()
    assert not (tmp_path / "x").exists()


def test_init_store_on_another_filesystem(mount_guard: Path) -> None:
    shm = Path("/dev/shm")
    assert os.stat(shm).st_dev != os.stat(mount_guard).st_dev
    store = shm / f"snapws-test-{secrets.token_hex(6)}"
    (mount_guard / "ws").mkdir()
    (mount_guard / "ws" / "f").write_text("f")
    try:
        r = run_cli("--store", store, "init", mount_guard / "ws", cwd=mount_guard, check=False)
        assert_error(r, 9, "are on different filesystems")
        assert "same filesystem" in r.stderr or "one filesystem" in r.stderr
        assert (mount_guard / "ws" / "f").read_text() == "f"
        assert not store.exists()  # a failed init leaves nothing behind
    finally:
        shutil.rmtree(store, ignore_errors=True)


# ---- 2: usage (snapws: error: + hint:, as every other error) ----------------------


@pytest.mark.parametrize(
    "args",
    [("frobnicate",), ("checkout",), ("diff", "HEAD", "HEAD", "HEAD"), ("log", "-n", "x")],
)
def test_usage_errors(shared: Shared, args: tuple[str, ...]) -> None:
    ws, _ = shared
    r = ws.run(*args, check=False)
    assert_error(r, 2, "")
    assert "--help`" in r.stderr.splitlines()[-1]


def test_missing_directory_is_usage_error(plain_dir: Path) -> None:
    r = run_cli("-C", plain_dir / "missing", "status", cwd=plain_dir, check=False)
    assert r.returncode == 2
    assert "missing" in r.stderr


def test_not_root_hint_names_only_backends_that_work_without_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fuse needs root as much as kernel does (guide.md, doctor)."""
    from snapws.backends.kernel import KernelBackend
    from snapws.errors import UnsupportedError

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UnsupportedError) as err:
        KernelBackend().check_privileges()
    assert err.value.exit_code == ExitCode.UNSUPPORTED
    assert "--backend rootless|plain` works without root" in err.value.hint
    assert "fuse needs root too" in err.value.hint


# ---- permission denied: typed where the OS call fails, with advice that fits ----------

ROOT_ONLY_HINT = "needs root for workspaces it mounts"  # the old guess for every EACCES


@pytest.fixture
def area() -> Iterator[UserArea]:
    a = UserArea()
    try:
        yield a
    finally:
        a.cleanup()


@pytest.fixture
def roots_plain_store(area: UserArea) -> tuple[Path, Path]:
    """A plain workspace (``ws``) and its store (``st``), both root's, in the
    test user's area: the user may read the store but not write it."""
    ws, store = area.root / "ws", area.root / "st"
    ws.mkdir()
    (ws / "f").write_text("f\n")
    run_cli("--store", store, "init", "--backend", "plain", ws, cwd=area.root)
    return ws, store


def as_user(area: UserArea, *args: str | Path) -> subprocess.CompletedProcess[str]:
    repo = Path(__file__).resolve().parent.parent.parent
    return area.snapws(*args, check=False, env={"PYTHONPATH": str(repo)})


def test_writing_roots_store_as_another_user_says_whose_it_is(
    area: UserArea, roots_plain_store: tuple[Path, Path]
) -> None:
    ws, store = roots_plain_store
    assert as_user(area, "--store", store, "-C", ws, "status").returncode == 0
    for args in (("commit", "--allow-empty", "-m", "x"), ("branch", "b"), ("tag", "t")):
        r = as_user(area, "--store", store, "-C", ws, *args)
        assert_error(r, 9, f"permission denied on the store {store} ({store}/lock")
        assert "owned by root (uid 0); snapws runs as snapwst" in r.stderr
        assert "sudo" in r.stderr and "--store" in r.stderr
        assert ROOT_ONLY_HINT not in r.stderr
    # nothing changed: one branch, no tag, one snapshot
    branches = run_cli("--store", store, "-C", ws, "branch", cwd=area.root).stdout
    assert [line.split()[:2] for line in branches.splitlines()] == [["*", "main"]]
    assert run_cli("--store", store, "-C", ws, "tag", cwd=area.root).stdout == ""
    log = run_cli("--store", store, "-C", ws, "log", "--json", cwd=area.root).stdout
    assert len(json.loads(log)["snapshots"]) == 1


def test_reading_a_store_this_user_may_not_enter(
    area: UserArea, roots_plain_store: tuple[Path, Path]
) -> None:
    ws, store = roots_plain_store
    store.chmod(0o700)
    for args in (("status",), ("log",), ("commit", "-m", "x")):
        r = as_user(area, "--store", store, "-C", ws, *args)
        assert_error(r, 9, f"permission denied on the store {store}")
        assert "owned by root (uid 0)" in r.stderr
        assert ROOT_ONLY_HINT not in r.stderr


def test_another_users_store_gets_no_sudo_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sudo is advice for a store of root's only; for another user's store
    the hint names its owner and --store."""
    from snapws.errors import StorePermissionError, permission_denied

    store = tmp_path / "st"
    store.mkdir()
    os.chown(store, 4242, 4242)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    err = permission_denied(PermissionError(13, "Permission denied", str(store / "lock")), store)
    assert isinstance(err, StorePermissionError)
    assert err.exit_code == ExitCode.UNSUPPORTED
    assert f"{store}/lock, owned by uid 4242" in err.message
    assert "sudo" not in err.hint and "store's owner" in err.hint and "--store" in err.hint
    os.chown(store, 0, 0)
    err = permission_denied(PermissionError(13, "Permission denied", str(store / "lock")), store)
    assert "owned by root (uid 0)" in err.message
    assert "sudo" in err.hint


def test_an_unwrapped_permission_error_is_named_not_blamed_on_root(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's last resort for an EACCES no entry point wrapped: the path
    and its owner, exit 9, never 'needs root' (wrong for plain and rootless)."""
    from snapws.errors import PermissionDeniedError, environment_error

    ws, _ = shared
    env = environment_error(PermissionError(13, "Permission denied", str(ws.store / "x")))
    assert isinstance(env, PermissionDeniedError)
    assert env.exit_code == ExitCode.UNSUPPORTED
    assert env.message.startswith(f"permission denied: {ws.store / 'x'}, owned by ")
    assert ROOT_ONLY_HINT not in env.hint and "root" not in env.hint
    from snapws.store import store as store_module

    def refuse(self: object, *_a: object) -> object:
        raise PermissionError(13, "Permission denied", "/somewhere/file")

    monkeypatch.setattr(store_module.Store, "read_workspace", refuse)
    r = ws.run("status", check=False)
    assert_error(r, 9, "permission denied: /somewhere/file")
    assert ROOT_ONLY_HINT not in r.stderr


# ---------------------------------------------------------------- journals that cannot be finished


def test_a_permission_error_without_a_usable_name_never_says_a_file() -> None:
    from snapws.errors import permission_denied

    me = f"(snapws runs as {'root' if os.geteuid() == 0 else ''}"
    for e in (
        PermissionError(1, "Operation not permitted"),
        PermissionError(1, "Operation not permitted", "/proc/self/fd/6"),
    ):
        err = permission_denied(e)
        assert "a file (" not in err.message and "/proc/self/fd" not in err.message, err.message
        assert err.message.startswith("permission denied (Operation not permitted) on a file ")
        assert me in err.message


def _immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


def test_beneath_names_a_refused_node_by_its_path_not_a_proc_fd(tmp_path: Path) -> None:
    """The /proc/self/fd name a metadata change goes through, and the last
    component a dir_fd call gets, are mapped back to the full path."""
    from snapws.beneath import Beneath

    if os.geteuid() != 0:
        pytest.fail("needs root (chattr +i)")
    (tmp_path / "d").mkdir()
    target = tmp_path / "d" / "f"
    target.write_text("x\n")
    _immutable(target, True)
    try:
        with Beneath(tmp_path) as b:
            with pytest.raises(PermissionError) as chmod, b.node(b"d/f") as ref:
                assert ref.path.startswith(b"/proc/self/fd/")
                ref.chmod(0o600)
            with pytest.raises(PermissionError) as unlink:
                b.unlink(b"d/f")
    finally:
        _immutable(target, False)
    assert chmod.value.filename == str(target)
    assert unlink.value.filename == str(target)


def test_a_reset_that_cannot_be_finished_says_which_file_why_and_how_to_give_it_up(
    tmp_path: Path,
) -> None:
    """A plain workspace's `reset --hard` hits EPERM on a file (immutable:
    as root, the stand-in for a file of another user) after its journal:
    the reset, then every command (in another workspace of the store too)
    names the operation, the file and the way out; doctor reports the
    journal; following the hint to give it up leaves a consistent
    workspace with nothing lost."""
    if os.geteuid() != 0:
        pytest.fail("needs root (chattr +i)")
    outside, store = tmp_path / "outside", tmp_path / "store"
    outside.mkdir()
    for name in ("ws", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("one\n")
        run_cli("--store", store, "init", "--backend", "plain", tmp_path / name, cwd=outside)

    def run(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run_cli("--store", store, "-C", tmp_path / name, *args, cwd=outside, check=False)

    first = json.loads(run("ws", "status", "--json").stdout)["id"]
    (tmp_path / "ws" / "f").write_text("two\n")
    second = json.loads(run("ws", "commit", "-m", "two", "--json").stdout)["id"]
    target = tmp_path / "ws" / "f"
    _immutable(target, True)
    try:
        r = run("ws", "reset", "--hard", first[:12])
        assert_error(
            r, 9, f"snapws: error: the reset cannot be finished: permission denied: {target}"
        )
        journal = store / "journal.json"
        assert journal.exists()
        give_up = f"move {journal} out of the store (nothing is deleted), then run `snapws verify`"
        assert (
            give_up in r.stderr and f"`snapws reset {second[:12]}` in {tmp_path / 'ws'}" in r.stderr
        )
        for name, args in (("ws", ("status",)), ("other", ("log",)), ("ws", ("reset", "--hard"))):
            r = run(name, *args)
            assert_error(r, 9, "snapws: error: an interrupted reset (pending since ")
            assert f"cannot be finished: permission denied: {target}, owned by " in r.stderr
            assert "a file" not in r.stderr and give_up in r.stderr
        doctor = run_cli("--store", store, "doctor", "--json", cwd=outside, check=False)
        check = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["pending operation"]
        assert check["status"] == "fail"
        assert check["found"].startswith("an interrupted reset is pending since ")
        assert give_up in check["fix"]
        # giving it up as the hint says
        shutil.move(journal, tmp_path / "journal.json")
        assert run("ws", "verify").returncode == 0
        assert run("ws", "verify", "--repair").returncode == 0
        assert run("ws", "reset", second[:12]).returncode == 0
    finally:
        _immutable(target, False)
    log = json.loads(run("ws", "log", "--json").stdout)["snapshots"]
    assert [e["id"] for e in log] == [second, first]
    assert run("ws", "status", "--porcelain").stdout == ""
    assert target.read_text() == "two\n"
    assert "On branch main" in run("ws", "status").stdout
    assert run("ws", "reset", "--hard", first[:12]).returncode == 0  # the cause gone: it works
    assert target.read_text() == "one\n"
