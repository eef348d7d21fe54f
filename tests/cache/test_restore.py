"""snapws.ops.transfer.cache.restore without a registry: the checks before a download."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapws.errors import ExitCode, PermissionDeniedError
from snapws.ops.transfer.cache.restore import hides_files


def test_hides_files(tmp_path: Path) -> None:
    assert not hides_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not hides_files(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("f")
    assert hides_files(tmp_path / "full")
    (tmp_path / "file").write_text("f")
    assert hides_files(tmp_path / "file")


def test_a_directory_this_user_may_not_list_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root no mode stops a listing, so the OS's refusal is simulated
    where it happens (Path.iterdir)."""
    target = tmp_path / "theirs"
    target.mkdir()

    def refuse(self: Path) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(PermissionDeniedError) as err:
        hides_files(target)
    assert err.value.exit_code == ExitCode.UNSUPPORTED
    assert err.value.message.startswith(f"permission denied: {target}, owned by root (uid 0)")
    assert "root" not in err.value.hint
