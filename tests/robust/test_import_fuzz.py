"""An import fuzz corpus built from a valid export.

A small workspace (files, a symlink, a deletion, an opaque directory) is
committed three times and exported; from that layout a corpus of damaged
copies is derived deterministically (seeded): byte flips, truncations,
wrong types, huge and negative numbers and wrong digests in every JSON
document; flipped fields in every tar header of every layer (the checksum
and the descriptors' digests, sizes and diff_ids fixed so that the damage
reaches the tar parser, and a variant with stale digests); wrong media
types; symlinked, directory, device and FIFO blobs; duplicate entries; gzip
bombs. Each copy is imported into a fresh store (a few with ``init
--from``), and:

- the exit code is 16 (or 4, an index made ambiguous), or 0 when the damage
  is harmless: then the store verifies and the snapshot's tree is the
  original's;
- never 70, never a traceback; nothing stays in the store's staging/; the
  source layout and everything outside the case's directory are untouched.

``SNAPWS_FUZZ_CASES=N`` runs about N cases instead of the default ~250
(``SNAPWS_FUZZ_SEED`` changes the seed). Cases run in this process
(tests/conftest.py's run_cli) under an alarm, so a hang fails; FIFO cases run
in a subprocess with a timeout.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from conftest import WorkspaceFactory, _clean_env, run_cli, unmount_all_under
from helpers import State, state_diff, tree_state

from snapws.ids import SnapshotId
from snapws.model import Entry
from snapws.oci import tarformat
from snapws.oci.image import (
    DOCKER_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_ZSTD,
    canonical_json,
)
from snapws.store.store import Store
from tests.oci.ocitools import merged

pytestmark = [pytest.mark.root, pytest.mark.slow]

SEED = int(os.environ.get("SNAPWS_FUZZ_SEED", "13"))
DEFAULT_CASES = 250
WANTED = int(os.environ.get("SNAPWS_FUZZ_CASES", str(DEFAULT_CASES)))
SCALE = max(WANTED, 1) / DEFAULT_CASES
CASE_TIMEOUT = 60  # seconds: a hang fails the case
REFUSED = {16}  # BAD_IMAGE
AMBIGUOUS = 4  # BAD_REVISION: an index listing several images (--ref chooses)

Files = dict[str, bytes]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest[7:]}"


# --------------------------------------------------------------------------- the base image


@dataclass(frozen=True)
class Base:
    """The valid export, in memory, and what importing it must give."""

    oci_layout: bytes
    index: bytes
    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]  # compressed blobs, manifest order
    tars: tuple[bytes, ...]  # their uncompressed tars
    sid: str
    entries: dict[bytes, Entry]  # the snapshot's merged tree
    tree: dict[bytes, State]  # the workspace's tree at export

    def files(self) -> Files:
        out = {"oci-layout": self.oci_layout, "index.json": self.index}
        for blob in (self.manifest, self.config, *self.layers):
            out[blob_name(sha(blob))] = blob
        return out

    def obj(self, which: str) -> Any:
        return json.loads(getattr(self, which))


@pytest.fixture(scope="module")
def base(make_module_workspace: WorkspaceFactory) -> Base:
    ws = make_module_workspace(
        spec={
            "a.txt": "alpha\n",
            "gone": "to be deleted",
            "dir": {"b": "bee", "sub": {"c": "sea" * 100}},
            "keep": {"k": "k"},
        }
    )
    p = ws.path
    (p / "gone").unlink()
    os.symlink("a.txt", p / "link")
    shutil.rmtree(p / "dir")
    (p / "dir").mkdir()  # a replaced directory: opaque in the layer
    (p / "dir" / "new").write_text("replaced")
    ws.commit("delete, symlink, opaque dir")
    (p / "a.txt").write_text("alpha, changed\n")
    (p / "keep" / "k2").write_bytes(bytes(range(256)) * 8)
    os.chmod(p / "keep" / "k2", 0o600)
    sid = ws.commit("third")
    layout = ws.outside / "base-layout"
    ws.run("export", "HEAD", "-o", str(layout))
    index = (layout / "index.json").read_bytes()
    mdigest = json.loads(index)["manifests"][0]["digest"]
    manifest = (layout / blob_name(mdigest)).read_bytes()
    mobj = json.loads(manifest)
    config = (layout / blob_name(mobj["config"]["digest"])).read_bytes()
    layers = tuple((layout / blob_name(d["digest"])).read_bytes() for d in mobj["layers"])
    tars = tuple(gzip.decompress(b) for b in layers)
    assert len(layers) == 3, "init + two commits: three layers"
    assert any(b".wh..wh..opq" in t for t in tars), "no opaque directory in the export"
    assert any(b".wh.gone" in t for t in tars), "no whiteout in the export"
    entries = merged(Store.open(ws.store), SnapshotId(sid))
    return Base(
        (layout / "oci-layout").read_bytes(),
        index,
        manifest,
        config,
        layers,
        tars,
        sid,
        entries,
        tree_state(p),
    )


# --------------------------------------------------------------------------- relinking


def with_index(files: Files, index: bytes) -> Files:
    return {**files, "index.json": index}


def with_manifest(base: Base, files: Files, manifest: bytes, fix: bool = True) -> Files:
    """``manifest`` in place of the base's: named by its own digest and the
    index's descriptor fixed (``fix``), or under the old name."""
    if not fix:
        return {**files, blob_name(sha(base.manifest)): manifest}
    index = base.obj("index")
    index["manifests"][0].update(digest=sha(manifest), size=len(manifest))
    return {**with_index(files, canonical_json(index)), blob_name(sha(manifest)): manifest}


def with_config(base: Base, files: Files, config: bytes, fix: bool = True) -> Files:
    if not fix:
        return {**files, blob_name(sha(base.config)): config}
    m = base.obj("manifest")
    m["config"].update(digest=sha(config), size=len(config))
    return with_manifest(base, {**files, blob_name(sha(config)): config}, canonical_json(m))


def with_layer(base: Base, files: Files, i: int, tar: bytes, blob: bytes, fix: bool) -> Files:
    """Layer ``i`` replaced: with ``fix``, its descriptor's digest and size
    and its diff_id follow (so only the tar parser can tell)."""
    if not fix:
        return {**files, blob_name(sha(base.layers[i])): blob}
    cfg = base.obj("config")
    cfg["rootfs"]["diff_ids"][i] = sha(tar)
    config = canonical_json(cfg)
    m = base.obj("manifest")
    m["config"].update(digest=sha(config), size=len(config))
    m["layers"][i].update(digest=sha(blob), size=len(blob))
    out = {**files, blob_name(sha(blob)): blob, blob_name(sha(config)): config}
    return with_manifest(base, out, canonical_json(m))


def with_doc(base: Base, which: str, data: bytes, fix: bool = True) -> Files:
    """JSON document ``which`` (oci-layout, index, manifest, config) replaced."""
    files = base.files()
    if which == "oci_layout":
        return {**files, "oci-layout": data}
    if which == "index":
        return with_index(files, data)
    if which == "manifest":
        return with_manifest(base, files, data, fix)
    return with_config(base, files, data, fix)


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One damaged copy: ``files`` to write, then ``special`` to run on the
    layout directory (symlinks, FIFOs...). ``how``: import, init (``init
    --from``) or fifo (a subprocess with a timeout)."""

    name: str
    files: Files
    special: Callable[[Path], None] | None = None
    how: str = "import"
    budget: int | None = None  # tarformat.MAX_IMPORT_BYTES for this case
    codes: frozenset[int] = field(default_factory=lambda: frozenset(REFUSED))
    expect: str | None = None  # in stderr, when given (and exit 0 is then wrong)


def flip(data: bytes, at: int, rng: random.Random) -> bytes:
    return data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :]


DOCS = ("oci_layout", "index", "manifest", "config")


def json_flips(base: Base, rng: random.Random) -> Iterator[Case]:
    per_doc = max(2, round(6 * SCALE))
    for which in DOCS:
        data: bytes = getattr(base, which)
        for n in range(per_doc):
            at = rng.randrange(len(data))
            fix = which in ("manifest", "config") and n % 4 != 3
            yield Case(
                f"flip {which}@{at}{'' if fix else ' stale'}",
                with_doc(base, which, flip(data, at, rng), fix),
            )
        for n in range(max(1, round(2 * SCALE))):
            at = rng.randrange(len(data)) if n else 0
            yield Case(f"truncate {which} to {at}", with_doc(base, which, data[:at]))


def json_nesting(base: Base, rng: random.Random) -> Iterator[Case]:
    """JSON nested deeper than a recursive parser goes: a whole document,
    and an annotation value, in every document."""
    deep = b"[" * 200_000 + b"]" * 200_000
    for which in DOCS:
        yield Case(f"nested {which}", with_doc(base, which, deep))
        data: bytes = getattr(base, which)
        at = data.rindex(b"}")
        yield Case(
            f"nested value in {which}", with_doc(base, which, data[:at] + b',"x":' + deep + b"}")
        )
    cfg = base.obj("config")
    cfg["config"]["Labels"]["org.snapws.record"] = deep.decode()
    yield Case("nested record label", with_config(base, base.files(), canonical_json(cfg)))
    blob = deep
    index = base.obj("index")
    index["manifests"][0].update(mediaType=OCI_INDEX, digest=sha(blob), size=len(blob))
    files = {**with_index(base.files(), canonical_json(index)), blob_name(sha(blob)): blob}
    yield Case("nested index blob", files)
    del rng


def json_paths(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from json_paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from json_paths(v, (*path, i))


def replaced(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    cur = obj
    for step in path[:-1]:
        cur = cur[step]
    cur[path[-1]] = value
    return obj


WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, "x", [], {}, [1, "2"], {"a": {}}]


def json_types(base: Base, rng: random.Random) -> Iterator[Case]:
    candidates = []
    for which in DOCS:
        obj = base.obj(which)
        for path in json_paths(obj):
            old = replaced(obj, (), obj) if not path else _at(obj, path)
            for value in WRONG_TYPES:
                if type(value) is not type(old):
                    candidates.append((which, path, value))
    for which, path, value in rng.sample(candidates, min(len(candidates), round(25 * SCALE))):
        data = json.dumps(replaced(base.obj(which), path, value)).encode()
        yield Case(f"type {which}{list(path)}={value!r}", with_doc(base, which, data))


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


HUGE: list[tuple[str, bytes]] = [
    ("2**64", b"18446744073709551616"),
    ("10**30", b"1" + b"0" * 30),
    ("5000 digits", b"9" * 5000),
    ("-1", b"-1"),
    ("-2**63", b"-9223372036854775808"),
    ("1e400", b"1e400"),
    ("NaN", b"NaN"),
    ("-0.0", b"-0.0"),
]


def json_numbers(base: Base, rng: random.Random) -> Iterator[Case]:
    """Huge, negative and non-finite numbers in every size and version field."""
    targets: list[tuple[str, tuple[Any, ...]]] = [
        ("index", ("manifests", 0, "size")),
        ("index", ("schemaVersion",)),
        ("manifest", ("config", "size")),
        ("manifest", ("schemaVersion",)),
        *(("manifest", ("layers", i, "size")) for i in range(len(base.layers))),
    ]
    marker = 7_777_777_777_777
    per = min(len(HUGE), max(1, round(3 * SCALE)))
    for k, (which, path) in enumerate(targets):
        text = json.dumps(replaced(base.obj(which), path, marker)).encode()
        for label, number in (HUGE[(per * k + j) % len(HUGE)] for j in range(per)):
            data = text.replace(str(marker).encode(), number)
            yield Case(f"number {which}{list(path)}={label}", with_doc(base, which, data))
    del rng


def json_digests(base: Base, rng: random.Random) -> Iterator[Case]:
    """Wrong digests in every descriptor: another blob's (with its size and
    without), a digest of nothing, other algorithms and malformed ones."""
    others = [base.manifest, base.config, *base.layers]
    bad = [
        "sha256:" + "0" * 64,
        "sha512:" + "a" * 128,
        "sha256:" + sha(b"")[7:].upper(),
        "sha256:" + "a" * 63,
        "sha256:../../../etc/passwd",
        "sha256:" + "a" * 64 + "/x",
        "",
        "sha256:" + "g" * 64,
    ]
    targets = [("index", ("manifests", 0)), ("manifest", ("config",))]
    targets += [("manifest", ("layers", i)) for i in range(len(base.layers))]
    for which, path in targets:
        obj = base.obj(which)
        for blob in others:
            desc = {**_at(obj, path), "digest": sha(blob), "size": len(blob)}
            data = canonical_json(replaced(obj, path, desc))
            yield Case(
                f"digest {which}{list(path)}->{sha(blob)[7:15]}", with_doc(base, which, data)
            )
            if which == "index":  # the blob named as a nested index (a gzip blob is not JSON)
                for media in (OCI_INDEX, DOCKER_LIST):
                    data = canonical_json(replaced(obj, path, {**desc, "mediaType": media}))
                    yield Case(
                        f"index {media[-25:]} -> {sha(blob)[7:15]}", with_doc(base, which, data)
                    )
        for digest in rng.sample(bad, min(len(bad), max(1, round(2 * SCALE)))):
            data = canonical_json(replaced(obj, path, {**_at(obj, path), "digest": digest}))
            yield Case(f"digest {which}{list(path)}={digest[:20]!r}", with_doc(base, which, data))


MEDIA = [
    OCI_CONFIG,
    OCI_INDEX,
    DOCKER_LIST,
    OCI_LAYER,
    OCI_LAYER_ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.distribution.manifest.v2+json",
    "text/plain",
    "",
]


def media_types(base: Base, rng: random.Random) -> Iterator[Case]:
    targets = [
        ("index", ("manifests", 0, "mediaType")),
        ("index", ("mediaType",)),
        ("manifest", ("mediaType",)),
        ("manifest", ("config", "mediaType")),
        *(("manifest", ("layers", i, "mediaType")) for i in range(len(base.layers))),
    ]
    for which, path in targets:
        for media in rng.sample(MEDIA, min(len(MEDIA), max(1, round(3 * SCALE)))):
            data = canonical_json(replaced(base.obj(which), path, media))
            yield Case(f"media {which}{list(path)}={media!r}", with_doc(base, which, data))


def duplicates(base: Base, rng: random.Random) -> Iterator[Case]:
    # the index lists the image twice (ambiguous), or two images under one name
    index = base.obj("index")
    twice = {**index, "manifests": index["manifests"] * 2}
    yield Case(
        "duplicate index entry", with_index(base.files(), canonical_json(twice)), codes=_amb()
    )
    # duplicate JSON keys: the last one wins in Python; either way no crash
    m = base.manifest.decode()
    yield Case(
        "duplicate manifest key",
        with_manifest(base, base.files(), ('{"layers":[],' + m[1:]).encode()),
    )
    yield Case(
        "duplicate manifest key, bad last",
        with_manifest(base, base.files(), (m[:-1] + ',"layers":{}}').encode()),
    )
    mobj = base.obj("manifest")
    mobj["layers"] = [mobj["layers"][0], *mobj["layers"]]
    cfg = base.obj("config")
    cfg["rootfs"]["diff_ids"] = [cfg["rootfs"]["diff_ids"][0], *cfg["rootfs"]["diff_ids"]]
    config = canonical_json(cfg)
    mobj["config"].update(digest=sha(config), size=len(config))
    yield Case(
        "duplicate layer descriptor",
        with_manifest(base, {**base.files(), blob_name(sha(config)): config}, canonical_json(mobj)),
    )
    # a tar entry given twice
    for i, tar in enumerate(base.tars):
        heads = [h for h in tar_headers(tar) if h.type in b"05"]
        h = rng.choice(heads)
        end = h.end
        start = h.start if h.pax_start is None else h.pax_start
        dup = tar[:end] + tar[start:end] + tar[end:]
        yield Case(
            f"duplicate tar entry layer{i} {h.name!r}",
            with_layer(base, base.files(), i, dup, gzip.compress(dup, mtime=0), True),
        )


def _amb() -> frozenset[int]:
    return frozenset({*REFUSED, AMBIGUOUS})


# ---- tar headers


@dataclass(frozen=True)
class TarHeader:
    start: int  # offset of the header block
    end: int  # offset after its data (padded)
    type: bytes
    name: bytes
    pax_start: int | None  # the PAX header before it, if any


def tar_headers(tar: bytes) -> list[TarHeader]:
    """Every header block of ``tar`` (PAX ones too), in order."""
    out: list[TarHeader] = []
    pos = 0
    pax: int | None = None
    while pos + 512 <= len(tar):
        block = tar[pos : pos + 512]
        if block == b"\0" * 512:
            break
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        end = pos + 512 + (size + 511) // 512 * 512
        kind = block[156:157]
        out.append(TarHeader(pos, end, kind, block[:100].rstrip(b"\0"), pax))
        pax = pos if kind == b"x" else None
        pos = end
    return out


FIELDS = {  # ustar field: (offset, length)
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "chksum": (148, 8),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 6),
    "version": (263, 2),
    "uname": (265, 32),
    "gname": (297, 32),
    "devmajor": (329, 8),
    "devminor": (337, 8),
    "prefix": (345, 155),
}


def with_checksum(block: bytes) -> bytes:
    total = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return block[:148] + b"%06o\0 " % total + block[156:]


def damaged_tar(tar: bytes, h: TarHeader, fname: str, rng: random.Random) -> tuple[bytes, str]:
    """``tar`` with a byte of header ``h``'s field ``fname`` changed (the
    checksum fixed, unless it is the field). Near the field's start most of
    the time: that is where the value is."""
    off, length = FIELDS[fname]
    at = off + (rng.randrange(min(length, 3)) if rng.random() < 0.7 else rng.randrange(length))
    block = tar[h.start : h.start + 512]
    choice = rng.random()
    if choice < 0.5:
        new = block[at] ^ rng.randrange(1, 256)
    elif choice < 0.75:
        new = rng.choice(b"\0 /.7\x80\xff9-x")
    else:
        new = rng.randrange(256)
    block = block[:at] + bytes([new]) + block[at + 1 :]
    if fname != "chksum":
        block = with_checksum(block)
    return tar[: h.start] + block + tar[h.start + 512 :], f"{fname}@{at - off}={new:#04x}"


def tar_flips(base: Base, rng: random.Random, fix: bool) -> Iterator[Case]:
    """Every field of every header of every layer, sampled: each header and
    each field appear at least once by default."""
    combos = [
        (i, h, fname)
        for i, tar in enumerate(base.tars)
        for h in tar_headers(tar)
        for fname in FIELDS
    ]
    heads = [(i, h) for i, tar in enumerate(base.tars) for h in tar_headers(tar)]
    names = list(FIELDS)
    chosen = []
    if fix:  # coverage first: header j gets field j (mod 16), then every field once more
        chosen += [(i, h, names[j % len(names)]) for j, (i, h) in enumerate(heads)]
        chosen += [(*rng.choice(heads), fname) for fname in names]
        want = round(55 * SCALE)
    else:
        want = round(8 * SCALE)
    rest = [c for c in combos if c not in chosen]
    chosen += rng.sample(rest, max(0, min(len(rest), want - len(chosen))))
    for i, h, fname in chosen:
        tar, what = damaged_tar(base.tars[i], h, fname, rng)
        blob = gzip.compress(tar, mtime=0)
        kind = "" if fix else " stale"
        yield Case(
            f"tar{kind} layer{i} {h.name[:40]!r}:{h.type.decode('latin-1')} {what}",
            with_layer(base, base.files(), i, tar, blob, fix),
        )
    if fix:  # PAX records: flip bytes inside their data
        for i, tar in enumerate(base.tars):
            for h in tar_headers(tar):
                if h.type == b"x":
                    at = rng.randrange(h.start + 512, h.end)
                    bad = flip(tar, at, rng)
                    yield Case(
                        f"pax layer{i} @{at - h.start - 512}",
                        with_layer(base, base.files(), i, bad, gzip.compress(bad, mtime=0), True),
                    )


NUMERIC_FIELDS = ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor")
SPECIAL_NUMBERS: dict[str, Callable[[int], bytes]] = {
    "base-256 max": lambda n: b"\x80" + b"\xff" * (n - 1),
    "base-256 -1": lambda n: b"\xff" * n,
    "octal max": lambda n: b"7" * (n - 1) + b"\0",
    "not octal": lambda n: b"9" * (n - 1) + b"\0",
    "spaces": lambda n: b" " * n,
    "no NUL": lambda n: b"1" * n,
}
PAX_VALUES: list[tuple[bytes, bytes]] = [
    (b"uid", b"-1"),
    (b"gid", b"99999999999999999999999"),
    (b"uid", b"0x10"),
    (b"size", b"99999999999999999999999"),
    (b"size", b"-512"),
    (b"size", b""),
    (b"mtime", b"-99999999999999999999.5"),
    (b"mtime", b"1e9"),
    (b"mtime", b"1." + b"9" * 5000),
    (b"path", b""),
    (b"path", b"../../../escaped-here"),
    (b"path", b"/tmp/escaped-here"),
    (b"path", b"a\0b"),
    (b"linkpath", b"/etc/passwd"),
    (b"linkpath", b"../../.."),
    (b"SCHILY.xattr.trusted.overlay.opaque", b"y"),
    (b"SCHILY.xattr.", b"x"),
    (b"SCHILY.xattr.user.big", b"x" * 70000),
    (b"GNU.sparse.major", b"1"),
    (b"hdrcharset", b"BINARY"),
]


def with_field(tar: bytes, h: TarHeader, fname: str, value: bytes) -> bytes:
    off, length = FIELDS[fname]
    block = tar[h.start : h.start + 512]
    block = with_checksum(block[:off] + value[:length].ljust(length, b"\0") + block[off + length :])
    return tar[: h.start] + block + tar[h.start + 512 :]


def with_pax_record(tar: bytes, h: TarHeader, key: bytes, value: bytes) -> bytes:
    """``tar`` with a record added to PAX header ``h`` (its size and checksum fixed)."""
    size = int(tar[h.start + 124 : h.start + 136].rstrip(b"\0 ") or b"0", 8)
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + len(str(len(body)))
    n = len(str(n)) + len(body)
    data = tar[h.start + 512 : h.start + 512 + size] + str(n).encode() + body
    block = tar[h.start : h.start + 512]
    block = with_checksum(block[:124] + b"%011o\0" % len(data) + block[136:])
    return tar[: h.start] + block + data + b"\0" * (-len(data) % 512) + tar[h.end :]


def tar_numbers(base: Base, rng: random.Random) -> Iterator[Case]:
    """Numeric header fields at the edges (GNU base-256, not octal...) and
    hostile PAX records, each in a header of some layer."""
    heads = [(i, h) for i, tar in enumerate(base.tars) for h in tar_headers(tar) if h.type != b"x"]
    per = max(1, round(SCALE))
    values = list(SPECIAL_NUMBERS.items())
    for k, fname in enumerate(NUMERIC_FIELDS):
        for label, make in (values[(3 * k + j) % len(values)] for j in range(3 * per)):
            for i, h in rng.sample(heads, 1):
                tar = with_field(base.tars[i], h, fname, make(FIELDS[fname][1]))
                yield Case(
                    f"number layer{i} {h.name!r} {fname}={label}",
                    with_layer(base, base.files(), i, tar, gzip.compress(tar, mtime=0), True),
                )
    paxed = [(i, h) for i, tar in enumerate(base.tars) for h in tar_headers(tar) if h.type == b"x"]
    for key, value in PAX_VALUES:
        for i, h in rng.sample(paxed, per):
            tar = with_pax_record(base.tars[i], h, key, value)
            yield Case(
                f"pax layer{i} +{key.decode()}={value[:30]!r}",
                with_layer(base, base.files(), i, tar, gzip.compress(tar, mtime=0), True),
            )


# ---- layout entries that are not regular files


def _replace(rel: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def special(layout: Path) -> None:
        target = layout / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        make(target)

    return special


def special_entries(base: Base, rng: random.Random) -> Iterator[Case]:
    names = {
        "oci-layout": "oci-layout",
        "index.json": "index.json",
        "manifest": blob_name(sha(base.manifest)),
        "config": blob_name(sha(base.config)),
        **{f"layer{i}": blob_name(sha(b)) for i, b in enumerate(base.layers)},
    }
    for label, rel in names.items():
        data = base.files()[rel]

        def to_copy(target: Path, data: bytes = data, rel: str = rel) -> None:
            outside = target.parents[len(Path(rel).parts) - 1].parent / f"outside-{target.name}"
            outside.write_bytes(data)
            os.symlink(outside, target)

        yield Case(f"symlink {label} to its bytes outside", base.files(), _replace(rel, to_copy))
        yield Case(
            f"symlink {label} to /etc/passwd",
            base.files(),
            _replace(rel, lambda t: os.symlink("/etc/passwd", t)),
        )
        yield Case(f"directory {label}", base.files(), _replace(rel, lambda t: t.mkdir()))
        yield Case(
            f"device {label}",
            base.files(),
            _replace(rel, lambda t: os.mknod(t, 0o600 | 0o020000, os.makedev(1, 3))),
        )
        yield Case(f"fifo {label}", base.files(), _replace(rel, os.mkfifo), how="fifo")
    for rel in ("blobs", "blobs/sha256"):

        def link_dir(layout: Path, rel: str = rel) -> None:
            real = layout.parent / f"real-{rel.replace('/', '-')}"
            os.rename(layout / rel, real)
            os.symlink(real, layout / rel)

        yield Case(f"symlink {rel}/ to a real copy", base.files(), link_dir)
    del rng


# ---- bombs


def _zero_members(total: int) -> bytes:
    member = gzip.compress(b"\0" * (1 << 20), compresslevel=9, mtime=0)
    return member * (total >> 20)


def bombs(base: Base, rng: random.Random) -> Iterator[Case]:
    del rng
    last = len(base.layers) - 1
    tar = base.tars[last]
    # 256 MiB of zeros after the end of the tar, in ~256 KiB of gzip members
    blob = base.layers[last] + _zero_members(256 << 20)
    padded = tar + b"\0" * (256 << 20)
    yield Case(
        "bomb: zeros after the tar",
        with_layer(base, base.files(), last, padded, blob, True),
        expect="bytes follow the end of the tar",
    )
    # one entry claiming 64 GiB, its data zeros: stops at the budget (8 MiB here)
    head = tarformat.encode_header(
        tarformat.Header(b"big", tarformat.REGULAR, 0o644, size=64 << 30)
    )
    bomb_blob = gzip.compress(head, mtime=0) + _zero_members(16 << 20)
    files = with_layer(base, base.files(), last, head, bomb_blob, True)
    yield Case("bomb: 64 GiB entry, 8 MiB budget", files, budget=8 << 20, expect="bomb")
    # many empty files: past the byte budget (headers count) before the end
    many = b"".join(
        tarformat.encode_header(tarformat.Header(b"f%d" % n, tarformat.REGULAR, 0o644))
        for n in range(40000)
    )
    many_blob = gzip.compress(many, mtime=0)
    files = with_layer(base, base.files(), last, many, many_blob, True)
    yield Case("bomb: 40000 empty files, 4 MiB budget", files, budget=4 << 20, expect="bomb")


# ---- the corpus


GENERATORS: dict[str, Callable[[Base, random.Random], Iterator[Case]]] = {
    "json-flips": json_flips,
    "json-types": json_types,
    "json-nesting": json_nesting,
    "json-numbers": json_numbers,
    "json-digests": json_digests,
    "media-types": media_types,
    "duplicates": duplicates,
    "tar-headers": lambda b, r: tar_flips(b, r, True),
    "tar-headers-stale": lambda b, r: tar_flips(b, r, False),
    "tar-numbers": tar_numbers,
    "layout-entries": special_entries,
    "bombs": bombs,
}


def corpus(base: Base, category: str) -> list[Case]:
    rng = random.Random(f"{SEED}:{category}")
    cases = list(GENERATORS[category](base, rng))
    for n, case in enumerate(cases):  # a few of each go through `init --from`
        if case.how == "import" and n % 25 == 1:
            case.how = "init"
    return cases


# --------------------------------------------------------------------------- running


OUTCOMES: Counter[str] = Counter()  # "exit N" over every case
BY_CATEGORY: Counter[str] = Counter()  # "category: exit N"
REPORT = os.environ.get("SNAPWS_FUZZ_REPORT")  # a file: one line per case


class CaseTimeout(Exception):
    pass


def _alarm(_sig: int, _frame: FrameType | None) -> None:
    raise CaseTimeout(f"the case ran for more than {CASE_TIMEOUT} s")


def write_layout(dest: Path, case: Case) -> None:
    (dest / "blobs" / "sha256").mkdir(parents=True)
    for rel, data in case.files.items():
        (dest / rel).write_bytes(data)
    if case.special is not None:
        case.special(dest)


def listing(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path below ``root``: (mode, size, sha256 of a regular file's bytes)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = b""
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).digest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, digest)
    return out


def run_case(
    case: Case, category: str, where: Path, base: Base, monkeypatch: pytest.MonkeyPatch
) -> str | None:
    """Run one case in ``where`` (a new directory); None if it behaved, else
    what went wrong."""
    layout, store, target = where / "layout", where / "store", where / "target"
    write_layout(layout, case)
    before = listing(where)
    argv: list[str | Path] = ["--store", store, "import", layout]
    if case.how == "init":
        argv = ["--store", store, "init", "--from", layout, target]
    if case.how == "fifo":
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "snapws", *map(str, argv)],
                cwd=where,
                env=_clean_env(None),
                capture_output=True,
                text=True,
                errors="surrogateescape",
                timeout=CASE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return f"hung for {CASE_TIMEOUT} s"
    else:
        with monkeypatch.context() as m:
            if case.budget is not None:
                m.setattr(tarformat, "MAX_IMPORT_BYTES", case.budget)
            old = signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(CASE_TIMEOUT)
            try:
                proc = run_cli(*argv, cwd=where, check=False)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old)
    problems = []
    code = proc.returncode
    OUTCOMES[f"exit {code}"] += 1
    BY_CATEGORY[f"{category}: exit {code}"] += 1
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(f"{code}\t{category}\t{case.name}\n")
    if code not in {0, *case.codes} or (case.expect is not None and code == 0):
        problems.append(f"exit {code}")
    if case.expect is not None and case.expect not in proc.stderr:
        problems.append(f"stderr does not say {case.expect!r}")
    if "Traceback" in proc.stderr or "internal error" in proc.stderr:
        problems.append("a traceback")
    staging = store / "staging"
    if staging.is_dir() and os.listdir(staging):
        problems.append(f"staging/ holds {sorted(os.listdir(staging))}")
    if code == 0 and not problems:
        problems += _check_imported(case, store, target, proc.stdout, base)
    after = listing(where)
    for rel in sorted(set(before) | set(after)):
        if rel.split(os.sep)[0] in ("store", "target"):
            continue
        if before.get(rel) != after.get(rel):
            problems.append(f"{rel} changed: {before.get(rel)} -> {after.get(rel)}")
    if case.how == "init" and code != 0 and target.exists():
        problems.append("a refused init --from left its directory")
    unmount_all_under(where)
    if not problems:
        return None
    return (
        f"{case.name}: {'; '.join(problems)}\n  stdout: {proc.stdout[-500:]!r}\n"
        f"  stderr: {proc.stderr[-600:]}"
    )


def _check_imported(case: Case, store: Path, target: Path, out: str, base: Base) -> list[str]:
    """An import that exited 0: the store verifies and the snapshot is the original's tree."""
    problems = []
    verify = run_cli("--store", store, "verify", cwd=store.parent, check=False)
    if verify.returncode != 0:
        problems.append(f"verify exited {verify.returncode}: {verify.stderr[-500:]}")
    if case.how == "init":
        diff = state_diff(base.tree, tree_state(target))
        if diff:
            problems.append("init --from gave another tree: " + "; ".join(diff[:5]))
        return problems
    got = merged(Store.open(store), SnapshotId(out.strip()))
    if got != base.entries:
        keys = sorted(set(got) | set(base.entries))
        differ = [k for k in keys if got.get(k) != base.entries.get(k)]
        problems.append(f"the imported tree differs at {differ[:5]}")
    return problems


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    print(f"\nimport fuzz: {sum(OUTCOMES.values())} cases, {dict(sorted(OUTCOMES.items()))}")
    print("by category:", dict(sorted(BY_CATEGORY.items())))


@pytest.mark.parametrize("category", list(GENERATORS))
def test_damaged_imports_are_refused_or_harmless(
    base: Base, category: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = {p: sorted(os.listdir(p)) for p in (tmp_path.parent, Path("/"))}
    failures = []
    cases = corpus(base, category)
    assert cases
    for n, case in enumerate(cases):
        where = tmp_path / f"case{n}"
        where.mkdir()
        try:
            problem = run_case(case, category, where, base, monkeypatch)
        finally:
            unmount_all_under(where)
        if problem is not None:
            failures.append(problem)
        shutil.rmtree(where)
    for p, names in outside.items():
        assert sorted(os.listdir(p)) == names, f"{p} changed"
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
