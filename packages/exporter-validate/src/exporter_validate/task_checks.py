"""Task-level checks of a transformed artifact (quantized, fp16): does it still do the model's job?

An output-by-output tolerance says how far values may move; a quantized model moves them by design. These checks
say whether what the outputs are used for survives, on the plan part's own scenarios (other shapes, padding, past
lengths) and, when the preprocessor is a tokenizer and the part takes only what it gives, on real sentences:

- an output whose name ends in ``logits``: top-1 agreement (per real position for outputs over a sequence, which
  for a decoder is the next token at every position; per row for a classification head) at least `TOP1_MIN`, and
  the cosine of the logit vectors, reported;
- every other floating output (embeddings, hidden states, pooled outputs, past key values): cosine similarity of
  each vector (the last axis) at real positions, the lowest at least `COSINE_MIN`.

The figures of every output go into the `CheckResult`'s data, so the report states what ran and what it measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter_core.plan import CheckResult, PlanCheck, Runner

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.plan import ExportPlan, PlanPart

__all__ = ["COSINE_MIN", "SENTENCES", "TOP1_MIN", "output_figures", "task_checks"]

#: Lowest cosine similarity an embedding or hidden-state vector of the artifact may have with the reference's.
COSINE_MIN = 0.99
#: Lowest share of positions (rows) whose top-1 class (token) the artifact and the reference agree on.
TOP1_MIN = 0.99
#: Real sentences of different lengths, batched with padding, for parts a tokenizer can feed.
SENTENCES = (
    "A man is playing a guitar on the street.",
    "Exporting models lets specialised runtimes run them quickly.",
    "Hi",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of the old house.",
    "Quantized weights take a quarter of the memory of their float32 originals.",
    "Where is the nearest train station?",
)


@dataclass
class _Sample:
    """One input set, the module computing its reference, and what it is called in the report."""

    label: str
    inputs: Mapping[str, np.ndarray]
    reference: Any


def _real_positions(inputs: Mapping[str, np.ndarray], axes: Mapping[int, str], shape: Sequence[int]) -> np.ndarray:
    """A boolean mask over the output's leading axes (batch, sequence): True where the position is real."""
    sequence_axis = next((a for a, n in axes.items() if a == 1 and "sequence" in str(n)), None)
    if sequence_axis is None or len(shape) < 3:
        return np.ones(tuple(shape[:1]), dtype=bool)
    key = "decoder_attention_mask" if "decoder" in str(axes[sequence_axis]) else "attention_mask"
    mask = inputs.get(key)
    length = shape[1]
    if mask is None or np.ndim(mask) != 2 or mask.shape[0] != shape[0] or mask.shape[1] < length:
        return np.ones((shape[0], length), dtype=bool)
    # A mask over past + new tokens (decoders with past): the output covers the new tokens, its last columns.
    return np.asarray(mask)[:, mask.shape[1] - length :].astype(bool)


def _vectors(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The output's vectors (its last axis) at the kept leading positions, as float64 rows."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return values.reshape(1, -1)
    if keep.ndim < values.ndim and keep.shape == values.shape[: keep.ndim]:
        values = values[keep]
    return values.reshape(-1, values.shape[-1])


def _cosines(reference: np.ndarray, exported: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair; a row pair that is zero on both sides counts as 1."""
    dot = np.sum(reference * exported, axis=-1)
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(exported, axis=-1)
    both_zero = (np.linalg.norm(reference, axis=-1) == 0) & (np.linalg.norm(exported, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosine)


def output_figures(
    name: str, axes: Mapping[int, str], reference: np.ndarray, exported: np.ndarray, inputs: Mapping[str, np.ndarray]
) -> dict[str, Any] | None:
    """The task-level figures of one output (None for outputs that are not floating point: ids, lengths)."""
    if not np.issubdtype(np.asarray(reference).dtype, np.floating) or np.asarray(reference).size == 0:
        return None
    if np.shape(reference) != np.shape(exported):
        return {"kind": "shape", "passed": False, "detail": f"shape {np.shape(exported)} != {np.shape(reference)}"}
    keep = _real_positions(inputs, axes, np.shape(reference))
    ref = _vectors(reference, keep)
    out = _vectors(exported, keep)
    if not np.all(np.isfinite(out)):
        return {"kind": "finite", "passed": False, "detail": "the artifact produced NaN or Inf"}
    cosine = _cosines(ref, out)
    figures: dict[str, Any] = {
        "vectors": int(cosine.size),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }
    if name.endswith("logits") and ref.shape[-1] > 1:
        agree = np.argmax(ref, axis=-1) == np.argmax(out, axis=-1)
        figures.update(kind="top1", top1_agreement=float(agree.mean()), passed=bool(agree.mean() >= TOP1_MIN))
    else:
        figures.update(kind="cosine", passed=bool(cosine.min() >= COSINE_MIN))
    return figures


def _samples(part: PlanPart, preprocessor: Any) -> list[_Sample]:
    """The part's scenarios, then real sentences when the tokenizer gives exactly what the part takes."""
    samples = [
        _Sample(s.label, s.inputs, s.reference if s.reference is not None else part.module) for s in part.scenarios
    ]
    if preprocessor is None or not callable(preprocessor) or not hasattr(preprocessor, "convert_tokens_to_ids"):
        return samples
    try:
        encoded = preprocessor(list(SENTENCES), padding=True, return_tensors="np")
    except (ValueError, TypeError, KeyError):  # a tokenizer that cannot pad (no pad token): the scenarios stay
        return samples
    given = {name: np.asarray(value) for name, value in encoded.items()}
    if "token_type_ids" in part.input_names and "token_type_ids" not in given and "input_ids" in given:
        # A tokenizer that gives no segment ids encodes one segment: segment 0 throughout.
        given["token_type_ids"] = np.zeros_like(given["input_ids"])
    if not set(part.input_names) <= set(given):
        return samples
    inputs = {name: given[name].astype(np.int64) for name in part.input_names}
    samples.append(_Sample(f"{len(SENTENCES)} real sentences, padded", inputs, part.module))
    return samples


def _run_part(part: PlanPart, runner: Runner, samples: Sequence[_Sample]) -> CheckResult:
    from exporter_validate.compare import reference_outputs

    per_output: dict[str, dict[str, Any]] = {}
    for sample in samples:
        reference = reference_outputs(sample.reference, part.config, sample.inputs)
        exported = runner(sample.inputs)
        for name, axes in part.config.outputs.items():
            if name not in reference:
                continue
            if name not in exported:
                per_output.setdefault(name, {})[sample.label] = {"passed": False, "detail": "missing"}
                continue
            figures = output_figures(name, axes, reference[name], np.asarray(exported[name]), sample.inputs)
            if figures is not None:
                per_output.setdefault(name, {})[sample.label] = figures
    failing = [
        f"{name} [{label}]: {_describe(figures)}"
        for name, by_sample in per_output.items()
        for label, figures in by_sample.items()
        if not figures["passed"]
    ]
    summary = "; ".join(f"{name}: {_summarize(by_sample)}" for name, by_sample in per_output.items())
    passed = not failing and bool(per_output)
    detail = summary if passed else ("; ".join(failing) if failing else "no floating output to check")
    data = {
        "part": part.name,
        "thresholds": {"min_cosine": COSINE_MIN, "top1_agreement": TOP1_MIN},
        "samples": [s.label for s in samples],
        "outputs": per_output,
    }
    return CheckResult(name=f"task check {part.name}", passed=passed, detail=detail, data=data)


def _describe(figures: Mapping[str, Any]) -> str:
    if "detail" in figures:
        return str(figures["detail"])
    if figures["kind"] == "top1":
        return (
            f"top-1 agreement {figures['top1_agreement']:.2%} < {TOP1_MIN:.0%} "
            f"(logit cosine min {figures['min_cosine']:.4f})"
        )
    return f"cosine {figures['min_cosine']:.4f} < {COSINE_MIN}"


def _summarize(by_sample: Mapping[str, Mapping[str, Any]]) -> str:
    figures = list(by_sample.values())
    lowest = min(f["min_cosine"] for f in figures)
    if any(f["kind"] == "top1" for f in figures):
        top1 = min(f["top1_agreement"] for f in figures if f["kind"] == "top1")
        return f"top-1 agreement {top1:.2%}, logit cosine >= {lowest:.5f}"
    return f"cosine >= {lowest:.5f}"


def task_checks(plan: ExportPlan, preprocessor: Any = None, label: str = "") -> list[PlanCheck]:
    """One check per plan part: the artifact's outputs against the reference module's, at the task level."""
    checks = []
    for part in plan.parts:
        name = f"task check {part.name}" + (f" ({label})" if label else "")

        def run(runners: Mapping[str, Runner], part: PlanPart = part, name: str = name) -> CheckResult:
            result = _run_part(part, runners[part.name], _samples(part, preprocessor))
            return CheckResult(name=name, passed=result.passed, detail=result.detail, data=result.data)

        checks.append(PlanCheck(name=name, run=run))
    return checks
