"""A small ASCII history graph in the manner of ``git log --graph``.

Each lane (two characters wide) leads to the snapshot it expects next. After
a node row the node's lane leads to its first parent; lanes that now lead to
the same snapshot are joined (``|/``), and lanes right of a lane that ended
shift left, so that every edge is drawn.
"""

from __future__ import annotations

from snapws.ids import SnapshotId
from snapws.ops.history.log import LogEntry


def _transition(moves: list[tuple[int, int]]) -> str:
    """One connector line: each (from lane, to lane) moves at most one lane."""
    width = 2 * max(max(s, d) for s, d in moves) + 2
    chars = [" "] * width
    for src, dst in moves:
        if dst == src:
            chars[2 * src] = "|"
        elif dst == src - 1:
            chars[2 * src - 1] = "/"
        else:
            chars[2 * src + 1] = "\\"
    return "".join(chars).rstrip()


def graph_lines(entries: list[LogEntry], render: dict[SnapshotId, str]) -> list[str]:
    """Lines of the graph; ``render`` maps each id to its one-line text."""
    lanes: list[SnapshotId] = []
    out: list[str] = []
    for e in entries:
        if e.id in lanes:
            col = lanes.index(e.id)
        else:
            lanes.append(e.id)
            col = len(lanes) - 1
        row = " ".join("*" if i == col else "|" for i in range(len(lanes)))
        out.append(f"{row} {render[e.id]}")
        parents = [p for p in e.record.parents if p not in e.forgotten]
        if not parents:
            lanes.pop(col)
            if col < len(lanes):
                moves = [(i, i) for i in range(col)]
                moves += [(i + 1, i) for i in range(col, len(lanes))]
                out.append(_transition(moves))
            continue
        lanes[col] = parents[0]
        for p in parents[1:]:
            if p not in lanes:
                lanes.append(p)  # merge parents get a lane at the right
        while True:
            dup = next((i for i in range(1, len(lanes)) if lanes[i] == lanes[i - 1]), None)
            if dup is None:
                break
            moves = [(i, i) for i in range(dup)] + [(i, i - 1) for i in range(dup, len(lanes))]
            out.append(_transition(moves))
            lanes.pop(dup)
    return out
