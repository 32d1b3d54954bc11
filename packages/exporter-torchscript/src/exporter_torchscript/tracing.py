"""Tracing a Transformers model with ``torch.jit.trace``: what the old ``torchscript=True`` flag did, and a shape contract.

Transformers 5 dropped the flag that made models traceable. Here the tracer gets a wrapper whose ``forward`` takes
the inputs by name and returns a tuple; parameters shared by several modules (input embeddings tied to an LM head)
are cloned apart in a copy, because a TorchScript module cannot hold them; the model is traced in eval mode.
The caller's model is left as it was.

A trace is made at a declared maximum shape with rows of different lengths (so code that depends on the attention
mask takes its general path), then called directly at other shapes to record whether it generalises.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from exporter_core.errors import ExportError, InvalidArgumentError
from exporter_core.modeling import export_module, prepared_for_export, untied_copy
from exporter_core.padding import describe_shape, pad_token_id_for, static_shape_of
from exporter_torchscript.metadata import EXTRA_FILE, TraceMetadata, metadata_path

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from exporter_core.config import OnnxConfig

__all__ = [
    "TracedExport",
    "check_other_shapes",
    "max_abs_difference",
    "reference_shapes",
    "save_traced",
    "sequence_size",
    "shared_parameter_groups",
    "trace",
    "trace_for_export",
    "without_jit_deprecation",
]

_POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_positions")


@dataclass
class TracedExport:
    """A traced module and the contract it was traced with."""

    module: Any
    metadata: TraceMetadata


def shared_parameter_groups(model: Any) -> list[list[str]]:
    """Names of parameters that are one tensor reached from several modules (tied weights), grouped."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[list[str]]:
    """Collect the tracer's warnings instead of printing them; silence torch.jit's own deprecation notice."""
    import torch

    collected: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield collected
        finally:
            for item in caught:
                if issubclass(item.category, torch.jit.TracerWarning):
                    text = str(item.message).splitlines()[0].strip()
                    if text not in collected:
                        collected.append(text)


@contextlib.contextmanager
def without_jit_deprecation() -> Iterator[None]:
    """Hide torch's notice that ``torch.jit`` is deprecated (TorchScript is this backend's format) for one call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def sequence_size(static_shape: Mapping[str, int]) -> int | None:
    """The size the config's ``seq_length`` controls: the ``sequence`` axis, else the encoder's (seq2seq)."""
    for name in ("sequence", "encoder_sequence"):
        if name in static_shape:
            return static_shape[name]
    return None


def _max_sequence(model_config: Any) -> int | None:
    for attribute in _POSITION_LIMITS:
        value = getattr(model_config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _dummy(
    config: OnnxConfig, preprocessor: Any, batch: int, sequence: int, choices: int, *, framework: str, seed: int
) -> "dict[str, Any]":
    return dict(
        config.generate_dummy_inputs(
            preprocessor,
            batch_size=batch,
            seq_length=sequence,
            num_choices=choices,
            framework=framework,
            padded=True,
            seed=seed,
        )
    )


def _real_position_mask(axes: Mapping[int, str], shape: tuple[int, ...], inputs: Mapping[str, Any]) -> np.ndarray:
    keep = np.ones(shape, dtype=bool)
    for axis, axis_name in axes.items():
        if axis == 0 or axis >= len(shape) or "sequence" not in axis_name:
            continue
        mask = inputs.get("decoder_attention_mask" if "decoder" in axis_name else "attention_mask")
        if mask is None:
            continue
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.shape != (shape[0], shape[axis]):
            continue
        view = [1] * len(shape)
        view[0], view[axis] = mask.shape
        keep &= np.broadcast_to(mask.reshape(view).astype(bool), shape)
    return keep


def max_abs_difference(
    reference: Sequence[Any], exported: Sequence[Any], output_axes: Mapping[str, Mapping[int, str]], inputs: Mapping[str, Any]
) -> float:
    """Largest |exported - reference| over every output, at real positions (attention mask 1) of sequence axes."""
    worst = 0.0
    for (name, axes), ref, out in zip(output_axes.items(), reference, exported):
        ref_array = ref.detach().cpu().double().numpy() if hasattr(ref, "detach") else np.asarray(ref, dtype=np.float64)
        out_array = out.detach().cpu().double().numpy() if hasattr(out, "detach") else np.asarray(out, dtype=np.float64)
        if ref_array.shape != out_array.shape:
            return float("inf")
        if ref_array.size == 0:
            continue
        diff = np.abs(ref_array - out_array)
        diff = np.where(np.isnan(ref_array) & np.isnan(out_array), 0.0, np.where(np.isnan(diff), np.inf, diff))
        keep = _real_position_mask(axes, diff.shape, {k: np.asarray(v) for k, v in inputs.items()})
        if keep.any():
            worst = max(worst, float(diff[keep].max()))
    return worst


def check_other_shapes(
    traced: Any, model: Any, config: OnnxConfig, static_shape: Mapping[str, int], preprocessor: Any = None
) -> list[dict[str, Any]]:
    """Call `traced` directly (no padding) at a smaller and a larger shape than `static_shape`; compare with `model`.

    One entry per shape tried: {"shape", "passed", "max_abs_diff", "error"}; "passed" is None when the eager
    model itself cannot run at that shape.
    """
    import torch

    names = list(config.inputs)
    with prepared_for_export(model, config), torch.no_grad():
        eager = export_module(model, config, names)
        return _check_other_shapes(
            traced, eager, config, preprocessor, static_shape, config.atol_for_validation, _max_sequence(config.model_config)
        )


def _check_other_shapes(
    traced: Any,
    eager: Any,
    config: OnnxConfig,
    preprocessor: Any,
    static: Mapping[str, int],
    atol: float,
    max_sequence: int | None,
) -> list[dict[str, Any]]:
    import torch

    batch = static.get("batch", 1)
    sequence = sequence_size(static) or 8
    choices = static.get("choice", -1)
    step = max(1, sequence // 4)
    larger_sequence = sequence + step if max_sequence is None else min(sequence + step, max_sequence)
    candidates = [(max(1, batch - 1), max(2, sequence - step)), (batch + 1, larger_sequence)]
    results = []
    for other_batch, other_sequence in candidates:
        inputs = _dummy(config, preprocessor, other_batch, other_sequence, choices, framework="pt", seed=2)
        shape = static_shape_of(inputs, config.inputs)
        if shape == dict(static):
            continue
        entry: dict[str, Any] = {"shape": shape, "passed": None, "max_abs_diff": None, "error": None}
        values = list(inputs.values())
        with torch.no_grad():
            try:
                reference = eager(*values)
            except Exception as exc:  # the model itself cannot run there (beyond its positions, say): no verdict
                entry["error"] = f"the eager model fails at this shape: {_first_line(exc)}"
                results.append(entry)
                continue
            try:
                exported = traced(*values)
            except Exception as exc:
                entry.update(passed=False, error=_first_line(exc))
                results.append(entry)
                continue
        diff = max_abs_difference(reference, exported, config.outputs, inputs)
        entry.update(passed=diff <= atol, max_abs_diff=diff)
        results.append(entry)
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"[:400]
    return type(exc).__name__


def trace_for_export(
    model: Any,
    config: OnnxConfig,
    *,
    batch_size: int | None = None,
    sequence_length: int | None = None,
    preprocessor: Any = None,
    feature: str | None = None,
    check_other_shapes: bool = True,
) -> TracedExport:
    """Trace `model` as `config` describes it at (batch_size, sequence_length), defaults from the config.

    The trace is made on an untied copy when the model shares parameters; `model` itself is left unchanged.
    With `check_other_shapes` the trace is called at a smaller and a larger shape and compared with the model;
    the verdict goes into the metadata (``generalizes``).
    """
    import torch
    import transformers

    batch = batch_size if batch_size is not None else config.default_batch_size
    sequence = sequence_length if sequence_length is not None else config.default_sequence_length
    limit = _max_sequence(config.model_config)
    if limit is not None and sequence > limit:
        raise InvalidArgumentError(
            f"sequence_length {sequence} is longer than the model's {limit} positions; pass --sequence-length {limit} or less"
        )
    dummy = _dummy(config, preprocessor, batch, sequence, -1, framework="pt", seed=0)
    names = list(dummy)
    static = static_shape_of(dummy, config.inputs)
    shared = shared_parameter_groups(model)
    with prepared_for_export(model, config), torch.no_grad(), _quiet_tracer() as tracer_warnings:
        source = untied_copy(model) if shared else model
        wrapper = export_module(source, config, names)
        try:
            traced = torch.jit.trace(wrapper, tuple(dummy.values()), check_trace=False, strict=True)
        except Exception as exc:
            raise ExportError(
                f"torch.jit.trace could not trace {type(model).__name__} at {describe_shape(static)}: {_first_line(exc)}"
            ) from exc
        traced.eval()
        checks: list[dict[str, Any]] = []
        if check_other_shapes:
            eager = export_module(model, config, names)
            checks = _check_other_shapes(
                traced, eager, config, preprocessor, static, config.atol_for_validation, limit
            )
    verdicts = [c["passed"] for c in checks if c["passed"] is not None]
    metadata = TraceMetadata(
        input_names=names,
        output_names=list(config.outputs),
        input_shapes={name: list(value.shape) for name, value in dummy.items()},
        input_dtypes={name: str(value.dtype).replace("torch.", "") for name, value in dummy.items()},
        input_axes={name: dict(config.inputs[name]) for name in names},
        output_axes={name: dict(axes) for name, axes in config.outputs.items()},
        static_shape=static,
        pad_token_id=pad_token_id_for(config.model_config, preprocessor),
        padding_side="right",
        generalizes=all(verdicts) if verdicts else None,
        generalization_checks=checks,
        untied_parameters=shared,
        model_type=getattr(config.model_config, "model_type", None),
        model_class=type(model).__name__,
        feature=feature,
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        tracer_warnings=tracer_warnings,
    )
    return TracedExport(module=traced, metadata=metadata)


def save_traced(module: Any, metadata: TraceMetadata, path: str | Path) -> list[str]:
    """Save `module` to `path` with `metadata` inside it and beside it; return the file names written."""
    import torch

    path = Path(path)
    text = metadata.to_json()
    with without_jit_deprecation():
        torch.jit.save(module, str(path), _extra_files={EXTRA_FILE: text})
    side = metadata_path(path)
    side.write_text(text, encoding="utf-8")
    return [path.name, side.name]


def reference_shapes(
    config: OnnxConfig, static_shape: Mapping[str, int], preprocessor: Any = None
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Validation inputs for a traced module: (label, inputs) at the traced shape, and smaller (to be padded).

    Both have rows of several real lengths; the smaller set differs in batch and sequence where it can.
    """
    batch = static_shape.get("batch", -1)
    sequence = sequence_size(static_shape) or -1
    choices = static_shape.get("choice", -1)
    shapes = [(batch, sequence)]
    smaller = (max(1, batch // 2) if batch > 0 else -1, max(2, (2 * sequence) // 3) if sequence > 0 else -1)
    if smaller != (batch, sequence):
        shapes.append(smaller)
    found = []
    for index, (rows, length) in enumerate(shapes):
        inputs = _dummy(config, preprocessor, rows, length, choices, framework="np", seed=1 + 2 * index)
        shown = describe_shape(static_shape_of(inputs, config.inputs))
        label = f"traced shape ({shown})" if index == 0 else f"smaller inputs ({shown}) padded to the traced shape"
        found.append((label, inputs))
    return found


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
) -> "torch.jit.ScriptModule":
    """``torch.jit.trace(model, example_inputs)`` as it worked on a model loaded with ``torchscript=True``.

    The traced module takes the inputs positionally (bound to ``model.forward``'s parameters in order, or to
    `input_names`) or as given by name, returns the model's outputs as a tuple, and holds untied copies of tied
    weights. `model` is left as it was (mode, config, tied weights). Save it with ``torch.jit.save``. The trace
    is specialised to the example's shape; `trace_for_export` (``exporter torchscript``) records a shape contract.
    """
    import torch

    if isinstance(example_inputs, Mapping):
        names = list(example_inputs)
        values = list(example_inputs.values())
        if input_names is not None and list(input_names) != names:
            raise InvalidArgumentError("give input names either as the keys of example_inputs or as input_names, not both")
    else:
        values = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        names = list(input_names) if input_names is not None else _positional_names(model, len(values))
        if len(names) != len(values):
            raise InvalidArgumentError(f"{len(names)} input names for {len(values)} example inputs; give one name per input")
    adapter = _ModelOutputs(getattr(model, "config", None))
    shared = shared_parameter_groups(model)
    with prepared_for_export(model, adapter), torch.no_grad(), _quiet_tracer():  # type: ignore[arg-type]
        source = untied_copy(model) if shared else model
        wrapper = export_module(source, adapter, names)  # type: ignore[arg-type]
        try:
            traced = torch.jit.trace(wrapper, tuple(values), check_trace=check_trace, strict=True)
        except Exception as exc:
            raise ExportError(f"torch.jit.trace could not trace {type(model).__name__}: {_first_line(exc)}") from exc
    traced.eval()
    return traced
