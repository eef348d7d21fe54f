"""Credentials against real registries: htpasswd (basic auth) on the
Distribution registry, and bearer tokens (the distribution spec's challenge
and token endpoint) through TokenAuthProxy in front of one. The secret
never appears in what snapws prints."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory
from registry import Registry, TokenAuthProxy

from snapws.errors import AuthError
from snapws.remote.registry import RegistryRemote
from snapws.remote.url import parse_remote_url

from .conftest import FAST_RETRY, PASSWORD, USER

REPO = "team/secure"


def base_env(tmp_path: Path) -> dict[str, str]:
    """No credentials anywhere: HOME, XDG dirs and auth files under tmp_path."""
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }


def user_env(tmp_path: Path, user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {
        **base_env(tmp_path),
        "SNAPWS_REGISTRY_USERNAME": user,
        "SNAPWS_REGISTRY_PASSWORD": password,
    }


@pytest.fixture
def ws(make_workspace: WorkspaceFactory, auth_registry: Registry) -> Workspace:
    w = make_workspace("ws", {"f": "content", "d": {"g": "more"}})
    w.run("remote", "add", "origin", f"{auth_registry.url}/{REPO}", "--insecure")
    return w


def test_missing_credentials(ws: Workspace, tmp_path: Path) -> None:
    res = ws.run("push", env=base_env(tmp_path), check=False)
    assert res.returncode == 14, res.stderr
    assert "requires credentials and none were found" in res.stderr
    for place in ("SNAPWS_REGISTRY_USERNAME", "credentials.toml", "auth.json"):
        assert place in res.stderr  # the hint says where credentials are read from


def test_wrong_password_is_refused_and_never_printed(
    ws: Workspace, tmp_path: Path, auth_registry: Registry
) -> None:
    wrong = "Wr0ng-secret-991"
    res = ws.run("push", env=user_env(tmp_path, password=wrong), check=False)
    assert res.returncode == 14, res.stderr
    assert f"refused the credentials (user {USER!r} from $SNAPWS_REGISTRY_USERNAME)" in res.stderr
    encoded = base64.b64encode(f"{USER}:{wrong}".encode()).decode()
    for text in (res.stdout, res.stderr):
        assert wrong not in text and encoded not in text
    assert auth_registry.tags(REPO) == []


def test_environment_credentials(ws: Workspace, tmp_path: Path, auth_registry: Registry) -> None:
    out = json.loads(ws.run("push", "--json", env=user_env(tmp_path)).stdout)
    assert out["blobs_sent"] == out["blobs"]
    assert auth_registry.tags(REPO) == ["main"]
    res = ws.run("fetch", "--json", env=user_env(tmp_path))
    assert json.loads(res.stdout)["tags"][0]["tag"] == "main"
    assert PASSWORD not in res.stdout + res.stderr


def test_auth_json_credentials(ws: Workspace, tmp_path: Path, auth_registry: Registry) -> None:
    auth = tmp_path / "containers-auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {auth_registry.url: {"auth": token}}}))
    env = {**base_env(tmp_path), "REGISTRY_AUTH_FILE": str(auth)}
    ws.run("push", env=env)
    assert auth_registry.tags(REPO) == ["main"]


def test_docker_config_credentials(ws: Workspace, tmp_path: Path, auth_registry: Registry) -> None:
    config = tmp_path / "home" / ".docker" / "config.json"
    config.parent.mkdir(parents=True)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{auth_registry.url}": {"auth": token}}}))
    ws.run("push", env=base_env(tmp_path))
    assert auth_registry.tags(REPO) == ["main"]


def test_credentials_file(ws: Workspace, tmp_path: Path, auth_registry: Registry) -> None:
    path = tmp_path / "config" / "snapws" / "credentials.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f'["{auth_registry.url}"]\nusername = "{USER}"\npassword = "{PASSWORD}"\n')
    ws.run("push", env=base_env(tmp_path))
    assert auth_registry.tags(REPO) == ["main"]


def test_bearer_token_auth(
    make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path
) -> None:
    with TokenAuthProxy(registry.port, USER, PASSWORD) as proxy:
        ws = make_workspace("ws", {"f": "bearer"})
        ws.run("remote", "add", "origin", f"{proxy.url}/{REPO}", "--insecure")
        ws.run("remote", "add", "mirror", f"{proxy.url}/team/mirror", "--insecure")
        out = json.loads(ws.run("push", "--json", env=user_env(tmp_path)).stdout)
        assert out["blobs_sent"] == out["blobs"]
        # tokens are cached per scope: one for the repository, one that also
        # reads the other remote's repository (to try mounting blobs from it)
        assert proxy.issued == [
            [f"repository:{REPO}:pull", f"repository:{REPO}:pull,push"],
            [f"repository:{REPO}:pull,push", "repository:team/mirror:pull"],
        ]
        # a second repository of the same registry mounts the blobs instead
        mirror = json.loads(ws.run("push", "mirror", "--json", env=user_env(tmp_path)).stdout)
        assert mirror["blobs_mounted"] == mirror["blobs"] and mirror["bytes_sent"] == 0
        assert registry.tags("team/mirror") == ["main"]
        bad = ws.run("push", env=user_env(tmp_path, password="nope-nope"), check=False)
        assert bad.returncode == 14 and "token service refused the credentials" in bad.stderr
        assert "nope-nope" not in bad.stdout + bad.stderr
        anon = ws.run("fetch", env=base_env(tmp_path), check=False)
        assert anon.returncode == 14 and "requires credentials" in anon.stderr


def test_token_credentials_are_sent_as_bearer(registry: Registry) -> None:
    url = parse_remote_url(f"{registry.url}/{REPO}", insecure=True)
    with TokenAuthProxy(registry.port, USER, PASSWORD) as proxy:
        url = parse_remote_url(f"{proxy.url}/{REPO}", insecure=True)
        users = {"SNAPWS_REGISTRY_USERNAME": USER, "SNAPWS_REGISTRY_PASSWORD": PASSWORD}
        assert RegistryRemote(url, retry=FAST_RETRY, env=users).list_tags() == []
        (token,) = proxy.tokens
        issued = len(proxy.issued)
        good = RegistryRemote(url, retry=FAST_RETRY, env={"SNAPWS_REGISTRY_TOKEN": token})
        assert good.list_tags() == []
        assert len(proxy.issued) == issued  # sent as is, no token service round trip
        bad = RegistryRemote(url, retry=FAST_RETRY, env={"SNAPWS_REGISTRY_TOKEN": "forged"})
        with pytest.raises(AuthError) as e:
            bad.list_tags()
        assert "refused the credentials (a token from $SNAPWS_REGISTRY_TOKEN)" in str(e.value)
        assert "forged" not in str(e.value)
