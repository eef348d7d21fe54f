"""Settings from snapws.toml files and the environment.

Precedence, lowest first: built-in defaults, ``/etc/snapws/snapws.toml``,
``$XDG_CONFIG_HOME/snapws/snapws.toml`` (default ``~/.config``), the file
named by ``SNAPWS_CONFIG``, then environment variables (``SNAPWS_STORE``,
``SNAPWS_AUTHOR``, ``SNAPWS_BACKEND``, ``SNAPWS_CACHE_REMOTE``), then
command-line options.
snapws.toml.example documents every key.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from snapws.errors import ConfigError


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

    def author_or_default(self) -> str:
        if self.author:
            return self.author
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return f"{user}@{socket.gethostname()}"


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
}
BACKEND_CHOICES = ("auto", "kernel", "rootless", "fuse", "plain")
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
        if key == "store":
            value = Path(os.path.expanduser(str(value)))
            if not value.is_absolute():
                raise ConfigError(f"{origin}: store must be an absolute path")
        if key == "max_depth" and not 2 <= value <= 400:
            raise ConfigError(f"{origin}: max_depth must be between 2 and 400")
        if key in ("lock_timeout", "hash_threads") and value <= 0:
            raise ConfigError(f"{origin}: {key} must be positive")
        if key.startswith("prune_keep_") and key != "prune_keep_within" and value < -1:
            raise ConfigError(f"{origin}: {key} must be a count (-1: unlimited, 0: unused)")
        if key == "prune_keep_within" and value and not _WITHIN_RE.match(value):
            raise ConfigError(
                f"{origin}: prune_keep_within must be a duration such as 2y5m7d3h "
                "(each unit at most once)"
            )
        if key == "backend" and value not in BACKEND_CHOICES:
            raise ConfigError(
                f"{origin}: backend must be one of {', '.join(BACKEND_CHOICES)}, not {value!r}"
            )
        if key == "gc_grace" and value < 0:
            raise ConfigError(f"{origin}: gc_grace must be 0 or more seconds")
        changes[key] = value
    return replace(cfg, **changes)


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read every config file and the environment. Raises ConfigError."""
    env = os.environ if env is None else env
    cfg = Config()
    for path in config_files(env):
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            if path == Path(env.get("SNAPWS_CONFIG", "")):
                raise ConfigError(f"SNAPWS_CONFIG names {path}, which does not exist") from None
            continue
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
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
    return cfg
