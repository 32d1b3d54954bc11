"""Tracing a Transformers model with ``torch.jit.trace``: what the old ``torchscript=True`` flag did, and a shape contract.

Transformers 5 dropped the flag that made models traceable. `trace_for_export` traces through the static-trace
layer (`exporter_torchscript.static`: a wrapper whose ``forward`` takes the inputs by name and returns a tuple,
tied parameters cloned apart in a copy, eval mode, the caller's model left as it was) at a declared maximum shape,
then calls the trace directly at other shapes to record whether it generalises. `trace` is the guide's
``torch.jit.trace(model, example_inputs)`` for Transformers 5.

Cheap to import: torch loads inside the functions.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exporter_core.errors import ExportError, InvalidArgumentError
from exporter_core.model_config import ModelConfigView

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from exporter_core.config import OnnxConfig
    from exporter_torchscript.static import StaticTrace, Tracer

__all__ = ["generalization_checks", "jit_tracer", "trace", "trace_for_export"]


def jit_tracer() -> Tracer:
    """``torch.jit.trace`` (strict, without its own check: other shapes are checked against the model instead)."""
    import torch

    from exporter_torchscript.static import Tracer

    def run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
        traced = torch.jit.trace(module, inputs, check_trace=False, strict=True)
        return traced.eval()

    return Tracer("torch.jit.trace", run)


def generalization_checks(
    traced: Any, model: Any, config: OnnxConfig, traced_shape: Mapping[str, int], preprocessor: Any = None
) -> list[dict[str, Any]]:
    """Call `traced` directly (no padding) at a smaller and a larger shape than `traced_shape`; compare with `model`.

    One entry per shape tried: {"shape", "passed", "max_abs_diff", "error"}; "passed" is None when the eager
    model itself cannot run at that shape. Outputs are compared by exporter-validate's rules (real positions).
    """
    import numpy as np
    import torch

    from exporter_core.padding import static_shape_of
    from exporter_torchscript.static import example_inputs, first_line, sequence_size
    from exporter_validate import max_abs_difference, reference_outputs

    batch = traced_shape.get("batch", 1)
    sequence = sequence_size(traced_shape) or 8
    step = max(1, sequence // 4)
    limit = ModelConfigView(config.model_config).max_positions
    larger_sequence = sequence + step if limit is None else min(sequence + step, limit)
    results = []
    for other_batch, other_sequence in ((max(1, batch - 1), max(2, sequence - step)), (batch + 1, larger_sequence)):
        inputs = example_inputs(
            config,
            preprocessor,
            other_batch,
            other_sequence,
            choices=traced_shape.get("choice", -1),
            framework="np",
            seed=2,
        )
        shape = static_shape_of(inputs, config.inputs)
        if shape == dict(traced_shape):
            continue
        entry: dict[str, Any] = {"shape": shape, "passed": None, "max_abs_diff": None, "error": None}
        results.append(entry)
        try:
            reference = reference_outputs(model, config, inputs)
        except Exception as exc:  # the model itself cannot run there (beyond its positions, say): no verdict
            entry["error"] = f"the eager model fails at this shape: {first_line(exc)}"
            continue
        try:
            with torch.no_grad():
                values = traced(*(torch.from_numpy(np.ascontiguousarray(value)) for value in inputs.values()))
        except Exception as exc:
            entry.update(passed=False, error=first_line(exc))
            continue
        exported = {name: value.detach().numpy() for name, value in zip(config.outputs, values, strict=True)}
        diff = max_abs_difference(config, inputs, reference, exported)
        entry.update(passed=diff <= config.atol_for_validation, max_abs_diff=diff)
    return results


def trace_for_export(
    model: Any,
    config: OnnxConfig,
    *,
    batch_size: int | None = None,
    sequence_length: int | None = None,
    preprocessor: Any = None,
    feature: str | None = None,
    check_other_shapes: bool = True,
) -> StaticTrace:
    """Trace `model` as `config` describes it at (batch_size, sequence_length), defaults from the config.

    The trace is made on an untied copy when the model shares parameters; `model` itself is left unchanged.
    With `check_other_shapes` the trace is called at a smaller and a larger shape and compared with the model;
    the verdict goes into the contract (``generalizes``).
    """
    from exporter_torchscript.static import trace_static

    traced = trace_static(
        model,
        config,
        jit_tracer(),
        batch_size=batch_size,
        sequence_length=sequence_length,
        preprocessor=preprocessor,
        feature=feature,
    )
    if check_other_shapes:
        checks = generalization_checks(traced.module, model, config, traced.contract.traced_shape, preprocessor)
        verdicts = [c["passed"] for c in checks if c["passed"] is not None]
        traced.contract.generalization_checks = checks
        traced.contract.generalizes = all(verdicts) if verdicts else None
    return traced


class _ModelOutputs:
    """Stands in for an architecture config in `export_module`: the model's own outputs as a tuple."""

    def __init__(self, model_config: Any) -> None:
        self._config = model_config

    @property
    def values_override(self) -> dict[str, Any] | None:
        return {"use_cache": False} if hasattr(self._config, "use_cache") else None

    def patched_ops(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(self)

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = dict(inputs)
        kwargs["return_dict"] = True
        if self.values_override:
            kwargs.setdefault("use_cache", False)
        return kwargs

    def select_outputs(self, output: Any) -> tuple[Any, ...]:
        if hasattr(output, "to_tuple"):
            return tuple(output.to_tuple())
        if isinstance(output, (tuple, list)):
            return tuple(output)
        return (output,)


def _positional_names(model: Any, count: int) -> list[str]:
    parameters = [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if count > len(parameters):
        raise InvalidArgumentError(
            f"{type(model).__name__}.forward takes {len(parameters)} positional inputs, {count} were given"
        )
    return parameters[:count]


def trace(
    model: Any,
    example_inputs: Sequence[Any] | Mapping[str, Any],
    *,
    input_names: Sequence[str] | None = None,
    check_trace: bool = True,
) -> torch.jit.ScriptModule:
    """``torch.jit.trace(model, example_inputs)`` as it worked on a model loaded with ``torchscript=True``.

    The traced module takes the inputs positionally (bound to ``model.forward``'s parameters in order, or to
    `input_names`) or as given by name, returns the model's outputs as a tuple, and holds untied copies of tied
    weights. `model` is left as it was (mode, config, tied weights). Save it with ``torch.jit.save``. The trace
    is specialised to the example's shape; `trace_for_export` (``exporter torchscript``) records a shape contract.
    """
    import torch

    from exporter_torchscript.static import collected_tracer_warnings, first_line, traceable

    if isinstance(example_inputs, Mapping):
        names = list(example_inputs)
        values = list(example_inputs.values())
        if input_names is not None and list(input_names) != names:
            raise InvalidArgumentError(
                "give input names either as the keys of example_inputs or as input_names, not both"
            )
    else:
        values = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        names = list(input_names) if input_names is not None else _positional_names(model, len(values))
        if len(names) != len(values):
            raise InvalidArgumentError(
                f"{len(names)} input names for {len(values)} example inputs; give one name per input"
            )
    adapter = _ModelOutputs(getattr(model, "config", None))
    with traceable(model, adapter, names) as wrapper, collected_tracer_warnings():  # type: ignore[arg-type]
        try:
            traced = torch.jit.trace(wrapper, tuple(values), check_trace=check_trace, strict=True)
        except Exception as exc:
            raise ExportError(f"torch.jit.trace could not trace {type(model).__name__}: {first_line(exc)}") from exc
    traced.eval()
    return traced
