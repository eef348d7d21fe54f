"""snapws.config: files, environment, validation, and the documented example."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from snapws.config import Config, config_files, load_config
from snapws.errors import ConfigError, ExitCode

EXAMPLE = Path(__file__).resolve().parent.parent / "snapws.toml.example"
FIELDS = {f.name for f in dataclasses.fields(Config)}
COMMENTED_KEY = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")
KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose user config lives under tmp_path (/etc/snapws is
    not touched: tests must not depend on the host's files)."""
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    env.update(extra)
    return env


def user_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xdg" / "snapws" / "snapws.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_system_file() -> None:
    # the system-wide file would leak into every result below
    assert not Path("/etc/snapws/snapws.toml").exists(), "tests assume no /etc/snapws/snapws.toml"


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(env_for(tmp_path))
    assert cfg == Config()
    assert cfg.store is None
    assert cfg.default_branch == "main"
    assert cfg.lock_timeout == 60.0
    assert cfg.hash_threads == 8


def test_config_files_order(tmp_path: Path) -> None:
    env = env_for(tmp_path, SNAPWS_CONFIG=str(tmp_path / "extra.toml"))
    assert config_files(env) == [
        Path("/etc/snapws/snapws.toml"),
        tmp_path / "xdg" / "snapws" / "snapws.toml",
        tmp_path / "extra.toml",
    ]


def test_xdg_defaults_to_home_config(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home")}
    assert config_files(env)[1] == tmp_path / "home" / ".config" / "snapws" / "snapws.toml"
    write(tmp_path / "home" / ".config" / "snapws" / "snapws.toml", 'author = "from home"\n')
    assert load_config(env).author == "from home"


def test_precedence(tmp_path: Path) -> None:
    user_file(
        tmp_path,
        'author = "user"\ndefault_branch = "trunk"\nlock_timeout = 5\nstore = "/srv/user"\n',
    )
    extra = write(tmp_path / "extra.toml", 'author = "extra"\nhash_threads = 2\n')
    env = env_for(tmp_path, SNAPWS_CONFIG=str(extra))
    cfg = load_config(env)
    assert cfg.author == "extra"  # SNAPWS_CONFIG beats the user file
    assert cfg.default_branch == "trunk"  # set only in the user file
    assert cfg.lock_timeout == 5.0
    assert isinstance(cfg.lock_timeout, float)
    assert cfg.hash_threads == 2
    assert cfg.store == Path("/srv/user")

    env.update(SNAPWS_AUTHOR="env", SNAPWS_STORE=str(tmp_path / "envstore"))
    cfg = load_config(env)
    assert cfg.author == "env"  # environment beats every file
    assert cfg.store == tmp_path / "envstore"
    assert cfg.default_branch == "trunk"


def test_relative_env_store_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env_for(tmp_path, SNAPWS_STORE="rel/store"))
    assert cfg.store == tmp_path / "rel" / "store"


def test_empty_env_values_are_ignored(tmp_path: Path) -> None:
    user_file(tmp_path, 'author = "user"\n')
    cfg = load_config(env_for(tmp_path, SNAPWS_AUTHOR="", SNAPWS_STORE="", SNAPWS_CONFIG=""))
    assert cfg.author == "user"
    assert cfg.store is None


def test_store_tilde_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    user_file(tmp_path, 'store = "~/st"\n')
    assert load_config(env_for(tmp_path)).store == tmp_path / "h" / "st"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = user_file(tmp_path, 'autor = "typo"\n')
    with pytest.raises(ConfigError) as info:
        load_config(env_for(tmp_path))
    assert str(path) in str(info.value)
    assert "autor" in str(info.value)
    assert info.value.exit_code is ExitCode.CONFIG
    assert "snapws.toml.example" in info.value.hint


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('lock_timeout = "soon"', "lock_timeout"),
        ("hash_threads = 2.5", "hash_threads"),
        ("hash_threads = true", "hash_threads"),
        ("lock_timeout = false", "lock_timeout"),
        ("author = 3", "author"),
        ("default_branch = []", "default_branch"),
        ("store = 1", "store"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path / "c.toml", line + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(env_for(tmp_path, SNAPWS_CONFIG=str(path)))
    assert str(path) in str(info.value)
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('store = "relative/path"', "store"),
        ("lock_timeout = 0", "lock_timeout"),
        ("hash_threads = -1", "hash_threads"),
        # numbers must be finite and in range (issue 15, item 6): a nan
        # lock_timeout waited forever on a held lock
        ("lock_timeout = nan", "lock_timeout"),
        ("lock_timeout = inf", "lock_timeout"),
        ("lock_timeout = -inf", "lock_timeout"),
        ("lock_timeout = -5", "lock_timeout"),
        ("lock_timeout = 1e300", "lock_timeout"),
        ("hash_threads = 100000", "hash_threads"),
        ("hash_threads = 9223372036854775807", "hash_threads"),
        ("gc_grace = nan", "gc_grace"),
        ("gc_grace = inf", "gc_grace"),
        ("gc_grace = -1", "gc_grace"),
        ("max_depth = 401", "max_depth"),
        ("max_depth = 1", "max_depth"),
    ],
)
def test_bad_value_names_file_and_key(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path / "c.toml", line + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(env_for(tmp_path, SNAPWS_CONFIG=str(path)))
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_bad_toml_names_file(tmp_path: Path) -> None:
    path = user_file(tmp_path, "author = \n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(env_for(tmp_path))


def test_missing_snapws_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(env_for(tmp_path, SNAPWS_CONFIG=str(missing)))


@pytest.mark.parametrize(
    ("line", "attr", "value"),
    [
        ("lock_timeout = 0.5", "lock_timeout", 0.5),
        ("lock_timeout = 604800", "lock_timeout", 604800.0),
        ("hash_threads = 1", "hash_threads", 1),
        ("hash_threads = 256", "hash_threads", 256),
        ("gc_grace = 0", "gc_grace", 0.0),
    ],
)
def test_values_at_the_bounds_are_accepted(
    tmp_path: Path, line: str, attr: str, value: object
) -> None:
    path = write(tmp_path / "c.toml", line + "\n")
    assert getattr(load_config(env_for(tmp_path, SNAPWS_CONFIG=str(path))), attr) == value


def _run_snapws_with_config(tmp_path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``snapws branch`` with SNAPWS_CONFIG=config, killed after 20 s (a hang fails)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPWS_")}
    env.update(env_for(tmp_path, SNAPWS_CONFIG=str(config)))
    return subprocess.run(
        [sys.executable, "-m", "snapws", "branch"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=20,
    )


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "huge", "symlink-to-fifo"])
def test_snapws_config_must_be_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    """SNAPWS_CONFIG naming /dev/zero or a FIFO hung snapws; a 2 MiB file was
    read whole. Each is refused (exit 13, the file named) before it is read."""
    if kind == "dev-zero":
        config, expect = Path("/dev/zero"), "is not a regular file"
    elif kind in ("fifo", "symlink-to-fifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        config, expect = fifo, "is not a regular file"
        if kind == "symlink-to-fifo":
            config = tmp_path / "link.toml"
            config.symlink_to(fifo)
    elif kind == "directory":
        config, expect = tmp_path / "dir.toml", "is not a regular file"
        config.mkdir()
    else:
        config = write(tmp_path / "huge.toml", 'author = "a"\n' + "#" * (2 << 20) + "\n")
        expect = "at most 1048576 bytes"
    # first in a child with a timeout: the old code blocked here forever
    proc = _run_snapws_with_config(tmp_path, config)
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match=expect) as info:
        load_config(env_for(tmp_path, SNAPWS_CONFIG=str(config)))
    assert str(config) in str(info.value)


def test_a_symlink_to_a_regular_config_file_is_read(tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "snapws.toml", "hash_threads = 3\n")
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    assert load_config(env_for(tmp_path, SNAPWS_CONFIG=str(link))).hash_threads == 3


def test_lock_timeout_nan_from_the_cli_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "lock_timeout = nan\n")
    proc = _run_snapws_with_config(tmp_path, config)
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert "lock_timeout must be a finite number" in proc.stderr


def test_author_or_default() -> None:
    assert Config(author="me").author_or_default() == "me"
    auto = Config().author_or_default()
    assert "@" in auto
    assert auto.split("@")[0]


# --------------------------------------------------------------------------- the example


def example_keys() -> tuple[set[str], set[str]]:
    """(keys set in the example, keys only shown commented out)."""
    active, commented = set(), set()
    for line in EXAMPLE.read_text().splitlines():
        if m := KEY.match(line):
            active.add(m.group(1))
        elif m := COMMENTED_KEY.match(line):
            commented.add(m.group(1))
    return active, commented


def test_example_parses_and_loads(tmp_path: Path) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) <= FIELDS
    cfg = load_config(env_for(tmp_path, SNAPWS_CONFIG=str(EXAMPLE)))
    # the active values are the defaults, as the example says
    assert cfg == Config()


def test_example_keys_are_known() -> None:
    active, commented = example_keys()
    assert active, "the example sets no key at all?"
    unknown = (active | commented) - FIELDS
    assert not unknown, f"snapws.toml.example names unknown keys {sorted(unknown)}"


def test_example_documents_every_option() -> None:
    active, commented = example_keys()
    undocumented = FIELDS - (active | commented)
    assert not undocumented, f"snapws.toml.example does not mention {sorted(undocumented)}"


def test_example_uncommented_is_valid(tmp_path: Path) -> None:
    """The commented-out samples are valid settings once uncommented."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        lines.append(line.lstrip("#").lstrip() if COMMENTED_KEY.match(line) else line)
    path = write(tmp_path / "uncommented.toml", "\n".join(lines) + "\n")
    cfg = load_config(env_for(tmp_path, SNAPWS_CONFIG=str(path)))
    _, commented = example_keys()
    for key in commented:
        assert getattr(cfg, key) != getattr(Config(), key), key
