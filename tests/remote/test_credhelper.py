"""docker/podman credential helpers (``credsStore``, ``credHelpers``): a
small helper program written for the test, on PATH, gives the credentials
of a real htpasswd registry; its secret never shows in what snapws prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory
from registry import Registry

from snapws.errors import AuthError
from snapws.remote.auth import find_credentials

from .conftest import PASSWORD, USER

HOST = "127.0.0.1:5999"

HELPER = """#!/usr/bin/env python3
import json, os, sys
host = sys.stdin.read().strip()
with open(os.environ["HELPER_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + " " + host + "\\n")
known = json.loads(os.environ["HELPER_KNOWS"])
if sys.argv[1:] != ["get"] or host not in known:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = known[host]
print(json.dumps({"ServerURL": host, "Username": user, "Secret": secret}))
"""


def helper_env(
    tmp_path: Path, config: dict[str, object], knows: dict[str, list[str]]
) -> dict[str, str]:
    """HOME and auth files under tmp_path, ``docker-credential-fake`` on PATH
    knowing ``knows`` (host -> [user, secret]), DOCKER_CONFIG's config.json
    holding ``config``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    docker = tmp_path / "docker"
    docker.mkdir(exist_ok=True)
    (docker / "config.json").write_text(json.dumps(config))
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "DOCKER_CONFIG": str(docker),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HELPER_LOG": str(tmp_path / "helper.log"),
        "HELPER_KNOWS": json.dumps(knows),
    }


def test_creds_store_is_asked_with_the_host_on_stdin(tmp_path: Path) -> None:
    env = helper_env(tmp_path, {"credsStore": "fake"}, {HOST: [USER, PASSWORD]})
    creds = find_credentials(HOST, env)
    assert creds is not None and creds.username == USER and creds.password == PASSWORD
    assert "docker-credential-fake" in creds.describe() and PASSWORD not in creds.describe()
    assert PASSWORD not in repr(creds)
    assert (tmp_path / "helper.log").read_text() == f"get {HOST}\n"


def test_cred_helpers_win_over_creds_store_and_auths(tmp_path: Path) -> None:
    config = {
        "credsStore": "absent",
        "credHelpers": {HOST: "fake"},
        "auths": {HOST: {"auth": "dXNlcjpwYXNz"}},
    }
    env = helper_env(tmp_path, config, {HOST: ["helper-user", "helper-secret"]})
    creds = find_credentials(HOST, env)
    assert creds is not None and creds.username == "helper-user"
    # another host: credsStore's helper, which is not installed: an error
    with pytest.raises(AuthError) as e:
        find_credentials("other.example:5000", env)
    assert "docker-credential-absent" in e.value.message and "not installed" in e.value.message


def test_a_helper_without_the_host_lets_auths_answer(tmp_path: Path) -> None:
    config = {"credsStore": "fake", "auths": {HOST: {"auth": "dXNlcjpwYXNz"}}}  # user:pass
    env = helper_env(tmp_path, config, {})
    creds = find_credentials(HOST, env)
    assert creds is not None and (creds.username, creds.password) == ("user", "pass")
    assert find_credentials("nothing.example", env) is None


def test_a_token_from_a_helper(tmp_path: Path) -> None:
    env = helper_env(tmp_path, {"credsStore": "fake"}, {HOST: ["<token>", "tok-123"]})
    creds = find_credentials(HOST, env)
    assert creds is not None and creds.token == "tok-123" and not creds.username


def test_a_broken_helper_is_an_error_that_quotes_nothing(tmp_path: Path) -> None:
    env = helper_env(tmp_path, {"credsStore": "fake"}, {})
    (tmp_path / "bin" / "docker-credential-fake").write_text(
        "#!/bin/sh\necho 'leaked-secret-42'\nexit 3\n"
    )
    with pytest.raises(AuthError) as e:
        find_credentials(HOST, env)
    assert "exited 3" in e.value.message and "leaked-secret-42" not in e.value.message


@pytest.fixture
def ws(make_workspace: WorkspaceFactory, auth_registry: Registry) -> Workspace:
    w = make_workspace("ws", {"f": "content"})
    w.run("remote", "add", "origin", f"{auth_registry.url}/team/helper", "--insecure")
    return w


def test_push_and_pull_with_a_helper_against_a_real_registry(
    ws: Workspace, tmp_path: Path, auth_registry: Registry, make_workspace: WorkspaceFactory
) -> None:
    env = helper_env(tmp_path, {"credsStore": "fake"}, {auth_registry.url: [USER, PASSWORD]})
    out = ws.run("push", env=env)
    assert PASSWORD not in out.stdout + out.stderr
    bob = make_workspace("bob", store=ws.store.parent / "bob-store")
    bob.run("remote", "add", "origin", f"{auth_registry.url}/team/helper", "--insecure")
    bob.run("pull", env=env)
    assert bob.head() == ws.head()
    assert f"get {auth_registry.url}" in (tmp_path / "helper.log").read_text()


def test_wrong_secret_from_a_helper_is_refused_and_never_printed(
    ws: Workspace, tmp_path: Path, auth_registry: Registry
) -> None:
    wrong = "Wr0ng-helper-secret-77"
    env = helper_env(
        tmp_path, {"credHelpers": {auth_registry.url: "fake"}}, {auth_registry.url: [USER, wrong]}
    )
    res = ws.run("push", env=env, check=False)
    assert res.returncode == 14
    assert "docker-credential-fake" in res.stderr and repr(USER) in res.stderr
    assert wrong not in res.stdout + res.stderr
