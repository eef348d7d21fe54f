"""Rendering helpers of the CLI (snapws.cli.render)."""

from __future__ import annotations

import calendar

import pytest

from snapws.cli.render import format_time


def _ns(*when: int) -> int:
    return calendar.timegm((*when, 0, 0, 0)) * 1_000_000_000


@pytest.mark.parametrize(
    ("ns", "tz", "shown"),
    [
        # git's default date: the day of the month is not padded
        (_ns(2026, 12, 7, 18, 5, 9), 0, "Mon Dec 7 18:05:09 2026 +0000"),
        (_ns(2026, 12, 17, 8, 0, 0), 0, "Thu Dec 17 08:00:00 2026 +0000"),
        # the local time of the offset, which may be another day
        (_ns(2026, 12, 7, 23, 30, 0), 90, "Tue Dec 8 01:00:00 2026 +0130"),
        (_ns(2026, 12, 1, 0, 30, 0), -300, "Mon Nov 30 19:30:00 2026 -0500"),
    ],
)
def test_format_time_is_gits_default_date(ns: int, tz: int, shown: str) -> None:
    assert format_time(ns, tz) == shown
