"""Where a store is by default, and where to look for one (no I/O but stats).

A new workspace's default store is its user's, on the workspace's
filesystem, away from the workspace's directory, where a sibling workspace,
a venv named like it or ``git clean`` of an enclosing work tree would take
it (docs/guide.md, "Where the store lives"):

1. ``$XDG_DATA_HOME/snapws`` (``~/.local/share/snapws``; root:
   ``/var/lib/snapws``) when that is on the workspace's filesystem;
2. else ``<top>/.snapws-<uid>`` at the top of that filesystem, as the
   freedesktop trash spec keeps ``$topdir/.Trash-$uid``;
3. else (the top is not this user's to write) ``.snapws`` beside the
   workspace, the default of earlier versions, which discovery still finds.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

#: The store's name beside the workspace: the default before per-user stores
#: (still found by every command, never made by default any more).
STORE_DIRNAME = ".snapws"
#: Root's per-user store when ``XDG_DATA_HOME`` is not set (podman's is
#: /var/lib/containers).
ROOT_DATA_STORE = Path("/var/lib/snapws")


def host_uid() -> int:
    """This process's user id as the host sees it: inside a user namespace
    (a rootless workspace's, where the user is uid 0) the id it maps to."""
    uid = os.geteuid()
    try:
        with open("/proc/self/uid_map", "rb") as f:
            lines = [line.split() for line in f.read().splitlines()]
    except OSError:
        return uid
    for fields in lines:
        if len(fields) == 3 and all(x.isdigit() for x in fields):
            inside, outside, count = (int(x) for x in fields)
            if inside <= uid < inside + count:
                return outside + uid - inside
    return uid


def user_data_store(env: Mapping[str, str] | None = None) -> Path:
    """This user's store in its data directory: ``$XDG_DATA_HOME/snapws``
    when that variable is set to an absolute path, else
    ``/var/lib/snapws`` for root (the host's) and ``~/.local/share/snapws``
    for others (also inside a rootless workspace's user namespace)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg.startswith("/"):
        return Path(xdg) / "snapws"
    if host_uid() == 0:
        return ROOT_DATA_STORE
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "share" / "snapws"


def topdir_store_name() -> str:
    """The name of this user's store at the top of a filesystem:
    ``.snapws-<uid>`` (the host's uid), as the freedesktop trash spec's
    ``.Trash-<uid>``."""
    return f".snapws-{host_uid()}"


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _device(path: Path) -> int:
    return os.stat(_existing(path)).st_dev


def filesystem_top(path: Path) -> Path:
    """The top directory of the filesystem ``path`` (or its nearest existing
    ancestor) is on: the highest ancestor on the same device."""
    here = Path(os.path.realpath(_existing(path)))
    dev = os.stat(here).st_dev
    while here != here.parent and os.stat(here.parent).st_dev == dev:
        here = here.parent
    return here


def private_dir_problem(path: Path) -> str | None:
    """Why the existing per-user store directory ``path`` must not be used
    (a link, not a directory, another user's, writable by group or others:
    whoever can rename its entries can change what a workspace shows); None
    if it is fine or missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {st.st_mode & 0o7777:o})"
    return None


def default_store_for(workspace: Path, env: Mapping[str, str] | None = None) -> Path:
    """The default store of a new workspace at ``workspace``: a per-user store
    on the workspace's filesystem, away from its parent directory (where a
    venv, ``git clean`` or a sibling could take it).

    :func:`user_data_store` if that is on the workspace's filesystem and not
    inside the workspace; else ``<top>/.snapws-<uid>`` at the top of that
    filesystem (:func:`filesystem_top`) if it exists or the top is writable;
    else (a filesystem whose top this user cannot write) ``.snapws`` beside
    the workspace. Computes only: nothing is made (see :func:`resolve_store`)."""
    workspace = Path(os.path.abspath(workspace))
    where = workspace.parent  # the workspace itself may be a mount (its own device)
    data = user_data_store(env)
    inside = data == workspace or workspace in data.parents
    if not inside and _device(data) == _device(where):
        return data
    top = filesystem_top(where)
    topdir = top / topdir_store_name()
    if os.path.lexists(topdir) or os.access(top, os.W_OK):
        return topdir
    return workspace.parent / STORE_DIRNAME


def store_candidates(ancestors: list[Path]) -> list[Path]:
    """Where the store of a workspace at one of ``ancestors`` (a path and
    its parents, deepest first) may be when none is named: for each, the
    default a new workspace there gets (:func:`default_store_for`) and the
    older default ``.snapws`` beside it; each once, unsafe per-user
    directories (:func:`private_dir_problem`) left out."""
    out: list[Path] = []
    for anc in ancestors:
        if anc == anc.parent:
            continue
        try:
            new = default_store_for(anc)
        except OSError:
            new = None
        for cand in (new, anc.parent / STORE_DIRNAME):
            if cand is None or cand in out:
                continue
            if cand.name.startswith(".snapws-") and private_dir_problem(cand) is not None:
                continue
            out.append(cand)
    return out


def other_user_stores(uid: int, ancestors: list[Path]) -> list[Path]:
    """Where the default store of user ``uid`` (another user) may be for a
    workspace at one of ``ancestors``: in that user's home
    (``~/.local/share/snapws``, from the password database, and in each
    ancestor that user owns, which may be its ``$HOME``) and at the top of
    the filesystem (``.snapws-UID``). Computes only (stats)."""
    import pwd

    homes: list[Path] = []
    with contextlib.suppress(KeyError):
        homes.append(Path(pwd.getpwuid(uid).pw_dir))
    for anc in ancestors:
        try:
            if os.stat(anc).st_uid == uid and anc not in homes:
                homes.append(anc)
        except OSError:
            continue
    out = [h / ".local" / "share" / "snapws" for h in homes]
    if ancestors:
        with contextlib.suppress(OSError):
            out.append(filesystem_top(ancestors[0]) / f".snapws-{uid}")
    return out
