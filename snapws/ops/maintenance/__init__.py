"""Keeping the store: gc, prune, flatten and compaction, verify and repair,
doctor, du."""
