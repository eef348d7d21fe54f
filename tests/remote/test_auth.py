"""Where credentials come from (in order), auth challenges, and secrets
that never reach messages. No network here: see test_auth_registry.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from snapws.errors import AuthError
from snapws.remote.auth import (
    Credentials,
    find_credentials,
    parse_challenges,
    parse_token_response,
    token_request_url,
)

HOST = "127.0.0.1:5000"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose files all live under tmp_path (none exist yet)."""
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        **extra,
    }


def write_auth_json(path: Path, key: str, user: str, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {key: {"auth": token}}}))


def write_credentials(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "snapws" / "credentials.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_nothing_configured(tmp_path: Path) -> None:
    assert find_credentials(HOST, env_for(tmp_path)) is None


def test_environment_comes_first(tmp_path: Path) -> None:
    write_credentials(tmp_path, f'["{HOST}"]\nusername = "file"\npassword = "f"\n')
    env = env_for(tmp_path, SNAPWS_REGISTRY_USERNAME="envuser", SNAPWS_REGISTRY_PASSWORD="pw")
    creds = find_credentials(HOST, env)
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == (
        "envuser",
        "pw",
        "$SNAPWS_REGISTRY_USERNAME",
    )


def test_environment_token(tmp_path: Path) -> None:
    creds = find_credentials(HOST, env_for(tmp_path, SNAPWS_REGISTRY_TOKEN="tok"))
    assert creds is not None and creds.token == "tok" and not creds.username


def test_half_an_environment_pair_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="set both"):
        find_credentials(HOST, env_for(tmp_path, SNAPWS_REGISTRY_USERNAME="u"))


def test_credentials_file_by_host(tmp_path: Path) -> None:
    path = write_credentials(
        tmp_path,
        f'["{HOST}"]\nusername = "u1"\npassword = "p1"\n\n["other:1"]\ntoken = "t"\n',
    )
    creds = find_credentials(HOST, env_for(tmp_path))
    assert creds is not None and (creds.username, creds.password) == ("u1", "p1")
    assert creds.source == str(path)
    other = find_credentials("other:1", env_for(tmp_path))
    assert other is not None and other.token == "t"
    assert find_credentials("third", env_for(tmp_path)) is None


def test_credentials_file_errors_do_not_quote_the_file(tmp_path: Path) -> None:
    write_credentials(tmp_path, f'["{HOST}"]\npassword = "topsecret\n')
    with pytest.raises(AuthError) as e:
        find_credentials(HOST, env_for(tmp_path))
    assert "topsecret" not in str(e.value)
    write_credentials(tmp_path, f'["{HOST}"]\nusername = "u"\n')
    with pytest.raises(AuthError, match="needs username and password"):
        find_credentials(HOST, env_for(tmp_path))


@pytest.mark.parametrize("key", [HOST, f"https://{HOST}", f"http://{HOST}/v1/"])
def test_registry_auth_file(tmp_path: Path, key: str) -> None:
    path = tmp_path / "elsewhere" / "auth.json"
    write_auth_json(path, key, "podman", "pp")
    creds = find_credentials(HOST, env_for(tmp_path, REGISTRY_AUTH_FILE=str(path)))
    assert creds is not None and (creds.username, creds.password) == ("podman", "pp")
    assert creds.source == str(path)


def test_auth_files_in_order(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    docker = tmp_path / "home" / ".docker" / "config.json"
    runtime = tmp_path / "run" / "containers" / "auth.json"
    write_auth_json(docker, HOST, "docker", "d")
    creds = find_credentials(HOST, env)
    assert creds is not None and creds.username == "docker"
    write_auth_json(runtime, HOST, "runtime", "r")
    creds = find_credentials(HOST, env)
    assert creds is not None and creds.username == "runtime"
    write_credentials(tmp_path, f'["{HOST}"]\nusername = "snapws"\npassword = "s"\n')
    creds = find_credentials(HOST, env)
    assert creds is not None and creds.username == "snapws"


def test_auth_json_other_hosts_and_docker_hub(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    write_auth_json(path, "https://index.docker.io/v1/", "hub", "h")
    env = env_for(tmp_path, REGISTRY_AUTH_FILE=str(path))
    assert find_credentials(HOST, env) is None
    creds = find_credentials("registry-1.docker.io", env)
    assert creds is not None and creds.username == "hub"


def test_bad_auth_json(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {HOST: {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(AuthError, match="not base64 of user:pass"):
        find_credentials(HOST, env_for(tmp_path, REGISTRY_AUTH_FILE=str(path)))
    path.write_text("{not json")
    with pytest.raises(AuthError, match="not JSON"):
        find_credentials(HOST, env_for(tmp_path, REGISTRY_AUTH_FILE=str(path)))


def test_credentials_never_show_their_secret() -> None:
    creds = Credentials("bob", "hunter2", token="tok-abc", source="x")
    assert "hunter2" not in repr(creds) and "tok-abc" not in repr(creds)
    assert "hunter2" not in creds.describe()
    assert creds.basic_header() == "Basic " + base64.b64encode(b"bob:hunter2").decode()


def test_parse_challenges() -> None:
    (c,) = parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/cache:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:team/cache:pull,push",
    }
    basic, bearer = parse_challenges('Basic realm="x y", Bearer realm="https://a/t"')
    assert (basic.scheme, basic.params, bearer.params) == (
        "basic",
        {"realm": "x y"},
        {"realm": "https://a/t"},
    )


def test_token_request_url() -> None:
    (c,) = parse_challenges('Bearer realm="https://a.example/token",service="reg"')
    url = token_request_url(c, ["repository:x:pull,push", "repository:y:pull"])
    assert url == (
        "https://a.example/token?service=reg&scope=repository%3Ax%3Apull%2Cpush"
        "&scope=repository%3Ay%3Apull"
    )
    (bad,) = parse_challenges('Bearer service="reg"')
    with pytest.raises(AuthError, match="no usable realm"):
        token_request_url(bad, [])


def test_token_responses() -> None:
    assert parse_token_response(b'{"token": "a"}') == "a"
    assert parse_token_response(b'{"access_token": "b"}') == "b"
    with pytest.raises(AuthError, match="without a token"):
        parse_token_response(b"{}")
    with pytest.raises(AuthError, match="did not answer JSON"):
        parse_token_response(b"<html>")
