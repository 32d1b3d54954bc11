"""The Neuron backend on the export cases generated from the installed architectures (exporter-core's test kit).

Default tier: one complete validated pair per family, chosen by the kit (the family's preferred features tried in
order until one is not refused); ``--exporter-matrix`` (``nox -s matrix``): every (architecture, feature) pair.
Every case goes through ``exporter.pipeline.run_export``. This package's session compiles with the Neuron SDK
stand-in (TorchScript traced on CPU), so these cases prove the pipeline, the shape contract and the refusals, not
Neuron's compiler; the stand-in's warning is recorded with each outcome.
"""

from __future__ import annotations

import pytest

from exporter_core.export_cases import CaseOutcome, coverage_problems, generate_cases
from exporter_core.pytest_plugin import assert_case

pytestmark = pytest.mark.exporter_backend("neuron")


def test_every_installed_architecture_has_tiny_sizes_and_a_case_per_feature() -> None:
    assert coverage_problems(generate_cases(["neuron"]), ["neuron"]) == []


def test_case_exports_and_validates(export_case: CaseOutcome) -> None:
    assert_case(export_case)
    assert export_case.artifacts(".pt"), f"{export_case.case.id} validated but kept no .pt file"
    report = export_case.report or {}
    assert report.get("parts") and all(part["outputs"] for part in report["parts"]), "every part compares outputs"
