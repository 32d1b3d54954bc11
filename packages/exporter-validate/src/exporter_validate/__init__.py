"""exporter-validate: proof that an artifact computes what the PyTorch model computes.

Reference inputs at another shape than the export (batch 3, sequence 9, padded rows), every output
compared (names, shapes, values within atol + rtol x the output's largest reference value, each output's
tolerance stated; an atol alone is strictly absolute), the old
``-[✓]``/``-[x]`` log lines and a JSON report. Backends supply a runner; this package is format-neutral.
"""

from __future__ import annotations

from exporter_validate.compare import compare_outputs, max_abs_difference, reference_outputs, validate_outputs
from exporter_validate.report import ExportReport, OutputCheck, ValidationReport

__all__ = [
    "ExportReport",
    "OutputCheck",
    "ValidationReport",
    "compare_outputs",
    "max_abs_difference",
    "reference_outputs",
    "validate_outputs",
]
