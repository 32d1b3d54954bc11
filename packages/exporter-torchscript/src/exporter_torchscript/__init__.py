"""exporter-torchscript: the TorchScript backend (``torch.jit.trace`` with untied weights and a shape contract).

Cheap to import: torch loads only inside the functions that need it.
"""

from __future__ import annotations

from exporter_torchscript.backend import TorchScriptBackend
from exporter_torchscript.metadata import TraceMetadata
from exporter_torchscript.runtime import SavedModuleRunner, TracedModel, load, read_metadata
from exporter_torchscript.tracing import trace, trace_for_export

__all__ = [
    "SavedModuleRunner",
    "TorchScriptBackend",
    "TraceMetadata",
    "TracedModel",
    "load",
    "read_metadata",
    "trace",
    "trace_for_export",
]
