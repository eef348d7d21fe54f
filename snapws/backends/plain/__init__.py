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
  :mod:`~snapws.backends.plain.workentry`'s rules, the walk shared among
  processes on big trees (:mod:`~snapws.backends.plain.parallelwalk`);
- :mod:`~snapws.backends.plain.stage`: commit's layer tree, in the form an
  overlay upperdir would have (whiteouts, opaque directories);
- :mod:`~snapws.backends.plain.write`: checkout/reset/restore rewriting only
  the paths that differ;
- :mod:`~snapws.backends.plain.ops`: the verbs (init, status/diff, commit,
  checkout, reset, restore) and their journaled finish steps.

Nothing here mounts or needs root.
"""
