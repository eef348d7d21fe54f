"""Rootless workspaces: snapws inside a user + mount namespace.

A user who is not root may mount overlayfs only inside a user namespace of
her own (where she is uid 0) with a mount namespace of its own, and with the
``userxattr`` option (Linux >= 5.11). Such a mount is seen only by the
processes in that namespace, and dies with the last of them. So:

- A rootless workspace is mounted in ONE namespace at a time, recorded in the
  store: ``workspaces/<id>/ns/<pid>`` names the process that made it and the
  inode numbers of its user and mount namespaces.
- Every snapws command on a rootless workspace first moves into that
  namespace (setns(2)) if a process still lives in it (a ``snapws shell`` or
  ``snapws run`` keeps it alive, as does anything they started), else makes a
  new one (unshare(2)) and records it. The mount made there lives as long as
  the namespace: for a lone command, until it exits.
- Choosing happens under the store lock: entering under the shared lock, making
  a namespace under the exclusive lock after looking again; a record is
  removed only when no process is left in its namespace (by its maker at exit,
  under the exclusive lock, or by anyone who finds it dead). So there is never
  more than one live namespace per workspace, and a commit from outside a
  shell freezes, detaches and remounts the very mount the shell sees: an
  upperdir mounted in a live namespace is never renamed.

Everything happens in-process, early (the CLI calls in before any command
work): unshare(CLONE_NEWUSER) and setns into a user namespace need a
single-threaded process. Inside, uid/gid 0 stand for the user: manifests still
record the user's real ids (see :func:`snapws.layers.entries.set_namespace_owner`),
so one tree gets one snapshot id whichever backend commits it.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

from snapws.backends.kernel import probe_mount
from snapws.config import Config
from snapws.errors import SnapwsError, StoreCorruptError, StoreNotFoundError, UnsupportedError
from snapws.layers.entries import set_namespace_owner
from snapws.model import WorkspaceState
from snapws.mounts import mounter
from snapws.store.store import Store, in_initial_user_namespace

#: Set (to the workspace id) in every process inside a snapws namespace; a
#: hint for prompts and scripts, and for refusing to cross into another one.
ENV_NS = "SNAPWS_NS"

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNS = 0x00020000

_libc = ctypes.CDLL(None, use_errno=True)

_USERNS_HINT = (
    "enable unprivileged user namespaces (sysctl user.max_user_namespaces > 0; on "
    "Debian/Ubuntu also kernel.unprivileged_userns_clone=1 and "
    "kernel.apparmor_restrict_unprivileged_userns=0), or use the plain backend "
    "(`snapws init --backend plain DIR`); `snapws doctor` explains"
)


class NamespaceId(NamedTuple):
    """A process's user and mount namespaces, by the inode numbers of their
    /proc/PID/ns links (equal numbers: the same namespace)."""

    user: int
    mnt: int


def namespace_of(pid: int | str = "self") -> NamespaceId | None:
    """The namespaces of process ``pid`` (None: gone, a zombie, or not ours)."""
    try:
        return NamespaceId(
            os.stat(f"/proc/{pid}/ns/user").st_ino, os.stat(f"/proc/{pid}/ns/mnt").st_ino
        )
    except OSError:
        return None


def is_real_root() -> bool:
    """True for root of the host (the initial user namespace)."""
    return os.geteuid() == 0 and in_initial_user_namespace()


def inside_user_namespace() -> bool:
    """True when this process is uid 0 of a user namespace other than the
    host's: where rootless overlay mounts work (the rootless backend's
    precondition for mounting)."""
    return os.geteuid() == 0 and not in_initial_user_namespace()


# ---- the syscalls -------------------------------------------------------------


def _single_threaded() -> None:
    if threading.active_count() != 1:
        raise UnsupportedError(
            "internal: snapws must enter the user namespace before it starts threads",
            hint="please report this bug with the command you ran",
        )


def _write_proc(name: str, text: str) -> None:
    fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unshare() -> None:
    """Make a user namespace (this user is uid/gid 0 there, nobody else is
    mapped) with a mount namespace whose mounts are private.
    Raises UnsupportedError when user namespaces are not allowed."""
    _single_threaded()
    uid, gid = os.getuid(), os.getgid()
    if int(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS)) != 0:
        err = ctypes.get_errno()
        raise UnsupportedError(
            f"cannot make a user namespace: {os.strerror(err)} ({errno.errorcode.get(err, err)})",
            hint=_USERNS_HINT,
        )
    try:
        _write_proc("setgroups", "deny")
        _write_proc("uid_map", f"0 {uid} 1")
        _write_proc("gid_map", f"0 {gid} 1")
    except OSError as e:
        raise UnsupportedError(
            f"cannot map this user into a user namespace: {e.strerror}", hint=_USERNS_HINT
        ) from None
    mounter.make_mounts_private()


def _setns(pid: int, want: NamespaceId) -> bool:
    """Move into the namespaces of ``pid`` if they are still ``want``.
    False if that process is gone (or in other namespaces by now).
    Raises UnsupportedError when the kernel refuses."""
    _single_threaded()
    fds: list[int] = []
    try:
        for kind in ("user", "mnt"):
            try:
                fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return False
        if NamespaceId(os.fstat(fds[0]).st_ino, os.fstat(fds[1]).st_ino) != want:
            return False  # the pid was reused: the descriptors pin what we checked
        for fd, flag, kind in ((fds[0], _CLONE_NEWUSER, "user"), (fds[1], _CLONE_NEWNS, "mount")):
            if int(_libc.setns(fd, flag)) != 0:
                err = ctypes.get_errno()
                raise UnsupportedError(
                    f"cannot enter the {kind} namespace of the rootless workspace "
                    f"(process {pid}): {os.strerror(err)}",
                    hint="run the command as the user who owns the workspace, outside any "
                    "other snapws shell",
                )
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _adopt_owner_map() -> None:
    """Tell the layer code which real ids uid/gid 0 stand for, from this
    namespace's one-line maps (``0 UID 1``)."""
    ids = []
    for name in ("uid_map", "gid_map"):
        try:
            with open(f"/proc/self/{name}", "rb") as f:
                fields = f.read().split()
        except OSError:
            return
        if len(fields) != 3 or fields[0] != b"0" or fields[2] != b"1":
            return
        ids.append(int(fields[1]))
    set_namespace_owner(ids[0], ids[1])


def _our_processes() -> dict[NamespaceId, int]:
    """Namespaces of this user's processes, each with one pid living there."""
    uid = os.getuid()
    out: dict[NamespaceId, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
        except OSError:
            continue
        ns = namespace_of(name)
        if ns is not None:
            out.setdefault(ns, int(name))
    return out


def namespace_shared() -> bool:
    """Whether another process of this user lives in this process's user
    and mount namespaces (a ``snapws shell`` or ``run``, or what they
    started), so that mounts made here outlive this process."""
    mine = namespace_of()
    return mine is not None and mine in _our_processes()


# ---- records in the store -----------------------------------------------------


def _record_ns(rec: dict[str, Any]) -> NamespaceId | None:
    try:
        return NamespaceId(int(rec["user"]), int(rec["mnt"]))
    except (KeyError, TypeError, ValueError):
        return None


def live_namespace(store: Store, state: WorkspaceState) -> tuple[int, NamespaceId] | None:
    """A process living in the workspace's recorded namespace, and that
    namespace; None if none is alive. Records of dead namespaces are removed
    (nobody can enter them again)."""
    scan: dict[NamespaceId, int] | None = None
    found = None
    for pid, rec in store.namespace_records(state.id).items():
        ns = _record_ns(rec)
        if ns is not None and namespace_of(pid) == ns:
            found = found or (pid, ns)
            continue
        if ns is not None:
            if scan is None:
                scan = _our_processes()
            member = scan.get(ns)
            if member is not None:
                found = found or (member, ns)
                continue
        store.remove_namespace_record(state.id, pid)
    return found


def _forget_at_exit(store: Store, state: WorkspaceState, ns: NamespaceId, timeout: float) -> None:
    """Remove this process's namespace record when it exits, unless another
    process lives on in the namespace (a job the shell left running)."""

    def forget() -> None:
        try:
            with store.lock(True, min(timeout, 5.0)):  # housekeeping: never wait long
                if ns not in _our_processes():
                    store.remove_namespace_record(state.id, os.getpid())
        except Exception:  # at exit: a stale record is harmless
            pass

    atexit.register(forget)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return os.environ.get("PWD")


def _restore_cwd(cwd: str | None) -> None:
    """setns(CLONE_NEWNS) moves the process to the namespace's root: go back
    to the same path (there it may be the mounted workspace)."""
    for path in (cwd, "/"):
        if path is None:
            continue
        try:
            os.chdir(path)
            return
        except OSError:
            continue


def ensure_workspace_namespace(store: Store, state: WorkspaceState, config: Config) -> bool:
    """Make this process live in the namespace of the rootless workspace
    ``state``: stay if it already does, enter the live recorded one, or make
    and record a new one. Returns True if it moved.

    Preconditions: ``state.backend == "rootless"``; single-threaded (call it
    before any work). Effects: the process's user and mount namespaces, its
    cwd (same path), ``$SNAPWS_NS``; a record in the store for a new
    namespace, removed at exit if no process is left in it.
    Raises UnsupportedError (run as real root, user namespaces not allowed,
    inside another workspace's namespace), StoreLockedError, MountError."""
    if is_real_root():
        owner = os.stat(store.root).st_uid
        raise UnsupportedError(
            f"{state.path} is a rootless workspace of uid {owner}: its mount lives in that "
            "user's namespace, which root cannot share",
            hint=f"run snapws as that user (e.g. `runuser -u USER -- snapws ...`, uid {owner})",
        )
    mine = namespace_of()
    records = store.namespace_records(state.id)
    if mine is not None and any(_record_ns(r) == mine for r in records.values()):
        _adopt_owner_map()
        os.environ[ENV_NS] = state.id.hex
        return False
    other = os.environ.get(ENV_NS)
    if other and other != state.id.hex and not in_initial_user_namespace():
        raise UnsupportedError(
            f"this process is inside the namespace of another rootless workspace "
            f"({other[:12]}); {state.path} lives in a namespace of its own",
            hint="run the command from outside that `snapws shell`",
        )
    cwd = _cwd()
    moved = False
    with store.lock(False, config.lock_timeout):
        live = live_namespace(store, state)
        if live is not None:
            moved = _setns(*live)
    if not moved:
        with store.lock(True, config.lock_timeout):
            live = live_namespace(store, state)
            if live is not None:
                moved = _setns(*live)
            if not moved:
                _unshare()
                ns = namespace_of()
                assert ns is not None
                store.write_namespace_record(
                    state.id,
                    os.getpid(),
                    {"pid": os.getpid(), "user": ns.user, "mnt": ns.mnt},
                )
                _forget_at_exit(store, state, ns, config.lock_timeout)
                moved = True
    _adopt_owner_map()
    os.environ[ENV_NS] = state.id.hex
    _restore_cwd(cwd)
    return True


def enter_private_namespace(store_root: Path | None = None) -> None:
    """Move into a new user + mount namespace that nobody records: for
    ``snapws init`` of a rootless workspace (the workspace does not exist
    yet; its mount dies with the command). ``store_root``, if it is a store
    already, must be of the "user" form.

    Raises UnsupportedError (real root; a store made by root; user
    namespaces not allowed), MountError."""
    if is_real_root():
        raise UnsupportedError(
            "the rootless backend is for users who are not root",
            hint="as root, use the kernel backend (`--backend kernel`)",
        )
    if store_root is not None:
        try:
            store = Store.open(store_root)
        except (StoreNotFoundError, StoreCorruptError):
            store = None
        if store is not None and store.xattr_form != "user":
            raise UnsupportedError(
                f"the store {store.root} was made by root: its layers keep overlay "
                "attributes in trusted.*, which a rootless mount cannot read",
                hint="give the rootless workspace a store of its own (--store PATH)",
            )
    if inside_user_namespace() and os.environ.get(ENV_NS):
        raise UnsupportedError(
            "cannot make a rootless workspace from inside a `snapws shell`",
            hint="leave the shell (exit), then run `snapws init` again",
        )
    _unshare()
    _adopt_owner_map()


# ---- finding the workspace before entering (no side effects) ------------------


def locate_workspace(
    start: Path, config: Config, store_path: Path | None
) -> tuple[Store, WorkspaceState | None] | None:
    """The store and recorded workspace that contain ``start``, looked up the
    way :func:`snapws.ops.workspace.find_workspace` does, but without mounts
    (outside the namespace there are none) and without recovering anything.
    ``(store, None)``: an interrupted ``init`` of an ancestor of ``start`` is
    journaled in a store of the "user" form (its recovery needs the
    namespace). None: not found (the command reports it)."""
    from snapws.store.location import store_candidates

    real = Path(os.path.realpath(start))
    ancestors = [real, *real.parents]
    explicit = store_path or config.store
    candidates = [explicit] if explicit is not None else store_candidates(ancestors)
    for sp in candidates:
        try:
            store = Store.open(sp)
            states = store.workspaces()
        except (StoreNotFoundError, StoreCorruptError, OSError):
            continue
        by_path = {os.path.realpath(s.path): s for s in states}
        for anc in ancestors:
            st = by_path.get(str(anc))
            if st is not None:
                return store.in_namespace(st.namespace), st
        try:
            j = store.read_journal()
        except StoreCorruptError:
            continue
        if (
            j is not None
            and j.get("op") == "init"
            and store.xattr_form == "user"
            and Path(os.path.realpath(str(j.get("path", "")))) in ancestors
        ):
            return store, None
    return None


def enter_for_workspace(start: Path, config: Config, store_path: Path | None) -> bool:
    """If ``start`` is inside a rootless workspace, move into its namespace
    (:func:`ensure_workspace_namespace`); if it is inside one whose ``init``
    was interrupted, into a private namespace for the recovery. Returns True
    if the process moved. Anything else: nothing happens (the command then
    reports what it finds). Raises what :func:`ensure_workspace_namespace` does."""
    found = locate_workspace(start, config, store_path)
    if found is None:
        return False
    store, state = found
    if state is None:
        if inside_user_namespace() or is_real_root():
            return False
        enter_private_namespace()
        return True
    if state.backend != "rootless":
        return False
    return ensure_workspace_namespace(store, state, config)


# ---- can this machine do it? ----------------------------------------------------


def rootless_unavailable(scratch: Path) -> str | None:
    """Why rootless overlay mounts do not work here for this user (None if
    they do): a child process (a fresh interpreter) makes a user + mount
    namespace and mounts, writes through and removes a tiny overlay with
    ``userxattr`` in a temporary directory in ``scratch`` (an existing
    directory this user may write). The rootless backend's probe. Never raises."""
    import subprocess  # a probe only: start-up stays lean

    code = "import sys; from snapws.backends.userns import probe_child; probe_child(sys.argv[1])"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, os.fspath(scratch)],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot start the probe: {e}"
    said = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return said or (err[-1] if err else f"the probe exited {proc.returncode}")
    return said or None


def probe_child(scratch: str) -> None:
    """The child of :func:`rootless_unavailable`: enter a new user + mount
    namespace, try a test mount in ``scratch``, and write what failed (nothing
    if it worked) on standard output."""
    try:
        _unshare()
        error = probe_mount(Path(scratch), userxattr=True)
    except SnapwsError as e:
        error = e.message
    except OSError as e:
        error = str(e)
    os.write(1, error.encode())
