"""Keys, tags and entries of the CI cache (:mod:`snapws.ops.transfer.cache`).

A cache key is any printable text of up to 512 characters. Its registry
tag (:func:`cache_tag`) is the key itself when the key is a valid tag, else
a sanitised form plus 12 hex digits of the key's sha256; the manifest
carries the full key (``org.snapws.cache.key``) and the save time
(``org.opencontainers.image.created``). Matching follows actions/cache
(:func:`choose_entry`). Everything here is pure but :func:`scan_entries` and
:func:`find_entry`, which only read a remote.
"""

from __future__ import annotations

import calendar
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from snapws.errors import BadImageError, BadNameError, BadPathError
from snapws.ids import BlobDigest
from snapws.oci.image import LABEL_SNAPSHOT, Image, canonical_json, parse_manifest
from snapws.remote.base import Manifest, Remote

ANNOTATION_KEY = "org.snapws.cache.key"
ANNOTATION_CREATED = "org.opencontainers.image.created"
MAX_KEY = 512  # as actions/cache
MAX_TAG = 128
TAG_HASH_CHARS = 12
KEY_FILES_HASH_CHARS = 16

_NOT_TAG_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_NS = 1_000_000_000


# ---- keys and tags (pure) -----------------------------------------------------------


def check_key(key: str) -> str:
    """``key`` if it can name a cache entry: 1 to 512 characters, none of
    them control characters. Raises BadNameError."""
    if not key:
        raise BadNameError("empty cache key", hint="give a key such as linux-build-v1")
    if len(key) > MAX_KEY:
        raise BadNameError(
            f"cache key of {len(key)} characters (at most {MAX_KEY})",
            hint="shorten it; --key-from adds a short hash of files instead of their names",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise BadNameError(
            f"cache key {key!r} holds control characters", hint="use printable characters"
        )
    return key


def _sanitise(text: str) -> str:
    """Every character a tag cannot hold becomes ``-``; a leading ``.`` or
    ``-`` becomes ``_``. Maps prefixes to prefixes."""
    out = _NOT_TAG_CHAR.sub("-", text)
    return "_" + out[1:] if out[:1] in (".", "-") else out


def cache_tag(key: str) -> str:
    """The registry tag of cache key ``key``: the key itself when it is a
    valid tag (``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``), else its sanitised
    form, cut to fit, plus ``-`` and 12 hex digits of the key's sha256.
    Raises BadNameError for a key :func:`check_key` refuses."""
    check_key(key)
    clean = _sanitise(key)
    if clean == key and len(key) <= MAX_TAG:
        return key
    suffix = "-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:TAG_HASH_CHARS]
    return clean[: MAX_TAG - len(suffix)] + suffix


def tag_may_match(tag: str, prefix: str) -> bool:
    """False when no key starting with ``prefix`` can have the tag ``tag``
    (so its manifest need not be read); True otherwise."""
    if not prefix:
        return True
    return tag.startswith(_sanitise(prefix)[: MAX_TAG - 1 - TAG_HASH_CHARS])


def key_from_files(key: str, patterns: Sequence[str], cwd: Path) -> str:
    """``KEY-HASH``: 16 hex digits of a sha256 over the files ``patterns``
    match (globs, ``**`` spans directories; relative to ``cwd``), in sorted
    path order, as actions' ``hashFiles``: the sha256 of each file's sha256,
    so names do not count, contents do. Raises BadPathError when a pattern
    matches no regular file or a file cannot be read, BadNameError when the
    key grows too long."""
    files: set[str] = set()
    for pattern in patterns:
        base = pattern if os.path.isabs(pattern) else os.path.join(cwd, pattern)
        hits = {os.path.normpath(p) for p in glob.glob(base, recursive=True) if os.path.isfile(p)}
        if not hits:
            raise BadPathError(
                f"--key-from {pattern}: no such file",
                hint="name files (or globs such as '**/package-lock.json') relative to "
                "the current directory",
            )
        files |= hits
    outer = hashlib.sha256()
    for name in sorted(files):
        inner = hashlib.sha256()
        try:
            with open(name, "rb") as f:
                while block := f.read(1 << 20):
                    inner.update(block)
        except OSError as e:
            raise BadPathError(f"--key-from: cannot read {name}: {e.strerror}") from e
        outer.update(inner.digest())
    return check_key(f"{key}-{outer.hexdigest()[:KEY_FILES_HASH_CHARS]}")


def format_time(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds when there are any."""
    sec, frac = divmod(ns, _NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def parse_time(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time; None if it is not one."""
    m = _RFC3339.match(text.strip())
    if m is None:
        return None
    try:
        sec = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        sec -= sign * (int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
    return sec * _NS + int((m.group(2) or "0").ljust(9, "0"))


# ---- entries ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cache entry on a remote: key, tag, manifest digest, save time
    (None: the manifest carries none), the bytes of its blobs (layers and
    config, shared blobs counted in every entry) and its layer count."""

    key: str
    tag: str
    digest: BlobDigest
    created_ns: int | None
    size: int
    layers: int
    snapshot: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "tag": self.tag,
            "manifest": str(self.digest),
            "created": format_time(self.created_ns) if self.created_ns is not None else None,
            "size": self.size,
            "layers": self.layers,
            "snapshot": self.snapshot,
        }


def entry_of(tag: str, manifest: Manifest) -> CacheEntry | None:
    """The cache entry tagged ``tag`` (None: that image is no cache entry)."""
    try:
        parsed = parse_manifest(manifest.data)
    except BadImageError:
        return None
    key = parsed.annotations.get(ANNOTATION_KEY)
    if not key:
        return None
    created = parsed.annotations.get(ANNOTATION_CREATED)
    size = parsed.config.size + sum(d.size for d in parsed.layers)
    return CacheEntry(
        key,
        tag,
        manifest.digest,
        parse_time(created) if created else None,
        size,
        len(parsed.layers),
        parsed.annotations.get(LABEL_SNAPSHOT),
    )


def _newest(entries: Sequence[CacheEntry]) -> CacheEntry:
    return max(entries, key=lambda e: (e.created_ns or 0, e.key))


def choose_entry(
    key: str, restore_keys: Sequence[str], entries: Sequence[CacheEntry]
) -> tuple[str, CacheEntry | None, str | None]:
    """actions/cache's choice (pure): ``("exact", entry, None)`` for the
    entry whose key is ``key``; else ``("prefix", entry, restore_key)`` for
    the newest entry whose key starts with the first restore key that any
    entry's key starts with; else ``("miss", None, None)``."""
    exact = [e for e in entries if e.key == key]
    if exact:
        return "exact", _newest(exact), None
    for prefix in restore_keys:
        hits = [e for e in entries if e.key.startswith(prefix)]
        if hits:
            return "prefix", _newest(hits), prefix
    return "miss", None, None


def scan_entries(
    remote: Remote, prefixes: Sequence[str] | None = None
) -> list[tuple[CacheEntry, Manifest]]:
    """Every cache entry of ``remote`` (with ``prefixes``: only those whose
    key may start with one of them), sorted by key. Reads one manifest per
    candidate tag. Raises RemoteError, AuthError."""
    out = []
    for tag in remote.list_tags():
        if prefixes is not None and not any(tag_may_match(tag, p) for p in prefixes):
            continue
        manifest = remote.get_manifest(tag)
        if manifest is None:
            continue  # deleted meanwhile
        entry = entry_of(tag, manifest)
        if entry is not None:
            out.append((entry, manifest))
    return sorted(out, key=lambda pair: (pair[0].key, pair[0].tag))


@dataclass(frozen=True, slots=True)
class CacheMatch:
    """What a lookup found: ``hit`` is exact, prefix or miss."""

    key: str
    hit: str
    entry: CacheEntry | None
    restore_key: str | None
    manifest: Manifest | None

    @property
    def cache_hit(self) -> bool:
        """True only for an exact hit (actions/cache's ``cache-hit`` output)."""
        return self.hit == "exact"


def find_entry(remote: Remote, key: str, restore_keys: Sequence[str]) -> CacheMatch:
    """Look ``key`` up (one manifest read), then the restore keys in order
    (one tag list and a manifest read per tag that may match). Raises
    RemoteError, AuthError."""
    manifest = remote.get_manifest(cache_tag(key))
    if manifest is not None:
        entry = entry_of(cache_tag(key), manifest)
        if entry is not None and entry.key == key:
            return CacheMatch(key, "exact", entry, None, manifest)
    if not restore_keys:
        return CacheMatch(key, "miss", None, None, None)
    found = scan_entries(remote, list(restore_keys))
    hit, entry, prefix = choose_entry(key, restore_keys, [e for e, _ in found])
    if entry is None:
        return CacheMatch(key, "miss", None, None, None)
    chosen = next(m for e, m in found if e is entry)
    return CacheMatch(key, hit, entry, prefix, chosen)


def annotate(image: Image, key: str, created_ns: int) -> Image:
    """``image`` with the cache key and save time in its manifest's
    annotations (a new manifest digest; the blobs are the same)."""
    obj = json.loads(image.manifest)
    ann = dict(obj.get("annotations") or {})
    ann[ANNOTATION_KEY] = key
    ann[ANNOTATION_CREATED] = format_time(created_ns)
    obj["annotations"] = ann
    data = canonical_json(obj)
    return replace(image, manifest=data, manifest_digest=BlobDigest.of(data))


def plan_cache_prune(
    entries: Sequence[CacheEntry], cutoff_ns: int
) -> tuple[list[CacheEntry], list[CacheEntry], list[CacheEntry]]:
    """(saved before ``cutoff_ns``, the others, those without a save time)."""
    old = [e for e in entries if e.created_ns is not None and e.created_ns < cutoff_ns]
    undated = [e for e in entries if e.created_ns is None]
    kept = [e for e in entries if e not in old and e not in undated]
    return old, kept, undated
