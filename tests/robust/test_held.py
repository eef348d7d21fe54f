"""A workspace held by running programs (issue 10): a process whose current
directory, open files or memory maps are inside is never stranded on a
frozen mount. commit, checkout and reset then go through the live mount
(the commit copies what changed into the new layer; a switch rewrites the
paths that differ), the mount stays on its chain (the state's ``base``), and
once nothing holds the workspace the next command mounts HEAD's chain again
below an upperdir of only the uncommitted changes ("settle"). SIGKILL at
every step of these flows loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.crash import steps_of

from .conftest import Workspace, is_mounted_rw
from .verify import assert_store_ok

pytestmark = pytest.mark.root

#: The backends that hold (their workspaces are changed through the live
#: mount); rootless holds too, tested in tests/backends/test_rootless.py.
HOLDING = ("kernel", "fuse")


@pytest.fixture(params=HOLDING)
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """The robustness suite's workspace, on each backend that holds."""
    it = Workspace(tmp_path)
    it.set_config(lock_timeout=30, backend=request.param)
    try:
        yield it
    finally:
        it.teardown()


BASE = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "docs": {"readme.md": "readme\n", "guide.md": "guide\n"},
    "old": {"x.txt": "x\n", "sub": {"y.txt": "y\n"}},
    ".snapwsignore": "*.swp\n",
}

#: A shell-like process: answers commands read from stdin, one JSON line each.
SHELL = """\
import json, mmap, os, sys
held = []
print('ready', flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(' ')
    try:
        if cmd == 'ls':
            out = sorted(os.listdir(arg or '.'))
        elif cmd == 'cat':
            with open(arg) as f:
                out = f.read()
        elif cmd == 'write':
            path, _, text = arg.partition(' ')
            with open(path, 'w') as f:
                f.write(text)
            out = 'written'
        elif cmd == 'hold':
            f = open(arg, 'rb')
            held.append(f)
            out = 'held'
        elif cmd == 'map':
            f = open(arg, 'rb')
            held.append((f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
            out = 'mapped'
        elif cmd == 'read-held':
            item = held[int(arg)]
            if isinstance(item, tuple):
                out = item[1][:].decode()
            else:
                item.seek(0)
                out = item.read().decode()
        else:
            out = 'unknown'
    except OSError as e:
        out = 'error: ' + e.strerror
    print(json.dumps(out), flush=True)
"""


def ask(proc: subprocess.Popen[str], line: str) -> object:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def edit(ws: Workspace) -> None:
    """Changes of every kind: modified, added, deleted, a deleted directory,
    a directory replaced by a file, and an ignored file."""
    p = ws.path
    (p / "a.txt").write_text("alpha 2\n")
    (p / "new.txt").write_text("new\n")
    (p / "docs" / "guide.md").unlink()
    for sub in ("old/sub/y.txt", "old/x.txt"):
        (p / sub).unlink()
    (p / "old" / "sub").rmdir()
    (p / "old").rmdir()
    (p / "old").write_text("a file now\n")
    (p / "notes.swp").write_text("swap\n")


CHANGES = [" M a.txt", " D docs/guide.md", " T old", "?? new.txt"]


def porcelain(ws: Workspace) -> list[str]:
    return [line.rstrip("/") for line in ws.status() if "old/" not in line]


def test_commit_checkout_reset_through_a_held_workspace(ws: Workspace) -> None:
    ws.init(BASE)
    s0 = ws.state().head.hex
    t0 = ws.tree()
    shell = ws.spawn(SHELL, cwd=ws.path / "docs")
    edit(ws)
    assert porcelain(ws) == CHANGES

    s1 = ws.commit("edits")
    state = ws.state()
    assert state.base is not None and state.base.hex == s0, "held: the mount stays on its chain"
    assert ws.status() == []
    assert (ws.path / "notes.swp").read_text() == "swap\n", "ignored files stay"
    assert "notes.swp" not in ws.run("show", "--name-only", "HEAD").stdout
    # the shell sees what a new process sees, and writes by relative path
    assert ask(shell, "ls") == ["readme.md"]
    assert ask(shell, "write mine.md mine") == "written"
    assert ws.status() == ["?? docs/mine.md"]
    names = ws.run("diff", "--name-status", s0, s1).stdout.splitlines()
    assert {"M\ta.txt", "D\tdocs/guide.md", "A\tnew.txt", "D\told/sub/y.txt"} <= set(names)
    assert not [n for n in names if "notes.swp" in n]

    # a second commit on the held mount, then back to the first snapshot
    s2 = ws.commit("mine")
    ws.run("checkout", s0)
    assert ws.state().head.hex == s0
    assert ask(shell, "ls") == ["guide.md", "readme.md"]
    assert ws.tree() == {**t0, "notes.swp": ws.tree()["notes.swp"]}  # ignored: stays
    assert ws.status() == []
    assert ws.run("reset", "--hard", s2).returncode == 0  # detached: HEAD moves
    assert ask(shell, "cat mine.md") == "mine"
    ws.run("checkout", "main")
    assert ws.state().head.hex == s2 and ws.status() == []

    # reset keeping an uncommitted change on top
    assert ask(shell, "write readme.md readme 2") == "written"
    ws.run("reset", s1)
    assert ws.status() == [" M docs/readme.md"]
    assert ask(shell, "ls") == ["readme.md"]
    assert_store_ok(ws.store_path)
    ws.stop(shell)


def test_open_files_and_memory_maps_keep_working(ws: Workspace) -> None:
    ws.init(BASE)
    shell = ws.spawn(SHELL, cwd=ws.root)  # not inside: it holds only files
    assert ask(shell, f"hold {ws.path / 'a.txt'}") == "held"
    assert ask(shell, f"map {ws.path / 'b.txt'}") == "mapped"
    (ws.path / "c.txt").write_text("charlie\n")
    ws.commit("while files are held")
    assert ws.state().base is not None, "an open file holds the workspace"
    assert ask(shell, "read-held 0") == "alpha\n"
    assert ask(shell, "read-held 1") == "bravo\n"
    assert ask(shell, f"cat {ws.path / 'c.txt'}") == "charlie\n"
    assert is_mounted_rw(ws.path)
    ws.stop(shell)


#: A program writing files in its directory as fast as it can until told
#: to stop; prints how many it wrote and every error it met.
BUSY_WRITER = """\
import json, os, sys, threading
stop = threading.Event()
done = {"written": 0, "errors": []}
def loop():
    n = 0
    while not stop.is_set():
        n += 1
        try:
            with open(f"w{n % 50}.log", "w") as f:
                f.write(str(n))
            done["written"] += 1
        except OSError as e:
            done["errors"].append(e.strerror)
t = threading.Thread(target=loop)
t.start()
print('ready', flush=True)
sys.stdin.read()
stop.set()
t.join()
print(json.dumps(done), flush=True)
"""


def test_a_held_commit_never_makes_the_tree_read_only(ws: Workspace) -> None:
    """A held commit copies through the live mount without freezing it: a
    program writing files in the workspace the whole time never gets EROFS."""
    ws.init(BASE)
    (ws.path / "out").mkdir()
    writer = ws.spawn(BUSY_WRITER, cwd=ws.path / "out")
    for n in range(4):
        (ws.path / f"edit{n}.txt").write_text(f"{n}\n" * 1000)
        ws.commit(f"held {n}")
        assert ws.state().base is not None, "the writer's directory holds the workspace"
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.close()
    done = json.loads(writer.stdout.readline())
    ws.stop(writer)
    assert done["written"] > 0 and done["errors"] == [], done
    committed = set(ws.run("diff", "--name-only", "HEAD~4", "HEAD").stdout.split())
    assert {f"edit{n}.txt" for n in range(4)} <= committed, committed
    assert_store_ok(ws.store_path)


def test_a_held_workspace_settles_once_free(ws: Workspace) -> None:
    ws.init(BASE)
    shell = ws.spawn(SHELL, cwd=ws.path)
    edit(ws)
    ws.commit("edits")
    (ws.path / "later.txt").write_text("later\n")
    (ws.path / "b.txt").unlink()
    before = ws.tree()
    assert ws.state().base is not None
    ws.stop(shell)

    # the next command that takes the lock mounts HEAD's chain again, below
    # an upperdir holding only the uncommitted changes
    ws.run("mount")
    state = ws.state()
    assert state.base is None
    upper = ws.store_path / "workspaces" / state.id.hex / state.upper
    kept = sorted(p.relative_to(upper).as_posix() for p in upper.rglob("*"))
    assert kept == ["b.txt", "later.txt", "notes.swp"]
    assert ws.tree() == before
    assert ws.status() == [" D b.txt", "?? later.txt"]
    sid = ws.commit("after settling")  # the zero-copy commit again
    assert ws.state().base is None and ws.log_ids()[0] == sid
    assert_store_ok(ws.store_path)


@pytest.mark.parametrize("step", steps_of("commit", "kernel"))  # (fuse's are the same)
def test_crash_during_a_held_commit(ws: Workspace, step: str) -> None:
    ws.init(BASE)
    shell = ws.spawn(SHELL, cwd=ws.path / "docs")
    edit(ws)
    before = ws.tree()
    head = ws.state().head.hex
    proc = ws.run("commit", "-m", "crashing", env={"SNAPWS_CRASH_AT": step}, check=False)
    if step == "commit:beneath":  # a held commit mounts nothing: never reached
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    lines = porcelain(ws)
    assert ws.tree() == before, "nothing of the working tree is lost"
    if lines:
        assert step in ("commit:frozen", "commit:staged") and ws.state().head.hex == head
        assert lines == CHANGES
    else:
        assert ws.log_ids()[1] == head
    assert ask(shell, "write after.md after") == "written"
    assert "?? docs/after.md" in ws.status()
    assert_store_ok(ws.store_path)
    ws.stop(shell)


@pytest.mark.parametrize("step", [*steps_of("checkout", "plain")])
def test_crash_during_a_held_checkout(ws: Workspace, step: str) -> None:
    ws.init(BASE)
    s0 = ws.state().head.hex
    edit(ws)
    ws.commit("edits")
    s1_tree = ws.tree()
    shell = ws.spawn(SHELL, cwd=ws.path / "docs")
    proc = ws.run("checkout", s0, env={"SNAPWS_CRASH_AT": step}, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert ws.status() == []  # recovered: the checkout finished
    assert ws.state().head.hex == s0
    assert "guide.md" in ask(shell, "ls")  # type: ignore[operator]
    ws.run("checkout", "main")
    assert ws.tree() == s1_tree
    assert_store_ok(ws.store_path)
    ws.stop(shell)


@pytest.mark.parametrize("step", ["checkout:journaled", "checkout:logged", "checkout:shown"])
def test_crash_while_settling(ws: Workspace, step: str) -> None:
    ws.init(BASE)
    shell = ws.spawn(SHELL, cwd=ws.path)
    edit(ws)
    ws.commit("edits")
    (ws.path / "later.txt").write_text("later\n")
    before = ws.tree()
    ws.stop(shell)
    proc = ws.run("mount", env={"SNAPWS_CRASH_AT": step}, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert ws.status() == ["?? later.txt"]
    assert ws.tree() == before
    ws.run("mount")
    assert ws.state().base is None
    assert ws.tree() == before
    assert_store_ok(ws.store_path)


def test_flatten_leaves_a_held_workspace_on_its_mount(ws: Workspace) -> None:
    ws.init(BASE)
    shell = ws.spawn(SHELL, cwd=ws.path / "docs")
    for n in range(4):
        assert ask(shell, f"write n{n}.md {n}") == "written"
        ws.commit(f"c{n}")
    state = ws.state()
    assert state.base is not None
    ws.run("flatten", "--keep", "0")
    after = ws.state()
    # not remounted: the same upper, work and base; the shell goes on working
    assert (after.upper, after.work, after.base) == (state.upper, state.work, state.base)
    assert ask(shell, "ls") == ["guide.md", "n0.md", "n1.md", "n2.md", "n3.md", "readme.md"]
    assert ask(shell, "write late.md late") == "written"
    assert ws.status() == ["?? docs/late.md"]
    assert_store_ok(ws.store_path)
    ws.stop(shell)


def held_and_watched(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, subprocess.Popen[str], list[str]]:
    """BASE, held by a shell in docs/ once a commit went through it: the
    first snapshot's id, the shell, and the actions the mount is frozen
    for from now on (a spy on :meth:`MountSwapper.freeze`)."""
    from snapws.backends import swap

    ws.init(BASE)
    s0 = ws.state().head.hex
    shell = ws.spawn(SHELL, cwd=ws.path / "docs")
    (ws.path / "a.txt").write_text("alpha 2\n")
    ws.commit("held now")
    assert ws.state().base is not None
    frozen: list[str] = []
    real = swap.MountSwapper.freeze

    def spy(self: swap.MountSwapper, target: Path, action: str, *a: object, **kw: object) -> None:
        frozen.append(action)
        real(self, target, action, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(swap.MountSwapper, "freeze", spy)
    return s0, shell, frozen


def test_a_switch_that_rewrites_nothing_leaves_a_held_workspace_writable(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkout of the branch it is on, checkout -b and reset to HEAD rewrite
    no path: a held workspace is not frozen, so no program inside meets a
    read-only tree; a switch that rewrites paths still is."""
    s0, shell, frozen = held_and_watched(ws, monkeypatch)
    assert ask(shell, "write mine.md mine") == "written"  # uncommitted: stays
    for args in (("checkout", "main"), ("checkout", "-b", "topic"), ("reset",), ("reset", "HEAD")):
        assert ws.run(*args).returncode == 0, args
        assert frozen == [], args
        assert ws.status() == ["?? docs/mine.md"], args
    assert ws.state().branch == "topic"
    assert ws.run("checkout", "--discard", s0).returncode == 0
    assert frozen == ["switch snapshots"]  # a rewrite freezes, as before
    assert ask(shell, "ls") == ["guide.md", "readme.md"]
    assert_store_ok(ws.store_path)
    ws.stop(shell)


def test_a_held_refusal_names_only_the_changes_that_clash(ws: Workspace) -> None:
    """A directory that a held workspace's upperdir holds opaque (it was
    made again) is no uncommitted change once committed: a switch that
    rewrites paths below it is not refused for them, and a refusal names
    the changes that clash, not every path the two snapshots differ in."""
    ws.init(BASE)
    s0 = ws.state().head.hex
    shell = ws.spawn(SHELL, cwd=ws.path)
    p = ws.path
    for name in ("readme.md", "guide.md"):
        (p / "docs" / name).unlink()
    (p / "docs").rmdir()
    (p / "docs").mkdir()  # made again: opaque in the upperdir
    (p / "docs" / "readme.md").write_text("readme 2\n")
    ws.commit("docs again")
    assert ws.state().base is not None, "held"
    (p / "b.txt").write_text("bravo 2\n")  # the only uncommitted change
    out = ws.run("checkout", s0)
    assert out.returncode == 0, out.stderr
    assert ws.status() == [" M b.txt"]
    assert (p / "docs" / "guide.md").read_text() == "guide\n"
    ws.run("checkout", "main")
    (p / "docs" / "readme.md").write_text("mine\n")  # differs between main and s0: clashes
    out = ws.run("checkout", s0, check=False)
    assert out.returncode == 5, out.stderr
    assert "differ between HEAD and" in out.stderr
    named = out.stderr.split("differ between HEAD and", 1)[1].split(":", 1)[1].split("\n")[0]
    assert [n.strip() for n in named.split(",")] == ["docs/readme.md"]
    assert ws.status() == [" M b.txt", " M docs/readme.md"]
    ws.stop(shell)


def test_a_held_switch_that_cannot_fit_changes_nothing(tmp_path: Path) -> None:
    """A checkout through the live mount on a nearly full filesystem is
    refused before anything changes (exit 17), not halfway with a part of
    a file in the tree; once there is room it works."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    try:
        ws = Workspace(small)
        ws.set_config(lock_timeout=30, backend="kernel")
        try:
            big = bytes(range(256)) * (6 << 12)  # 6 MiB
            ws.gen({"a.txt": "alpha\n"})
            (ws.path / "big.bin").write_bytes(big)
            ws.run("init")
            s0 = ws.state().head.hex
            shell = ws.spawn(SHELL, cwd=ws.path)
            (ws.path / "big.bin").unlink()
            ws.commit("no big")
            assert ws.state().base is not None, "held"
            free = os.statvfs(small).f_bfree * os.statvfs(small).f_frsize
            (small / "filler").write_bytes(b"\0" * (free - (3 << 20)))  # 3 MiB left
            out = ws.run("checkout", s0, check=False)
            assert out.returncode == 17, out.stderr
            assert "not enough space" in out.stderr and "nothing was changed" in out.stderr
            assert not (ws.path / "big.bin").exists()
            assert sorted(os.listdir(ws.path)) == ["a.txt"]
            assert ws.state().head.hex != s0 and ws.status() == []
            (small / "filler").unlink()
            ws.run("checkout", s0)
            assert (ws.path / "big.bin").read_bytes() == big
            assert_store_ok(ws.store_path)
            ws.stop(shell)
        finally:
            ws.teardown()
    finally:
        if os.path.ismount(small):  # (the workspace's teardown detaches what is below)
            subprocess.run(["umount", "-l", str(small)], check=True)


def test_a_refused_switch_never_freezes_a_held_workspace(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkout and reset refused for uncommitted changes that clash are
    refused before the tree is frozen: a program writing inside never meets
    a read-only tree for a switch that does not happen."""
    s0, shell, frozen = held_and_watched(ws, monkeypatch)
    assert ask(shell, "write ../a.txt mine") == "written"  # differs in s0: clashes
    for args in (("checkout", s0), ("reset", s0)):
        out = ws.run(*args, check=False)
        assert out.returncode == 5, (args, out.stderr)
        assert "a.txt" in out.stderr
        assert frozen == [], args
    assert ws.status() == [" M a.txt"]
    assert ws.run("checkout", "--discard", s0).returncode == 0
    assert frozen == ["switch snapshots"]
    assert (ws.path / "a.txt").read_text() == "alpha\n"
    ws.stop(shell)
