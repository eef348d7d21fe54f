"""snapws.textdiff against the real thing: every expectation comes from running git."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from snapws.textdiff import (
    LineStat,
    StatRow,
    format_stat,
    format_stat_summary,
    is_binary,
    line_stat,
    unified_diff,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _lines(n: int, word: str = "line", start: int = 1) -> bytes:
    return b"".join(f"{word} {i}\n".encode() for i in range(start, start + n))


def _edit(data: bytes, *numbers: int) -> bytes:
    """Replace the given 1-based lines of ``data`` by "changed N"."""
    lines = data.split(b"\n")
    for n in numbers:
        lines[n - 1] = f"changed {n}".encode()
    return b"\n".join(lines)


C_SOURCE = b"""#include <stdio.h>

static int helper(int x)
{
\tint y = x * 2;
\treturn y + 1;
}

int main(int argc, char **argv)
{
\tint a = 1;
\tint b = 2;
\tint c = 3;
\tint d = 4;
\tprintf("%d\\n", helper(a + b + c + d));
\treturn 0;
}

$dollar_label:
\tcontinue;
_underscore_label:
\tcontinue;
\tcontinue;
\tcontinue;
\tcontinue;
\tcontinue;
"""

PY_OLD = b"""import os


def first():
    return 1


def third():
    return 3
"""

PY_NEW = b"""import os


def first():
    return 1


def second():
    return 2


def third():
    return 3
"""

LONG_FUNC = ("very_long_function_name_" + "x" * 100 + "(void)\n").encode()

TEXT_CASES: dict[str, tuple[bytes | None, bytes | None]] = {
    "modify_middle": (_lines(10), _edit(_lines(10), 5)),
    "two_hunks": (_lines(30), _edit(_lines(30), 3, 25)),
    "gap_6_one_hunk": (_lines(30), _edit(_lines(30), 5, 12)),
    "gap_7_two_hunks": (_lines(30), _edit(_lines(30), 5, 13)),
    "insert_at_start": (_lines(8), b"new first\n" + _lines(8)),
    "append_at_end": (_lines(8), _lines(8) + b"new last\n"),
    "delete_first": (_lines(8), _lines(7, start=2)),
    "delete_last": (_lines(8), _lines(7)),
    "replace_block": (_lines(12), _lines(4) + _lines(3, "other") + _lines(4, start=9)),
    "no_newline_old": (b"a\nb\nc", b"a\nb\nc\n"),
    "no_newline_new": (b"a\nb\nc\n", b"a\nb\nc"),
    "no_newline_both_changed": (b"a\nb\nc", b"a\nb\nd"),
    "no_newline_as_context": (b"a\nb\nc\nd", b"a\nB\nc\nd"),
    "no_newline_single_line": (b"x", b"y"),
    "no_newline_far_away": (_lines(20) + b"tail", _edit(_lines(20), 2) + b"\ntail"),
    "empty_to_text": (b"", b"a\nb\n"),
    "text_to_empty": (b"a\nb\n", b""),
    "empty_to_no_newline": (b"", b"a"),
    "blank_lines": (b"\n\n\n", b"\n\nx\n\n"),
    "added": (None, b"one\ntwo\n"),
    "added_no_newline": (None, b"one\ntwo"),
    "deleted": (b"one\ntwo\n", None),
    "added_empty": (None, b""),
    "deleted_empty": (b"", None),
    "identical": (_lines(5), _lines(5)),
    "crlf": (b"a\r\nb\r\nc\r\n", b"a\r\nB\r\nc\r\n"),
    "crlf_to_lf": (b"a\r\nb\r\n", b"a\nb\n"),
    "lone_cr_is_not_a_line_end": (b"a\rb\nc\n", b"a\rB\nc\n"),
    "not_utf8": (b"caf\xe9\nx\n", b"caf\xe9\ny\n"),
    "utf8": ("größe\n日本語\n".encode(), "größe\n日本\n".encode()),
    "nul_after_8000_is_text": (b"x" * 9000 + b"\0\na\n", b"x" * 9000 + b"\0\nb\n"),
    "funcname_c": (C_SOURCE, C_SOURCE.replace(b"int d = 4", b"int d = 40")),
    "funcname_labels": (C_SOURCE, C_SOURCE.replace(b"\tcontinue;\n", b"\tbreak;\n")),
    "funcname_long_line": (
        LONG_FUNC + _lines(10),
        LONG_FUNC + _edit(_lines(10), 8),
    ),
    "funcname_multibyte_cut": (
        ("f" + "é" * 60 + "\n").encode() + _lines(10),
        ("f" + "é" * 60 + "\n").encode() + _edit(_lines(10), 8),
    ),
    "insert_function_between": (PY_OLD, PY_NEW),
    "delete_function_between": (PY_NEW, PY_OLD),
    "insert_into_run_of_equal_lines": (b"x\nx\nx\n", b"x\nx\nx\nx\n"),
    "delete_from_run_of_equal_lines": (b"a\nx\nx\nx\nb\n", b"a\nx\nx\nb\n"),
    # SequenceMatcher puts these added copies above their twins; git (and
    # snapws, by sliding pure additions down) below.
    "duplicate_line_slides_down": (
        b"x = 1;\nx = 1;\n}\nint main()\n",
        b"int main()\nx = 1;\nx = 1;\n}\n}\nint main()\n",
    ),
    "duplicate_lines_slide_down": (b"\nint f()\n", b"int f()\n\nint f()\nint f()\n"),
    "many_hunks": (_lines(200), _edit(_lines(200), *range(5, 200, 20))),
}

BINARY_CASES: dict[str, tuple[bytes | None, bytes | None]] = {
    "binary_modified": (b"\0\1\2", b"\0\1\3"),
    "binary_added": (None, b"PNG\0data"),
    "binary_deleted": (b"PNG\0data", None),
    "text_to_binary": (b"hello\n", b"hel\0lo\n"),
    "binary_to_text": (b"hel\0lo\n", b"hello\n"),
    "binary_to_empty": (b"\0", b""),
}

ALL_CASES = {**TEXT_CASES, **BINARY_CASES}


# ------------------------------------------------------------------------ git helpers


def _git(cwd: Path, *args: str) -> bytes:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    proc = subprocess.run(
        ["git", "-c", "core.quotepath=off", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        check=False,
    )
    # diff --no-index exits 1 when the files differ.
    assert proc.returncode in (0, 1), proc.stderr.decode(errors="replace")
    return proc.stdout


def _write_pair(tmp_path: Path, old: bytes | None, new: bytes | None) -> tuple[str, str]:
    left = right = os.devnull
    if old is not None:
        (tmp_path / "old.txt").write_bytes(old)
        left = "old.txt"
    if new is not None:
        (tmp_path / "new.txt").write_bytes(new)
        right = "new.txt"
    return left, right


def _git_unified(tmp_path: Path, old: bytes | None, new: bytes | None, *opts: str) -> list[str]:
    """git's output for the pair, from the ``---`` (or ``Binary files``) line on."""
    left, right = _write_pair(tmp_path, old, new)
    out = _git(tmp_path, "diff", "--no-index", "--no-color", *opts, left, right)
    lines = out.decode("utf-8", errors="surrogateescape").split("\n")
    assert lines[-1] == ""
    lines.pop()
    for k, line in enumerate(lines):
        if line.startswith(("--- ", "Binary files ")):
            return lines[k:]
    return []


def _git_numstat(tmp_path: Path, old: bytes | None, new: bytes | None) -> LineStat:
    left, right = _write_pair(tmp_path, old, new)
    out = _git(tmp_path, "diff", "--no-index", "--numstat", left, right).decode()
    if not out:
        return LineStat(0, 0, binary=False)
    added, removed, _ = out.split("\t", 2)
    if added == "-":
        return LineStat(0, 0, binary=True)
    return LineStat(int(added), int(removed), binary=False)


def _ours(old: bytes | None, new: bytes | None, context: int = 3) -> list[str]:
    return unified_diff(old, new, "a/old.txt", "b/new.txt", context=context)


HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _apply(old: bytes | None, diff: list[str]) -> str:
    """Apply our unified diff to ``old`` (as text); checks every line it meets."""
    src = (old or b"").decode("utf-8", errors="surrogateescape").split("\n")
    old_lines = [line + "\n" for line in src[:-1]] + ([src[-1]] if src[-1] else [])
    if not diff:
        return "".join(old_lines)
    assert diff[0].startswith("--- ") and diff[1].startswith("+++ ")
    result: list[str] = []
    pos = 0
    k = 2
    while k < len(diff):
        m = HUNK_RE.match(diff[k])
        assert m, diff[k]
        start, count = int(m[1]), int(m[2] or 1)
        first = start - 1 if count else start
        assert first >= pos
        result.extend(old_lines[pos:first])
        pos = first
        k += 1
        seen_old = seen_new = 0
        while k < len(diff) and not diff[k].startswith("@@ "):
            mark, text = diff[k][0], diff[k][1:]
            no_newline = k + 1 < len(diff) and diff[k + 1] == "\\ No newline at end of file"
            line = text if no_newline else text + "\n"
            if mark in " -":
                assert old_lines[pos] == line, (pos, old_lines[pos], line)
                pos += 1
                seen_old += 1
            if mark in " +":
                result.append(line)
                seen_new += 1
            assert mark in " -+", diff[k]
            k += 2 if no_newline else 1
        assert seen_old == count
        assert seen_new == int(m[4] or 1)
    result.extend(old_lines[pos:])
    return "".join(result)


def _check_consistent(old: bytes | None, new: bytes | None, diff: list[str]) -> None:
    assert _apply(old, diff) == (new or b"").decode("utf-8", errors="surrogateescape")
    stat = line_stat(old, new)
    body = [line for line in diff[2:] if not line.startswith(("@@ ", "\\ "))]
    assert stat.added == sum(line.startswith("+") for line in body)
    assert stat.removed == sum(line.startswith("-") for line in body)


# --------------------------------------------------------------------------- is_binary


def test_is_binary_looks_for_nul_in_first_8000_bytes() -> None:
    assert not is_binary(b"")
    assert not is_binary(b"plain text\n\xff\xfe")
    assert is_binary(b"\0")
    assert is_binary(b"x" * 7999 + b"\0")
    assert not is_binary(b"x" * 8000 + b"\0")


# ------------------------------------------------------------------------ unified_diff


@pytest.mark.parametrize("case", sorted(ALL_CASES))
def test_unified_diff_matches_git(tmp_path: Path, case: str) -> None:
    old, new = ALL_CASES[case]
    expected = _git_unified(tmp_path, old, new)
    assert _ours(old, new) == expected
    if case in TEXT_CASES:
        _check_consistent(old, new, expected)


@pytest.mark.parametrize("context", [0, 1, 2, 5, 10])
@pytest.mark.parametrize(
    "case", ["two_hunks", "gap_6_one_hunk", "funcname_c", "many_hunks", "no_newline_far_away"]
)
def test_unified_diff_context_matches_git(tmp_path: Path, case: str, context: int) -> None:
    old, new = TEXT_CASES[case]
    assert _ours(old, new, context) == _git_unified(tmp_path, old, new, f"-U{context}")


def test_label_with_space_gets_a_tab_like_git(tmp_path: Path) -> None:
    (tmp_path / "my file.txt").write_bytes(b"a\nb\n")
    (tmp_path / "my file2.txt").write_bytes(b"a\nc\n")
    out = _git(tmp_path, "diff", "--no-index", "my file.txt", "my file2.txt").decode()
    expected = out.split("\n")[2:-1]
    ours = unified_diff(b"a\nb\n", b"a\nc\n", "a/my file.txt", "b/my file2.txt")
    assert ours == expected
    assert ours[:2] == ["--- a/my file.txt\t", "+++ b/my file2.txt\t"]
    added = unified_diff(None, b"a\n", "a/my file.txt", "b/my file.txt")
    assert added[:2] == ["--- /dev/null", "+++ b/my file.txt\t"]


def test_absent_side_is_dev_null_whatever_the_label() -> None:
    assert unified_diff(None, b"x\n", "a/f", "b/f")[:2] == ["--- /dev/null", "+++ b/f"]
    assert unified_diff(b"x\n", None, "a/f", "b/f")[:2] == ["--- a/f", "+++ /dev/null"]
    assert unified_diff(None, b"\0", "a/f", "b/f") == ["Binary files /dev/null and b/f differ"]
    assert unified_diff(b"\0", None, "a/f", "b/f") == ["Binary files a/f and /dev/null differ"]
    assert unified_diff(b"\0", b"\0", "a/f", "b/f") == []
    assert unified_diff(None, None, "a/f", "b/f") == []


def test_funcname_can_be_turned_off() -> None:
    old, new = TEXT_CASES["funcname_c"]
    with_name = unified_diff(old, new, "a/x", "b/x")
    without = unified_diff(old, new, "a/x", "b/x", funcname=False)
    assert with_name[2] == "@@ -11,7 +11,7 @@ int main(int argc, char **argv)"
    assert without[2] == "@@ -11,7 +11,7 @@"
    assert with_name[3:] == without[3:]


def test_negative_context_is_rejected() -> None:
    with pytest.raises(ValueError):
        unified_diff(b"a\n", b"b\n", "a/x", "b/x", context=-1)


# ---------------------------------------------------------------------------- numstat


@pytest.mark.parametrize("case", sorted(ALL_CASES))
def test_line_stat_matches_git_numstat(tmp_path: Path, case: str) -> None:
    old, new = ALL_CASES[case]
    assert line_stat(old, new) == _git_numstat(tmp_path, old, new)


def test_line_stat_examples() -> None:
    assert line_stat(None, None) == LineStat(0, 0, False)
    assert line_stat(None, b"a\nb") == LineStat(2, 0, False)
    assert line_stat(b"a\nb\n", None) == LineStat(0, 2, False)
    assert line_stat(b"a\nb", b"a\nb\n") == LineStat(1, 1, False)
    assert line_stat(b"\0", None) == LineStat(0, 0, True)


def test_random_edits_are_consistent_and_never_beat_git(tmp_path: Path) -> None:
    """Our diffs apply, agree with line_stat, and never count fewer lines than git.

    git's Myers diff is minimal for inputs this small, so ours can only be equal
    or (rarely, SequenceMatcher is not minimal) larger.
    """
    rng = random.Random(1234)
    alphabet = [b"a\n", b"b\n", b"c\n", b"\n", b"}\n", b"x\n"]
    differ = 0
    for _ in range(60):
        old = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        lines = [old[i : i + 2] for i in range(0, len(old), 2)]
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(len(lines) + 1)
            if rng.random() < 0.5 and pos < len(lines):
                del lines[pos]
            else:
                lines.insert(pos, rng.choice(alphabet))
        new = b"".join(lines)
        if rng.random() < 0.2:
            new = new.rstrip(b"\n")
        diff = _ours(old, new)
        _check_consistent(old, new, diff)
        ours, theirs = line_stat(old, new), _git_numstat(tmp_path, old, new)
        assert ours.added - ours.removed == theirs.added - theirs.removed
        assert ours.added >= theirs.added
        differ += ours != theirs
    assert differ <= 20  # mostly identical even on this adversarial alphabet


# ------------------------------------------------------------------------- large input


def test_large_file_with_scattered_edits_matches_git_and_is_fast(tmp_path: Path) -> None:
    old = b"".join(
        b"row %06d of a rather long generated file, padding padding\n" % i for i in range(100_000)
    )
    assert len(old) > 5_000_000
    new = _edit(old, 10, 20_000, 20_001, 55_555, 99_999)
    new = new.replace(b"row 070000 ", b"inserted\nrow 070000 ")
    started = time.monotonic()
    stat = line_stat(old, new)
    diff = _ours(old, new)
    assert time.monotonic() - started < 10
    assert stat == _git_numstat(tmp_path, old, new) == LineStat(6, 5, False)
    assert diff == _git_unified(tmp_path, old, new)


def test_large_dense_edits_use_unique_line_anchors(tmp_path: Path) -> None:
    """Every other line changed: SequenceMatcher alone takes ~20 s on this."""
    n = 30_000
    old = b"".join(b"keep %d\nold %d\n" % (i, i) for i in range(n // 2))
    new = b"".join(b"keep %d\nnew %d\n" % (i, i) for i in range(n // 2))
    started = time.monotonic()
    stat = line_stat(old, new)
    diff = _ours(old, new)
    assert time.monotonic() - started < 10
    assert stat == _git_numstat(tmp_path, old, new) == LineStat(n // 2, n // 2, False)
    assert diff == _git_unified(tmp_path, old, new)


def test_large_low_entropy_input_falls_back_to_replacing(tmp_path: Path) -> None:
    rng = random.Random(7)
    old = b"".join(rng.choice([b"a\n", b"b\n", b"c\n"]) for _ in range(25_000))
    new = b"".join(rng.choice([b"a\n", b"b\n", b"c\n"]) for _ in range(25_000))
    started = time.monotonic()
    stat = line_stat(old, new)
    diff = _ours(old, new)
    assert time.monotonic() - started < 10
    _check_consistent(old, new, diff)
    git = _git_numstat(tmp_path, old, new)
    assert stat.added - stat.removed == git.added - git.removed
    assert stat.added >= git.added


# ------------------------------------------------------------------------------- stat


def _git_stat(
    tmp_path: Path, old: dict[str, bytes], new: dict[str, bytes], width: int
) -> list[str]:
    """``git diff --cached --stat`` between two trees given as {path: content}."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    for path, data in old.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "old")
    for path in old:
        if path not in new:
            (repo / path).unlink()
    for path, data in new.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    _git(repo, "add", "-A")
    out = _git(repo, "diff", "--cached", "--no-renames", f"--stat={width}")
    return out.decode().split("\n")[:-1]


def _rows(old: dict[str, bytes], new: dict[str, bytes]) -> list[StatRow]:
    rows = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a != b:
            rows.append(StatRow(path, line_stat(a, b), len(a or b""), len(b or b"")))
    return rows


STAT_OLD = {
    "README.md": _lines(20),
    "src/core/module.py": _lines(300),
    "src/gone.txt": _lines(7),
    "img/logo.png": b"\x89PNG\0" + bytes(range(256)) * 4,
    "img/old.bin": b"\0" * 10,
    "a-very/long/directory/name/that/goes/on/and/on/forever/file_with_a_long_name.txt": _lines(3),
}
STAT_NEW = {
    "README.md": _edit(_lines(20), 3) + b"more\n",
    "src/core/module.py": _lines(100) + _lines(250, "new"),
    "img/logo.png": b"\x89PNG\0" + bytes(range(256)) * 9,
    "img/old.bin": b"\0" * 10 + b"x",
    "img/new.png": b"\0",
    "empty.txt": b"",
    "a-very/long/directory/name/that/goes/on/and/on/forever/file_with_a_long_name.txt": b"",
    "one.txt": b"1\n",
    "日本語/ファイル.txt": b"wide\nnames\n",
}


@pytest.mark.parametrize("width", [80, 40, 60, 100, 200])
def test_format_stat_matches_git(tmp_path: Path, width: int) -> None:
    expected = _git_stat(tmp_path, STAT_OLD, STAT_NEW, width)
    assert format_stat(_rows(STAT_OLD, STAT_NEW), width=width) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"f": b"a\n"}, {"f": b"a\n"}),  # nothing changed: no output at all
        ({"f": b"a\n"}, {"f": b"b\n"}),  # 1 file, 1 insertion, 1 deletion
        ({"f": b"a\n"}, {"f": b"a\nb\n"}),  # insertions only
        ({"f": b"a\nb\nc\n"}, {"f": b"a\n"}),  # deletions only
        ({"f": b"\0"}, {"f": b"\0\0", "g": b"\0"}),  # binary only: 0 and 0 shown
        ({"f": _lines(500)}, {"f": b"x\n"}),  # scaled to the 80 columns
        ({"f": _lines(500)}, {"f": _lines(1, "x") + _lines(499, start=2)}),  # tiny vs huge
        ({"small": b"1\n", "big": _lines(1000)}, {"small": b"2\n", "big": _lines(999)}),
    ],
)
def test_format_stat_small_cases_match_git(
    tmp_path: Path, old: dict[str, bytes], new: dict[str, bytes]
) -> None:
    assert format_stat(_rows(old, new)) == _git_stat(tmp_path, old, new, 80)


def test_mode_only_change_matches_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "run.sh").write_bytes(b"echo hi\n")
    (repo / "data.txt").write_bytes(b"1\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "old")
    (repo / "run.sh").chmod(0o755)
    (repo / "data.txt").write_bytes(b"1\n2\n")
    _git(repo, "add", "-A")
    expected = _git(repo, "diff", "--cached", "--stat=80").decode().split("\n")[:-1]
    rows = [StatRow("data.txt", LineStat(1, 0, False)), StatRow("run.sh", None)]
    assert format_stat(rows) == expected
    assert expected[1] == " run.sh   | 0"


def test_summary_wording() -> None:
    text = LineStat(1, 0, False)
    assert format_stat_summary([]) == " 0 files changed"
    assert format_stat([]) == []
    assert format_stat_summary([StatRow("f", text)]) == " 1 file changed, 1 insertion(+)"
    assert (
        format_stat_summary([StatRow("f", LineStat(0, 2, False)), StatRow("g", None)])
        == " 2 files changed, 2 deletions(-)"
    )
    assert (
        format_stat_summary([StatRow("f", LineStat(3, 1, False))])
        == " 1 file changed, 3 insertions(+), 1 deletion(-)"
    )
    assert (
        format_stat_summary([StatRow("f", LineStat(0, 0, True), 1, 2)])
        == " 1 file changed, 0 insertions(+), 0 deletions(-)"
    )


def test_long_path_is_shortened_at_a_slash(tmp_path: Path) -> None:
    path = "abcdefghij/" * 10 + "file.txt"
    old, new = {path: b"a\n"}, {path: b"b\nc\n"}
    ours = format_stat(_rows(old, new), width=40)
    assert ours == _git_stat(tmp_path, old, new, 40)
    assert ours[0] == " .../abcdefghij/file.txt        | 3 ++-"
