"""``snapws cache``: a CI build-tree cache in a registry, with the semantics
of GitHub's actions/cache.

An entry is a snapshot pushed as an OCI image under a tag derived from its
key; its manifest carries the full key and the save time, so keys of any
length and alphabet work and entries can be listed, matched by prefix and
aged out (:mod:`snapws.ops.transfer.cache.keys`).

- save: the directory becomes a snapshot (the workspace's changes are
  committed; a plain directory is made a workspace, its content the base
  layer) and is pushed. Blobs the registry holds are not sent: a save after
  a restore uploads the new top layer only. Saving an existing key replaces
  the entry (the old manifest is deleted) instead of failing.
- restore: the entry whose key is KEY (exact hit), else, for the first
  restore key that some entry's key starts with, the newest such entry
  (prefix hit), else a miss. On a hit the image is imported (only layers the
  store lacks download) and the directory shows it.
- list and prune: entries with sizes and times; prune deletes the manifests
  of entries saved before a cut-off. Registries do not evict, and deleting a
  manifest frees no blob: the registry's ``garbage-collect`` does.

Compute, then act: a restore refuses (uncommitted changes, a non-empty
directory) before it downloads; the lookups only read the remote.

One module per verb: :mod:`~snapws.ops.transfer.cache.save`,
:mod:`~snapws.ops.transfer.cache.restore`, :mod:`~snapws.ops.transfer.cache.listing` and
:mod:`~snapws.ops.transfer.cache.prune`; what they share (the settings, the remote,
the directory and store a command acts on) is :mod:`~snapws.ops.transfer.cache.context`;
keys, tags and entries are :mod:`~snapws.ops.transfer.cache.keys`.
"""
