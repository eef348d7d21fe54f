"""``snapws remote``: the remotes a branch namespace of a store knows
(``<store>/remotes.json`` for the root namespace, ``<store>/ns/<ns>/remotes.json``
for namespace ``<ns>``), and opening one for a transfer.

    {"format": 1, "remotes": {"origin": {"url": "HOST:PORT/REPO", "insecure": false}}}

Remote-tracking refs (what a fetch saw on the remote) live beside branches
and tags as ``refs/remotes/<remote>/<tag>``: ``snapws log origin/main``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapws.errors import (
    DamagedRecordError,
    NameExistsError,
    RemoteNotFoundError,
    SnapwsError,
)
from snapws.remote.base import Remote
from snapws.remote.dirremote import DirRemote
from snapws.remote.http import RetryPolicy
from snapws.remote.registry import DEFAULT_CHUNK, RegistryRemote
from snapws.remote.url import RemoteSpec, parse_remote_url, validate_remote_name
from snapws.store.atomic import write_atomic
from snapws.store.store import Store

FILE = "remotes.json"
FORMAT = 1
DEFAULT_REMOTE = "origin"


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """A configured remote: its name, URL as given, and plain-HTTP flag."""

    name: str
    url: str
    insecure: bool = False

    def spec(self) -> RemoteSpec:
        return parse_remote_url(self.url, self.insecure)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "insecure": self.insecure}


def read_remotes(store: Store) -> dict[str, RemoteEntry]:
    """Every configured remote by name. Raises DamagedRecordError naming the
    file when it does not parse or breaks the format (docs/format.md)."""
    path = store.namespace_dir() / FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise DamagedRecordError(f"remotes file {path} is unreadable: {e}") from e
    problem = _remotes_problem(data)
    if problem is not None:
        raise DamagedRecordError(
            f"remotes file {path} is damaged: {problem}",
            hint=f"fix or move away {path}, then add the remotes again (`snapws remote add`)",
        )
    return {
        name: RemoteEntry(name, v["url"], v.get("insecure", False))
        for name, v in sorted(data["remotes"].items())
    }


def _remotes_problem(data: Any) -> str | None:
    """What is wrong with a parsed remotes file (None: nothing)."""
    if not isinstance(data, dict) or not isinstance(data.get("remotes"), dict):
        return "not an object with a 'remotes' object"
    if data.get("format") != FORMAT:
        return f"unknown format {data.get('format')!r}"
    for name, v in data["remotes"].items():
        try:
            validate_remote_name(name)
        except SnapwsError:
            return f"{name!r} is not a valid remote name"
        if not isinstance(v, dict) or not isinstance(v.get("url"), str):
            return f"remote {name!r} has no URL"
        if not isinstance(v.get("insecure", False), bool):
            return f"remote {name!r}: 'insecure' is not true or false"
    return None


def _write(store: Store, remotes: Mapping[str, RemoteEntry]) -> None:
    data = {"format": FORMAT, "remotes": {n: r.to_json() for n, r in sorted(remotes.items())}}
    store.namespace_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(store.namespace_dir() / FILE, json.dumps(data, indent=1).encode() + b"\n")


def add_remote(
    store: Store, name: str, url: str, insecure: bool = False, cwd: Path | None = None
) -> RemoteEntry:
    """Record remote ``name``. Directory paths are made absolute (from
    ``cwd``). Caller holds the store's exclusive lock. Raises BadNameError,
    BadRemoteUrlError, NameExistsError."""
    validate_remote_name(name)
    spec = parse_remote_url(url, insecure, cwd)
    remotes = read_remotes(store)
    if name in remotes:
        raise NameExistsError(
            f"a remote named {name!r} already exists ({remotes[name].url})",
            hint=f"`snapws remote remove {name}` first, or choose another name",
        )
    entry = RemoteEntry(name, spec.url, insecure)
    _write(store, {**remotes, name: entry})
    return entry


def remove_remote(store: Store, name: str, who: str) -> RemoteEntry:
    """Forget remote ``name`` and its remote-tracking refs. Caller holds the
    store's exclusive lock. Raises RemoteNotFoundError."""
    remotes = read_remotes(store)
    entry = get_remote(store, name, remotes)
    for ref in tracking_refs(store, name):
        store.delete_ref("remotes", f"{name}/{ref}", who, f"remote: {name} removed")
    _write(store, {n: r for n, r in remotes.items() if n != name})
    return entry


def get_remote(
    store: Store, name: str, remotes: Mapping[str, RemoteEntry] | None = None
) -> RemoteEntry:
    """The remote ``name``. Raises RemoteNotFoundError."""
    remotes = read_remotes(store) if remotes is None else remotes
    if name not in remotes:
        known = ", ".join(remotes) or "none yet"
        raise RemoteNotFoundError(
            f"no remote named {name!r} (known: {known})",
            hint="add one with `snapws remote add NAME URL`",
        )
    return remotes[name]


def tracking_refs(store: Store, remote: str) -> dict[str, str]:
    """Tag -> snapshot id hex of ``refs/remotes/<remote>/``."""
    prefix = remote + "/"
    return {
        name[len(prefix) :]: sid.hex
        for name, sid in store.list_refs("remotes").items()
        if name.startswith(prefix)
    }


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """Knobs of a transfer (tests make retries fast and chunks small)."""

    chunk_size: int = DEFAULT_CHUNK
    retry: RetryPolicy | None = None
    timeout: float = 60.0
    env: Mapping[str, str] | None = None


def open_remote(
    store: Store | None,
    entry: RemoteEntry,
    push: bool,
    settings: TransferSettings | None = None,
) -> Remote:
    """A :class:`Remote` for ``entry``. With a ``store``, a registry remote
    mounts blobs from the repositories of the store's other remotes on the
    same registry, and keeps whole downloads (``open_blob``) in the store's
    staging area. Without one (listing or pruning outside any workspace),
    they go to the system's temporary directory. Raises BadRemoteUrlError."""
    settings = settings or TransferSettings()
    spec = entry.spec()
    if spec.kind == "dir":
        assert spec.path is not None
        return DirRemote(spec.path, create=push)
    siblings = []
    for other in read_remotes(store).values() if store is not None else ():
        if other.name == entry.name:
            continue
        o = other.spec()
        if o.kind == "registry" and o.host == spec.host and o.insecure == spec.insecure:
            siblings.append(o.repository)
    return RegistryRemote(
        spec,
        push=push,
        chunk_size=settings.chunk_size,
        retry=settings.retry,
        timeout=settings.timeout,
        mount_from=siblings,
        tmpdir=store.root / "staging" if store is not None else None,
        env=settings.env,
    )
