"""The JSON report an export writes through the facade's pipeline: traced shapes and validated shapes side by side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_the_report_records_traced_shapes_unlike_the_validated_ones(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from exporter.pipeline import run_export

    folder = tiny_checkpoint("bert", "sequence-classification", with_tokenizer=True)
    report = run_export(
        "onnx", folder, tmp_path / "out", feature="sequence-classification", options={"opset": 14}, log=lambda _: None
    )
    assert report.passed, report.failures
    (part,) = report.parts
    assert part.export_inputs == {name: [2, 8] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert part.reference_inputs == {name: [3, 9] for name in part.export_inputs}
    written = json.loads((tmp_path / "out" / "model.onnx.validation.json").read_text(encoding="utf-8"))
    (recorded,) = written["parts"]
    assert recorded["export_inputs"] == part.export_inputs
    assert recorded["reference_inputs"] == part.reference_inputs
    assert recorded["export_inputs"] != recorded["reference_inputs"], "validated at other shapes than traced"
    assert written["checks"] == [] and written["passed"] is True
