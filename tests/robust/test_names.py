"""Names stay names: a revision or a branch/tag name is never a path.

An absolute path, ``..``, control characters or a huge string given where a
revision is expected is an unknown revision (exit 4), never a file read or
written outside the store; a new branch or tag with such a name is a bad name
(exit 8); a ref that is a link or a directory is reported as damage (exit 11)
and never followed.

Most tests run the CLI in-process (click's CliRunner) on plain-backend
workspaces, which need no mount; one runs the reported attack end to end on
the kernel backend (as root).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import WorkspaceFactory

from snapws.cli.main import cli
from snapws.errors import ExitCode

ENV = {
    "SNAPWS_AUTHOR": "Names Test <names@example.test>",
    "XDG_CONFIG_HOME": "/nonexistent-snapws-test-config",
    "SNAPWS_CONFIG": "",
    "SNAPWS_STORE": "",
}


class PlainWorkspace:
    """A plain-backend workspace ``ws`` with its store ``.snapws``, driven in-process."""

    def __init__(self, root: Path) -> None:
        self.path = root / "ws"
        self.store = root / ".snapws"  # the default: beside the workspace
        self.path.mkdir()
        (self.path / "a").write_text("a0")
        self.cli("--store", str(self.store), "init", "--backend", "plain", str(self.path))

    def cli(self, *args: str, code: int = 0) -> Result:
        env = {k: v for k, v in ENV.items() if v}
        unset: dict[str, str | None] = {k: None for k, v in ENV.items() if not v}
        result = CliRunner().invoke(cli, list(args), env={**env, **unset}, catch_exceptions=False)
        assert result.exit_code == code, (
            f"snapws {' '.join(args)[:200]} exited {result.exit_code}, not {code}\n"
            f"stdout: {result.stdout[:2000]}\nstderr: {result.stderr[:2000]}"
        )
        assert "Traceback" not in result.stderr
        return result

    def run(self, *args: str, code: int = 0) -> Result:
        return self.cli("-C", str(self.path), *args, code=code)


@pytest.fixture
def ws(tmp_path: Path) -> PlainWorkspace:
    return PlainWorkspace(tmp_path)


@pytest.fixture
def victim(tmp_path: Path, ws: PlainWorkspace) -> Path:
    """A file outside the store holding the id of a real snapshot."""
    d = tmp_path / "var-tmp-x"
    d.mkdir()
    path = d / "victim"
    path.write_text(head_id(ws) + "\n")
    return path


def head_id(ws: PlainWorkspace) -> str:
    import json

    return str(json.loads(ws.run("status", "--json").stdout)["id"])


def assert_bad_revision(result: Result, *fragments: str) -> None:
    lines = result.stderr.splitlines()
    assert lines[0].startswith("snapws: error: "), result.stderr
    assert lines[-1].startswith("hint: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert len(result.stderr) < 3000  # a huge revision is not echoed whole


# ---------------------------------------------------------------- revisions


def test_checkout_of_a_file_outside_the_store_is_an_unknown_revision(
    ws: PlainWorkspace, victim: Path
) -> None:
    """The reported attack: `checkout /var/tmp/x/victim` then `commit` replaced
    the victim file through `refs/heads/<absolute path>`."""
    before = victim.read_bytes()
    r = ws.run("checkout", str(victim), code=ExitCode.BAD_REVISION)
    assert_bad_revision(r, f"'{victim}' is not a valid branch or tag name", "starts with '/'")
    (ws.path / "a").write_text("a1")
    ws.run("commit", "-m", "after the attempt")
    assert victim.read_bytes() == before
    status = ws.run("status", "--json").stdout
    assert '"branch": "main"' in status


@pytest.mark.parametrize(
    "rev",
    [
        "/etc/passwd",
        "../../../../../../etc/passwd",
        "main/../main",
        "..",
        "../main",
        "main\x01",
        "main\x1b[31m",
        "x" * 100_000,
        "/" * 5000,
    ],
)
@pytest.mark.parametrize("command", [["log"], ["show"], ["diff"], ["checkout"], ["reset"]])
def test_a_revision_that_is_no_name_is_exit_4(
    ws: PlainWorkspace, command: list[str], rev: str
) -> None:
    """Never a read outside the store (exit 11 before), never exit 70 (a
    100,000-character revision overflowed the file-name limit). ``diff``
    takes an argument that is no revision for a path, as git does: one
    that exists outside the workspace is refused as such (exit 12), and one
    with glob characters is a pathspec even when nothing matches it (git's
    rule: such an argument needs no ``--``)."""
    if command == ["diff"] and os.path.lexists(os.path.join(ws.path, rev[:4096])):
        r = ws.run(*command, rev, code=ExitCode.BAD_PATH)
        assert_bad_revision(r, "is outside the workspace")
        return
    if command == ["diff"] and any(c in rev for c in "*?["):
        assert ws.run(*command, rev).output == ""  # matches nothing
        return
    r = ws.run(*command, rev, code=ExitCode.BAD_REVISION)
    assert_bad_revision(r, "bad revision")


def test_log_of_a_relative_path_to_a_file_outside_is_exit_4(
    ws: PlainWorkspace, victim: Path
) -> None:
    rel = os.path.relpath(victim, ws.store / "refs" / "heads")
    assert_bad_revision(ws.run("log", rel, code=ExitCode.BAD_REVISION), "bad revision")


def test_reflog_of_a_path_is_exit_4(ws: PlainWorkspace) -> None:
    for ref in ("../../../etc/passwd", "/etc/passwd", "x" * 100_000):
        r = ws.run("reflog", ref, code=ExitCode.BAD_REVISION)
        assert_bad_revision(r, "no reflog for")


def test_unknown_valid_name_is_still_exit_4(ws: PlainWorkspace) -> None:
    r = ws.run("log", "no-such-branch", code=ExitCode.BAD_REVISION)
    assert_bad_revision(r, "unknown revision 'no-such-branch'")


# ---------------------------------------------------------------- new names


@pytest.mark.parametrize(
    "name",
    ["/tmp/evil", "../evil", "a/../../evil", "a/./b", "evil\x01", "x" * 100_000, "a//b"],
)
@pytest.mark.parametrize("command", ["branch", "tag"])
def test_creating_a_branch_or_tag_with_a_bad_name_is_exit_8(
    ws: PlainWorkspace, tmp_path: Path, command: str, name: str
) -> None:
    r = ws.run(command, name, code=ExitCode.BAD_NAME)
    assert f"invalid {command} name" in r.stderr
    assert len(r.stderr) < 3000
    assert not (tmp_path / "evil").exists()
    assert not (ws.store.parent / "evil").exists()


def test_checkout_b_with_a_path_is_exit_8(ws: PlainWorkspace, tmp_path: Path) -> None:
    r = ws.run("checkout", "-b", str(tmp_path / "evil"), code=ExitCode.BAD_NAME)
    assert "invalid branch name" in r.stderr
    assert not (tmp_path / "evil").exists()


# ---------------------------------------------------------------- damaged refs


def test_a_symlinked_ref_is_reported_never_followed(ws: PlainWorkspace, victim: Path) -> None:
    link = ws.store / "refs" / "heads" / "evil"
    link.symlink_to(victim)
    r = ws.run("log", "evil", code=ExitCode.STORE_CORRUPT)
    assert f"{link} is a symbolic link" in r.stderr
    r = ws.run("verify", code=ExitCode.STORE_CORRUPT)
    assert "refs/heads/evil" in r.stdout + r.stderr
    assert link.is_symlink()


def test_a_branch_replaced_by_a_directory_is_reported(ws: PlainWorkspace) -> None:
    ref = ws.store / "refs" / "heads" / "main"
    ref.unlink()
    ref.mkdir()
    r = ws.run("log", "main", code=ExitCode.STORE_CORRUPT)
    assert f"{ref} is a directory" in r.stderr
    r = ws.run("verify", code=ExitCode.STORE_CORRUPT)
    assert f"{ref} is a directory" in r.stdout + r.stderr


def test_verify_reports_bad_names_in_the_store(ws: PlainWorkspace) -> None:
    (ws.store / "refs" / "tags" / "bad name").write_text(head_id(ws) + "\n")
    r = ws.run("verify", code=ExitCode.STORE_CORRUPT)
    assert "'refs/tags/bad name' is not a valid ref name: it contains a space" in (
        r.stdout + r.stderr
    )
    assert "bad name" not in ws.run("tag").stdout  # listed by nothing else


# ---------------------------------------------------------------- end to end, kernel backend


@pytest.mark.root
def test_checkout_of_an_outside_file_on_the_kernel_backend(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    work = make_workspace(spec={"a": "a0"})
    victim = tmp_path / "victim"
    victim.write_text(work.head() + "\n")
    r = work.run("checkout", str(victim), check=False)
    assert r.returncode == ExitCode.BAD_REVISION, r.stderr
    assert "Switched" not in r.stdout + r.stderr
    (work.path / "a").write_text("a1")
    work.commit("after")
    assert victim.read_text() == work.log_ids()[1] + "\n"
    assert not (work.store / "logs" / "refs" / "heads" / "var").exists()
