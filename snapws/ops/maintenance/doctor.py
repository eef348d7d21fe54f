"""``snapws doctor``: what this machine and store allow, and why.

Reads /proc, /sys and the store's filesystem, and probes for real: a child
process makes a user namespace, and each backend's probe mounts a small test
overlay (kernel, rootless, fuse-overlayfs) in a temporary directory beside
the store, which it unmounts and removes at once. Each check gives a status
(``ok``, ``warn``: a capability is missing, ``fail``: nothing can run because
of it), what was found, and the fix. Then one line per backend (available or
not, and why), and the backend ``snapws init`` would pick, and why. When
it runs in a workspace, also whether that workspace is held (issue 10: its
mount is on an older chain than HEAD's because programs kept it busy).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapws.backends import AUTO_ORDER, Availability, probe_all
from snapws.backends.base import nearest_existing
from snapws.model import WorkspaceState
from snapws.mounts import fuse
from snapws.mounts.plan import fixed_options_text
from snapws.store import probe

if TYPE_CHECKING:
    from snapws.store.store import Store

#: statfs f_type -> name, for the report
_FS_NAMES = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0x65735546: "fuse",
    0x6969: "nfs",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    found: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "found": self.found, "fix": self.fix}


@dataclass(slots=True)
class Report:
    """The checks, each backend's availability, and the backend ``auto`` picks
    (None: none can run here) with the reason."""

    checks: list[Check] = field(default_factory=list)
    backends: list[Availability] = field(default_factory=list)
    backend: str | None = None
    reason: str = ""
    requested: str = "auto"
    #: the workspace doctor runs in (None: none)
    workspace: WorkspaceState | None = None
    #: whether a program holds that workspace now (its ``base`` is set and
    #: :func:`snapws.ops.worktree.mounting.held_now` says so)
    held: bool = False

    @property
    def ok(self) -> bool:
        """True when some backend can run here (the requested one, if any)."""
        if self.requested != "auto":
            return any(b.ok and b.backend == self.requested for b in self.backends)
        return self.backend is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "reason": self.reason,
            "requested": self.requested,
            "ok": self.ok,
            "backends": [
                {"name": b.backend, "available": b.ok, "reason": b.reason, "fix": b.fix}
                for b in self.backends
            ],
            "checks": [c.to_json() for c in self.checks],
            "workspace": (
                None if self.workspace is None else workspace_json(self.workspace, self.held)
            ),
        }


def workspace_json(state: WorkspaceState, held: bool) -> dict[str, Any]:
    """The workspace part of the report: ``held`` (a program holds it now),
    and ``base``, the snapshot whose chain its live mount is on while it is,
    or was, held (None: its mount is on HEAD's chain)."""
    return {
        "path": state.path,
        "backend": state.backend,
        "held": held,
        "base": state.base.hex if state.base is not None else None,
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def kernel_version() -> tuple[int, int]:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _overlay_checks(report: Report) -> None:
    fs = _read("/proc/filesystems") or ""
    listed = any(line.split()[-1] == "overlay" for line in fs.splitlines() if line.split())
    if not listed and not os.path.isdir("/sys/module/overlay"):
        report.checks.append(
            Check(
                "overlayfs",
                "warn",
                "not in /proc/filesystems (the module is not loaded)",
                "modprobe overlay (as root); the kernel and rootless backends need it",
            )
        )
        return
    report.checks.append(Check("overlayfs", "ok", "available"))
    params = {}
    for name in ("redirect_dir", "metacopy", "index", "xino_auto", "redirect_always_follow"):
        value = _read(f"/sys/module/overlay/parameters/{name}")
        if value is not None:
            params[name] = value
    found = ", ".join(f"{k}={v}" for k, v in params.items()) or "module parameters not readable"
    report.checks.append(
        Check(
            "overlay defaults",
            "ok",
            found + f" (snapws always mounts with {fixed_options_text()})",
        )
    )
    major, minor = kernel_version()
    new_api = (major, minor) >= (6, 8)
    report.checks.append(
        Check(
            "mount API",
            "ok" if new_api else "warn",
            "new mount API, one lowerdir+ per layer (up to 500 layers)"
            if new_api
            else "legacy mount(2) option string (about 78 layers by path, more by fd)",
            "" if new_api else "a kernel >= 6.8 mounts deep chains directly",
        )
    )


#: A child process that makes a user + mount namespace and says so (exit 0),
#: or prints why not (exit 1). Nothing is mounted.
_UNSHARE_CHILD = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid = os.getuid()
if libc.unshare(0x10000000 | 0x00020000) != 0:
    print(os.strerror(ctypes.get_errno()))
    sys.exit(1)
try:
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1")):
        fd = os.open("/proc/self/" + name, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
except OSError as e:
    print(f"cannot map the user: {e.strerror}")
    sys.exit(1)
"""


def unshare_problem() -> str:
    """Why a child process cannot make a user + mount namespace ("" when it can)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _UNSHARE_CHILD],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run the probe: {exc}"
    if proc.returncode == 0:
        return ""
    return proc.stdout.strip() or proc.stderr.strip() or f"exit {proc.returncode}"


def _namespace_checks(report: Report) -> None:
    sysctls = {
        "user.max_user_namespaces": _read("/proc/sys/user/max_user_namespaces"),
        "kernel.unprivileged_userns_clone": _read("/proc/sys/kernel/unprivileged_userns_clone"),
        "kernel.apparmor_restrict_unprivileged_userns": _read(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
        ),
    }
    shown = ", ".join(f"{k}={v}" for k, v in sysctls.items() if v is not None)
    problem = unshare_problem()
    if problem:
        report.checks.append(
            Check(
                "user namespaces",
                "warn",
                f"a child could not make one: {problem} ({shown})",
                "sysctl user.max_user_namespaces=15000, kernel.unprivileged_userns_clone=1, "
                "kernel.apparmor_restrict_unprivileged_userns=0 (needed for rootless use)",
            )
        )
    else:
        report.checks.append(
            Check("user namespaces", "ok", f"a child made a user + mount namespace ({shown})")
        )
    major, minor = kernel_version()
    if (major, minor) >= (5, 11):
        report.checks.append(Check("userxattr", "ok", f"kernel {major}.{minor} >= 5.11"))
    else:
        report.checks.append(
            Check(
                "userxattr",
                "warn",
                f"kernel {major}.{minor} < 5.11: no overlay mounts in user namespaces",
                "a kernel >= 5.11 (for the rootless backend)",
            )
        )


def _fuse_checks(report: Report) -> None:
    program = fuse.find_program()
    if program is None:
        report.checks.append(
            Check(
                "fuse-overlayfs",
                "warn",
                "not installed",
                "apt-get install fuse-overlayfs (for the fuse backend)",
            )
        )
    else:
        version = fuse.program_version(program) or "unknown version"
        report.checks.append(Check("fuse-overlayfs", "ok", f"{program} ({version})"))
    problem = fuse.device_problem()
    if not problem:
        fix = ""
    elif os.path.exists("/dev/fuse"):
        fix = "chmod 0666 /dev/fuse (the usual mode) or run as root"
    else:
        fix = "modprobe fuse; in a container: --device /dev/fuse"
    report.checks.append(
        Check("/dev/fuse", "warn" if problem else "ok", problem or "readable and writable", fix)
    )


def _store_checks(report: Report, store: Path | None) -> bool:
    """Checks of the store's filesystem. False when it cannot hold a store at
    all (no existing ancestor, unreadable)."""
    if store is None:
        report.checks.append(
            Check(
                "store",
                "warn",
                "no store given or found",
                "pass --store PATH or run in a workspace",
            )
        )
        return True
    where = nearest_existing(store)
    try:
        magic = probe.fs_magic(where)
    except OSError as e:
        report.checks.append(Check("store filesystem", "fail", str(e), "check the path"))
        return False
    name = _FS_NAMES.get(magic, "unknown")
    report.checks.append(Check("store filesystem", "ok", f"{where}: {name} (magic {magic:#x})"))
    on_overlay = magic == probe.OVERLAYFS_MAGIC
    report.checks.append(
        Check(
            "store on overlay",
            "warn" if on_overlay else "ok",
            f"{where} is on overlayfs (as inside a container)" if on_overlay else "no",
            "the kernel and rootless backends need the store on a real filesystem: put it "
            "on a volume or bind mount (--store PATH); fuse and plain work here"
            if on_overlay
            else "",
        )
    )
    _probe_check(
        report,
        "store d_type",
        lambda: probe.has_d_type(where),
        ("reported", "not reported by readdir"),
        "use another filesystem for the store (xfs needs ftype=1)",
    )
    if os.geteuid() == 0:
        _probe_check(
            report,
            "store trusted xattrs",
            lambda: probe.has_trusted_xattrs(where),
            ("trusted.* supported", "trusted.* not supported"),
            "use ext4, xfs, btrfs or tmpfs (the kernel backend keeps overlay markers there)",
        )
    _probe_check(
        report,
        "store user xattrs",
        lambda: probe.has_user_xattrs(where),
        ("user.* supported", "user.* not supported"),
        "use ext4, xfs, btrfs or tmpfs (rootless workspaces keep overlay markers there)",
    )
    return True


def _probe_check(
    report: Report, name: str, test: Callable[[], bool], found: tuple[str, str], fix: str
) -> None:
    """Run one filesystem probe into a check (an OSError: cannot write there)."""
    try:
        good = test()
    except OSError as e:
        report.checks.append(Check(name, "warn", str(e), "make the store's directory writable"))
        return
    report.checks.append(
        Check(name, "ok" if good else "warn", found[0] if good else found[1], "" if good else fix)
    )


def _record_checks(report: Report, root: Path) -> None:
    """Whether the store's records are sound (ops.storecheck: no layer tree
    is read). Nothing is said when there is no store there yet."""
    from snapws.errors import SnapwsError
    from snapws.ops.maintenance.storecheck import store_damage
    from snapws.store.store import MARKER, Store

    if not (root / MARKER).is_file():
        return
    opened = None
    try:
        opened = Store.open(root)
        damage = store_damage(opened)
    except (SnapwsError, OSError) as e:
        damage = [str(e)]
    if not damage:
        report.checks.append(Check("store records", "ok", f"{root}: readable and consistent"))
    if opened is not None:
        _journal_check(report, opened)
    if not damage:
        return
    shown = "; ".join(damage[:5]) + (f"; and {len(damage) - 5} more" if len(damage) > 5 else "")
    report.checks.append(
        Check(
            "store records",
            "fail",
            f"the store is damaged: {shown}",
            "`snapws verify` lists every problem and the snapshots affected; "
            "`snapws verify --repair` mends what it can without deleting user data",
        )
    )


def _journal_check(report: Report, store: Store) -> None:
    """A pending journal: an operation interrupted (or running now) that
    every command tries to finish first."""
    from snapws.errors import SnapwsError
    from snapws.ops.recovery import give_up, journal_operation, journal_since
    from snapws.store.records import JOURNAL_HINT

    path = store.root / "journal.json"
    try:
        j = store.read_journal()
    except (SnapwsError, OSError) as e:
        report.checks.append(Check("pending operation", "fail", str(e), JOURNAL_HINT))
        return
    if j is None:
        report.checks.append(Check("pending operation", "ok", "none (no journal.json)"))
        return
    what = journal_operation(j)
    report.checks.append(
        Check(
            "pending operation",
            "fail",
            f"an interrupted {what} is pending since {journal_since(store)} ({path}), "
            "unless a snapws command is running now",
            f"run any snapws command in a workspace of this store (e.g. `snapws status`) to "
            f"finish the {what}; if it fails, it says why: remove the cause and run it again, "
            f"or give the {what} up: {give_up(store, j)}",
        )
    )


def diagnose(
    store: Path | None,
    requested: str = "auto",
    workspace: WorkspaceState | None = None,
    held: bool = False,
) -> Report:
    """Inspect the machine and (if given) the store's filesystem; probe every
    backend for a store at ``store`` (default: the current directory's
    filesystem). ``requested`` is the configured backend (``auto`` or a name):
    the report is ok when it (or, for auto, any backend) can run here.
    ``workspace`` (the one doctor runs in, if any) and ``held`` (whether a
    program holds it now) go into the report as they are: nothing is read
    from its mount."""
    report = Report(requested=requested, workspace=workspace, held=held)
    report.checks.append(Check("kernel", "ok", f"Linux {platform.release()}"))
    _overlay_checks(report)
    root = os.geteuid() == 0
    report.checks.append(
        Check(
            "privileges",
            "ok",
            "root" if root else f"uid {os.geteuid()} (not root: rootless or plain)",
        )
    )
    _namespace_checks(report)
    _fuse_checks(report)
    usable = _store_checks(report, store)
    if store is not None:
        _record_checks(report, store)
    target = store if store is not None else Path.cwd()
    report.backends = probe_all(target) if usable else []
    for found in report.backends:
        if found.ok and found.backend in AUTO_ORDER:  # rootless only when asked for
            report.backend = found.backend
            passed = [
                f"; {b.backend} skipped: {b.reason}"
                for b in report.backends
                if b.backend in AUTO_ORDER
                and AUTO_ORDER.index(b.backend) < AUTO_ORDER.index(found.backend)
            ]
            report.reason = found.reason + "".join(passed)
            break
    else:
        report.reason = "no backend can run here: fix what the checks above say"
    if requested != "auto" and not report.ok:
        report.reason = f"the configured backend {requested} cannot run here; " + report.reason
    return report
