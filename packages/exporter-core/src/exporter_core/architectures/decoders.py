"""Decoder-only text models (GPT-2, GPT-Neo, GPT-J, and the decoder half of the BART family) with past key values.

With past, the inputs are ``input_ids``, ``past_key_values.{i}.key|value`` (batch, heads, past_sequence,
head_dim) and ``attention_mask`` over past + sequence; the outputs add ``present.{i}.key|value`` (batch, heads,
past_sequence + sequence, head_dim). Transformers 5 models take and return cache objects: `model_kwargs` fills a
`DynamicCache` from the flat tensors and `select_outputs` flattens the returned cache, so the exported graph and
the PyTorch reference both see plain tensors.

Decoders pad on the left. Position ids are computed from the attention mask inside the graph, the way
``model.generate`` computes them (``cumsum(mask) - 1``, 0 on padding), so a left-padded row gives the same
numbers as the same row unpadded and an exported decoder generates what ``generate`` does. Architectures whose
forward takes no position ids (the BART family) count positions from the past length, as ``generate`` does for
them.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.cache import CacheLayout, returned_cache
from exporter_core.config import OnnxConfig, OnnxConfigWithPast, PatchingSpec
from exporter_core.errors import UnsupportedFeatureError
from exporter_core.model_config import ModelConfigView
from exporter_core.tasks import feature_to_task

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.plan import PlanCheck, Scenario

__all__ = [
    "PAST_AXIS",
    "TOTAL_AXIS",
    "BartDecoderOnnxConfig",
    "CausalLMFromDecoderMixin",
    "DecoderOnnxConfig",
    "GPT2OnnxConfig",
    "GPTJOnnxConfig",
    "GPTNeoOnnxConfig",
    "PastScenario",
    "cache_keyword",
    "returned_cache",
]

#: Axis names of the with-past inputs and outputs.
PAST_AXIS = "past_sequence"
TOTAL_AXIS = "past_sequence + sequence"

_BASE_FEATURES = ("default", "default-with-past", "causal-lm", "causal-lm-with-past")


class PastScenario(NamedTuple):
    """One shape a with-past export is validated at."""

    #: What the scenario exercises.
    label: str
    batch_size: int
    #: New tokens per row.
    sequence_length: int
    #: Cached tokens per row (0: an empty past).
    past_length: int
    #: Rows of different real lengths, padded on the left over past + sequence.
    padded: bool = True


@functools.cache
def _cache_keyword_for(config_type: Any) -> str:
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        model_class: Any = MODEL_MAPPING[config_type]
    except (KeyError, ValueError):
        return "past_key_values"
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_keyword(model_config: Any) -> str:
    """The forward keyword that takes a cache: ``cache`` in recent Transformers 5, ``past_key_values`` before."""
    config_type: Any = type(model_config)
    return _cache_keyword_for(config_type)


class DecoderOnnxConfig(OnnxConfigWithPast):
    """Base of decoder-only configs: ``input_ids`` and ``attention_mask``, plus past key values with past."""

    features: ClassVar[tuple[str, ...]] = _BASE_FEATURES
    padding_side: ClassVar[str] = "left"
    #: True when the forward takes ``position_ids``: they are then computed from the attention mask.
    position_ids_from_mask: ClassVar[bool] = True
    #: Past length of the export dummies is their sequence length plus this (the old exporter's choice).
    past_length_offset: ClassVar[int] = 2

    def __init__(
        self,
        config: PretrainedConfig,
        task: str = "default",
        patching_specs: list[PatchingSpec] | None = None,
        use_past: bool = False,
    ) -> None:
        super().__init__(config, task=task, patching_specs=patching_specs, use_past=use_past)
        if task == "sequence-classification" and ModelConfigView(config).pad_token_id is None:
            raise UnsupportedFeatureError(
                f"{config.model_type} sequence-classification pools each row's last token that is not padding, and "
                "the model config sets no pad_token_id; set pad_token_id in config.json (for example to the "
                "tokenizer's pad or eos token id) and export again"
            )

    # -- sizes --------------------------------------------------------------------------------------------
    @property
    def num_key_value_heads(self) -> int:
        """Heads of the cached keys and values (axis 1 of a past tensor)."""
        return self.model_view.num_key_value_heads

    @property
    def head_dim(self) -> int:
        """Size of one head (axis 3 of a past tensor)."""
        return self.model_view.head_dim

    @property
    def cache_layout(self) -> CacheLayout | None:
        """Past key values of every layer; None without past."""
        if not self.use_past:
            return None
        return CacheLayout.uniform(self.num_layers, self.num_key_value_heads, self.head_dim)

    # -- inputs and outputs -------------------------------------------------------------------------------
    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        common: OrderedDict[str, Mapping[int, str]] = OrderedDict(input_ids={0: "batch", 1: "sequence"})
        layout = self.cache_layout
        if layout is not None:
            common.update(layout.past_inputs())
            common["attention_mask"] = {0: "batch", 1: layout.total_axis}
        else:
            common["attention_mask"] = {0: "batch", 1: "sequence"}
        return common

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        common = OrderedDict((name, dict(axes)) for name, axes in super().outputs.items())
        layout = self.cache_layout
        if layout is not None:
            common.update(layout.present_outputs())
        return common

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        # Without past the model must not build and return a cache (the outputs would grow a tuple).
        return {"use_cache": self.use_past}

    # -- dummy and reference inputs -------------------------------------------------------------------------
    def dummy_arrays(
        self, preprocessor: Any, spec: dummy_inputs.DummySpec, *, past_length: int | None = None
    ) -> dict[str, np.ndarray]:
        """Text inputs, and with past random key/value tensors and a mask over past + sequence."""
        tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
        if not self.use_past:
            return dummy_inputs.text_arrays(
                self._config, ["input_ids", "attention_mask"], spec.batch_size, spec, tokenizer
            )
        past = spec.sequence_length + self.past_length_offset if past_length is None else past_length
        total = past + spec.sequence_length
        unpadded = dummy_inputs.DummySpec(
            batch_size=spec.batch_size,
            sequence_length=spec.sequence_length,
            padding_side=self.padding_side,
            seed=spec.seed,
        )
        arrays = dummy_inputs.text_arrays(self._config, ["input_ids"], spec.batch_size, unpadded, tokenizer)
        mask = dummy_inputs.padding_mask(dummy_inputs.row_lengths(spec.batch_size, total, spec.padded), total, "left")
        pad_id = ModelConfigView(self._config, tokenizer=tokenizer).pad_token_id_or(0)
        arrays["input_ids"] = np.where(mask[:, past:] == 1, arrays["input_ids"], pad_id)
        layout = self.cache_layout
        assert layout is not None  # use_past
        arrays.update(layout.past_arrays(spec.batch_size, past, seed=spec.seed))
        arrays["attention_mask"] = mask
        return arrays

    def generate_past_inputs(
        self,
        preprocessor: Any = None,
        *,
        batch_size: int,
        seq_length: int,
        past_length: int,
        padded: bool = True,
        seed: int = 1,
        framework: Any = "np",
    ) -> OrderedDict[str, Any]:
        """Inputs at an explicit past length (0 for an empty past), left-padded over past + sequence when `padded`."""
        if not self.use_past:
            raise TypeError(f"{type(self).__name__} was built without past; use generate_dummy_inputs")
        spec = dummy_inputs.DummySpec(
            batch_size=batch_size, sequence_length=seq_length, padded=padded, padding_side=self.padding_side, seed=seed
        )
        return self.ordered_inputs(self.dummy_arrays(preprocessor, spec, past_length=past_length), framework)

    def past_scenarios(self) -> list[PastScenario]:
        """Shapes every with-past export is validated at, none of them the traced one (batch 2, sequence 8, past 10)."""
        return [
            PastScenario("empty past (prompt), left padding", 4, 7, 0),
            PastScenario("one new token, batch 1", 1, 1, 5, padded=False),
            PastScenario("padding reaching into the new tokens", 2, 3, 2),
        ]

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """The standard reference inputs, then with past every `past_scenarios` shape."""
        from exporter_core.plan import Scenario

        first = self.generate_reference_inputs(preprocessor, framework="np")
        label = "batch 3, sequence 9, past 11, left padding" if self.use_past else "batch 3, sequence 9, left padding"
        scenarios = [Scenario(label, first)]
        if self.use_past:
            for shape in self.past_scenarios():
                inputs = self.generate_past_inputs(
                    preprocessor,
                    batch_size=shape.batch_size,
                    seq_length=shape.sequence_length,
                    past_length=shape.past_length,
                    padded=shape.padded,
                )
                scenarios.append(Scenario(shape.label, inputs))
        return scenarios

    def plan_checks(self, model: Any, preprocessor: Any = None) -> list[PlanCheck]:
        """Generation parity for a causal LM with past: greedy decoding with the export equals ``model.generate``."""
        from exporter_core.plan import PlanCheck

        if not (self.use_past and self.task == "causal-lm"):
            return []

        def parity(runners: Mapping[str, Any]) -> Any:
            from exporter_core.generation import causal_lm_parity

            return causal_lm_parity(model, self, runners["model"], preprocessor)

        return [PlanCheck("generation parity", parity, exact=True)]

    # -- how the model is called ----------------------------------------------------------------------------
    def make_cache(self) -> Any:
        """An empty cache shaped like the one ``generate`` would build for this model."""
        layout = self.cache_layout or CacheLayout.uniform(self.num_layers, self.num_key_value_heads, self.head_dim)
        return layout.to_cache(None, self._config)

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {name: value for name, value in inputs.items() if not CacheLayout.is_cache_name(name)}
        kwargs["return_dict"] = True
        kwargs["use_cache"] = self.use_past
        layout = self.cache_layout
        if layout is not None:
            kwargs[cache_keyword(self._config)] = layout.to_cache(inputs, self._config)
        mask = inputs.get("attention_mask")
        if self.position_ids_from_mask and mask is not None:
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            kwargs["position_ids"] = positions[:, mask.shape[1] - inputs["input_ids"].shape[1] :]
        return kwargs


class GPT2OnnxConfig(DecoderOnnxConfig):
    """GPT-2."""

    features = (*_BASE_FEATURES, "sequence-classification", "token-classification")

    tiny_config = {
        "vocab_size": 99,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": 37,
        "n_positions": 64,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
    }


class GPTNeoOnnxConfig(DecoderOnnxConfig):
    """GPT-Neo (global and local attention layers; local ones see a window of past tokens)."""

    features = (*_BASE_FEATURES, "sequence-classification")

    tiny_config = {
        "vocab_size": 99,
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 37,
        "max_position_embeddings": 64,
        "attention_types": [[["global", "local"], 1]],
        "window_size": 8,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 1,
    }


class GPTJOnnxConfig(DecoderOnnxConfig):
    """GPT-J (rotary position embeddings over the first ``rotary_dim`` channels of each head)."""

    features = (*_BASE_FEATURES, "question-answering", "sequence-classification")

    tiny_config = {
        "vocab_size": 99,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": 37,
        "n_positions": 64,
        "rotary_dim": 4,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 1,
    }


class BartDecoderOnnxConfig(DecoderOnnxConfig):
    """The decoder of a BART-family model used alone (``BartForCausalLM`` and its relatives)."""

    features = ("causal-lm", "causal-lm-with-past")
    position_ids_from_mask = False

    @property
    def num_layers(self) -> int:
        return self.model_view.decoder_layers

    @property
    def num_attention_heads(self) -> int:
        return self.model_view.decoder_attention_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.model_view.decoder_attention_heads

    @property
    def head_dim(self) -> int:
        return self.model_view.decoder_head_dim


class CausalLMFromDecoderMixin:
    """For encoder-decoder configs: ``causal-lm`` and ``causal-lm-with-past`` are served by a decoder-only config.

    Put it first among the bases of a seq2seq config and set `causal_lm_config`; `for_feature` then returns that
    config for the causal-lm features (the model is then e.g. ``BartForCausalLM``: a decoder without encoder).
    """

    #: Decoder-only config used for causal-lm features.
    causal_lm_config: ClassVar[type[DecoderOnnxConfig]] = BartDecoderOnnxConfig

    @classmethod
    def for_feature(cls, config: PretrainedConfig, feature: str) -> OnnxConfig:
        """The decoder-only config for causal-lm features, the class's own otherwise."""
        if feature_to_task(feature) == "causal-lm" and feature in getattr(cls, "features", ()):
            return cls.causal_lm_config.for_feature(config, feature)
        return super().for_feature(config, feature)  # type: ignore[misc]
