"""Compiling a Transformers model for Neuron at a static shape, and saving it with its metadata.

The model is prepared as for TorchScript (exporter-core's export wrapper: inputs by name, a tuple out, eval mode,
tied weights cloned apart in a copy) and handed to the SDK's tracer at the declared shape, with example rows of
different real lengths. Inf1 goes through ``torch_neuron.trace``, Inf2/Trn1 through ``torch_neuronx.trace``
(then ``torch_neuronx.dynamic_batch`` when asked). The caller's model is left as it was.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from exporter_core.errors import ExportError, InvalidArgumentError
from exporter_core.modeling import export_module, prepared_for_export, untied_copy
from exporter_core.padding import describe_shape, pad_token_id_for, static_shape_of
from exporter_neuron.metadata import NEURON_EXTRA_FILE, NeuronMetadata, metadata_path
from exporter_neuron.options import NeuronOptions, trace_arguments, trace_function
from exporter_neuron.sdk import InstalledSdk, import_sdk, require_sdk
from exporter_torchscript.metadata import EXTRA_FILE as CONTRACT_FILE
from exporter_torchscript.metadata import TraceMetadata
from exporter_torchscript.tracing import shared_parameter_groups, without_jit_deprecation

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = ["CompiledModule", "compile_for_neuron", "example_inputs", "first_line", "save_compiled", "static_sizes"]

_POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_positions")


@dataclass
class CompiledModule:
    """A compiled module, its shape contract (for loading) and its Neuron metadata."""

    module: Any
    contract: TraceMetadata
    metadata: NeuronMetadata


def first_line(exc: BaseException) -> str:
    """``Type: first non-empty line`` of an exception, for one-line messages."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"[:400]
    return type(exc).__name__


def static_sizes(config: OnnxConfig, options: NeuronOptions) -> tuple[int, int]:
    """(batch, sequence) to compile for: the options', else the architecture's defaults; checked against the model."""
    batch = options.batch_size if options.batch_size is not None else config.default_batch_size
    sequence = options.sequence_length if options.sequence_length is not None else config.default_sequence_length
    for attribute in _POSITION_LIMITS:
        limit = getattr(config.model_config, attribute, None)
        if isinstance(limit, int) and limit > 0:
            if sequence > limit:
                raise InvalidArgumentError(
                    f"sequence_length {sequence} is longer than the model's {limit} positions; pass --sequence-length {limit} or less"
                )
            break
    return batch, sequence


def example_inputs(config: OnnxConfig, preprocessor: Any, batch: int, sequence: int, *, framework: str = "pt", seed: int = 0) -> dict[str, Any]:
    """Inputs at (batch, sequence) with rows of different real lengths, in the config's input order."""
    return dict(
        config.generate_dummy_inputs(
            preprocessor, batch_size=batch, seq_length=sequence, framework=framework, padded=True, seed=seed
        )
    )


@contextlib.contextmanager
def _tracer_warnings() -> Iterator[list[str]]:
    """Collect the distinct tracer warnings instead of printing them."""
    import torch

    collected: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield collected
        finally:
            for item in caught:
                if issubclass(item.category, torch.jit.TracerWarning):
                    text = str(item.message).splitlines()[0].strip()
                    if text not in collected:
                        collected.append(text)


def _check_feature(config: OnnxConfig, feature: str | None) -> None:
    if any("past" in axis for axes in config.inputs.values() for axis in axes.values()):
        plain = (feature or "default").removesuffix("-with-past")
        raise InvalidArgumentError(
            f"the neuron backend compiles one module of fixed shapes, without a cache; export feature {plain!r} instead of {feature!r}"
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
    import torch
    import transformers

    from exporter_neuron import __version__

    _check_feature(config, feature)
    installed = installed or require_sdk(options.target)
    batch, sequence = static_sizes(config, options)
    sdk_module = import_sdk(installed)
    dummy = example_inputs(config, preprocessor, batch, sequence)
    names = list(dummy)
    static = static_shape_of(dummy, config.inputs)
    kwargs = trace_arguments(options)
    function = trace_function(options)
    shared = shared_parameter_groups(model)
    with prepared_for_export(model, config), torch.no_grad(), _tracer_warnings() as tracer_warnings:
        source = untied_copy(model) if shared else model
        wrapper = export_module(source, config, names)
        try:
            compiled = sdk_module.trace(wrapper, tuple(dummy.values()), **kwargs)
        except Exception as exc:
            raise ExportError(
                f"{function} could not compile {type(model).__name__} for {options.target} at {describe_shape(static)}: "
                f"{first_line(exc)}; `exporter neuron analyze --target {options.target}` lists the operators the "
                "compiler does not support"
            ) from exc
        if options.dynamic_batch and options.uses_neuronx:
            compiled = sdk_module.dynamic_batch(compiled)
    # With dynamic batching the SDK takes any batch size; only the other axes stay fixed (and are padded).
    contract_shape = {name: size for name, size in static.items() if not (options.dynamic_batch and name == "batch")}
    contract = TraceMetadata(
        input_names=names,
        output_names=list(config.outputs),
        input_shapes={name: list(value.shape) for name, value in dummy.items()},
        input_dtypes={name: str(value.dtype).replace("torch.", "") for name, value in dummy.items()},
        input_axes={name: dict(config.inputs[name]) for name in names},
        output_axes={name: dict(axes) for name, axes in config.outputs.items()},
        static_shape=contract_shape,
        pad_token_id=pad_token_id_for(config.model_config, preprocessor),
        padding_side=config.padding_side,
        untied_parameters=shared,
        model_type=getattr(config.model_config, "model_type", None),
        model_class=type(model).__name__,
        feature=feature,
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        tracer_warnings=tracer_warnings,
    )
    metadata = NeuronMetadata(
        target=options.target,
        sdk=installed.describe(),
        trace_function=function,
        trace_arguments=kwargs,
        compiler_args=list(kwargs["compiler_args"]),
        static_shape=static,
        dynamic_batch=options.dynamic_batch,
        input_names=names,
        input_shapes=contract.input_shapes,
        input_dtypes=contract.input_dtypes,
        output_names=list(config.outputs),
        auto_cast=options.auto_cast,
        auto_cast_type=options.auto_cast_type,
        model_type=contract.model_type,
        model_class=contract.model_class,
        feature=feature,
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "exporter-neuron": __version__},
        untied_parameters=shared,
        tracer_warnings=tracer_warnings,
    )
    return CompiledModule(module=compiled, contract=contract, metadata=metadata)


def save_compiled(compiled: CompiledModule, path: str | Path) -> list[str]:
    """Save the module to `path` with both metadata entries inside and the side-car JSON; return the file names."""
    import torch

    path = Path(path)
    text = compiled.metadata.to_json()
    with without_jit_deprecation():
        torch.jit.save(
            compiled.module, str(path), _extra_files={NEURON_EXTRA_FILE: text, CONTRACT_FILE: compiled.contract.to_json()}
        )
    side = metadata_path(path)
    side.write_text(text, encoding="utf-8")
    return [path.name, side.name]
