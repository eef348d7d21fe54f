"""Structural rules of the package, checked on its source (no imports run).

- snapws.errors and snapws.ids import nothing from snapws; snapws.model only
  snapws.ids; snapws.beneath (writes beneath a directory fd) only snapws.errors;
- only snapws/cli (and the ``python -m snapws`` entry point) uses click or
  snapws.cli;
- only snapws/mounts/ mounts: mounter.py (with its bindings, syscalls.py,
  the new mount API path, newapi.py, and the legacy path, legacy.py)
  performs the mount syscalls, and
  only modules of snapws.mounts run mount programs (fuse-overlayfs,
  fusermount);
- the library (everything but the CLI) never prints, prompts or exits.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "snapws"
#: The modules that perform mount syscalls: the mounter, its bindings and its two paths.
MOUNTERS = {
    "snapws.mounts.mounter",
    "snapws.mounts.syscalls",
    "snapws.mounts.newapi",
    "snapws.mounts.legacy",
}
ENTRY_POINT = "snapws.__main__"

#: Mount-related syscalls and flags nobody but the mounter may name.
MOUNT_WORDS = re.compile(
    r"\b(fsopen|fsconfig|fsmount|fspick|move_mount|mount_setattr|open_tree|umount2|"
    r"MS_REMOUNT|MS_BIND|MS_MOVE|MOVE_MOUNT_F_EMPTY_PATH|FSCONFIG_\w+)\b"
)
#: Library symbols / programs that mount when called by name.
MOUNT_SYMBOLS = {"mount", "umount", "umount2", "fsopen", "fsmount", "move_mount"}
#: Programs that mount FUSE filesystems: only snapws.mounts may run them.
MOUNT_PROGRAMS = {"fuse-overlayfs", "fusermount", "fusermount3"}
MOUNTS_PACKAGE = "snapws.mounts"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def in_cli(self) -> bool:
        return self.name == "snapws.cli" or self.name.startswith("snapws.cli.")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> tuple[Module, ...]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        out.append(Module(module_name(path), path, ast.parse(path.read_bytes(), str(path))))
    return tuple(out)


def module(name: str) -> Module:
    (m,) = (m for m in modules() if m.name == name)
    return m


def imports(mod: Module) -> set[str]:
    """Every module name ``mod`` imports, anywhere in its body (relative
    imports resolved; ``from X import Y`` counts as X and X.Y)."""
    is_pkg = mod.path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.name.split(".")
                drop = node.level - 1 if is_pkg else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def is_under(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def own_imports(mod: Module) -> set[str]:
    return {n for n in imports(mod) if is_under(n, "snapws")}


def test_found_the_package() -> None:
    names = {m.name for m in modules()}
    assert {"snapws.errors", "snapws.ids", "snapws.model", *MOUNTERS, "snapws.cli.main"} <= names
    assert len(names) > 30


def test_relative_imports_resolve() -> None:
    tree = ast.parse("from . import view\nfrom ..store import lock\nfrom .x import y\n")
    mod = Module("snapws.layers.scan", PACKAGE / "layers" / "scan.py", tree)
    assert imports(mod) >= {"snapws.layers.view", "snapws.store.lock", "snapws.layers.x.y"}


@pytest.mark.parametrize("name", ["snapws.errors", "snapws.ids"])
def test_bottom_modules_import_nothing_from_the_package(name: str) -> None:
    assert own_imports(module(name)) == set()


def test_model_imports_only_ids() -> None:
    bad = {n for n in own_imports(module("snapws.model")) if not is_under(n, "snapws.ids")}
    assert bad == set()


def test_beneath_imports_only_errors() -> None:
    bad = {
        n
        for n in own_imports(module("snapws.beneath"))
        if not (is_under(n, "snapws.errors") or is_under(n, "snapws.deeppath"))
    }
    assert bad == set()


def test_deeppath_imports_nothing_of_the_package() -> None:
    assert own_imports(module("snapws.deeppath")) == set()


#: Packages below the operations: they never import snapws.ops or snapws.cli.
BELOW_OPS = ("snapws.backends", "snapws.store", "snapws.layers", "snapws.mounts")
#: What the workspace backends are called (WorkspaceState.backend).
BACKEND_NAMES = frozenset({"kernel", "rootless", "fuse", "plain"})


def climbs(mod: Module) -> list[str]:
    """Imports of ``mod`` that reach up into the operations or the CLI."""
    return sorted(n for n in imports(mod) if is_under(n, "snapws.ops") or is_under(n, "snapws.cli"))


def test_nothing_below_the_operations_imports_them() -> None:
    offenders = {}
    for mod in modules():
        if any(is_under(mod.name, top) for top in BELOW_OPS):
            found = climbs(mod)
            if found:
                offenders[mod.name] = found
    assert offenders == {}


def test_the_climb_check_sees_a_climb() -> None:
    tree = ast.parse("from snapws.ops.workspace import Session\nimport snapws.cli.app\n")
    mod = Module("snapws.backends.x", PACKAGE / "backends" / "x.py", tree)
    assert climbs(mod) == ["snapws.cli.app", "snapws.ops.workspace", "snapws.ops.workspace.Session"]


def backend_name_tests(mod: Module) -> list[str]:
    """Comparisons in ``mod`` against a backend's name (``x == "plain"``,
    ``name in ("kernel", "fuse")``): generic code asks its backend instead."""

    def names(node: ast.expr) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & BACKEND_NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return {v for e in node.elts for v in names(e)}
        return set()

    hits = []
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Compare):
            found = set().union(*(names(x) for x in (node.left, *node.comparators)))
            if found:
                hits.append(f"{mod.path.name}:{node.lineno} compares with {sorted(found)}")
    return hits


def test_no_module_outside_the_backends_tests_a_backend_name() -> None:
    offenders = {}
    for mod in modules():
        if is_under(mod.name, "snapws.backends"):
            continue
        hits = backend_name_tests(mod)
        if hits:
            offenders[mod.name] = hits
    assert offenders == {}


def test_the_backend_name_check_sees_one() -> None:
    code = 'if state.backend == "plain":\n    pass\nok = name in ("kernel", "fuse")\n'
    mod = Module("snapws.ops.x", PACKAGE / "ops" / "x.py", ast.parse(code))
    assert len(backend_name_tests(mod)) == 2


def test_only_the_cli_uses_click_and_the_cli() -> None:
    offenders = {}
    for mod in modules():
        if mod.in_cli or mod.name == ENTRY_POINT:
            continue
        bad = {n for n in imports(mod) if is_under(n, "click") or is_under(n, "snapws.cli")}
        if bad:
            offenders[mod.name] = sorted(bad)
    assert offenders == {}


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the Constant nodes that are docstrings."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.add(id(value))
    return out


def mount_calls(mod: Module) -> list[str]:
    """Code (not comments or docstrings) in ``mod`` that names a mount syscall."""
    skip = docstrings(mod.tree)
    hits = []
    for node in ast.walk(mod.tree):
        where = f"{mod.path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Name) and MOUNT_WORDS.search(node.id):
            hits.append(f"{where} name {node.id}")
        elif isinstance(node, ast.Attribute):
            if MOUNT_WORDS.search(node.attr):
                hits.append(f"{where} attribute {node.attr}")
            # libc.mount(...) / _libc.umount(...)
            base = node.value
            if (
                node.attr in MOUNT_SYMBOLS
                and isinstance(base, ast.Name)
                and "libc" in base.id.lower()
            ):
                hits.append(f"{where} {base.id}.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip and MOUNT_WORDS.search(node.value):
                hits.append(f"{where} string {node.value!r}")
        elif isinstance(node, ast.Call):
            func = node.func
            # getattr(libc, "mount")
            if (
                isinstance(func, ast.Name)
                and func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in MOUNT_SYMBOLS
            ):
                hits.append(f"{where} getattr {node.args[1].value!r}")
            # subprocess.run(["mount", ...]) / ("umount", ...)
            for arg in node.args[:1]:
                if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts:
                    first = arg.elts[0]
                    if isinstance(first, ast.Constant) and first.value in MOUNT_SYMBOLS:
                        hits.append(f"{where} runs {first.value!r}")
    return hits


def test_the_mount_check_sees_the_mounter() -> None:
    # not vacuous: the mounter itself is caught
    hits = [h for name in sorted(MOUNTERS) for h in mount_calls(module(name))]
    assert any("fsopen" in h for h in hits)
    assert any("umount2" in h for h in hits)


def test_probe_snippets_are_caught() -> None:
    code = (
        "libc.mount(a, b)\n"
        "getattr(_libc, 'umount')\n"
        "subprocess.run(['mount', '-t', 'tmpfs'])\n"
        "x = MS_REMOUNT\n"
    )
    mod = Module("snapws.x", PACKAGE / "x.py", ast.parse(code))
    assert len(mount_calls(mod)) == 4


def test_only_the_mounter_mounts() -> None:
    offenders = {}
    for mod in modules():
        if mod.name in MOUNTERS:
            continue
        hits = mount_calls(mod)
        if hits:
            offenders[mod.name] = hits
    assert offenders == {}


def program_runs(mod: Module) -> list[str]:
    """Calls in ``mod`` that run a FUSE mount program named by a literal:
    ``run(["fusermount3", ...])`` or ``run(..., executable="fuse-overlayfs")``."""
    hits = []
    for node in ast.walk(mod.tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{mod.path.name}:{node.lineno}"
        for arg in node.args[:1]:
            if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts:
                first = arg.elts[0]
                if isinstance(first, ast.Constant) and first.value in MOUNT_PROGRAMS:
                    hits.append(f"{where} runs {first.value!r}")
        for kw in node.keywords:
            if (
                kw.arg == "executable"
                and isinstance(kw.value, ast.Constant)
                and kw.value.value in MOUNT_PROGRAMS
            ):
                hits.append(f"{where} runs {kw.value.value!r}")
    return hits


def test_program_check_is_not_vacuous() -> None:
    code = "subprocess.run(['fusermount3', '-u', p])\nrun(args, executable='fuse-overlayfs')\n"
    mod = Module("snapws.x", PACKAGE / "x.py", ast.parse(code))
    assert len(program_runs(mod)) == 2


def test_only_the_mounts_package_runs_mount_programs() -> None:
    offenders = {}
    for mod in modules():
        if is_under(mod.name, MOUNTS_PACKAGE):
            continue
        hits = program_runs(mod)
        if hits:
            offenders[mod.name] = hits
    assert offenders == {}


FORBIDDEN_CALLS = {"print", "input", "exit", "quit", "breakpoint"}
FORBIDDEN_ATTR_CALLS = {("sys", "exit"), ("os", "_exit")}


def _forks(mod: Module) -> bool:
    """Whether ``mod`` calls os.fork(): its forked child must leave by
    os._exit (never through the parent's handlers), which is no exit of
    the user's process."""
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id, node.func.attr) == ("os", "fork")
        for node in ast.walk(mod.tree)
    )


def console_calls(mod: Module) -> list[str]:
    hits = []
    child_exits = _forks(mod)
    for node in ast.walk(mod.tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
            hits.append(f"{mod.path.name}:{node.lineno} {func.id}()")
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and (func.value.id, func.attr) in FORBIDDEN_ATTR_CALLS
            and not (child_exits and (func.value.id, func.attr) == ("os", "_exit"))
        ):
            hits.append(f"{mod.path.name}:{node.lineno} {func.value.id}.{func.attr}()")
    return hits


def test_console_check_is_not_vacuous() -> None:
    mod = Module("snapws.x", PACKAGE / "x.py", ast.parse("print(1)\nsys.exit(2)\ninput()\n"))
    assert len(console_calls(mod)) == 3
    exits = Module("snapws.x", PACKAGE / "x.py", ast.parse("os._exit(0)\n"))
    assert len(console_calls(exits)) == 1
    child = Module("snapws.x", PACKAGE / "x.py", ast.parse("if os.fork() == 0:\n    os._exit(0)\n"))
    assert console_calls(child) == []  # a forked child leaves so


def test_library_never_prints_prompts_or_exits() -> None:
    offenders = {}
    for mod in modules():
        if mod.in_cli or mod.name == ENTRY_POINT:
            continue
        hits = console_calls(mod)
        if hits:
            offenders[mod.name] = hits
    assert offenders == {}
