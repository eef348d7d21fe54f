"""Moving snapshots: export and import, push, pull, fetch and clone, remotes,
the CI cache."""
