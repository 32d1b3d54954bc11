"""The old ``transformers.onnx`` API on Transformers 5: change the import line, keep the script.

``from exporter.onnx import OnnxConfig, export, validate_model_outputs`` and
``from exporter.onnx.features import FeaturesManager`` replace the ``transformers.onnx`` imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

try:
    import exporter_onnx as _exporter_onnx  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in the facade-only nox session
    from exporter.install import install_command

    raise ImportError(f"exporter.onnx needs the ONNX backend: {install_command(['exporter-onnx'])}") from _exc

from exporter_core.config import (
    EXTERNAL_DATA_FORMAT_SIZE_LIMIT,
    OnnxConfig,
    OnnxConfigWithPast,
    OnnxSeq2SeqConfigWithPast,
    PatchingSpec,
)
from exporter_core.errors import ValidationError
from exporter_core.features import FeaturesManager
from exporter_onnx.convert import export

__all__ = [
    "EXTERNAL_DATA_FORMAT_SIZE_LIMIT",
    "FeaturesManager",
    "OnnxConfig",
    "OnnxConfigWithPast",
    "OnnxSeq2SeqConfigWithPast",
    "PatchingSpec",
    "export",
    "validate_model_outputs",
]


def validate_model_outputs(
    config: OnnxConfig,
    preprocessor: Any,
    reference_model: Any,
    onnx_model: str | Path,
    onnx_named_outputs: Iterable[str],
    atol: float,
    tokenizer: Any = None,
    rtol: float | None = None,
) -> Any:
    """The old validation call: compare the ONNX file with the model; raise `ValueError` on any mismatch.

    Unlike the old one it checks every output before raising, uses inputs of another shape than the
    export with padding, and states the whole tolerance: `atol` alone, as the old call, is absolute (no relative
    term); `rtol` adds ``rtol * max|reference|`` per output. Returns the report.
    """
    from exporter_onnx.runtime import OnnxRuntimeRunner
    from exporter_validate import validate_outputs

    runner = OnnxRuntimeRunner(onnx_model)
    report = validate_outputs(
        config, reference_model, runner, preprocessor=preprocessor or tokenizer, atol=atol, rtol=rtol
    )
    named = set(onnx_named_outputs)
    unknown = named - set(report.exported_output_names)
    if unknown:
        raise ValidationError(f"outputs {sorted(unknown)} are not in {onnx_model}", report)
    if not report.passed:
        raise ValidationError("; ".join(report.failures), report)
    return report
