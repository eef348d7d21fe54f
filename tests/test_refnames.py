"""Branch and tag name validation (git's check-ref-format rules plus snapws's own)."""

from __future__ import annotations

import pytest

from snapws.errors import BadNameError, ExitCode
from snapws.refnames import (
    MAX_COMPONENT_BYTES,
    MAX_NAME_BYTES,
    MAX_REF_BYTES,
    check_ref_format,
    ref_name_problem,
    shown,
    validate_ref_name,
)


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "feature/login",
        "a/b/c",
        "v1.0",
        "v1.0.2-rc1",
        "release_2024",
        "foo@bar",
        "@foo",
        "x.lockx",
        "a.lock.b",
        "foo./bar",  # only the whole name may not end with '.'
        "héllo/wörld",
        "abc",  # 3 hex digits: too short to be an id prefix
        "ABCG",  # not all hex digits (uppercase hex is refused, as an id)
        "deadbeefz",
        "0123456789abcdef0123456789abcdef0",  # 33 hex digits: longer than any id
        "HEADS",
        "head",
        "a-",
        "{x}",
        "a@b{",
        "x" * MAX_NAME_BYTES,
    ],
)
def test_valid_names_are_returned(name: str) -> None:
    assert validate_ref_name("branch", name) == name
    assert validate_ref_name("tag", name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "it is empty"),
        (".hidden", "the component '.hidden' starts with '.'"),
        ("a/.b", "the component '.b' starts with '.'"),
        ("..", "the component '..' starts with '.'"),
        ("a..b", "it contains '..'"),
        ("a/..b", "the component '..b' starts with '.'"),
        ("a\x00b", "it contains the control character '\\x00'"),
        ("a\x1fb", "it contains the control character '\\x1f'"),
        ("a\tb", "it contains the control character '\\t'"),
        ("a\nb", "it contains the control character '\\n'"),
        ("a\x7fb", "it contains the control character '\\x7f'"),
        ("a b", "it contains a space"),
        ("a~b", "it contains '~'"),
        ("a^b", "it contains '^'"),
        ("a:b", "it contains ':'"),
        ("a?b", "it contains '?'"),
        ("a*b", "it contains '*'"),
        ("a[b", "it contains '['"),
        ("a\\b", "it contains '\\\\'"),
        ("a/", "it ends with '/'"),
        ("/a", "it starts with '/'"),
        ("a//b", "it contains '//'"),
        ("a.lock", "the component 'a.lock' ends with '.lock'"),
        ("x/a.lock/y", "the component 'a.lock' ends with '.lock'"),
        (".lock", "the component '.lock' starts with '.'"),
        ("a.", "it ends with '.'"),
        ("a/b.", "it ends with '.'"),
        ("a@{b", "it contains '@{'"),
        ("@{", "it contains '@{'"),
        ("@", "'@' alone means HEAD"),
        ("HEAD", "'HEAD' is reserved"),
        ("-b", "it starts with '-'"),
        ("-", "it starts with '-'"),
        ("abcd", "would be confused with a snapshot id"),
        ("deadbeef", "would be confused with a snapshot id"),
        ("0123", "would be confused with a snapshot id"),
        ("0123456789abcdef0123456789abcdef", "would be confused with a snapshot id"),
        # ids are read in any case (revparse lowercases a prefix): so are names
        ("A113B92E", "would be confused with a snapshot id"),
        ("DeadBeef", "would be confused with a snapshot id"),
        ("x" * (MAX_NAME_BYTES + 1), f"201 bytes long in UTF-8; the limit is {MAX_NAME_BYTES}"),
        ("é" * 101, "202 bytes long in UTF-8"),  # 101 characters, 202 bytes
        ("a\udcffb", "not valid UTF-8"),  # lone surrogate, as os.fsdecode makes
    ],
)
def test_invalid_names_give_the_specific_reason(name: str, reason: str) -> None:
    with pytest.raises(BadNameError) as info:
        validate_ref_name("branch", name)
    message = str(info.value)
    assert message.startswith(f"invalid branch name {name!r}: ")
    assert reason in message
    assert info.value.exit_code == ExitCode.BAD_NAME


def test_kind_is_named_in_the_message() -> None:
    with pytest.raises(BadNameError, match=r"^invalid tag name 'a b': it contains a space$"):
        validate_ref_name("tag", "a b")


def test_first_offending_character_is_reported() -> None:
    with pytest.raises(BadNameError, match=r"contains '\?'$"):
        validate_ref_name("branch", "a?b*c")


def test_byte_limit_counts_utf8_bytes_not_characters() -> None:
    ok = "é" * (MAX_NAME_BYTES // 2)
    assert validate_ref_name("branch", ok) == ok
    with pytest.raises(BadNameError):
        validate_ref_name("branch", ok + "x")


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        validate_ref_name("remote", "main")


# --------------------------------------------------------------------------- any ref name


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",  # absolute: would replace the path below refs/
        "/var/tmp/x/victim",
        "../../../etc/passwd",
        "a/../b",
        "..",
        ".",
        "a/./b",
        "a//b",
        "a/",
        "",
        "a\x00b",
        "a\nb",
        "x" * (MAX_COMPONENT_BYTES + 1),
        "/".join(["x" * 200] * 6),  # 1205 bytes: over the total limit
        "x" * 100_000,
        "a\udcffb",
    ],
)
def test_ref_name_problem_refuses_what_is_not_a_plain_relative_path(name: str) -> None:
    assert ref_name_problem(name) is not None
    with pytest.raises(BadNameError) as info:
        check_ref_format(name)
    assert info.value.exit_code == ExitCode.BAD_NAME
    assert len(str(info.value)) < 500  # a huge name is shortened in the message


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "origin/v1.0",
        "origin/feature/x",
        "HEAD",  # a valid ref *path*; only new branch/tag names reserve it
        "deadbeef",
        "-x",
        "/".join(["x" * MAX_COMPONENT_BYTES] * 4),  # 1023 bytes
    ],
)
def test_ref_name_problem_accepts_any_safe_name(name: str) -> None:
    assert ref_name_problem(name) is None
    assert check_ref_format(name) == name


def test_total_limit_is_in_bytes() -> None:
    name = "/".join(["é" * 100] * 5)  # 1004 bytes
    assert ref_name_problem(name) is None
    assert ref_name_problem(name + "/éééééééééé") == (
        f"it is {len(name.encode()) + 21} bytes long in UTF-8; the limit is {MAX_REF_BYTES}"
    )


def test_every_new_name_is_a_valid_ref_name() -> None:
    """validate_ref_name is ref_name_problem plus rules of its own, never looser."""
    for name in ["a", "a/b", "x" * MAX_NAME_BYTES, "v1.0"]:
        assert ref_name_problem(validate_ref_name("branch", name)) is None


def test_shown_cuts_long_text() -> None:
    assert shown("main") == "'main'"
    assert shown("x" * 100_000) == f"{'x' * 256!r}... (100000 characters)"


def test_hex_names_are_refused_in_any_case_with_one_message() -> None:
    reasons = []
    for name in ("a113b92e", "A113B92E", "a113B92e"):
        with pytest.raises(BadNameError) as info:
            validate_ref_name("branch", name)
        reasons.append(str(info.value).split(": ", 1)[1])
    assert reasons == [reasons[0]] * 3
    assert reasons[0] == "4 to 32 hex digits would be confused with a snapshot id"
