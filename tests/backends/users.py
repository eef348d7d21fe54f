"""Running the real CLI as the unprivileged test user (rootless backend tests).

The user is ``snapwst``; CI creates it (.ci/run: ``id snapwst || useradd
--create-home --shell /bin/sh snapwst``) and makes the interpreter reachable
for it (``chmod o+x`` on the directories above ``sys.executable``). Tests
that use it fail, never skip, when it is missing or user namespaces do not
work: ``require_rootless`` says why.

Every directory such a test uses lives in a fresh directory under /tmp
(whose parents every user may enter; pytest's ``tmp_path`` may not be
reachable for another user) owned by the user. Every process started here
carries ``SNAPWS_TEST_TAG`` in its environment, so teardown can kill what a
test left running (shells, ``snapws run`` holders) before removing the tree.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

USER = "snapwst"
TAG_ENV = "SNAPWS_TEST_TAG"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


class UserArea:
    """A directory ``root`` under /tmp owned by the test user, and ways to
    run things there as that user."""

    def __init__(self) -> None:
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            raise AssertionError(
                f"the test user {USER!r} does not exist: create it as .ci/run does "
                f"(useradd --create-home --shell /bin/sh {USER})"
            ) from None
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.tag = secrets.token_hex(8)
        self.root = Path(tempfile.mkdtemp(prefix="snapws-rootless-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        os.chown(self.root, self.uid, self.gid)

    def env(self, extra: Mapping[str, str] | None = None) -> list[str]:
        """``NAME=value`` words for env(1): a clean, reproducible environment."""
        env = {
            TAG_ENV: self.tag,
            "SNAPWS_AUTHOR": "Test Author <test@example.org>",
            "XDG_CONFIG_HOME": "/nonexistent-snapws-test-config",
            "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "snapws-tests-pycache"),
            "SHELL": "/bin/sh",
            "HOME": str(self.root),
            "LC_ALL": "C.UTF-8",
        }
        env.update(extra or {})
        return [f"{k}={v}" for k, v in env.items()]

    def argv(
        self, words: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None
    ) -> list[str]:
        """The command line that runs ``words`` as the user."""
        return [
            SETPRIV,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--reset-env",
            "/usr/bin/env",
            *self.env(env),
            *map(os.fspath, words),
        ]

    def run(
        self,
        *words: str | os.PathLike[str],
        cwd: Path | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``words`` as the user in ``cwd`` (default: the area's root)."""
        proc = subprocess.run(
            self.argv(words, env),
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, words))} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )
        return proc

    def snapws(
        self,
        *args: str | os.PathLike[str],
        cwd: Path | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m snapws ARGS`` as the user."""
        return self.run(
            sys.executable, "-m", "snapws", *args, cwd=cwd, check=check, env=env, input=input
        )

    def popen(
        self, *words: str | os.PathLike[str], cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        """Start ``words`` as the user with pipes on stdin and stdout (stderr
        goes to stdout)."""
        return subprocess.Popen(
            self.argv(words, None),
            cwd=cwd or self.root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def tagged_pids(self) -> list[int]:
        """Processes still running with this area's tag."""
        want = f"{TAG_ENV}={self.tag}".encode()
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                environ = Path(f"/proc/{name}/environ").read_bytes()
            except OSError:
                continue
            if want in environ.split(b"\0"):
                out.append(int(name))
        return out

    def cleanup_processes(self) -> None:
        """Kill what the test left running (holders keep namespaces alive)."""
        for _ in range(50):
            pids = self.tagged_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Kill what the test left running, then remove the area (root
        removes mode-000 work dirs too)."""
        self.cleanup_processes()
        shutil.rmtree(self.root, ignore_errors=True)


_rootless_checked: list[str] = []


def require_rootless(area: UserArea) -> None:
    """Fail (never skip) unless the test user can mount an overlay in a user
    namespace here, naming what is missing (probed once per test run)."""
    if _rootless_checked:
        assert not _rootless_checked[0], _rootless_checked[0]
        return
    probe = area.run(
        sys.executable,
        "-c",
        "import sys; from pathlib import Path; "
        "from snapws.backends.userns import rootless_unavailable; "
        "why = rootless_unavailable(Path(sys.argv[1])); print(why or ''); "
        "sys.exit(1 if why else 0)",
        area.root,
        check=False,
    )
    problem = ""
    if probe.returncode != 0:
        problem = (
            f"rootless overlay mounts do not work for {USER}: {probe.stdout.strip()} "
            f"{probe.stderr.strip()} (enable unprivileged user namespaces; Linux >= 5.11)"
        )
    _rootless_checked.append(problem)
    assert not problem, problem
