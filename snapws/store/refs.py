"""Refs and reflogs of a store, in branch namespaces (format: docs/format.md).

Unrelated workspaces share one store (and so its deduplicated content) but
not their branch names: each workspace records a *namespace*
(:attr:`snapws.model.WorkspaceState.namespace`), and the refs it reads and
writes are those of that namespace:

    <store>/refs/heads|tags|remotes/...          the root namespace ("")
    <store>/refs/ns/<ns>/heads|tags|remotes/...  namespace <ns>
    <store>/logs/refs/...                        their reflogs, likewise
    <store>/ns/<ns>/remotes.json                 the remotes of namespace <ns>

The root namespace is where every ref of a store made before namespaces
lives, and where workspaces that share branches on purpose (``snapws init
--shared``) keep theirs. A :class:`RefStore` is a view of the store in one
namespace (:meth:`RefStore.in_namespace`); every ref method of it works in
that namespace only. Questions about the whole store (which snapshots any
ref keeps: gc, prune, flatten) go through :meth:`RefStore.namespaces`.
Workspace HEAD logs (``workspaces/<id>/HEAD``) and ``HEAD`` belong to no
namespace.
"""

from __future__ import annotations

import copy
import errno
import json
import stat
import time
from pathlib import Path
from typing import Self

from snapws.errors import NameExistsError, StoreCorruptError
from snapws.ids import SnapshotId
from snapws.model import ReflogEntry, namespace_problem
from snapws.refnames import check_ref_format, ref_name_problem, shown
from snapws.store.nofollow import UnsafeEntryError
from snapws.store.reffiles import (
    MAX_REF_FILE,
    REF_KINDS,
    append_file,
    entry_kind,
    log_parts,
    namespace_entries,
    read_file,
    read_tail,
    ref_entries,
    ref_parts,
    refs_base,
    remove_file,
    write_file,
)


class RefStore:
    """The refs and reflogs of a store in one namespace (``namespace``; ""
    is the root namespace). Mixed into :class:`snapws.store.store.Store`."""

    root: Path
    namespace: str = ""

    def discard(self, path: Path) -> None:  # pragma: no cover - Store's
        raise NotImplementedError

    # ---- namespaces ----------------------------------------------------
    def in_namespace(self, namespace: str) -> Self:
        """This store seen from branch namespace ``namespace`` ("": the root
        namespace): the same store, whose ref and reflog methods read and
        write that namespace's refs. ValueError for an invalid name
        (:func:`snapws.model.namespace_problem`)."""
        if namespace == self.namespace:
            return self
        if namespace:
            problem = namespace_problem(namespace)
            if problem is not None:
                raise ValueError(f"invalid namespace {namespace!r}: {problem}")
        view = copy.copy(self)
        view.namespace = namespace
        return view

    def namespaces(self) -> list[str]:
        """Every namespace that holds refs: "" (the root namespace) first,
        then the valid names below ``refs/ns``, sorted (invalid ones are
        never entered; ``snapws verify`` reports them). Raises
        StoreCorruptError (``refs/ns`` is a link)."""
        try:
            names = namespace_entries(self.root)
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None
        return ["", *(n for n in names if namespace_problem(n) is None)]

    def namespace_entries(self) -> list[str]:
        """Every entry below ``refs/ns``, valid namespace names or not (for
        ``snapws verify``). Raises StoreCorruptError as :meth:`namespaces`."""
        try:
            return namespace_entries(self.root)
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None

    def namespace_dir(self) -> Path:
        """The directory of the namespace's own records other than refs (its
        remotes): the store's top for the root namespace, ``ns/<ns>`` below
        it for any other (made by the first writer)."""
        return self.root / "ns" / self.namespace if self.namespace else self.root

    def every_ref(
        self, kinds: tuple[str, ...] = REF_KINDS
    ) -> dict[tuple[str, str, str], SnapshotId]:
        """Every ref of ``kinds`` in every namespace, keyed by (namespace,
        kind, name): what keeps snapshots alive for gc, prune and flatten.
        Raises StoreCorruptError for a damaged ref."""
        out: dict[tuple[str, str, str], SnapshotId] = {}
        for ns in self.namespaces():
            view = self.in_namespace(ns)
            for kind in kinds:
                for name, sid in view.list_refs(kind).items():
                    out[(ns, kind, name)] = sid
        return out

    # ---- refs ----------------------------------------------------------
    # Ref and reflog files are reached through snapws.store.reffiles: only
    # valid ref names become paths, and links are reported, never followed.
    def _ref_damage(self, rel: str, what: str) -> StoreCorruptError:
        path = self.root / rel
        return StoreCorruptError(
            f"damaged ref: {path} is {what} (snapws never follows it)",
            hint=f"remove {path}; `snapws reflog NAME` shows where the ref pointed, "
            "`snapws branch -f` or `snapws tag` sets it again",
        )

    def read_ref(self, kind: str, name: str) -> SnapshotId | None:
        """The snapshot ref ``name`` of ``kind`` ("heads", "tags", "remotes") points at.

        None if there is no such ref, and for a ``name`` that cannot be a ref name
        (``snapws.refnames.ref_name_problem``): nothing is read then. The file is
        opened beneath ``refs/<kind>`` without following links. Raises
        StoreCorruptError naming the file if it, or a directory above it, is a
        link; if it is not a regular file; if it is a directory while its reflog
        says the ref exists (a ref replaced by a directory); or if it does not
        hold an id."""
        parts = ref_parts(kind, name, self.namespace)
        if parts is None:
            return None
        rel = "/".join(parts)
        try:
            mode = entry_kind(self.root, parts)
            if mode is None:
                return None
            if stat.S_ISDIR(mode):
                if self._reflog_says_live(f"refs/{kind}/{name}"):
                    raise self._ref_damage(rel, "a directory")
                return None  # "a/" of the refs "a/b"...: not a ref
            data = read_file(self.root, parts, MAX_REF_FILE)
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None
        if data is None:
            return None
        try:
            return SnapshotId.parse(data.decode("ascii").strip())
        except ValueError as e:
            raise StoreCorruptError(f"ref file {self.root / rel} is unreadable") from e

    def _reflog_says_live(self, ref: str) -> bool:
        last = self.last_reflog(ref)
        return last is not None and last.new is not None

    def ref_entries(self, kind: str) -> list[str]:
        """The name of every entry below ``refs/<kind>`` (sorted), found without
        following links, valid ref names or not: what ``snapws verify`` checks
        with :meth:`read_ref` and ``snapws.refnames.ref_name_problem``."""
        if kind not in REF_KINDS:
            raise ValueError(f"unknown ref kind {kind!r}")
        try:
            return ref_entries(self.root, kind, self.namespace)
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None

    def list_refs(self, kind: str) -> dict[str, SnapshotId]:
        """Every ref of ``kind`` by name, sorted. Entries whose names are not
        valid ref names are skipped, never read (``snapws verify`` reports them).
        Raises StoreCorruptError for a damaged ref (see :meth:`read_ref`)."""
        out = {}
        for name in self.ref_entries(kind):
            if ref_name_problem(name) is not None:
                continue
            sid = self.read_ref(kind, name)
            if sid is not None:
                out[name] = sid
        return out

    def write_ref(self, kind: str, name: str, sid: SnapshotId, who: str, message: str) -> None:
        """Point ref ``name`` of ``kind`` at ``sid`` and log the move in its reflog.

        The file is replaced atomically beneath ``refs/<kind>`` (directories made
        as needed), never through a link. Raises BadNameError (``name`` is not a
        valid ref name: nothing is written), NameExistsError (it clashes with an
        existing ref as a path prefix, ``a`` vs ``a/b``), StoreCorruptError (a
        damaged ref in the way)."""
        check_ref_format(name)
        parts = ref_parts(kind, name, self.namespace)
        assert parts is not None
        old = self.read_ref(kind, name)
        try:
            write_file(self.root, parts, sid.hex.encode() + b"\n")
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None
        except OSError as e:  # a directory where the file goes, a file where a directory does
            if e.errno not in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise NameExistsError(
                f"cannot create {'branch' if kind == 'heads' else 'tag'} {name!r}: "
                "it clashes with an existing name that is a prefix of it or has it as a prefix"
            ) from e
        if old != sid:
            self.append_reflog(f"refs/{kind}/{name}", old, sid, who, message)

    def delete_ref(self, kind: str, name: str, who: str, message: str) -> SnapshotId | None:
        """Delete ref ``name`` of ``kind`` (and the directories it leaves empty)
        and log it; returns where it pointed, None if there was no such ref
        (an invalid name is none). Raises StoreCorruptError (a damaged ref)."""
        parts = ref_parts(kind, name, self.namespace)
        old = self.read_ref(kind, name)
        if parts is None or old is None:
            return None
        try:
            remove_file(self.root, parts, keep=len(refs_base(self.namespace)) + 1)
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None
        self.append_reflog(f"refs/{kind}/{name}", old, None, who, message)
        return old

    # ---- reflog --------------------------------------------------------
    # A reflog is named "HEAD", "workspaces/<id>/HEAD" or "refs/<kind>/<name>";
    # reading any other name finds nothing, appending to one is a bug.
    def _log_parts(self, ref: str) -> list[str]:
        parts = log_parts(ref, self.namespace)
        if parts is None:
            raise ValueError(f"not a reflog name: {ref!r}")
        return parts

    def append_reflog_once(
        self,
        ref: str,
        old: SnapshotId | None,
        new: SnapshotId | None,
        who: str,
        message: str,
        time_ns: int,
    ) -> None:
        """:meth:`append_reflog` with a time fixed by the caller's journal,
        unless the log's last entry is this very move (the step run again
        after a crash). Reads only the log's tail."""
        last = self.last_reflog(ref)
        if last is not None and (last.old, last.new, last.message, last.time_ns) == (
            old,
            new,
            message,
            time_ns,
        ):
            return
        self.append_reflog(ref, old, new, who, message, time_ns)

    def last_reflog(self, ref: str) -> ReflogEntry | None:
        """The newest entry of ``ref``'s log (None: empty, torn, or not a
        reflog name). Raises StoreCorruptError (the log is a link)."""
        parts = log_parts(ref, self.namespace)
        if parts is None:
            return None
        try:
            tail = read_tail(self.root, parts, 8192)
        except UnsafeEntryError as e:
            if e.what == "a directory":
                return None  # logs of longer names ("a/b" when asked for "a")
            raise self._ref_damage(e.path, e.what) from None
        if tail is None:
            return None
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        try:
            return ReflogEntry.from_json(json.loads(lines[-1]))
        except (ValueError, KeyError, TypeError):
            return None

    def append_reflog(
        self,
        ref: str,
        old: SnapshotId | None,
        new: SnapshotId | None,
        who: str,
        message: str,
        time_ns: int | None = None,
    ) -> None:
        """Append one entry to ``ref``'s log, beneath ``logs/`` without following
        links. ValueError if ``ref`` is not a reflog name; StoreCorruptError if
        a link is on the way."""
        entry = ReflogEntry(
            ref, old, new, time.time_ns() if time_ns is None else time_ns, who, message
        )
        line = json.dumps(entry.to_json(), sort_keys=True).encode()
        parts = self._log_parts(ref)
        try:
            try:
                append_file(self.root, parts, line)
            except (UnsafeEntryError, NotADirectoryError) as e:
                if isinstance(e, UnsafeEntryError) and e.what != "a directory":
                    raise
                # the log of a deleted ref is in the way ("a/b" deleted, then "a"
                # created, or the reverse): it goes, as git drops such reflogs
                self._drop_logs_in_the_way(parts)
                append_file(self.root, parts, line)
        except UnsafeEntryError as e:
            raise self._ref_damage(e.path, e.what) from None

    def _drop_logs_in_the_way(self, parts: list[str]) -> None:
        for i in range(2, len(parts) + 1):
            mode = entry_kind(self.root, parts[:i])
            if mode is None:
                return
            if i < len(parts) and stat.S_ISREG(mode):
                self.discard(self.root.joinpath(*parts[:i]))  # the log of a shorter name
                return
            if i == len(parts) and stat.S_ISDIR(mode):
                self.discard(self.root.joinpath(*parts))  # logs of longer names

    def read_reflog(self, ref: str) -> list[ReflogEntry]:
        """Entries oldest first; a torn last line (crash) is skipped. Empty if
        the log is missing or ``ref`` is not a reflog name. Raises
        StoreCorruptError (the log is a link or not a regular file)."""
        parts = log_parts(ref, self.namespace)
        if parts is None:
            return []
        try:
            data = read_file(self.root, parts)
        except UnsafeEntryError as e:
            if e.what == "a directory":
                return []  # never logged ("a" when only "a/b" was)
            raise self._ref_damage(e.path, e.what) from None
        if data is None:
            return []  # never logged ("a/b" when only "a" was)
        out = []
        for line in data.splitlines():
            try:
                out.append(ReflogEntry.from_json(json.loads(line)))
            except (ValueError, KeyError):
                continue
        return out


def ref_problems(store: RefStore) -> list[tuple[str, str, str]]:
    """What ``snapws verify`` reports about the refs of every namespace of
    ``store``, as (kind, message, ref) with kind "bad-ref" (a damaged ref or
    directory, a name snapws would never read) or "dangling-ref" (a ref to a
    snapshot the store lacks). Reads only; ``has_snapshot`` is the store's."""
    out: list[tuple[str, str, str]] = []
    try:
        entries = store.namespace_entries()
    except StoreCorruptError as e:
        out.append(("bad-ref", e.message, "refs/ns"))
        entries = []
    for ns in entries:
        problem = namespace_problem(ns)
        if problem is not None:  # never entered: snapws ignores it
            ref = f"refs/ns/{ns}"
            out.append(("bad-ref", f"{shown(ref)} is not a valid namespace: {problem}", ref))
    for ns in ["", *(n for n in entries if namespace_problem(n) is None)]:
        view = store.in_namespace(ns)
        base = "/".join(refs_base(ns))
        for kind in REF_KINDS:
            try:
                names = view.ref_entries(kind)
            except StoreCorruptError as e:
                out.append(("bad-ref", e.message, f"{base}/{kind}"))
                continue
            for name in names:
                ref = f"{base}/{kind}/{name}"
                problem = ref_name_problem(name)
                if problem is not None:  # never read: snapws ignores it
                    out.append(("bad-ref", f"{shown(ref)} is not a valid ref name: {problem}", ref))
                    continue
                try:
                    sid = view.read_ref(kind, name)
                except StoreCorruptError as e:
                    out.append(("bad-ref", e.message, ref))
                    continue
                if sid is not None and not _has_snapshot(store, sid):
                    msg = f"{ref} points to missing snapshot {sid.short()}"
                    out.append(("dangling-ref", msg, ref))
    return out


def _has_snapshot(store: RefStore, sid: SnapshotId) -> bool:
    return (store.root / "snapshots" / f"{sid.hex}.json").is_file()
