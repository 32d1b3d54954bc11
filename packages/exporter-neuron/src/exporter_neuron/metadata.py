"""What a compiled Neuron module was compiled for and with, stored inside the ``.pt`` file and beside it as JSON.

Two entries go into the TorchScript archive (``torch.jit.save(..., _extra_files=...)``):

* ``exporter/neuron.json``: this module's `NeuronMetadata` (target, SDK and compiler versions, compiler arguments,
  the exact SDK call, static shape, dynamic batching). `read_metadata` reads it straight from the archive (a zip)
  without torch, so a loader knows which SDK to import before ``torch.jit.load``.
* ``exporter/torchscript.json``: the shape contract of exporter-torchscript (`TraceMetadata`: input order, the
  shape inputs are padded to, pad token), so that ``exporter_torchscript.TracedModel`` pads and checks inputs
  for Neuron modules exactly as it does for TorchScript ones.

The side-car ``<stem>.neuron.json`` holds the same `NeuronMetadata`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core.errors import InvalidArgumentError, ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from exporter_torchscript.metadata import TraceMetadata

__all__ = ["FORMAT_VERSION", "NEURON_EXTRA_FILE", "NeuronMetadata", "metadata_path", "read_metadata"]

NEURON_EXTRA_FILE = "exporter/neuron.json"
FORMAT_VERSION = 1


def metadata_path(artifact: str | Path) -> Path:
    """The side-car file of `artifact` (``model_neuron.pt`` -> ``model_neuron.neuron.json``)."""
    artifact = Path(artifact)
    return artifact.with_name(f"{artifact.stem}.neuron.json")


@dataclass
class NeuronMetadata:
    """How one module was compiled: target, SDK, compiler arguments, static shape."""

    #: Instance family compiled for: inf1, inf2 or trn1.
    target: str
    #: The SDK provider that compiled it ({"module", "distribution", "version", "aws_sdk", "compiler", ...}).
    sdk: dict[str, Any]
    #: The SDK function called (``torch_neuronx.trace``) and its keyword arguments, as passed.
    trace_function: str
    trace_arguments: dict[str, Any]
    #: The compiler's arguments (also inside `trace_arguments`).
    compiler_args: list[str]
    #: The shape compiled for, per axis name ({"batch": 1, "sequence": 128}).
    static_shape: dict[str, int]
    #: True when the batch axis may vary (the SDK splits and pads batches into chunks of the compiled batch).
    dynamic_batch: bool
    input_names: list[str]
    input_shapes: dict[str, list[int]]
    input_dtypes: dict[str, str]
    output_names: list[str]
    auto_cast: str | None = None
    auto_cast_type: str | None = None
    model_type: str | None = None
    model_class: str | None = None
    feature: str | None = None
    #: torch, transformers and exporter-neuron versions at compile time.
    versions: dict[str, str | None] = field(default_factory=dict)
    #: Groups of parameter names that shared one tensor in the model and were cloned apart for tracing.
    untied_parameters: list[list[str]] = field(default_factory=list)
    #: Distinct warnings the tracer gave while compiling.
    tracer_warnings: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_contract(
        cls,
        contract: TraceMetadata,
        *,
        target: str,
        sdk: dict[str, Any],
        trace_function: str,
        trace_arguments: dict[str, Any],
        static_shape: dict[str, int],
        dynamic_batch: bool,
        auto_cast: str | None,
        auto_cast_type: str | None,
        exporter_neuron_version: str,
    ) -> NeuronMetadata:
        """The metadata of a module compiled with the given SDK call; what the trace recorded comes from its contract."""
        return cls(
            target=target,
            sdk=sdk,
            trace_function=trace_function,
            trace_arguments=trace_arguments,
            compiler_args=list(trace_arguments["compiler_args"]),
            static_shape=static_shape,
            dynamic_batch=dynamic_batch,
            input_names=list(contract.input_names),
            input_shapes=dict(contract.input_shapes),
            input_dtypes=dict(contract.input_dtypes),
            output_names=list(contract.output_names),
            auto_cast=auto_cast,
            auto_cast_type=auto_cast_type,
            model_type=contract.model_type,
            model_class=contract.model_class,
            feature=contract.feature,
            versions={
                "torch": contract.torch_version,
                "transformers": contract.transformers_version,
                "exporter-neuron": exporter_neuron_version,
            },
            untied_parameters=list(contract.untied_parameters),
            tracer_warnings=list(contract.tracer_warnings),
        )

    @property
    def compiled_by_aws_sdk(self) -> bool:
        """False when a stand-in (exporter-neuron's tests) produced the module: then it is plain TorchScript."""
        return bool(self.sdk.get("aws_sdk"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NeuronMetadata:
        """Read `to_dict()` output back (unknown keys from newer writers are ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})


def read_metadata(path: str | Path) -> NeuronMetadata:
    """The metadata inside a module written by `exporter neuron` (read from the archive; torch not needed)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"no such file: {path}; pass the model_neuron.pt written by `exporter neuron`")
    suffix = "/extra/" + NEURON_EXTRA_FILE
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith(suffix)]
            text = archive.read(names[0]).decode("utf-8") if names else ""
    except zipfile.BadZipFile:
        text = ""
    if not text and metadata_path(path).is_file():
        text = metadata_path(path).read_text(encoding="utf-8")
    if not text:
        raise InvalidArgumentError(
            f"{path} carries no exporter Neuron metadata (it was not written by `exporter neuron`); "
            "load it with torch.jit.load after importing torch_neuron or torch_neuronx"
        )
    return NeuronMetadata.from_dict(json.loads(text))
