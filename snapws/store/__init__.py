"""The store: layers, snapshot records, refs, reflogs, workspaces, journal, lock."""
