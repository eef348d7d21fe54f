"""``snapws init`` of a plain workspace: the directory is copied (hashed
while copied) into the base layer's staging tree and left as it is; what
was copied, with its stats, seeds the index, so the first status reads
nothing again."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from snapws.backends.plain.fsops import apply_meta, create_node, is_root
from snapws.backends.plain.records import VIRTUAL, ScanRecord, entry_tuple, stat_key
from snapws.backends.plain.workentry import WorkRules, as_recorded
from snapws.config import Config
from snapws.layers.entries import join, node_entry, read_node
from snapws.layers.ignore import IgnoreRules, ignored_in_tree
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import HashCache
from snapws.model import ROOT, Entry, Kind, classify


def copy_tree(
    root: bytes, tree: bytes, config: Config, progress: Callable[[int], None] | None
) -> tuple[list[Entry], dict[bytes, ScanRecord]]:
    """Copy the working tree at ``root`` into ``tree`` (hashing files while
    copying); returns the staged tree's manifest entries and the scan
    records of the working tree (what was copied, with its stats)."""
    as_root = is_root()
    # ignored paths stay in the directory, in no layer (a directory of
    # nothing but ignored entries too, as a commit counts it)
    ignored = set(ignored_in_tree(root, IgnoreRules.for_tree(root, config.ignore)))
    hashes = HashCache()
    dirs_meta: list[tuple[Any, bytes]] = []
    seen: dict[bytes, tuple[list[bytes], list[tuple[int, ...]], list[Entry], bool]] = {}
    st_root = os.lstat(root)
    rnode = read_node(ROOT, root, st_root)
    os.mkdir(tree, 0o700)
    dirs_meta.append((rnode, tree))
    seen[VIRTUAL] = ([ROOT], [stat_key(st_root)], [node_entry(rnode, None)], True)
    stack = [ROOT]
    count = 0
    while stack:
        rel = stack.pop()
        src_dir = join(root, rel)
        names: list[bytes] = []
        keys: list[tuple[int, ...]] = []
        works: list[Entry] = []
        full = True  # no ignored entry left out
        with os.scandir(src_dir) as it:
            listing = list(it)
        for de in listing:
            p = de.name if rel == ROOT else rel + b"/" + de.name
            if p in ignored:
                full = False
                continue
            try:
                st = de.stat(follow_symlinks=False)
                node = read_node(p, de.path, st)
                dst = join(tree, p)
                if node.kind is Kind.DIR:
                    os.mkdir(dst, 0o700)
                    dirs_meta.append((node, dst))
                    stack.append(p)
                    digest = None
                else:
                    digest = create_node(node, dst, hashed=True)
                    if digest is not None:
                        hashes.put(dst, digest)
                    apply_meta(node, dst, as_root)
            except FileNotFoundError:
                continue  # removed while we copied: not part of the snapshot
            names.append(de.name)
            keys.append(stat_key(st))
            works.append(node_entry(node, digest))
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(count)
        seen[rel] = (names, keys, works, full)
    for node, dst in reversed(dirs_meta):
        apply_meta(node, dst, as_root)
    entries = entries_of(read_tree(tree), config.hash_threads, known=hashes)
    staged = {e.path: e for e in entries}
    rules = WorkRules.for_workspace(root)
    records: dict[bytes, ScanRecord] = {}
    for rel, (names, keys, works, full) in seen.items():
        dirty = {}
        for name, w in zip(names, works, strict=True):
            e = staged.get(w.path)
            w = as_recorded(w, e, rules)  # as status reads it (owners: her own copies)
            if e is None or classify(w.path, e, w) is not None:
                dirty[name] = entry_tuple(w)  # the copy differs (an xattr it could not take)
        records[rel] = ScanRecord.build(names, keys, dirty, False, full)
    return entries, records
