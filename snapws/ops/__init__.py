"""Operations: one function per user-visible verb, for every backend. They
return values or raise :class:`snapws.errors.SnapwsError`; they never print
or exit. Four concerns:

- :mod:`snapws.ops.worktree`: the working-tree verbs (init, commit,
  checkout and reset, restore, status and diff, eject, mount, shell);
- :mod:`snapws.ops.maintenance`: keeping the store (gc, prune, flatten and
  compaction, verify and repair, doctor, du);
- :mod:`snapws.ops.history`: log, refs, revisions, fast-forward checks;
- :mod:`snapws.ops.transfer`: export and import, push, pull, fetch and
  clone, remotes, the CI cache.

What they share sits here: finding a workspace and its store
(:mod:`~snapws.ops.workspace`), opening it locked (:mod:`~snapws.ops.session`),
the typed journals (:mod:`~snapws.ops.journals`) and finishing an
interrupted operation (:mod:`~snapws.ops.recovery`).
"""
