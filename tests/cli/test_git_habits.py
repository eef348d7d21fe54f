"""git habits a new user brings, matched as git behaves (checked against
git 2.x): ``diff PATH`` without ``--``, ``checkout -`` and ``@{-N}``,
``log -3``, the most similar command for a mistyped one, and a
``workspaces`` listing that says "held" only while something holds it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.errors import ExitCode


def _error(r: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """(exit code, the error line, the hint line) of a failed command."""
    lines = r.stderr.splitlines()
    assert r.stdout == "" and len(lines) == 2, (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith("snapws: error: ") and lines[1].startswith("hint: "), r.stderr
    return r.returncode, lines[0].removeprefix("snapws: error: "), lines[1]


# ---- diff PATH: revisions first, then paths of the working tree ------------------------


@pytest.fixture
def two_changes(make_workspace: WorkspaceFactory) -> Workspace:
    """Snapshots c0, c1 (`a` changed), then `a` and `main` (a file named as
    the branch) and `sub/f` changed in the working tree, `gone` deleted."""
    ws = make_workspace(spec={"a": "a0", "main": "m0", "gone": "g", "sub": {"f": "f0"}})
    (ws.path / "a").write_text("a1")
    ws.commit("c1")
    (ws.path / "a").write_text("a2")
    (ws.path / "main").write_text("m1")
    (ws.path / "sub" / "f").write_text("f1")
    (ws.path / "gone").unlink()
    return ws


def test_diff_of_a_path_without_dashdash(two_changes: Workspace) -> None:
    ws = two_changes
    assert ws.run("diff", "--name-status", "a").stdout == "M\ta\n"
    assert ws.run("diff", "--name-status", "a", "sub").stdout == "M\ta\nM\tsub/f\n"
    # a revision, then paths; as with --
    assert ws.run("diff", "--name-status", "HEAD~1", "a").stdout == "M\ta\n"
    assert ws.run("diff", "--name-status", "HEAD~1", "HEAD", "a").stdout == "M\ta\n"
    # relative to the current directory, as after --
    here = run_cli("diff", "--name-status", "f", cwd=ws.path / "sub").stdout
    assert here == "M\tsub/f\n"


def test_diff_of_an_argument_both_revision_and_path_is_ambiguous(two_changes: Workspace) -> None:
    ws = two_changes
    code, error, hint = _error(ws.run("diff", "main", check=False))
    assert code == ExitCode.USAGE
    assert error == "ambiguous argument 'main': both a revision and a path in the working tree"
    assert "`snapws diff main --`" in hint and "`snapws diff -- main`" in hint
    # -- says which: after it paths, before it revisions
    assert ws.run("diff", "--name-status", "--", "main").stdout == "M\tmain\n"
    assert ws.run("diff", "--name-status", "main", "--").stdout.splitlines() == [
        "M\ta",
        "D\tgone",
        "M\tmain",
        "M\tsub/f",
    ]


def test_diff_of_neither_a_revision_nor_a_path(two_changes: Workspace) -> None:
    ws = two_changes
    code, error, hint = _error(ws.run("diff", "nope", check=False))
    assert code == ExitCode.BAD_REVISION
    assert error == (
        "'nope' is neither a revision nor a path in the working tree (unknown revision 'nope')"
    )
    assert "-- PATH" in hint
    # a deleted path is not in the working tree: it goes after --, as in git
    code, error, _ = _error(ws.run("diff", "gone", check=False))
    assert code == ExitCode.BAD_REVISION and error.startswith("'gone' is neither")
    assert ws.run("diff", "--name-status", "--", "gone").stdout == "D\tgone\n"


def test_diff_takes_no_revision_after_a_path(two_changes: Workspace) -> None:
    code, error, hint = _error(two_changes.run("diff", "a", "HEAD", check=False))
    assert code == ExitCode.BAD_PATH
    assert error == "'HEAD': no such path in the working tree"
    assert "--" in hint


# ---- checkout - and @{-N} --------------------------------------------------------------


def _said(ws: Workspace, *args: str) -> str:
    return ws.run(*args).stdout.strip()


def test_checkout_dash_goes_back_and_forth(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "0"})
    first = ws.head()
    (ws.path / "f").write_text("1")
    second = ws.commit("second")
    assert (
        _said(ws, "checkout", "-b", "feat") == f"Switched to a new branch 'feat' at {second[:12]}"
    )
    assert _said(ws, "checkout", "-") == f"Switched to branch 'main' ({second[:12]})"
    assert _said(ws, "checkout", "-") == f"Switched to branch 'feat' ({second[:12]})"
    # a detached HEAD is gone back to by its id
    assert _said(ws, "checkout", "HEAD~1") == f"HEAD is now at {first[:12]} (detached)"
    assert _said(ws, "checkout", "-") == f"Switched to branch 'feat' ({second[:12]})"
    assert _said(ws, "checkout", "-") == f"HEAD is now at {first[:12]} (detached)"
    assert (ws.path / "f").read_text() == "0"
    # the reflog names where it went, as git's
    messages = [e["message"] for e in ws.json("reflog")["entries"][:2]]
    assert messages == [
        f"checkout: moving from feat to {first}",
        f"checkout: moving from {first[:12]} to feat",
    ]
    # @{-N} in any revision: @{-1} is feat, @{-2} the detached snapshot
    assert ws.log_ids("@{-1}")[0] == second
    assert ws.log_ids("@{-2}")[0] == first
    assert ws.log_ids("@{-1}~1")[0] == first
    assert _said(ws, "checkout", "@{-3}") == f"Switched to branch 'feat' ({second[:12]})"


def test_checkout_of_the_branch_it_is_on_says_already_on(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(spec={"f": "0"})
    assert _said(ws, "checkout", "main") == "Already on 'main'"
    (ws.path / "f").write_text("1")  # uncommitted changes stay, as in git
    assert _said(ws, "checkout", "main") == "Already on 'main'"
    assert (ws.path / "f").read_text() == "1"
    assert _said(ws, "checkout", "HEAD") == "Already on 'main'"


def test_checkout_dash_with_nowhere_to_go_back_to(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "0"})
    (ws.path / "f").write_text("1")
    ws.commit("second")  # commits and resets are not checkouts
    ws.run("reset", "HEAD~1")
    code, error, hint = _error(ws.run("checkout", "-", check=False))
    assert code == ExitCode.BAD_REVISION
    assert error == "@{-1}: HEAD's reflog shows no checkout to go back to"
    assert "snapws reflog" in hint
    code, error, _ = _error(ws.run("log", "@{-2}", check=False))
    assert (code, error) == (
        ExitCode.BAD_REVISION,
        "@{-2}: HEAD's reflog shows fewer than 2 checkouts to go back to",
    )


def test_checkout_dash_to_a_deleted_branch(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "0"})
    head = ws.head()
    ws.run("checkout", "-b", "tmp")
    ws.run("checkout", "main")
    ws.run("branch", "-d", "tmp")
    code, error, hint = _error(ws.run("checkout", "-", check=False))
    assert code == ExitCode.BAD_REVISION
    assert error == "@{-1}: the branch checked out before, 'tmp', no longer exists"
    assert f"`snapws checkout {head[:12]}`" in hint


def test_checkout_dash_skips_damaged_reflog_entries(make_workspace: WorkspaceFactory) -> None:
    """HEAD's reflog is validated as it is read: an entry of the wrong
    shape is skipped as a torn line is, never an internal error."""
    ws = make_workspace(spec={"f": "0"})
    ws.run("checkout", "-b", "feat")
    ws.run("checkout", "main")
    (log,) = (ws.store / "logs" / "workspaces").glob("*/HEAD")
    ref = json.loads(log.read_text().splitlines()[-1])["ref"]
    good = {"ref": ref, "old": "a" * 32, "new": None, "time_ns": 1, "who": "x"}
    damaged = [
        [1, 2],
        {**good, "message": 7},
        {**good, "old": 5, "message": "checkout: moving from x to main"},
        {**good, "time_ns": "soon", "message": "checkout: moving from y to main"},
        {**good, "ref": None, "message": "checkout: moving from z to main"},
    ]
    with log.open("a") as f:
        f.writelines(json.dumps(d) + "\n" for d in damaged)
    assert _said(ws, "checkout", "-").startswith("Switched to branch 'feat' (")
    lines = ws.run("reflog").stdout.splitlines()
    assert lines[1].endswith(" HEAD@{1}: checkout: moving from feat to main"), lines


# ---- log -N ----------------------------------------------------------------------------


def test_log_and_reflog_take_minus_number_as_max_count(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "0"})
    ids = [ws.head()]
    for i in range(3):
        (ws.path / "f").write_text(str(i + 1))
        ids.insert(0, ws.commit(f"c{i}"))
    assert [line[:12] for line in ws.run("log", "--oneline", "-2").stdout.splitlines()] == [
        i[:12] for i in ids[:2]
    ]
    assert ws.run("log", "-0").stdout == ""
    assert len(ws.run("log", "-1", "--oneline", "HEAD~1").stdout.splitlines()) == 1
    assert ws.run("log", "-1", "--oneline", "HEAD~1").stdout.startswith(ids[1][:12])
    # the last count given wins, as in git
    assert len(ws.run("log", "--oneline", "-1", "-n", "3").stdout.splitlines()) == 3
    assert len(ws.run("log", "--oneline", "-n", "3", "-2").stdout.splitlines()) == 2
    assert len(ws.json("reflog", "-2")["entries"]) == 2
    assert len(ws.run("reflog", "-3").stdout.splitlines()) == 3


# ---- a mistyped command ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        ("stauts", "hint: the most similar command is `snapws status`"),
        ("comit", "hint: the most similar command is `snapws commit`"),
        ("lgo", "hint: the most similar command is `snapws log`"),
        ("work", "hint: the most similar command is `snapws workspaces`"),
        ("xyzzy", "hint: see `snapws --help` for the list of commands"),
    ],
)
def test_a_mistyped_command_names_the_most_similar(tmp_path: Path, typed: str, hint: str) -> None:
    r = run_cli(typed, "--json", cwd=tmp_path, check=False)
    assert _error(r) == (ExitCode.USAGE, f"'{typed}' is not a snapws command", hint)


def test_several_similar_commands_are_all_named(tmp_path: Path) -> None:
    _, _, hint = _error(run_cli("mout", cwd=tmp_path, check=False))
    assert hint.startswith("hint: the most similar commands are `snapws mount`, `snapws ")


# ---- workspaces: held only while held --------------------------------------------------


def test_workspaces_says_held_only_while_a_process_holds_it(workspace: Workspace) -> None:
    ws = workspace
    first = ws.head()
    inside = subprocess.Popen(["sleep", "300"], cwd=ws.path)
    try:
        (ws.path / "f").write_text("1")
        ws.commit("while held")  # goes through the live mount
        listed = ws.run("--store", ws.store, "workspaces").stdout
        assert f", held (its mount still shows {first[:12]} below the changes)]" in listed
        assert ws.json("--store", str(ws.store), "workspaces")["workspaces"][0]["held"] is True
    finally:
        inside.kill()
        inside.wait()
    listed = ws.run("--store", ws.store, "workspaces").stdout
    assert ", held (" not in listed
    assert f", no longer held (its mount shows {first[:12]} below the changes" in listed
    (doc,) = ws.json("--store", str(ws.store), "workspaces")["workspaces"]
    assert (doc["held"], doc["base"]) == (False, first)
    # the listing changed nothing: the next change settles it, as before
    (ws.path / "f").write_text("2")
    ws.commit("free")
    (doc,) = ws.json("--store", str(ws.store), "workspaces")["workspaces"]
    assert (doc["held"], doc["base"]) == (False, None)
    assert json.loads(ws.run("status", "--json").stdout)["clean"]


# ---- reset --hard names the new paths it removes ---------------------------------------


def test_reset_hard_names_the_new_paths_it_removes(workspace: Workspace) -> None:
    ws = workspace
    (ws.path / "junk.txt").write_text("j\n")
    (ws.path / "newdir").mkdir()
    (ws.path / "newdir" / "a.txt").write_text("a\n")
    r = ws.run("reset", "--hard")
    assert "HEAD is now at" in r.stdout
    assert "discarded 3 uncommitted change(s)" in r.stderr, r.stderr
    assert "removed 2 new path(s) that no snapshot holds: junk.txt, newdir" in r.stderr
    assert not (ws.path / "junk.txt").exists()
    assert ws.run("reset", "--hard").stderr == ""  # nothing to discard: nothing said


# ---- checkout and log take no paths ----------------------------------------------------


def test_checkout_and_log_of_a_path_point_to_restore_and_diff(workspace: Workspace) -> None:
    ws = workspace
    (ws.path / "f.txt").write_text("f\n")
    ws.run("commit", "-m", "f")
    r = ws.run("checkout", "--", "f.txt", check=False)
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "`snapws checkout` takes no paths" in r.stderr
    assert "hint: to bring files back: `snapws restore [--source REV] PATH...`" in r.stderr
    r = ws.run("checkout", "HEAD~1", "--", "f.txt", check=False)
    assert r.returncode == ExitCode.USAGE and "takes no paths" in r.stderr, r.stderr
    r = ws.run("checkout", "f.txt", check=False)
    assert r.returncode == ExitCode.BAD_REVISION, r.stderr
    assert "hint: to bring back the file 'f.txt': `snapws restore f.txt`" in r.stderr
    r = ws.run("log", "--oneline", "-2", "--", "f.txt", check=False)
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "`snapws log` takes no paths" in r.stderr and "snapws diff REV1 REV2 -- PATH" in r.stderr
    assert len(ws.run("log", "--oneline", "-2").stdout.splitlines()) == 2


# ---- show --stat and show -p ------------------------------------------------------------


def test_show_stat_and_patch_as_git(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"a.txt": "a\nb\n"})
    (ws.path / "f.txt").write_text("one\ntwo\n")
    ws.run("commit", "-m", "two lines")
    (ws.path / "f.txt").write_text("one\n2\nthree\n")
    ws.run("commit", "-m", "edit f")
    out = ws.run("show", "--stat").stdout
    assert out.startswith("snapshot ") and "    edit f\n" in out, out
    assert " f.txt | 3 ++-\n" in out and "1 file changed, 2 insertions(+), 1 deletion(-)" in out
    out = ws.run("show", "-p", "HEAD").stdout
    assert "    edit f\n" in out and "diff --git a/f.txt b/f.txt\n" in out, out
    assert "-two\n+2\n+three\n" in out
    first = ws.json("log")["snapshots"][-1]["id"]
    out = ws.run("show", "--stat", first).stdout  # a root snapshot: its tree as additions
    assert " a.txt | 2 ++\n" in out and "1 file changed, 2 insertions(+)" in out, out
    out = ws.run("show", "-p", first).stdout
    assert "new file mode 100644" in out and "+a\n+b\n" in out, out


# ---- status -s, commit -am -------------------------------------------------------------


def test_status_short_and_commit_am(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"x": "x\n", "sub": {"y": "y\n"}})
    (ws.path / "x").write_text("x2\n")
    (ws.path / "sub" / "new").write_text("n\n")
    assert ws.run("status", "-s").stdout == " M x\n?? sub/new\n"
    # from a subdirectory, relative to it (git's status.relativePaths)
    sub = run_cli("-C", ws.path / "sub", "status", "--short", cwd=ws.outside).stdout
    assert sub == " M ../x\n?? new\n"
    ws.run("commit", "-am", "as git")
    assert ws.run("status", "-s").stdout == ""
    assert ws.json("log")["snapshots"][0]["message"] == "as git"
