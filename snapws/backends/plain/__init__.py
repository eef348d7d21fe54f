"""The plain backend: no mount at all; the workspace is an ordinary directory.

HEAD's tree lives in the store's layers as for every backend (same layers,
same manifests, same snapshot ids); the working directory holds HEAD plus
the uncommitted changes, like a git checkout.

- :mod:`~snapws.backends.plain.index`: the stat cache
  (``<store>/workspaces/<id>/index``): HEAD's entries per directory and what
  the last scan saw (names, size, mtime, ctime, inode, mode, owner), with
  git's racy-timestamp rule; its compact forms (entry tuples, packed stats,
  scan records) are :mod:`~snapws.backends.plain.records`, its file
  :mod:`~snapws.backends.plain.indexfile`;
- :mod:`~snapws.backends.plain.scan`: status, comparing the directory with
  HEAD (only files whose stat changed are hashed), each node read under
  :mod:`~snapws.backends.plain.workentry`'s rules (for a user who is not
  root, the owners her commit can record: :mod:`~snapws.backends.plain.owners`;
  ``diff REV`` reads the directory the same way,
  :mod:`~snapws.backends.plain.workview`), the walk shared among
  processes on big trees (:mod:`~snapws.backends.plain.parallelwalk`);
- :mod:`~snapws.backends.plain.stage`: commit's layer tree, in the form an
  overlay upperdir would have (whiteouts, opaque directories); also used by
  the overlay backends for a held workspace (:mod:`snapws.backends.held`);
- :mod:`~snapws.backends.plain.write`: checkout/reset rewriting only the
  paths that differ (and a held overlay workspace's switch);
- :mod:`~snapws.backends.plain.adopt`: init's copy of the directory;
- :mod:`~snapws.backends.plain.backend`: :class:`PlainBackend`, the
  :class:`~snapws.backends.base.Backend` the one flow of every verb in
  :mod:`snapws.ops` calls.

Nothing here mounts or needs root.
"""
