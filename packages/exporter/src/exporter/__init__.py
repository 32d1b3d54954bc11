"""exporter: export 🤗 Transformers models to ONNX, TorchScript and AWS Neuron, validated against PyTorch.

The facade over exporter's packages. Backends are separate distributions found through entry points::

    import exporter
    report = exporter.export("path/to/checkpoint", "out/", format="onnx", feature="sequence-classification")
    print(report.passed, report.worst_difference)

`exporter.onnx` keeps the old ``transformers.onnx`` API; `exporter.configs` holds every ready-made config.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from exporter_validate import ExportReport

__all__ = ["export", "list_backends"]

__version__ = "0.1.0"


def export(
    model: str | Path,
    output: str | Path,
    format: str = "onnx",
    feature: str = "default",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    preprocessor: str = "auto",
    cache_dir: str | Path | None = None,
    keep_invalid: bool = False,
    overwrite: bool = False,
    allow_random_head: bool = False,
    allow_nonfinite: bool = False,
    report: str | Path | None = None,
    **options: Any,
) -> ExportReport:
    """Export the checkpoint `model` (folder or cached hub id) with backend `format` into `output`.

    Backend options go as keywords (``opset=14`` for ONNX); an unknown keyword is refused before the model is
    loaded, with the nearest valid name. Each output passes when it is within ``atol + rtol * max|reference|`` of
    PyTorch's (neither given: the architecture's atol and the default rtol; `atol` alone: strictly absolute).
    `output` must be an empty or new folder unless `overwrite` (which
    replaces the files of a previous export of the same artifact and leaves other files alone).
    `allow_random_head` exports a feature whose head weights the checkpoint lacks; `allow_nonfinite` exports
    NaN/Inf weights; `report` is a second place for the JSON report. Returns the `ExportReport`; raises
    `exporter_core.errors.ValidationError` (with ``.report``, also written as
    ``<artifact>.validation-failed.json``) when the artifact does not match PyTorch, a `UserError` subclass for
    a mistake in the request or an unusable checkpoint, and an `ExporterError` for the environment.
    """
    from exporter.install import not_installed_error
    from exporter.pipeline import run_export

    installed = list_backends()
    if format not in installed:
        raise not_installed_error(format, installed)
    return run_export(
        format,
        model,
        output,
        feature=feature,
        atol=atol,
        rtol=rtol,
        preprocessor=preprocessor,
        cache_dir=cache_dir,
        keep_invalid=keep_invalid,
        overwrite=overwrite,
        allow_random_head=allow_random_head,
        allow_nonfinite=allow_nonfinite,
        report=report,
        options=options,
    )


def list_backends() -> list[str]:
    """Names of the installed backends (read from metadata; nothing imported)."""
    from exporter_core.plugins import list_backends as _list

    return [info.name for info in _list()]
