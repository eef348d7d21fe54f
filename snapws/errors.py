"""Errors a user can act on: each class carries its exit code and a hint.

This module imports nothing from the package (layering rule, checked by a test).
The exit-code table is documented in docs/exit-codes.md; keep both in sync
(a test compares them).
"""

from __future__ import annotations

import os
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``snapws`` command."""

    OK = 0
    DIFFERENCES = 1  # diff/status --exit-code found changes (as git)
    USAGE = 2  # bad command line (click's own code)
    NOT_A_WORKSPACE = 3
    BAD_REVISION = 4
    UNCOMMITTED_CHANGES = 5
    BUSY = 6
    LOCKED = 7
    BAD_NAME = 8
    UNSUPPORTED = 9
    MOUNT_FAILED = 10
    STORE_CORRUPT = 11
    BAD_PATH = 12
    CONFIG = 13
    AUTH = 14  # a registry refused or lacked credentials
    REMOTE = 15  # a remote is unreachable, failed, or answered nonsense
    BAD_IMAGE = 16  # an OCI image, layout or layer tar is malformed or hostile
    NO_SPACE = 17  # the store's filesystem is full (ENOSPC) or a quota is reached (EDQUOT)
    STORE_UNWRITABLE = 18  # the store's filesystem is read-only (EROFS) or failing (EIO)
    NOT_MOUNTED = 19  # the workspace's directory does not show the workspace (not mounted)
    INTERNAL = 70
    OUTPUT_FAILED = 74  # writing standard output or error failed (sysexits' EX_IOERR)
    INTERRUPTED = 130


class SnapwsError(Exception):
    """Base of every error snapws raises on purpose.

    ``message`` says what went wrong; ``hint`` says what to do next.
    """

    exit_code: ExitCode = ExitCode.INTERNAL
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class NotAWorkspaceError(SnapwsError):
    exit_code = ExitCode.NOT_A_WORKSPACE
    default_hint = (
        "run the command inside a workspace, pass -C DIR, or create one with `snapws init DIR`"
    )


class StoreNotFoundError(SnapwsError):
    exit_code = ExitCode.NOT_A_WORKSPACE
    default_hint = "pass --store PATH or set SNAPWS_STORE to the store's directory"


class RevisionNotFoundError(SnapwsError):
    exit_code = ExitCode.BAD_REVISION
    default_hint = "`snapws log --all` lists snapshots; `snapws branch` and `snapws tag` list names"


class AmbiguousRevisionError(SnapwsError):
    exit_code = ExitCode.BAD_REVISION
    default_hint = "type more characters of the id"


class UncommittedChangesError(SnapwsError):
    exit_code = ExitCode.UNCOMMITTED_CHANGES
    default_hint = "commit them (`snapws commit -m MSG`) or pass --discard to throw them away"

    def __init__(self, message: str, paths: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.paths = paths


class WorkspaceBusyError(SnapwsError):
    exit_code = ExitCode.BUSY
    default_hint = (
        "close the files (or stop the processes) and run the command again; ignored "
        "files count too (keep a server's log outside the workspace); deleted-open is a "
        "file deleted or replaced (by restore too) that a program still has open, even "
        "only to read: that program must close it or exit; a commit does not wait for them"
    )

    def __init__(
        self, message: str, holders: list[tuple[int, str, str]], hint: str | None = None
    ) -> None:
        super().__init__(message, hint)
        self.holders = holders


class StoreLockedError(SnapwsError):
    exit_code = ExitCode.LOCKED
    default_hint = (
        "another snapws command is using the store; wait for it to finish "
        "(or raise lock_timeout in snapws.toml)"
    )


class BadNameError(SnapwsError):
    exit_code = ExitCode.BAD_NAME
    default_hint = "names follow git's rules: no spaces, '..', '~', '^', ':', '?', '*', '[' or '\\'"


class NameExistsError(SnapwsError):
    exit_code = ExitCode.BAD_NAME
    default_hint = "choose another name, or delete the old one first (-d)"


class UnsupportedError(SnapwsError):
    exit_code = ExitCode.UNSUPPORTED
    default_hint = (
        "run snapws as root on a kernel with overlayfs, with the store on ext4, xfs, "
        "btrfs or tmpfs on the workspace's filesystem (--store PATH)"
    )


class MountError(SnapwsError):
    exit_code = ExitCode.MOUNT_FAILED
    default_hint = "see `dmesg | tail` for the kernel's reason"


class StoreCorruptError(SnapwsError):
    exit_code = ExitCode.STORE_CORRUPT
    default_hint = "restore the store from a backup, or report a bug with the file named above"


class DamagedRecordError(StoreCorruptError):
    """A store record (workspace, snapshot, chain, journal, remotes...) that
    exists but does not parse or breaks the format's rules. The message names
    the file and what is wrong with it."""

    default_hint = (
        "`snapws verify` lists every damaged record and the snapshots affected; "
        "`snapws verify --repair` re-attaches damaged workspace records to their "
        "upperdirs (it never deletes user data) and names what it cannot repair"
    )


class MissingLayerError(StoreCorruptError):
    """A snapshot's chain names a layer whose directory is gone."""

    default_hint = (
        "`snapws verify` lists the snapshots affected; `snapws verify --repair` fetches the "
        "layer back from a remote that has it, else restore the store from a backup"
    )


class VerifyFailedError(StoreCorruptError):
    """``snapws verify`` found damage; its report names every problem."""

    default_hint = (
        "the report names each damaged file, its layer and the snapshots using it; "
        "restore the store (or those layers) from a backup"
    )


class StoreFullError(SnapwsError):
    """The store's filesystem ran out of space (ENOSPC) or quota (EDQUOT)."""

    exit_code = ExitCode.NO_SPACE
    default_hint = (
        "free space on the store's filesystem (`snapws gc` drops unused layers), then run "
        "the command again: nothing was lost, and the next command finishes or rolls back "
        "the interrupted step"
    )


class StoreUnwritableError(SnapwsError):
    """The store's filesystem refuses writes (EROFS) or fails (EIO)."""

    exit_code = ExitCode.STORE_UNWRITABLE
    default_hint = (
        "check the store's filesystem (read-only mount? `dmesg | tail` for I/O errors); "
        "when it is writable again, run the command again: the next command finishes or "
        "rolls back the interrupted step"
    )


class StorePermissionError(StoreUnwritableError):
    """This user may not read or write the store: it belongs to another user
    (a store made by root, used by someone else). :func:`permission_denied`
    builds one from the OS error, naming the owner. Exit 9 (UNSUPPORTED), as
    every refusal for another user's store (:class:`ForeignStoreError`)."""

    exit_code = ExitCode.UNSUPPORTED

    default_hint = (
        "run snapws as the store's owner, or use a store of your own "
        "(--store PATH or SNAPWS_STORE; `snapws init` makes one)"
    )


class PermissionDeniedError(SnapwsError):
    """The OS refused snapws a file it must read or write (EACCES, EPERM)
    outside the store: a workspace file or directory of another user. The
    message names the path and its owner."""

    exit_code = ExitCode.UNSUPPORTED
    default_hint = (
        "run snapws as a user who may read and write that path (its owner), "
        "or change its permissions"
    )


class ForeignStoreError(SnapwsError):
    """A command that changes the store was run by a user (root too) who
    does not own it: a store made by another (non-root) user. Refused
    before anything is written: files it made there would belong to this
    user, and the owner could not remove them later (a gc, a prune). The
    message names the store and its owner; the hint how to run as them."""

    exit_code = ExitCode.UNSUPPORTED
    default_hint = "run the command as the store's owner"


class ForeignFilesError(SnapwsError):
    """This user's store holds files or directories of another user (left by
    a snapws command run as root in it, before such commands were refused)
    that snapws must change or remove: every command that finishes an
    interrupted step fails on them until they are given back. The message
    names the first such path and its owner; the hint the chown to run."""

    exit_code = ExitCode.UNSUPPORTED
    default_hint = "give the store's files back to its owner (chown -R), then run the command again"


class OutputError(SnapwsError):
    """Writing standard output or standard error failed (ENOSPC, EIO...: a
    full disk, /dev/full): no error of the store. A closed pipe is none."""

    exit_code = ExitCode.OUTPUT_FAILED
    default_hint = (
        "free space where the output goes, or send it elsewhere, then run the command "
        "again; this is no error of the store"
    )


class NotMountedError(SnapwsError):
    """The workspace's directory does not show the workspace: it is not
    mounted (git has no such state: a work tree is always there), so its
    status cannot be told from the directory, and what a program reads there
    is not the workspace."""

    exit_code = ExitCode.NOT_MOUNTED
    default_hint = "`snapws mount` mounts it again; uncommitted changes are kept in the store"


class BadPathError(SnapwsError):
    exit_code = ExitCode.BAD_PATH
    default_hint = "paths are relative to the current directory and must lie inside the workspace"


class MissingArgumentError(SnapwsError):
    """A command line that lacks what this situation needs (a revision to
    push outside a workspace): a usage error found only once the store is
    read."""

    exit_code = ExitCode.USAGE
    default_hint = "see the command's --help"


class ConfigError(SnapwsError):
    exit_code = ExitCode.CONFIG
    default_hint = "see snapws.toml.example for the options and their types"


class InvalidOperationError(SnapwsError):
    """A request that contradicts the current state (delete the current branch...)."""

    exit_code = ExitCode.BAD_NAME
    default_hint = "`snapws status` and `snapws branch` show the current state"


class PushRejectedError(InvalidOperationError):
    """A push that would drop snapshots the remote tag names: not a
    fast-forward, a remote snapshot this store does not know, or a
    ``--force-with-lease`` whose expected snapshot is stale."""

    default_hint = (
        "`snapws fetch` the remote, check out its snapshot, re-apply your changes, "
        "commit and push again; or push with --force to replace it"
    )


class LayerRejectedError(SnapwsError):
    """The upperdir holds something snapws cannot record faithfully."""

    exit_code = ExitCode.UNSUPPORTED
    default_hint = (
        "mount workspaces only with snapws (redirect_dir=nofollow,metacopy=off); "
        "`snapws umount` then `snapws mount` fixes a hand-made mount"
    )


class RemoteError(SnapwsError):
    """A remote (registry or directory) is unreachable, failed after retries,
    or answered something snapws cannot use."""

    exit_code = ExitCode.REMOTE
    default_hint = (
        "check the remote's URL (`snapws remote list`) and that the registry is up; "
        "run the command again: what was already sent is not sent twice"
    )


class RemoteNotFoundError(SnapwsError):
    """No remote of that name, or no such tag/repository on the remote."""

    exit_code = ExitCode.BAD_REVISION
    default_hint = "`snapws remote list --json` lists remotes and the tags fetched from them"


class BadRemoteUrlError(SnapwsError):
    exit_code = ExitCode.USAGE
    default_hint = (
        "use HOST[:PORT]/REPOSITORY (or docker://HOST[:PORT]/REPOSITORY) for a registry, "
        "dir:/PATH or oci:/PATH for an OCI layout directory"
    )


class AuthError(SnapwsError):
    """A registry wants credentials we do not have, or refused ours."""

    exit_code = ExitCode.AUTH
    default_hint = (
        "snapws reads credentials from SNAPWS_REGISTRY_USERNAME and SNAPWS_REGISTRY_PASSWORD "
        "(or SNAPWS_REGISTRY_TOKEN), $XDG_CONFIG_HOME/snapws/credentials.toml, "
        "$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json and "
        "~/.docker/config.json (`podman login` / `docker login` write the last ones)"
    )


class BadImageError(SnapwsError):
    """An OCI image, image layout, docker archive or layer tar that snapws
    refuses to import: malformed, damaged, or built to escape the store."""

    exit_code = ExitCode.BAD_IMAGE
    default_hint = (
        "nothing was imported; get the image again from its source "
        "(`skopeo inspect` shows what it holds)"
    )


def environment_error(e: OSError) -> SnapwsError | None:
    """The error to report for an OS error the environment caused (full disk,
    quota, read-only or failing filesystem, a path beyond PATH_MAX, a file
    this user may not access), None for any other."""
    import errno

    if e.errno in (errno.EACCES, errno.EPERM):  # one no entry point wrapped
        return permission_denied(e)
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left" if e.errno == errno.ENOSPC else "disk quota exceeded"
        return StoreFullError(f"{what} on the store's filesystem{where}")
    if e.errno == errno.EROFS:
        return StoreUnwritableError(f"the filesystem is read-only{where}")
    if e.errno == errno.EIO:
        return StoreUnwritableError(f"input/output error{where}")
    if e.errno == errno.ENAMETOOLONG:
        name = os.fsdecode(e.filename) if isinstance(e.filename, bytes | str) else ""
        shown = f" ({name[:60]}...{name[-40:]}, {len(name)} characters)" if name else ""
        return BadPathError(
            f"a path is longer than the system's limit (PATH_MAX, 4096 bytes){shown}",
            hint="snapws reaches deeper paths from directory descriptors, but this one had to "
            "be named whole (given on the command line, or in a walk that does not reach "
            "from descriptors yet): shorten it or move the deeper part; nothing was changed",
        )
    return None


def path_owner(path: str | os.PathLike[str]) -> int | None:
    """The uid owning ``path``, or its nearest ancestor this process can
    stat (a file in a directory it may not search); None if none can be."""
    current = os.path.abspath(path)
    while True:
        try:
            return os.stat(current).st_uid
        except OSError:
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current = parent


def user_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` when no user has that id."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def permission_denied(e: OSError, store: str | os.PathLike[str] | None = None) -> SnapwsError:
    """The error for an OS error EACCES/EPERM on ``e.filename``: a
    :class:`StorePermissionError` when it concerns ``store`` (its root,
    given by the caller that knows it is the store's path), else a
    :class:`PermissionDeniedError`. The message names the path, its owner and
    who runs snapws; for a store of root's, the hint offers sudo."""
    name = os.fsdecode(e.filename) if isinstance(e.filename, bytes | str) else ""
    target = name or (os.fspath(store) if store is not None else "")
    owner = path_owner(target) if target else None
    whose = f", owned by {user_name(owner)}" if owner is not None else ""
    me = user_name(os.geteuid())
    if store is not None:
        message = (
            f"permission denied on the store {os.fspath(store)} "
            f"({target}{whose}; snapws runs as {me})"
        )
        if owner == 0 and os.geteuid() != 0:
            return StorePermissionError(
                message,
                hint="the store is root's: run the command as root (sudo), or use a store "
                "of your own (--store PATH or SNAPWS_STORE; `snapws init` makes one)",
            )
        return StorePermissionError(message)
    if target.startswith("/proc/self/fd/"):  # a descriptor's name: gone with it by now
        target, whose = "", ""
    if not target:
        return PermissionDeniedError(
            f"permission denied ({e.strerror or 'EPERM'}) on a file the OS did not name "
            f"(snapws runs as {me})"
        )
    return PermissionDeniedError(f"permission denied: {target}{whose} (snapws runs as {me})")


class UnfinishedOperationError(SnapwsError):
    """An operation's journal is pending and finishing it fails: every
    command that recovers first fails the same way until the cause is
    removed or the journal is given up. Keeps the exit code of its cause
    (the class's: a cause without one)."""

    exit_code = ExitCode.STORE_CORRUPT
    default_hint = (
        "remove the cause and run the command again; or move the journal out of the store "
        "(nothing is deleted), then `snapws verify` and `snapws verify --repair`"
    )

    def __init__(self, message: str, exit_code: ExitCode, hint: str) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


def unfinished_operation(
    operation: str, since: str, give_up: str, cause: SnapwsError, interrupted: bool = True
) -> UnfinishedOperationError:
    """The error for a journaled ``operation`` (e.g. "reset", "commit"),
    pending ``since`` (a time), that cannot be finished because of
    ``cause`` (``interrupted``: found by a later command's recovery, else
    the command's own): names the operation, the reason and what to do
    next; ``give_up`` says how to abandon it instead."""
    what = (
        f"an interrupted {operation} (pending since {since})"
        if interrupted
        else (f"the {operation}")
    )
    return UnfinishedOperationError(
        f"{what} cannot be finished: {cause.message}",
        cause.exit_code,
        hint=(
            (f"{cause.hint}; " if cause.hint else "")
            + f"every snapws command tries to finish the {operation} first, "
            f"so remove the cause and run any command again. To give the {operation} up "
            f"instead: {give_up}"
        ),
    )


class UnsafePathError(SnapwsError):
    """A path snapws writes beneath a workspace or the store leads through a
    symlink or a non-directory (changed while snapws worked, or planted):
    refused, never followed (see docs/security.md)."""

    exit_code = ExitCode.BAD_PATH
    default_hint = (
        "something else changed the directory while snapws wrote to it; make sure no other "
        "process writes there (a directory replaced by a symlink is never followed) and run "
        "the command again"
    )
