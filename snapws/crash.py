"""Test-only crash injection, one mechanism for the whole library:
``SNAPWS_CRASH_AT=<step>`` makes the process SIGKILL itself when it reaches
that named step, to prove crash safety. Imports nothing from snapws, so every
layer (store, backends, ops) can name its steps here.

Steps are ``operation:step``. A counted step (dedup's links and renames)
is named with its count: ``dedup:link:3`` is the third link.
"""

from __future__ import annotations

import os
import signal

ENV = "SNAPWS_CRASH_AT"

#: Every named step, in order within each operation (tests take each one).
STEPS = (
    "init:journaled",
    "init:moved",
    "init:layer-published",
    "init:snapshot-written",
    "init:state-written",
    "commit:frozen",
    "commit:staged",
    "commit:journaled",
    "commit:layer-published",
    "commit:snapshot-written",
    "commit:ref-moved",
    "commit:logged",
    "commit:state-written",
    "commit:beneath",
    "commit:shown",
    "checkout:journaled",
    "checkout:ref-moved",
    "checkout:rewriting",
    "checkout:logged",
    "checkout:state-written",
    "checkout:beneath",
    "checkout:shown",
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
    "eject:journaled",
    "eject:unmounted",
    "eject:moved",
    "eject:record-removed",
)

#: Steps inside one kind of backend's hooks, reached only by those backends
#: (every other step is in the one flow every backend runs): a mount put
#: beneath the old one (the overlay backends), paths rewritten in place (the
#: plain backend).
BACKEND_STEPS = {
    "commit:beneath": frozenset({"kernel", "rootless", "fuse"}),
    "checkout:beneath": frozenset({"kernel", "rootless", "fuse"}),
    "checkout:rewriting": frozenset({"plain"}),
}

#: Counted steps: ``<name>:<N>`` crashes at the N-th time (dedup: after the
#: N-th link made, after the N-th rename over a file, before the index
#: transaction is committed; carry: after the N-th ignored path moved into
#: the next upperdir by commit, checkout or reset; init:unshared: after the
#: N-th file with hardlinks outside the directory got its own inode).
COUNTED_STEPS = ("dedup:link", "dedup:rename", "dedup:commit", "carry:moved", "init:unshared")


def steps_of(operation: str, backend: str | None = None) -> tuple[str, ...]:
    """The named steps of ``operation`` (e.g. "commit"), in order; with
    ``backend``, those that backend's workspaces reach."""
    return tuple(
        s
        for s in STEPS
        if s.split(":", 1)[0] == operation
        and (backend is None or backend in BACKEND_STEPS.get(s, (backend,)))
    )


def crashpoint(step: str, count: int | None = None) -> None:
    """SIGKILL this process if ``SNAPWS_CRASH_AT`` names ``step`` (with
    ``count`` for a counted step: ``step:count``)."""
    wanted = os.environ.get(ENV)
    if wanted is None:
        return
    if wanted == (step if count is None else f"{step}:{count}"):
        os.kill(os.getpid(), signal.SIGKILL)
