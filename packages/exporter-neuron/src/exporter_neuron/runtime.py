"""Loading and calling a compiled Neuron module under its shape contract, here or in a fresh process.

`load(path)` reads the target from the file, checks and imports the SDK that target needs (its import registers
the Neuron operators ``torch.jit.load`` needs), then loads the module through exporter-torchscript's
`load_traced`, switching dynamic batching on again for torch-neuronx modules compiled with it. The result is
exporter-torchscript's `TracedModel`: inputs by position or name, smaller ones padded up to the compiled shape,
larger ones refused with an error naming that shape.

`CompiledModuleRunner` is the validation runner: exporter-torchscript's fresh-process runner with `load` as its
loader (``python -m exporter_torchscript.worker --loader exporter_neuron.runtime:load``, a process that compiled
nothing and never imports Transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter_neuron.metadata import NeuronMetadata, read_metadata
from exporter_neuron.sdk import import_sdk, require_sdk
from exporter_torchscript.metadata import TraceMetadata
from exporter_torchscript.runtime import SavedModuleRunner, TracedModel, load_traced

__all__ = ["NEURON_LOADER", "CompiledModuleRunner", "load", "load_with_metadata"]

#: `load`, as the fresh-process worker names its loader.
NEURON_LOADER = "exporter_neuron.runtime:load"


def load_with_metadata(path: str | Path) -> tuple[TracedModel, NeuronMetadata]:
    """`load` plus the module's Neuron metadata."""
    metadata = read_metadata(path)
    sdk_module = import_sdk(require_sdk(metadata.target))
    switch_dynamic_batch = metadata.dynamic_batch and metadata.target != "inf1"

    def prepare(module: Any) -> Any:
        return sdk_module.dynamic_batch(module) if switch_dynamic_batch else module

    facts = {"sdk": metadata.sdk.get("module"), "sdk_distribution": metadata.sdk.get("distribution")}
    return load_traced(path, None, prepare=prepare, facts=facts), metadata


def load(path: str | Path) -> TracedModel:
    """Load a module written by `exporter neuron`, with its SDK imported and its shape contract applied."""
    return load_with_metadata(path)[0]


class CompiledModuleRunner(SavedModuleRunner):
    """Validation runner: named NumPy inputs in, named NumPy outputs out, the file loaded by `load` in a fresh process."""

    def __init__(self, path: str | Path, contract: TraceMetadata | None = None) -> None:
        super().__init__(path, loader=NEURON_LOADER, label="Neuron", contract=contract)
