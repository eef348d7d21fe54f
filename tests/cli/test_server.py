"""The command server (snapws.cli.server) and its client, the console script
(snapws.cli.launch): a served command behaves as the same command run in
its own process, and the server gives way whenever it could not."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory, _clean_env

from snapws.cli import launch, server

#: The ``snapws`` command's code (scripts/snapws; sys.argv[1:] are the arguments).
CLIENT = "from snapws.cli.launch import main; main()"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "snapws"


class Served:
    """Runs the console script with a server of its own (a private runtime
    directory, so that no other server is used); kills the server after."""

    def __init__(self, tmp_path: Path) -> None:
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        self.dir = runtime / "snapws"
        self.env = _clean_env({"SNAPWS_SERVER": "1", "XDG_RUNTIME_DIR": str(runtime)})
        self.env.pop("CI", None)

    def run(
        self, *args: str, cwd: Path, served: bool | None = True, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """The client, with ``-X importtime`` to tell who ran the command:
        a worker imports nothing, this process imports click. ``served``
        None: either."""
        env = dict(self.env, **kw.pop("env", {}))  # type: ignore[arg-type]
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", CLIENT, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **kw,  # type: ignore[call-overload]
        )
        imported_click = _imports_click(proc.stderr)
        if served is not None:
            assert imported_click is not served, proc.stderr
        stderr = "".join(ln for ln in proc.stderr.splitlines(True) if "import time:" not in ln)
        return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, stderr)

    def start(self, cwd: Path) -> None:
        """A first command (run here) starts the server; wait for it."""
        self.run("status", cwd=cwd, served=None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for sock in self.dir.glob("*.sock"):
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    return
            time.sleep(0.05)
        raise AssertionError(f"no server came up in {self.dir}")

    def server_pids(self) -> list[int]:
        pids = []
        for lock in self.dir.glob("*.lock"):
            text = lock.read_text().strip()
            if text and Path(f"/proc/{text}").exists():
                pids.append(int(text))
        return pids

    def stop(self) -> None:
        """Kill every server of this runtime directory, those still starting
        (no pid in their lock file yet) too."""
        for pid in launch.server_pids(str(self.dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _imports_click(importtime: str) -> bool:
    return re.search(r"^import time:.*\|\s+click$", importtime, re.M) is not None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    it = Served(tmp_path)
    try:
        yield it
    finally:
        it.stop()


def direct(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapws", *args],
        cwd=cwd,
        env=_clean_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def ws(make_workspace: WorkspaceFactory) -> Workspace:
    w = make_workspace(spec={"a.txt": "one\n", "src": {"b.py": "print(1)\n"}})
    (w.path / "a.txt").write_text("two\n")
    w.commit("second")
    (w.path / "a.txt").write_text("three\n")
    (w.path / "new.txt").write_text("new\n")
    return w


def test_served_commands_print_and_exit_as_in_their_own_process(
    ws: Workspace, served: Served
) -> None:
    served.start(ws.outside)
    cases = [
        ("status",),
        ("status", "--porcelain"),
        ("diff", "--stat"),
        ("diff", "HEAD~1", "HEAD", "--name-status"),
        ("log", "--oneline"),
        ("show", "--stat", "HEAD"),
        ("branch",),
        ("log", "no-such-rev"),  # exit 4-ish: a bad revision
        ("diff", "--no-such-option"),  # exit 2
        ("status", "--json"),
    ]
    for args in cases:
        here = direct("-C", str(ws.path), *args, cwd=ws.outside)
        there = served.run("-C", str(ws.path), *args, cwd=ws.outside)
        assert (there.returncode, there.stdout, there.stderr) == (
            here.returncode,
            here.stdout,
            here.stderr,
        ), args


def test_a_served_commit_from_inside_the_workspace_is_free(ws: Workspace, served: Served) -> None:
    """The client's directory is in the workspace, as a process of its own
    would be: the commit freezes and swaps the upperdir (free), it does not
    copy through the mount as for a program holding it."""
    served.start(ws.outside)
    state = next(ws.store.glob("workspaces/*/state.json"))
    before = json.loads(state.read_text())["upper"]
    out = served.run("commit", "-m", "from inside", cwd=ws.path)
    assert out.returncode == 0, out.stderr
    assert json.loads(state.read_text())["upper"] != before  # a new upperdir: the free path
    assert ws.porcelain() == []
    assert "from inside" in ws.run("log", "--oneline").stdout


def test_unserved_commands_and_a_disabled_server_run_in_the_client(
    ws: Workspace, served: Served
) -> None:
    served.start(ws.outside)
    out = served.run("-C", str(ws.path), "du", cwd=ws.outside, served=False)
    assert out.returncode == 0, out.stderr
    out = served.run(
        "-C", str(ws.path), "status", cwd=ws.outside, served=False, env={"SNAPWS_SERVER": "0"}
    )
    assert out.returncode == 0 and "a.txt" in out.stdout


def test_a_client_with_other_capabilities_runs_the_command_itself(
    ws: Workspace, served: Served
) -> None:
    """What a fork cannot change (here the capability bounding set) makes
    the worker decline; the command still runs, in the client."""
    served.start(ws.outside)
    drop = "import ctypes; ctypes.CDLL(None).prctl(24, 21, 0, 0, 0)\n"  # PR_CAPBSET_DROP SYS_ADMIN
    code = drop + CLIENT
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, "-C", str(ws.path), "status"],
        cwd=ws.outside,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _imports_click(proc.stderr)  # declined: run by the client
    assert "a.txt" in proc.stdout


def test_a_closed_pipe_ends_the_client_by_sigpipe(ws: Workspace, served: Served) -> None:
    """``snapws diff -p | head -1``: the reader goes away long before the
    output ends (megabytes, far more than a pipe holds)."""
    (ws.path / "big.txt").write_text("".join(f"{i}\n" for i in range(200_000)))
    served.start(ws.outside)
    script = (
        f"{sys.executable} -c '{CLIENT}' -C {ws.path} diff -p | head -1; echo ${{PIPESTATUS[0]}}"
    )
    out = subprocess.run(
        ["bash", "-c", script], env=served.env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.splitlines()[-1] == str(128 + signal.SIGPIPE), out


@pytest.mark.parametrize("server", ["1", "0"])
def test_a_failing_command_keeps_its_code_when_stderr_is_a_closed_pipe(
    ws: Workspace, served: Served, server: str
) -> None:
    """``snapws log nosuchrev 2>&1 | true`` exits 4 (unknown revision)
    served or not: the lost message changes no exit code."""
    served.start(ws.outside)
    for args in (["log", "nosuchrev"], ["diff", "--exit-code", "nosuchrev", "--", "x"]):
        r, w = os.pipe()
        os.close(r)
        try:
            client = subprocess.Popen(
                [sys.executable, "-c", CLIENT, "-C", str(ws.path), *args],
                cwd=ws.outside,
                env=dict(served.env, SNAPWS_SERVER=server),
                stdin=subprocess.DEVNULL,
                stdout=w,
                stderr=w,
            )
        finally:
            os.close(w)
        assert client.wait(timeout=120) == 4, args


def _blocked_client(
    ws: Workspace, served: Served, fifo: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A served ``diff -p`` writing into a pipe nobody reads: its worker
    blocks there. Returns the client and the worker's pid."""
    (ws.path / "big.txt").write_text("".join(f"{i}\n" for i in range(200_000)))
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDWR)  # a reader that never reads
    out = os.open(fifo, os.O_WRONLY)
    os.close(keep)
    try:
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, "-C", str(ws.path), "diff", "-p"],
            cwd=ws.outside,
            env=served.env,
            stdout=out,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(out)
    server_pids = served.server_pids()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _ppid(int(p.name)) in server_pids
        ]
        if workers:
            return client, workers[0]
        time.sleep(0.05)
    client.kill()
    raise AssertionError("no worker started")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_killing_the_client_kills_its_worker(ws: Workspace, served: Served, tmp_path: Path) -> None:
    """kill -9 (or timeout) of the command stops the command, as it stops a
    process of its own: the worker dies with its client."""
    served.start(ws.outside)
    client, worker = _blocked_client(ws, served, tmp_path / "fifo")
    client.kill()
    client.wait(timeout=30)
    assert _gone(worker)
    assert served.server_pids()  # the server itself stays


def test_ctrl_c_reaches_the_worker(ws: Workspace, served: Served, tmp_path: Path) -> None:
    served.start(ws.outside)
    client, worker = _blocked_client(ws, served, tmp_path / "fifo")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert b"snapws: interrupted" in err
    assert _gone(worker)


def test_code_fingerprint_follows_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose code changed on disk must not serve: the fingerprint
    moves with any file's time or size."""
    import types

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "m.py").write_text("x = 1\n")
    fake = types.SimpleNamespace(__path__=[str(pkg)])
    monkeypatch.setattr(server, "snapws", fake)
    monkeypatch.setattr(server, "click", fake)
    first = server.code_fingerprint()
    assert first == server.code_fingerprint()
    (pkg / "sub" / "m.py").write_text("x = 22\n")
    assert server.code_fingerprint() != first


def test_which_commands_are_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNAPWS_SERVER", raising=False)
    assert launch._wants_server(["status"])
    assert launch._wants_server(["-C", "dir", "-q", "commit", "-m", "x"])
    assert launch._wants_server(["--store=/s", "diff"])
    assert not launch._wants_server(["shell"])
    assert not launch._wants_server(["--version"])
    assert not launch._wants_server([])
    monkeypatch.setenv("SNAPWS_SERVER", "0")
    assert not launch._wants_server(["status"])


def test_the_command_that_starts_the_server_finds_the_workspace_free(
    ws: Workspace, served: Served
) -> None:
    """The first served command starts the server, then runs itself; the
    server, importing snapws meanwhile, must not sit in the directory the
    command was started in (here the workspace), or the commit there would
    find the workspace held by another program (and copy through the mount
    instead of taking the upperdir whole)."""
    state = next(ws.store.glob("workspaces/*/state.json"))
    for i in range(3):
        served.stop()  # no server: this commit starts one
        before = json.loads(state.read_text())["upper"]
        (ws.path / f"n{i}.txt").write_text(f"{i}\n")
        out = served.run("commit", "-m", f"n{i}", cwd=ws.path, served=None)
        assert out.returncode == 0, out.stderr
        assert json.loads(state.read_text())["upper"] != before  # free: a new upperdir


def test_an_idle_server_exits(ws: Workspace, served: Served) -> None:
    served.env["SNAPWS_SERVER_IDLE"] = "1"
    served.start(ws.outside)
    pids = served.server_pids()
    assert pids
    assert all(_gone(pid, timeout=30) for pid in pids)
    assert not list(served.dir.glob("*.sock"))  # it took its socket away
    out = served.run("-C", str(ws.path), "status", cwd=ws.outside, served=False)
    assert out.returncode == 0  # the next command runs (and starts another)


def test_the_code_watch_sees_python_files_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's inotify watch: bytecode written beside the code is not
    a change; a .py file written, added or removed, a directory made, are."""
    import types

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "m.py").write_text("x = 1\n")
    fake = types.SimpleNamespace(__path__=[str(pkg)])
    monkeypatch.setattr(server, "snapws", fake)
    monkeypatch.setattr(server, "click", types.SimpleNamespace(__path__=[]))
    cases = [
        lambda: (pkg / "sub" / "m.py").write_text("x = 2\n"),
        lambda: (pkg / "new.py").write_text(""),
        lambda: (pkg / "sub" / "m.py").unlink(),
        lambda: (pkg / "other").mkdir(),
    ]
    for change in cases:
        watch = server.CodeWatch.start()
        assert watch is not None
        try:
            (pkg / "__pycache__").mkdir(exist_ok=True)
            (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
            (pkg / "notes.txt").write_text("not code")
            assert not watch.changed()
            change()
            assert watch.changed()
            assert watch.changed()  # it stays changed
        finally:
            os.close(watch.fd)


def test_a_worker_killed_by_the_signal_its_client_passed_on_ends_the_client_so(
    ws: Workspace, served: Served, tmp_path: Path
) -> None:
    """SIGTERM to the command (kill's default) ends it by SIGTERM, as a
    process of its own (exit 143 to a shell), not with a traceback."""
    served.start(ws.outside)
    client, worker = _blocked_client(ws, served, tmp_path / "fifo")
    client.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=60)
    assert client.returncode == -signal.SIGTERM, err
    assert b"Traceback" not in err
    assert _gone(worker)


def test_a_server_started_by_a_command_that_ignored_ctrl_c_still_passes_it_on(
    ws: Workspace, served: Served, tmp_path: Path
) -> None:
    """A background job of a script ignores SIGINT; the server it starts
    must not make every later command ignore Ctrl-C."""
    first = subprocess.run(
        [sys.executable, "-c", CLIENT, "-C", str(ws.path), "status"],
        cwd=ws.outside,
        env=served.env,
        capture_output=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        timeout=120,
    )
    assert first.returncode == 0
    deadline = time.monotonic() + 60
    while not served.server_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    client, worker = _blocked_client(ws, served, tmp_path / "fifo")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert _gone(worker)


def test_closed_streams_and_a_big_request(ws: Workspace, served: Served) -> None:
    """A closed stdout is not replaced by the client's socket (the command
    runs in the client); a request of megabytes arrives whole."""
    served.start(ws.outside)
    script = f"{sys.executable} -c '{CLIENT}' -C {ws.path} status >&-; echo rc=$?"
    out = subprocess.run(
        ["bash", "-c", script], env=served.env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "rc=0" and "Traceback" not in out.stderr, out
    paths = [f"no/such/path/{i:06d}" for i in range(60_000)]
    here = direct("-C", str(ws.path), "diff", "--name-only", "--", *paths, cwd=ws.outside)
    there = served.run("-C", str(ws.path), "diff", "--name-only", "--", *paths, cwd=ws.outside)
    assert (there.returncode, there.stdout, there.stderr) == (
        here.returncode,
        here.stdout,
        here.stderr,
    )


def test_a_client_in_a_user_namespace_runs_the_command_itself(
    ws: Workspace, served: Served
) -> None:
    """Inside a user namespace (a rootless workspace's ``snapws run``) no
    server is used, nor started: one would live in that namespace."""
    served.start(ws.outside)
    before = served.server_pids()
    proc = subprocess.run(
        [
            *("unshare", "--user", "--map-root-user"),
            *(sys.executable, "-X", "importtime", "-c", CLIENT, "-C", str(ws.path), "status"),
        ],
        cwd=ws.outside,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert _imports_click(proc.stderr), proc.stderr  # it ran in the client
    time.sleep(0.5)
    assert served.server_pids() == before


def test_a_server_a_niced_command_started_gives_way(tmp_path: Path) -> None:
    """As an ordinary user: the first command, under ``nice``, starts the
    server at that priority; the next, at the normal one, cannot be served
    by it (she may not raise a priority back), so the server retires, and
    the command after is served by a new one at the normal priority."""
    from backends.users import UserArea

    area = UserArea()
    try:
        runtime = area.root / "run"
        area.run("mkdir", "-m", "700", runtime)
        env = {"XDG_RUNTIME_DIR": str(runtime), "SNAPWS_SERVER": "1"}
        ws = area.root / "ws"
        area.run("mkdir", ws)
        area.run("sh", "-c", "echo a > a.txt", cwd=ws)
        area.snapws("init", ws, env={**env, "SNAPWS_SERVER": "0"})

        def client(*words: str) -> subprocess.CompletedProcess[str]:
            return area.run(*words, sys.executable, "-c", CLIENT, "-C", str(ws), "status", env=env)

        def servers() -> dict[int, int]:  # pid -> nice
            out = {}
            for pid in area.tagged_pids():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"snapws.cli.server" in cmdline:
                    out[pid] = int(
                        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]
                    )
            return out

        def wait_for(pred: object) -> dict[int, int]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = servers()
                if pred(found):  # type: ignore[operator]
                    return found
                time.sleep(0.05)
            raise AssertionError(f"servers: {servers()}")

        client("nice", "-n", "10")
        niced = wait_for(lambda s: bool(s))
        assert list(niced.values()) == [10]
        time.sleep(1)  # its imports done
        client()  # declined (the server cannot take nice 0), run in the client
        wait_for(lambda s: not set(s) & set(niced))  # the niced one retired
        client()  # starts a new one
        fresh = wait_for(lambda s: bool(s))
        assert list(fresh.values()) == [0]
    finally:
        area.cleanup()


def _imported(importtime: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s+(\S+)$", importtime, re.M)}


def test_the_installed_command_imports_only_the_client_before_it_is_served(
    ws: Workspace, served: Served
) -> None:
    """scripts/snapws (what pip installs as ``snapws``) adds nothing to the
    interpreter's start-up but the client: pip's wrapper for an entry point
    imported ``re`` (5 ms) on every command. Run with ``-S`` (``site`` may
    import ``re`` itself here, through a .pth file; a venv's does not)."""
    assert SCRIPT.read_text().startswith("#!python\n")
    import click

    where = [str(SCRIPT.parents[1]), str(Path(click.__file__).parents[1])]
    env = dict(served.env, PYTHONPATH=os.pathsep.join(where))

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", "-X", "importtime", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    bare = run("-c", "import os")  # site imports os, even in a venv
    deadline = time.monotonic() + 60
    while True:  # the first command may start the server and run itself
        proc = run(str(SCRIPT), "-C", str(ws.path), "status")
        assert proc.returncode == 0, proc.stderr
        if not _imports_click(proc.stderr) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "a.txt" in proc.stdout
    added = _imported(proc.stderr) - _imported(bare.stderr)
    assert added <= {"snapws", "snapws.cli", "snapws.cli.launch", "_socket", "_signal"}, added


def test_a_full_stdout_is_reported_as_in_its_own_process(ws: Workspace, served: Served) -> None:
    """``snapws log >/dev/full``: exit 74 and "cannot write to standard
    output", never the store's "no space left" (exit 17), served or not."""
    served.start(ws.outside)
    results = []
    for client in ("-m snapws", f"-X importtime -c '{CLIENT}'"):
        script = f"{sys.executable} {client} -C {ws.path} log >/dev/full"
        deadline = time.monotonic() + 60
        while True:  # (a client that finds no server runs the command itself, and starts one)
            proc = subprocess.run(
                ["bash", "-c", script], env=served.env, capture_output=True, text=True, timeout=120
            )
            if "importtime" not in client or not _imports_click(proc.stderr):
                break
            assert time.monotonic() < deadline, proc.stderr
            time.sleep(0.2)
        results.append(proc)
    here, there = results
    assert not _imports_click(there.stderr), there.stderr  # served
    there_err = "".join(ln for ln in there.stderr.splitlines(True) if "import time:" not in ln)
    assert (there.returncode, there_err) == (here.returncode, here.stderr)
    assert here.returncode == 74
    assert here.stderr.startswith(
        "snapws: error: cannot write to standard output: No space left on device\n"
    )


def test_server_pids_finds_the_servers_of_one_runtime_directory(tmp_path: Path) -> None:
    sleeper = "import time; time.sleep(60)"
    mine = subprocess.Popen([sys.executable, "-c", sleeper, launch.SERVER_MODULE, str(tmp_path)])
    other = subprocess.Popen(
        [sys.executable, "-c", sleeper, launch.SERVER_MODULE, str(tmp_path / "x")]
    )
    try:
        deadline = time.monotonic() + 10
        while mine.pid not in launch.server_pids(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert launch.server_pids(str(tmp_path)) == [mine.pid]
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()
    assert launch.server_pids(str(tmp_path)) == []
