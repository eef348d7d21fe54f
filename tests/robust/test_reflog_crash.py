"""The HEAD reflog records each move exactly once, crash or not."""

from __future__ import annotations

import json

import pytest

from .conftest import Workspace, crash, recover


def _reflog(ws: Workspace) -> list[dict[str, object]]:
    return list(json.loads(ws.run("reflog", "--json").stdout)["entries"])


@pytest.mark.parametrize(
    "step", ["commit:ref-moved", "commit:logged", "commit:state-written", "commit:shown"]
)
def test_a_crashed_commit_is_logged_once(ws: Workspace, step: str) -> None:
    ws.init({"a": "1\n"})
    (ws.path / "a").write_text("2\n")
    crash(ws, "commit", "-m", "second", step=step)
    recover(ws)
    entries = _reflog(ws)
    assert [e["message"] for e in entries] == ["commit: second", "init"]
    assert entries[0]["id"] == ws.state().head.hex


@pytest.mark.parametrize(
    "step", ["checkout:ref-moved", "checkout:logged", "checkout:state-written"]
)
def test_a_crashed_checkout_is_logged_once(ws: Workspace, step: str) -> None:
    ws.init({"a": "1\n"})
    (ws.path / "a").write_text("2\n")
    ws.commit("second")
    crash(ws, "checkout", "HEAD~1", step=step)
    recover(ws)
    messages = [e["message"] for e in _reflog(ws)]
    assert messages[0].startswith("checkout: moving from main to HEAD~1")
    assert messages[1:] == ["commit: second", "init"]


def test_repeated_identical_moves_are_each_logged(ws: Workspace) -> None:
    ws.init({"a": "1\n"})
    ws.run("reset", "--hard", "HEAD")
    ws.run("reset", "--hard", "HEAD")
    messages = [e["message"] for e in _reflog(ws)]
    assert messages == ["reset: moving to HEAD", "reset: moving to HEAD", "init"]
