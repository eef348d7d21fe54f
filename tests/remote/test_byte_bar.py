"""The push/pull progress bar: bytes with a rate on a terminal, silent otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapws.cli.app import App
from snapws.cli.cmd_remote import ByteBar
from snapws.config import Config


def app(interactive: bool, quiet: bool = False) -> App:
    return App(Config(), Path("/"), None, quiet, interactive)


def test_silent_when_not_a_terminal_or_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    for a in (app(False), app(True, quiet=True)):
        bar = ByteBar(a, "sending")
        bar("sending", 1 << 20, 4 << 20)
        bar.close()
    assert capsys.readouterr() == ("", "")


def test_bytes_and_rate_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ByteBar(app(True), "checking")
    bar("checking", 1, 3)
    bar("sending", 3 << 20, 10 << 20)
    assert bar.bar.text.startswith("3.0 MiB/10.0 MiB ") and bar.bar.text.endswith("/s")
    bar.simple("fetching")(512, None)
    assert bar.bar.label == "fetching" and bar.bar.text.startswith("512 B ")
    bar.close()
    err = capsys.readouterr().err
    assert "checking" in err and "sending" in err
