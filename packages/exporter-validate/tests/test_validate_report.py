"""Reports: verdicts, every failure, old-style log lines, JSON that reads back, and the export-level aggregate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core.architectures.encoders import BertOnnxConfig
from exporter_core.plan import CheckResult
from exporter_core.testing import tiny_model_config
from exporter_validate import ExportReport, OutputCheck, ValidationReport, compare_outputs

ATOL = 1e-5


def _strict_json(text: str) -> Any:
    """Parse JSON refusing NaN and Infinity, which are not JSON (jq and JavaScript reject them)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def qa_config() -> BertOnnxConfig:
    """A question-answering config (outputs start_logits, end_logits)."""
    return BertOnnxConfig(tiny_model_config("bert"), task="question-answering")


def _report(
    qa_config: BertOnnxConfig, start_delta: float, end_delta: float, artifact: str | None = None, drop_end: bool = False
) -> ValidationReport:
    inputs = {"attention_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]])}
    rng = np.random.default_rng(0)
    reference = {"start_logits": rng.standard_normal((2, 4)), "end_logits": rng.standard_normal((2, 4))}
    exported = {
        "start_logits": reference["start_logits"] + start_delta,
        "end_logits": reference["end_logits"] + end_delta,
    }
    if drop_end:
        del exported["end_logits"]
    return ValidationReport(
        format="ONNX",
        atol=ATOL,
        reference_inputs={"input_ids": [2, 4], "attention_mask": [2, 4]},
        outputs=compare_outputs(qa_config, inputs, reference, exported, ATOL),
        reference_output_names=list(reference),
        exported_output_names=list(exported),
        artifact=artifact,
        model="tiny-bert",
        feature="question-answering",
    )


def test_output_check_verdicts() -> None:
    good = OutputCheck("logits", [2, 3], [2, 3], 1e-6, ATOL)
    assert good.shape_ok and good.values_ok and good.passed
    at_atol = OutputCheck("logits", [2, 3], [2, 3], ATOL, ATOL)
    assert at_atol.passed
    beyond = OutputCheck("logits", [2, 3], [2, 3], 1.0001e-5, ATOL)
    assert beyond.shape_ok and not beyond.values_ok and not beyond.passed
    reshaped = OutputCheck("logits", [2, 3], [3, 2], None, ATOL)
    assert not reshaped.shape_ok and not reshaped.passed
    missing = OutputCheck("logits", [2, 3], None, None, ATOL, missing=True)
    assert not missing.shape_ok and not missing.passed


def test_json_round_trip_of_a_passing_report(qa_config: BertOnnxConfig, tmp_path: Path) -> None:
    report = _report(qa_config, 2e-6, 0.0)
    assert report.passed
    path = report.write_json(tmp_path / "validation.json")
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    assert data["passed"] is True
    assert data["atol"] == ATOL and data["rtol"] == 0.0
    assert data["failures"] == []
    assert data["format"] == "ONNX" and data["model"] == "tiny-bert" and data["feature"] == "question-answering"
    assert "no relative term" in data["tolerance"]
    assert [o["name"] for o in data["outputs"]] == ["start_logits", "end_logits"]
    start = data["outputs"][0]
    assert start["passed"] is True and start["shape_ok"] is True and start["values_ok"] is True
    assert start["reference_shape"] == [2, 4] and start["exported_shape"] == [2, 4]
    assert start["max_abs_diff"] == pytest.approx(2e-6)
    assert start["compared"] == "real positions (attention_mask == 1)"
    assert data["worst_max_abs_diff"] == pytest.approx(2e-6)
    assert data == report.to_dict()


def test_json_round_trip_of_a_failing_report_lists_every_failure(qa_config: BertOnnxConfig, tmp_path: Path) -> None:
    report = _report(qa_config, 1e-3, 0.0, drop_end=True)
    data = json.loads(report.write_json(tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["passed"] is False
    assert data["failures"] == report.failures
    assert len(data["failures"]) == 3
    assert data["outputs"][1]["missing"] is True and data["outputs"][1]["exported_shape"] is None
    assert data["exported_output_names"] == ["start_logits"]


def test_json_stays_valid_when_a_difference_is_infinite(qa_config: BertOnnxConfig, tmp_path: Path) -> None:
    report = _report(qa_config, 0.0, 0.0)
    report.outputs[1] = OutputCheck("end_logits", [2, 4], [2, 4], math.inf, ATOL, max_abs_diff_excluded=math.inf)
    assert not report.passed
    data = _strict_json(report.write_json(tmp_path / "inf.json").read_text(encoding="utf-8"))
    assert data["passed"] is False
    # Not a number JSON can hold: null, with the reason beside it.
    assert data["outputs"][1]["max_abs_diff"] is None
    assert data["outputs"][1]["max_abs_diff_reason"] == "a difference was infinite"
    assert data["worst_max_abs_diff"] is None and data["worst_max_abs_diff_reason"]
    assert data["failures"] == ['output "end_logits": max abs difference inf exceeds atol 1e-05']
    export = ExportReport(format="ONNX", backend="onnx", feature="default", parts=[report])
    assert (
        _strict_json(export.write_json(tmp_path / "export.json").read_text(encoding="utf-8"))["worst_max_abs_diff"]
        is None
    )


def test_failing_checks_fail_the_export_report(qa_config: BertOnnxConfig) -> None:
    """Checks over the written artifacts live on the export report only: its one channel for them."""
    part = _report(qa_config, 0.0, 0.0)
    assert not hasattr(part, "checks")
    export = ExportReport(format="ONNX", backend="onnx", feature="question-answering", parts=[part])
    export.checks.append(CheckResult("fresh process", True, "loaded and ran"))
    assert export.passed
    export.checks.append(CheckResult("shape contract", False, "batch 4 refused"))
    assert not export.passed and part.passed
    assert export.failures == ["shape contract: batch 4 refused"]
    assert export.log_lines() == ["\t-[✓] fresh process: loaded and ran", "\t-[x] shape contract: batch 4 refused"]


def test_an_advisory_check_is_reported_but_does_not_decide(qa_config: BertOnnxConfig) -> None:
    export = ExportReport(format="ONNX", backend="onnx", feature="causal-lm", parts=[_report(qa_config, 0.0, 0.0)])
    export.checks.append(CheckResult("generation parity", False, "token 3 differs", advisory="int4 weights"))
    assert export.passed and export.failures == []
    assert export.log_lines() == ["\t-[!] generation parity: token 3 differs (advisory: int4 weights)"]
    assert export.checks[0].to_dict()["advisory"] == "int4 weights"
    export.checks.append(CheckResult("task check model", False, "cosine 0.5 < 0.9"))
    assert not export.passed and export.failures == ["task check model: cosine 0.5 < 0.9"]


def test_json_records_the_traced_shapes_beside_the_validated_ones(qa_config: BertOnnxConfig, tmp_path: Path) -> None:
    report = _report(qa_config, 0.0, 0.0)
    report.export_inputs = {"input_ids": [2, 8], "attention_mask": [2, 8]}
    data = json.loads(report.write_json(tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["export_inputs"] == {"input_ids": [2, 8], "attention_mask": [2, 8]}
    assert data["reference_inputs"] == {"input_ids": [2, 4], "attention_mask": [2, 4]}


def test_export_report_aggregates_parts_and_checks(qa_config: BertOnnxConfig, tmp_path: Path) -> None:
    encoder = _report(qa_config, 3e-6, 0.0, artifact="encoder_model.onnx")
    decoder = _report(qa_config, 0.0, 5e-2, artifact="decoder_model.onnx")
    export = ExportReport(
        format="ONNX",
        backend="onnx",
        feature="seq2seq-lm",
        parts=[encoder, decoder],
        model="tiny-bert",
        output="out/",
        checks=[
            CheckResult("generation parity", False, "tokens differ at step 3", {"exported_tokens": [[0, 5, 6]]}),
            CheckResult("opset", True, "18"),
        ],
        metadata={"opset": 18, "path": tmp_path},
    )
    assert encoder.passed and not decoder.passed and not export.passed
    assert export.failures == [
        decoder.failures[0].join(["decoder_model.onnx: ", ""]),
        "generation parity: tokens differ at step 3",
    ]
    assert export.failures[0].startswith('decoder_model.onnx: output "end_logits": max abs difference 5.000e-02')
    assert export.worst_difference == pytest.approx(5e-2)
    assert export.log_lines() == ["\t-[x] generation parity: tokens differ at step 3", "\t-[✓] opset: 18"]
    data = json.loads(export.write_json(tmp_path / "export.json").read_text(encoding="utf-8"))
    assert data["passed"] is False and data["backend"] == "onnx" and data["feature"] == "seq2seq-lm"
    assert [p["artifact"] for p in data["parts"]] == ["encoder_model.onnx", "decoder_model.onnx"]
    assert [p["passed"] for p in data["parts"]] == [True, False]
    assert data["failures"] == export.failures
    assert data["worst_max_abs_diff"] == pytest.approx(5e-2)
    assert data["metadata"] == {"opset": 18, "path": str(tmp_path)}
    assert data["checks"] == [
        {
            "name": "generation parity",
            "passed": False,
            "detail": "tokens differ at step 3",
            "exported_tokens": [[0, 5, 6]],
        },
        {"name": "opset", "passed": True, "detail": "18"},
    ]


def test_export_report_of_one_part_has_no_prefix(qa_config: BertOnnxConfig) -> None:
    only = _report(qa_config, 1.0, 0.0, artifact="model.onnx")
    export = ExportReport(format="ONNX", backend="onnx", feature="question-answering", parts=[only])
    assert export.failures == only.failures
    assert not export.failures[0].startswith("model.onnx")


def test_export_report_passes_when_everything_does(qa_config: BertOnnxConfig) -> None:
    export = ExportReport(
        format="ONNX",
        backend="onnx",
        feature="question-answering",
        parts=[_report(qa_config, 0.0, 0.0)],
        checks=[CheckResult("opset", True, "18")],
    )
    assert export.passed and export.failures == [] and export.worst_difference == 0.0
    assert ExportReport(format="ONNX", backend="onnx", feature="default", parts=[]).worst_difference == 0.0
