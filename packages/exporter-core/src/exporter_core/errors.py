"""One error hierarchy for every exporter package, and the exit status of each kind.

Exit statuses of the ``exporter`` command: 0 exported and validated; 1 validation failed (`ValidationError`);
2 a mistake in the request or an unusable checkpoint (`UserError`); 3 the environment or the conversion failed (a
backend or dependency missing, a full disk, a permission, a backend error: `EnvironmentProblemError`,
`ExportError`, and any unexpected exception, which is reported as a bug); 130 interrupted by SIGINT (Ctrl-C);
143 stopped by SIGTERM (`TerminationRequested`).

Messages name the fix in the words of whoever called: ``opset=14`` from Python, ``--opset 14`` from the command
line (`option_hint`; the command line switches the spelling with `spelling_flags`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "EXIT_ENVIRONMENT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USER_ERROR",
    "EXIT_VALIDATION_FAILED",
    "BackendNotInstalledError",
    "BackendUnavailableError",
    "CheckpointError",
    "EnvironmentProblemError",
    "ExportError",
    "ExporterError",
    "InputShapeError",
    "InvalidArgumentError",
    "InvalidPluginError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "NonFiniteWeightsError",
    "OpsetError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputNotWritableError",
    "OutputWriteError",
    "PluginError",
    "RandomHeadError",
    "TerminationRequested",
    "UnsupportedFeatureError",
    "UnsupportedFrameworkError",
    "UnsupportedModelTypeError",
    "UserError",
    "ValidationError",
    "closest",
    "did_you_mean",
    "option_hint",
    "spelling_flags",
]

EXIT_OK = 0
EXIT_VALIDATION_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

_FLAGS: contextvars.ContextVar[bool] = contextvars.ContextVar("exporter_flag_spelling", default=False)


@contextlib.contextmanager
def spelling_flags() -> Iterator[None]:
    """Inside the block, `option_hint` spells options as command-line flags (the CLI wraps each command in it)."""
    token = _FLAGS.set(True)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def option_hint(name: str, value: object = None) -> str:
    """An option as the caller writes it: ``--opset 14`` on the command line, ``opset=14`` from Python; a flag
    turned off is ``--no-<flag>`` there."""
    if _FLAGS.get():
        flag = "--" + name.replace("_", "-")
        if value is False:
            return "--no-" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {value}"
    return name if value is None else f"{name}={value!r}"


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to `word` in spelling, or None when none is near."""
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the nearest choice, or an empty string."""
    match = closest(word, choices)
    return f" (did you mean {match}?)" if match else ""


class ExporterError(Exception):
    """Base class of every error raised on purpose by exporter packages."""

    exit_code = EXIT_ENVIRONMENT


class TerminationRequested(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM); unwinds like Ctrl-C so every cleanup runs, then exits 143."""

    exit_code = EXIT_TERMINATED


class EnvironmentProblemError(ExporterError):
    """The machine, not the request, stopped the export: a full disk, a permission, a missing package."""

    exit_code = EXIT_ENVIRONMENT


class UserError(ExporterError):
    """A mistake in what the user asked for; the message names the problem and the fix."""

    exit_code = EXIT_USER_ERROR


class InvalidArgumentError(UserError, ValueError):
    """An argument value is out of range or malformed."""


class InputShapeError(InvalidArgumentError):
    """An input does not fit the static shape an artifact was traced at; the message names that shape."""

    def __init__(self, message: str, static_shape: Mapping[str, int] | None = None) -> None:
        super().__init__(message)
        self.static_shape = dict(static_shape or {})


class ModelNotFoundError(UserError):
    """The model path does not exist, or a hub id is not in the local hub cache."""


class UnsupportedModelTypeError(UserError):
    """No architecture config is installed for the checkpoint's `model_type`."""


class UnsupportedFeatureError(UserError):
    """The architecture has no config for the requested feature (task)."""


class UnsupportedFrameworkError(UserError):
    """The checkpoint or the request needs a framework exporter does not support (TensorFlow)."""


class OpsetError(UserError, ValueError):
    """The requested ONNX opset cannot be used for this architecture or engine."""


class OutputNotWritableError(UserError):
    """The output location cannot be created or written (a file in the way, no permission)."""


class OutputExistsError(UserError):
    """The output folder already holds files, or the output file is not the chosen backend's artifact."""


class OutputBusyError(UserError):
    """Another export is writing into the same output folder right now."""


class OutputWriteError(EnvironmentProblemError, OutputNotWritableError):
    """Writing the export failed for a reason of the machine: a full disk, a file-size limit, a permission."""

    exit_code = EXIT_ENVIRONMENT


class CheckpointError(UserError):
    """The checkpoint's files are damaged or do not match its config (truncated, corrupt, missing shards)."""


class NonFiniteWeightsError(CheckpointError):
    """The checkpoint holds NaN or infinite weights."""


class RandomHeadError(UserError):
    """The feature needs weights the checkpoint lacks, which loading would fill with random values."""


class BackendNotInstalledError(UserError):
    """No backend of that name is installed; the message names the pip command."""

    exit_code = EXIT_ENVIRONMENT


class BackendUnavailableError(UserError):
    """The backend is installed but a package it needs at run time is missing."""

    exit_code = EXIT_ENVIRONMENT


class MissingDependencyError(UserError):
    """An optional package this request needs (Pillow for image processors, ...) is not installed."""

    exit_code = EXIT_ENVIRONMENT


class PluginError(ExporterError):
    """A plugin entry point is broken: it fails to load, or two plugins claim one name."""


class InvalidPluginError(PluginError, UserError):
    """An entry point names an object of the wrong kind (a backend that is not a `Backend`, ...)."""


class ExportError(ExporterError):
    """The conversion itself failed (a tracing or graph-capture error inside the backend)."""


class ValidationError(ExporterError, ValueError):
    """The exported artifact does not compute what the PyTorch model computes within tolerance."""

    exit_code = EXIT_VALIDATION_FAILED

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
