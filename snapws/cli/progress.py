"""Progress bars for long work: drawn on stderr only on a terminal and
without ``-q``; otherwise every call does nothing."""

from __future__ import annotations

import sys
from typing import Any

import click


class ProgressBar:
    """``bar(done, total)`` moves the bar; ``total=None`` (not known yet)
    lets the bar grow with ``done``. ``text`` is shown beside it.
    ``restart(label)`` begins a new phase; ``close()`` finishes the line."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self.bar: Any = None
        self.shown = 0
        self.text = ""

    def __call__(self, done: int, total: int | None = None, text: str = "") -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=max(total if total is not None else done, 1),
                label=self.label,
                file=sys.stderr,
                item_show_func=lambda _item: self.text or None,
            )
            self.bar.__enter__()
        if total is None:
            self.bar.length = max(self.bar.length or 0, done, 1)
        self.text = text
        self.bar.update(done - self.shown)
        self.shown = done

    def restart(self, label: str) -> None:
        self.close()
        self.label = label
        self.shown = 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
