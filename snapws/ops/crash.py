"""Test-only crash injection: ``SNAPWS_CRASH_AT=<step>`` makes the process
SIGKILL itself when it reaches that named step, to prove crash safety."""

from __future__ import annotations

import os
import signal

ENV = "SNAPWS_CRASH_AT"

#: Every named step, for tests and docs (operation:step).
STEPS = (
    "init:journaled",
    "init:moved",
    "init:layer-published",
    "init:snapshot-written",
    "init:state-written",
    "commit:frozen",
    "commit:journaled",
    "commit:pruned",
    "commit:layer-published",
    "commit:snapshot-written",
    "commit:ref-moved",
    "commit:logged",
    "commit:state-written",
    "commit:beneath",
    "commit:mounted",
    "checkout:journaled",
    "checkout:ref-moved",
    "checkout:logged",
    "checkout:state-written",
    "checkout:beneath",
    "checkout:mounted",
    "flatten:staged",
    "flatten:published",
    "flatten:chain-rewritten",
    "flatten:frozen",
    "prune:journaled",
    "prune:forgot-first",
    "prune:forgotten",
    "gc:journaled",
    "gc:layer-trashed",
    "gc:removed",
    "push:blob-sent",
    "push:manifest-sent",
)


def crashpoint(step: str) -> None:
    """SIGKILL this process if ``SNAPWS_CRASH_AT`` names ``step``."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
