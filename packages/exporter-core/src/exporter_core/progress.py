"""Stage times, progress lines and peak memory of one export.

The pipeline records an export inside ``with recording(StageRecorder(printer)):``; any code it calls, a backend
included, marks its own steps with ``with stage("capture decoder_with_past"): ...`` without knowing who records
(outside a recording `stage` only runs its block). Stages nest: a backend's stages sit under the pipeline's
``export`` stage. With a printer, each stage prints one line as it starts and one as it ends (the command line
passes one only on a terminal); `note` prints a line inside the current stage (bytes written so far, say).

`peak_memory` reads what the kernel keeps for free: the peak resident set of this process and of its largest
finished child (``getrusage``), and this process's peak and current resident and anonymous memory from
``/proc/self/status``. Linux keeps no peak of anonymous memory, so the recorder samples ``RssAnon`` as every stage
starts and ends: the largest sample is a lower bound of the true peak, reported as such.
"""

from __future__ import annotations

import contextlib
import contextvars
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StageRecorder", "StageTime", "note", "peak_memory", "recording", "stage"]

_STATUS = Path("/proc/self/status")


def _status_bytes(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status given in kB, as bytes (empty where the file does not exist)."""
    found: dict[str, int] = {}
    try:
        text = _STATUS.read_text(encoding="ascii")
    except OSError:
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            parts = value.split()
            if parts and parts[0].isdigit():
                found[key] = int(parts[0]) * 1024
    return found


def _rss_anon() -> int | None:
    return _status_bytes("RssAnon").get("RssAnon")


def _maxrss_bytes(who: int) -> int:
    """``ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    value = int(resource.getrusage(who).ru_maxrss)
    return value if sys.platform == "darwin" else value * 1024


@dataclass
class StageTime:
    """One finished stage."""

    name: str
    seconds: float
    #: 0 for the pipeline's stages, 1 for a stage inside one (a backend's), ...
    depth: int = 0
    #: The enclosing stage, None at the top.
    parent: str | None = None
    #: True when the stage ended with an exception.
    failed: bool = False
    #: Resident anonymous memory as the stage ended (None where /proc is not readable).
    rss_anon_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "depth": self.depth,
            "parent": self.parent,
            "failed": self.failed,
            "rss_anon_bytes": self.rss_anon_bytes,
        }


@dataclass
class StageRecorder:
    """Times every stage of one export; prints a line as each starts and ends when it has a printer."""

    printer: Callable[[str], None] | None = None
    stages: list[StageTime] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: Largest RssAnon sampled at a stage start or end (a lower bound of the true peak).
    rss_anon_peak_sampled: int | None = None
    _open: list[str] = field(default_factory=list)

    def _sample(self) -> int | None:
        anon = _rss_anon()
        if anon is not None and (self.rss_anon_peak_sampled is None or anon > self.rss_anon_peak_sampled):
            self.rss_anon_peak_sampled = anon
        return anon

    def _print(self, text: str) -> None:
        if self.printer is not None:
            self.printer("  " * len(self._open) + text)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name` (printing its start and end)."""
        self._sample()
        self._print(f"▸ {name} ...")
        parent = self._open[-1] if self._open else None
        self._open.append(name)
        start = time.perf_counter()
        failed = True
        try:
            yield
            failed = False
        finally:
            seconds = time.perf_counter() - start
            self._open.pop()
            anon = self._sample()
            self.stages.append(StageTime(name, seconds, len(self._open), parent, failed, anon))
            self._print(f"{'✗' if failed else '✓'} {name} {'failed after' if failed else 'done in'} {seconds:.1f} s")

    def note(self, text: str) -> None:
        """Print `text` inside the current stage (nothing is recorded)."""
        self._print(f"  {text}")

    @property
    def elapsed(self) -> float:
        """Seconds since the recorder was made."""
        return time.perf_counter() - self.started

    def to_list(self) -> list[dict[str, Any]]:
        """Every finished stage in the order they ended (a stage after the stages inside it)."""
        return [s.to_dict() for s in self.stages]


_CURRENT: contextvars.ContextVar[StageRecorder | None] = contextvars.ContextVar("exporter_stages", default=None)


@contextlib.contextmanager
def recording(recorder: StageRecorder) -> Iterator[StageRecorder]:
    """Make `recorder` the one `stage` and `note` report to inside the block."""
    token = _CURRENT.set(recorder)
    try:
        yield recorder
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as a stage of the current recording; just run it when nothing records."""
    recorder = _CURRENT.get()
    if recorder is None:
        yield
        return
    with recorder.stage(name):
        yield


def note(text: str) -> None:
    """Print `text` inside the current stage of the current recording (nothing when none or no printer)."""
    recorder = _CURRENT.get()
    if recorder is not None:
        recorder.note(text)


def peak_memory(recorder: StageRecorder | None = None) -> dict[str, Any]:
    """The process's peak memory so far, in bytes, with where each figure comes from."""
    status = _status_bytes("VmHWM", "VmRSS", "RssAnon")
    data: dict[str, Any] = {
        "max_rss_bytes": _maxrss_bytes(resource.RUSAGE_SELF),
        "children_max_rss_bytes": _maxrss_bytes(resource.RUSAGE_CHILDREN),
        "vm_hwm_bytes": status.get("VmHWM"),
        "rss_bytes": status.get("VmRSS"),
        "rss_anon_bytes": status.get("RssAnon"),
        "rss_anon_peak_sampled_bytes": recorder.rss_anon_peak_sampled if recorder is not None else None,
        "sources": {
            "max_rss_bytes": "getrusage(RUSAGE_SELF).ru_maxrss: peak resident set of this process",
            "children_max_rss_bytes": "getrusage(RUSAGE_CHILDREN).ru_maxrss: peak of the largest finished child "
            "process (worker processes), 0 when none",
            "vm_hwm_bytes": "/proc/self/status VmHWM: peak resident set (file-backed pages included)",
            "rss_bytes": "/proc/self/status VmRSS when the report was written",
            "rss_anon_bytes": "/proc/self/status RssAnon when the report was written",
            "rss_anon_peak_sampled_bytes": "largest RssAnon sampled as each stage started and ended: a lower "
            "bound of the peak anonymous memory (Linux keeps no peak of it)",
        },
    }
    return data
