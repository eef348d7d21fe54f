"""Early writeback while a layer is unpacked: the final ``syncfs`` that
makes an unpacked layer durable (:func:`snapws.oci.extractedlayer.publish_extracted`)
would otherwise wait for the whole tree's writeback at the end, with
nothing else to do.

:class:`EarlyWriteback` runs ``syncfs`` of the store's filesystem in a
background thread each time enough new data has been written since the
last one began, and once more when the unpacking ends (while the manifest
is computed and the tree deduplicated). ``syncfs`` releases the GIL, so the
disk works while this process unpacks. It only starts writeback early: the
final ``syncfs`` still runs after everything, so what is durable when a
layer is published does not change. Its errors are ignored for the same
reason (the final one reports them).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from snapws.store.atomic import syncfs

#: Bytes written between two early syncs: large enough that each one has
#: real work, small enough that the disk starts long before the end.
STEP = 128 << 20


class EarlyWriteback:
    """Background ``syncfs`` of the filesystem holding ``path`` (see the
    module docstring). Call :meth:`wrote` as data is written, :meth:`kick`
    at the end of the writing, :meth:`wait` before the final ``syncfs``,
    :meth:`close` (idempotent) in a ``finally``."""

    def __init__(self, path: Path, step: int = STEP) -> None:
        self.path = path
        self.step = step
        self.since = 0  # bytes written since the last sync began
        self._thread: threading.Thread | None = None

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes written; start a sync once :attr:`step` are."""
        self.since += n
        if self.since >= self.step:
            self.kick()

    def kick(self) -> None:
        """Start a sync now, unless one is still running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.since = 0
        self._thread = threading.Thread(target=self._sync, name="early-writeback", daemon=True)
        self._thread.start()

    def _sync(self) -> None:
        with contextlib.suppress(OSError):
            syncfs(self.path)

    def wait(self) -> None:
        """Wait for the sync under way, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    close = wait
