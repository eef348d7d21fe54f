"""Backend selection (choose_backend) and the registry, with the probes
replaced: which backend auto picks, why, and what an impossible request says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from snapws import backends
from snapws.backends import AUTO_ORDER, choose_backend, get_backend
from snapws.backends.base import Availability
from snapws.backends.fuse import FuseBackend
from snapws.backends.kernel import KernelBackend, RootlessBackend
from snapws.backends.overlay import OverlayBackend
from snapws.backends.plain.backend import PlainBackend
from snapws.config import Config, load_config
from snapws.errors import ConfigError, ExitCode, UnsupportedError
from snapws.ids import SnapshotId, WorkspaceId
from snapws.model import WorkspaceState

CLASSES = {
    "kernel": KernelBackend,
    "rootless": RootlessBackend,
    "fuse": FuseBackend,
    "plain": PlainBackend,
}


class Machine:
    """A faked machine: ``allowed`` says which backends' probes succeed;
    ``probed`` lists the probes run, in order."""

    def __init__(self) -> None:
        self.allowed = dict.fromkeys(CLASSES, True)
        self.probed: list[str] = []

    def probe_of(self, name: str) -> Callable[[object, Path], Availability]:
        def probe(backend: object, store_root: Path) -> Availability:
            self.probed.append(name)
            if self.allowed[name]:
                return Availability(name, True, f"{name} works")
            return Availability(name, False, f"{name} is missing", f"install {name}")

        return probe


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    """Every backend's probe replaced by the faked machine's answer."""
    fake = Machine()
    for name, cls in CLASSES.items():
        monkeypatch.setattr(cls, "probe", fake.probe_of(name))
    return fake


def test_auto_takes_the_first_that_works_in_order(machine: Machine, tmp_path: Path) -> None:
    assert choose_backend(Config(), tmp_path) == ("kernel", "kernel works")
    assert machine.probed == ["kernel"]


@pytest.mark.parametrize(
    ("missing", "chosen"),
    [
        (("kernel",), "fuse"),
        (("kernel", "rootless"), "fuse"),
        (("kernel", "rootless", "fuse"), "plain"),
        (("kernel", "fuse"), "plain"),
    ],
)
def test_auto_says_why_it_skipped_the_faster_ones(
    machine: Machine, tmp_path: Path, missing: tuple[str, ...], chosen: str
) -> None:
    for name in missing:
        machine.allowed[name] = False
    name, reason = choose_backend(Config(), tmp_path, "auto")
    assert name == chosen
    assert reason.startswith(f"{chosen} works")
    for skipped in missing:
        said = f"{skipped} skipped: {skipped} is missing" in reason
        earlier = skipped in AUTO_ORDER and AUTO_ORDER.index(skipped) < AUTO_ORDER.index(chosen)
        assert said is earlier


def test_auto_never_takes_rootless_a_user_gets_plain(machine: Machine, tmp_path: Path) -> None:
    # as a user who is not root: kernel and fuse need root, rootless works;
    # auto still gives plain, whose directory every process of the user sees
    machine.allowed["kernel"] = False
    machine.allowed["fuse"] = False
    name, reason = choose_backend(Config(), tmp_path)
    assert name == "plain"
    assert "rootless" not in machine.probed
    assert "rootless" not in reason
    # asked for, rootless is taken
    assert choose_backend(Config(), tmp_path, "rootless")[0] == "rootless"


def test_a_requested_backend_that_works_is_taken_without_probing_others(
    machine: Machine, tmp_path: Path
) -> None:
    assert choose_backend(Config(), tmp_path, "fuse") == ("fuse", "requested; fuse works")
    assert machine.probed == ["fuse"]


def test_an_impossible_backend_names_one_that_works(machine: Machine, tmp_path: Path) -> None:
    machine.allowed["kernel"] = False
    machine.allowed["fuse"] = False
    with pytest.raises(UnsupportedError) as info:
        choose_backend(Config(), tmp_path, "kernel")
    err = info.value
    assert err.exit_code is ExitCode.UNSUPPORTED
    assert err.message == "the kernel backend cannot run here: kernel is missing"
    assert err.hint is not None
    assert err.hint.startswith("use `--backend plain`, which works here (plain works)")
    assert "install kernel" in err.hint


def test_the_suggestion_never_is_the_refused_backend(machine: Machine, tmp_path: Path) -> None:
    machine.allowed["rootless"] = False
    with pytest.raises(UnsupportedError) as info:
        choose_backend(Config(), tmp_path, "rootless")
    assert info.value.hint is not None
    assert "`--backend kernel`" in info.value.hint


def test_the_configured_backend_applies_when_none_is_requested(
    machine: Machine, tmp_path: Path
) -> None:
    assert choose_backend(Config(backend="plain"), tmp_path) == ("plain", "requested; plain works")
    # an explicit request wins over the configuration
    assert choose_backend(Config(backend="plain"), tmp_path, "auto")[0] == "kernel"


def test_nothing_works_is_an_error(machine: Machine, tmp_path: Path) -> None:
    for name in machine.allowed:
        machine.allowed[name] = False
    with pytest.raises(UnsupportedError) as info:
        choose_backend(Config(), tmp_path)
    assert "no backend can run here" in info.value.message
    assert "plain: plain is missing" in info.value.message


def test_an_unknown_backend_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        choose_backend(Config(), tmp_path, "zfs")


def test_config_and_environment_name_the_backend(tmp_path: Path) -> None:
    conf = tmp_path / "snapws.toml"
    conf.write_text('backend = "fuse"\n')
    assert load_config({"SNAPWS_CONFIG": str(conf)}).backend == "fuse"
    assert load_config({"SNAPWS_CONFIG": str(conf), "SNAPWS_BACKEND": "plain"}).backend == "plain"
    assert load_config({}).backend == "auto"
    conf.write_text('backend = "docker"\n')
    with pytest.raises(ConfigError, match="backend must be one of auto, kernel"):
        load_config({"SNAPWS_CONFIG": str(conf)})
    with pytest.raises(ConfigError):
        load_config({"SNAPWS_BACKEND": "nope"})


def state(backend: str) -> WorkspaceState:
    return WorkspaceState(
        id=WorkspaceId("ab" * 16),
        path="/nowhere",
        head=SnapshotId("cd" * 16),
        branch="main",
        upper="upper-1",
        work="work-1",
        backend=backend,
    )


@pytest.mark.parametrize("name", list(CLASSES))
def test_backend_for_gives_the_recorded_backend(name: str) -> None:
    found = backends.backend_for(state(name))
    assert isinstance(found, CLASSES[name])
    assert found.name == name
    assert found is get_backend(name)  # one instance per name
    assert isinstance(found, OverlayBackend) is (name != "plain")
    if isinstance(found, OverlayBackend):
        assert found.upper_form == ("fuse" if name == "fuse" else "overlay")


def test_a_workspace_of_an_unknown_backend_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="unknown backend 'zfs'"):
        backends.backend_for(state("zfs"))


def test_states_without_a_backend_are_kernel_workspaces() -> None:
    obj = state("kernel").to_json()
    del obj["backend"]
    assert WorkspaceState.from_json(obj).backend == "kernel"
