"""``snapws shell`` and ``snapws run`` on kernel-backend workspaces (as root).

The rootless backend's shell and run are tested as an unprivileged user in
tests/backends/test_rootless.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Workspace, _clean_env, run_cli
from helpers import mounts_under


def test_run_starts_in_the_matching_directory_and_passes_the_status(
    workspace: Workspace,
) -> None:
    workspace.gen({"sub": {"f": "x"}})
    proc = workspace.run(
        "run", "--", "sh", "-c", 'pwd; echo "$SNAPWS_WORKSPACE"; exit 5', check=False
    )
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout.splitlines() == [str(workspace.path), str(workspace.path)]
    sub = run_cli("run", "pwd", cwd=workspace.path / "sub")  # no "--" needed
    assert sub.stdout == f"{workspace.path / 'sub'}\n"
    outside = run_cli("run", "-C", workspace.path / "sub", "--", "cat", "f", cwd=workspace.outside)
    assert outside.stdout == "x"
    # options after the command are the command's
    assert workspace.run("run", "ls", "-a", "sub").stdout.split() == [".", "..", "f"]


def test_run_mounts_an_unmounted_workspace(workspace: Workspace) -> None:
    workspace.gen({"f": "x"})
    workspace.commit("f")
    workspace.run("umount")
    assert not [p for p, t in mounts_under(workspace.path) if t == "overlay"]
    # unmounted, it is found through its store
    assert workspace.run("--store", workspace.store, "run", "--", "cat", "f").stdout == "x"
    assert [t for p, t in mounts_under(workspace.path) if p == str(workspace.path)] == ["overlay"]


def test_run_reports_a_missing_command_and_signals(workspace: Workspace) -> None:
    missing = workspace.run("run", "--", "/nonexistent/program", check=False)
    assert missing.returncode == 127
    assert "snapws: /nonexistent/program: command not found" in missing.stderr
    killed = workspace.run("run", "--", "sh", "-c", "kill -KILL $$", check=False)
    assert killed.returncode == 128 + 9
    usage = workspace.run("run", check=False)
    assert usage.returncode == 2  # a command is required


def test_shell_runs_the_shell_from_SHELL_with_stdin(workspace: Workspace) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snapws", "-C", workspace.path, "shell"],
        cwd=workspace.outside,
        env=_clean_env({"SHELL": "/bin/sh"}),
        input="echo made > s; pwd; exit 4\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == f"{workspace.path}\n"
    assert workspace.porcelain() == ["?? s"]


def test_shell_outside_a_workspace_fails(workspace: Workspace) -> None:
    proc = run_cli("shell", cwd=workspace.outside, check=False)
    assert proc.returncode == 3
    assert "not inside a snapws workspace" in proc.stderr


def test_run_in_a_plain_workspace_runs_in_its_directory(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "f").write_text("x")
    run_cli("init", "--backend", "plain", "p", cwd=tmp_path)
    proc = run_cli("-C", tmp_path / "p", "run", "--", "sh", "-c", "pwd; echo y > g", cwd=tmp_path)
    assert proc.stdout == f"{tmp_path / 'p'}\n"
    status = run_cli("-C", tmp_path / "p", "status", "--porcelain", cwd=tmp_path)
    assert status.stdout.splitlines() == ["?? g"]
