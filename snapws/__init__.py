"""snapws: git-like snapshots of a directory on Linux overlayfs.

The library is usable without the CLI: see :mod:`snapws.ops` for the operations.
"""

__version__ = "0.1.0"
