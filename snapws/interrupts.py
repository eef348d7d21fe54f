"""Signals deferred over an operation's critical section.

Once an operation has written its journal (its point of no return), an
interrupt that stopped it there would leave the workspace frozen with the
journal pending for the next command to finish. As git does for its
critical sections, SIGINT, SIGTERM and SIGHUP are then only recorded, and
acted on once the section is done: the operation finishes first, then
:class:`DeferredInterrupt` (a KeyboardInterrupt) is raised, saying what was
finished. Imports nothing from snapws.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

Handler = Any  # what signal.signal returns: a callable, SIG_DFL/SIG_IGN, or None

#: The signals held back: Ctrl-C, kill's default, a closed terminal.
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_active = False  # a section is open in this process (sections nest)


class DeferredInterrupt(KeyboardInterrupt):
    """A signal that arrived inside a critical section, raised once the
    section was finished. ``signum``: the signal; ``finished``: what was
    done before acting on it (e.g. "the commit was finished first")."""

    def __init__(self, signum: int, finished: str) -> None:
        super().__init__(finished)
        self.signum = signum
        self.finished = finished


@contextmanager
def deferred_signals(finished: str) -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs; if one
    arrived, raise :class:`DeferredInterrupt` (with ``finished``, what the
    block completed) after it. A block that raises lets its own exception
    through. The previous handlers are restored either way. Outside the
    main thread (no handlers can be set there), or inside another such
    block, the block runs as it is."""
    global _active
    if _active or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous: dict[int, Handler] = {}
    try:
        for signum in DEFERRED:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # ignored before (nohup): stays ignored
            previous[signum] = signal.signal(signum, hold)
        _active = True
        yield
    finally:
        _active = False
        for held, handler in previous.items():
            signal.signal(held, signal.SIG_DFL if handler is None else handler)
    if received:
        raise DeferredInterrupt(received[0], finished)
