"""Layers: reading trees into manifest entries, hashing, and comparing chains."""
