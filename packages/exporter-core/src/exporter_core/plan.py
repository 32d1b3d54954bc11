"""The export plan: what an architecture config asks every backend to do for one (model, feature).

A config builds the plan (`OnnxConfig.export_plan`); a backend executes it and never asks which family or
feature it is looking at:

- `parts`: the artifacts to write. Each `PlanPart` names the torch module to capture, the file name, the
  config describing its inputs and outputs (names, dynamic axes, dummy inputs, how the module is called) and,
  for parts with past key values, their `CacheLayout`.
- `scenarios` of each part: the input sets it is validated at (other shapes than the traced ones, padding,
  past lengths), each with the module its outputs are compared with.
- `checks`: what is verified over the written artifacts as a whole (generation parity), run with one runner
  per part.

Static-shape backends (TorchScript, Neuron) trace one part at one shape: `static_trace_refusal` says why a plan
cannot be traced so (a cache whose length a trace would fix, several graphs), or is None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from exporter_core.cache import CacheLayout
    from exporter_core.config import OnnxConfig

__all__ = ["CheckResult", "ExportPlan", "PlanCheck", "PlanPart", "Runner", "Scenario"]

#: Runs an exported artifact: named NumPy inputs in, named NumPy outputs out.
Runner = Callable[["Mapping[str, np.ndarray]"], "dict[str, np.ndarray]"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check over the exported artifacts (generation parity, say)."""

    name: str
    passed: bool
    detail: str
    #: Facts behind the verdict (tokens generated on each side, ...), written into the JSON report.
    data: Mapping[str, Any] = field(default_factory=dict)
    #: Why this result does not decide the export (None: it does). An exact check (`PlanCheck.exact`) over an
    #: artifact that changes the numbers by design (int4 weights) is run and reported, but cannot fail it.
    advisory: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        facts = {"advisory": self.advisory} if self.advisory else {}
        return {"name": self.name, "passed": self.passed, "detail": self.detail, **facts, **dict(self.data)}

    @property
    def counts(self) -> bool:
        """True when the result decides whether the export passed."""
        return self.advisory is None


@dataclass
class Scenario:
    """One input set a part is validated at, and the module its outputs are compared with."""

    #: What the scenario exercises ("batch 3, sequence 9, left padding").
    label: str
    #: Named NumPy inputs in the part's input order.
    inputs: Mapping[str, np.ndarray]
    #: Module to compute the reference outputs with; None: the part's own module.
    reference: Any = None


@dataclass
class PlanCheck:
    """A check over the written artifacts; `run` gets one runner per part name and returns the verdict."""

    name: str
    run: Callable[[Mapping[str, Runner]], CheckResult]
    #: True when the check expects the artifact to compute what the model computes (greedy generation parity,
    #: token for token). A backend that states a looser tolerance for a part (a quantized or fp16 variant) still
    #: runs it, and the result is reported as advisory: the variant's task checks are its bar instead.
    exact: bool = False


@dataclass
class PlanPart:
    """One artifact to write and how to validate it."""

    #: Part name: "model" for single-graph exports; "encoder", "decoder", "decoder_with_past", ...
    name: str
    #: File name of the artifact; None for the single part of an export (the backend's default name or the
    #: name the user gave).
    artifact: str | None
    #: Describes the part's inputs and outputs (names, dynamic axes, dummies) and how its module is called.
    config: OnnxConfig
    #: The torch module the config's hooks call.
    module: Any
    #: Input sets the part is validated at (never only the traced shape).
    scenarios: list[Scenario] = field(default_factory=list)
    #: Past key values the part takes and/or returns; None for parts without a cache.
    cache: CacheLayout | None = None

    @property
    def input_names(self) -> list[str]:
        """Input names in the order the module takes them."""
        return list(self.config.inputs)

    @property
    def output_names(self) -> list[str]:
        """Output names in the order the module returns them."""
        return list(self.config.outputs)

    def artifact_name(self, default: str) -> str:
        """The part's file name, `default` when the plan leaves it to the backend or the user."""
        return self.artifact if self.artifact is not None else default


@dataclass
class ExportPlan:
    """Everything a backend executes for one (model, feature)."""

    model_type: str
    feature: str
    #: The loaded Transformers model the parts' modules come from.
    model: Any
    parts: list[PlanPart]
    checks: list[PlanCheck] = field(default_factory=list)
    #: The floating dtype the checkpoint stores its weights in ("float16", "bfloat16", ...; None: unknown). The
    #: model is loaded in float32 whatever it is; a backend may export in this dtype (`loading.LoadedModel`).
    checkpoint_dtype: str | None = None
    #: Attention implementation every part is captured with (None keeps the model's own).
    attn_implementation: str | None = None
    #: Why a static-shape trace (TorchScript, Neuron) cannot serve this plan; None when it can. Filled from the
    #: parts when the family says nothing.
    static_trace_refusal: str | None = None

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("an export plan needs at least one part")
        names = [part.name for part in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"part names of an export plan must be unique, got {names}")
        if self.static_trace_refusal is None:
            if self.with_past:
                self.static_trace_refusal = (
                    f"{self.feature!r} takes past key values: a trace fixes the past length and a cache cannot be padded "
                    "like text; export the feature without -with-past, or use the onnx backend"
                )
            elif len(self.parts) > 1:
                self.static_trace_refusal = (
                    f"{self.feature!r} is exported as {len(self.parts)} graphs ({', '.join(names)}); a static trace "
                    "writes one; use the onnx backend"
                )

    @property
    def with_past(self) -> bool:
        """True when a part takes or returns past key values."""
        return any(part.cache is not None for part in self.parts)

    @property
    def main(self) -> PlanPart:
        """The first part (the only one of single-graph exports)."""
        return self.parts[0]

    def part(self, name: str) -> PlanPart:
        """The part called `name`."""
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"the export plan has no part {name!r}; parts: {', '.join(p.name for p in self.parts)}")

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Switch the model to the plan's attention implementation while capturing; restore it in ``finally``."""
        from exporter_core.modeling import attention_implementation

        with attention_implementation(self.model, self.attn_implementation):
            yield
