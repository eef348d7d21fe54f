"""Real overlay mounts (we are root): these tests fail, never skip, when mounts do not work."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import MountError
from snapws.mounts import legacy, mounter, newapi
from snapws.mounts.busy import find_cwd_users, find_writers
from snapws.mounts.mounter import (
    MountBusyError,
    MountInfo,
    detach,
    is_readonly,
    mount_at,
    mount_overlay,
    parse_mountinfo,
    read_mountinfo,
    remount_readonly,
    remount_readwrite,
    unmount,
)
from snapws.mounts.plan import MountPlan

pytestmark = pytest.mark.root

HOLD_OPEN = (
    "import sys\n"
    "f = open(sys.argv[1], 'w')\n"
    "f.write('x'); f.flush()\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
WAIT = "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"


class Lab:
    """Makes layers and mounts; its teardown stops children and unmounts everything."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.targets: list[Path] = []
        self.children: list[subprocess.Popen[str]] = []

    def layer(self, rel: str, files: dict[str, str] | None = None) -> Path:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        for name, text in (files or {}).items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text)
        return path

    def workspace(self, name: str = "ws") -> tuple[Path, Path, Path]:
        """(target, upper, work), all empty directories."""
        base = self.root / name
        dirs = base / "mnt", base / "upper", base / "work"
        for d in dirs:
            d.mkdir(parents=True)
        return dirs

    def mount(self, plan: MountPlan, api: mounter.Api = "auto") -> Path:
        self.targets.append(plan.target)
        mount_overlay(plan, api=api)
        return plan.target

    def spawn(self, code: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.children.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def teardown(self) -> None:
        for proc in self.children:
            self.stop(proc)
        for target in reversed(self.targets):
            for _ in range(10):
                info = mount_at(target)
                if info is None or info.mountpoint != Path(os.path.realpath(target)):
                    break
                try:
                    unmount(target)
                except MountError:
                    detach(target)  # last resort: lazy


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    it = Lab(tmp_path)
    try:
        yield it
    finally:
        it.teardown()


def three_layer_plan(lab: Lab, *, userxattr: bool = False, readonly: bool = False) -> MountPlan:
    lowers = tuple(
        lab.layer(f"layers/{n}", {"f": n, f"only_{n}": n, "dir/g": n}) for n in ("a", "b", "c")
    )
    target, upper, work = lab.workspace()
    return MountPlan(target, lowers, upper, work, userxattr=userxattr, readonly=readonly)


def module_default(name: str) -> bool:
    return Path(f"/sys/module/overlay/parameters/{name}").read_text().strip() == "Y"


# --------------------------------------------------------------------------- plan


def test_plan_options_fixed_order() -> None:
    plan = MountPlan(target=Path("/x"), lowers=(Path("/l"),), upper=Path("/u"), work=Path("/w"))
    fixed = [
        ("redirect_dir", "nofollow"),
        ("metacopy", "off"),
        ("index", "off"),
        ("nfs_export", "off"),
        ("xino", "off"),
        ("uuid", "off"),
    ]
    assert plan.options() == fixed
    with_x = MountPlan(target=Path("/x"), lowers=(Path("/l"),), userxattr=True)
    assert with_x.options() == [*fixed, ("userxattr", None)]


def test_plan_validation() -> None:
    with pytest.raises(ValueError):
        MountPlan(target=Path("/x"), lowers=())
    with pytest.raises(ValueError):
        MountPlan(target=Path("/x"), lowers=(Path("/l"),), upper=Path("/u"))


# --------------------------------------------------------------------------- mounting


def test_three_lowers_top_wins(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    target = lab.mount(plan)
    assert (target / "f").read_text() == "a"
    assert (target / "dir/g").read_text() == "a"
    assert sorted(os.listdir(target)) == ["dir", "f", "only_a", "only_b", "only_c"]
    (target / "new").write_text("n")
    assert plan.upper is not None
    assert (plan.upper / "new").read_text() == "n"
    assert not (plan.lowers[0] / "new").exists()


def test_delete_makes_whiteout_in_upper(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    target = lab.mount(plan)
    (target / "only_b").unlink()
    assert not (target / "only_b").exists()
    assert plan.upper is not None
    st = os.lstat(plan.upper / "only_b")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == 0
    assert (plan.lowers[1] / "only_b").read_text() == "b"


def test_mountinfo_shows_layers_and_options(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    target = lab.mount(plan)
    info = mount_at(target)
    assert info is not None
    assert info.fstype == "overlay"
    assert info.source == "snapws"
    assert info.mountpoint == target
    assert info.super_values("lowerdir+") == [str(p) for p in plan.lowers]
    assert info.super_options["upperdir"] == str(plan.upper)
    assert info.super_options["workdir"] == str(plan.work)
    assert not is_readonly(info)
    # The kernel lists these only when they differ from the module defaults.
    for name in ("metacopy", "index"):
        shown = info.super_options.get(name)
        effective = shown if shown is not None else ("on" if module_default(name) else "off")
        assert effective == "off", name
    redirect = info.super_options.get("redirect_dir")
    if redirect is None:  # default: "on" only when the module parameter says so
        assert not module_default("redirect_dir")
    else:
        assert redirect in ("off", "follow", "nofollow")


def test_userxattr_mount(lab: Lab) -> None:
    plan = three_layer_plan(lab, userxattr=True)
    target = lab.mount(plan)
    info = mount_at(target)
    assert info is not None
    assert "userxattr" in info.super_options
    assert info.super_options.get("redirect_dir") == "nofollow"
    assert (target / "f").read_text() == "a"


def make_store(lab: Lab, count: int) -> tuple[Path, ...]:
    """``count`` layers store/layers/<32 hex>/tree, topmost first.

    Every layer has ``who`` (its index: the topmost wins); every 50th also
    has ``file<i>`` (all of them visible).
    """
    lowers = []
    for i in range(count):
        tree = lab.root / "store" / "layers" / f"{i:032x}" / "tree"
        tree.mkdir(parents=True)
        (tree / "who").write_text(str(i))
        if i % 50 == 0:
            (tree / f"file{i}").write_text(str(i))
        lowers.append(tree)
    return tuple(lowers)


def check_store_mount(target: Path, count: int) -> None:
    assert (target / "who").read_text() == "0"
    expected = ["who"] + [f"file{i}" for i in range(0, count, 50)]
    assert sorted(os.listdir(target)) == sorted(expected)


def test_400_layers_new_api(lab: Lab) -> None:
    lowers = make_store(lab, 400)
    target, upper, work = lab.workspace()
    lab.mount(MountPlan(target, lowers, upper, work), api="new")
    check_store_mount(target, 400)
    info = mount_at(target)
    assert info is not None
    assert len(info.super_values("lowerdir+")) == 400


def test_legacy_relative_paths(lab: Lab) -> None:
    lowers = make_store(lab, 60)
    target, upper, work = lab.workspace()
    cwd = os.getcwd()
    lab.mount(MountPlan(target, lowers, upper, work), api="legacy")
    assert os.getcwd() == cwd
    check_store_mount(target, 60)
    info = mount_at(target)
    assert info is not None
    shown = info.super_options["lowerdir"]
    assert shown is not None
    # relative to the common parent of layers, upper and work (tmp_path)
    assert shown.split(":")[0] == f"store/layers/{0:032x}/tree"
    assert info.super_options["upperdir"] == "ws/upper"


def test_400_layers_legacy(lab: Lab) -> None:
    lowers = make_store(lab, 400)
    target, upper, work = lab.workspace()
    cwd = os.getcwd()
    fds = sorted(os.listdir("/proc/self/fd"))
    lab.mount(MountPlan(target, lowers, upper, work), api="legacy")
    assert os.getcwd() == cwd
    assert sorted(os.listdir("/proc/self/fd")) == fds  # the O_PATH descriptors are closed
    check_store_mount(target, 400)
    info = mount_at(target)
    assert info is not None
    shown = info.super_options["lowerdir"]
    assert shown is not None
    assert len(shown.split(":")) == 400
    assert all(name.isdigit() for name in shown.split(":"))  # named by descriptor
    (target / "new").write_text("n")
    assert (upper / "new").read_text() == "n"


def test_400_layers_legacy_relative_only_says_what_fits(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative to the common parent (tmp_path), a layer is "store/layers/<32 hex>/tree",
    # 50 bytes + ":": 400 of them cannot fit in 4095 bytes.
    monkeypatch.setattr(legacy, "LEGACY_FD_PATHS", False)
    lowers = make_store(lab, 400)
    target, upper, work = lab.workspace()
    cwd = os.getcwd()
    with pytest.raises(MountError) as caught:
        lab.mount(MountPlan(target, lowers, upper, work), api="legacy")
    assert os.getcwd() == cwd
    assert mount_at(target) is None
    err = caught.value
    assert "400 layers" in err.message
    assert "4095" in err.message
    assert "snapws flatten" in err.hint
    fixed = len(
        "lowerdir=,upperdir=ws/upper,workdir=ws/work,"
        "redirect_dir=nofollow,metacopy=off,index=off,nfs_export=off,xino=off,uuid=off"
    )
    fit = (4095 - fixed + 1) // 51
    assert f"at most {fit} layers fit" in err.message
    # the claim holds: the top `fit` layers mount, one more does not
    with pytest.raises(MountError, match=f"at most {fit} layers fit"):
        lab.mount(MountPlan(target, lowers[: fit + 1], upper, work), api="legacy")
    lab.mount(MountPlan(target, lowers[:fit], upper, work), api="legacy")
    check_store_mount(target, fit)


def test_fsopen_missing_falls_back_to_legacy(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(newapi, "_SYS_FSOPEN", 999_999)  # -> ENOSYS, like an old kernel
    plan = three_layer_plan(lab)
    with pytest.raises(MountError, match="new mount API"):
        mount_overlay(plan, api="new")
    target = lab.mount(plan)
    info = mount_at(target)
    assert info is not None
    assert "lowerdir" in info.super_options  # the legacy option
    assert (target / "f").read_text() == "a"


@pytest.mark.parametrize("api", ["auto", "new", "legacy"])
def test_single_lower_view_is_readonly(lab: Lab, api: mounter.Api) -> None:
    lower = lab.layer("layers/a", {"f": "a", "d/g": "g"})
    target = lab.layer("view")
    lab.mount(MountPlan(target=target, lowers=(lower,)), api=api)
    assert (target / "f").read_text() == "a"
    assert sorted(os.listdir(target)) == ["d", "f"]
    with pytest.raises(OSError) as caught:
        (target / "new").write_text("x")
    assert caught.value.errno == errno.EROFS
    with pytest.raises(OSError) as caught:
        (target / "f").write_text("x")
    assert caught.value.errno == errno.EROFS
    info = mount_at(target)
    assert info is not None
    assert is_readonly(info)
    if api != "legacy":
        assert info.fstype == "overlay"
        assert info.source == "snapws"
    # a read-only view stays as it is, and cannot be made writable
    remount_readonly(target)
    with pytest.raises(MountError):
        remount_readwrite(target)


def test_single_lower_view_falls_back_to_bind(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before Linux 6.15 the overlay refuses the detached empty tmpfs: EINVAL on create.
    real = newapi.syscall

    def old_kernel(what: str, *args: int | bytes | None) -> int:
        if what == "fsconfig create":
            raise OSError(errno.EINVAL, f"{what}: Invalid argument")
        return real(what, *args)

    monkeypatch.setattr(newapi, "syscall", old_kernel)
    lower = lab.layer("layers/a", {"f": "a"})
    target = lab.layer("view")
    with pytest.raises(MountError, match="EINVAL"):
        lab.mount(MountPlan(target=target, lowers=(lower,)), api="new")
    assert mount_at(target) is None
    lab.mount(MountPlan(target=target, lowers=(lower,)), api="auto")
    info = mount_at(target)
    assert info is not None
    assert info.fstype != "overlay"
    assert is_readonly(info)
    assert (target / "f").read_text() == "a"
    with pytest.raises(OSError) as caught:
        (target / "f").write_text("x")
    assert caught.value.errno == errno.EROFS


def test_two_lower_view(lab: Lab) -> None:
    a = lab.layer("layers/a", {"f": "a"})
    b = lab.layer("layers/b", {"f": "b", "g": "b"})
    target = lab.layer("view")
    lab.mount(MountPlan(target=target, lowers=(a, b)))
    assert (target / "f").read_text() == "a"
    assert (target / "g").read_text() == "b"
    with pytest.raises(OSError) as caught:
        (target / "g").write_text("x")
    assert caught.value.errno == errno.EROFS


def test_readonly_plan(lab: Lab) -> None:
    target = lab.mount(three_layer_plan(lab, readonly=True))
    with pytest.raises(OSError) as caught:
        (target / "x").write_text("x")
    assert caught.value.errno == errno.EROFS
    info = mount_at(target)
    assert info is not None
    assert is_readonly(info)


def test_nonexistent_lower_reports_kernel_message(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    missing = lab.root / "layers" / "missing"
    bad = MountPlan(plan.target, (plan.lowers[0], missing), plan.upper, plan.work)
    with pytest.raises(MountError) as caught:
        lab.mount(bad)
    message = caught.value.message
    assert str(missing) in message
    assert "No such file or directory" in message
    assert f"failed to resolve '{missing}'" in message  # the kernel's own words
    assert mount_at(plan.target) is None


def test_legacy_error_reports_kernel_message(lab: Lab) -> None:
    lower = lab.layer("layers/a", {"f": "a"})
    target, upper, _ = lab.workspace()
    # the workdir inside the upperdir: the kernel refuses
    plan = MountPlan(target, (lower,), upper, upper / "work")
    (upper / "work").mkdir()
    with pytest.raises(MountError) as caught:
        lab.mount(plan, api="legacy")
    assert "overlayfs:" in caught.value.message
    assert mount_at(target) is None


# --------------------------------------------------------------------------- remount


def test_remount_readonly_then_readwrite(lab: Lab) -> None:
    target = lab.mount(three_layer_plan(lab))
    (target / "before").write_text("x")
    remount_readonly(target)
    info = mount_at(target)
    assert info is not None
    assert is_readonly(info)
    assert "ro" in info.super_options  # the superblock, not only this mount
    for action in (
        lambda: (target / "new").write_text("x"),
        lambda: (target / "before").write_text("y"),
        lambda: (target / "f").unlink(),
        lambda: (target / "dir2").mkdir(),
    ):
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno == errno.EROFS
    remount_readonly(target)  # idempotent
    remount_readwrite(target)
    info = mount_at(target)
    assert info is not None
    assert not is_readonly(info)
    assert "relatime" in info.mount_options  # per-mount flags kept
    (target / "new").write_text("x")
    assert (target / "before").read_text() == "x"


def test_remount_readonly_busy_names_writer(lab: Lab) -> None:
    target = lab.mount(three_layer_plan(lab))
    proc = lab.spawn(HOLD_OPEN, str(target / "dir" / "held"))
    with pytest.raises(MountBusyError) as caught:
        remount_readonly(target)
    assert caught.value.exit_code == MountError.exit_code
    assert "EBUSY" in caught.value.message
    info = mount_at(target)
    assert info is not None
    assert not is_readonly(info)
    writers = find_writers(target)
    mine = [h for h in writers if h.pid == proc.pid]
    assert len(mine) == 1
    assert mine[0].path == target / "dir" / "held"
    assert mine[0].how == "write"
    assert mine[0].command == Path(f"/proc/{proc.pid}/comm").read_text().strip()
    assert mine[0].command.startswith("python")
    lab.stop(proc)
    remount_readonly(target)
    assert find_writers(target) == []


def test_cwd_inside_does_not_block_remount_or_detach(lab: Lab) -> None:
    target = lab.mount(three_layer_plan(lab))
    proc = lab.spawn(WAIT, cwd=target / "dir")
    users = find_cwd_users(target)
    assert [(h.pid, h.path, h.how) for h in users if h.pid == proc.pid] == [
        (proc.pid, target / "dir", "cwd")
    ]
    assert find_writers(target) == []
    with pytest.raises(MountBusyError) as caught:
        unmount(target)
    assert "cd" in caught.value.hint
    remount_readonly(target)
    detach(target)
    assert mount_at(target) is None
    assert os.listdir(target) == []  # the ordinary (empty) directory again
    lab.stop(proc)


def test_detach_leaves_plain_directory(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    (plan.target / "under").write_text("hidden")  # hidden while mounted
    target = lab.mount(plan)
    assert not (target / "under").exists()
    detach(target)
    assert mount_at(target) is None
    assert os.listdir(target) == ["under"]
    assert not os.path.ismount(target)
    with pytest.raises(MountError, match="detaching"):
        detach(target)


def test_unmount_and_errors_when_not_mounted(lab: Lab) -> None:
    target = lab.mount(three_layer_plan(lab))
    unmount(target)
    assert mount_at(target) is None
    with pytest.raises(MountError, match="unmounting"):
        unmount(target)
    with pytest.raises(MountError, match="nothing is mounted"):
        remount_readonly(target)
    with pytest.raises(MountError, match="nothing is mounted"):
        remount_readwrite(target)


# --------------------------------------------------------------------------- mountinfo


def test_mountpoint_with_space_and_newline(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    odd = lab.root / "odd dir\nwith\tstuff\\x"
    odd.mkdir()
    target = lab.mount(MountPlan(odd, plan.lowers, plan.upper, plan.work))
    info = mount_at(target)
    assert info is not None
    assert info.mountpoint == odd
    assert info.fstype == "overlay"
    assert (odd / "f").read_text() == "a"
    assert [i for i in read_mountinfo() if i.mountpoint == odd] == [info]
    # through a symlink too
    link = lab.root / "link"
    link.symlink_to(odd)
    assert mount_at(link) == info


def test_the_kept_mount_table_follows_every_change(lab: Lab) -> None:
    """read_mountinfo keeps what it read until the kernel flags a change:
    a mount, a remount and an unmount (made by this process or another)
    each show at the next call; no change reads the same table."""
    before = read_mountinfo()
    assert read_mountinfo() == before  # kept: nothing changed
    target = lab.mount(three_layer_plan(lab))
    mine = [i for i in read_mountinfo() if i.mountpoint == target]
    assert len(mine) == 1 and not is_readonly(mine[0])
    mounter.remount_readonly(target)
    assert [is_readonly(i) for i in read_mountinfo() if i.mountpoint == target] == [True]
    # another process's unmount shows too
    subprocess.run(["umount", str(target)], check=True)
    assert [i for i in read_mountinfo() if i.mountpoint == target] == []
    # a child process reads its own table, not its parent's notice
    pid = os.fork()
    if pid == 0:
        try:
            ok = not [i for i in read_mountinfo() if i.mountpoint == target]
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_parse_mountinfo_escapes_and_optional_fields() -> None:
    data = (
        b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        b"45 22 0:39 / /tmp/a\\040b\\012c\\011d\\134e rw,nosuid,relatime shared:7 master:3"
        b" - overlay my\\040src ro,lowerdir+=/l\\054x,lowerdir+=/m,upperdir=/u,"
        b"workdir=/w,userxattr\n"
        b"garbage line\n"
    )
    infos = parse_mountinfo(data)
    assert len(infos) == 2
    info = infos[1]
    assert isinstance(info, MountInfo)
    assert (info.mount_id, info.parent_id) == (45, 22)
    assert info.mountpoint == Path("/tmp/a b\nc\td\\e")
    assert info.fstype == "overlay"
    assert info.source == "my src"
    assert info.mount_options == ("rw", "nosuid", "relatime")
    assert info.super_options == {
        "ro": None,
        "lowerdir+": "/m",
        "upperdir": "/u",
        "workdir": "/w",
        "userxattr": None,
    }
    assert info.super_values("lowerdir+") == ["/l,x", "/m"]
    assert is_readonly(info)
    assert not is_readonly(infos[0])


def test_mount_at_returns_topmost(lab: Lab) -> None:
    plan = three_layer_plan(lab)
    target = lab.mount(plan)
    other_upper, other_work = lab.layer("u2"), lab.layer("w2")
    second = MountPlan(target, (lab.layer("layers/z", {"f": "z"}),), other_upper, other_work)
    lab.mount(second)
    info = mount_at(target)
    assert info is not None
    assert info.super_options["upperdir"] == str(other_upper)
    assert (target / "f").read_text() == "z"
