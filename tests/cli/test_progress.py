"""The shared progress bar: silent when disabled, growing when the total is unknown."""

from __future__ import annotations

import pytest

from snapws.cli.progress import ProgressBar


def test_disabled_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(False, "hashing")
    bar(5, 10)
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_unknown_total_grows_with_done(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(True, "merging entries")
    bar(10)
    bar(2500)
    assert bar.bar is not None and bar.bar.length == 2500
    bar.close()
    assert "merging entries" in capsys.readouterr().err


def test_restart_begins_a_new_phase(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(True, "scanning layers")
    bar(3, 3)
    bar.restart("hashing")
    bar(1, 100, "1/100 files")
    assert bar.bar is not None and bar.bar.length == 100 and bar.shown == 1
    bar.close()
    err = capsys.readouterr().err
    assert "scanning layers" in err and "hashing" in err
