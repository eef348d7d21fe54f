"""Remote URLs and names: what is accepted, and the errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapws.errors import BadNameError, BadRemoteUrlError, ExitCode
from snapws.remote.url import RemoteSpec, parse_remote_url, validate_remote_name


@pytest.mark.parametrize(
    ("text", "host", "repo"),
    [
        ("127.0.0.1:5000/team/cache", "127.0.0.1:5000", "team/cache"),
        ("docker://registry.example.com/a/b/c", "registry.example.com", "a/b/c"),
        ("localhost:443/x", "localhost:443", "x"),
        ("ghcr.io/org/build-cache_2.x/", "ghcr.io", "org/build-cache_2.x"),
        ("docker.io/alpine", "docker.io", "library/alpine"),
        ("[::1]:5000/r", "[::1]:5000", "r"),
    ],
)
def test_registry_urls(text: str, host: str, repo: str) -> None:
    spec = parse_remote_url(text)
    assert (spec.kind, spec.host, spec.repository, spec.insecure) == ("registry", host, repo, False)
    assert spec.url == f"{host}/{repo}"


def test_docker_hub_api_host() -> None:
    assert parse_remote_url("docker.io/library/alpine").api_host == "registry-1.docker.io"
    assert parse_remote_url("127.0.0.1:5000/r").api_host == "127.0.0.1:5000"


def test_insecure_is_kept() -> None:
    assert parse_remote_url("127.0.0.1:5000/r", insecure=True).insecure


@pytest.mark.parametrize("prefix", ["dir:", "oci:", "oci://"])
def test_directory_urls(prefix: str, tmp_path: Path) -> None:
    spec = parse_remote_url(f"{prefix}{tmp_path}/layout")
    assert spec == RemoteSpec("dir", path=tmp_path / "layout")
    assert spec.url == f"oci:{tmp_path}/layout"


def test_relative_directory_is_taken_from_cwd(tmp_path: Path) -> None:
    assert parse_remote_url("dir:out/../lay", cwd=tmp_path).path == tmp_path / "lay"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("registry.example.com", "names no repository"),
        ("https://registry.example.com/r", "unsupported URL scheme 'https'"),
        ("user:pw@host/r", "must not carry credentials"),
        ("host:0/r", "bad port"),
        ("host:99999/r", "bad port"),
        ("host:/r", "empty port"),
        ("bad_host!/r", "not a host name"),
        ("host/Upper", "component 'Upper' is invalid"),
        ("host/a//b", "component '' is invalid"),
        ("host/repo:tag", "not a tag or digest"),
        ("host/repo@sha256:00", "not a tag or digest"),
        ("dir:", "names no directory"),
        ("host/" + "a" * 256, "longer than 255"),
    ],
)
def test_bad_urls(text: str, why: str) -> None:
    with pytest.raises(BadRemoteUrlError) as e:
        parse_remote_url(text)
    assert why in e.value.message
    assert e.value.exit_code == ExitCode.USAGE


def test_insecure_directory_is_refused() -> None:
    with pytest.raises(BadRemoteUrlError, match="registries, not to directories"):
        parse_remote_url("dir:/tmp/x", insecure=True)


@pytest.mark.parametrize("name", ["origin", "ci-cache", "a", "team.cache_2", "A1"])
def test_good_remote_names(name: str) -> None:
    validate_remote_name(name)


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a b", "x" * 65, "a:b", "..", "é"])
def test_bad_remote_names(name: str) -> None:
    with pytest.raises(BadNameError) as e:
        validate_remote_name(name)
    assert e.value.exit_code == ExitCode.BAD_NAME
