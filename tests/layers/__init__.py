"""Tests of snapws.layers, and a declarative builder of layer trees in
overlay form shared by them."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class Whiteout:
    """A deletion marker (0/0 character device)."""

    def __repr__(self) -> str:
        return "WH"


WH = Whiteout()


@dataclass(frozen=True)
class Opaque:
    """A directory that hides older layers' content below it."""

    children: Mapping[str, object]


@dataclass(frozen=True)
class Link:
    target: str


class Fifo:
    def __repr__(self) -> str:
        return "FIFO"


FIFO = Fifo()

Spec = Mapping[str, object]


def build(root: Path, spec: Spec) -> Path:
    """Create ``spec`` under ``root``: str = file content, dict = directory,
    Opaque = opaque directory, WH = whiteout, Link = symlink, FIFO = fifo."""
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = root / name
        if isinstance(value, str):
            path.write_text(value)
        elif isinstance(value, Whiteout):
            os.mknod(path, stat.S_IFCHR | 0o600, 0)
        elif isinstance(value, Opaque):
            build(path, value.children)
            os.setxattr(path, "trusted.overlay.opaque", b"y")
        elif isinstance(value, Link):
            os.symlink(value.target, path)
        elif isinstance(value, Fifo):
            os.mkfifo(path)
        elif isinstance(value, Mapping):
            build(path, value)
        else:
            raise TypeError(value)
    return root
