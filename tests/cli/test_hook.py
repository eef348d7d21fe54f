"""``snapws hook bash|zsh|fish``, run in the real shells.

A remount is simulated as the shell sees it: the directory the shell stands
in is replaced under the same path (renamed away and made anew, or, as root,
a bind mount put over it), so that ``.`` and ``$PWD`` are no longer the same
directory. Bash is driven interactively (its prompts run PROMPT_COMMAND);
zsh and fish run their prompt hooks as they do before a prompt (the
functions of ``precmd_functions``; ``emit fish_prompt``). zsh and fish are
installed by .ci/run: a missing shell fails the test, it is not skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent.parent
HOOK_DEF = {"bash": "_snapws_hook()", "zsh": "_snapws_hook()", "fish": "function __snapws_hook"}


def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPWS_", "PROMPT_"))}
    env["PY"] = sys.executable
    env["PYTHONPATH"] = str(ROOT)
    env["PS1"] = "$ "
    return env


def need(shell: str) -> str:
    path = shutil.which(shell)
    assert path, f"{shell} is not installed (.ci/run installs it)"
    return path


def run_shell(argv: list[str], cwd: Path, script: str | None = None) -> list[str]:
    """Run ``argv`` in ``cwd`` (``script`` on its stdin); its stdout lines.
    The shell must exit 0."""
    proc = subprocess.run(
        argv, cwd=cwd, input=script, env=shell_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def interactive_bash(cwd: Path, script: str) -> list[str]:
    """An interactive bash (PROMPT_COMMAND runs before each prompt) reading
    ``script`` line by line."""
    return run_shell(["bash", "--norc", "--noprofile", "-i"], cwd, script)


def inode(path: Path) -> str:
    return str(path.stat().st_ino)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_hook_prints_the_snippet(tmp_path: Path, shell: str) -> None:
    out = run_cli("hook", shell, cwd=tmp_path).stdout
    assert HOOK_DEF[shell] in out
    assert "snapws " not in out.replace("snapws hook", "")  # runs no snapws per prompt
    assert "python" not in out


def test_unknown_shell_is_a_usage_error_listing_the_shells(tmp_path: Path) -> None:
    proc = run_cli("hook", "tcsh", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "snapws: error: no hook for the shell 'tcsh'\n"
        'hint: the shells are bash, zsh, fish; e.g. eval "$(snapws hook bash)"\n'
    )
    missing = run_cli("hook", cwd=tmp_path, check=False)
    assert missing.returncode == 2
    assert "bash|zsh|fish" in missing.stderr


def test_bash_follows_a_replaced_directory_before_the_next_prompt(tmp_path: Path) -> None:
    (tmp_path / "X").mkdir()
    out = interactive_bash(
        tmp_path,
        'eval "$("$PY" -m snapws hook bash)"\n'
        "cd X\n"
        "mv ../X ../X.old; mkdir ../X; echo new > ../X/f; stat -c %i .; cat f 2>&1 || true\n"
        'stat -c %i .; cat f; echo "pwd=$PWD oldpwd=$OLDPWD"\n',
    )
    old, new = inode(tmp_path / "X.old"), inode(tmp_path / "X")
    assert old != new
    # the same command line still stands in the old directory: the hook waits for the prompt
    assert out[:2] == [old, "cat: f: No such file or directory"]
    assert out[2:] == [new, "new", f"pwd={tmp_path}/X oldpwd={tmp_path}"]


def test_bash_follows_a_mount_put_over_its_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    (tmp_path / "X").mkdir()
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "f").write_text("mounted\n")
    # a private mount namespace: the mount goes away with the shell
    out = run_shell(
        ["unshare", "--mount", "--propagation", "private", "bash", "--norc", "--noprofile", "-i"],
        tmp_path,
        'eval "$("$PY" -m snapws hook bash)"\n'
        "cd X\n"
        "mount --bind ../B ../X; ls -A; echo --\n"
        "ls -A; echo data > g; echo $?\n",
    )
    assert out == ["--", "f", "0"]
    assert (tmp_path / "B" / "g").read_text() == "data\n"  # written into the new mount
    assert not (tmp_path / "X" / "g").exists()


def test_bash_keeps_the_status_and_the_users_prompt_command(tmp_path: Path) -> None:
    out = interactive_bash(
        tmp_path,
        "PROMPT_COMMAND='echo \"user saw $?\"'\n"
        'eval "$("$PY" -m snapws hook bash)"\n'
        'eval "$("$PY" -m snapws hook bash)"\n'
        "declare -p PROMPT_COMMAND; (exit 3)\n"
        "true\n",
    )
    assert out[-3:] == [
        """declare -- PROMPT_COMMAND="_snapws_hook;echo \\"user saw \\$?\\"\"""",
        "user saw 3",
        "user saw 0",  # after `true`
    ]


def test_bash_keeps_an_array_prompt_command(tmp_path: Path) -> None:
    out = interactive_bash(
        tmp_path,
        "PROMPT_COMMAND=('echo \"one saw $?\"' 'echo two')\n"
        'eval "$("$PY" -m snapws hook bash)"\n'
        'eval "$("$PY" -m snapws hook bash)"\n'
        'printf "<%s>" "${PROMPT_COMMAND[@]}"; echo; (exit 4)\n'
        "true\n",
    )
    assert out[-5:] == [
        """<_snapws_hook><echo "one saw $?"><echo two>""",
        "one saw 4",
        "two",
        "one saw 0",
        "two",
    ]


def test_bash_does_nothing_when_the_directory_is_gone_or_unchanged(tmp_path: Path) -> None:
    (tmp_path / "X").mkdir()
    out = interactive_bash(
        tmp_path,
        'eval "$("$PY" -m snapws hook bash)"\n'
        "cd X; cd ..; cd X\n"
        'echo "oldpwd=$OLDPWD"\n'
        "rmdir ../X; (exit 5)\n"
        'echo "status=$? pwd=$PWD"\n',
    )
    assert out == [f"oldpwd={tmp_path}", f"status=5 pwd={tmp_path}/X"]


def test_zsh_follows_a_replaced_directory(tmp_path: Path) -> None:
    zsh = need("zsh")
    (tmp_path / "X").mkdir()
    script = (
        "user_precmd() { print -r -- user; }\n"
        "precmd_functions=(user_precmd)\n"
        'eval "$("$PY" -m snapws hook zsh)"\n'
        'eval "$("$PY" -m snapws hook zsh)"\n'
        'print -r -- "${precmd_functions[*]}"\n'
        "setopt auto_pushd\n"
        "cd X\n"
        "mv ../X ../X.old; mkdir ../X; stat -c %i .\n"
        "(exit 6); _snapws_hook\n"
        'print -r -- "status=$? dirs=${#dirstack} oldpwd=$OLDPWD pwd=$PWD"\n'
        "stat -c %i .\n"
        "mv ../X ../X.gone; (exit 7); _snapws_hook\n"
        'print -r -- "status=$? pwd=$PWD"\n'
    )
    out = run_shell([zsh, "-f"], tmp_path, script)
    old, new = inode(tmp_path / "X.old"), inode(tmp_path / "X.gone")  # (the new X, moved away)
    assert out == [
        "_snapws_hook user_precmd",
        old,
        f"status=6 dirs=1 oldpwd={tmp_path} pwd={tmp_path}/X",
        new,
        f"status=7 pwd={tmp_path}/X",
    ]


def test_fish_follows_a_replaced_directory(tmp_path: Path) -> None:
    fish = need("fish")
    (tmp_path / "X").mkdir()
    script = (
        "function user_prompt_handler --on-event fish_prompt\n    echo user\nend\n"
        f"{sys.executable} -m snapws hook fish | source\n"
        f"{sys.executable} -m snapws hook fish | source\n"
        "cd X\n"
        "mv ../X ../X.old; mkdir ../X; stat -c %i .\n"
        "emit fish_prompt\n"
        'echo "pwd=$PWD"\n'
        "stat -c %i .\n"
        "mv ../X ../X.gone; emit fish_prompt\n"
        'echo "pwd=$PWD"\n'
    )
    out = run_shell([fish, "--no-config"], tmp_path, script)
    old, new = inode(tmp_path / "X.old"), inode(tmp_path / "X.gone")  # (the new X, moved away)
    assert out == [old, "user", f"pwd={tmp_path}/X", new, "user", f"pwd={tmp_path}/X"]
