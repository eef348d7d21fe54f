"""HTTP for registries, on the standard library: persistent connections,
the distribution spec's auth (basic, and bearer tokens from a challenge's
realm), redirects, and retries with backoff for idempotent requests.

Nothing here prints. Secrets never reach messages: errors carry the URL
(which never holds credentials), the status and the registry's error code.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from snapws.errors import AuthError, RemoteError
from snapws.remote.auth import (
    Challenge,
    Credentials,
    find_credentials,
    parse_challenges,
    parse_token_response,
    token_request_url,
)
from snapws.remote.base import TransferStats

USER_AGENT = "snapws"
#: statuses worth repeating an idempotent request for
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: network failures (the connection was refused, reset, cut or timed out)
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    http.client.HTTPException,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to repeat a failed request: ``attempts``
    tries in all, waiting ``delay`` seconds, doubled each time up to
    ``max_delay`` (a ``Retry-After`` answer is honoured up to ``max_delay``)."""

    attempts: int = 5
    delay: float = 0.5
    max_delay: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def wait(self, attempt: int, retry_after: str | None = None) -> None:
        """Sleep before try number ``attempt + 1`` (``attempt`` counts from 1)."""
        pause = min(self.delay * (2 ** (attempt - 1)), self.max_delay)
        if retry_after and retry_after.strip().isdigit():
            pause = min(float(retry_after.strip()), self.max_delay)
        self.sleep(pause)


@dataclass(slots=True)
class Response:
    """A finished response: status, headers (lowercase names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def registry_error_text(body: bytes) -> str:
    """``CODE: message`` of a registry's JSON error body ('' if none)."""
    try:
        data = json.loads(body)
        errors = data.get("errors") or []
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors)
    except (ValueError, AttributeError, TypeError):
        return ""


class HttpClient:
    """Requests to one registry (``https://HOST`` or, ``insecure``,
    ``http://HOST``), authenticated as the distribution spec says.

    ``credentials`` is looked up lazily (first 401) unless given."""

    def __init__(
        self,
        host: str,
        insecure: bool = False,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        stats: TransferStats | None = None,
        credentials: Credentials | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.insecure = insecure
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.stats = stats or TransferStats()
        self._credentials = credentials
        self._looked_up = credentials is not None
        self._env = env
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for basic auth

    # ---- credentials -------------------------------------------------------------
    def credentials(self) -> Credentials | None:
        if not self._looked_up:
            self._credentials = find_credentials(self.host, self._env)
            self._looked_up = True
        return self._credentials

    def _auth_header(self, scope: str, same_host: bool) -> str | None:
        """What to send as ``Authorization`` (None: nothing yet; the first
        401 tells which scheme the registry wants)."""
        if not same_host:
            return None  # never hand our credentials to a redirect's host
        creds = self._credentials if self._looked_up else None
        if creds is not None and creds.token:
            return "Bearer " + creds.token
        if scope in self._tokens:
            return "Bearer " + self._tokens[scope]
        if self._basic and creds is not None:
            return creds.basic_header()
        return None

    # ---- connections -------------------------------------------------------------
    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conn = self._conns.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    netloc, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
            self._conns[key] = conn
        return conn

    def drop_connections(self) -> None:
        """Close every connection (the next request opens a new one)."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    close = drop_connections

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path)

    # ---- one exchange --------------------------------------------------------------
    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        scope: str = "",
        *,
        follow: bool = True,
    ) -> http.client.HTTPResponse:
        """Send one request and return the response with its body unread
        (read it fully, or call :meth:`drop_connections`). Answers 401 by
        authenticating once (raising AuthError if refused); follows
        redirects of GET/HEAD. Raises the network error itself (OSError,
        HTTPException): callers decide about retrying."""
        authed = False
        for _hop in range(6):
            parts = urlsplit(url)
            same_host = parts.netloc == urlsplit(self.base).netloc
            hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
            auth = self._auth_header(scope, same_host)
            if auth:
                hdrs["Authorization"] = auth
            resp = self._exchange(method, parts.scheme, parts.netloc, _target(url), hdrs, body)
            if resp.status == 401 and same_host and not authed:
                challenge_hdr = resp.getheader("WWW-Authenticate") or ""
                resp.read()
                self._authenticate(challenge_hdr, scope, auth is not None)
                authed = True
                continue
            if resp.status == 401:
                resp.read()
                raise self._refused(scope)
            if follow and method in ("GET", "HEAD") and resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location") or ""
                resp.read()
                if not location:
                    raise RemoteError(f"{url}: redirect without a Location")
                url = urljoin(url, location)
                continue
            return resp
        raise RemoteError(f"{url}: too many redirects")

    def _exchange(
        self,
        method: str,
        scheme: str,
        netloc: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> http.client.HTTPResponse:
        conn = self._conn(scheme, netloc)
        reused = conn.sock is not None
        self.stats.requests += 1
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            return conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            if not (reused and method in ("GET", "HEAD")):
                raise
        except BaseException:
            conn.close()
            raise
        # a kept-alive connection the server had closed meanwhile: one fresh try
        self.stats.requests += 1
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            return conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _refused(self, scope: str) -> AuthError:
        """The error for a 401 that authenticating did not cure."""
        creds = self.credentials()
        if creds is None:
            return AuthError(f"{self.host} requires credentials and none were found")
        if scope in self._tokens:  # the token service accepted us, the registry did not
            return AuthError(
                f"{self.host} refused access for {creds.describe()}: the token it issued "
                f"does not allow {scope or 'this request'}",
                hint="check that the repository exists and that this user may push/pull it",
            )
        return AuthError(f"{self.host} refused the credentials ({creds.describe()})")

    def _authenticate(self, header: str, scope: str, had_auth: bool) -> None:
        challenges = parse_challenges(header)
        creds = self.credentials()
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None and not (creds is not None and creds.token):
            self._tokens[scope] = self._fetch_token(bearer, scope, creds)
            return
        if basic is not None or bearer is not None:
            if creds is None:
                raise AuthError(f"{self.host} requires credentials and none were found")
            if had_auth:
                raise AuthError(f"{self.host} refused the credentials ({creds.describe()})")
            self._basic = True
            return
        raise AuthError(f"{self.host} answered 401 without a challenge snapws understands")

    def _fetch_token(self, challenge: Challenge, scope: str, creds: Credentials | None) -> str:
        scopes = list(dict.fromkeys([*challenge.scopes, *scope.split()]))
        url = token_request_url(challenge, scopes)
        parts = urlsplit(url)
        headers = {"User-Agent": USER_AGENT}
        if creds is not None and creds.username:
            headers["Authorization"] = creds.basic_header()
        try:
            resp = self._exchange("GET", parts.scheme, parts.netloc, _target(url), headers, None)
            body = resp.read()
        except NETWORK_ERRORS as e:
            raise RemoteError(f"cannot reach the token service of {self.host}: {e}") from None
        if resp.status in (401, 403):
            if creds is None:
                raise AuthError(f"{self.host} requires credentials and none were found")
            raise AuthError(
                f"{self.host}'s token service refused the credentials ({creds.describe()})"
            )
        if resp.status != 200:
            raise AuthError(f"{self.host}'s token service answered {resp.status}")
        return parse_token_response(body)

    # ---- whole requests, with retries ------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        scope: str = "",
        *,
        ok: tuple[int, ...] = (200,),
        also: tuple[int, ...] = (),
        retry: bool = True,
        follow: bool = True,
    ) -> Response:
        """A request whose whole answer is read. Statuses in ``ok`` or
        ``also`` are returned; others raise RemoteError (after retries, if
        ``retry``, for network errors, 408/429/5xx). Raises AuthError."""
        attempts = self.retry.attempts if retry else 1
        last = ""
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                resp = self.send(method, url, headers, body, scope, follow=follow)
                data = resp.read()  # (HEAD: b"", and the connection is free again)
            except NETWORK_ERRORS as e:
                self.drop_connections()
                last = _network_text(e)
                if isinstance(e, ssl.SSLError) or (
                    isinstance(e, http.client.BadStatusLine) and not self.insecure
                ):
                    raise self._network_error(url, last) from None
            else:
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.drop_connections()
                if resp.status in ok or resp.status in also:
                    return Response(resp.status, hdrs, data, url)
                text = registry_error_text(data)
                last = f"{resp.status} {resp.reason}" + (f" ({text})" if text else "")
                if resp.status == 403:
                    creds = self.credentials()
                    who = creds.describe() if creds else "without credentials"
                    raise AuthError(f"{self.host} denied {method} {_short(url)}: {last} ({who})")
                if resp.status not in RETRY_STATUSES:
                    raise RemoteError(f"{method} {url}: {last}")
                retry_after = hdrs.get("retry-after")
            if attempt < attempts:
                self.stats.retries += 1
                self.retry.wait(attempt, retry_after)
        raise self._network_error(url, last, attempts)

    def _network_error(self, url: str, text: str, attempts: int = 1) -> RemoteError:
        tries = f" (after {attempts} tries)" if attempts > 1 else ""
        hint = None
        if not self.insecure and ("SSL" in text or "BadStatusLine" in text or "HTTP/" in text):
            hint = (
                "if the registry speaks plain HTTP (such as one on 127.0.0.1), re-add the "
                "remote with --insecure"
            )
        return RemoteError(f"cannot reach {url}: {text}{tries}", hint=hint)


def _network_text(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    return text if type(e).__name__ in text else f"{type(e).__name__}: {text}"


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _short(url: str) -> str:
    return urlsplit(url).path
