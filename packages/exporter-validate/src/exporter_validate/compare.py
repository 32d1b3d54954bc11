"""Running the reference model and comparing its outputs with an artifact's, output by output."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter_validate.report import OutputCheck, ValidationReport

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = [
    "DEFAULT_RTOL",
    "compare_outputs",
    "max_abs_difference",
    "real_positions",
    "reference_outputs",
    "resolve_tolerance",
    "validate_outputs",
]

logger = logging.getLogger("exporter")

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

#: Relative term of the default tolerance: each output may differ by atol + DEFAULT_RTOL * max|reference| (its
#: largest compared reference value). fp32 rounding grows with an output's magnitude and the model's depth and
#: width; measured worst differences over max|reference| (bench/results/tolerance-scale.md) stay below this for
#: tiny models and for a 1.1B decoder, while a dropped layer or a wrong position offset is 100x and more beyond it.
DEFAULT_RTOL = 1e-4


def resolve_tolerance(config: OnnxConfig | None, atol: float | None, rtol: float | None) -> tuple[float, float]:
    """(atol, rtol) a validation uses: neither given, the config's atol and `DEFAULT_RTOL`; an atol alone is
    strictly absolute (rtol 0); an rtol alone keeps the config's atol."""
    default_atol = float(config.atol_for_validation) if config is not None else 1e-5
    if atol is not None and rtol is None:
        return float(atol), 0.0
    return (default_atol if atol is None else float(atol)), (DEFAULT_RTOL if rtol is None else float(rtol))


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def reference_outputs(model: Any, config: OnnxConfig, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch model's outputs on `inputs`, named and ordered as the config's outputs."""
    import torch

    from exporter_core.modeling import argument_name, export_module, prepared_for_export

    with prepared_for_export(model, config), torch.no_grad():
        module = export_module(model, config, list(inputs))
        values = module(
            **{argument_name(name): torch.from_numpy(np.ascontiguousarray(v)) for name, v in inputs.items()}
        )
    return {name: _to_numpy(value) for name, value in zip(config.outputs, values, strict=True)}


def _mask_for(axis_name: str, inputs: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    key = "decoder_attention_mask" if "decoder" in axis_name else "attention_mask"
    mask = inputs.get(key)
    if mask is None or np.ndim(mask) != 2 or bool(np.all(mask == 1)):
        return None
    return key, np.asarray(mask)


def _declared_over_past(config: OnnxConfig | None, mask_name: str) -> bool:
    """True when the config declares the mask's length as past + sequence."""
    try:
        axes = config.inputs.get(mask_name, {}) if config is not None else {}
    except TypeError:  # a config that declares no inputs
        return False
    return any("past" in str(axis_name) for axis_name in axes.values())


def real_positions(
    axes: Mapping[int, str], shape: tuple[int, ...], inputs: Mapping[str, np.ndarray], config: OnnxConfig | None
) -> tuple[np.ndarray, str | None]:
    """Where an output of `shape` holds real positions: False where a sequence axis meets padding (mask == 0).

    Returns the boolean array (of `shape`) and what was compared (``real positions (attention_mask == 1)``), or
    None for the second item when every position is real or no mask applies.
    """
    keep = np.ones(shape, dtype=bool)
    compared = None
    for axis, axis_name in axes.items():
        if axis == 0 or axis >= len(shape) or "sequence" not in axis_name:
            continue
        found = _mask_for(axis_name, inputs)
        if found is None:
            continue
        key, mask = found
        if mask.shape[0] != shape[0]:
            continue
        if mask.shape[1] != shape[axis]:
            # A mask declared over past + sequence (decoders with past): an output's sequence is its last part.
            if not _declared_over_past(config, key) or mask.shape[1] < shape[axis]:
                continue
            mask = mask[:, mask.shape[1] - shape[axis] :]
        mask_shape = [1] * len(shape)
        mask_shape[0], mask_shape[axis] = mask.shape
        keep &= np.broadcast_to(mask.reshape(mask_shape).astype(bool), shape)
        compared = f"real positions ({key} == 1)"
    return keep, compared


def _compare_one(
    name: str,
    axes: Mapping[int, str],
    reference: np.ndarray,
    exported: np.ndarray,
    inputs: Mapping[str, np.ndarray],
    atol: float,
    config: OnnxConfig | None = None,
    rtol: float = 0.0,
) -> OutputCheck:
    check = OutputCheck(
        name=name,
        reference_shape=list(reference.shape),
        exported_shape=list(exported.shape),
        max_abs_diff=None,
        atol=atol,
        rtol=rtol,
    )
    if reference.shape != exported.shape:
        return check
    with np.errstate(invalid="ignore"):  # inf - inf is NaN; equal infinities count as equal below
        diff = np.abs(reference.astype(np.float64) - exported.astype(np.float64))
    if diff.size == 0:
        check.max_abs_diff = 0.0
        check.reference_magnitude = 0.0
        return check
    keep, compared = real_positions(axes, diff.shape, inputs, config)
    if compared is not None:
        check.compared = compared
    nan_mismatch = np.isnan(reference) != np.isnan(exported)
    diff = np.where(np.isnan(diff), np.where(nan_mismatch, np.inf, 0.0), diff)
    check.max_abs_diff = float(diff[keep].max()) if keep.any() else 0.0
    if keep.any():
        worst = np.where(keep, diff, -1.0)
        check.worst_position = [int(i) for i in np.unravel_index(int(np.argmax(worst)), diff.shape)]
    if not keep.all():
        check.max_abs_diff_excluded = float(diff[~keep].max())
    check.nonfinite = _nonfinite_facts(reference, exported, keep)
    check.reference_magnitude = _magnitude(reference, keep)
    return check


def _magnitude(reference: np.ndarray, keep: np.ndarray) -> float:
    """Largest finite |reference| at compared positions (0 when there is none): the scale of the relative term."""
    if not (np.issubdtype(reference.dtype, np.floating) or np.issubdtype(reference.dtype, np.complexfloating)):
        values = np.abs(reference.astype(np.float64))[keep]
    else:
        values = np.abs(reference.astype(np.float64))[keep & np.isfinite(reference)]
    return float(values.max()) if values.size else 0.0


def _nonfinite_facts(reference: np.ndarray, exported: np.ndarray, keep: np.ndarray) -> dict[str, Any] | None:
    """Which side produced NaN or Inf at compared positions, how many, and the first such position."""
    sides = {}
    for side, values in (("reference", reference), ("exported", exported)):
        if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(values.dtype, np.complexfloating):
            continue
        bad = ~np.isfinite(values) & keep
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            kinds = sorted({"nan" if np.isnan(values[first]) else ("inf" if values[first] > 0 else "-inf")})
            sides[side] = {
                "count": int(bad.sum()),
                "first_position": list(first),
                "first_value": kinds[0],
                "nan": int(np.isnan(values[bad]).sum()),
                "inf": int(np.isinf(values[bad]).sum()),
            }
    if not sides:
        return None
    side = "both" if len(sides) == 2 else next(iter(sides))
    return {"side": side, **{name: facts for name, facts in sides.items()}}


def compare_outputs(
    config: OnnxConfig,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    exported: Mapping[str, np.ndarray],
    atol: float,
    rtol: float = 0.0,
) -> list[OutputCheck]:
    """One `OutputCheck` per reference output; sequence axes compare real positions only (mask == 1). Each output
    passes when its worst difference is at most ``atol + rtol * max|reference|`` (see `OutputCheck.tolerance`)."""
    axes_by_name = config.outputs
    checks = []
    for name, ref in reference.items():
        if name not in exported:
            checks.append(OutputCheck(name, list(ref.shape), None, None, atol, missing=True, rtol=rtol))
            continue
        checks.append(
            _compare_one(name, axes_by_name.get(name, {}), ref, np.asarray(exported[name]), inputs, atol, config, rtol)
        )
    return checks


def max_abs_difference(
    config: OnnxConfig,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    exported: Mapping[str, np.ndarray],
) -> float:
    """The worst difference over every reference output, compared as `compare_outputs` compares them (real
    positions of sequence axes, the same NaN rule); inf when an output is missing or its shape differs."""
    worst = 0.0
    for check in compare_outputs(config, inputs, reference, exported, atol=0.0):
        if not check.shape_ok or check.max_abs_diff is None:
            return math.inf
        worst = max(worst, check.max_abs_diff)
    return worst


def validate_outputs(
    config: OnnxConfig,
    reference_model: Any,
    runner: Runner,
    *,
    preprocessor: Any = None,
    atol: float | None = None,
    format_name: str = "ONNX",
    inputs: Mapping[str, np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
    rtol: float | None = None,
    stage_name: str | None = None,
) -> ValidationReport:
    """Run the model and the artifact on reference inputs (another shape, with padding) and compare.

    Each output passes when its worst difference is at most ``atol + rtol * max|reference|``: with neither given,
    the config's atol and `DEFAULT_RTOL`; an `atol` alone is strictly absolute (rtol 0); an `rtol` alone keeps the
    config's atol. `stage_name` names the run as a stage of the current recording (`exporter_core.progress`).
    Returns the report; never raises on a mismatch (callers decide, see `ValidationReport.passed`).
    """
    from exporter_core.progress import stage

    tolerance, relative = resolve_tolerance(config, atol, rtol)
    with stage(stage_name or f"validate {format_name}"):
        if inputs is None:
            inputs = config.generate_reference_inputs(preprocessor, framework="np")
        reference = reference_outputs(reference_model, config, inputs)
        exported = dict(runner(inputs))
    report = ValidationReport(
        format=format_name,
        atol=tolerance,
        rtol=relative,
        reference_inputs={name: list(np.shape(v)) for name, v in inputs.items()},
        outputs=compare_outputs(config, inputs, reference, exported, tolerance, relative),
        reference_output_names=list(reference),
        exported_output_names=list(exported),
    )
    emit = log if log is not None else logger.info
    for line in report.log_lines():
        emit(line)
    return report
