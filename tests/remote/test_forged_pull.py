"""A forged image on a registry (snapshot S1's record and labels, S2's
layers) is refused by fetch and pull (exit 16, nothing kept); the genuine S1
pulled afterwards is S1, with S1's content."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import WorkspaceFactory
from oci.test_forgery import forge
from registry import Registry

from snapws.errors import ExitCode

REPO = "team/forged"


def _copy(layout: Path, registry: Registry, tag: str) -> None:
    proc = subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"oci:{layout}",
            f"docker://{registry.url}/{REPO}:{tag}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_forged_image_is_refused_by_fetch_and_pull(
    make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path
) -> None:
    origin = make_workspace("origin", {"a.txt": "base\n"})
    (origin.path / "f.txt").write_text("genuine\n")
    s1 = origin.commit("s1")
    (origin.path / "f.txt").write_text("evil\n")
    origin.commit("s2")
    origin.run("export", s1, "-o", str(tmp_path / "s1"))
    origin.run("export", "HEAD", "-o", str(tmp_path / "s2"))
    forge(tmp_path / "s1", tmp_path / "s2", tmp_path / "forged")
    _copy(tmp_path / "forged", registry, "main")

    other = make_workspace("other", store=tmp_path / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    for verb in ("fetch", "pull"):
        proc = other.run(verb, check=False)
        assert proc.returncode == ExitCode.BAD_IMAGE, proc.stdout + proc.stderr
        assert "are not the record's" in proc.stderr, proc.stderr
    assert not (tmp_path / "store2" / "snapshots" / f"{s1}.json").exists()

    _copy(tmp_path / "s1", registry, "main")
    other.run("pull")
    assert other.head() == s1
    assert (other.path / "f.txt").read_text() == "genuine\n"
