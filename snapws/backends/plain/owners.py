"""Which owners a commit of a plain workspace can record.

The plain backend copies the working tree into the store as the user who
runs it. Root gives each copy its original owner. Any other user owns every
copy it makes and can give a copy only a group she belongs to, so a file of
another user, or of a group she is not in, cannot be stored with that owner.
Such a copy is given her uid and, if its group is not one of hers, her
primary (effective) gid, always: :meth:`Owners.settable` is what a commit
records, and what status compares (:mod:`snapws.backends.plain.workentry`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Owners:
    """The owners this process can give to a node it made: any (root,
    ``uid`` None), or only ``uid`` with one of ``groups`` (else ``gid``)."""

    uid: int | None
    gid: int
    groups: frozenset[int]

    @classmethod
    def of_process(cls) -> Owners:
        """The owners the current process (its effective ids) can give."""
        return _owners_of(os.geteuid(), os.getegid())

    def settable(self, uid: int, gid: int) -> tuple[int, int]:
        """The owner a copy of a node owned by ``uid``:``gid`` gets when this
        process makes it: the same as root; else this process's uid, and
        ``gid`` if it is one of its groups, else its primary gid."""
        if self.uid is None:
            return uid, gid
        return (uid if uid == self.uid else self.uid), (gid if gid in self.groups else self.gid)


@lru_cache(maxsize=4)
def _owners_of(euid: int, egid: int) -> Owners:
    if euid == 0:
        return Owners(None, egid, frozenset())
    return Owners(euid, egid, frozenset(os.getgroups()) | {egid})
