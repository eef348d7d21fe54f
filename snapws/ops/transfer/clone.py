"""``snapws clone SOURCE [DIR]`` (and ``init --from SOURCE``): a workspace
started on an image from anywhere.

SOURCE is, in this order: a ``dir:PATH`` remote (an OCI layout directory
used as a remote), an image path (an OCI layout directory or tar, a docker
archive, or skopeo's ``oci:``, ``oci-archive:``, ``docker-archive:``
forms), or a registry reference ``HOST[:PORT]/REPOSITORY[:TAG]`` (as
``snapws remote add`` takes it, plus the tag). A remote SOURCE becomes the
remote ``origin`` of the new store, and its tag the remote-tracking ref
``origin/TAG``, as ``snapws fetch`` records it: ``snapws pull`` works at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snapws.config import Config
from snapws.errors import BadNameError, BadRemoteUrlError, NameExistsError, RemoteNotFoundError
from snapws.ids import SnapshotId
from snapws.model import WorkspaceState
from snapws.ops.transfer.remotes import (
    RemoteEntry,
    TransferSettings,
    get_remote,
    open_remote,
    read_remotes,
)
from snapws.refnames import validate_ref_name
from snapws.remote.url import parse_remote_url
from snapws.store.store import Store

#: The remote a clone records, as git's.
ORIGIN = "origin"

#: The tag a clone takes when SOURCE names none and the remote has several,
#: in this order: the branch snapws pushes by default, then docker's default.
DEFAULT_TAGS = ("main", "latest")

_IMAGE_PREFIXES = ("oci:", "oci-archive:", "docker-archive:")

#: ``(phase, done, total)``: as :data:`snapws.ops.transfer.pull.FetchProgress`.
CloneProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, slots=True)
class CloneSource:
    """A resolved SOURCE: an ``image`` path to import (absolute, transport
    prefix kept), or a ``remote`` to fetch ``tag`` from (None: chosen from
    the remote's tags). ``name`` is the default directory, as git clone
    names it (the repository's or file's last component)."""

    name: str
    image: str | None = None
    remote: RemoteEntry | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class CloneResult:
    store: Store
    state: WorkspaceState
    source: str  # where the snapshot came from, as described to people
    remote: RemoteEntry | None  # origin, for a remote SOURCE
    tag: str | None  # the remote's tag checked out


def resolve_source(
    text: str, cwd: Path, insecure: bool = False, ref: str | None = None
) -> CloneSource:
    """What SOURCE ``text`` names (see the module); relative paths are taken
    from ``cwd``; ``ref`` is the image or tag to take (else a registry
    reference's ``:TAG``). Raises BadRemoteUrlError, saying what was tried."""
    from snapws.oci.imagesource import source_relative_to

    if text.startswith("dir:"):
        spec = parse_remote_url(text, insecure, cwd)
        assert spec.path is not None
        return CloneSource(spec.path.name, remote=RemoteEntry(ORIGIN, spec.url), tag=ref)
    if text.startswith(_IMAGE_PREFIXES) or _looks_like_path(text, cwd):
        image = source_relative_to(text, cwd)
        path_part = image.split(":", 1)[1] if text.startswith(_IMAGE_PREFIXES) else image
        return CloneSource(_path_name(path_part), image=image, tag=ref)
    rest = text.removeprefix("docker://")
    head, _, last = rest.rpartition("/")
    tag = ref
    if head and ":" in last:
        last, _, inline = last.partition(":")
        tag = tag or inline
    try:
        spec = parse_remote_url(f"{head}/{last}" if head else last, insecure)
    except BadRemoteUrlError as e:
        raise BadRemoteUrlError(
            f"{text!r} is no file or directory here, nor a registry reference: {e.message}",
            hint="give an OCI layout or archive path, dir:PATH, or HOST[:PORT]/REPOSITORY[:TAG] "
            "(--insecure for a plain-HTTP registry)",
        ) from None
    name = spec.repository.rsplit("/", 1)[-1]
    return CloneSource(name, remote=RemoteEntry(ORIGIN, spec.url, insecure), tag=tag)


def _looks_like_path(text: str, cwd: Path) -> bool:
    if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
        return True
    return os.path.lexists(cwd / text)


def _path_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path.rsplit(":", 1)[0] if ":" in path else path))
    for suffix in (".tar.gz", ".tgz", ".tar", ".oci"):
        if base.endswith(suffix) and base != suffix:
            return base[: -len(suffix)]
    return base or "image"


def choose_tag(tags: list[str], display: str) -> str:
    """The tag to clone when SOURCE names none: the only one, else the first
    of :data:`DEFAULT_TAGS` there. Raises RemoteNotFoundError naming them."""
    if len(tags) == 1:
        return tags[0]
    for tag in DEFAULT_TAGS:
        if tag in tags:
            return tag
    shown = ", ".join(tags[:10]) + (", ..." if len(tags) > 10 else "")
    raise RemoteNotFoundError(
        f"{display} has {'no tags' if not tags else f'several tags ({shown})'}",
        hint=f"name one: {display}:TAG (or --ref TAG)" if tags else "push something to it first",
    )


def branch_for_tag(tag: str | None, config: Config) -> str:
    """The new branch: named like the tag (as pull names it), if that is a
    valid branch name; else the default branch."""
    if tag is not None:
        try:
            return validate_ref_name("branch", tag)
        except BadNameError:
            pass
    return config.default_branch


def clone(
    path: Path,
    store_root: Path,
    config: Config,
    source: CloneSource,
    who: str,
    branch: str | None = None,
    backend: str | None = None,
    progress: CloneProgress | None = None,
    settings: TransferSettings | None = None,
) -> CloneResult:
    """Make ``path`` (absent or empty) a workspace on ``source``'s snapshot,
    on the new branch ``branch`` (default: named like the remote's tag, else
    the default branch), shown by ``backend`` as for ``snapws init``. A
    remote source is recorded as ``origin`` (an existing ``origin`` must have
    the same URL) with the tracking ref ``origin/TAG``.

    Raises BadPathError, UnsupportedError, NameExistsError, BadNameError,
    BadImageError, RemoteNotFoundError, RemoteError, AuthError, MountError."""
    from snapws.ops.transfer.importing import import_into, start_on_import

    if source.image is not None:
        image = source.image

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress("importing", done, total)

        def obtain_image(store: Store) -> tuple[SnapshotId, str]:
            return import_into(store, image, config, source.tag, report)

        store, state = start_on_import(path, store_root, config, obtain_image, branch, backend)
        return CloneResult(store, state, source.image, None, None)

    entry = source.remote
    assert entry is not None
    tag = source.tag
    if tag is None:
        lister = open_remote(None, entry, push=False, settings=settings)
        try:
            tag = choose_tag(lister.list_tags(), lister.display)
        finally:
            lister.close()
    chosen_tag = tag
    described = f"{entry.url}:{tag}"

    def obtain_remote(store: Store) -> tuple[SnapshotId, str]:
        from snapws.ops.transfer.pull import fetch

        known = read_remotes(store)
        if ORIGIN in known and known[ORIGIN].url != entry.url:
            raise NameExistsError(
                f"the store {store.root} has a remote {ORIGIN} at {known[ORIGIN].url}",
                hint="clone into a directory with a store of its own (--store PATH)",
            )
        result = fetch(store, entry, [chosen_tag], who, settings, progress)
        if ORIGIN not in known:
            from snapws.ops.transfer.remotes import add_remote

            add_remote(store, ORIGIN, entry.url, entry.insecure)
        return result.fetched[0].snapshot, described

    store, state = start_on_import(
        path,
        store_root,
        config,
        obtain_remote,
        branch or branch_for_tag(tag, config),
        backend,
        verb="clone",
    )
    return CloneResult(store, state, described, get_remote(store, ORIGIN), tag)
