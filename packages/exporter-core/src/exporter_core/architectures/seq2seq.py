"""Encoder-decoder text models: the BART family, Blenderbot, Marian, M2M-100, T5, and a generic family for today's.

`Seq2SeqLMOnnxConfig` serves many model types (mT5, umT5, LongT5, Pegasus, MVP, FSMT, ProphetNet, NLLB-MoE, Switch
Transformers, T5Gemma, ...), one entry point per type, as the decoder-only LLM family does: features from
Transformers' Auto mappings, tiny test sizes from the type's own config fields, per-type overrides where models
differ (T5Gemma's encoder and decoder sub-configs, ProphetNet's n-gram streams, routed experts made dense while
exporting: `exporter_core.architectures.routing`), and refusals with their reason for what no graph carries.

Without past, ``default`` and ``seq2seq-lm`` take ``input_ids`` / ``attention_mask`` (batch, encoder_sequence)
and ``decoder_input_ids`` / ``decoder_attention_mask`` (batch, decoder_sequence), as the old exporter did. The
BART family's ``sequence-classification`` and ``question-answering`` heads take the encoder inputs only (the
model shifts them right into its decoder, as it does when called without decoder inputs).

With past, a runtime drives three graphs, each described by a part config made from the architecture config:

- `Seq2SeqEncoderOnnxConfig` (``encoder_model.onnx``): ``input_ids``, ``attention_mask`` -> ``last_hidden_state``;
- `Seq2SeqDecoderOnnxConfig` without past (``decoder_model.onnx``, the first step): ``input_ids``,
  ``encoder_attention_mask``, ``encoder_hidden_states`` -> ``logits`` (or ``last_hidden_state``),
  ``present.{i}.decoder.key|value`` and ``present.{i}.encoder.key|value``;
- `Seq2SeqDecoderOnnxConfig` with past (``decoder_with_past_model.onnx``, every later step): ``input_ids``,
  ``encoder_attention_mask``, ``past_key_values.{i}.decoder.key|value`` (batch, heads, past_decoder_sequence,
  head_dim) and ``past_key_values.{i}.encoder.key|value`` (batch, heads, encoder_sequence, head_dim) ->
  ``logits`` and ``present.{i}.decoder.key|value``; the encoder keys and values never change, so they are not
  returned again.

These are the names and the split ONNX Runtime users know from Optimum. The architecture config itself, with
past, still describes the old single-graph layout (encoder inputs, decoder inputs and every past tensor in one
graph), so the old ``export()`` call keeps working. Transformers 5 takes and returns an `EncoderDecoderCache`
(self-attention and cross-attention `DynamicCache`\\ s): `model_kwargs` builds one from the flat tensors and
`select_outputs` flattens the returned one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.architectures.decoders import CausalLMFromDecoderMixin, cache_keyword
from exporter_core.architectures.routing import dense_experts_specs, routing_refusal
from exporter_core.architectures.seq2seq_parts import (
    DECODER_AXIS,
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_AXIS,
    ENCODER_FILE,
    PAST_DECODER_AXIS,
    TOTAL_DECODER_AXIS,
    Seq2SeqDecoderOnnxConfig,
    Seq2SeqEncoderOnnxConfig,
    decoder_sized,
)
from exporter_core.cache import CacheLayout
from exporter_core.config import OnnxSeq2SeqConfigWithPast, PatchingSpec
from exporter_core.errors import UnsupportedFeatureError
from exporter_core.model_config import ModelConfigView
from exporter_core.tasks import COMMON_OUTPUTS

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.plan import ExportPlan, PlanCheck

__all__ = [
    "DECODER_AXIS",
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_AXIS",
    "ENCODER_FILE",
    "PAST_DECODER_AXIS",
    "SEQ2SEQ_MAPPINGS",
    "TINY_SEQ2SEQ_FIELDS",
    "TOTAL_DECODER_AXIS",
    "BartOnnxConfig",
    "BigBirdPegasusOnnxConfig",
    "BlenderbotOnnxConfig",
    "BlenderbotSmallOnnxConfig",
    "M2M100OnnxConfig",
    "MBartOnnxConfig",
    "MarianOnnxConfig",
    "PLBartOnnxConfig",
    "Seq2SeqDecoderOnnxConfig",
    "Seq2SeqEncoderOnnxConfig",
    "Seq2SeqLMOnnxConfig",
    "Seq2SeqLMWithCausalLMOnnxConfig",
    "Seq2SeqOnnxConfig",
    "T5OnnxConfig",
]

_SEQ2SEQ_FEATURES = ("default", "default-with-past", "seq2seq-lm", "seq2seq-lm-with-past")
_CAUSAL_FEATURES = ("causal-lm", "causal-lm-with-past")
_HEAD_FEATURES = ("sequence-classification", "question-answering")
#: Tasks whose model has a decoder a runtime drives token by token.
_DECODING_TASKS = ("default", "seq2seq-lm")


class Seq2SeqOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """Base of the encoder-decoder configs: inputs, outputs and dummies for every feature, and the part configs."""

    features: ClassVar[tuple[str, ...]] = _SEQ2SEQ_FEATURES
    #: Decoder length of non-past dummies: the encoder length minus this (at least 2), so the two differ.
    decoder_length_offset: ClassVar[int] = 3
    #: New decoder tokens of with-past export dummies (2: a traced length of 1 would be specialised).
    traced_new_tokens: ClassVar[int] = 2
    #: Past decoder length of with-past export dummies: the sequence length plus this (the old exporter's 3).
    past_length_offset: ClassVar[int] = 3

    # -- sizes --------------------------------------------------------------------------------------------
    @property
    def num_decoder_layers(self) -> int:
        """Decoder layers, i.e. pairs of self-attention and cross-attention key/value tensors."""
        return self.num_layers[1]

    @property
    def num_decoder_heads(self) -> int:
        """Heads of the decoder's attentions (axis 1 of every past tensor)."""
        return self.num_attention_heads[1]

    @property
    def hidden_size(self) -> int:
        """Width of the encoder output (``d_model``)."""
        return self.model_view.hidden_size

    @property
    def head_dim(self) -> int:
        """Size of one attention head (axis 3 of every past tensor)."""
        return self.model_view.decoder_head_dim

    @property
    def decoder_vocab_size(self) -> int:
        """Vocabulary of the decoder (Marian can have its own)."""
        return self.model_view.decoder_vocab_size

    @property
    def decoder_start_token_id(self) -> int:
        """The token every decoded sequence starts with (`ModelConfigView.decoder_start_token_id`)."""
        return self.model_view.decoder_start_token_id

    @property
    def layout(self) -> CacheLayout:
        """The decoder's past key values: self-attention and cross-attention per decoder layer."""
        return CacheLayout.uniform(self.num_decoder_layers, self.num_decoder_heads, self.head_dim, cross_attention=True)

    @property
    def cache_layout(self) -> CacheLayout | None:
        """The single-graph with-past layout's cache (decoding tasks with past); None otherwise."""
        return self.layout if self.use_past and self.is_decoding_task else None

    # -- inputs and outputs -------------------------------------------------------------------------------
    @property
    def is_decoding_task(self) -> bool:
        """True for tasks whose decoder a runtime drives (default, seq2seq-lm); false for the heads."""
        return self.task in _DECODING_TASKS

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        common: OrderedDict[str, Mapping[int, str]] = OrderedDict(
            input_ids={0: "batch", 1: ENCODER_AXIS}, attention_mask={0: "batch", 1: ENCODER_AXIS}
        )
        if not self.is_decoding_task:
            return common
        common["decoder_input_ids"] = {0: "batch", 1: DECODER_AXIS}
        if self.use_past:
            common["decoder_attention_mask"] = {0: "batch", 1: TOTAL_DECODER_AXIS}
            self.fill_with_past_key_values_(common, direction="inputs")
        else:
            common["decoder_attention_mask"] = {0: "batch", 1: DECODER_AXIS}
        return common

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        if not self.is_decoding_task:
            return OrderedDict((name, dict(axes)) for name, axes in COMMON_OUTPUTS[self.task].items())
        common = decoder_sized(self.task)
        if self.use_past:
            self.fill_with_past_key_values_(common, direction="outputs")
        return common

    def fill_with_past_key_values_(
        self,
        inputs_or_outputs: MutableMapping[str, Any],
        direction: str,
        inverted_values_shape: bool = False,
    ) -> None:
        """Add ``past_key_values.{i}.decoder|encoder.key|value`` (inputs) or ``present.*`` (outputs) entries."""
        if direction not in ("inputs", "outputs"):
            raise ValueError(f'direction must either be "inputs" or "outputs", but {direction} was given')
        layout = self.layout
        inputs_or_outputs.update(layout.past_inputs() if direction == "inputs" else layout.present_outputs())

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        return {"use_cache": bool(self.use_past)}

    # -- dummy and reference inputs -------------------------------------------------------------------------
    def encoder_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask`` of `spec`'s shape (from the tokenizer when there is one).

        For the heads, each row holds exactly one ``eos_token_id``, on its last real token: classification heads pool
        the last eos of every row and refuse rows with different numbers of them (BART, T5).
        """
        tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
        arrays = dummy_inputs.text_arrays(
            self._config, ["input_ids", "attention_mask"], spec.batch_size, spec, tokenizer
        )
        eos = self.model_view.single_eos_token_id
        if self.is_decoding_task or eos is None:
            return arrays
        ids, mask = arrays["input_ids"].copy(), arrays["attention_mask"]
        counts = (ids == eos).sum(axis=1)
        if counts.min() == counts.max() and counts.min() > 0:
            return arrays
        filler = _filler_token(self.model_view, eos)
        ids[ids == eos] = filler
        last_real = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
        ids[np.arange(ids.shape[0]), last_real] = eos
        arrays["input_ids"] = ids
        return arrays

    def decoder_ids(self, rows: int, length: int, seed: int, *, starts: bool = True) -> np.ndarray:
        """Random decoder token ids (no special tokens), the first column the start token when `starts`."""
        rng = np.random.default_rng(seed + 500)
        vocab = self.decoder_vocab_size
        special = self.model_view.special_token_ids
        low = min(max(special | {2}) + 1, vocab - 1)
        ids = rng.integers(low, vocab, size=(rows, length), dtype=np.int64)
        if starts:
            ids[:, 0] = self.decoder_start_token_id
        return ids

    def past_arrays(
        self, rows: int, past_length: int, encoder_length: int, seed: int, *, cross: bool = True
    ) -> dict[str, np.ndarray]:
        """Random ``past_key_values.{i}.decoder|encoder.key|value`` tensors (normal, like projected hidden states)."""
        return self.layout.past_arrays(rows, past_length, encoder_length=encoder_length, seed=seed, cross=cross)

    def default_lengths(self, spec: dummy_inputs.DummySpec) -> tuple[int, int]:
        """(decoder length, past decoder length) of dummies of `spec` when the caller names none."""
        if self.use_past:
            return self.traced_new_tokens, spec.sequence_length + self.past_length_offset
        return max(2, spec.sequence_length - self.decoder_length_offset), 0

    def dummy_arrays(
        self,
        preprocessor: Any,
        spec: dummy_inputs.DummySpec,
        *,
        decoder_length: int | None = None,
        past_length: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Encoder inputs, plus decoder inputs (and past tensors with past) for the decoding tasks."""
        arrays = self.encoder_arrays(preprocessor, spec)
        if not self.is_decoding_task:
            return arrays
        default_decoder, default_past = self.default_lengths(spec)
        decoder_length = default_decoder if decoder_length is None else decoder_length
        past_length = default_past if past_length is None else past_length
        if self.use_past:
            arrays["decoder_input_ids"] = self.decoder_ids(spec.batch_size, decoder_length, spec.seed, starts=False)
            total = past_length + decoder_length
            arrays["decoder_attention_mask"] = np.ones((spec.batch_size, total), dtype=np.int64)
            arrays.update(self.past_arrays(spec.batch_size, past_length, spec.sequence_length, spec.seed))
        else:
            arrays["decoder_input_ids"] = self.decoder_ids(spec.batch_size, decoder_length, spec.seed)
            lengths = dummy_inputs.row_lengths(spec.batch_size, decoder_length, spec.padded)
            arrays["decoder_attention_mask"] = dummy_inputs.padding_mask(lengths, decoder_length, "right")
        return arrays

    def generate_inputs(
        self,
        preprocessor: Any = None,
        *,
        batch_size: int,
        encoder_length: int,
        decoder_length: int | None = None,
        past_length: int | None = None,
        padded: bool = True,
        seed: int = 1,
        framework: Any = "np",
    ) -> OrderedDict[str, Any]:
        """Inputs at explicit lengths (encoder rows right-padded when `padded`), in `inputs` order."""
        spec = dummy_inputs.DummySpec(
            batch_size=batch_size,
            sequence_length=encoder_length,
            padded=padded,
            padding_side=self.padding_side,
            seed=seed,
        )
        arrays = self.dummy_arrays(preprocessor, spec, decoder_length=decoder_length, past_length=past_length)
        return self.ordered_inputs(arrays, framework)

    def generate_reference_inputs(
        self, preprocessor: Any = None, batch_size: int = 3, seq_length: int = 9, framework: Any = "np"
    ) -> OrderedDict[str, Any]:
        """Batch 3, encoder 9 with padding; with past one new decoder token over a past of 4 (traced: 2 over 11)."""
        if self.use_past and self.is_decoding_task:
            return self.generate_inputs(
                preprocessor,
                batch_size=batch_size,
                encoder_length=seq_length,
                decoder_length=1,
                past_length=4,
                framework=framework,
            )
        return super().generate_reference_inputs(
            preprocessor, batch_size=batch_size, seq_length=seq_length, framework=framework
        )

    # -- how the model is called ----------------------------------------------------------------------------
    def encoder_output(self, hidden: Any) -> Any:
        """What the model takes as ``encoder_outputs`` for an encoder output `hidden` (decoder parts)."""
        from transformers.modeling_outputs import BaseModelOutput

        return BaseModelOutput(last_hidden_state=hidden)

    def make_cache(self, inputs: Mapping[str, Any] | None = None, *, cross: bool = True) -> Any:
        """An `EncoderDecoderCache` as ``generate`` builds it, filled from flat past tensors when given."""
        return self.layout.to_cache(inputs, self._config, cross=cross)

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {name: value for name, value in inputs.items() if not CacheLayout.is_cache_name(name)}
        kwargs["return_dict"] = True
        if self.is_decoding_task:
            kwargs["use_cache"] = bool(self.use_past)
            if self.use_past:
                kwargs[cache_keyword(self._config)] = self.make_cache(inputs)
        return kwargs

    # -- the export plan -----------------------------------------------------------------------------------
    def export_plan(self, model: Any, preprocessor: Any = None) -> ExportPlan:
        """With past: encoder, decoder and decoder-with-past graphs (`ENCODER_FILE`, ...); otherwise one graph."""
        from exporter_core.plan import ExportPlan, PlanPart

        if not (self.use_past and self.is_decoding_task):
            return super().export_plan(model, preprocessor)
        encoder = self.encoder_config()
        parts = [
            PlanPart(
                "encoder", ENCODER_FILE, encoder, encoder.module_of(model), encoder.validation_scenarios(preprocessor)
            )
        ]
        for name, artifact, with_past in (
            ("decoder", DECODER_FILE, False),
            ("decoder_with_past", DECODER_WITH_PAST_FILE, True),
        ):
            decoder = self.decoder_config(with_past=with_past)
            parts.append(
                PlanPart(
                    name,
                    artifact,
                    decoder,
                    decoder.module_of(model),
                    decoder.validation_scenarios(preprocessor),
                    self.layout,
                )
            )
        return ExportPlan(
            model_type=self.model_view.model_type,
            feature=self.feature,
            model=model,
            parts=parts,
            checks=self.plan_checks(model, preprocessor),
            attn_implementation=self.export_attn_implementation,
        )

    #: The task whose with-past export is checked for generation parity (speech: ``speech2seq-lm``).
    generating_task: ClassVar[str] = "seq2seq-lm"

    def plan_checks(self, model: Any, preprocessor: Any = None) -> list[PlanCheck]:
        """Generation parity over the three graphs for the generating task with past (``seq2seq-lm-with-past``)."""
        from exporter_core.plan import PlanCheck

        if not (self.use_past and self.task == self.generating_task):
            return []

        def parity(runners: Mapping[str, Any]) -> Any:
            from exporter_core.generation import seq2seq_parity

            return seq2seq_parity(model, self, runners, preprocessor)

        return [PlanCheck("generation parity", parity, exact=True)]

    # -- the graphs a runtime drives ----------------------------------------------------------------------
    def encoder_config(self) -> Seq2SeqEncoderOnnxConfig:
        """The part config of the encoder alone (``encoder_model.onnx``)."""
        return Seq2SeqEncoderOnnxConfig(self)

    def decoder_config(self, *, with_past: bool) -> Seq2SeqDecoderOnnxConfig:
        """The part config of one decoder step: the first (no past) or a later one (with past)."""
        if not self.is_decoding_task:
            raise TypeError(f"task {self.task!r} has no decoder a runtime drives; only default and seq2seq-lm do")
        return Seq2SeqDecoderOnnxConfig(self, with_past=with_past)


class _BartFamilyOnnxConfig(CausalLMFromDecoderMixin, Seq2SeqOnnxConfig):
    """BART and its relatives: the seq2seq features, the decoder alone as a causal LM, and two heads.

    The classification head pools the last ``eos_token_id`` of every row (`Seq2SeqOnnxConfig.encoder_arrays`).
    """

    features: ClassVar[tuple[str, ...]] = (
        _SEQ2SEQ_FEATURES[:2] + _CAUSAL_FEATURES + _SEQ2SEQ_FEATURES[2:] + _HEAD_FEATURES
    )


def _filler_token(view: ModelConfigView, eos: int) -> int:
    """An ordinary token to put where random ids hit `eos`: the first id above every special one."""
    return max(view.special_token_ids | {eos}) + 1


#: Tiny sizes shared by the BART-like encoder-decoders (vocabulary 99; pad 1, bos 0, eos 2, decoder start 2).
_TINY_SEQ2SEQ = {
    "vocab_size": 99,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
    "max_position_embeddings": 64,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
}


class BartOnnxConfig(_BartFamilyOnnxConfig):
    """BART."""

    tiny_config = dict(_TINY_SEQ2SEQ)


class MBartOnnxConfig(_BartFamilyOnnxConfig):
    """mBART."""

    tiny_config = dict(_TINY_SEQ2SEQ)


class PLBartOnnxConfig(_BartFamilyOnnxConfig):
    """PLBart (Transformers has no PLBart question-answering head; the old exporter listed one that never loaded)."""

    features = tuple(f for f in _BartFamilyOnnxConfig.features if f != "question-answering")

    tiny_config = dict(_TINY_SEQ2SEQ)


class BigBirdPegasusOnnxConfig(_BartFamilyOnnxConfig):
    """BigBird-Pegasus, exported with full attention in the encoder.

    A ``block_sparse`` checkpoint switches itself to ``original_full`` on inputs of at most
    ``(5 + 2 * num_random_blocks) * block_size`` tokens (704 for the released ones), as the export dummies are;
    the graph then computes full attention at every length, which block-sparse PyTorch does not do beyond that.
    """

    tiny_config = {**_TINY_SEQ2SEQ, "attention_type": "original_full"}


class BlenderbotOnnxConfig(CausalLMFromDecoderMixin, Seq2SeqOnnxConfig):
    """Blenderbot: the seq2seq features and the decoder alone as a causal LM."""

    features = _SEQ2SEQ_FEATURES[:2] + _CAUSAL_FEATURES + _SEQ2SEQ_FEATURES[2:]

    tiny_config = dict(_TINY_SEQ2SEQ)


class BlenderbotSmallOnnxConfig(BlenderbotOnnxConfig):
    """Blenderbot-small."""

    tiny_config = dict(_TINY_SEQ2SEQ)


class MarianOnnxConfig(BlenderbotOnnxConfig):
    """Marian (its decoder may have its own vocabulary, ``decoder_vocab_size``)."""

    tiny_config = {**_TINY_SEQ2SEQ, "decoder_start_token_id": 1, "decoder_vocab_size": 99}


class M2M100OnnxConfig(Seq2SeqOnnxConfig):
    """M2M-100 (positions counted from the token ids, skipping padding)."""

    tiny_config = dict(_TINY_SEQ2SEQ)


class T5OnnxConfig(Seq2SeqOnnxConfig):
    """T5 (relative position biases; captured with eager attention, which torch.export decomposes correctly)."""

    export_attn_implementation = "eager"

    tiny_config = {
        "vocab_size": 99,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


# -- today's encoder-decoders: one generic family -----------------------------------------------------------------
#: Feature -> the Auto mapping (``transformers.models.auto.modeling_auto``) listing the model types that have it.
SEQ2SEQ_MAPPINGS: Mapping[str, str] = {
    "default": "MODEL_MAPPING_NAMES",
    "seq2seq-lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "sequence-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "question-answering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
}

#: Tiny test values, each set under every one of its names the config class has as a field of its own.
TINY_SEQ2SEQ_FIELDS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("vocab_size", "src_vocab_size", "tgt_vocab_size"), 99),
    (("d_model", "hidden_size"), 32),
    (("encoder_layers", "decoder_layers", "num_layers", "num_decoder_layers", "num_encoder_layers"), 2),
    (
        (
            "encoder_attention_heads",
            "decoder_attention_heads",
            "num_heads",
            "num_encoder_attention_heads",
            "num_decoder_attention_heads",
        ),
        4,
    ),
    (("d_kv",), 8),
    (("encoder_ffn_dim", "decoder_ffn_dim", "d_ff"), 37),
    (("max_position_embeddings", "max_encoder_position_embeddings", "max_decoder_position_embeddings"), 64),
    # Routers: few experts of a capacity below the validated lengths, so that tokens overflow and are dropped.
    (("num_experts",), 4),
    (("expert_capacity",), 3),
)

#: Per model type, tiny sizes that differ from the derived ones (each with its reason).
_TINY_SEQ2SEQ_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    # Blocks of local attention and global tokens shorter than the validated inputs, so several blocks are used.
    "pegasus_x": {"block_size": 4, "num_global_tokens": 2},
    # Windows of Longformer attention shorter than the validated inputs (padded inside the model to a multiple).
    "led": {"attention_window": 4},
    # Transient-global attention (local attention plus block summaries), blocks shorter than the inputs.
    "longt5": {"encoder_attention_type": "transient-global", "local_radius": 2, "global_block_size": 3},
    # One sparse (routed) layer of two in the encoder and in the decoder.
    "nllb-moe": {"encoder_sparse_step": 2, "decoder_sparse_step": 2},
    "switch_transformers": {"num_sparse_encoder_layers": 1, "num_sparse_decoder_layers": 1},
}


#: Per model type, a validation tolerance above the default 1e-5, with the measurement behind it.
_ATOL: Mapping[str, float] = {
    # mT5's LM head is not tied to the embeddings and its logits are not rescaled: the tiny model's logits reach 28,
    # where one float32 step is 3.3e-6, and the export differs by up to 1.05e-5 (3 steps); 3e-5 is 10 steps there.
    "mt5": 3e-5,
}

#: Per model type, the ONNX opset used when none is asked for, where the default (18: torch.export) fails.
_DEFAULT_OPSET: Mapping[str, int] = {
    # torch.export cannot keep LongT5's transient-global encoder length dynamic (it guards the length to at most 64
    # and fixes it at the traced one); the TorchScript-based engine of opset 17 writes a graph validated at other
    # batches, lengths and past lengths, with generation parity.
    "longt5": 17,
}

#: Model types no export can serve faithfully, with the reason (every feature is refused before export).
_REFUSALS: Mapping[str, str] = {
    "led": (
        "its Longformer encoder pads the input to a multiple of attention_window and cuts it into overlapping chunks "
        "with sizes computed in Python from the input length, so a captured graph holds the traced length only and "
        "fails (reshape) at any other; no faithful export exists today"
    ),
    "pegasus_x": (
        "its encoder pads the input to a multiple of block_size and reshapes it into blocks with sizes computed in "
        "Python from the input length, so a captured graph holds the traced length only and fails (reshape) at any "
        "other; no faithful export exists today"
    ),
}

#: Model types whose cache no with-past graph can carry faithfully, with the reason.
_PAST_REFUSALS: Mapping[str, str] = {
    "prophetnet": (
        "its decoder caches one token per call only (Transformers refuses decoder_input_ids longer than 1 with "
        "use_cache), so a decoder graph with past cannot take the prompt or several tokens; export it without past"
    ),
}


def _derived_seq2seq_sizes(model_type: str) -> dict[str, Any]:
    from exporter_core.architectures.llm import model_config_fields

    fields = model_config_fields(model_type)
    sizes = {name: value for names, value in TINY_SEQ2SEQ_FIELDS for name in names if name in fields}
    ids = [fields.get(name) for name in ("decoder_start_token_id", "bos_token_id")]
    pad = fields.get("pad_token_id")
    if all(not isinstance(value, int) for value in ids) and isinstance(pad, int):
        # ``generate`` needs a start token: T5-like models start from the pad token (as T5's own config does).
        sizes["decoder_start_token_id"] = pad
    sizes.update(_TINY_SEQ2SEQ_OVERRIDES.get(model_type, {}))
    return sizes


class Seq2SeqLMOnnxConfig(Seq2SeqOnnxConfig):
    """A Transformers 5 text encoder-decoder; the features and tiny sizes come from its model type.

    Features: ``default`` and ``seq2seq-lm`` with and without past, and the heads the Auto mappings name for the
    type (sequence classification, question answering, token classification: encoder inputs only). Graphs are
    captured with eager attention, the implementation every one of these models has.
    """

    features: ClassVar[tuple[str, ...]] = _SEQ2SEQ_FEATURES + _HEAD_FEATURES + ("token-classification",)
    export_attn_implementation: ClassVar[str | None] = "eager"

    def __init__(
        self,
        config: PretrainedConfig,
        task: str = "default",
        patching_specs: list[PatchingSpec] | None = None,
        use_past: bool = False,
    ) -> None:
        model_type = str(getattr(config, "model_type", ""))
        reason = _REFUSALS.get(model_type) or routing_refusal(config)
        if reason is None and use_past:
            reason = _PAST_REFUSALS.get(model_type)
        if reason is not None:
            feature = task + ("-with-past" if use_past else "")
            raise UnsupportedFeatureError(f"{model_type} {feature}: {reason}")
        specs = dense_experts_specs(model_type) + list(patching_specs or [])
        super().__init__(config, task=task, patching_specs=specs, use_past=use_past)

    def encoder_output(self, hidden: Any) -> Any:
        """A mixture-of-experts model reads its encoder's router logits too: `MoEModelOutput` (with none) for it."""
        if not dense_experts_specs(self.model_view.model_type):
            return super().encoder_output(hidden)
        from transformers.modeling_outputs import MoEModelOutput

        return MoEModelOutput(last_hidden_state=hidden)

    @property
    def default_onnx_opset(self) -> int:
        """The default opset, or the model type's own where the default engine fails (`_DEFAULT_OPSET`)."""
        return _DEFAULT_OPSET.get(self.model_view.model_type, super().default_onnx_opset)

    @property
    def atol_for_validation(self) -> float:
        """The default tolerance, or the model type's measured one (`_ATOL`)."""
        return _ATOL.get(self.model_view.model_type, super().atol_for_validation)

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """`features` narrowed to those whose Auto mapping lists `model_type`."""
        from transformers.models.auto import modeling_auto

        return tuple(
            feature
            for feature in cls.features
            if model_type in getattr(modeling_auto, SEQ2SEQ_MAPPINGS[feature.removesuffix("-with-past")])
        )

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """The model type's own size fields shrunk (`TINY_SEQ2SEQ_FIELDS`), then the per-type overrides and the
        class's `tiny_config`."""
        sizes = _derived_seq2seq_sizes(model_type)
        sizes.update(cls.tiny_config)
        return sizes


class Seq2SeqLMWithCausalLMOnnxConfig(CausalLMFromDecoderMixin, Seq2SeqLMOnnxConfig):
    """A BART-like encoder-decoder (Pegasus, MVP) whose decoder alone is also a causal LM (``...ForCausalLM``)."""

    features: ClassVar[tuple[str, ...]] = Seq2SeqLMOnnxConfig.features + _CAUSAL_FEATURES


def _t5gemma_module(hidden_size: int) -> dict[str, Any]:
    """Tiny sizes of a T5Gemma encoder or decoder: grouped key/value heads, a sliding-window and a full layer."""
    return {
        "vocab_size": 99,
        "hidden_size": hidden_size,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
        "max_position_embeddings": 64,
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
    }


class T5GemmaOnnxConfig(Seq2SeqLMOnnxConfig):
    """T5Gemma: Gemma 2 layers as encoder and decoder, each with its own config (``encoder``, ``decoder``).

    The cache holds the decoder's grouped key/value heads; the encoder may be wider than the decoder (its width is
    what the decoder parts take as ``encoder_hidden_states``). Sliding-window self-attention layers keep every token
    in the exported cache and apply the window by the mask, as the decoder-only LLM family does.
    """

    # An encoder wider than the decoder, as in the unbalanced checkpoints (9B encoder, 2B decoder).
    tiny_config: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 99,
        "encoder": _t5gemma_module(48),
        "decoder": _t5gemma_module(32),
    }

    @property
    def num_layers(self) -> tuple[int, int]:  # type: ignore[override]
        return self._config.encoder.num_hidden_layers, self._config.decoder.num_hidden_layers

    @property
    def num_attention_heads(self) -> tuple[int, int]:  # type: ignore[override]
        """Key/value heads of the encoder and of the decoder (the cached heads)."""
        return self._config.encoder.num_key_value_heads, self._config.decoder.num_key_value_heads

    @property
    def hidden_size(self) -> int:
        return int(self._config.encoder.hidden_size)

    @property
    def head_dim(self) -> int:
        return int(self._config.decoder.head_dim)


class ProphetNetOnnxConfig(Seq2SeqLMOnnxConfig):
    """ProphetNet: besides the main stream, the decoder predicts ``ngram`` future tokens in streams of their own.

    Without past, the graphs return them too: ``last_hidden_state_ngram`` (``default``) or ``logits_ngram``
    (``seq2seq-lm``), (batch, ngram, decoder_sequence, ...), validated like the main stream. Transformers returns
    the hidden states' streams concatenated along the sequence, (batch, ngram * decoder_sequence, hidden); the
    graph returns them one axis per stream, like the logits, so that every axis has one meaning (a static backend
    pads and slices the decoder axis, which a concatenation of streams interleaves).
    """

    def output_value(self, model_output: Any, name: str) -> Any:
        value = super().output_value(model_output, name)
        if name == "last_hidden_state_ngram" and value.dim() == 3:  # (a wrapper may hand it on already split)
            batch, _, hidden = value.shape
            value = value.reshape(batch, self._config.ngram, -1, hidden)
        return value

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        common = OrderedDict((name, dict(axes)) for name, axes in super().outputs.items())
        if self.is_decoding_task and not self.use_past:
            main = next(iter(common))
            common[f"{main}_ngram"] = {0: "batch", 2: DECODER_AXIS}
        return common

    @property
    def num_attention_heads(self) -> tuple[int, int]:  # type: ignore[override]
        return self._config.num_encoder_attention_heads, self._config.num_decoder_attention_heads
