"""Decoders with past key values: which shapes their ONNX export is validated at.

A graph captured with past key values can be right at the traced past length and wrong at every other one
(constants baked in by the tracer). One validation at one shape cannot see that, so a with-past export is
validated once per input set of its config (`reference_input_sets`): the usual reference shape, an empty past
(the prompt step of generation), a single new token at batch 1 (every later step), and left padding reaching
into the new tokens. Every set uses another batch size and past length than the export dummies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from exporter_core.backend import ExportPart

__all__ = ["has_past_scenarios", "validation_parts"]


def has_past_scenarios(config: Any) -> bool:
    """True for a config with past key values that declares the input sets it must be validated at."""
    return bool(getattr(config, "use_past", False)) and callable(getattr(config, "reference_input_sets", None))


def validation_parts(part: ExportPart, preprocessor: Any = None) -> list[ExportPart]:
    """`part` once per input set of its config: same artifact and runner, inputs of another shape each time."""
    parts = []
    for label, inputs in part.config.reference_input_sets(preprocessor):  # type: ignore[attr-defined]
        parts.append(dataclasses.replace(part, name=f"{part.name} ({label})", reference_inputs=inputs))
    return parts
