"""The ONNX backend on the export cases generated from the installed architectures (exporter-core's test kit).

Default tier: one complete validated pair per family (``onnx:encoders``, ``onnx:decoders``, ...), chosen by the
kit; ``--exporter-matrix`` (``nox -s matrix``): every (architecture, feature) pair. Every case goes through
``exporter.pipeline.run_export`` (export, validation at other shapes with padding, checks) and every ONNX file it
keeps must pass the full ONNX checker, shape inference included.
"""

from __future__ import annotations

import pytest

from exporter_core.export_cases import CaseOutcome, coverage_problems, generate_cases
from exporter_core.pytest_plugin import assert_case

pytestmark = pytest.mark.exporter_backend("onnx")


def test_every_installed_architecture_has_tiny_sizes_and_a_case_per_feature() -> None:
    assert coverage_problems(generate_cases(["onnx"]), ["onnx"]) == []


def test_case_exports_and_validates(export_case: CaseOutcome) -> None:
    import onnx

    assert_case(export_case)
    files = export_case.artifacts(".onnx")
    assert files, f"{export_case.case.id} validated but kept no .onnx file in {export_case.output}"
    for path in files:
        onnx.checker.check_model(str(path), full_check=True)
    report = export_case.report or {}
    assert report.get("parts") and all(part["outputs"] for part in report["parts"]), "every part compares outputs"
    # The default engine exported every part itself: no silent fall back to the other engine.
    metadata = report.get("metadata", {})
    for facts in [metadata, *metadata.get("parts", {}).values()]:
        assert facts.get("fallback_reason") is None, facts
    # Nor was a traced graph found wrong and exported again (correct, but twice the time: see is_traceable).
    assert metadata.get("retried") is None, metadata["retried"]
