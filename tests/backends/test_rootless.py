"""The rootless backend end to end: the real CLI run as the unprivileged user
``snapwst`` (see users.py), mounting in user namespaces.

These tests need root (to become the test user) and working unprivileged
user namespaces: they fail, never skip, when either is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, unmount_all_under
from helpers import gen

from backends.users import UserArea, require_rootless

pytestmark = pytest.mark.root

PY = sys.executable
SPEC = {"a": "alpha\n", "d": {"e": {"f": "x\n"}}, "keep": {"k": "1\n"}}
FIXED_NS = 1_700_000_000 * 10**9


class RootlessWs:
    """A rootless workspace ``area.root/ws`` with its store ``.snapws`` beside it."""

    def __init__(self, area: UserArea, name: str = "ws") -> None:
        self.area = area
        self.path = area.root / name
        self.store = area.root / ".snapws"

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        """``snapws -C WS ARGS`` as the user, from outside the workspace and
        outside any namespace; returns stdout."""
        return self.area.snapws("-C", self.path, *args, check=check, env=env).stdout

    def json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--json"))

    def inside(self, script: str, check: bool = True) -> str:
        """``snapws run -- sh -c SCRIPT`` (in the workspace, in its namespace)."""
        return self.area.snapws(
            "run", "-C", self.path, "--", "sh", "-c", script, check=check
        ).stdout

    def porcelain(self) -> set[str]:
        return set(self.cli("status", "--porcelain").splitlines())

    def state(self) -> dict[str, object]:
        (wsdir,) = (self.store / "workspaces").iterdir()
        data = json.loads((wsdir / "state.json").read_bytes())
        assert isinstance(data, dict)
        return data

    def ns_records(self) -> list[str]:
        (wsdir,) = (self.store / "workspaces").iterdir()
        ns = wsdir / "ns"
        return sorted(p.name for p in ns.iterdir()) if ns.is_dir() else []


def own_tree(root: Path, uid: int, gid: int, mtime_ns: int | None = None) -> None:
    """chown (and optionally set the mtime of) everything under ``root``."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            p = os.path.join(dirpath, name)
            os.lchown(p, uid, gid)
            if mtime_ns is not None:
                os.utime(p, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    os.lchown(root, uid, gid)
    if mtime_ns is not None:
        os.utime(root, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def area() -> Iterator[UserArea]:
    a = UserArea()
    try:
        require_rootless(a)
        yield a
    finally:
        a.cleanup_processes()
        unmount_all_under(a.root)  # kernel-backend twins made by root
        a.cleanup()


def make_rootless(area: UserArea, spec: dict[str, object] = SPEC) -> RootlessWs:
    ws = RootlessWs(area)
    gen(ws.path, spec)
    own_tree(ws.path, area.uid, area.gid, FIXED_NS)
    out = area.snapws("--store", ws.store, "init", "--backend", "rootless", "ws", "--json").stdout
    assert json.loads(out)["workspace"] == str(ws.path)
    assert ws.state()["backend"] == "rootless"
    return ws


@pytest.fixture
def rws(area: UserArea) -> RootlessWs:
    return make_rootless(area)


def test_init_says_what_rootless_means_in_one_line(area: UserArea) -> None:
    (area.root / "ws").mkdir()
    os.chown(area.root / "ws", area.uid, area.gid)
    done = area.snapws("init", "--backend", "rootless", "ws")
    notes = [line for line in done.stderr.splitlines() if "rootless" in line]
    assert len(notes) == 1, done.stderr
    assert "other programs see" in notes[0]
    assert f"`snapws shell {area.root / 'ws'}`" in notes[0]


def test_init_makes_a_user_form_store_and_no_host_mount(rws: RootlessWs) -> None:
    marker = json.loads((rws.store / "snapws-store.json").read_bytes())
    assert marker["xattrs"] == "user"
    assert os.listdir(rws.path) == []  # the mount lives only in namespaces
    assert rws.inside("cat a; cat keep/k") == "alpha\n1\n"
    assert rws.porcelain() == set()
    assert rws.ns_records() == []  # every namespace died with its command


def test_lifecycle_inside_and_outside(rws: RootlessWs) -> None:
    rws.inside("echo beta > b && rm a && echo more >> keep/k")
    assert rws.porcelain() == {"?? b", " D a", " M keep/k"}
    assert set(rws.cli("diff", "--name-status").splitlines()) == {"A\tb", "D\ta", "M\tkeep/k"}
    second = rws.json("commit", "-m", "second")
    assert isinstance(second, dict) and second["id"]
    assert rws.porcelain() == set()

    # branch and commit from inside the namespace (snapws run of a snapws)
    rws.cli("checkout", "-b", "feature")
    rws.inside(f"echo f > feat && {PY} -m snapws -q commit -m feat")
    log = rws.json("log")
    assert isinstance(log, dict)
    log = log["snapshots"]
    assert isinstance(log, list) and [e["message"] for e in log] == [
        "feat",
        "second",
        "initial snapshot",
    ]
    rws.cli("checkout", "main")
    assert rws.inside("test ! -e feat && cat b") == "beta\n"
    assert "feature" in rws.cli("branch")

    # reset --hard: back to the base snapshot
    rws.cli("reset", "--hard", "HEAD~1")
    assert rws.inside("cat a && test ! -e b && cat keep/k") == "alpha\n1\n"

    # restore from HEAD
    rws.inside("rm keep/k && echo junk > a")
    assert rws.porcelain() == {" M a", " D keep/k"}
    rws.cli("restore", "keep/k", "a")
    assert rws.porcelain() == set()
    assert rws.inside("cat a keep/k") == "alpha\n1\n"

    rws.cli("verify")
    assert rws.ns_records() == []
    # old upper and work dirs (work/work is mode 000 when made in a namespace) are gone
    (wsdir,) = (rws.store / "workspaces").iterdir()
    caches = ("hashes", "held-clean")
    names = sorted(p.name.split("-")[0] for p in wsdir.iterdir() if p.name not in caches)
    assert names == ["ns", "state.json", "upper", "work"]  # (caches, or none yet)
    assert list((rws.store / "trash").iterdir()) == []


def test_flatten_keeps_deletions_and_opaque_dirs(rws: RootlessWs) -> None:
    steps = [
        "rm a",
        "rm -r d && mkdir d && echo 1 > d/one",
        "echo 2 > d/two && rm keep/k",
        "rm -r d && mkdir -p d/e && echo 3 > d/e/three",
        "echo back > a",
        "rm a && mkdir a && echo in > a/x",
        "echo k > keep/k2",
    ]
    for n, step in enumerate(steps):
        rws.inside(step)
        rws.cli("commit", "-m", f"step {n}")  # commits compact the chain: merges, too
    expect = "a/x:in\nd/e/three:3\nkeep/k2:k\n"
    show = "find . -type f | sort | while read f; do printf '%s:%s\\n' ${f#./} $(cat $f); done"
    assert rws.inside(show) == expect
    rws.cli("flatten")
    assert rws.inside(show) == expect
    rws.cli("verify")
    rws.cli("checkout", "HEAD~5")  # an older snapshot, through the merged layers
    assert rws.inside("cat d/one; test ! -e d/two && test ! -e a && cat keep/k") == "1\n1\n"
    markers = [
        name
        for layer in (rws.store / "layers").iterdir()
        for dirpath, _, _ in os.walk(layer / "tree")
        for name in os.listxattr(dirpath)
    ]
    assert "user.overlay.opaque" in markers and "trusted.overlay.opaque" not in markers


def test_commit_from_outside_reaches_a_running_holder(rws: RootlessWs) -> None:
    script = (
        "echo one > f1; echo ready; read go; ls; "
        "grep ' - overlay ' /proc/self/mountinfo; echo two > f2; echo done"
    )
    holder = rws.area.popen(PY, "-m", "snapws", "run", "-C", rws.path, "--", "sh", "-c", script)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "ready\n"
        assert len(rws.ns_records()) == 1  # the holder's namespace is recorded
        assert rws.porcelain() == {"?? f1"}
        commit = rws.json("commit", "-m", "one")
        assert isinstance(commit, dict) and commit["id"]
        assert len(rws.ns_records()) == 1  # the commit worked in the holder's namespace
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, _ = holder.communicate(timeout=120)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0, out
    lines = out.splitlines()
    assert lines[-1] == "done"
    assert "f1" in lines
    # the holder was not stranded: without `cd .` it wrote f2 after the
    # commit, which went through its live mount (held: the same upperdir,
    # HEAD's chain below it recorded as the base)
    state = rws.state()
    assert state.get("base"), state
    overlays = [line for line in lines if line.split()[4:5] == [str(rws.path)]]
    assert len(overlays) == 1 and f"/{state['upper']}," in overlays[0], overlays
    assert rws.ns_records() == []
    assert rws.porcelain() == {"?? f2"}  # written after the commit: nothing lost
    rws.cli("commit", "-m", "two")
    assert rws.inside("cat f1 f2") == "one\ntwo\n"
    rws.cli("verify")  # no published layer was written to


def test_shell_reads_stdin_and_passes_its_status(rws: RootlessWs) -> None:
    proc = rws.area.snapws(
        "shell",
        "ws",
        input='echo made > s; echo "$SNAPWS_WORKSPACE"; id -u; exit 3\n',
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines() == [str(rws.path), "0"]  # uid 0 in the namespace
    assert rws.porcelain() == {"?? s"}


def test_run_passes_exit_status_and_signals(rws: RootlessWs) -> None:
    assert rws.inside("exit 7", check=False) == ""
    assert (
        rws.area.snapws("run", "-C", rws.path, "--", "sh", "-c", "exit 7", check=False).returncode
        == 7
    )
    killed = rws.area.snapws("run", "-C", rws.path, "--", "sh", "-c", "kill -TERM $$", check=False)
    assert killed.returncode == 128 + signal.SIGTERM
    missing = rws.area.snapws("run", "-C", rws.path, "--", "/nonexistent/cmd", check=False)
    assert missing.returncode == 127 and "not found" in missing.stderr

    # SIGTERM sent to snapws reaches the command
    holder = rws.area.popen(PY, "-m", "snapws", "run", "-C", rws.path, "--", "sleep", "60")
    try:
        child = _wait_for_child(holder.pid)
        assert _comm(child) == "sleep"
        os.kill(holder.pid, signal.SIGTERM)
        assert holder.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if holder.poll() is None:
            holder.kill()


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _wait_for_child(ppid: int) -> int:
    """The pid of ``ppid``'s first child (polls /proc; the bound is generous)."""
    for _ in range(3000):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == ppid:
                return int(name)
        time.sleep(0.02)
    raise AssertionError(f"process {ppid} started no child")


def test_deletions_and_opaque_dirs_give_the_kernel_backends_layers(
    rws: RootlessWs, area: UserArea
) -> None:
    # the same tree, owned by the same user with the same mtimes, as a
    # kernel-backend workspace made by root
    kdir = area.root / "kernel"
    kdir.mkdir()
    kws = kdir / "ws"
    gen(kws, SPEC)
    own_tree(kws, area.uid, area.gid, FIXED_NS)
    run_cli("--store", kdir / "store", "init", kws, cwd=area.root)
    klog = json.loads(run_cli("-C", kws, "log", "--json", cwd=area.root).stdout)["snapshots"]
    rlog = rws.json("log")
    assert isinstance(rlog, dict)
    rlog = rlog["snapshots"]
    assert isinstance(rlog, list)
    rbase = (rws.store / "layers" / rlog[0]["layer"] / "manifest").read_bytes()
    kbase = (kdir / "store" / "layers" / klog[0]["layer"] / "manifest").read_bytes()
    # equal but for the root's mtime, which init takes from DIR at the time of init
    assert rbase.splitlines()[1:] == kbase.splitlines()[1:], (rbase, kbase)

    edit = (
        "umask 022 && rm a && rm -r d && mkdir d && echo g > d/g && echo new > keep/new && "
        f"touch -h -d @{FIXED_NS // 10**9} . d d/g keep keep/new"
    )
    rws.inside(edit)
    subprocess.run(["sh", "-c", edit], cwd=kws, check=True)  # as root, on the host's mount
    own = [kws, kws / "d", kws / "d" / "g", kws / "keep", kws / "keep" / "new"]
    for p in own:
        os.lchown(p, area.uid, area.gid)
        os.utime(p, ns=(FIXED_NS, FIXED_NS), follow_symlinks=False)
    expect = {" D a", " D d/e/", " D d/e/f", "?? d/g", "?? keep/new"}
    assert rws.porcelain() == expect
    kstatus = run_cli("-C", kws, "status", "--porcelain", cwd=area.root).stdout
    assert set(kstatus.splitlines()) == expect
    rcommit = rws.json("commit", "-m", "edit")
    kcommit = json.loads(run_cli("-C", kws, "commit", "-m", "edit", "--json", cwd=area.root).stdout)
    assert isinstance(rcommit, dict)
    assert rcommit["layer"] == kcommit["layer"]
    lid = rcommit["layer"]
    manifest = (rws.store / "layers" / lid / "manifest").read_bytes()
    assert b'"o":true' in manifest and b'"k":"w","p":"a"' in manifest
    assert manifest == (kdir / "store" / "layers" / lid / "manifest").read_bytes()
    # each store keeps the opaque marker in its own xattr form
    rtree, ktree = rws.store / "layers" / lid / "tree", kdir / "store" / "layers" / lid / "tree"
    assert os.getxattr(rtree / "d", "user.overlay.opaque") == b"y"
    assert os.getxattr(ktree / "d", "trusted.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(rtree / "d")
    assert "user.overlay.opaque" not in os.listxattr(ktree / "d")
    # and the rootless mount honours it: d shows only g
    assert rws.inside("ls d && test ! -e a") == "g\n"


@pytest.mark.parametrize(
    "step", ["commit:frozen", "commit:journaled", "commit:layer-published", "commit:state-written"]
)
def test_crash_during_commit_recovers(rws: RootlessWs, step: str) -> None:
    rws.inside("echo crash > c")
    crashed = rws.area.snapws(
        "-C", rws.path, "commit", "-m", "crash", check=False, env={"SNAPWS_CRASH_AT": step}
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert len(rws.ns_records()) == 1  # the dead command's record stays ...
    status = rws.porcelain()  # ... until the next command finds it dead and recovers
    assert rws.ns_records() == []
    messages = [e["message"] for e in rws.json("log")["snapshots"]]  # type: ignore[index]
    if step == "commit:frozen":  # before the journal: nothing was committed
        assert status == {"?? c"} and messages == ["initial snapshot"]
        rws.cli("commit", "-m", "crash")
    else:
        assert status == set() and messages == ["crash", "initial snapshot"]
    assert rws.inside("cat c && echo after > c2") == "crash\n"
    assert rws.porcelain() == {"?? c2"}
    rws.cli("verify")


def test_crash_while_a_holder_runs_recovers_in_its_namespace(rws: RootlessWs) -> None:
    script = "echo g > g; echo ready; read go; cd .; cat g; echo after > h; echo done"
    holder = rws.area.popen(PY, "-m", "snapws", "run", "-C", rws.path, "--", "sh", "-c", script)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "ready\n"
        crashed = rws.area.snapws(
            "-C",
            rws.path,
            "commit",
            "-m",
            "g",
            check=False,
            env={"SNAPWS_CRASH_AT": "commit:journaled"},  # frozen and journaled, not detached
        )
        assert crashed.returncode == -signal.SIGKILL
        assert rws.porcelain() == set()  # recovery finished the commit in the holder's namespace
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, _ = holder.communicate(timeout=120)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0 and out.splitlines()[-2:] == ["g", "done"], out
    assert rws.porcelain() == {"?? h"}
    rws.cli("verify")


def test_root_is_refused_on_a_rootless_workspace(rws: RootlessWs) -> None:
    proc = run_cli("-C", rws.path, "status", cwd=rws.area.root, check=False)
    assert proc.returncode == 9, proc.stderr
    assert "rootless workspace" in proc.stderr and "runuser" in proc.stderr
    assert os.listdir(rws.path) == []  # root mounted nothing on the host


def test_a_plain_workspace_of_the_store_shares_its_snapshots(rws: RootlessWs) -> None:
    rws.inside("rm a && rm -r d && mkdir d && echo g > d/g")
    made = rws.json("commit", "-m", "rootless")
    assert isinstance(made, dict)
    area = rws.area
    area.run("mkdir", "pw")
    area.snapws("--store", rws.store, "init", "-b", "plain", "--backend", "plain", "pw")
    plain = area.root / "pw"
    area.snapws("-C", plain, "checkout", "--detach", str(made["id"]))
    files = sorted(
        os.path.relpath(os.path.join(d, f), plain) for d, _, fs in os.walk(plain) for f in fs
    )
    assert files == ["d/g", "keep/k"]  # the deletion and the opaque directory, as plain files
    area.run("sh", "-c", "echo p > pw/new")
    back = json.loads(area.snapws("-C", plain, "commit", "-m", "plain", "--json").stdout)
    rws.cli("checkout", "--detach", str(back["id"]))
    assert rws.inside("cat new; ls d; test ! -e a") == "p\ng\n"
    rws.cli("verify")


def test_files_written_from_outside_are_named_never_clean_never_cached(rws: RootlessWs) -> None:
    # outside the namespace the directory looks empty; a file written there
    # blocks the mount: status names it (not "clean"), the hint says how to
    # reach a rootless workspace (not `snapws mount`), and cache save refuses
    # rather than saving the workspace without it
    rws.area.run("sh", "-c", f"echo built > {rws.path}/out.txt")
    r = rws.area.snapws("-C", rws.path, "status", check=False)
    assert r.returncode == 12, r.stderr
    assert "clean" not in r.stdout
    assert "1 entry written there from outside the workspace's namespace" in r.stderr
    assert ": out.txt\n" in r.stderr
    assert f"`snapws shell {rws.path}`" in r.stderr and "snapws mount" not in r.stderr
    layout = rws.area.root / "cache-layout"
    env = {"SNAPWS_CACHE_REMOTE": f"dir:{layout}"}
    saved = rws.area.snapws("-C", rws.path, "cache", "save", "k1", check=False, env=env)
    assert saved.returncode == 12, saved.stderr
    assert "out.txt" in saved.stderr

    # moved away, the workspace is itself again; a restore outside a shell
    # does not claim a hit over a directory other programs see empty
    rws.area.run("rm", f"{rws.path}/out.txt")
    assert rws.porcelain() == set()
    rws.area.snapws("-C", rws.path, "cache", "save", "k1", env=env)
    rws.inside("echo more > more.txt")
    rws.json("commit", "-m", "more")
    restored = rws.area.snapws("-C", rws.path, "cache", "restore", "k1", check=False, env=env)
    assert restored.returncode == 19, (restored.stdout, restored.stderr)
    assert "Cache hit" not in restored.stdout
    assert "other programs see the directory empty" in restored.stderr
    assert f"`snapws shell {rws.path}`" in restored.stderr
    # inside the namespace the restored tree is there
    assert rws.inside("cat a; test ! -e more.txt && echo gone") == "alpha\ngone\n"


def test_an_image_of_other_owners_is_refused_clearly(area: UserArea) -> None:
    # root exports a tree with files of uid 33; the user cannot give them that
    # owner in its namespace (only its own ids are mapped): exit 9 naming
    # why and what to do, never an internal error, and no workspace is left
    src = area.root / "src"
    gen(src, {"www": {"index.html": "hi\n"}, "a": "a\n"})
    os.chown(src / "www" / "index.html", 33, 33)
    store = area.root / "rootstore"
    run_cli("--store", store, "init", "--backend", "kernel", src, cwd=area.root)
    run_cli("--store", store, "-C", src, "export", "-o", area.root / "img", "HEAD", cwd=area.root)
    run_cli("--store", store, "-C", src, "eject", cwd=area.root)
    os.chmod(area.root / "img", 0o755)
    for p in (area.root / "img").rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    r = area.snapws(
        "--store", area.root / "ustore", "init", "--backend", "rootless",
        "--from", area.root / "img", "ws", check=False,
    )  # fmt: skip
    assert r.returncode == 9, (r.returncode, r.stderr)
    assert "not mapped in this user namespace" in r.stderr and "hint: import it as root" in r.stderr
    assert "Please report it" not in r.stderr
    assert not (area.root / "ws").exists() or not any((area.root / "ws").iterdir())


def test_eject_of_a_directory_named_on_the_command_line(rws: RootlessWs) -> None:
    """`snapws eject DIR` from outside the workspace enters DIR's namespace,
    as `snapws -C DIR eject` does (it failed with exit 9, "run snapws as the
    user who owns the workspace", for that very user)."""
    rws.inside("echo new > n")
    out = rws.area.snapws("--store", rws.store, "eject", rws.path, check=False)
    assert out.returncode == 0, out.stderr
    assert (rws.path / "n").read_text() == "new\n"  # an ordinary directory again
    assert not list((rws.store / "workspaces").iterdir())
