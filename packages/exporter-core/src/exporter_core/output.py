"""Atomic output: artifacts are written into a staging folder beside the target and moved in on success.

A crash, an exception, Ctrl-C or SIGTERM before `commit()` leaves the target untouched: the staging folder is
removed, and so is an output folder the export created itself. The staging folder's name carries its owner's pid
(``.exporter-<pid>-<random>.partial``, nothing inside it but the export's files), so a staging folder left by a killed run (SIGKILL, power loss) is recognised and removed by the next export into that
folder once its owner is gone. A lock file (``.exporter.lock``) keeps two exports out of one folder at once.
`commit()` replaces the whole set of files an export owns: the previous set is moved aside first and put back if
the move of the new set fails, and a SIGINT or SIGTERM arriving meanwhile takes effect once it is done.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType

from exporter_core.errors import (
    OutputBusyError,
    OutputNotWritableError,
    OutputWriteError,
    TerminationRequested,
)

__all__ = [
    "LOCK_FILE",
    "MACHINE_ERRNOS",
    "STAGING_PREFIX",
    "STAGING_SUFFIX",
    "StagedOutput",
    "check_output_folder",
    "deferred_interruptions",
    "ensure_writable_folder",
    "interruptions_as_exceptions",
    "os_error",
    "remove_stale_staging",
]

logger = logging.getLogger("exporter")

STAGING_PREFIX = ".exporter-"
STAGING_SUFFIX = ".partial"
#: In an output folder while an export writes into it.
LOCK_FILE = ".exporter.lock"

#: errno values that mean "the machine will not take the files", not "the request is wrong".
MACHINE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


def os_error(exc: OSError, doing: str) -> OutputWriteError | OutputNotWritableError:
    """The exporter error for `exc` raised while `doing` (a full disk and a permission are the machine's)."""
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    fixes = {
        errno.ENOSPC: "free some disk space or choose another output folder",
        errno.EDQUOT: "free some space under your quota or choose another output folder",
        errno.EFBIG: "the file is larger than this process may write (ulimit -f); raise the limit",
        errno.EACCES: "choose a folder you may write into",
        errno.EPERM: "choose a folder you may write into",
        errno.EROFS: "choose a folder on a writable file system",
    }
    if exc.errno in MACHINE_ERRNOS:
        fix = fixes.get(exc.errno, "check the disk and retry")
        return OutputWriteError(f"{doing} failed: {reason}{where}; {fix}")
    return OutputNotWritableError(f"{doing} failed: {reason}{where}; choose another output path")


# -- interruptions ----------------------------------------------------------------------------------------------

_deferring = 0
_pending: list[int] = []


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise TerminationRequested("stopped by SIGTERM")
    raise KeyboardInterrupt


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _deferring:
        _pending.append(signum)
        return
    _raise_for(signum)


@contextlib.contextmanager
def interruptions_as_exceptions() -> Iterator[None]:
    """Inside the block SIGINT raises `KeyboardInterrupt` and SIGTERM `TerminationRequested`, so that every
    ``finally`` runs; `deferred_interruptions` can hold them back. Handlers are restored on exit. Only the main
    thread can install handlers; elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in previous:
            signal.signal(sig, _handler)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred_interruptions() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM (as handled by `interruptions_as_exceptions`) until the block is done."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        signum = _pending[0]
        _pending.clear()
        _raise_for(signum)


# -- folders ------------------------------------------------------------------------------------------------------


def check_output_folder(folder: Path) -> Path:
    """Check, without creating anything, that `folder` is or can become a writable folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputNotWritableError(f"{folder} exists and is not a folder; choose another output path")
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputNotWritableError(
            f"cannot create output folder {folder}: {existing} is a file; choose another output path"
        )
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            raise OutputWriteError(
                f"output folder {folder} is not writable; choose a writable path (permission denied)"
            )
        raise OutputWriteError(
            f"cannot create output folder {folder}: {existing} is not writable; choose a writable path"
        )
    return folder


def ensure_writable_folder(folder: Path) -> Path:
    """Create `folder` (and parents) and check it can be written, or raise `OutputNotWritableError`."""
    _create(Path(folder))
    return folder


def _create(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the folders created, deepest first."""
    check_output_folder(folder)
    missing = []
    cursor = folder
    while not cursor.exists():
        missing.append(cursor)
        if cursor.parent == cursor:
            break
        cursor = cursor.parent
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
    return missing


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_of(staging: Path) -> int | None:
    """The pid in a staging folder's name (``.exporter-<pid>-<random>.partial``); None for older names."""
    middle = staging.name[len(STAGING_PREFIX) :].split("-", 1)[0]
    return int(middle) if middle.isdigit() else None


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in `folder` whose owner process is gone; return those removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(f"{STAGING_PREFIX}*{STAGING_SUFFIX}")):
        if not path.is_dir():
            continue
        owner = _owner_of(path)
        if owner is not None and owner != os.getpid() and _pid_alive(owner):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


class _FolderLock:
    """An exclusive ``flock`` on ``<folder>/.exporter.lock``, refused at once when another process holds it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise os_error(exc, f"creating the lock file {self.path}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = ""
                with contextlib.suppress(OSError, ValueError):
                    holder = f" (pid {int(os.read(fd, 32).decode().split()[0])})"
                os.close(fd)
                raise OutputBusyError(
                    f"another export{holder} is writing into {self.path.parent}; wait for it to finish or choose "
                    "another output folder"
                ) from None
            # The holder before us may have removed the file after we opened it: lock the file that is there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


class StagedOutput:
    """A staging folder in `destination` whose files replace those in `destination` on `commit()`.

    Creating it creates `destination` (removed again on `discard()` when the export made it and it is empty), takes
    the folder's lock, and removes staging folders left there by killed runs (`log` is told which).
    """

    def __init__(self, destination: Path, log: Callable[[str], None] | None = None) -> None:
        self.destination = Path(destination)
        self._created = _create(self.destination)
        self._lock = _FolderLock(self.destination)
        self._done = False
        try:
            self._lock.acquire()
            stale = remove_stale_staging(self.destination)
            if stale:
                (log or logger.info)(
                    f"Removed {len(stale)} staging folder(s) left in {self.destination} by an interrupted export: "
                    + ", ".join(p.name for p in stale)
                )
            try:
                self.path = Path(
                    tempfile.mkdtemp(
                        prefix=f"{STAGING_PREFIX}{os.getpid()}-", suffix=STAGING_SUFFIX, dir=self.destination
                    )
                )
            except OSError as exc:
                raise os_error(exc, f"writing into {self.destination}") from None
        except BaseException:
            self._release()
            raise

    def staged_names(self) -> list[str]:
        """Names of the files staged so far."""
        return sorted(p.name for p in self.path.iterdir())

    def commit(self, names: list[str] | None = None, replaces: Iterable[str] = ()) -> list[Path]:
        """Move the staged files (all of them, or `names`) into the destination; return their final paths.

        `replaces` names files (or folders) of the destination that belong to the export being replaced: those the
        new set does not overwrite are removed, and if moving the new set in fails every one of them is put back.
        """
        chosen = names if names is not None else self.staged_names()
        # Data files first and the files that reference them last, so a reader never sees a model whose
        # external data is missing.
        chosen = sorted(chosen, key=lambda n: (n.endswith((".onnx", ".pt", ".json")), n))
        # Folders too (a sentence-transformers export's 1_Pooling/): a folder cannot be moved onto a non-empty one.
        old = sorted(
            {n for n in replaces if (self.destination / n).exists()}
            | {n for n in chosen if (self.destination / n).exists()}
        )
        moved: list[Path] = []
        with deferred_interruptions():
            backup = self.path / ".exporter-replaced"
            try:
                backup.mkdir()
                for name in old:
                    os.replace(self.destination / name, backup / name)
                for name in chosen:
                    target = self.destination / name
                    os.replace(self.path / name, target)
                    moved.append(target)
            except OSError as exc:
                for target in moved:
                    with contextlib.suppress(OSError):
                        target.unlink()
                for name in old:
                    with contextlib.suppress(OSError):
                        os.replace(backup / name, self.destination / name)
                self.discard()
                raise os_error(exc, f"moving the export into {self.destination}") from None
            self._done = True
            shutil.rmtree(self.path, ignore_errors=True)
            self._release()
        return moved

    def discard(self) -> None:
        """Remove the staging folder and everything in it (and the output folder when this export created it)."""
        if hasattr(self, "path"):
            shutil.rmtree(self.path, ignore_errors=True)
        self._done = True
        self._release()
        for folder in self._created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a folder something else wrote into stays

    def _release(self) -> None:
        self._lock.release()

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done or exc_type is not None:
            self.discard()
