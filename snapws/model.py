"""Domain types: manifest entries, changes and snapshot records.

Paths are ``bytes`` relative to the workspace root (``b"."`` is the root
itself), because file names need not be UTF-8. Imports only :mod:`snapws.ids`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

from snapws.ids import ContentHash, Digest, LayerId, SnapshotId, WorkspaceId

_D = TypeVar("_D", bound=Digest)

ROOT = b"."


class Kind(StrEnum):
    """What a manifest entry is. ``WHITEOUT`` records a deletion."""

    FILE = "f"
    DIR = "d"
    SYMLINK = "l"
    FIFO = "p"
    CHARDEV = "c"
    BLOCKDEV = "b"
    SOCKET = "s"
    WHITEOUT = "w"


_FS_ENCODING = sys.getfilesystemencoding()  # os.fsencode / os.fsdecode, without their calls
_FS_ERRORS = sys.getfilesystemencodeerrors()
_fsdecode = bytes.decode
_fsencode = str.encode
_quote = encode_basestring_ascii  # a JSON string, as json.dumps(ensure_ascii=True) writes it
_KINDS = {k.value: k for k in Kind}


def path_to_text(path: bytes) -> str:
    """Lossless text form of a path (undecodable bytes become lone surrogates)."""
    return os.fsdecode(path)


def text_to_path(text: str) -> bytes:
    """Inverse of :func:`path_to_text`."""
    return os.fsencode(text)


def display_path(path: bytes) -> str:
    """A path as shown to people: git-style C quoting when it has odd bytes."""
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for b in path:
        ch = chr(b)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a layer, as recorded in its manifest.

    ``mode`` holds the permission bits including setuid/setgid/sticky (no type
    bits). ``hash`` and ``size`` are set for regular files, ``target`` for
    symlinks, ``rdev`` (major, minor) for device nodes. ``link`` names the
    first path of the same layer that this regular file is a hardlink of.
    ``opaque`` marks a directory that hides everything below it in older layers.
    """

    path: bytes
    kind: Kind
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    hash: ContentHash | None = None
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    opaque: bool = False
    link: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON object (only fields that are set)."""
        obj: dict[str, Any] = {"p": path_to_text(self.path), "k": self.kind.value}
        if self.kind is Kind.WHITEOUT:
            return obj
        obj.update(m=self.mode, u=self.uid, g=self.gid, t=self.mtime_ns)
        if self.kind is Kind.FILE:
            obj["s"] = self.size
            obj["h"] = self.hash.hex if self.hash else None
        if self.target is not None:
            obj["l"] = path_to_text(self.target)
        if self.rdev is not None:
            obj["r"] = list(self.rdev)
        if self.xattrs:
            obj["x"] = {k: self.xattrs[k].hex() for k in sorted(self.xattrs)}
        if self.opaque:
            obj["o"] = True
        if self.link is not None:
            obj["hl"] = path_to_text(self.link)
        return obj

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Entry:
        """Parse :meth:`to_json` output; raises KeyError/ValueError on bad input."""
        kind = _KINDS.get(obj["k"]) or Kind(obj["k"])
        path = _fsencode(obj["p"], _FS_ENCODING, _FS_ERRORS)
        if kind is Kind.WHITEOUT:
            return cls(path, kind)
        get = obj.get
        h = get("h")
        target = get("l")
        rdev = get("r")
        link = get("hl")
        return cls(
            path,
            kind,
            int(obj["m"]),
            int(obj["u"]),
            int(obj["g"]),
            int(obj["t"]),
            int(get("s", 0)),
            ContentHash(h) if h else None,
            _fsencode(target, _FS_ENCODING, _FS_ERRORS) if target is not None else None,
            (int(rdev[0]), int(rdev[1])) if rdev is not None else None,
            {k: bytes.fromhex(v) for k, v in obj["x"].items()} if "x" in obj else {},
            bool(get("o", False)),
            _fsencode(link, _FS_ENCODING, _FS_ERRORS) if link is not None else None,
        )

    def same_state(self, other: Entry) -> bool:
        """True if a user would call the two the same file: mtime and hardlink
        grouping are ignored (as git does), everything else counts."""
        return self.meta_differences(other) == () and self.content_equal(other)

    def content_equal(self, other: Entry) -> bool:
        """Same kind and same bytes (file content, symlink target or device)."""
        if self.kind is not other.kind:
            return False
        if self.kind is Kind.FILE:
            return self.size == other.size and self.hash == other.hash
        if self.kind is Kind.SYMLINK:
            return self.target == other.target
        if self.kind in (Kind.CHARDEV, Kind.BLOCKDEV):
            return self.rdev == other.rdev
        return True

    def meta_differences(self, other: Entry) -> tuple[str, ...]:
        """Names of the metadata that differ: ``mode``, ``owner``, ``xattrs``."""
        out = []
        if self.mode != other.mode:
            out.append("mode")
        if (self.uid, self.gid) != (other.uid, other.gid):
            out.append("owner")
        if dict(self.xattrs) != dict(other.xattrs):
            out.append("xattrs")
        return tuple(out)


def encode_manifest(entries: Iterable[Entry]) -> bytes:
    """Canonical manifest bytes: entries sorted by path, one JSON object a
    line."""
    lines = [_manifest_line(e) for e in sorted(entries, key=_path_of)]
    return ("\n".join(lines) + "\n").encode("ascii") if lines else b""


def decode_manifest(data: bytes) -> list[Entry]:
    """Parse manifest bytes; raises ValueError on malformed input (naming
    the line). A well-formed manifest is read as one JSON array (one
    ``json.loads``, not one a line)."""
    body = data[:-1] if data.endswith(b"\n") else data
    if not body:
        return []
    try:
        objs = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        if len(objs) == body.count(b"\n") + 1:  # one object a line
            return [Entry.from_json(obj) for obj in objs]
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return _decode_lines(data)  # blank lines, or the error, with its line


def _decode_lines(data: bytes) -> list[Entry]:
    """:func:`decode_manifest`, a line at a time."""
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Entry.from_json(json.loads(line)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"manifest line {n}: {e}") from e
    return out


def _path_of(e: Entry) -> bytes:
    return e.path


def _manifest_line(e: Entry) -> str:
    """An entry's manifest line (no newline): :meth:`Entry.to_json` as
    canonical JSON (sorted keys, no spaces, ASCII), written field by field
    with json's own string quoting: twice as fast as ``json.dumps``, same
    bytes (layer ids hash them)."""
    path = _quote(_fsdecode(e.path, _FS_ENCODING, _FS_ERRORS))
    kind = e.kind
    if kind is Kind.WHITEOUT:
        return f'{{"k":"w","p":{path}}}'
    out = [f'{{"g":{e.gid:d}']
    if kind is Kind.FILE:
        out.append(f',"h":"{e.hash.hex}"' if e.hash else ',"h":null')
    if e.link is not None:
        out.append(',"hl":' + _quote(_fsdecode(e.link, _FS_ENCODING, _FS_ERRORS)))
    out.append(f',"k":"{kind.value}"')
    if e.target is not None:
        out.append(',"l":' + _quote(_fsdecode(e.target, _FS_ENCODING, _FS_ERRORS)))
    out.append(f',"m":{e.mode:d}')
    if e.opaque:
        out.append(',"o":true')
    out.append(',"p":' + path)
    if e.rdev is not None:
        out.append(f',"r":[{e.rdev[0]:d},{e.rdev[1]:d}]')
    if kind is Kind.FILE:
        out.append(f',"s":{e.size:d}')
    out.append(f',"t":{e.mtime_ns:d},"u":{e.uid:d}')
    if e.xattrs:
        x = e.xattrs
        out.append(',"x":{' + ",".join(f'{_quote(k)}:"{x[k].hex()}"' for k in sorted(x)) + "}")
    out.append("}")
    return "".join(out)


def manifest_id(data: bytes) -> LayerId:
    """A layer's id: the XXH3-128 of its canonical manifest bytes."""
    return LayerId(Digest.of(data).hex)


class ChangeType(StrEnum):
    ADDED = "A"
    MODIFIED = "M"
    DELETED = "D"
    TYPE_CHANGED = "T"


@dataclass(frozen=True, slots=True)
class Change:
    """One path that differs between two trees.

    ``what`` lists what changed for MODIFIED: ``content``, ``mode``, ``owner``,
    ``xattrs``, ``target`` (symlinks), ``rdev`` (devices).
    """

    path: bytes
    type: ChangeType
    old: Entry | None
    new: Entry | None
    what: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": path_to_text(self.path),
            "status": self.type.value,
            "what": list(self.what),
            "old": _brief(self.old),
            "new": _brief(self.new),
        }


def _brief(e: Entry | None) -> dict[str, Any] | None:
    if e is None:
        return None
    obj: dict[str, Any] = {"kind": e.kind.name.lower(), "mode": f"{e.mode:04o}"}
    obj.update(uid=e.uid, gid=e.gid)
    if e.kind is Kind.FILE:
        obj.update(size=e.size, hash=e.hash.hex if e.hash else None)
    if e.target is not None:
        obj["target"] = path_to_text(e.target)
    return obj


def classify(path: bytes, old: Entry | None, new: Entry | None) -> Change | None:
    """The change from ``old`` to ``new`` at ``path`` (None: no change).

    ``None`` means absent; whiteouts must be resolved to ``None`` by the caller.
    """
    if old is None and new is None:
        return None
    if old is None:
        return Change(path, ChangeType.ADDED, None, new)
    if new is None:
        return Change(path, ChangeType.DELETED, old, None)
    if old.kind is not new.kind:
        return Change(path, ChangeType.TYPE_CHANGED, old, new, ("type",))
    what = []
    if not old.content_equal(new):
        what.append(
            {Kind.SYMLINK: "target", Kind.CHARDEV: "rdev", Kind.BLOCKDEV: "rdev"}.get(
                old.kind, "content"
            )
        )
    what.extend(old.meta_differences(new))
    if not what:
        return None
    return Change(path, ChangeType.MODIFIED, old, new, tuple(what))


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """An immutable snapshot. Its id hashes every field here; the layer chain
    used to mount it is stored beside it and may be rewritten (flattened)."""

    parents: tuple[SnapshotId, ...]
    layer: LayerId
    message: str
    author: str
    time_ns: int
    tz_offset_min: int = 0

    def canonical(self) -> bytes:
        obj = {
            "parents": [p.hex for p in self.parents],
            "layer": self.layer.hex,
            "message": self.message,
            "author": self.author,
            "time_ns": self.time_ns,
            "tz_offset_min": self.tz_offset_min,
            "version": 1,
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    @property
    def id(self) -> SnapshotId:
        return SnapshotId(Digest.of(self.canonical()).hex)

    @classmethod
    def from_canonical(cls, data: bytes) -> SnapshotRecord:
        """Parse a record, checking every field's type. Raises ValueError."""
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object but {_json_type(obj)}")
        parents = _field(obj, "parents", list)
        for p in parents:
            if not isinstance(p, str):
                raise ValueError(f"a parent is {_json_type(p)}, not an id")
        tz = obj.get("tz_offset_min", 0)
        if not isinstance(tz, int) or isinstance(tz, bool) or not -1440 <= tz <= 1440:
            raise ValueError(f"'tz_offset_min' is not a UTC offset in minutes: {tz!r}")
        time_ns = _field(obj, "time_ns", int)
        if not 0 <= time_ns < 1 << 63:
            raise ValueError(f"'time_ns' is out of range: {time_ns}")
        return cls(
            parents=tuple(SnapshotId(p) for p in parents),
            layer=_id_field(obj, "layer", LayerId),
            message=_field(obj, "message", str),
            author=_field(obj, "author", str),
            time_ns=time_ns,
            tz_offset_min=tz,
        )


@dataclass(frozen=True, slots=True)
class WorkspaceState:
    """A workspace as the store records it.

    ``branch`` is the checked-out branch (None: detached HEAD at ``head``);
    ``upper`` and ``work`` name directories inside the workspace's folder of
    the store; ``path`` is where it is (or should be) mounted; ``backend``
    names the backend that shows it (kernel, rootless, fuse or plain);
    ``namespace`` names the store's branch namespace the workspace's refs
    live in ("": the store's shared root namespace, also of every record
    written before namespaces existed); ``base`` is the snapshot whose chain
    the mount shows below the upperdir while that is not HEAD's (a
    workspace *held* by running programs, changed through its live mount:
    see :mod:`snapws.backends.overlay`), else None.
    """

    id: WorkspaceId
    path: str
    head: SnapshotId
    branch: str | None
    upper: str
    work: str
    backend: str = "kernel"
    namespace: str = ""
    base: SnapshotId | None = None

    @property
    def mounted_head(self) -> SnapshotId:
        """The snapshot whose chain is below the upperdir: ``base`` if the
        workspace is held, else HEAD."""
        return self.base if self.base is not None else self.head

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id.hex,
            "path": self.path,
            "head": self.head.hex,
            "branch": self.branch,
            "upper": self.upper,
            "work": self.work,
            "backend": self.backend,
        }
        if self.namespace:  # the root namespace is written as older records were
            out["namespace"] = self.namespace
        if self.base is not None:
            out["base"] = self.base.hex
        return out

    @classmethod
    def from_json(cls, obj: object) -> WorkspaceState:
        """Parse :meth:`to_json` output, checking every field (types, ids,
        ``path`` absolute, ``upper`` and ``work`` single path components).
        Raises ValueError saying which field is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object but {_json_type(obj)}")
        branch = obj.get("branch")
        if branch is not None and (not isinstance(branch, str) or not branch):
            raise ValueError(f"'branch' is {_json_type(branch)}, not a branch name or null")
        path = _field(obj, "path", str)
        if not path.startswith("/") or "\0" in path:
            raise ValueError(f"'path' is not an absolute path: {path!r}")
        return cls(
            id=_id_field(obj, "id", WorkspaceId),
            path=path,
            head=_id_field(obj, "head", SnapshotId),
            branch=branch,
            upper=dir_name_field(obj, "upper"),
            work=dir_name_field(obj, "work"),
            backend=_field(obj, "backend", str) if "backend" in obj else "kernel",
            namespace=_namespace_field(obj),
            base=_id_field(obj, "base", SnapshotId) if obj.get("base") is not None else None,
        )


#: A branch namespace's name: one path component of at most 100 bytes that
#: is also a valid ref name component (letters, digits, ``.``, ``_``, ``-``).
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def namespace_problem(name: str) -> str | None:
    """Why ``name`` cannot name a branch namespace (None: it can). The root
    namespace ("") is not named."""
    if not NAMESPACE_RE.fullmatch(name):
        return (
            "a namespace is 1 to 100 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )
    if ".." in name or name.endswith((".", ".lock")):
        return "a namespace may not contain '..' or end with '.' or '.lock'"
    return None


def _namespace_field(obj: Mapping[str, Any]) -> str:
    if "namespace" not in obj:
        return ""  # written before namespaces: the shared root namespace
    name: str = _field(obj, "namespace", str)
    if name and namespace_problem(name) is not None:
        raise ValueError(f"'namespace' is not a namespace name: {name[:80]!r}")
    return name


def _json_type(value: object) -> str:
    """How a JSON value is named in error messages."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object"})
    return names.get(type(value), type(value).__name__)


def _field(obj: Mapping[str, Any], key: str, typ: type[Any]) -> Any:
    """``obj[key]``, which must be of type ``typ``; ValueError otherwise."""
    if key not in obj:
        raise ValueError(f"no {key!r} field")
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ValueError(f"{key!r} is {_json_type(value)}, not {_json_type(typ())}")
    return value


def _id_field(obj: Mapping[str, Any], key: str, typ: type[_D]) -> _D:
    text = _field(obj, key, str)
    try:
        return typ(text)
    except ValueError:
        raise ValueError(f"{key!r} is not a 32-digit hex id: {text[:80]!r}") from None


def dir_name_field(obj: Mapping[str, Any], key: str) -> str:
    """``obj[key]``: a single path component (no ``/``, not ``.`` or ``..``,
    no NUL, at most 255 bytes). Raises ValueError."""
    name: str = _field(obj, key, str)
    problem = dir_name_problem(name)
    if problem is not None:
        raise ValueError(f"{key!r} {problem}: {name[:80]!r}")
    return name


def dir_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an entry inside one directory (None: it can)."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return "is not a single path component"
    if len(os.fsencode(name)) > 255:
        return "is longer than 255 bytes"
    return None


@dataclass(frozen=True, slots=True)
class ReflogEntry:
    """One move of a ref: old and new snapshot (None: did not exist)."""

    ref: str
    old: SnapshotId | None
    new: SnapshotId | None
    time_ns: int
    who: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "old": self.old.hex if self.old else None,
            "new": self.new.hex if self.new else None,
            "time_ns": self.time_ns,
            "who": self.who,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, obj: object) -> ReflogEntry:
        """Parse :meth:`to_json` output, checking every field's type (ids of
        32 hex digits or null; ``who`` and ``message`` may be left out).
        Raises ValueError saying which field is wrong: a reader skips such
        an entry, as a torn one (``checkout -`` reads ``message``)."""
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object but {_json_type(obj)}")
        return cls(
            ref=_field(obj, "ref", str),
            old=_id_field(obj, "old", SnapshotId) if obj.get("old") else None,
            new=_id_field(obj, "new", SnapshotId) if obj.get("new") else None,
            time_ns=_field(obj, "time_ns", int),
            who=_field(obj, "who", str) if "who" in obj else "",
            message=_field(obj, "message", str) if "message" in obj else "",
        )
