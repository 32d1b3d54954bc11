"""Staged output under interruption, concurrent exports and failed moves (no model involved: fast)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from exporter_core.errors import OutputBusyError, OutputWriteError, TerminationRequested
from exporter_core.output import (
    LOCK_FILE,
    StagedOutput,
    deferred_interruptions,
    interruptions_as_exceptions,
    os_error,
    remove_stale_staging,
)


def test_staging_names_its_owner_and_holds_only_the_exports_files(tmp_path: Path) -> None:
    with StagedOutput(tmp_path / "out") as staged:
        assert staged.path.name.startswith(f".exporter-{os.getpid()}-")
        assert list(staged.path.iterdir()) == []
        (staged.path / "model.onnx").write_bytes(b"graph")
        staged.commit()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx"]


def test_a_discarded_export_removes_the_folders_it_created(tmp_path: Path) -> None:
    with StagedOutput(tmp_path / "a" / "b") as staged:
        (staged.path / "model.onnx").write_bytes(b"graph")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_someone_else_wrote_into_stays(tmp_path: Path) -> None:
    with StagedOutput(tmp_path / "out") as staged:
        (tmp_path / "out" / "theirs.txt").write_text("x")
    assert not staged.path.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["theirs.txt"]


def test_stale_staging_removed_only_when_its_owner_is_gone(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = tmp_path / f".exporter-{finished.pid}-x1.partial"
    dead.mkdir()
    unowned = tmp_path / ".exporter-old.partial"  # written before staging folders recorded their owner
    unowned.mkdir()
    alive = tmp_path / f".exporter-{os.getppid()}-x2.partial"
    alive.mkdir()
    assert sorted(p.name for p in remove_stale_staging(tmp_path)) == [dead.name, unowned.name]
    assert alive.exists()


def test_commit_puts_the_previous_set_back_when_the_move_fails(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"old graph")
    (out / "model.onnx.data").write_bytes(b"old weights")
    real_replace = os.replace

    def full_disk(source, target):
        if str(source).endswith("new.onnx.extra"):
            raise OSError(28, "No space left on device", str(target))
        return real_replace(source, target)

    staged = StagedOutput(out)
    (staged.path / "model.onnx").write_bytes(b"new graph")
    (staged.path / "new.onnx.extra").write_bytes(b"new")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OutputWriteError, match=r"No space left on device.*free some disk space") as caught:
        staged.commit(replaces=["model.onnx", "model.onnx.data"])
    assert caught.value.exit_code == 3
    monkeypatch.undo()
    assert (out / "model.onnx").read_bytes() == b"old graph"
    assert (out / "model.onnx.data").read_bytes() == b"old weights"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]


def test_the_lock_refuses_a_second_export(tmp_path: Path) -> None:
    with StagedOutput(tmp_path) as first:
        assert (tmp_path / LOCK_FILE).is_file()
        # flock locks belong to the open file: a second open in this process conflicts like another process.
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            StagedOutput(tmp_path)
        first.discard()
    assert not (tmp_path / LOCK_FILE).exists()
    with StagedOutput(tmp_path):
        pass


def test_sigterm_becomes_an_exception_and_waits_for_a_commit() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    steps: list[str] = []
    with pytest.raises(TerminationRequested), interruptions_as_exceptions():
        with deferred_interruptions():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("still committing")
        steps.append("never")
    assert steps == ["still committing"]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_machine_errors_are_environment_errors() -> None:
    assert os_error(OSError(27, "File too large", "m.onnx"), "writing").exit_code == 3
    assert "ulimit" in str(os_error(OSError(27, "File too large", "m.onnx"), "writing"))
    assert os_error(OSError(36, "File name too long"), "writing").exit_code == 2
