"""Architecture configs: what a model takes and returns for one feature, and how to make inputs for it.

The public names and members are those of the old ``transformers.onnx`` (`OnnxConfig`,
`OnnxConfigWithPast`, `OnnxSeq2SeqConfigWithPast`), so user scripts keep working; the configs themselves
are format-neutral and serve every backend. Subclasses are declarative: class attributes plus a few hooks.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.errors import InvalidArgumentError, UnsupportedFeatureError, UnsupportedFrameworkError
from exporter_core.model_config import ModelConfigView
from exporter_core.tasks import COMMON_OUTPUTS, feature_to_task, is_with_past

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.cache import CacheLayout
    from exporter_core.plan import ExportPlan, PlanCheck, Scenario

__all__ = [
    "EXTERNAL_DATA_FORMAT_SIZE_LIMIT",
    "OnnxConfig",
    "OnnxConfigWithPast",
    "OnnxSeq2SeqConfigWithPast",
    "PatchingSpec",
    "TextEncoderOnnxConfig",
]

#: Size of fp32 weights (bytes) from which an ONNX file must keep its weights as external data.
EXTERNAL_DATA_FORMAT_SIZE_LIMIT = 2 * 1024 * 1024 * 1024


@dataclasses.dataclass
class PatchingSpec:
    """An attribute to replace on an object while exporting (`patch_ops` / `restore_ops`)."""

    o: Any
    name: str
    custom_op: Callable[..., Any]
    orig_op: Callable[..., Any] | None = None
    op_wrapper: Callable[..., Any] | None = None


class OnnxConfig:
    """Base config for models without past key values (encoders, vision models).

    `inputs` and `outputs` are ordered mappings of name -> {axis index: symbolic axis name}; the order of
    `inputs` is the order of the model's forward arguments.
    """

    default_fixed_batch: ClassVar[int] = 2
    default_fixed_sequence: ClassVar[int] = 8
    default_fixed_num_choices: ClassVar[int] = 4
    torch_onnx_minimum_version: ClassVar[str] = "2.0"

    #: Features (tasks) this architecture supports; entries in `exporter.architectures` rely on it.
    features: ClassVar[tuple[str, ...]] = ("default",)
    #: Opset used when none is asked for, and the lowest one the architecture exports correctly with.
    default_opset: ClassVar[int] = 18
    min_onnx_opset: ClassVar[int] = 14
    #: Why opsets below `min_onnx_opset` cannot be written (the operator that needs it), for the refusal.
    min_onnx_opset_reason: ClassVar[str] = (
        "Transformers 5 attention is captured as aten::scaled_dot_product_attention (and causal masks as Trilu), "
        "which ONNX has from opset 14"
    )
    #: Absolute tolerance of validation (the whole tolerance: no relative term is added).
    atol: ClassVar[float] = 1e-5
    #: Feature -> Transformers class name, for pairs that no Auto class maps any more.
    model_classes: ClassVar[Mapping[str, str]] = {}
    #: Side on which validation inputs are padded.
    padding_side: ClassVar[str] = "right"
    #: Attention implementation the graphs are captured with (None keeps the model's own).
    export_attn_implementation: ClassVar[str | None] = None
    #: Keyword arguments of ``AutoConfig.for_model(model_type, ...)`` giving a tiny random-weight model of this
    #: architecture that runs; the test kit (`exporter_core.testing`) builds every test checkpoint from it, and
    #: its guard fails for an installed architecture that leaves it empty.
    tiny_config: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """Features of `model_type` this config serves; a generic family registered for several model types
        narrows `features` to the heads Transformers has for each."""
        return tuple(cls.features)

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """Keyword arguments of ``AutoConfig.for_model(model_type, ...)`` for a tiny test model (`tiny_config` unless
        a generic family derives them per model type)."""
        return cls.tiny_config

    @classmethod
    def tiny_feature_extractor(cls, model_config: PretrainedConfig) -> Any | None:
        """A feature extractor matching the tiny model `model_config` describes (audio models), or None: the test kit
        saves it into the tiny checkpoint, so inputs come through it as they do from a real checkpoint's."""
        return None

    _tasks_to_common_outputs = COMMON_OUTPUTS

    def __init__(
        self, config: PretrainedConfig, task: str = "default", patching_specs: list[PatchingSpec] | None = None
    ) -> None:
        self._config = config
        if task not in self._tasks_to_common_outputs:
            raise UnsupportedFeatureError(
                f"{task!r} is not a known task; use one of {', '.join(sorted(self._tasks_to_common_outputs))}"
            )
        self.task = task
        self._patching_specs = []
        for spec in patching_specs if patching_specs is not None else []:
            final = spec
            if spec.orig_op is None:
                final = dataclasses.replace(spec, orig_op=getattr(spec.o, spec.name))
            self._patching_specs.append(final)

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_model_config(cls, config: PretrainedConfig, task: str = "default") -> OnnxConfig:
        """Config for `task` ("default", "sequence-classification", ...) of the model `config` describes."""
        return cls(config, task=task)

    @classmethod
    def for_feature(cls, config: PretrainedConfig, feature: str) -> OnnxConfig:
        """Config for a feature name as the command line spells it (``causal-lm-with-past`` included)."""
        supported = cls.supported_features(str(getattr(config, "model_type", "")))
        if feature not in supported:
            raise UnsupportedFeatureError(
                f"{cls.__name__} does not support feature {feature!r}; supported: {', '.join(supported)}"
            )
        if is_with_past(feature):
            return cls.with_past(config, task=feature_to_task(feature))  # type: ignore[attr-defined]
        return cls.from_model_config(config, task=feature)

    # -- what the model takes and returns ------------------------------------------------------------------
    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        """Ordered input names with their dynamic axes; subclasses declare them."""
        raise TypeError(f"{type(self).__name__} must define `inputs` (an ordered mapping of input name -> axes)")

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        """Ordered output names with their dynamic axes, from the task."""
        return copy.deepcopy(self._tasks_to_common_outputs[self.task])

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        """Model config values to force while exporting (`use_cache` off for models without past)."""
        if hasattr(self._config, "use_cache"):
            return {"use_cache": False}
        return None

    @property
    def default_batch_size(self) -> int:
        """Batch size of export dummies."""
        return self.default_fixed_batch

    @property
    def default_sequence_length(self) -> int:
        """Sequence length of export dummies, special tokens included."""
        return self.default_fixed_sequence

    @property
    def default_num_choices(self) -> int:
        """Number of choices of multiple-choice export dummies."""
        return self.default_fixed_num_choices

    @property
    def default_onnx_opset(self) -> int:
        """ONNX opset used when the caller names none."""
        return self.default_opset

    @property
    def atol_for_validation(self) -> float:
        """Absolute tolerance used by validation unless the caller states another."""
        return self.atol

    @property
    def is_torch_support_available(self) -> bool:
        """Kept for old scripts: torch support is always available (exporter requires torch 2)."""
        return True

    @property
    def model_config(self) -> PretrainedConfig:
        """The Transformers config this export config was built from."""
        return self._config

    @property
    def model_view(self) -> ModelConfigView:
        """The normalised view of the model config (sizes and special ids under their many names)."""
        return ModelConfigView(self._config)

    @staticmethod
    def use_external_data_format(num_parameters: int) -> bool:
        """True when fp32 weights of `num_parameters` reach the 2 GiB protobuf limit."""
        return num_parameters * 4 >= EXTERNAL_DATA_FORMAT_SIZE_LIMIT

    # -- inputs -------------------------------------------------------------------------------------------
    def generate_dummy_inputs(
        self,
        preprocessor: Any = None,
        batch_size: int = -1,
        seq_length: int = -1,
        num_choices: int = -1,
        is_pair: bool = False,
        framework: Any = None,
        num_channels: int = 3,
        image_width: int = 40,
        image_height: int = 40,
        sampling_rate: int = 22050,
        time_duration: float = 5.0,
        frequency: int = 220,
        tokenizer: Any = None,
        *,
        padded: bool = False,
        seed: int = 0,
    ) -> OrderedDict[str, Any]:
        """Inputs in `inputs` order, from the preprocessor when given and from the model config otherwise.

        Dimensions of -1 take the defaults (batch 2, sequence 8 counting special tokens, 4 choices).
        `framework` "pt" (or None) gives torch tensors, "np" NumPy arrays. `padded` gives rows of different
        real lengths, padded on `padding_side` (validation uses it).
        """
        framework_name = getattr(framework, "value", framework)
        if framework_name not in (None, "pt", "np"):
            raise UnsupportedFrameworkError(
                f"framework {framework_name!r} is not supported: Transformers 5 has no TensorFlow; use 'pt'"
            )
        if preprocessor is None:
            preprocessor = tokenizer
        spec = dummy_inputs.DummySpec(
            batch_size=batch_size if batch_size > 0 else self.default_batch_size,
            sequence_length=seq_length if seq_length > 0 else self.default_sequence_length,
            num_choices=num_choices if num_choices > 0 else self.default_num_choices,
            is_pair=is_pair,
            padded=padded,
            padding_side=self.padding_side,
            seed=seed,
            num_channels=num_channels,
            image_height=image_height,
            image_width=image_width,
        )
        return self.ordered_inputs(self.dummy_arrays(preprocessor, spec), framework_name)

    def ordered_inputs(self, arrays: Mapping[str, np.ndarray], framework: Any = "np") -> OrderedDict[str, Any]:
        """`arrays` in `inputs` order: NumPy arrays for framework "np", torch tensors for "pt" (or None)."""
        missing = [name for name in self.inputs if name not in arrays]
        if missing:
            raise TypeError(f"{type(self).__name__}.dummy_arrays made no value for {missing}")
        ordered = OrderedDict((name, arrays[name]) for name in self.inputs)
        if getattr(framework, "value", framework) == "np":
            return ordered
        import torch

        return OrderedDict((name, torch.from_numpy(np.ascontiguousarray(value))) for name, value in ordered.items())

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        """NumPy arrays for the input names this base knows (text inputs, ``bbox``, ``pixel_values``).

        An axis named "choice" makes text inputs (batch, choice, sequence). Configs with other inputs
        override this hook.
        """
        names = list(self.inputs)
        arrays: dict[str, np.ndarray] = {}
        text_names = [n for n in names if n in dummy_inputs.TEXT_INPUTS]
        if text_names or "bbox" in names:
            tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
            with_choices = any("choice" in axes.values() for axes in self.inputs.values())
            rows = spec.batch_size * spec.num_choices if with_choices else spec.batch_size
            arrays.update(dummy_inputs.text_arrays(self._config, dummy_inputs.TEXT_INPUTS, rows, spec, tokenizer))
            if with_choices:
                shape = (spec.batch_size, spec.num_choices, spec.sequence_length)
                arrays = {name: value.reshape(shape) for name, value in arrays.items()}
            if "bbox" in names:
                arrays["bbox"] = dummy_inputs.boxes_for(arrays["input_ids"], seed=spec.seed)
        if "pixel_values" in names:
            view = self.model_view
            height, width = view.image_size or (spec.image_height, spec.image_width)
            channels = view.num_channels or spec.num_channels
            arrays["pixel_values"] = dummy_inputs.image_arrays(spec, preprocessor, height, width, channels)
        return {name: arrays[name] for name in names if name in arrays}

    def generate_reference_inputs(
        self, preprocessor: Any = None, batch_size: int = 3, seq_length: int = 9, framework: Any = "np"
    ) -> OrderedDict[str, Any]:
        """Validation inputs: another shape than the export dummies, with padding, another seed."""
        return self.generate_dummy_inputs(
            preprocessor,
            batch_size=batch_size,
            seq_length=seq_length,
            num_choices=max(2, self.default_num_choices - 1),
            framework=framework,
            padded=True,
            seed=1,
        )

    # -- how a backend calls the model --------------------------------------------------------------------
    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for ``model.forward`` from named inputs (hook for caches and renames)."""
        kwargs = dict(inputs)
        kwargs["return_dict"] = True
        if self.values_override and "use_cache" in self.values_override:
            kwargs.setdefault("use_cache", self.values_override["use_cache"])
        return kwargs

    def select_outputs(self, model_output: Any) -> tuple[Any, ...]:
        """The model's outputs as a tuple in `outputs` order (hook for nested outputs).

        With a `cache_layout`, the task's outputs come first, then the returned cache as flat ``present.*`` tensors
        (the cross-attention ones when `outputs` declares them).
        """
        from exporter_core.cache import CacheLayout

        layout = self.cache_layout
        names = [name for name in self.outputs if layout is None or not CacheLayout.is_cache_name(name)]
        values = [self.output_value(model_output, name) for name in names]
        if layout is not None:
            cross = any(CacheLayout.is_cache_name(name) and ".encoder." in name for name in self.outputs)
            values.extend(layout.flatten(model_output, cross=cross))
        return tuple(values)

    def output_value(self, model_output: Any, name: str) -> Any:
        """The output `name` of a forward's result, or an error naming it and the task."""
        try:
            return model_output[name]
        except (KeyError, TypeError) as exc:
            raise KeyError(f"the model returned no output named {name!r} for task {self.task!r}") from exc

    # -- the export plan ------------------------------------------------------------------------------------
    @property
    def feature(self) -> str:
        """The feature this config describes, as the command line spells it."""
        return self.task + ("-with-past" if getattr(self, "use_past", False) else "")

    @property
    def cache_layout(self) -> CacheLayout | None:
        """The past key values this config's graph takes or returns; None without past."""
        return None

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """Input sets the export is validated at: another shape than the export dummies, with padding."""
        from exporter_core.padding import describe_shape, static_shape_of
        from exporter_core.plan import Scenario

        inputs = self.generate_reference_inputs(preprocessor, framework="np")
        label = describe_shape(static_shape_of(inputs, self.inputs))
        if any("sequence" in axis for axes in self.inputs.values() for axis in axes.values()):
            label += ", padded rows"
        return [Scenario(label, inputs)]

    def plan_checks(self, model: Any, preprocessor: Any = None) -> list[PlanCheck]:
        """Checks over the written artifacts (generation parity, ...); none by default."""
        return []

    def export_plan(self, model: Any, preprocessor: Any = None) -> ExportPlan:
        """What every backend executes for `model`: one part (the whole model) validated at `validation_scenarios`.

        Families with several graphs (encoder-decoders with past) or checks (generation parity) override the
        hooks or this method.
        """
        from exporter_core.plan import ExportPlan, PlanPart

        part = PlanPart(
            name="model",
            artifact=None,
            config=self,
            module=model,
            scenarios=self.validation_scenarios(preprocessor),
            cache=self.cache_layout,
        )
        return ExportPlan(
            model_type=self.model_view.model_type,
            feature=self.feature,
            model=model,
            parts=[part],
            checks=self.plan_checks(model, preprocessor),
            attn_implementation=self.export_attn_implementation,
        )

    # -- old helpers ----------------------------------------------------------------------------------------
    @classmethod
    def flatten_output_collection_property(cls, name: str, field: Iterable[Any]) -> dict[str, Any]:
        """Flatten a collection output: ``name.0``, ``name.1``, ... (nested lists flattened first)."""
        from itertools import chain

        items = list(field)
        if items and isinstance(items[0], (list, tuple)):
            items = list(chain.from_iterable(items))
        return {f"{name}.{idx}": item for idx, item in enumerate(items)}

    def patch_ops(self) -> None:
        """Apply the patching specs (prefer `patched_ops()`, which always restores)."""
        for spec in self._patching_specs:
            custom = spec.custom_op if spec.op_wrapper is None else spec.op_wrapper(spec.custom_op)
            setattr(spec.o, spec.name, custom)

    def restore_ops(self) -> None:
        """Undo `patch_ops`."""
        for spec in self._patching_specs:
            orig = spec.orig_op if spec.op_wrapper is None else spec.op_wrapper(spec.orig_op)
            setattr(spec.o, spec.name, orig)

    def patched_ops(self) -> _Patched:
        """Context manager applying the patching specs and restoring them in ``finally``."""
        return _Patched(self)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Inputs and outputs axes together, as `torch.onnx.export(dynamic_axes=...)` takes them."""
        axes = {name: dict(v) for name, v in self.inputs.items()}
        axes.update({name: dict(v) for name, v in self.outputs.items()})
        return axes

    def check_opset(self, opset: int) -> None:
        """Refuse an opset below the architecture's minimum, naming the minimum."""
        if not isinstance(opset, int) or isinstance(opset, bool):
            raise InvalidArgumentError(f"opset must be an integer, got {opset!r}")
        if opset < self.min_onnx_opset:
            from exporter_core.errors import option_hint

            raise _opset_error(
                f"opset {opset} is too low for {type(self).__name__}: it needs at least {self.min_onnx_opset} "
                f"({self.min_onnx_opset_reason}); pass {option_hint('opset', self.min_onnx_opset)} or higher"
            )


def _opset_error(message: str) -> Exception:
    from exporter_core.errors import OpsetError

    return OpsetError(message)


class _Patched:
    def __init__(self, config: OnnxConfig) -> None:
        self._config = config

    def __enter__(self) -> OnnxConfig:
        self._config.patch_ops()
        return self._config

    def __exit__(self, *exc: object) -> None:
        self._config.restore_ops()


class TextEncoderOnnxConfig(OnnxConfig):
    """Encoder-only text models: a declared list of text inputs, (batch, choice, sequence) for multiple-choice."""

    features: ClassVar[tuple[str, ...]] = (
        "default",
        "masked-lm",
        "causal-lm",
        "sequence-classification",
        "multiple-choice",
        "token-classification",
        "question-answering",
    )
    #: Text inputs in forward order, a subset of input_ids, attention_mask, token_type_ids (+ extras).
    input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "token_type_ids")

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        if self.task == "multiple-choice":
            axes = {0: "batch", 1: "choice", 2: "sequence"}
        else:
            axes = {0: "batch", 1: "sequence"}
        return OrderedDict((name, dict(axes)) for name in self.input_names)


class OnnxConfigWithPast(OnnxConfig):
    """Base config for decoders that can take and return past key values."""

    def __init__(
        self,
        config: PretrainedConfig,
        task: str = "default",
        patching_specs: list[PatchingSpec] | None = None,
        use_past: bool = False,
    ) -> None:
        super().__init__(config, task=task, patching_specs=patching_specs)
        self.use_past = use_past

    @classmethod
    def with_past(cls, config: PretrainedConfig, task: str = "default") -> OnnxConfigWithPast:
        """Config for `task` with past key values as inputs and outputs."""
        return cls(config, task=task, use_past=True)

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        if hasattr(self._config, "use_cache"):
            return {"use_cache": self.use_past}
        return None

    @property
    def num_layers(self) -> int:
        """Number of decoder layers (from the model config)."""
        return self.model_view.num_layers

    @property
    def num_attention_heads(self) -> int:
        """Number of attention heads (from the model config)."""
        return self.model_view.num_attention_heads

    def fill_with_past_key_values_(
        self,
        inputs_or_outputs: MutableMapping[str, Any],
        direction: str,
        inverted_values_shape: bool = False,
    ) -> None:
        """Add ``past_key_values.{i}.key|value`` (inputs) or ``present.{i}.key|value`` (outputs) entries."""
        from exporter_core.cache import CacheLayout

        if direction not in ("inputs", "outputs"):
            raise ValueError(f'direction must either be "inputs" or "outputs", but {direction} was given')
        layout = CacheLayout.uniform(self.num_layers, self.num_attention_heads, 1)
        entries = layout.past_inputs() if direction == "inputs" else layout.present_outputs()
        for name, axes in entries.items():
            if direction == "inputs":
                # The old exporter declared inputs over past + sequence too.
                axes = {0: "batch", 2: layout.total_axis}
            if inverted_values_shape and name.endswith(".value"):
                axes = {0: axes[0], 1: axes[2]}
            inputs_or_outputs[name] = axes


class OnnxSeq2SeqConfigWithPast(OnnxConfigWithPast):
    """Base config for encoder-decoder models; layer and head counts are (encoder, decoder) pairs."""

    @property
    def num_layers(self) -> tuple[int, int]:  # type: ignore[override]
        view = self.model_view
        return view.encoder_layers, view.decoder_layers

    @property
    def num_attention_heads(self) -> tuple[int, int]:  # type: ignore[override]
        view = self.model_view
        return view.encoder_attention_heads, view.decoder_attention_heads

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        common = OrderedDict((name, dict(axes)) for name, axes in super().outputs.items())
        for name, axes in common.items():
            sequence_name = "encoder_sequence" if "encoder" in name else "decoder_sequence"
            for idx, axis in list(axes.items()):
                if axis == "sequence":
                    axes[idx] = sequence_name
        return common

    def fill_with_past_key_values_(
        self,
        inputs_or_outputs: MutableMapping[str, Any],
        direction: str,
        inverted_values_shape: bool = False,
    ) -> None:
        from exporter_core.cache import CacheLayout

        if direction not in ("inputs", "outputs"):
            raise ValueError(f'direction must either be "inputs" or "outputs", but {direction} was given')
        _, decoder_layers = self.num_layers
        layout = CacheLayout.uniform(decoder_layers, 1, 1, cross_attention=True)
        entries = layout.past_inputs() if direction == "inputs" else layout.present_outputs()
        for name in entries:
            # The old exporter named the decoder axis the same way in both directions.
            axis = "past_encoder_sequence" if ".encoder." in name else "past_decoder_sequence"
            inputs_or_outputs[name] = {0: "batch", 2: axis}
