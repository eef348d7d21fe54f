"""Documentation that must match the code: the exit-code table, error hints."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
import pytest

from snapws import errors
from snapws.errors import ExitCode, SnapwsError

EXIT_CODES_MD = Path(__file__).resolve().parent.parent / "docs" / "exit-codes.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([A-Z_]+)`\s*\|")


def documented_codes(text: str) -> list[tuple[str, int]]:
    """(name, number) of every row like ``| 3 | `NOT_A_WORKSPACE` | ... |``."""
    out = []
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            out.append((m.group(2), int(m.group(1))))
    return out


def test_row_parser() -> None:
    text = "| Code | Name |\n|---|---|\n| 3 | `NOT_A_WORKSPACE` | not inside | run init |\n"
    assert documented_codes(text) == [("NOT_A_WORKSPACE", 3)]


def test_exit_code_table_matches_the_enum() -> None:
    assert EXIT_CODES_MD.is_file(), f"{EXIT_CODES_MD} is missing"
    rows = documented_codes(EXIT_CODES_MD.read_text())
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"listed twice: {names}"
    assert dict(rows) == {code.name: code.value for code in ExitCode}


def error_classes() -> list[type[SnapwsError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, SnapwsError) and cls.__module__ == errors.__name__
    ]


def is_base(cls: type[SnapwsError]) -> bool:
    """A class other error classes of snapws.errors derive from."""
    return any(other is not cls and issubclass(other, cls) for other in error_classes())


def test_error_classes_found() -> None:
    names = {cls.__name__ for cls in error_classes()}
    assert {"SnapwsError", "ConfigError", "StoreLockedError", "MountError"} <= names


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_says_what_to_do(cls: type[SnapwsError]) -> None:
    assert cls.default_hint.strip() or is_base(cls), f"{cls.__name__} has no default_hint"


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_has_a_specific_exit_code(cls: type[SnapwsError]) -> None:
    assert isinstance(cls.exit_code, ExitCode)
    if cls is not SnapwsError:
        assert cls.exit_code not in (ExitCode.OK, ExitCode.INTERNAL, ExitCode.DIFFERENCES)


README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_installs_into_a_venv() -> None:
    """PEP 668: Debian and Ubuntu refuse the system pip, so the README's
    commands install into a virtual environment, and the quickstart runs
    the snapws of that environment (tests/test_quickstart.py runs the script)."""
    text = README.read_text()
    root = [line for line in text.splitlines() if "sh docs/quickstart.sh" in line]
    assert root == [
        "sh -c 'python3 -m venv /opt/snapws && /opt/snapws/bin/pip install . && "
        "PATH=/opt/snapws/bin:$PATH sh docs/quickstart.sh'"
    ]
    assert "python3-venv" in text
    assert "python3 -m pip install" not in text
    # the user's venv can never be taken for a store (.snapws)
    assert "~/.snapws" not in text
    assert "python3 -m venv ~/.local/share/snapws-venv" in text
    # as root, which a fresh machine or container is, often without sudo
    assert "\nbash .ci/run\n" in text and "\nsudo " not in text


def test_formats_doc_names_every_machine_format() -> None:
    text = (EXIT_CODES_MD.parent / "formats-output.md").read_text()
    for needle in ("--porcelain", "--name-status", "--name-only", "-z", "core.quotePath"):
        assert needle in text


def synopsis_lines() -> list[str]:
    """Every synopsis line of docs/commands.md (indented ``snapws ...`` lines;
    the examples there start with ``$``)."""
    text = (README.parent / "docs" / "commands.md").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith("    snapws ")]


def _resolve(words: list[str]) -> tuple[list[click.Command], list[str]]:
    """The click commands a synopsis names (the group first), and the
    option names it uses; global options before the command name count
    for the group."""
    from snapws.cli.main import cli

    chain: list[click.Command] = [cli]
    options: list[str] = []
    for word in words[1:]:
        for opt in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", word):
            options.append(opt)
        bare = word.strip("[]")
        current = chain[-1]
        if isinstance(current, click.Group) and re.fullmatch(r"[a-z][a-z-]*", bare):
            ctx = click.Context(current)
            found = current.get_command(ctx, bare)
            if found is not None:
                chain.append(found)
    return chain, options


def test_every_synopsis_line_parses() -> None:
    lines = synopsis_lines()
    assert len(lines) > 40
    bad = []
    for line in lines:
        words = line.split()
        chain, options = _resolve(words)
        if len(chain) < 2 and "COMMAND" not in line:
            bad.append(f"{line}: names no command")
            continue
        known = {o for cmd in chain for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        known |= {"--help"}
        missing = [o for o in options if o not in known and o != "--"]
        if missing:
            bad.append(f"{line}: {', '.join(missing)}")
    assert not bad, "docs/commands.md synopsis lines the CLI does not parse:\n" + "\n".join(bad)


def test_the_synopsis_check_sees_a_drift() -> None:
    chain, options = _resolve(["snapws", "checkout", "REV", "[--no-such-flag]"])
    known = {o for cmd in chain for p in cmd.params for o in p.opts}
    assert chain[-1].name == "checkout" and "--no-such-flag" not in known
    assert options == ["--no-such-flag"]
