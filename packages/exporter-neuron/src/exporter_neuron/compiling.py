"""Compiling a Transformers model for Neuron at a static shape, and saving it with its metadata.

exporter-torchscript's static-trace layer does the work (`exporter_torchscript.static.trace_static`: inputs by
name, a tuple out, eval mode, tied weights cloned apart in a copy, example rows of different real lengths, the
shape contract); this module injects the SDK's tracer: ``torch_neuron.trace`` for Inf1, ``torch_neuronx.trace``
for Inf2/Trn1 (then ``torch_neuronx.dynamic_batch`` when asked). The caller's model is left as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_neuron.metadata import NEURON_EXTRA_FILE, NeuronMetadata, metadata_path
from exporter_neuron.options import NeuronOptions, trace_arguments, trace_function
from exporter_neuron.sdk import InstalledSdk, import_sdk, require_sdk

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig
    from exporter_torchscript.metadata import TraceMetadata
    from exporter_torchscript.static import Tracer

__all__ = ["CompiledModule", "compile_for_neuron", "neuron_tracer", "save_compiled"]


@dataclass
class CompiledModule:
    """A compiled module, its shape contract (for loading) and its Neuron metadata."""

    module: Any
    contract: TraceMetadata
    metadata: NeuronMetadata


def neuron_tracer(options: NeuronOptions, sdk_module: Any) -> Tracer:
    """The SDK's trace call with the options' arguments (and dynamic batching on after tracing, for torch-neuronx)."""
    from exporter_torchscript.static import Tracer

    kwargs = trace_arguments(options)

    def compile_module(module: Any, inputs: tuple[Any, ...]) -> Any:
        compiled = sdk_module.trace(module, inputs, **kwargs)
        if options.dynamic_batch and options.uses_neuronx:
            compiled = sdk_module.dynamic_batch(compiled)
        return compiled

    return Tracer(
        trace_function(options),
        compile_module,
        verb="compile",
        target=options.target,
        hint=f"`exporter neuron analyze --target {options.target}` lists the operators the compiler does not support",
    )


def compile_for_neuron(
    model: Any,
    config: OnnxConfig,
    options: NeuronOptions,
    *,
    preprocessor: Any = None,
    feature: str | None = None,
    installed: InstalledSdk | None = None,
) -> CompiledModule:
    """Compile `model` as `config` describes it for ``options.target`` at the options' static shape."""
    from exporter_neuron import __version__
    from exporter_torchscript.static import trace_static

    installed = installed or require_sdk(options.target)
    traced = trace_static(
        model,
        config,
        neuron_tracer(options, import_sdk(installed)),
        batch_size=options.batch_size,
        sequence_length=options.sequence_length,
        preprocessor=preprocessor,
        feature=feature,
    )
    compiled_shape = dict(traced.contract.static_shape)
    # With dynamic batching the SDK takes any batch size; only the other axes stay fixed (and are padded).
    contract = traced.contract
    if options.dynamic_batch:
        contract = dataclasses.replace(
            contract, static_shape={name: size for name, size in compiled_shape.items() if name != "batch"}
        )
    metadata = NeuronMetadata.for_contract(
        contract,
        target=options.target,
        sdk=installed.describe(),
        trace_function=trace_function(options),
        trace_arguments=trace_arguments(options),
        static_shape=compiled_shape,
        dynamic_batch=options.dynamic_batch,
        auto_cast=options.auto_cast,
        auto_cast_type=options.auto_cast_type,
        exporter_neuron_version=__version__,
    )
    return CompiledModule(module=traced.module, contract=contract, metadata=metadata)


def save_compiled(compiled: CompiledModule, path: str | Path) -> list[str]:
    """Save the module to `path` with the shape contract and the Neuron metadata inside, the Neuron metadata beside
    it; return the file names."""
    from exporter_torchscript.static import save_module

    path = Path(path)
    text = compiled.metadata.to_json()
    return save_module(
        compiled.module,
        compiled.contract,
        path,
        extra_files={NEURON_EXTRA_FILE: text},
        side_car=(metadata_path(path), text),
    )
