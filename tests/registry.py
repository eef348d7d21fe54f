"""A real OCI registry for tests: the CNCF Distribution registry
(``/usr/bin/docker-registry``, Debian package docker-registry) serving on
127.0.0.1, storing under a test's tmp_path.

    with running_registry(tmp_path / "reg", htpasswd=("user", "pass")) as reg:
        reg.url              # "127.0.0.1:PORT"
        reg.stop(); reg.start()   # same port, same storage, same secret

Also two small 127.0.0.1 HTTP servers used in front of it:

- :class:`CuttingProxy` forwards requests and, when its ``cut`` callback
  says so, drops a connection mid-request (to test resume);
- :class:`TokenAuthProxy` implements the distribution spec's bearer-token
  challenge (``WWW-Authenticate: Bearer realm=...,service=...,scope=...``) and
  its token endpoint (basic credentials in, a random token out), and forwards
  authorised requests to a registry without auth.

The fixtures that use these (``registry``, ``auth_registry``...) live in
tests/remote/conftest.py; other test packages can import this module.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from snapws.ids import BlobDigest

REGISTRY_BIN = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0

CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
{auth}"""

HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: snapws-test
    path: {htpasswd}
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_v2(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``http://127.0.0.1:PORT/v2/`` answers (200 or 401)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the registry exited with {proc.returncode} while starting")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/")
            status = conn.getresponse().status
            conn.close()
            if status in (200, 401):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the registry on port {port} did not answer /v2/ in time")
        time.sleep(0.05)


@dataclass
class Registry:
    """A registry process (see the module docstring)."""

    root: Path
    htpasswd: tuple[str, str] | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    secret: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        auth = ""
        if self.htpasswd is not None:
            user, password = self.htpasswd
            line = subprocess.run(
                ["htpasswd", "-Bbn", user, password],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            (self.root / "htpasswd").write_text(line + "\n")
            auth = HTPASSWD_AUTH.format(htpasswd=self.root / "htpasswd")
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(data=self.data, port=self.port, secret=self.secret, auth=auth)
        )

    def start(self) -> None:
        """Start (or restart) the registry; waits until /v2/ answers."""
        assert self.proc is None, "already running"
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            self.write_config()
            log = open(self.root / "registry.log", "ab")  # noqa: SIM115 (kept by Popen)
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            log.close()
            try:
                wait_for_v2(self.port, self.proc)
                return
            except RuntimeError:
                self.stop()
                if b"address already in use" not in self.log().encode():
                    raise
                self.port = 0  # someone took the port meanwhile: another one
        raise RuntimeError("could not start the registry on a free port")

    def stop(self) -> None:
        """Stop the registry (SIGTERM, then SIGKILL); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def log(self) -> str:
        try:
            return (self.root / "registry.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- looking inside (tests check what the registry really holds) -------------
    def repo_dir(self, repo: str) -> Path:
        return self.data / "docker" / "registry" / "v2" / "repositories" / repo

    def tags(self, repo: str) -> list[str]:
        d = self.repo_dir(repo) / "_manifests" / "tags"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def has_blob_data(self, digest: BlobDigest | str) -> bool:
        """True if the registry's storage holds blob ``digest`` (a digest or
        its text, as a manifest's JSON gives it)."""
        hexd = str(digest).split(":", 1)[1]
        blob = self.data / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
        return blob.is_file()

    def linked_layers(self, repo: str) -> set[str]:
        """Digests the repository links (blobs it may serve)."""
        d = self.repo_dir(repo) / "_layers" / "sha256"
        return {f"sha256:{p.name}" for p in d.iterdir()} if d.is_dir() else set()


@contextlib.contextmanager
def running_registry(root: Path, htpasswd: tuple[str, str] | None = None) -> Iterator[Registry]:
    """A started :class:`Registry`, stopped (and its storage removed) on exit,
    whatever happens."""
    reg = Registry(root, htpasswd)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)


# ---- HTTP servers in front of a registry ------------------------------------------

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade"}


class _ForwardingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        srv.owner.seen.append((self.command, self.path))
        if srv.owner.before(self):
            return
        cut = srv.owner.cut(self.command, self.path, length) if srv.owner.cut else None
        body = b""
        if cut is not None:
            body = self.rfile.read(min(cut, length)) if cut else b""
            if cut and srv.owner.forward_partial:
                self._pass(body, length_override=len(body))
            srv.owner.cuts += 1
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if length:
            body = self.rfile.read(length)
        self._pass(body)

    def _pass(self, body: bytes, length_override: int | None = None) -> None:
        srv = self.server
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        if length_override is not None:
            headers["Content-Length"] = str(length_override)
        conn = http.client.HTTPConnection("127.0.0.1", srv.owner.upstream_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if length_override is not None:
                return  # the client is being cut off: it gets no answer
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_HEADERS and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            owner = srv.owner
            keep = owner.cut_response(self.command, self.path) if owner.cut_response else None
            if keep is not None and self.command != "HEAD":
                owner.cuts += 1
                self.wfile.write(data[:keep])  # then drop the connection mid-body
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Proxy


class Proxy:
    """A 127.0.0.1 HTTP proxy in front of ``upstream_port`` (run it with
    ``with``). ``cut(method, path, content_length)`` returns None (forward)
    or how many body bytes to read before dropping the connection (0: drop
    at once; with ``forward_partial`` the partial body reaches the registry
    first, as when a client dies mid-upload). ``cut_response(method, path)``
    returns None or how many bytes of the registry's answer body to pass on
    before dropping the connection. ``seen`` lists every request."""

    def __init__(
        self,
        upstream_port: int,
        cut: Callable[[str, str, int], int | None] | None = None,
        forward_partial: bool = False,
        cut_response: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.cut_response = cut_response
        self.forward_partial = forward_partial
        self.cuts = 0
        self.seen: list[tuple[str, str]] = []
        self.server = _ProxyServer(("127.0.0.1", 0), _ForwardingHandler)
        self.server.owner = self
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def before(self, handler: _ForwardingHandler) -> bool:
        """Hook for subclasses: True if the request was answered here."""
        return False

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class TokenAuthProxy(Proxy):
    """Bearer-token auth as the distribution spec defines it, in front of a
    registry without auth. Requests under /v2/ need ``Authorization: Bearer
    T`` for a token T issued by ``GET /token?service=...&scope=...`` with
    basic credentials ``user``/``password``; otherwise 401 with the
    challenge (the scope names the repository and the actions the request
    needs). ``issued`` records each token request's scopes."""

    SERVICE = "snapws-test-registry"

    def __init__(self, upstream_port: int, user: str, password: str) -> None:
        super().__init__(upstream_port)
        self.user = user
        self.password = password
        self.tokens: dict[str, set[str]] = {}  # token -> granted scopes
        self.issued: list[list[str]] = []

    def before(self, handler: _ForwardingHandler) -> bool:
        parts = urlsplit(handler.path)
        if parts.path == "/token":
            self._token(handler, parse_qs(parts.query))
            return True
        need = self._scope_needed(handler.command, parts.path, parse_qs(parts.query))
        auth = handler.headers.get("Authorization") or ""
        granted = self.tokens.get(auth[7:], set()) if auth.startswith("Bearer ") else set()
        if need and not set(need) <= granted:
            actions: dict[str, list[str]] = {}
            for atom in need:
                repo, action = atom.rsplit(":", 1)
                actions.setdefault(repo, []).append(action)
            scope = " ".join(f"{repo}:{','.join(acts)}" for repo, acts in actions.items())
            challenge = (
                f'Bearer realm="http://{self.url}/token",service="{self.SERVICE}",scope="{scope}"'
            )
            body = json.dumps(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            ).encode()
            self._answer(handler, 401, body, {"WWW-Authenticate": challenge})
            return True
        return False

    @staticmethod
    def _scope_needed(method: str, path: str, query: dict[str, list[str]]) -> list[str]:
        """``repository:NAME:ACTION`` for each action the request needs."""
        if not path.startswith("/v2/") or path == "/v2/":
            return []
        rest = path[len("/v2/") :]
        for marker in ("/blobs/", "/manifests/", "/tags/"):
            if marker in rest:
                repo = rest.split(marker, 1)[0]
                break
        else:
            return []
        out = [f"repository:{repo}:pull"]
        if method not in ("GET", "HEAD"):
            out.append(f"repository:{repo}:push")
        if "from" in query:
            out.append(f"repository:{query['from'][0]}:pull")
        return out

    def _token(self, handler: _ForwardingHandler, query: dict[str, list[str]]) -> None:
        auth = handler.headers.get("Authorization") or ""
        expect = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if auth != expect or query.get("service") != [self.SERVICE]:
            self._answer(handler, 401, b'{"details":"bad credentials"}', {})
            return
        scopes = query.get("scope", [])
        self.issued.append(scopes)
        granted = set()
        for s in scopes:  # "repository:NAME:pull,push" -> one entry per action
            kind, name, actions = s.rsplit(":", 2) if s.count(":") >= 2 else ("", "", "")
            granted |= {f"{kind}:{name}:{a}" for a in actions.split(",") if a}
        token = secrets.token_hex(16)
        self.tokens[token] = granted
        self._answer(handler, 200, json.dumps({"token": token, "expires_in": 300}).encode(), {})

    @staticmethod
    def _answer(
        handler: _ForwardingHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        handler.send_response_only(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
