"""The files of refs and reflogs, reached beneath the store without following links.

A ref ``name`` of kind ``heads``, ``tags`` or ``remotes`` is the file
``<store>/refs/<kind>/<name>``; its reflog is ``<store>/logs/refs/<kind>/<name>``.
In a branch namespace ``<ns>`` (see :mod:`snapws.store.refs`) they are
``<store>/refs/ns/<ns>/<kind>/<name>`` and ``<store>/logs/refs/ns/<ns>/<kind>/<name>``.
Workspaces log their HEAD in ``<store>/logs/workspaces/<id>/HEAD``. Only names
that :func:`snapws.refnames.ref_name_problem` accepts ever become paths here,
and every file is opened with :mod:`snapws.store.nofollow`: a link on the way
is reported (:class:`snapws.store.nofollow.UnsafeEntryError`), never followed.

The :class:`snapws.store.store.Store` methods give these files their meaning;
this module only moves bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from snapws.ids import WorkspaceId
from snapws.refnames import ref_name_problem
from snapws.store.atomic import append_line_fd, fsync_fd
from snapws.store.nofollow import (
    entry_mode,
    open_dirs,
    open_regular,
    read_regular,
    replace_file,
)

REF_KINDS = ("heads", "tags", "remotes")  # remotes: <remote>/<tag>, set by fetch and push
MAX_REF_FILE = 4096  # a ref file holds one id and a newline; more is damage

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def refs_base(namespace: str) -> list[str]:
    """The directory (below the store) that holds the ``heads``, ``tags``
    and ``remotes`` of ``namespace``: ``["refs"]`` for the root namespace
    (""), ``["refs", "ns", namespace]`` for any other. The caller has
    checked the name (:func:`snapws.model.namespace_problem`)."""
    return ["refs", "ns", namespace] if namespace else ["refs"]


def ref_parts(kind: str, name: str, namespace: str = "") -> list[str] | None:
    """``[*refs_base(namespace), kind, *components]``: the path of ref ``name``
    below the store; None if ``name`` cannot be a ref name (then no such ref
    exists). ValueError for an unknown ``kind``."""
    if kind not in REF_KINDS:
        raise ValueError(f"unknown ref kind {kind!r}")
    if ref_name_problem(name) is not None:
        return None
    return [*refs_base(namespace), kind, *name.split("/")]


def log_parts(ref: str, namespace: str = "") -> list[str] | None:
    """``["logs", *components]``: the path of the reflog of ``ref`` ("HEAD",
    "workspaces/<id>/HEAD" or "refs/<kind>/<name>", the last in
    ``namespace``); None for any other ``ref``."""
    parts = ref.split("/")
    if ref == "HEAD":
        return ["logs", "HEAD"]
    if len(parts) == 3 and parts[0] == "workspaces" and parts[2] == "HEAD":
        try:
            WorkspaceId(parts[1])
        except ValueError:
            return None
        return ["logs", *parts]
    if len(parts) >= 3 and parts[0] == "refs" and parts[1] in REF_KINDS:
        found = ref_parts(parts[1], "/".join(parts[2:]), namespace)
        return None if found is None else ["logs", *found]
    return None


def entry_kind(root: Path, parts: Sequence[str]) -> int | None:
    """The mode of the entry at ``parts`` below ``root`` (a link is not
    followed); None if it or a directory above it is missing or a file.
    Raises UnsafeEntryError (a link above it)."""
    try:
        with open_dirs(root, parts[:-1]) as fds:
            return entry_mode(fds[-1], parts[-1])
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_file(root: Path, parts: Sequence[str], limit: int | None = None) -> bytes | None:
    """The bytes of the regular file at ``parts`` below ``root``; None if it,
    or a directory above it, is missing (or a file stands where a directory
    should). Raises UnsafeEntryError (a link on the way, or not a regular file)."""
    try:
        with open_dirs(root, parts[:-1]) as fds:
            return read_regular(fds[-1], parts[-1], "/".join(parts), limit)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_tail(root: Path, parts: Sequence[str], size: int) -> bytes | None:
    """The last ``size`` bytes of the regular file at ``parts``; None as :func:`read_file`."""
    try:
        with open_dirs(root, parts[:-1]) as fds:
            fd = open_regular(fds[-1], parts[-1], "/".join(parts))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        end = os.fstat(fd).st_size
        return os.pread(fd, size, max(0, end - size))
    finally:
        os.close(fd)


def write_file(root: Path, parts: Sequence[str], data: bytes) -> None:
    """Replace the file at ``parts`` below ``root`` atomically, making missing
    directories. Raises NotADirectoryError (a file stands where a directory
    should), IsADirectoryError or another OSError (a directory stands where the
    file should), UnsafeEntryError (a link on the way)."""
    with open_dirs(root, parts[:-1], create=True) as fds:
        replace_file(fds[-1], parts[-1], data)


def append_file(root: Path, parts: Sequence[str], line: bytes) -> None:
    """Append ``line`` durably to the file at ``parts`` (made with its
    directories if missing). Raises as :func:`write_file`."""
    with open_dirs(root, parts[:-1], create=True) as fds:
        fd = open_regular(fds[-1], parts[-1], "/".join(parts), os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            append_line_fd(fd, line)
        finally:
            os.close(fd)


def remove_file(root: Path, parts: Sequence[str], keep: int) -> None:
    """Unlink the file at ``parts`` (fsyncing its directory), then remove the
    directories it leaves empty, deepest first, keeping the first ``keep``
    components of ``parts``. Raises FileNotFoundError, UnsafeEntryError."""
    with open_dirs(root, parts[:-1]) as fds:
        os.unlink(parts[-1], dir_fd=fds[-1])
        fsync_fd(fds[-1])
        for i in range(len(parts) - 2, keep - 1, -1):
            try:
                os.rmdir(parts[i], dir_fd=fds[i])
            except OSError:
                break
            fsync_fd(fds[i])


def namespace_entries(root: Path) -> list[str]:
    """The names of the entries of ``refs/ns`` (sorted, found without
    following links; names starting with '.' left out), valid namespace
    names or not. Raises UnsafeEntryError (``refs`` or ``refs/ns`` is a link)."""
    try:
        with open_dirs(root, ["refs", "ns"]) as fds, os.scandir(fds[-1]) as it:
            return sorted(e.name for e in it if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def ref_entries(root: Path, kind: str, namespace: str = "") -> list[str]:
    """The names of every entry below ``refs/<kind>`` of ``namespace``
    (:func:`refs_base`; sorted), found without
    following links: files, links and directories alike; a directory is
    entered only if its name is a valid ref name (that bounds the depth).
    Entries whose names start with '.' (temp files) are left out. Raises
    UnsafeEntryError (``refs`` or ``refs/<kind>`` is a link)."""
    out: list[str] = []
    try:
        with open_dirs(root, [*refs_base(namespace), kind]) as fds:
            _walk(fds[-1], "", out)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(out)


def _walk(dir_fd: int, prefix: str, out: list[str]) -> None:
    with os.scandir(dir_fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for base, is_dir in entries:
        if base.startswith("."):
            continue
        name = prefix + base
        out.append(name)
        if not is_dir or ref_name_problem(name) is not None:
            continue
        try:
            sub = os.open(base, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                continue  # changed meanwhile: reading the entry reports what it is now
            raise
        try:
            if stat.S_ISDIR(os.fstat(sub).st_mode):
                _walk(sub, name + "/", out)
        finally:
            os.close(sub)
