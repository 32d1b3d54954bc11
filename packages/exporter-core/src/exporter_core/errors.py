"""One error hierarchy for every exporter package.

User mistakes (`UserError` and its subclasses) become one line on the command line and exit status 2.
A failed validation (`ValidationError`) exits 1. Anything else escaping a command is a bug in exporter.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BackendNotInstalledError",
    "BackendUnavailableError",
    "ExportError",
    "ExporterError",
    "InputShapeError",
    "InvalidArgumentError",
    "InvalidPluginError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "OpsetError",
    "OutputNotWritableError",
    "PluginError",
    "UnsupportedFeatureError",
    "UnsupportedFrameworkError",
    "UnsupportedModelTypeError",
    "UserError",
    "ValidationError",
]


class ExporterError(Exception):
    """Base class of every error raised on purpose by exporter packages."""

    exit_code = 3


class UserError(ExporterError):
    """A mistake in what the user asked for; the message names the problem and the fix."""

    exit_code = 2


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
    """The output location cannot be created or written."""


class BackendNotInstalledError(UserError):
    """No backend of that name is installed; the message names the pip command."""


class BackendUnavailableError(UserError):
    """The backend is installed but a package it needs at run time is missing."""


class MissingDependencyError(UserError):
    """An optional package this request needs (Pillow for image processors, ...) is not installed."""


class PluginError(ExporterError):
    """A plugin entry point is broken: it fails to load, or two plugins claim one name."""


class InvalidPluginError(PluginError, UserError):
    """An entry point names an object of the wrong kind (a backend that is not a `Backend`, ...)."""


class ExportError(ExporterError):
    """The conversion itself failed (a tracing or graph-capture error inside the backend)."""


class ValidationError(ExporterError, ValueError):
    """The exported artifact does not compute what the PyTorch model computes within tolerance."""

    exit_code = 1

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
