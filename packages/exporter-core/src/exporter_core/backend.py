"""The contract between the facade and a format backend."""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from exporter_core.errors import InvalidArgumentError, closest, did_you_mean
from exporter_core.plan import CheckResult, ExportPlan, PlanCheck, Runner, Scenario

__all__ = [
    "Backend",
    "CheckResult",
    "ExportRequest",
    "ExportResult",
    "ExportedPart",
    "Retry",
    "Runner",
    "Tolerance",
    "refuse_unknown_options",
]


def refuse_unknown_options(
    backend_name: str, options: Mapping[str, Any], known: Iterable[str], also: Iterable[str] = ()
) -> None:
    """Refuse option names outside `known`, suggesting the nearest of `known` and `also` (the caller's other
    keywords: a misspelt ``atol`` reaches the backend as an unknown option)."""
    names = list(known)
    unknown = sorted(set(options) - set(names))
    if not unknown:
        return
    if len(unknown) == 1:
        hints = did_you_mean(unknown[0], [*names, *also])
    else:
        hints = "".join(
            f"; {name!r}: did you mean {match}?" for name in unknown if (match := closest(name, [*names, *also]))
        )
    listed = ", ".join(names) if names else "none"
    raise InvalidArgumentError(
        f"the {backend_name} backend has no option {', '.join(map(repr, unknown))}{hints}; its options are: {listed}"
    )


@dataclass
class ExportRequest:
    """Everything a backend needs for one export; `staging` is where it writes its files."""

    #: What to export: parts (modules, inputs, outputs, caches), validation scenarios and checks.
    plan: ExportPlan
    staging: Path
    #: File name of a single-part export (the backend's default, or the file the user named).
    artifact_name: str
    preprocessor: Any = None
    #: The backend's own options (checked by `Backend.check_options` before the model was loaded).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def feature(self) -> str:
        """The feature being exported (for messages and metadata; a backend never branches on it)."""
        return self.plan.feature


@dataclass(frozen=True)
class Tolerance:
    """A tolerance a backend states for one part it transformed (quantized, fp16): outputs may differ by
    ``atol + rtol * max|reference|``; `reason` says why it is looser than the architecture's."""

    atol: float
    rtol: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"atol": self.atol, "rtol": self.rtol, "reason": self.reason}


@dataclass
class ExportedPart:
    """One written artifact: the plan part it realises, its file and a runner for it."""

    #: Name of the `PlanPart` this artifact realises.
    name: str
    artifact: str
    runner: Runner
    #: Shapes of the inputs the artifact was captured or traced with (recorded in the report).
    export_inputs: dict[str, list[int]] = field(default_factory=dict)
    #: The backend's own validation scenarios (static-shape backends validate at their traced shape and with
    #: padded smaller inputs); None: the plan part's scenarios.
    scenarios: list[Scenario] | None = None
    #: The tolerance the part is validated with when the caller states none (a quantized or fp16 variant's looser
    #: one); None: the architecture's.
    tolerance: Tolerance | None = None


@dataclass(frozen=True)
class Retry:
    """How a backend would export the same plan the sturdier way when the way it chose for speed fails validation
    (the ONNX backend traces text encoders with the TorchScript-based engine, whose graph can hold a shape or a
    branch of the traced inputs; ``torch.export`` captures them symbolically). The facade exports once more with
    `options` (the caller's backend options with these replaced) and says `reason` in the log and the report."""

    options: dict[str, Any]
    reason: str


@dataclass
class ExportResult:
    """What a backend wrote (file names inside the staging folder) and how to run each part."""

    artifacts: list[str]
    parts: list[ExportedPart]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Checks of the backend's own, run after the plan's (a variant's task-level accuracy checks); a failing one
    #: fails the export.
    checks: list[PlanCheck] = field(default_factory=list)
    #: The other way to export the plan if a part of this export fails validation; None: there is none.
    retry: Retry | None = None


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
    #: The option names `check_options` accepts; the facade refuses any other name before calling it, with the
    #: nearest name suggested. None: not declared, `check_options` alone decides.
    option_names: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why the backend cannot run here (a run-time SDK missing), or None when it can. Must be cheap."""
        return None

    @classmethod
    def unavailable_reason_for(cls, options: Mapping[str, Any]) -> str | None:
        """Why the backend cannot run here with these `options` (as the caller gave them, not yet checked), or
        None; by default `unavailable_reason`. A backend that can run elsewhere than in this process (Neuron's
        SDK in its own interpreter) answers for the options' choice. Must be cheap."""
        return cls.unavailable_reason()

    @classmethod
    def environment_notes(cls) -> list[str]:
        """Lines ``exporter backends`` prints under the backend's own: what it found outside this process (the
        Neuron SDK environments it can run in, say). May start processes; only ``exporter backends`` calls it."""
        return []

    @classmethod  # noqa: B027 - an optional hook: the default adds no option
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the backend's own command-line options to its subcommand."""

    @classmethod
    def subcommands(cls) -> dict[str, Callable[[argparse.ArgumentParser], None]]:
        """Sub-actions (``exporter <backend> <name> ...``): name -> function adding its arguments and ``func``."""
        return {}

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Backend options from parsed arguments (the keys `export` reads from `request.options`)."""
        return {}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Refuse unknown or bad options before any model is loaded; return them as `export` reads them.

        The default accepts no option at all.
        """
        refuse_unknown_options(cls.name, options, ())
        return {}

    @classmethod  # noqa: B027 - an optional hook: the default checks nothing more
    def check_for_architecture(cls, options: Mapping[str, Any], config_cls: type, model_config: Any = None) -> None:
        """Refuse `options` (as `check_options` returned them) that the architecture's config class or the
        checkpoint's Transformers config (None when it cannot be read alone) cannot honour: an opset below the
        architecture's lowest, a sequence longer than the model's positions. Runs before the weights are read."""

    @classmethod
    def holds_checkpoint_dtype(cls, options: Mapping[str, Any], folder: Path, config_cls: type | None = None) -> bool:
        """True when the model may be loaded in its checkpoint's half precision (bfloat16, float16) and compute in
        float32 module by module (`exporter_core.precision`) instead of being widened to float32 whole: only a
        backend that never traces the real weights may say so (the ONNX backend when it streams them). `options`
        as `check_options` returned them, `config_cls` the architecture's config class; the default is False."""
        return False

    @abc.abstractmethod
    def export(self, request: ExportRequest) -> ExportResult:
        """Write every part of `request.plan` into `request.staging` and return how to run each."""
