"""Machine output is git's (docs/formats-output.md): the same tree and the
same changes in a snapws workspace and in a git repository give the same
bytes from ``status --porcelain [-z]``, ``diff --name-status/--name-only
[-z]`` and ``show --name-status``, names with spaces, tabs, newlines,
quotes, backslashes, UTF-8 and non-UTF-8 bytes included.

Also the command-line habits git users bring: ``-q`` after the command name,
``reset --hard`` without a revision, paths relative to the current
directory, usage errors as ``snapws: error:`` + ``hint:``.

The CLI runs in-process (click's CliRunner) on plain-backend workspaces,
which need no mount.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from snapws.cli.gitformat import quote_path
from snapws.cli.main import cli

ENV: dict[str, str | None] = {
    "SNAPWS_AUTHOR": "Formats Test <formats@example.test>",
    "XDG_CONFIG_HOME": "/nonexistent-snapws-test-config",
    "SNAPWS_CONFIG": None,
    "SNAPWS_STORE": None,
}

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.test",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.test",
}

#: the names of the base tree (bytes: one is not UTF-8)
BASE: dict[bytes, bytes] = {
    b"mod.txt": b"one\n",
    b"del.txt": b"gone soon\n",
    b"my file.txt": b"spaces\n",
    b"tab\tname": b"tab\n",
    b"new\nline": b"newline\n",
    b"bad\xff\xfename": b"not utf-8\n",
    "café.txt".encode(): b"utf-8\n",
    b'q"uote': b"quote\n",
    b"back\\slash": b"backslash\n",
    b"bell\x07x": b"bell\n",
    b"del\x7fx": b"del byte\n",
    b"link.txt": b"becomes a symlink\n",
    b"sub/deep.txt": b"deep\n",
    b"sub/keep.txt": b"keep\n",
    b"latin1.txt": b"caf\xe9\n",
}


def snapws(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(
        cli, list(args), env=ENV, catch_exceptions=False, prog_name="snapws"
    )
    assert result.exit_code == code, (
        f"snapws {' '.join(args)} exited {result.exit_code}, not {code}\n"
        f"stdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    )
    assert "Traceback" not in result.stderr
    return result


def git(repo: Path, *args: str) -> bytes:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", "-c", "core.quotePath=true", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    ).stdout


def write_tree(root: Path, files: dict[bytes, bytes]) -> None:
    for name, data in files.items():
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def change_tree(root: Path) -> None:
    """The same edits in both trees: modify, delete, add, file -> symlink."""
    r = os.fsencode(root)
    for name in (b"mod.txt", b"my file.txt", "café.txt".encode(), b"bad\xff\xfename"):
        with open(os.path.join(r, name), "ab") as f:
            f.write(b"more\n")
    for name in (b"del.txt", b"tab\tname", b"sub/deep.txt"):
        os.unlink(os.path.join(r, name))
    with open(os.path.join(r, b"latin1.txt"), "ab") as f:
        f.write(b"na\xefve\n")  # content that is not UTF-8: kept byte for byte in -p
    write_tree(
        root,
        {
            b"new file.txt": b"new\n",
            b"new\ttab": b"new\n",
            b"new\xe9": b"latin-1\n",
            b'new"q': b"new\n",
            b"zz.txt": b"last\n",
            b"a-first.txt": b"first\n",
        },
    )
    os.unlink(os.path.join(r, b"link.txt"))
    os.symlink(b"mod.txt", os.path.join(r, b"link.txt"))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """(workspace, git repository): the same base tree, committed, then the
    same changes in both working trees."""
    if shutil.which("git") is None:
        pytest.fail("git is needed (apt-get install git)")
    ws, repo = tmp_path / "ws", tmp_path / "repo"
    write_tree(ws, BASE)
    write_tree(repo, BASE)
    snapws("init", "-q", "--backend", "plain", str(ws))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    change_tree(ws)
    change_tree(repo)
    return ws, repo


def test_status_porcelain_is_gits(pair: tuple[Path, Path]) -> None:
    ws, repo = pair
    ours = snapws("-C", str(ws), "status", "--porcelain").stdout_bytes
    assert ours == git(repo, "status", "--porcelain")
    assert ours == git(repo, "status", "--porcelain=v1")
    # the layout itself, spelled out: unstaged changes, then untracked paths
    lines = ours.decode("ascii").splitlines()
    assert " M mod.txt" in lines
    assert ' M "my file.txt"' in lines  # porcelain quotes names with a space
    assert ' M "caf\\303\\251.txt"' in lines
    assert ' M "bad\\377\\376name"' in lines
    assert " D del.txt" in lines
    assert ' D "tab\\tname"' in lines
    assert " T link.txt" in lines
    assert '?? "new\\ttab"' in lines
    assert lines.index(" T link.txt") < lines.index("?? a-first.txt")
    assert snapws("-C", str(ws), "status", "--porcelain=v1").stdout_bytes == ours


def test_status_z_is_gits(pair: tuple[Path, Path]) -> None:
    ws, repo = pair
    ours = snapws("-C", str(ws), "status", "--porcelain", "-z").stdout_bytes
    assert ours == git(repo, "status", "--porcelain", "-z")
    assert b" M bad\xff\xfename\0" in ours  # raw names, NUL-terminated
    assert snapws("-C", str(ws), "status", "-z").stdout_bytes == ours  # -z implies porcelain


@pytest.mark.parametrize(
    "form",
    [["--name-status"], ["--name-only"], ["--name-status", "-z"], ["--name-only", "-z"]],
    ids=lambda f: " ".join(f),
)
def test_diff_names_are_gits(pair: tuple[Path, Path], form: list[str]) -> None:
    ws, repo = pair
    ours = snapws("-C", str(ws), "diff", *form).stdout_bytes
    git(repo, "add", "-A")  # git's diff of HEAD against the tree, new files too
    assert ours == git(repo, "diff", "--cached", "--no-renames", *form)
    if form == ["--name-status"]:
        lines = ours.decode("ascii").splitlines()
        assert "M\tmy file.txt" in lines  # tab-separated; a space is not quoted here
        assert 'A\t"new\\351"' in lines
        assert 'D\t"tab\\tname"' in lines


def test_diff_between_snapshots_and_show_are_gits(pair: tuple[Path, Path]) -> None:
    ws, repo = pair
    snapws("-C", str(ws), "commit", "-q", "-m", "changes")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "changes")
    for form in (["--name-status"], ["--name-only", "-z"]):
        ours = snapws("-C", str(ws), "diff", "HEAD~1", "HEAD", *form).stdout_bytes
        assert ours == git(repo, "diff", "--no-renames", "HEAD~1", "HEAD", *form)
        ours = snapws("-C", str(ws), "show", *form).stdout_bytes
        assert ours == git(repo, "show", "--no-renames", "--format=", *form)


def _without_index_lines(patch: bytes) -> bytes:
    """git's patch without its ``index OLD..NEW`` lines (blob ids snapws
    does not print)."""
    return b"".join(line for line in patch.splitlines(True) if not line.startswith(b"index "))


def test_diff_patch_is_gits_and_applies(pair: tuple[Path, Path]) -> None:
    """``diff -p``: the same bytes as git's patch (headers quoted as git
    quotes them, a file that became a symlink as a deletion and an
    addition), and ``git apply`` of it on the base tree gives the changed
    tree."""
    ws, repo = pair
    ours = snapws("-C", str(ws), "diff", "-p").stdout_bytes
    git(repo, "add", "-A")
    theirs = git(repo, "diff", "--cached", "--no-renames")
    assert ours == _without_index_lines(theirs)
    assert b'diff --git "a/caf\\303\\251.txt" "b/caf\\303\\251.txt"\n' in ours
    assert b'+++ "b/new\\ttab"\n' in ours
    assert b"diff --git a/my file.txt b/my file.txt\n" in ours  # a space is not quoted
    assert b"--- a/my file.txt\t\n" in ours  # but ends the ---/+++ name with a TAB
    assert b"new file mode 120000\n" in ours
    git(repo, "reset", "-q", "--hard")
    patch = repo.parent / "ours.patch"
    patch.write_bytes(ours)
    git(repo, "apply", "--check", str(patch))
    git(repo, "apply", str(patch))
    git(repo, "add", "-A")
    assert git(repo, "diff", "--cached", "--no-renames") == theirs


def test_diff_stat_is_gits(pair: tuple[Path, Path]) -> None:
    ws, repo = pair
    ours = snapws("-C", str(ws), "diff", "--stat").stdout_bytes
    git(repo, "add", "-A")
    assert ours == git(repo, "diff", "--cached", "--no-renames", "--stat")
    assert b' "caf\\303\\251.txt" | 1 +\n' in ours


def test_diff_patch_between_snapshots_is_gits(pair: tuple[Path, Path]) -> None:
    ws, repo = pair
    snapws("-C", str(ws), "commit", "-q", "-m", "changes")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "changes")
    for form in (["-p"], ["--stat"]):
        ours = snapws("-C", str(ws), "diff", "HEAD~1", "HEAD", *form).stdout_bytes
        theirs = git(repo, "diff", "--no-renames", "HEAD~1", "HEAD", *form)
        assert ours == _without_index_lines(theirs)


def test_diff_stat_of_files_that_became_binary_or_text_is_gits(
    pair: tuple[Path, Path],
) -> None:
    # --stat reads the new side only when the old one is text
    ws, repo = pair
    snapws("-C", str(ws), "commit", "-q", "-m", "changes")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "changes")
    flips = {
        b"to-text": (b"\0bin\0" * 50, b"text\n" * 9),
        b"to-bin": (b"a\nb\n", b"a\n\0b\n"),
        b"both-bin": (b"\0" * 7, b"\0" * 9),
        b"late-nul": (b"x" * 8000 + b"\0", b"y\n"),  # past git's 8,000 bytes: text
    }
    for step in (0, 1):
        for root in (ws, repo):
            write_tree(root, {name: sides[step] for name, sides in flips.items()})
        snapws("-C", str(ws), "commit", "-q", "-m", f"flip {step}")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"flip {step}")
    ours = snapws("-C", str(ws), "diff", "--stat", "HEAD~1", "HEAD").stdout_bytes
    assert ours == git(repo, "diff", "--no-renames", "--stat", "HEAD~1", "HEAD")
    assert b" to-text  | Bin 250 -> 45 bytes\n" in ours
    assert b" late-nul |" in ours and b"Bin 8001" not in ours


def test_diff_patch_notes_what_git_cannot_record(tmp_path: Path) -> None:
    """Modes git does not record (0600 -> 0640), FIFOs, owners: ``# PATH:``
    lines before the path's patch, which git apply skips; git's modes are
    canonical (100644, 100755, 120000); the patch still applies and changes
    exactly what git records."""
    ws, repo = tmp_path / "ws", tmp_path / "repo"
    base = {b"a.txt": b"a\n", b"b b.txt": b"b\n", b"c.txt": b"c\n", "é".encode(): b"e\n"}
    write_tree(ws, base)
    os.chmod(ws / "c.txt", 0o600)
    snapws("init", "-q", "--backend", "plain", str(ws))
    write_tree(repo, base)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    os.chmod(ws / "a.txt", 0o600)  # git records 100644 on both sides
    os.chmod(ws / "c.txt", 0o700)  # git records 100644 -> 100755
    (ws / "b b.txt").write_bytes(b"b\nb2\n")
    os.chmod(ws / "é", 0o640)
    os.mkfifo(ws / "pipe")
    expected_owner = []
    if os.geteuid() == 0:
        os.chown(ws / "b b.txt", 1234, 5678)
        expected_owner = ["# b b.txt: owner 0:0 -> 1234:5678"]
    out = snapws("-C", str(ws), "diff", "-p").stdout
    assert out.splitlines() == [
        "# a.txt: mode 0644 -> 0600",
        *expected_owner,
        "diff --git a/b b.txt b/b b.txt",
        "--- a/b b.txt\t",
        "+++ b/b b.txt\t",
        "@@ -1 +1,2 @@",
        " b",
        "+b2",
        "diff --git a/c.txt b/c.txt",
        "old mode 100644",
        "new mode 100755",
        "# pipe: fifo added",
        '# "\\303\\251": mode 0644 -> 0640',
    ]
    patch = tmp_path / "p.patch"
    patch.write_text(out)
    git(repo, "apply", str(patch))
    assert (repo / "b b.txt").read_bytes() == b"b\nb2\n"
    assert git(repo, "status", "--porcelain") == b' M "b b.txt"\n M c.txt\n'


def test_directories_end_in_slash(tmp_path: Path) -> None:
    """git tracks no directories; snapws does. A new directory is listed as
    git lists it (``?? dir/``), then each path below it; lines for
    directories end in ``/``."""
    ws = tmp_path / "ws"
    write_tree(ws, {b"a": b"a\n", b"old/x": b"x\n"})
    snapws("init", "-q", "--backend", "plain", str(ws))
    write_tree(ws, {b"new dir/f": b"f\n"})
    shutil.rmtree(ws / "old")
    out = snapws("-C", str(ws), "status", "--porcelain").stdout
    assert out.splitlines() == [" D old/", " D old/x", '?? "new dir/"', '?? "new dir/f"']
    out = snapws("-C", str(ws), "diff", "--name-status").stdout
    assert out.splitlines() == ["A\tnew dir/", "A\tnew dir/f", "D\told/", "D\told/x"]


@pytest.mark.parametrize(
    ("name", "plain", "porcelain"),
    [
        (b"plain.txt", "plain.txt", "plain.txt"),
        (b"a b", "a b", '"a b"'),
        (b"a\tb", '"a\\tb"', '"a\\tb"'),
        (b"a\nb", '"a\\nb"', '"a\\nb"'),
        (b"\x01\x07\x08\x0b\x0c\x0d\x1b", '"\\001\\a\\b\\v\\f\\r\\033"', None),
        (b'"\\', '"\\"\\\\"', None),
        (b"\x7f", '"\\177"', None),
        ("é".encode(), '"\\303\\251"', None),
        (b"\xff", '"\\377"', None),
        (b"~!#$%&'()*+,-.:;<=>?@[]^_`{|}", "~!#$%&'()*+,-.:;<=>?@[]^_`{|}", None),
    ],
)
def test_quote_path(name: bytes, plain: str, porcelain: str | None) -> None:
    assert quote_path(name) == plain
    assert quote_path(name, quote_space=True) == (porcelain or plain)


# -- command-line habits -------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    write_tree(ws, {b"a": b"a0\n", b"sub/b": b"b0\n"})
    snapws("init", "-q", "--backend", "plain", str(ws))
    return ws


def test_quiet_after_the_command(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_tree(ws, {b"a": b"a0\n"})
    assert snapws("init", "-q", "--backend", "plain", str(ws)).stdout == ""
    (ws / "a").write_text("a1\n")
    assert snapws("-C", str(ws), "commit", "-q", "-m", "one").stdout == ""
    assert snapws("-C", str(ws), "checkout", "--quiet", "-b", "topic").stdout == ""
    assert snapws("-C", str(ws), "reset", "-q", "HEAD~1").stdout == ""
    assert snapws("-C", str(ws), "checkout", "-q", "main").stdout == ""
    # without -q the reports are there
    assert snapws("-C", str(ws), "checkout", "topic").stdout.startswith("Switched to branch")


def test_reset_hard_defaults_to_head(ws: Path) -> None:
    (ws / "a").write_text("changed\n")
    (ws / "new").write_text("new\n")
    out = snapws("-C", str(ws), "reset", "--hard").stdout
    assert out.startswith("HEAD is now at ")
    assert (ws / "a").read_text() == "a0\n"
    assert not (ws / "new").exists()
    assert snapws("-C", str(ws), "status", "--porcelain").stdout == ""


def test_paths_are_relative_to_the_current_directory(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws / "a").write_text("a1\n")
    (ws / "sub" / "b").write_text("b1\n")
    monkeypatch.chdir(ws / "sub")
    # printed paths are relative to the workspace root, as git's porcelain
    assert snapws("status", "--porcelain").stdout == " M a\n M sub/b\n"
    assert snapws("diff", "--name-status", "--", "b").stdout == "M\tsub/b\n"
    assert snapws("diff", "--name-only", "--", "../a").stdout == "a\n"
    snapws("restore", "b")  # sub/b, not a b at the workspace root
    assert (ws / "sub" / "b").read_text() == "b0\n"
    assert snapws("status", "--porcelain").stdout == " M a\n"
    snapws("restore", "../a")
    assert snapws("status", "--porcelain").stdout == ""


def test_human_status_is_relative_to_the_current_directory(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As git's ``status``: ``../a`` and ``b`` from ``sub`` (porcelain and
    ``--json`` stay relative to the root, as git's porcelain)."""
    (ws / "a").write_text("a1\n")
    (ws / "sub" / "b").write_text("b1\n")
    (ws / "sub" / "deeper").mkdir()
    (ws / ".snapwsignore").write_text("*.log\n")
    (ws / "x.log").write_text("ignored\n")
    monkeypatch.chdir(ws / "sub" / "deeper")
    assert snapws("status", "--ignored").stdout.splitlines() == [
        "On branch main",
        "  A  ../../.snapwsignore",
        "  M  ../../a",
        "  M  ../b",
        "  A  ./",
        "Ignored files:",
        "  ../../x.log",
    ]
    monkeypatch.chdir(ws / "sub")
    assert snapws("status").stdout.splitlines()[1:] == [
        "  A  ../.snapwsignore",
        "  M  ../a",
        "  M  b",
        "  A  deeper/",
    ]
    assert snapws("-C", "..", "status").stdout.splitlines()[1:] == [
        "  A  .snapwsignore",
        "  M  a",
        "  M  sub/b",
        "  A  sub/deeper/",
    ]
    assert snapws("status", "--porcelain").stdout.splitlines()[:3] == [
        " M a",
        " M sub/b",
        "?? .snapwsignore",
    ]


@pytest.mark.parametrize(
    "args",
    [["init", "--bogus"], ["--bogus"], ["status", "--porcelain=v2"], ["diff", "-z"], ["nope"]],
    ids=" ".join,
)
def test_usage_errors_say_error_and_hint(ws: Path, args: list[str]) -> None:
    result = snapws("-C", str(ws), *args, code=2)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("snapws: error: "), result.stderr
    assert lines[1].startswith("hint: see `snapws"), result.stderr
    assert len(lines) == 2
    assert result.stdout == ""


@pytest.mark.parametrize("what", ["missing", "file"])
def test_dash_c_that_cannot_be_entered(tmp_path: Path, what: str) -> None:
    """``-C DIR`` that is missing or not a directory: git's message
    (``cannot change to 'DIR': <strerror>``) in snapws's form, exit 2."""
    target = tmp_path / "nowhere"
    if what == "file":
        target.write_text("")
    result = snapws("-C", str(target), "status", code=2)
    reason = "No such file or directory" if what == "missing" else "Not a directory"
    assert result.stderr.splitlines() == [
        f"snapws: error: cannot change to '{target}': {reason}",
        "hint: -C takes an existing directory, relative to the current one (as git -C); "
        "to create a workspace there, `snapws init DIR`",
    ]
    assert result.stdout == ""
    git_err = subprocess.run(["git", "-C", str(target), "status"], capture_output=True, text=True)
    assert git_err.stderr == f"fatal: cannot change to '{target}': {reason}\n"
