"""exporter-torchscript: the TorchScript backend (``torch.jit.trace`` with untied weights and a shape contract).

Also the static-trace layer the Neuron backend builds on: `exporter_torchscript.static` (tracing at one shape with
an injected tracer, static-shape validation scenarios), `exporter_torchscript.runtime` (loading under the shape
contract, the fresh-process runner with an injected loader). Cheap to import: torch loads only inside the
functions that need it (`exporter_torchscript.static` imports it at module scope and is not imported here).
"""

from __future__ import annotations

from exporter_torchscript.backend import TorchScriptBackend
from exporter_torchscript.metadata import TraceMetadata
from exporter_torchscript.runtime import SavedModuleRunner, TracedModel, load, load_traced, read_metadata
from exporter_torchscript.tracing import trace, trace_for_export

__all__ = [
    "SavedModuleRunner",
    "TorchScriptBackend",
    "TraceMetadata",
    "TracedModel",
    "load",
    "load_traced",
    "read_metadata",
    "trace",
    "trace_for_export",
]
