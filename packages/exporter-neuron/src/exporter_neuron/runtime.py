"""Loading and calling a compiled Neuron module under its shape contract, here or in a fresh process.

`load(path)` reads the target from the file, checks and imports the SDK that target needs (its import registers
the Neuron operators ``torch.jit.load`` needs), loads the module, switches dynamic batching on again for
torch-neuronx modules compiled with it, and returns exporter-torchscript's `TracedModel`: inputs by position or
name, smaller ones padded up to the compiled shape, larger ones refused with an error naming that shape.

`CompiledModuleRunner` is the validation runner: each call loads the file from disk in a separate Python process
(``python -m exporter_neuron.worker``, started once) that compiled nothing and never imports Transformers.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from exporter_core.errors import BackendUnavailableError, ExportError, InvalidArgumentError, ModelNotFoundError
from exporter_core.padding import InputShapeError
from exporter_neuron.metadata import NeuronMetadata, read_metadata
from exporter_neuron.sdk import import_sdk, require_sdk
from exporter_torchscript.metadata import EXTRA_FILE as CONTRACT_FILE
from exporter_torchscript.metadata import TraceMetadata
from exporter_torchscript.runtime import LoaderProcess, TracedModel
from exporter_torchscript.tracing import without_jit_deprecation

__all__ = ["CompiledModuleRunner", "load", "load_with_metadata"]

#: Errors the worker may report that are rebuilt as the same class here.
_KNOWN_ERRORS: dict[str, type[Exception]] = {
    "InputShapeError": InputShapeError,
    "InvalidArgumentError": InvalidArgumentError,
    "ModelNotFoundError": ModelNotFoundError,
    "BackendUnavailableError": BackendUnavailableError,
}


def load_with_metadata(path: str | Path) -> tuple[TracedModel, NeuronMetadata]:
    """`load` plus the module's Neuron metadata."""
    import torch

    path = Path(path)
    metadata = read_metadata(path)
    installed = require_sdk(metadata.target)
    sdk_module = import_sdk(installed)
    extra = {CONTRACT_FILE: ""}
    with without_jit_deprecation():
        module = torch.jit.load(str(path), _extra_files=extra)
    text = extra[CONTRACT_FILE]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not text:
        raise InvalidArgumentError(f"{path} has Neuron metadata but no shape contract; export it again with `exporter neuron`")
    if metadata.dynamic_batch and metadata.target != "inf1":
        module = sdk_module.dynamic_batch(module)
    module.eval()
    return TracedModel(module, TraceMetadata.from_json(text)), metadata


def load(path: str | Path) -> TracedModel:
    """Load a module written by `exporter neuron`, with its SDK imported and its shape contract applied."""
    return load_with_metadata(path)[0]


_shared_loader = LoaderProcess("exporter_neuron.worker", "Neuron")
atexit.register(_shared_loader.close)


class CompiledModuleRunner:
    """Validation runner: named NumPy inputs in, named NumPy outputs out, the file loaded in a fresh process.

    Each call loads the file from disk again (SDK import, ``torch.jit.load``, shape contract) in a worker process
    that compiled nothing and has not imported Transformers; the worker starts on first use and is shared by the
    runners of this process.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: Facts the worker reported on its last call (pid, whether Transformers was imported there, SDK).
        self.last_call: dict[str, Any] = {}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="exporter-neuron-") as folder:
            inputs_file = Path(folder) / "inputs.npz"
            outputs_file = Path(folder) / "outputs.npz"
            np.savez(inputs_file, **{name: np.ascontiguousarray(value) for name, value in inputs.items()})
            reply = _shared_loader.request(
                {"path": str(self.path.resolve()), "inputs": str(inputs_file), "outputs": str(outputs_file)}
            )
            if not reply.get("ok"):
                kind = _KNOWN_ERRORS.get(str(reply.get("error_type")))
                message = str(reply.get("message", "unknown error"))
                if kind is not None:
                    raise kind(message)
                raise ExportError(f"the compiled module failed in a fresh process: {reply.get('error_type')}: {message}")
            self.last_call = {k: v for k, v in reply.items() if k not in ("ok", "output_names")}
            with np.load(outputs_file) as data:
                return {name: np.array(data[name]) for name in reply["output_names"]}
