"""TorchScript from Python: ``exporter.torchscript.export(...)``, plus the guide's trace, save, load and call.

from exporter.torchscript import export, load
report = export("path/to/checkpoint", "out/", sequence_length=128)   # out/model.pt, validated
model = load("out/model.pt")                                         # pads shorter inputs, refuses larger

from exporter.torchscript import trace                               # the guide's torch.jit.trace line
traced_model = trace(model, [tokens_tensor, segments_tensors])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

try:
    import exporter_torchscript as _exporter_torchscript  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in the facade-only nox session
    from exporter.install import install_command

    raise ImportError(
        f"exporter.torchscript needs the TorchScript backend: {install_command(['exporter-torchscript'])}"
    ) from _exc

from exporter_torchscript import TracedModel, TraceMetadata, load, read_metadata, trace

if TYPE_CHECKING:  # pragma: no cover
    from exporter_validate import ExportReport

__all__ = ["TraceMetadata", "TracedModel", "export", "load", "read_metadata", "trace"]


def export(
    model: str | Path,
    output: str | Path,
    feature: str = "default",
    *,
    batch_size: int | None = None,
    sequence_length: int | None = None,
    atol: float | None = None,
    preprocessor: str = "auto",
    cache_dir: str | Path | None = None,
    keep_invalid: bool = False,
) -> ExportReport:
    """Trace the checkpoint `model` at (batch_size, sequence_length) into `output` and validate the saved file.

    Sizes default to the architecture's (2 × 8 for most text models); they are the largest the saved module
    accepts. Returns the `ExportReport`; raises `ValidationError` (with ``.report``) when the file does not
    match PyTorch, and a `UserError` subclass for a mistake in the request.
    """
    from exporter.pipeline import run_export

    return run_export(
        "torchscript",
        model,
        output,
        feature=feature,
        atol=atol,
        preprocessor=preprocessor,
        cache_dir=cache_dir,
        keep_invalid=keep_invalid,
        options={"batch_size": batch_size, "sequence_length": sequence_length},
    )
