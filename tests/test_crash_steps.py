"""One crash-injection list for the whole library (snapws.crash.STEPS): every
named step in the code is listed, every listed step is in the code, and the
docs list them all."""

from __future__ import annotations

import re
from pathlib import Path

from snapws.crash import COUNTED_STEPS, STEPS, steps_of

ROOT = Path(__file__).resolve().parent.parent
CALL = re.compile(r'(?:crashpoint\(\s*|crash_step=)"([^"]+)"')
COUNTED = re.compile(r'_crash_hook\(\s*"([^"]+)"')


def _in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "snapws").rglob("*.py"):
        text = path.read_text()
        found.update(CALL.findall(text))
        found.update(f"dedup:{what}" for what in COUNTED.findall(text))
    return found


def test_every_step_in_the_code_is_listed_and_every_listed_step_is_used() -> None:
    used = _in_code()
    assert used - set(STEPS) - set(COUNTED_STEPS) == set(), "crash steps missing from STEPS"
    assert (set(STEPS) | set(COUNTED_STEPS)) - used == set(), "listed steps the code never reaches"


def test_steps_are_unique_and_grouped_by_operation() -> None:
    assert len(STEPS) == len(set(STEPS))
    for op in {s.split(":")[0] for s in STEPS}:
        listed = steps_of(op)
        first = STEPS.index(listed[0])
        assert STEPS[first : first + len(listed)] == listed, op


def test_the_docs_list_every_step() -> None:
    doc = (ROOT / "docs" / "crash-safety.md").read_text()
    missing = [s for s in (*STEPS, *COUNTED_STEPS) if s not in doc]
    assert not missing
