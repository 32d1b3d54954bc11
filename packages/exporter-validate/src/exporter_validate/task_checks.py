"""Task-level checks of a transformed artifact (quantized, fp16): does it still do the model's job?

An output-by-output tolerance says how far values may move; a quantized model moves them by design. These checks
say whether what the outputs are used for survives, on the plan part's own scenarios (other shapes, padding, past
lengths) and, when the preprocessor is a tokenizer and the part takes only what it gives, on real sentences:

- an output whose name ends in ``logits``: top-1 agreement (per real position for outputs over a sequence, which
  for a decoder is the next token at every position; per row for a classification head) at least `TOP1_MIN`, and
  the cosine of the logit vectors, reported;
- every other floating output (embeddings, hidden states, pooled outputs, past key values): cosine similarity of
  each vector (the last axis) at real positions, the lowest at least `COSINE_MIN`.

Those are the default `Thresholds`; a variant states its own where its arithmetic cannot meet them by design. int4
weight-only decoders: a random-weight decoder's logits are nearly flat, so 16 levels per block flip many argmaxes
(156M Llama shape: next-token top-1 agreement 41-100 % per input set, logit cosine 0.93-0.97, cache vectors
down to 0.89, `bench/results/int4-decoder.md`) — the agreement is reported, and the direction (cosine) of logits
and hidden states is required instead. A broken quantization (weights zeroed, scales on the wrong axis) scores near 0 on either measure.

The figures of every output go into the `CheckResult`'s data, so the report states what ran and what it measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter_core.plan import CheckResult, PlanCheck, Runner
from exporter_validate.compare import real_positions, reference_outputs

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig
    from exporter_core.plan import ExportPlan, PlanPart

__all__ = ["COSINE_MIN", "SENTENCES", "TOP1_MIN", "Thresholds", "output_figures", "task_checks"]

#: Lowest cosine similarity an embedding or hidden-state vector of the artifact may have with the reference's.
COSINE_MIN = 0.99
#: Lowest share of positions (rows) whose top-1 class (token) the artifact and the reference agree on.
TOP1_MIN = 0.99


@dataclass(frozen=True)
class Thresholds:
    """What a task check requires of an artifact's outputs."""

    #: Lowest cosine similarity of any embedding, hidden-state or cache vector.
    min_cosine: float = COSINE_MIN
    #: Lowest top-1 agreement of logits; None: reported, not required.
    top1_agreement: float | None = TOP1_MIN
    #: Lowest cosine of any logit vector; None: reported, not required.
    min_logit_cosine: float | None = None
    #: Why these differ from the defaults (empty for the defaults).
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        facts: dict[str, Any] = {
            "min_cosine": self.min_cosine,
            "top1_agreement": self.top1_agreement,
            "min_logit_cosine": self.min_logit_cosine,
        }
        return {**facts, "reason": self.reason} if self.reason else facts


DEFAULT_THRESHOLDS = Thresholds()

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


def _vectors(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The output's vectors (its last axis) at the real positions of its leading axes, as float64 rows, and which
    entries of each row are real.

    `keep` is `compare.real_positions` over the whole output. When the last axis is itself a sequence axis
    (question answering's start and end logits: one score per token) a row is kept when any of its positions is
    real, and its padded entries are marked unreal (a left-padded row starts with padding); otherwise a vector is
    kept when its leading position is real (a key at a padded position of a decoder's cache is computed from
    padding on both sides and means nothing) and all its entries are real.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return values.reshape(1, -1), np.ones((1, values.shape[0]), dtype=bool)
    width = values.shape[-1]
    if np.array_equal(keep, np.broadcast_to(keep[..., :1], keep.shape)):
        rows = values[keep[..., 0]].reshape(-1, width)
        return rows, np.ones(rows.shape, dtype=bool)
    kept = keep.any(axis=-1)
    return values[kept].reshape(-1, width), keep[kept].reshape(-1, width)


def _cosines(reference: np.ndarray, exported: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair; a row pair that is zero on both sides counts as 1."""
    dot = np.sum(reference * exported, axis=-1)
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(exported, axis=-1)
    both_zero = (np.linalg.norm(reference, axis=-1) == 0) & (np.linalg.norm(exported, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosine)


def output_figures(
    name: str,
    axes: Mapping[int, str],
    reference: np.ndarray,
    exported: np.ndarray,
    inputs: Mapping[str, np.ndarray],
    config: OnnxConfig | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any] | None:
    """The task-level figures of one output (None for outputs that are not floating point: ids, lengths)."""
    if not np.issubdtype(np.asarray(reference).dtype, np.floating) or np.asarray(reference).size == 0:
        return None
    if np.shape(reference) != np.shape(exported):
        return {"kind": "shape", "passed": False, "detail": f"shape {np.shape(exported)} != {np.shape(reference)}"}
    keep, _ = real_positions(axes, np.shape(reference), inputs, config)
    ref, real = _vectors(reference, keep)
    out, _ = _vectors(exported, keep)
    if not np.all(np.isfinite(out[real])):
        return {"kind": "finite", "passed": False, "detail": "the artifact produced NaN or Inf"}
    # Padded entries of a row (a sequence-wide output) count on neither side.
    ref, out = np.where(real, ref, 0.0), np.where(real, out, 0.0)
    cosine = _cosines(ref, out)
    figures: dict[str, Any] = {
        "vectors": int(cosine.size),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }
    if name.endswith("logits") and ref.shape[-1] > 1:
        best = [np.argmax(np.where(real, side, -np.inf), axis=-1) for side in (ref, out)]
        agree = float((best[0] == best[1]).mean())
        passed = thresholds.top1_agreement is None or agree >= thresholds.top1_agreement
        if thresholds.min_logit_cosine is not None:
            passed = passed and float(cosine.min()) >= thresholds.min_logit_cosine
        figures.update(kind="top1", top1_agreement=agree, passed=bool(passed))
    else:
        figures.update(kind="cosine", passed=bool(cosine.min() >= thresholds.min_cosine))
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


def _run_part(
    part: PlanPart, runner: Runner, samples: Sequence[_Sample], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> CheckResult:
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
            figures = output_figures(
                name, axes, reference[name], np.asarray(exported[name]), sample.inputs, part.config, thresholds
            )
            if figures is not None:
                per_output.setdefault(name, {})[sample.label] = figures
    failing = [
        f"{name} [{label}]: {_describe(figures, thresholds)}"
        for name, by_sample in per_output.items()
        for label, figures in by_sample.items()
        if not figures["passed"]
    ]
    summary = "; ".join(f"{name}: {_summarize(by_sample)}" for name, by_sample in per_output.items())
    passed = not failing and bool(per_output)
    detail = summary if passed else ("; ".join(failing) if failing else "no floating output to check")
    data = {
        "part": part.name,
        "thresholds": thresholds.to_dict(),
        "samples": [s.label for s in samples],
        "outputs": per_output,
    }
    return CheckResult(name=f"task check {part.name}", passed=passed, detail=detail, data=data)


def _describe(figures: Mapping[str, Any], thresholds: Thresholds) -> str:
    if "detail" in figures:
        return str(figures["detail"])
    if figures["kind"] == "top1":
        needed = [f"top-1 agreement {figures['top1_agreement']:.2%}"]
        if thresholds.top1_agreement is not None:
            needed[0] += f" (needs {thresholds.top1_agreement:.0%})"
        cosine = f"logit cosine min {figures['min_cosine']:.4f}"
        if thresholds.min_logit_cosine is not None:
            cosine += f" (needs {thresholds.min_logit_cosine})"
        return ", ".join([*needed, cosine])
    return f"cosine {figures['min_cosine']:.4f} < {thresholds.min_cosine}"


def _summarize(by_sample: Mapping[str, Mapping[str, Any]]) -> str:
    figures = list(by_sample.values())
    lowest = min(f["min_cosine"] for f in figures)
    if any(f["kind"] == "top1" for f in figures):
        top1 = min(f["top1_agreement"] for f in figures if f["kind"] == "top1")
        return f"top-1 agreement {top1:.2%}, logit cosine >= {lowest:.5f}"
    return f"cosine >= {lowest:.5f}"


def task_checks(
    plan: ExportPlan, preprocessor: Any = None, label: str = "", thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[PlanCheck]:
    """One check per plan part: the artifact's outputs against the reference module's, at the task level."""
    checks = []
    for part in plan.parts:
        name = f"task check {part.name}" + (f" ({label})" if label else "")

        def run(runners: Mapping[str, Runner], part: PlanPart = part, name: str = name) -> CheckResult:
            result = _run_part(part, runners[part.name], _samples(part, preprocessor), thresholds)
            return CheckResult(name=name, passed=result.passed, detail=result.detail, data=result.data)

        checks.append(PlanCheck(name=name, run=run))
    return checks
