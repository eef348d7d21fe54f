"""A small ASCII history graph in the manner of ``git log --graph``."""

from __future__ import annotations

from snapws.ids import SnapshotId
from snapws.ops.history import LogEntry


def graph_lines(entries: list[LogEntry], render: dict[SnapshotId, str]) -> list[str]:
    """Lines of the graph; ``render`` maps each id to its one-line text."""
    columns: list[SnapshotId] = []
    out: list[str] = []
    for e in entries:
        if e.id in columns:
            col = columns.index(e.id)
        else:
            columns.append(e.id)
            col = len(columns) - 1
        row = " ".join("*" if i == col else "|" for i in range(len(columns)))
        out.append(f"{row} {render[e.id]}")
        parents = list(e.record.parents)
        if not parents:
            columns.pop(col)
            continue
        first, rest = parents[0], parents[1:]
        if first in columns and columns.index(first) != col:
            columns.pop(col)
            if col > 0 and col <= len(columns):
                out.append(" ".join(["|"] * (col - 1) + ["|/"] + ["/"] * 0).rstrip())
        else:
            columns[col] = first
        inserted = 0
        for p in rest:
            if p not in columns:
                columns.insert(col + 1 + inserted, p)
                inserted += 1
        if inserted:
            out.append(" ".join(["|"] * col + ["|\\"]))
    return out
