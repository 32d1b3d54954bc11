"""Atomic output: staged files appear in the destination on commit, and nothing partial is ever left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exporter_core.errors import OutputNotWritableError, UserError
from exporter_core.output import LOCK_FILE, StagedOutput, ensure_writable_folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".exporter-"))


def test_commit_moves_the_files_and_removes_the_staging_folder(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "nested"
    with StagedOutput(destination) as staged:
        assert staged.path.parent == destination
        (staged.path / "model.onnx").write_bytes(b"graph")
        (staged.path / "model.onnx.data").write_bytes(b"weights")
        (staged.path / "report.json").write_text("{}")
        assert sorted(os.listdir(destination)) == sorted([LOCK_FILE, staged.path.name])
        moved = staged.commit()
    # Data before the files that reference it.
    assert [p.name for p in moved] == ["model.onnx.data", "model.onnx", "report.json"]
    assert sorted(os.listdir(destination)) == ["model.onnx", "model.onnx.data", "report.json"]
    assert (destination / "model.onnx").read_bytes() == b"graph"
    assert not staged.path.exists()


def test_commit_of_named_files_replaces_existing_ones_and_drops_the_rest(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    with StagedOutput(tmp_path) as staged:
        (staged.path / "model.pt").write_bytes(b"new")
        (staged.path / "scratch.bin").write_bytes(b"tmp")
        staged.commit(["model.pt"])
    assert (tmp_path / "model.pt").read_bytes() == b"new"
    assert (tmp_path / "notes.txt").read_text() == "kept"
    assert not (tmp_path / "scratch.bin").exists()
    assert _leftovers(tmp_path) == []


def test_a_staged_folder_replaces_the_previous_exports_folder(tmp_path: Path) -> None:
    """A sentence-transformers export stages 1_Pooling/config.json: exporting again over it replaces the folder."""
    for text in ("old", "new"):
        with StagedOutput(tmp_path) as staged:
            (staged.path / "1_Pooling").mkdir()
            (staged.path / "1_Pooling" / "config.json").write_text(text)
            (staged.path / "model.onnx").write_text(text)
            staged.commit(replaces=["1_Pooling", "model.onnx"])
    assert (tmp_path / "1_Pooling" / "config.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["1_Pooling", "model.onnx"]


def test_an_exception_discards_everything_and_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"previous good model")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RuntimeError, match="validation failed"):
        with StagedOutput(tmp_path) as staged:
            (staged.path / "model.onnx").write_bytes(b"half written")
            (staged.path / "model.onnx.data").write_bytes(b"weights")
            raise RuntimeError("validation failed")
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "model.onnx").read_bytes() == b"previous good model"
    assert not staged.path.exists()


def test_leaving_without_commit_writes_nothing(tmp_path: Path) -> None:
    with StagedOutput(tmp_path) as staged:
        (staged.path / "model.onnx").write_bytes(b"graph")
    assert os.listdir(tmp_path) == []


def test_a_file_where_a_folder_is_expected(tmp_path: Path) -> None:
    file = tmp_path / "model.onnx"
    file.write_bytes(b"x")
    with pytest.raises(
        OutputNotWritableError, match="exists and is not a folder; choose another output path"
    ) as caught:
        StagedOutput(file)
    assert isinstance(caught.value, UserError)
    with pytest.raises(OutputNotWritableError, match="cannot create output folder"):
        StagedOutput(file / "inside")
    assert file.read_bytes() == b"x"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux procfs, where nobody can create folders")
def test_a_folder_nobody_can_create() -> None:
    with pytest.raises(OutputNotWritableError, match="choose a writable path"):
        ensure_writable_folder(Path("/proc/exporter-test-output"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_a_read_only_destination(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(OutputNotWritableError, match="is not writable; choose a writable path"):
            StagedOutput(read_only)
        with pytest.raises(OutputNotWritableError, match="cannot create output folder"):
            StagedOutput(read_only / "sub")
    finally:
        read_only.chmod(stat.S_IRWXU)
