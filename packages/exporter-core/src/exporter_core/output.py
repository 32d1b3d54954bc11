"""Atomic output: artifacts are written into a staging folder beside the target and moved in on success.

A crash, an exception or Ctrl-C before `commit()` leaves the target untouched and the staging folder removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from exporter_core.errors import OutputNotWritableError

__all__ = ["StagedOutput", "ensure_writable_folder"]


def ensure_writable_folder(folder: Path) -> Path:
    """Create `folder` (and parents) and check it can be written, or raise `OutputNotWritableError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputNotWritableError(f"{folder} exists and is not a folder; choose another output path") from None
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot create output folder {folder} ({exc.strerror}); choose a writable path"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"output folder {folder} is not writable; choose a writable path")
    return folder


class StagedOutput:
    """A staging folder in `destination` whose files replace those in `destination` on `commit()`."""

    def __init__(self, destination: Path) -> None:
        self.destination = ensure_writable_folder(Path(destination))
        try:
            self.path = Path(tempfile.mkdtemp(prefix=".exporter-", suffix=".partial", dir=self.destination))
        except OSError as exc:
            raise OutputNotWritableError(
                f"cannot write into {self.destination} ({exc.strerror}); choose a writable path"
            ) from None
        self._done = False

    def commit(self, names: list[str] | None = None) -> list[Path]:
        """Move the staged files (all of them, or `names`) into the destination; return their final paths."""
        moved = []
        chosen = names if names is not None else sorted(p.name for p in self.path.iterdir())
        # Data files first and the files that reference them last, so a reader never sees a model whose
        # external data is missing.
        chosen = sorted(chosen, key=lambda n: (n.endswith((".onnx", ".pt", ".json")), n))
        for name in chosen:
            target = self.destination / name
            os.replace(self.path / name, target)
            moved.append(target)
        self.discard()
        self._done = True
        return moved

    def discard(self) -> None:
        """Remove the staging folder and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._done = True

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done or exc_type is not None:
            self.discard()
