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
    "commit:detached",
    "commit:pruned",
    "commit:layer-published",
    "commit:snapshot-written",
    "commit:ref-moved",
    "commit:logged",
    "commit:state-written",
    "commit:mounted",
    "checkout:journaled",
    "checkout:detached",
    "checkout:ref-moved",
    "checkout:logged",
    "checkout:state-written",
    "checkout:mounted",
    "flatten:staged",
    "flatten:published",
    "flatten:chain-rewritten",
    "flatten:frozen",
    "flatten:detached",
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
