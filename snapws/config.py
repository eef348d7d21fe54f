"""Settings from snapws.toml files and the environment.

Precedence, lowest first: built-in defaults, ``/etc/snapws/snapws.toml``,
``$XDG_CONFIG_HOME/snapws/snapws.toml`` (default ``~/.config``), the file
named by ``SNAPWS_CONFIG``, then environment variables (``SNAPWS_STORE``,
``SNAPWS_AUTHOR``, ``SNAPWS_BACKEND``, ``SNAPWS_CACHE_REMOTE``,
``SNAPWS_NAMESPACE``), then command-line options.
snapws.toml.example documents every key.

Every value is checked when read (:func:`load_config` raises ConfigError
naming the file and the setting): numbers are finite and in range
(:data:`RANGES`), and a config file must be a regular file of at most
:data:`MAX_CONFIG_BYTES` (a FIFO, a device such as /dev/zero or a huge file is
refused without reading it, so no setting can make snapws hang).
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from snapws.errors import ConfigError
from snapws.model import namespace_problem


@dataclass(frozen=True, slots=True)
class Config:
    store: Path | None = None
    author: str = ""
    default_branch: str = "main"
    lock_timeout: float = 60.0
    hash_threads: int = 8
    max_depth: int = 32
    dedup: bool = True  # share identical files between layers (hardlinks)
    # retention policy `snapws prune` applies when given no --keep-* option
    # (0: rule not used, -1: unlimited); gc's grace period in seconds
    prune_keep_last: int = 0
    prune_keep_hourly: int = 0
    prune_keep_daily: int = 0
    prune_keep_weekly: int = 0
    prune_keep_monthly: int = 0
    prune_keep_yearly: int = 0
    prune_keep_within: str = ""
    gc_grace: float = 3600.0
    # the backend `snapws init` gives new workspaces: auto, kernel, rootless, fuse, plain
    backend: str = "auto"
    # the remote `snapws cache` uses when given no --remote: a remote's name or
    # a registry URL ("": the store's remote named cache, else origin)
    cache_remote: str = ""
    # gitignore patterns every workspace ignores, below its .snapwsignore files
    ignore: tuple[str, ...] = ()
    # the branch namespace `snapws init` gives new workspaces: "" (one of
    # their own, named after the directory), "shared" (the store's root
    # namespace, branches shared as between git worktrees) or a name to join
    namespace: str = ""
    # plain workspaces: a file-system watcher (inotify) tells status what changed
    plain_watch: bool = False

    def author_or_default(self) -> str:
        if self.author:
            return self.author
        # as getpass.getuser() and socket.gethostname(), without importing
        # them (and termios, socket) on every commit
        user = next(
            (v for k in ("LOGNAME", "USER", "LNAME", "USERNAME") if (v := os.environ.get(k))),
            None,
        )
        if user is None:
            import pwd

            try:
                user = pwd.getpwuid(os.getuid()).pw_name
            except KeyError:
                user = str(os.getuid())
        return f"{user}@{os.uname().nodename}"


_TYPES: dict[str, type] = {
    "store": str,
    "author": str,
    "default_branch": str,
    "lock_timeout": float,
    "hash_threads": int,
    "max_depth": int,
    "dedup": bool,
    "prune_keep_last": int,
    "prune_keep_hourly": int,
    "prune_keep_daily": int,
    "prune_keep_weekly": int,
    "prune_keep_monthly": int,
    "prune_keep_yearly": int,
    "prune_keep_within": str,
    "gc_grace": float,
    "backend": str,
    "cache_remote": str,
    "ignore": list,
    "namespace": str,
    "plain_watch": bool,
}
#: ``namespace =`` value (and ``init --shared``) for the store's shared root namespace.
SHARED_NAMESPACE = "shared"
BACKEND_CHOICES = ("auto", "kernel", "rootless", "fuse", "plain")
#: Inclusive bounds of the numeric settings (prune_keep_* counts: -1 or more).
#: A float must also be finite: TOML has nan and inf, and a nan lock_timeout
#: would wait forever.
RANGES: dict[str, tuple[float, float]] = {
    "lock_timeout": (0.001, 7 * 86400.0),  # up to a week
    "hash_threads": (1, 256),
    "max_depth": (2, 400),
    "gc_grace": (0.0, 10 * 365 * 86400.0),  # up to ten years
}
#: A config file larger than this is refused unread (the example is ~4 KiB).
MAX_CONFIG_BYTES = 1 << 20
_WITHIN_RE = re.compile(r"^(?!.*([ymdh]).*\1)([0-9]+[ymdh])+$")  # each unit at most once


def config_files(env: Mapping[str, str]) -> list[Path]:
    """The files read, in order (later ones win)."""
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    files = [Path("/etc/snapws/snapws.toml"), Path(xdg) / "snapws" / "snapws.toml"]
    if env.get("SNAPWS_CONFIG"):
        files.append(Path(env["SNAPWS_CONFIG"]))
    return files


def _apply(cfg: Config, data: Mapping[str, Any], origin: str) -> Config:
    known = {f.name for f in fields(Config)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        want = _TYPES[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (isinstance(value, bool) and want is not bool):
            raise ConfigError(
                f"{origin}: {key} must be a {want.__name__}, not {type(value).__name__}"
            )
        if key == "ignore" and isinstance(value, list):
            if not all(isinstance(x, str) and "\n" not in x for x in value):
                raise ConfigError(
                    f"{origin}: ignore must be a list of patterns (strings of one line)"
                )
            value = tuple(value)
        if key == "store":
            value = Path(os.path.expanduser(str(value)))
            if not value.is_absolute():
                raise ConfigError(f"{origin}: store must be an absolute path")
        if key in RANGES:
            _check_range(key, value, origin)
        if key.startswith("prune_keep_") and key != "prune_keep_within" and value < -1:
            raise ConfigError(f"{origin}: {key} must be a count (-1: unlimited, 0: unused)")
        if key == "prune_keep_within" and value and not _WITHIN_RE.match(value):
            raise ConfigError(
                f"{origin}: prune_keep_within must be a duration such as 2y5m7d3h "
                "(each unit at most once)"
            )
        if key == "namespace" and value and value != SHARED_NAMESPACE:
            problem = namespace_problem(value)
            if problem is not None:
                raise ConfigError(
                    f"{origin}: namespace {value!r} is not a namespace name: {problem}"
                )
        if key == "backend" and value not in BACKEND_CHOICES:
            raise ConfigError(
                f"{origin}: backend must be one of {', '.join(BACKEND_CHOICES)}, not {value!r}"
            )
        changes[key] = value
    return replace(cfg, **changes)


def _check_range(key: str, value: float, origin: str) -> None:
    """Raise ConfigError unless ``value`` is finite and within RANGES[key]."""
    low, high = RANGES[key]
    unit = " seconds" if isinstance(value, float) else ""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{origin}: {key} must be a finite number, not {value}")
    if not low <= value <= high:
        lo = f"{low:g}" if isinstance(value, float) else str(int(low))
        hi = f"{high:g}" if isinstance(value, float) else str(int(high))
        raise ConfigError(f"{origin}: {key} must be between {lo} and {hi}{unit}, not {value}")


def read_config_file(path: Path) -> bytes | None:
    """The bytes of config file ``path``, or None if it does not exist.

    The file is opened non-blocking (a FIFO never blocks the open) and must
    be a regular file (symlinks to one are fine) of at most
    :data:`MAX_CONFIG_BYTES`; anything else raises ConfigError naming it,
    before a byte is read. Other OS errors raise ConfigError too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return None
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file: a config file must be one")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path} is {st.st_size} bytes: a config file holds at most "
                f"{MAX_CONFIG_BYTES} bytes"
            )
        chunks = []
        left = MAX_CONFIG_BYTES + 1  # a file growing while read is caught too
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} holds more than {MAX_CONFIG_BYTES} bytes")
    return data


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read every config file and the environment. Raises ConfigError naming
    the file (or variable) and the setting for anything invalid (see the
    module's docstring); never blocks on a file."""
    env = os.environ if env is None else env
    cfg = Config()
    for path in config_files(env):
        raw = read_config_file(path)
        if raw is None:
            if path == Path(env.get("SNAPWS_CONFIG", "")):
                raise ConfigError(f"SNAPWS_CONFIG names {path}, which does not exist")
            continue
        import tomllib  # only when a config file exists

        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from e
        cfg = _apply(cfg, data, str(path))
    if env.get("SNAPWS_STORE"):
        cfg = replace(cfg, store=Path(env["SNAPWS_STORE"]).absolute())
    if env.get("SNAPWS_AUTHOR"):
        cfg = replace(cfg, author=env["SNAPWS_AUTHOR"])
    if env.get("SNAPWS_BACKEND"):
        cfg = _apply(cfg, {"backend": env["SNAPWS_BACKEND"]}, "SNAPWS_BACKEND")
    if env.get("SNAPWS_CACHE_REMOTE"):
        cfg = replace(cfg, cache_remote=env["SNAPWS_CACHE_REMOTE"])
    if env.get("SNAPWS_NAMESPACE"):
        cfg = _apply(cfg, {"namespace": env["SNAPWS_NAMESPACE"]}, "SNAPWS_NAMESPACE")
    return cfg
