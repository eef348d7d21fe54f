"""Every ``--json`` document against the one schema of docs/json.md.

:data:`SCHEMA` is that document's tables in code: each command's top-level
keys and their types (exactly those keys: a new key must be documented
here and there). The walk over the CLI finds every command with --json, so
a new one cannot go unchecked; docs/json.md must name each. The rules that
hold everywhere (``version`` first, snapshot ids full, no ``snapshot`` or
``head`` key where ``id`` is meant) are checked on every document."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from registry import Registry, running_registry

from snapws.cli.main import COMMAND_MODULES, cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "json.md"
SID = re.compile(r"^[0-9a-f]{32}$")

# type names: id (a 32-hex snapshot id), str, int, num, bool, list, dict;
# a trailing ? allows null; a dict value describes the items of a list
SNAPSHOT = {
    "id": "id",
    "parents": "list",
    "layer": "str",
    "message": "str",
    "author": "str",
    "time": "str",
    "time_ns": "int",
    "refs": "list",
}
HEAD_MOVE = {"id": "id", "branch": "str?", "previous": "id", "discarded": "int"}
NEW_WORKSPACE = {
    "id": "id",
    "branch": "str",
    "workspace": "str",
    "store": "str",
    "backend": "str",
}
TRANSFER = {
    "requests": "int",
    "blobs_sent": "int",
    "blobs_skipped": "int",
    "blobs_mounted": "int",
    "blobs_received": "int",
    "bytes_sent": "int",
    "bytes_received": "int",
    "retries": "int",
    "resumed": "int",
    "restarted": "int",
}
PUSH = {
    "remote": "str",
    "url": "str",
    "tag": "str",
    "id": "id",
    "manifest": "str",
    "blobs": "int",
    "image_bytes": "int",
    **TRANSFER,
    "+": "open",  # push may report more (the remote tag's move): docs/json.md
}
FETCH = {
    "remote": "str",
    "url": "str",
    "tags": {"tag": "str", "id": "id", "previous": "id?", "manifest": "str"},
    **TRANSFER,
}
SCHEMA: dict[str, dict[str, Any]] = {
    "init": {**NEW_WORKSPACE, "namespace": "str", "left_behind": "list"},
    "clone": {
        **NEW_WORKSPACE,
        "source": "str",
        "remote": "str?",
        "url": "str?",
        "tag": "str?",
    },
    "eject": {"workspace": "str", "backend": "str", "entries": "int"},
    "status": {"id": "id", "branch": "str?", "clean": "bool", "changes": "list"},
    "diff": {"old": "id", "new": "id?", "changes": "list"},
    "commit": {"id": "id?", "layer": "str?", "branch": "str?", "changes": "list"},
    "log": {"snapshots": {**SNAPSHOT, "forgotten_parents": "list"}},
    "show": {**SNAPSHOT, "changes": "list"},
    "reflog": {
        "ref": "str",
        "entries": {
            "id": "id?",
            "previous": "id?",
            "message": "str",
            "author": "str",
            "time": "str",
            "time_ns": "int",
        },
    },
    "checkout": HEAD_MOVE,
    "reset": HEAD_MOVE,
    "branch": {"branches": {"name": "str", "id": "id", "current": "bool"}, "namespace": "str"},
    "tag": {"tags": {"name": "str", "id": "id", "current": "bool"}, "namespace": "str"},
    "flatten": {
        "id": "id",
        "layer": "str?",
        "merged": "int",
        "depth_before": "int",
        "depth_after": "int",
        "chains_rewritten": "int",
    },
    "verify": {
        "ok": "bool",
        "complete": "bool",
        "subset": "str?",
        "problems": "list",
        "snapshots_checked": "int",
        "layers_checked": "int",
        "entries_checked": "int",
        "files_checked": "int",
        "files_to_hash": "int",
        "bytes_to_hash": "int",
        "files_hashed": "int",
        "bytes_hashed": "int",
        "seconds": "num",
        "throughput": "dict",
    },
    "du": {
        "snapshots": {
            "id": "id",
            "refs": "list",
            "message": "str",
            "own_bytes": "int",
            "referenced_bytes": "int",
            "shared_bytes": "int",
            "layers": "int",
        },
        "store": "dict",
        "layers": {"id": "str", "bytes": "int", "snapshots": "int"},
    },
    "prune": {
        "policy": "dict",
        "keep": {
            "id": "id",
            "time": "str",
            "time_ns": "int",
            "message": "str",
            "reasons": "list",
            "reachable_from": "list",
        },
        "remove": "list",
        "dry_run": "bool",
        "forgotten": "int",
    },
    "gc": {
        "grace_seconds": "num",
        "removed": {"kind": "str", "name": "str", "bytes": "int"},
        "removed_layers": "int",
        "bytes_freed": "int",
        "kept_layers": "int",
        "kept": "dict",
        "young_leftovers": "list",
        "blob_cache": "dict",
        "dry_run": "bool",
    },
    "workspaces": {
        "workspaces": {
            "id": "str",
            "path": "str",
            "branch": "str?",
            "head": "id",
            "mount": "str",
            "backend": "str",
            "base": "id?",
            "held": "bool",
        }
    },
    "doctor": {
        "backend": "str?",
        "reason": "str",
        "requested": "str",
        "ok": "bool",
        "backends": "list",
        "checks": "list",
        "workspace": "dict?",
    },
    "export": {
        "id": "id",
        "output": "str",
        "tag": "str",
        "manifest": "str",
        "layers": "int",
        "bytes": "int",
    },
    "import": {"id": "id", "source": "str", "layers": "int", "branch": "str?", "tag": "str?"},
    "remote add": {"name": "str", "url": "str", "kind": "str", "insecure": "bool"},
    "remote list": {
        "remotes": {
            "name": "str",
            "url": "str",
            "kind": "str",
            "insecure": "bool",
            "tracking": "dict",
        }
    },
    "push": PUSH,
    "fetch": FETCH,
    "pull": {
        **FETCH,
        "branch": "str",
        "id": "id",
        "previous": "id?",
        "action": "str",
    },
    "cache save": {
        "key": "str",
        "workspace": "str",
        "committed": "bool",
        "initialized": "bool",
        "created": "str",
        "replaced": "str?",
        **PUSH,
    },
    "cache restore": {
        "key": "str",
        "cache_hit": "bool",
        "hit": "str?",
        "matched_key": "str?",
        "restore_key": "str?",
        "entry": "dict?",
        "remote": "str",
        "workspace": "str?",
        "id": "id?",
        "action": "str",
        "layers": "int",
        "layers_fetched": "int",
        **TRANSFER,
    },
    "cache list": {"remote": "str", "entries": "list"},
    "cache prune": {
        "remote": "str",
        "cutoff": "str",
        "dry_run": "bool",
        "removed": "list",
        "kept": "list",
        "undated": "list",
    },
}

#: documents a command prints with an option that changes what it does
#: (docs/json.md names each as `snapws branch -d --json`)
VARIANTS = {
    "branch -d": {
        "branch": "str",
        "previous": "id",
        "forced": "bool",
        "deleted": {"branch": "str", "previous": "id", "forced": "bool"},
    },
    "tag -d": {"tag": "str", "previous": "id", "deleted": {"tag": "str", "previous": "id"}},
}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "num": (int, float),
    "bool": bool,
    "list": list,
    "dict": dict,
}


def check(value: Any, spec: Any, where: str) -> None:
    """Raise AssertionError unless ``value`` fits ``spec`` (see SCHEMA)."""
    if isinstance(spec, dict):
        if isinstance(value, list):
            for i, item in enumerate(value):
                check(item, spec, f"{where}[{i}]")
            return
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        documented = {k for k in spec if k != "+"}
        extra = set(value) - documented
        assert documented <= set(value) and (not extra or "+" in spec), (
            f"{where}: keys {sorted(value)} are not the documented {sorted(documented)}"
        )
        for key, sub in spec.items():
            if key == "+":
                continue
            check(value[key], sub, f"{where}.{key}")
        return
    name = spec.rstrip("?")
    if value is None:
        assert spec.endswith("?"), f"{where} is null"
        return
    if name == "id":
        assert isinstance(value, str) and SID.match(value), f"{where}: {value!r} is no full id"
        return
    assert isinstance(value, _TYPES[name]) and not (
        name in ("int", "num") and isinstance(value, bool)
    ), f"{where}: {value!r} is not {name}"


def check_document(command: str, text: str) -> dict[str, Any]:
    doc = json.loads(text)
    assert isinstance(doc, dict), f"{command}: a --json document is an object"
    assert next(iter(doc)) == "version" and doc["version"] == 1, f"{command}: version first"
    body = {k: v for k, v in doc.items() if k != "version"}
    check(body, {**SCHEMA, **VARIANTS}[command], command)
    assert "snapshot" not in body and "head" not in body, f"{command}: id, not snapshot/head"
    return doc


def json_commands() -> Iterator[str]:
    """Every command (and subcommand) of the CLI with a --json option."""
    ctx = click.Context(cli)
    for name in COMMAND_MODULES:
        command = cli.get_command(ctx, name)
        assert command is not None
        subs = command.commands.items() if isinstance(command, click.Group) else [("", command)]
        for sub, c in subs:
            if any("--json" in getattr(p, "opts", ()) for p in c.params):
                yield f"{name} {sub}".strip()


def test_every_json_command_has_a_schema_and_docs() -> None:
    found = set(json_commands())
    assert found == set(SCHEMA), (found - set(SCHEMA), set(SCHEMA) - found)
    docs = DOCS.read_text()
    for command in sorted(found | set(VARIANTS)):
        assert f"`snapws {command} --json`" in docs, f"docs/json.md lacks {command}"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with running_registry(tmp_path / "registry") as reg:
        yield reg


def test_every_command_prints_the_documented_json(
    make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path
) -> None:
    seen: set[str] = set()
    ws = make_workspace("ws", {"a.txt": "one\n", "d": {"b": "two\n"}})

    def run(command: str, *args: str | Path, on: Workspace | None = ws) -> dict[str, Any]:
        argv = [*command.split(), *args, "--json"]
        if on is not None:
            out = on.run(*argv).stdout
        else:
            out = run_cli("--store", ws.store, *argv, cwd=ws.outside).stdout
        seen.add(command)
        return check_document(command, out)

    base = run("status")["id"]
    (ws.path / "a.txt").write_text("changed\n")
    run("diff")
    first = run("commit", "-m", "change")["id"]
    run("diff", base, first)
    run("log")
    run("show")
    run("branch")
    ws.run("tag", "v1")
    run("tag")
    ws.run("branch", "gone")
    run("branch -d", "gone")
    run("tag -d", "v1")
    run("checkout", "-b", "side")
    run("reset", "--hard", "HEAD")
    run("reflog")
    run("flatten")
    run("verify")
    run("du")
    run("prune", "--keep-last", "1", "-n")
    run("gc", "-n")
    run("workspaces")
    doctor = ws.run("doctor", "--json", check=False)
    seen.add("doctor")
    check_document("doctor", doctor.stdout)
    run("export", "HEAD", "-o", tmp_path / "img")
    run("import", tmp_path / "img", "--tag", "again", on=None)
    run("remote add", "origin", f"{registry.url}/team/app", "--insecure")
    run("remote list")
    run("push")
    run("fetch")
    run("pull")
    run(
        "clone",
        f"{registry.url}/team/app",
        tmp_path / "cloned",
        "-b",
        "cloned",
        "--insecure",
        on=None,
    )
    run("init", tmp_path / "fresh", "-b", "fresh", on=None)
    run("eject", on=Workspace(tmp_path / "fresh", ws.store, ws.outside))
    cache = ("--remote", f"{registry.url}/team/cache", "--insecure")
    run("cache save", "k1", *cache)
    run("cache list", *cache)
    run("cache restore", "k1", "--path", tmp_path / "restored", *cache)
    run("cache prune", "--older-than", "7d", "-n", *cache)
    assert seen == set(SCHEMA) | set(VARIANTS), (set(SCHEMA) | set(VARIANTS)) - seen
