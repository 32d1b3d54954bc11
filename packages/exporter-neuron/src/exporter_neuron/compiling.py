"""Compiling a Transformers model for Neuron at a static shape, and saving it with its metadata.

exporter-torchscript's static-trace layer does the work (`exporter_torchscript.static.trace_static`: inputs by
name, a tuple out, eval mode, tied weights cloned apart in a copy, example rows of different real lengths, the
shape contract); this module injects the SDK's tracer: ``torch_neuron.trace`` for Inf1, ``torch_neuronx.trace``
for Inf2/Trn1 (then ``torch_neuronx.dynamic_batch`` when asked). The caller's model is left as it was.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_neuron.metadata import NEURON_EXTRA_FILE, NeuronMetadata, metadata_path
from exporter_neuron.options import NeuronOptions, trace_arguments, trace_function
from exporter_neuron.sdk import InstalledSdk, import_sdk, require_sdk, sdk_for

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig
    from exporter_torchscript.metadata import TraceMetadata
    from exporter_torchscript.static import Tracer

__all__ = [
    "CompiledModule",
    "compile_for_neuron",
    "compile_in_environment",
    "neuron_tracer",
    "remote_refusal",
    "save_compiled",
]

logger = logging.getLogger("exporter")


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


def remote_refusal(config: OnnxConfig) -> str | None:
    """Why `config`'s module cannot be rebuilt in another environment, or None.

    That environment loads the checkpoint with its own Transformers and calls the model with the inputs by name,
    returning the named outputs: an architecture whose export adds computation of exporter's own (input renames,
    output selection, patched operators) would compile something else there.
    """
    from exporter_core.config import OnnxConfig as Base

    own = [
        hook
        for hook in ("model_kwargs", "select_outputs", "output_value")
        if getattr(type(config), hook) is not getattr(Base, hook)
    ]
    if config._patching_specs:
        own.append("patched operators")
    if own:
        return (
            f"{type(config).__name__} adds exporter's own computation to the model ({', '.join(own)}), which an SDK "
            "environment without exporter cannot rebuild: compile it in this process (without --sdk-python)"
        )
    return None


def compile_in_environment(
    model: Any,
    config: OnnxConfig,
    options: NeuronOptions,
    worker: Any,
    artifact: Path,
    *,
    preprocessor: Any = None,
    feature: str | None = None,
) -> CompiledModule:
    """Compile in the SDK's own environment (`exporter_neuron.environments`): the example inputs and the shape
    contract are made here, the checkpoint is loaded, traced and saved to `artifact` there."""
    import tempfile

    from exporter_core.errors import UnsupportedFeatureError
    from exporter_neuron import __version__
    from exporter_neuron.environments import save_inputs
    from exporter_torchscript.metadata import EXTRA_FILE
    from exporter_torchscript.static import example_inputs, static_contract, static_sizes

    refusal = remote_refusal(config)
    if refusal:
        raise UnsupportedFeatureError(refusal)
    checkpoint = getattr(model, "name_or_path", "") or ""
    if not checkpoint or not Path(checkpoint).is_dir():
        raise UnsupportedFeatureError(
            "--sdk-python needs the model as a checkpoint folder the SDK's environment can load; "
            f"{type(model).__name__} was not loaded from one"
        )
    environment = worker.environment
    batch, sequence = static_sizes(config, options.batch_size, options.sequence_length)
    dummy = example_inputs(config, preprocessor, batch, sequence)
    contract = static_contract(model, config, dummy, preprocessor=preprocessor, feature=feature)
    compiled_shape = dict(contract.static_shape)
    if options.dynamic_batch:
        contract = dataclasses.replace(
            contract, static_shape={name: size for name, size in compiled_shape.items() if name != "batch"}
        )
    sdk = environment.sdk(options.target)
    metadata = NeuronMetadata.for_contract(
        contract,
        target=options.target,
        sdk={
            "module": sdk_for(options.target).module,
            "distribution": sdk["distribution"],
            "version": sdk["version"],
            "aws_sdk": sdk["distribution"] == sdk_for(options.target).distribution,
            "summary": sdk.get("summary", ""),
            "environment": {
                "python": environment.python,
                "python_version": environment.facts.get("python"),
                "torch": environment.torch,
                "transformers": environment.transformers,
            },
        },
        trace_function=trace_function(options),
        trace_arguments=trace_arguments(options),
        static_shape=compiled_shape,
        dynamic_batch=options.dynamic_batch,
        auto_cast=options.auto_cast,
        auto_cast_type=options.auto_cast_type,
        exporter_neuron_version=__version__,
    )
    # The module was traced there: its torch and Transformers are that environment's; ours made the reference.
    metadata.versions.update(
        {
            "torch": environment.torch,
            "transformers": environment.transformers,
            "exporter_torch": contract.torch_version,
            "exporter_transformers": contract.transformers_version,
        }
    )
    overrides = {k: v for k, v in dict(config.values_override or {}).items() if isinstance(v, (bool, int, str))}
    with tempfile.TemporaryDirectory(prefix="exporter-neuron-") as folder:
        answer = worker.request(
            {
                "op": "compile",
                "sdk_module": sdk_for(options.target).module,
                "checkpoint": str(Path(checkpoint).resolve()),
                "model_class": type(model).__name__,
                "config_overrides": overrides,
                "input_names": list(contract.input_names),
                "output_names": list(contract.output_names),
                "inputs": save_inputs(folder, "example", {k: v.numpy() for k, v in dummy.items()}),
                "trace_kwargs": trace_arguments(options),
                "dynamic_batch": options.dynamic_batch and options.uses_neuronx,
                "artifact": str(artifact),
                "extra_files": {EXTRA_FILE: contract.to_json(), NEURON_EXTRA_FILE: metadata.to_json()},
            }
        )
    logger.info(
        f"Compiled in {environment.python} (torch {answer.get('torch')}, transformers {answer.get('transformers')}); "
        f"the reference runs here (transformers {contract.transformers_version})"
    )
    return CompiledModule(module=None, contract=contract, metadata=metadata)
