"""Registry credentials and the distribution spec's auth challenges.

Credentials are looked up, first match wins, in:

1. the environment: ``SNAPWS_REGISTRY_USERNAME`` + ``SNAPWS_REGISTRY_PASSWORD``,
   or ``SNAPWS_REGISTRY_TOKEN`` (a bearer token sent as is), for every host;
2. ``$XDG_CONFIG_HOME/snapws/credentials.toml`` (default ``~/.config``), one
   table per registry host (``["host:port"]`` with ``username`` + ``password``
   or ``token``);
3. docker/podman auth files: ``$REGISTRY_AUTH_FILE``,
   ``$XDG_RUNTIME_DIR/containers/auth.json``, ``$DOCKER_CONFIG/config.json``
   or ``~/.docker/config.json``: in each, a credential helper named for the
   host (``credHelpers.<host>``), else the default one (``credsStore``), run
   as docker does (``docker-credential-<name> get``, the host on stdin, JSON
   ``{"Username", "Secret"}`` out; a helper that has nothing for the host
   lets the lookup go on), then ``auths.<host>.auth`` (base64 ``user:pass``).

Secrets never appear in messages: :class:`Credentials` hides them from
``repr``, and errors name the source and the user only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from snapws.errors import AuthError

ENV_USER = "SNAPWS_REGISTRY_USERNAME"
ENV_PASSWORD = "SNAPWS_REGISTRY_PASSWORD"
ENV_TOKEN = "SNAPWS_REGISTRY_TOKEN"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password, or a bearer token, and where they came from."""

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    source: str = ""

    def basic_header(self) -> str:
        """The ``Authorization`` value for basic auth."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def describe(self) -> str:
        """Who we are and where that came from (no secret)."""
        who = f"user {self.username!r}" if self.username else "a token"
        return f"{who} from {self.source}"

    def secrets(self) -> list[str]:
        """The secret strings (for redaction)."""
        return [s for s in (self.password, self.token) if s]


def auth_files(env: Mapping[str, str]) -> list[Path]:
    """docker/podman auth files, in lookup order."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    files.append(home / ".docker" / "config.json")
    return files


def credentials_file(env: Mapping[str, str]) -> Path:
    """snapws's own credentials file."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(xdg) / "snapws" / "credentials.toml"


def find_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials for registry ``host`` (``name`` or ``name:port``), or
    None. Raises AuthError for a credentials file that cannot be read."""
    env = os.environ if env is None else env
    if env.get(ENV_TOKEN):
        return Credentials(token=env[ENV_TOKEN], source=f"${ENV_TOKEN}")
    if env.get(ENV_USER) or env.get(ENV_PASSWORD):
        if not (env.get(ENV_USER) and env.get(ENV_PASSWORD)):
            raise AuthError(f"set both {ENV_USER} and {ENV_PASSWORD}, or neither")
        return Credentials(env[ENV_USER], env[ENV_PASSWORD], source=f"${ENV_USER}")
    found = _from_snapws_file(credentials_file(env), host)
    if found is not None:
        return found
    for path in auth_files(env):
        found = _from_auth_json(path, host, env)
        if found is not None:
            return found
    return None


def _from_snapws_file(path: Path, host: str) -> Credentials | None:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        # (tomllib's messages give a position, never the text of the file)
        raise AuthError(f"cannot read the credentials file {path}: {e}") from None
    entry = data.get(host)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
        raise AuthError(f"{path}: [{host!r}] must be a table of strings")
    unknown = set(entry) - {"username", "password", "token"}
    if unknown:
        raise AuthError(f"{path}: [{host!r}] has unknown keys {sorted(unknown)}")
    if entry.get("token"):
        return Credentials(token=entry["token"], source=str(path))
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], source=str(path))
    raise AuthError(f"{path}: [{host!r}] needs username and password, or token")


def _normalise_key(key: str) -> str:
    """auth.json keys may be ``host``, ``https://host`` or ``https://host/v1/``."""
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


HELPER_TIMEOUT = 30.0  # seconds a credential helper may take (it may ask a keychain)
MAX_HELPER_OUTPUT = 1 << 20


def _helper_for(data: object, host: str) -> str | None:
    """The credential helper an auth file names for ``host``: its
    ``credHelpers`` entry, else ``credsStore`` (None: neither)."""
    if not isinstance(data, dict):
        return None
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _normalise_key(str(key)) == host and isinstance(name, str) and name:
                return name
    store = data.get("credsStore")
    return store if isinstance(store, str) and store else None


def run_helper(name: str, host: str, path: Path, env: Mapping[str, str]) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for ``host``'s credentials, as
    docker and podman do (the host on stdin, ``{"Username", "Secret"}`` on
    stdout; a user name ``<token>`` means the secret is a token). None when
    the helper has none for the host (it exits non-zero saying so). Raises
    AuthError naming the helper and the host, never its output, when the
    helper is missing, fails otherwise or answers something unusable."""
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise AuthError(f"{path}: {name!r} is not a credential helper name")
    program = f"docker-credential-{name}"
    exe = shutil.which(program, path=env.get("PATH", os.defpath))
    where = f"credential helper {program} (named in {path})"
    if exe is None:
        raise AuthError(
            f"{where} is not installed (not found on PATH)",
            hint=f"install {program}, or remove it from {path}",
        )
    try:
        proc = subprocess.run(
            [exe, "get"],
            input=host.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        what = "timed out" if isinstance(e, subprocess.TimeoutExpired) else f"failed: {e}"
        raise AuthError(f"{where} {what} for {host}") from None
    if proc.returncode != 0:
        said = proc.stdout + proc.stderr
        if b"not found" in said.lower() or b"no credentials" in said.lower():
            return None  # docker's "credentials not found in native keychain"
        raise AuthError(f"{where} exited {proc.returncode} for {host}")
    try:
        if len(proc.stdout) > MAX_HELPER_OUTPUT:
            raise ValueError("too long")
        answer = json.loads(proc.stdout)
        user, secret = answer["Username"], answer["Secret"]
        if not isinstance(user, str) or not isinstance(secret, str) or not secret:
            raise ValueError("no Username or Secret")
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"{where} answered something other than JSON credentials") from None
    source = f"{program} ({path})"
    if user == "<token>":
        return Credentials(token=secret, source=source)
    return Credentials(user, secret, source=source)


def _from_auth_json(
    path: Path, host: str, env: Mapping[str, str] | None = None
) -> Credentials | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise AuthError(f"cannot read the auth file {path} (not JSON)") from None
    helper = _helper_for(data, host)
    if helper is not None:
        found = run_helper(helper, host, path, os.environ if env is None else env)
        if found is not None:
            return found
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {host}
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        wanted |= {"docker.io", "registry-1.docker.io", "index.docker.io"}
    for key, entry in auths.items():
        if _normalise_key(str(key)) not in wanted or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthError(f"{path}: the auth of {key!r} is not base64 of user:pass") from None
            if not sep:
                raise AuthError(f"{path}: the auth of {key!r} is not base64 of user:pass")
            return Credentials(user, password, source=str(path))
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"], source=str(path))
    return None


# ---- challenges (WWW-Authenticate) -------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``scheme`` (lowercase) and params."""

    scheme: str
    params: dict[str, str]

    @property
    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (one or more challenges)."""
    out: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        m = re.match(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)\s*", text[pos:])
        if m is None:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM.match(text, pos)
            if pm is None:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


def token_request_url(challenge: Challenge, scopes: list[str]) -> str:
    """The URL to ask a bearer challenge's realm for a token with ``scopes``.
    Raises AuthError if the challenge names no realm."""
    realm = challenge.params.get("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise AuthError(f"the registry's bearer challenge names no usable realm ({realm!r})")
    query: list[tuple[str, str]] = []
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    query.extend(("scope", s) for s in scopes)
    sep = "&" if "?" in realm else "?"
    return realm + (sep + urlencode(query) if query else "")


def parse_token_response(body: bytes) -> str:
    """The token of a token endpoint's JSON answer (``token`` or
    ``access_token``). Raises AuthError."""
    try:
        data = json.loads(body)
    except ValueError:
        raise AuthError("the registry's token service did not answer JSON") from None
    token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthError("the registry's token service answered without a token")
    return token


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (and its base64 forms in headers) masked."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
