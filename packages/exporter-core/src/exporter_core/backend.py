"""The contract between the facade and a format backend."""

from __future__ import annotations

import abc
import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from exporter_core.config import OnnxConfig

__all__ = ["Backend", "ExportPart", "ExportRequest", "ExportResult", "Runner"]

#: Runs an exported artifact: named NumPy inputs in, named NumPy outputs out.
Runner = Callable[["Mapping[str, np.ndarray]"], "dict[str, np.ndarray]"]


@dataclass
class ExportRequest:
    """Everything a backend needs for one export; `staging` is where it writes its files."""

    model: Any
    config: OnnxConfig
    feature: str
    staging: Path
    artifact_name: str
    preprocessor: Any = None
    model_path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportPart:
    """One artifact to validate: its config, the torch module the config's hooks call, and a runner.

    Most exports have one part; an encoder-decoder has several (encoder, decoder, decoder with past).
    """

    name: str
    artifact: str
    config: OnnxConfig
    model: Any
    runner: Runner
    input_names: list[str]
    output_names: list[str]
    #: Inputs to validate with; None lets validation build the config's reference inputs.
    reference_inputs: "Mapping[str, np.ndarray] | None" = None


@dataclass
class ExportResult:
    """What a backend wrote (file names inside the staging folder) and how to validate it."""

    artifacts: list[str]
    parts: list[ExportPart]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Checks the backend ran itself (generation parity, shape contracts): dicts with at least
    #: "name", "passed" and "detail"; they go into the report and a failing one fails validation.
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        """Input names of the first (main) part."""
        return self.parts[0].input_names

    @property
    def output_names(self) -> list[str]:
        """Output names of the first (main) part."""
        return self.parts[0].output_names


class Backend(abc.ABC):
    """A format backend, declared in the ``exporter.backends`` entry-point namespace.

    The module that defines a backend class must stay cheap to import: heavy libraries are imported
    inside `export`.
    """

    #: Backend id: the entry-point name and the CLI subcommand.
    name: ClassVar[str]
    #: Human name used in log lines ("Validating ONNX model...").
    display_name: ClassVar[str]
    #: File written for the model when the output is a folder.
    default_artifact: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why the backend cannot run here (a run-time SDK missing), or None when it can. Must be cheap."""
        return None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the backend's own command-line options to its subcommand."""

    @classmethod
    def subcommands(cls) -> "dict[str, Callable[[argparse.ArgumentParser], None]]":
        """Sub-actions (``exporter <backend> <name> ...``): name -> function adding its arguments and ``func``."""
        return {}

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Backend options from parsed arguments (the keys `export` reads from `request.options`)."""
        return {}

    @abc.abstractmethod
    def export(self, request: ExportRequest) -> ExportResult:
        """Write the artifact(s) into `request.staging` and return how to run them."""

    def run_checks(self, request: ExportRequest, result: ExportResult) -> list[dict[str, Any]]:
        """Extra checks run after the artifacts are written (for example generation parity); default none."""
        return []
