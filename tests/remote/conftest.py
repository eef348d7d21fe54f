"""Fixtures for remote tests: real registries on 127.0.0.1 (tests/registry.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from registry import Registry, running_registry

from snapws.remote.http import RetryPolicy

USER = "ci-user"
PASSWORD = "s3cret-Pa55word-xyz"

RegistryFactory = Callable[..., Registry]


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[RegistryFactory]:
    """``make(htpasswd=None)``: start a registry storing under tmp_path;
    every one is stopped (and its storage removed) after the test."""
    with ExitStack() as stack:
        count = 0

        def make(htpasswd: tuple[str, str] | None = None) -> Registry:
            nonlocal count
            count += 1
            return stack.enter_context(running_registry(tmp_path / f"registry-{count}", htpasswd))

        yield make


@pytest.fixture
def registry(make_registry: RegistryFactory) -> Registry:
    """A registry without auth."""
    return make_registry()


@pytest.fixture
def auth_registry(make_registry: RegistryFactory) -> Registry:
    """A registry with htpasswd auth: USER / PASSWORD."""
    return make_registry((USER, PASSWORD))


#: retries without waiting (tests must not sleep)
FAST_RETRY = RetryPolicy(attempts=4, delay=0.0, max_delay=0.0, sleep=lambda _s: None)
