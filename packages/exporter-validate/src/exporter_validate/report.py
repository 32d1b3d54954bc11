"""Validation reports: one entry per output, the old ``-[✓]``/``-[x]`` log lines, and JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exporter_core.plan import CheckResult

__all__ = ["ExportReport", "OutputCheck", "ValidationReport"]


def _json_text(data: Any) -> str:
    """Indented JSON; a non-finite float is written as null (the bare Infinity and NaN tokens are not JSON and strict
    readers such as jq and JavaScript reject them); the report says why beside each such value."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


@dataclass
class OutputCheck:
    """How one output of the artifact compares with the PyTorch model's."""

    name: str
    reference_shape: list[int] | None
    exported_shape: list[int] | None
    max_abs_diff: float | None
    atol: float
    #: Which positions `max_abs_diff` covers ("all", or "real tokens (attention_mask == 1)").
    compared: str = "all"
    #: Worst difference over positions left out of the comparison (padding); informational.
    max_abs_diff_excluded: float | None = None
    missing: bool = False
    #: Index of the compared position with the largest difference.
    worst_position: list[int] | None = None
    #: NaN/Inf at compared positions: {"side": "reference" | "exported" | "both", <side>: {count, first_position,
    #: first_value, nan, inf}}; None when every compared value is finite.
    nonfinite: dict[str, Any] | None = None
    #: Relative term of the tolerance, a fraction of `reference_magnitude` (0: strictly absolute).
    rtol: float = 0.0
    #: Largest finite |reference| value at compared positions (None when no value was compared).
    reference_magnitude: float | None = None

    @property
    def tolerance(self) -> float:
        """The effective tolerance of this output: ``atol + rtol * max|reference|``."""
        return self.atol + self.rtol * (self.reference_magnitude or 0.0)

    def tolerance_text(self) -> str:
        """How the effective tolerance is made ("1e-05" when absolute, else the sum spelled out)."""
        if not self.rtol:
            return f"atol {self.atol:g}"
        return (
            f"{self.tolerance:.3e} = atol {self.atol:g} + rtol {self.rtol:g} x max|reference| "
            f"{self.reference_magnitude or 0.0:.3e}"
        )

    @property
    def nonfinite_note(self) -> str | None:
        """One sentence on NaN/Inf values, naming the side that produced them; None when there are none."""
        if not self.nonfinite:
            return None
        side = self.nonfinite["side"]
        parts = []
        for name in ("exported", "reference"):
            facts = self.nonfinite.get(name)
            if facts:
                who = "the exported model" if name == "exported" else "the PyTorch model"
                where = tuple(facts["first_position"])
                parts.append(
                    f"{who} produced {facts['count']} non-finite value(s) (first {facts['first_value']} at {where})"
                )
        if side != "both":
            parts.append(f"the {'PyTorch' if side == 'exported' else 'exported'} model's values there are finite")
        return "; ".join(parts)

    def diff_reason(self) -> str | None:
        """Why `max_abs_diff` is not a finite number (written beside the null in JSON)."""
        if self.max_abs_diff is None:
            if self.missing:
                return "the output is missing from the exported model"
            return "the shapes differ, so no values were compared"
        if not math.isfinite(self.max_abs_diff):
            return self.nonfinite_note or "a difference was infinite"
        return None

    @property
    def shape_ok(self) -> bool:
        """Shapes equal (and the output exists on both sides)."""
        return not self.missing and self.reference_shape == self.exported_shape

    @property
    def values_ok(self) -> bool:
        """Every compared value within the effective tolerance (`tolerance`)."""
        return self.shape_ok and self.max_abs_diff is not None and self.max_abs_diff <= self.tolerance

    @property
    def passed(self) -> bool:
        """Shape and values both good."""
        return self.shape_ok and self.values_ok


@dataclass
class ValidationReport:
    """The outcome of comparing an exported artifact with the PyTorch model on reference inputs."""

    format: str
    atol: float
    reference_inputs: dict[str, list[int]]
    outputs: list[OutputCheck]
    reference_output_names: list[str]
    exported_output_names: list[str]
    export_inputs: dict[str, list[int]] = field(default_factory=dict)
    rtol: float = 0.0
    model: str | None = None
    feature: str | None = None
    artifact: str | None = None
    #: Which part of the export this is ("model", "encoder", "padded smaller inputs", ...).
    part: str | None = None

    @property
    def names_match(self) -> bool:
        """The artifact returns exactly the reference output names."""
        return set(self.reference_output_names) == set(self.exported_output_names)

    @property
    def passed(self) -> bool:
        """Names, every output and every extra check good."""
        return self.names_match and all(check.passed for check in self.outputs)

    @property
    def failures(self) -> list[str]:
        """One sentence per failing item (every one, not only the first)."""
        messages = []
        if not self.names_match:
            messages.append(
                f"output names {set(self.exported_output_names)} do not match reference model {set(self.reference_output_names)}"
            )
        for check in self.outputs:
            if check.missing:
                messages.append(f'output "{check.name}" is missing from the exported model')
            elif not check.shape_ok:
                messages.append(
                    f'output "{check.name}": shape {tuple(check.exported_shape or ())} doesn\'t match {tuple(check.reference_shape or ())}'
                )
            elif not check.values_ok:
                where = f" at {tuple(check.worst_position)}" if check.worst_position is not None else ""
                note = f" ({check.nonfinite_note})" if check.nonfinite_note else ""
                bound = f"atol {check.atol:g}" if not check.rtol else f"tolerance {check.tolerance_text()}"
                messages.append(
                    f'output "{check.name}": max abs difference {check.max_abs_diff:.3e}{where} exceeds {bound}{note}'
                )
        return messages

    @property
    def worst_difference(self) -> float:
        """Largest compared difference over all outputs (0 when none was compared)."""
        values = [c.max_abs_diff for c in self.outputs if c.max_abs_diff is not None]
        return max(values) if values else 0.0

    def log_lines(self) -> list[str]:
        """The old exporter's validation log, tab-indented, with ✓ or x on each line."""
        lines = [f"Validating {self.format} model..."]
        ref = set(self.reference_output_names)
        if self.names_match:
            lines.append(f"\t-[✓] {self.format} model output names match reference model ({ref})")
        else:
            lines.append(
                f"\t-[x] {self.format} model output names {set(self.exported_output_names)} do not match reference model {ref}"
            )
        for check in self.outputs:
            lines.append(f'\t- Validating {self.format} Model output "{check.name}":')
            if check.missing:
                lines.append("\t\t-[x] missing from the exported model")
                continue
            ref_shape, out_shape = tuple(check.reference_shape or ()), tuple(check.exported_shape or ())
            if check.shape_ok:
                lines.append(f"\t\t-[✓] {out_shape} matches {ref_shape}")
            else:
                lines.append(f"\t\t-[x] shape {out_shape} doesn't match {ref_shape}")
                continue
            # With an absolute tolerance the verdict line is the old exporter's, word for word; the measurement and
            # the effective tolerance follow on their own line.
            stated = f"atol: {check.atol:g}" + (f", rtol: {check.rtol:g}" if check.rtol else "")
            if check.values_ok:
                lines.append(f"\t\t-[✓] all values close ({stated})")
            else:
                lines.append(f"\t\t-[x] values not close enough ({stated})")
            where = "all positions" if check.compared == "all" else check.compared
            measured = f"\t\t    max abs diff {check.max_abs_diff:.3e} over {where}"
            if check.rtol:
                measured += f"; tolerance {check.tolerance_text()}"
            lines.append(measured)
            if check.nonfinite_note:
                lines.append(f"\t\t    {check.nonfinite_note}")
        return lines

    def tolerance_rule(self) -> str:
        """The rule every output was held to, in words."""
        if not self.rtol:
            return f"|exported - reference| <= {self.atol:g} at every compared position (no relative term)"
        return (
            f"|exported - reference| <= {self.atol:g} + {self.rtol:g} x max|reference| at every compared position, "
            "max|reference| taken per output over its compared positions (each output's tolerance is in outputs)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: every field, plus per-output verdicts and the overall one."""
        outputs = []
        for check in self.outputs:
            data = asdict(check)
            data.update(
                tolerance=check.tolerance, shape_ok=check.shape_ok, values_ok=check.values_ok, passed=check.passed
            )
            reason = check.diff_reason()
            if reason:
                data["max_abs_diff_reason"] = reason
            outputs.append(data)
        return {
            "format": self.format,
            "model": self.model,
            "feature": self.feature,
            "artifact": self.artifact,
            "part": self.part,
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "tolerance": self.tolerance_rule(),
            "export_inputs": self.export_inputs,
            "reference_inputs": self.reference_inputs,
            "reference_output_names": self.reference_output_names,
            "exported_output_names": self.exported_output_names,
            "worst_max_abs_diff": self.worst_difference,
            "worst_max_abs_diff_reason": (
                None if math.isfinite(self.worst_difference) else "an output has non-finite differences (see outputs)"
            ),
            "outputs": outputs,
            "failures": self.failures,
        }

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as indented JSON to `path`."""
        path = Path(path)
        path.write_text(_json_text(self.to_dict()), encoding="utf-8")
        return path


@dataclass
class ExportReport:
    """The whole outcome of one export: a validation report per artifact, extra checks, and facts."""

    format: str
    backend: str
    feature: str
    parts: list[ValidationReport]
    model: str | None = None
    output: str | None = None
    #: Checks over the written artifacts as a whole (generation parity); a failing one fails the export.
    checks: list[CheckResult] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Every file this export wrote into the output folder (the report included): the set a later export with
    #: ``overwrite`` replaces.
    files: list[str] = field(default_factory=list)
    #: Weights the checkpoint lacked, randomly initialised because the caller allowed it (allow_random_head).
    random_weights: list[str] = field(default_factory=list)
    #: Weights holding NaN or Inf, exported because the caller allowed it (allow_nonfinite).
    nonfinite_weights: list[str] = field(default_factory=list)
    #: Every finished stage of the export as `exporter_core.progress.StageTime.to_dict` writes it (name, seconds,
    #: depth, parent, failed, rss_anon_bytes), in the order they ended; stages after the report is written (the
    #: final commit of the files) are not in it.
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: The process's peak memory when the report was written (`exporter_core.progress.peak_memory`).
    peak_memory: dict[str, Any] = field(default_factory=dict)
    #: Wall time from the start of the export to the writing of the report.
    seconds: float | None = None

    @property
    def passed(self) -> bool:
        """Every part and every extra check passed."""
        return all(p.passed for p in self.parts) and all(c.passed for c in self.checks if c.counts)

    @property
    def failures(self) -> list[str]:
        """Every failing item of every part, then failing checks."""
        messages: list[str] = []
        for part in self.parts:
            label = " ".join(x for x in (part.artifact, f"[{part.part}]" if part.part else None) if x)
            prefix = f"{label}: " if label and len(self.parts) > 1 else ""
            messages.extend(prefix + m for m in part.failures)
        messages.extend(f"{c.name}: {c.detail}" for c in self.checks if c.counts and not c.passed)
        return messages

    @property
    def worst_difference(self) -> float:
        """Largest compared difference over every output of every part."""
        return max((p.worst_difference for p in self.parts), default=0.0)

    def timing_line(self) -> str:
        """One line: the export's wall time, its top-level stages' times and the peak resident memory."""
        top = ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in self.stages if s.get("depth") == 0)
        text = f"exported in {self.seconds or 0.0:.1f} s" + (f" ({top})" if top else "")
        peak = self.peak_memory.get("max_rss_bytes")
        if peak:
            text += f"; peak memory {peak / 2**30:.2f} GiB resident"
            anon = self.peak_memory.get("rss_anon_peak_sampled_bytes")
            if anon:
                text += f", {anon / 2**30:.2f} GiB anonymous (largest sample at a stage boundary)"
        return text

    def log_lines(self) -> list[str]:
        """Extra checks in the old log style (each part logs its own lines while validating)."""
        return [
            f"\t-[{'✓' if c.passed else 'x' if c.counts else '!'}] {c.name}: {c.detail}"
            + (f" (advisory: {c.advisory})" if c.advisory else "")
            for c in self.checks
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "format": self.format,
            "backend": self.backend,
            "model": self.model,
            "feature": self.feature,
            "output": self.output,
            "passed": self.passed,
            "worst_max_abs_diff": self.worst_difference,
            "failures": self.failures,
            "files": self.files,
            "random_weights": self.random_weights,
            "random_head": bool(self.random_weights),
            "nonfinite_weights": self.nonfinite_weights,
            "parts": [p.to_dict() for p in self.parts],
            "checks": [c.to_dict() for c in self.checks],
            "metadata": self.metadata,
            "seconds": self.seconds,
            "stages": self.stages,
            "peak_memory": self.peak_memory,
        }

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as indented JSON to `path`."""
        path = Path(path)
        path.write_text(_json_text(self.to_dict()), encoding="utf-8")
        return path
