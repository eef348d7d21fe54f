"""``snapws doctor``: what this machine and store allow, and why.

Pure inspection: reads /proc, /sys and the store's filesystem; mounts nothing.
Each check gives a status (ok, warn, fail), what was found, and the fix.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapws.store import probe


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
    checks: list[Check] = field(default_factory=list)
    backend: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.backend is not None and all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "reason": self.reason,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
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


def _overlay_checks(report: Report) -> bool:
    fs = _read("/proc/filesystems") or ""
    has_overlay = any(line.split()[-1] == "overlay" for line in fs.splitlines() if line.split())
    if not has_overlay and not os.path.isdir("/sys/module/overlay"):
        report.checks.append(
            Check("overlayfs", "fail", "not in /proc/filesystems", "modprobe overlay (as root)")
        )
        return False
    report.checks.append(Check("overlayfs", "ok", "available"))
    params = {}
    for name in ("redirect_dir", "metacopy", "index", "xino_auto"):
        value = _read(f"/sys/module/overlay/parameters/{name}")
        if value is not None:
            params[name] = value
    found = ", ".join(f"{k}={v}" for k, v in params.items()) or "module parameters not readable"
    report.checks.append(
        Check(
            "overlay defaults",
            "ok",
            found + " (snapws always mounts with redirect_dir=off,metacopy=off,index=off)",
        )
    )
    return True


def _namespace_checks(report: Report) -> None:
    max_ns = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if max_ns == "0" or clone == "0":
        report.checks.append(
            Check(
                "user namespaces",
                "warn",
                f"disabled (max_user_namespaces={max_ns}, unprivileged_userns_clone={clone})",
                "sysctl user.max_user_namespaces=15000 (needed only for rootless use)",
            )
        )
    else:
        report.checks.append(Check("user namespaces", "ok", f"max_user_namespaces={max_ns}"))
    major, minor = kernel_version()
    if (major, minor) >= (5, 11):
        report.checks.append(Check("userxattr", "ok", "kernel >= 5.11 supports it"))
    else:
        report.checks.append(
            Check("userxattr", "warn", f"kernel {major}.{minor} < 5.11", "upgrade the kernel")
        )
    fuse = shutil.which("fuse-overlayfs")
    dev = os.path.exists("/dev/fuse")
    if fuse and dev:
        report.checks.append(Check("fuse-overlayfs", "ok", f"{fuse}, /dev/fuse present"))
    else:
        missing = ", ".join(
            x for x, ok in (("fuse-overlayfs", bool(fuse)), ("/dev/fuse", dev)) if not ok
        )
        report.checks.append(
            Check(
                "fuse-overlayfs",
                "warn",
                f"missing: {missing}",
                "apt-get install fuse-overlayfs (not used by snapws yet)",
            )
        )


def _store_checks(report: Report, store: Path | None) -> bool:
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
    where = store if store.exists() else store.parent
    if not where.exists():
        report.checks.append(
            Check("store", "fail", f"{store}: neither it nor its parent exists", "create it")
        )
        return False
    ok = True
    try:
        magic = probe.fs_magic(where)
    except OSError as e:
        report.checks.append(Check("store filesystem", "fail", str(e), "check the path"))
        return False
    on_overlay = magic == probe.OVERLAYFS_MAGIC
    report.checks.append(
        Check(
            "store on overlay",
            "fail" if on_overlay else "ok",
            f"{where}: filesystem magic {magic:#x}" + (" (overlayfs)" if on_overlay else ""),
            "put the store on a volume or bind mount of a real filesystem" if on_overlay else "",
        )
    )
    ok = ok and not on_overlay
    ok = (
        _probe_check(
            report,
            "store d_type",
            lambda: probe.has_d_type(where),
            ("reported", "not reported by readdir"),
            "use another filesystem (xfs needs ftype=1)",
        )
        and ok
    )
    if os.geteuid() == 0:
        ok = (
            _probe_check(
                report,
                "store xattrs",
                lambda: probe.has_trusted_xattrs(where),
                ("trusted.* supported", "trusted.* not supported"),
                "use ext4, xfs, btrfs or tmpfs",
            )
            and ok
        )
    return ok


def _probe_check(
    report: Report, name: str, test: Callable[[], bool], found: tuple[str, str], fix: str
) -> bool:
    """Run one filesystem probe into a check; an OSError is a failed check."""
    try:
        good = test()
    except OSError as e:
        report.checks.append(Check(name, "fail", str(e), "make the store writable"))
        return False
    report.checks.append(
        Check(name, "ok" if good else "fail", found[0] if good else found[1], "" if good else fix)
    )
    return good


def diagnose(store: Path | None) -> Report:
    """Inspect the machine and (if given) the store's filesystem."""
    report = Report()
    major, minor = kernel_version()
    report.checks.append(Check("kernel", "ok", f"Linux {platform.release()}"))
    has_overlay = _overlay_checks(report)
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
    root = os.geteuid() == 0
    report.checks.append(
        Check(
            "privileges",
            "ok" if root else "fail",
            "root" if root else f"uid {os.geteuid()} (not root)",
            "" if root else "run snapws with sudo (rootless backends are not available yet)",
        )
    )
    _namespace_checks(report)
    store_ok = _store_checks(report, store)
    if has_overlay and root and store_ok:
        report.backend = "kernel"
        report.reason = "root with kernel overlayfs, and a store filesystem overlayfs accepts"
    else:
        report.reason = "no backend can run here: fix the failed checks above"
    return report
