"""The static-trace layer of the TorchScript and Neuron backends: one module traced at one shape, with the tracer
(``torch.jit.trace``, or a Neuron SDK's compiler) injected.

* `trace_static` prepares a plan part's module as the old ``torchscript=True`` flag did (eval mode, tied weights
  cloned apart in a copy, inputs by name, a tuple out; the caller's model is left as it was), hands it to the
  `Tracer` at a declared maximum shape with example rows of different real lengths, collects the tracer's warnings
  and writes the shape contract (`TraceMetadata`) a loader needs.
* `save_module` saves the result with the contract inside the file and a side car beside it.
* `static_scenarios` are the inputs a static-shape artifact is validated at: its traced shape, smaller inputs the
  loaded module pads up to it, and a larger batch where the artifact takes any batch. Padding can change a
  model's outputs by itself (ConvBERT's convolutions read the padding tokens): `padding_effect` measures it with
  exporter-validate's comparison, and such a scenario is compared with `PaddedReference`, the model on the same
  padded inputs.

Imports torch at module scope: the backends import it inside `export`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata as distributions
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from exporter_core.errors import ExportError, InvalidArgumentError
from exporter_core.model_config import ModelConfigView
from exporter_core.modeling import export_module, prepared_for_export, untied_copy
from exporter_core.padding import describe_shape, pad_inputs, pad_token_id_for, static_shape_of
from exporter_core.plan import Scenario
from exporter_torchscript.metadata import EXTRA_FILE, TraceMetadata, metadata_path
from exporter_torchscript.runtime import without_jit_deprecation
from exporter_validate import max_abs_difference, reference_outputs

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = [
    "PaddedReference",
    "StaticTrace",
    "Tracer",
    "collected_tracer_warnings",
    "example_inputs",
    "first_line",
    "padding_effect",
    "save_module",
    "sequence_size",
    "shared_parameter_groups",
    "static_contract",
    "static_scenarios",
    "static_sizes",
    "trace_static",
    "traceable",
]

logger = logging.getLogger("exporter")


def first_line(exc: BaseException) -> str:
    """``Type: first non-empty line`` of an exception, for one-line messages."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"[:400]
    return type(exc).__name__


def shared_parameter_groups(model: Any) -> list[list[str]]:
    """Names of parameters that are one tensor reached from several modules (tied weights), grouped."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


@contextlib.contextmanager
def traceable(model: Any, config: OnnxConfig, input_names: list[str]) -> Iterator[torch.nn.Module]:
    """The module a tracer gets: `model` prepared for export (eval mode, config overrides, patches), tied parameters
    cloned apart in a copy, wrapped to take `input_names` and return a tuple; gradients off; all restored after."""
    shared = shared_parameter_groups(model)
    with prepared_for_export(model, config), torch.no_grad():
        source = untied_copy(model) if shared else model
        yield export_module(source, config, input_names)


@contextlib.contextmanager
def collected_tracer_warnings() -> Iterator[list[str]]:
    """Collect the distinct tracer warnings instead of printing them (other warnings of the call are dropped)."""
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


def static_sizes(config: OnnxConfig, batch_size: int | None, sequence_length: int | None) -> tuple[int, int]:
    """(batch, sequence) to trace at: the given sizes, else the architecture's; the sequence checked against the
    model's positions."""
    batch = batch_size if batch_size is not None else config.default_batch_size
    sequence = sequence_length if sequence_length is not None else config.default_sequence_length
    limit = ModelConfigView(config.model_config).max_positions
    if limit is not None and sequence > limit:
        raise InvalidArgumentError(
            f"sequence_length {sequence} is longer than the model's {limit} positions; pass --sequence-length {limit} or less"
        )
    return batch, sequence


def sequence_size(shape: Mapping[str, int]) -> int | None:
    """The size the config's ``seq_length`` controls: the ``sequence`` axis, else the encoder's (seq2seq)."""
    for name in ("sequence", "encoder_sequence"):
        if name in shape:
            return shape[name]
    return None


def example_inputs(
    config: OnnxConfig,
    preprocessor: Any,
    batch: int,
    sequence: int,
    *,
    choices: int = -1,
    framework: str = "pt",
    seed: int = 0,
) -> dict[str, Any]:
    """Inputs at (batch, sequence) with rows of different real lengths, in the config's input order."""
    return dict(
        config.generate_dummy_inputs(
            preprocessor,
            batch_size=batch,
            seq_length=sequence,
            num_choices=choices,
            framework=framework,
            padded=True,
            seed=seed,
        )
    )


@dataclass(frozen=True)
class Tracer:
    """The injected step of a static-shape backend: the prepared module and example inputs in, the artifact's module out."""

    #: The call, as messages name it ("torch.jit.trace", "torch_neuronx.trace").
    name: str
    trace: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], Any]
    #: What a failure says the call could not do ("trace", "compile").
    verb: str = "trace"
    #: What it was done for ("inf2"), named in a failure.
    target: str | None = None
    #: Where to look next, appended to a failure.
    hint: str | None = None

    def failure(self, model_name: str, shape: Mapping[str, int], exc: BaseException) -> str:
        """One line saying what could not be traced, at which shape, and why."""
        where = f" for {self.target}" if self.target else ""
        hint = f"; {self.hint}" if self.hint else ""
        return (
            f"{self.name} could not {self.verb} {model_name}{where} at {describe_shape(shape)}: {first_line(exc)}{hint}"
        )


@dataclass
class StaticTrace:
    """A module traced at one static shape, its shape contract, and the example inputs it was traced with."""

    module: Any
    contract: TraceMetadata
    example_inputs: dict[str, torch.Tensor]


def _version(distribution: str) -> str | None:
    try:
        return distributions.version(distribution)
    except distributions.PackageNotFoundError:
        return None


def trace_static(
    model: Any,
    config: OnnxConfig,
    tracer: Tracer,
    *,
    batch_size: int | None = None,
    sequence_length: int | None = None,
    preprocessor: Any = None,
    feature: str | None = None,
) -> StaticTrace:
    """Trace `model` as `config` describes it with `tracer` at (batch_size, sequence_length), defaults from the config."""
    batch, sequence = static_sizes(config, batch_size, sequence_length)
    dummy = example_inputs(config, preprocessor, batch, sequence)
    names = list(dummy)
    static = static_shape_of(dummy, config.inputs)
    with traceable(model, config, names) as wrapper, collected_tracer_warnings() as tracer_warnings:
        try:
            module = tracer.trace(wrapper, tuple(dummy.values()))
        except Exception as exc:
            raise ExportError(tracer.failure(type(model).__name__, static, exc)) from exc
    contract = static_contract(
        model, config, dummy, preprocessor=preprocessor, feature=feature, tracer_warnings=tracer_warnings
    )
    return StaticTrace(module=module, contract=contract, example_inputs=dummy)


def static_contract(
    model: Any,
    config: OnnxConfig,
    dummy: Mapping[str, Any],
    *,
    preprocessor: Any = None,
    feature: str | None = None,
    tracer_warnings: list[str] | None = None,
) -> TraceMetadata:
    """The shape contract of a module traced from `model` on the example inputs `dummy` (`example_inputs`)."""
    names = list(dummy)
    return TraceMetadata(
        input_names=names,
        output_names=list(config.outputs),
        input_shapes={name: list(value.shape) for name, value in dummy.items()},
        input_dtypes={name: str(value.dtype).replace("torch.", "") for name, value in dummy.items()},
        input_axes={name: dict(config.inputs[name]) for name in names},
        output_axes={name: dict(axes) for name, axes in config.outputs.items()},
        static_shape=static_shape_of(dummy, config.inputs),
        pad_token_id=pad_token_id_for(config.model_config, preprocessor),
        padding_side="right",
        untied_parameters=shared_parameter_groups(model),
        model_type=getattr(config.model_config, "model_type", None),
        model_class=type(model).__name__,
        feature=feature,
        torch_version=torch.__version__,
        transformers_version=_version("transformers"),
        tracer_warnings=list(tracer_warnings or []),
    )


def save_module(
    module: Any,
    contract: TraceMetadata,
    path: str | Path,
    *,
    extra_files: Mapping[str, str] | None = None,
    side_car: tuple[Path, str] | None = None,
) -> list[str]:
    """Save `module` to `path` with the contract (and `extra_files`) inside, and a side car beside it: `side_car`
    (path, text), else the contract at `metadata_path(path)`. Returns the file names written."""
    path = Path(path)
    text = contract.to_json()
    with without_jit_deprecation():
        try:
            torch.jit.save(module, str(path), _extra_files={**dict(extra_files or {}), EXTRA_FILE: text})
        except RuntimeError as exc:  # a trace that holds what TorchScript cannot serialise (a Python autograd.Function)
            raise ExportError(
                f"torch.jit.save could not save the traced {contract.model_class or 'model'}: {first_line(exc)}"
            ) from exc
    side_path, side_text = side_car if side_car is not None else (metadata_path(path), text)
    side_path.write_text(side_text, encoding="utf-8")
    return [path.name, side_path.name]


class PaddedReference(torch.nn.Module):
    """The eager model called on inputs padded as the loaded artifact pads them, its outputs cut back to the
    caller's sizes."""

    def __init__(self, model: torch.nn.Module, config: OnnxConfig, contract: TraceMetadata) -> None:
        super().__init__()
        self.model = model
        self.export_config = config
        self.contract = contract
        self.training = model.training

    @property
    def config(self) -> Any:
        """The wrapped model's Transformers config (so export-time overrides reach it)."""
        return self.model.config

    def forward(self, **kwargs: Any) -> dict[str, Any]:
        """Pad the config's named inputs, rebuild the model's keywords from them, run, cut the outputs back.

        The keywords are rebuilt (`model_kwargs`) because some are derived from the inputs (position ids from the
        attention mask): derived from the unpadded inputs they would no longer fit.
        """
        axes = self.export_config.inputs
        missing = [name for name in axes if name not in kwargs]
        if missing:
            raise TypeError(f"PaddedReference needs the config's inputs by name; {missing} were not passed through")
        padded = pad_inputs(
            {name: kwargs[name] for name in axes},
            axes,
            self.contract.static_shape,
            pad_token_id=self.contract.pad_token_id,
            padding_side=self.contract.padding_side,
        )
        output = self.model(**self.export_config.model_kwargs(padded.inputs))
        selected = dict(zip(self.export_config.outputs, self.export_config.select_outputs(output), strict=True))
        return padded.unpad(selected, self.export_config.outputs)


def padding_effect(
    model: torch.nn.Module, config: OnnxConfig, inputs: Mapping[str, Any], contract: TraceMetadata
) -> float:
    """Largest change that padding `inputs` as the artifact's loader does makes to the eager model's outputs at
    real positions."""
    plain = reference_outputs(model, config, inputs)
    padded = reference_outputs(PaddedReference(model, config, contract), config, inputs)
    return max_abs_difference(config, inputs, plain, padded)


def static_scenarios(
    model: torch.nn.Module,
    config: OnnxConfig,
    contract: TraceMetadata,
    *,
    preprocessor: Any = None,
    larger_batch: bool = False,
) -> list[Scenario]:
    """Where a static-shape artifact is validated: at its traced shape (rows of several real lengths), with smaller
    inputs (about half the batch, two thirds of the sequence) that its loader pads, and with `larger_batch` at
    2 × batch + 1 (for artifacts that take any batch).

    A scenario whose padding by itself changes the model's outputs beyond the config's tolerance is compared with
    `PaddedReference`; the largest effect measured is recorded in `contract.padding_effect`.
    """
    traced = contract.traced_shape
    batch = traced.get("batch", -1)
    sequence = sequence_size(traced) or -1
    choices = traced.get("choice", -1)
    sizes = [(batch, sequence)]
    smaller = (max(1, batch // 2) if batch > 0 else -1, max(2, (2 * sequence) // 3) if sequence > 0 else -1)
    if smaller != (batch, sequence):
        sizes.append(smaller)
    if larger_batch:
        sizes.append((2 * max(batch, 1) + 1, sequence))
    scenarios = []
    for index, (rows, length) in enumerate(sizes):
        inputs = example_inputs(config, preprocessor, rows, length, choices=choices, framework="np", seed=1 + 2 * index)
        scenarios.append(_scenario(model, config, contract, inputs))
    return scenarios


def _scenario(model: torch.nn.Module, config: OnnxConfig, contract: TraceMetadata, inputs: dict[str, Any]) -> Scenario:
    shape = static_shape_of(inputs, config.inputs)
    label = contract.describe_call(shape)
    padded = pad_inputs(
        inputs,
        contract.input_axes,
        contract.static_shape,
        pad_token_id=contract.pad_token_id,
        padding_side=contract.padding_side,
    )
    if not padded.padded:
        return Scenario(label, inputs)
    effect = padding_effect(model, config, inputs, contract)
    changes = effect > config.atol_for_validation
    previous = contract.padding_effect
    if previous is None or effect >= previous["max_abs_diff"]:
        contract.padding_effect = {"shape": shape, "max_abs_diff": effect, "changes_outputs": changes}
    if not changes:
        return Scenario(label, inputs)
    logger.warning(
        "\t-[!] padding changes %s's outputs at real positions by up to %.2e (a property of the model, not of the "
        "format); padded calls are validated against the model on the same padded inputs",
        type(model).__name__,
        effect,
    )
    label += f" (padding changes this model's outputs by up to {effect:.2e}: compared with the model on the same padded inputs)"
    return Scenario(label, inputs, reference=PaddedReference(model, config, contract))
