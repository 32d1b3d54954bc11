"""Encoder-decoder text models: the BART family, Blenderbot, Marian, M2M-100 and T5.

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
from exporter_core.cache import PAST_PREFIX, CacheLayout
from exporter_core.config import OnnxConfig, OnnxSeq2SeqConfigWithPast
from exporter_core.model_config import ModelConfigView
from exporter_core.tasks import COMMON_OUTPUTS

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.plan import ExportPlan, PlanCheck, Scenario

__all__ = [
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_FILE",
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
    "Seq2SeqOnnxConfig",
    "T5OnnxConfig",
]

#: Files of a with-past encoder-decoder export (the names ONNX Runtime users know).
ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"

ENCODER_AXIS = "encoder_sequence"
DECODER_AXIS = "decoder_sequence"
PAST_DECODER_AXIS = "past_decoder_sequence"
TOTAL_DECODER_AXIS = "past_decoder_sequence + decoder_sequence"

_SEQ2SEQ_FEATURES = ("default", "default-with-past", "seq2seq-lm", "seq2seq-lm-with-past")
_CAUSAL_FEATURES = ("causal-lm", "causal-lm-with-past")
_HEAD_FEATURES = ("sequence-classification", "question-answering")
#: Tasks whose model has a decoder a runtime drives token by token.
_DECODING_TASKS = ("default", "seq2seq-lm")


def _decoder_sized(task: str) -> OrderedDict[str, dict[int, str]]:
    """The task's outputs with their sequence axes renamed to the decoder's."""
    outputs = OrderedDict((name, dict(axes)) for name, axes in COMMON_OUTPUTS[task].items())
    for axes in outputs.values():
        for index, axis in list(axes.items()):
            if axis == "sequence":
                axes[index] = DECODER_AXIS
    return outputs


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
        common = _decoder_sized(self.task)
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
        """``input_ids`` and ``attention_mask`` of `spec`'s shape (from the tokenizer when there is one)."""
        tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
        return dummy_inputs.text_arrays(self._config, ["input_ids", "attention_mask"], spec.batch_size, spec, tokenizer)

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

    def plan_checks(self, model: Any, preprocessor: Any = None) -> list[PlanCheck]:
        """Generation parity over the three graphs for ``seq2seq-lm-with-past``."""
        from exporter_core.plan import PlanCheck

        if not (self.use_past and self.task == "seq2seq-lm"):
            return []

        def parity(runners: Mapping[str, Any]) -> Any:
            from exporter_core.generation import seq2seq_parity

            return seq2seq_parity(model, self, runners, preprocessor)

        return [PlanCheck("generation parity", parity)]

    # -- the graphs a runtime drives ----------------------------------------------------------------------
    def encoder_config(self) -> Seq2SeqEncoderOnnxConfig:
        """The part config of the encoder alone (``encoder_model.onnx``)."""
        return Seq2SeqEncoderOnnxConfig(self)

    def decoder_config(self, *, with_past: bool) -> Seq2SeqDecoderOnnxConfig:
        """The part config of one decoder step: the first (no past) or a later one (with past)."""
        if not self.is_decoding_task:
            raise TypeError(f"task {self.task!r} has no decoder a runtime drives; only default and seq2seq-lm do")
        return Seq2SeqDecoderOnnxConfig(self, with_past=with_past)


class _PartConfig(OnnxConfig):
    """A config describing one graph of an encoder-decoder export; sizes, opsets and tolerance come from `parent`."""

    def __init__(self, parent: Seq2SeqOnnxConfig, task: str) -> None:
        super().__init__(parent.model_config, task=task)
        self.parent = parent

    @property
    def default_onnx_opset(self) -> int:
        return self.parent.default_onnx_opset

    @property
    def atol_for_validation(self) -> float:
        return self.parent.atol_for_validation

    def check_opset(self, opset: int) -> None:
        self.parent.check_opset(opset)


class Seq2SeqEncoderOnnxConfig(_PartConfig):
    """The encoder alone: ``input_ids``, ``attention_mask`` -> ``last_hidden_state`` (``encoder_model.onnx``).

    Its module is the model's encoder (`module_of`).
    """

    def __init__(self, parent: Seq2SeqOnnxConfig) -> None:
        super().__init__(parent, task="default")

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict(input_ids={0: "batch", 1: ENCODER_AXIS}, attention_mask={0: "batch", 1: ENCODER_AXIS})

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict(last_hidden_state={0: "batch", 1: ENCODER_AXIS})

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        return None

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        return self.parent.encoder_arrays(preprocessor, spec)

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {**inputs, "return_dict": True}

    @staticmethod
    def module_of(model: Any) -> Any:
        """The torch module this part's hooks call: the encoder of `model`."""
        return model.get_encoder()


class Seq2SeqDecoderOnnxConfig(_PartConfig):
    """One decoder step over a given encoder output (``decoder_model.onnx`` / ``decoder_with_past_model.onnx``).

    Its module is the whole model, called with ``encoder_outputs`` so that the encoder is not run again.
    """

    def __init__(self, parent: Seq2SeqOnnxConfig, *, with_past: bool) -> None:
        super().__init__(parent, task=parent.task)
        self.use_past = with_past

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        common: OrderedDict[str, Mapping[int, str]] = OrderedDict(
            input_ids={0: "batch", 1: DECODER_AXIS}, encoder_attention_mask={0: "batch", 1: ENCODER_AXIS}
        )
        if self.use_past:
            common.update(self.parent.layout.past_inputs())
        else:
            common["encoder_hidden_states"] = {0: "batch", 1: ENCODER_AXIS}
        return common

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        common = _decoder_sized(self.task)
        # With past the encoder keys and values never change: only the decoder's are returned.
        common.update(self.parent.layout.present_outputs(cross=not self.use_past, with_past=self.use_past))
        return common

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        return {"use_cache": True}

    @property
    def cache_layout(self) -> CacheLayout | None:
        """The decoder's cache: returned by both steps, taken by the step with past."""
        return self.parent.layout

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """The reference inputs, then other batch sizes, decoder lengths and past lengths (an empty past included)."""
        from exporter_core.plan import Scenario

        scenarios = [
            Scenario("batch 3, encoder 9 padded, 1 decoder token", self.generate_reference_inputs(preprocessor))
        ]
        if self.use_past:
            shapes: list[tuple[str, dict[str, Any]]] = [
                (
                    "batch 1, 1 token over a past of 1",
                    dict(batch_size=1, encoder_length=5, decoder_length=1, past_length=1, padded=False),
                ),
                (
                    "batch 4, 3 tokens over a past of 23, padded encoder",
                    dict(batch_size=4, encoder_length=12, decoder_length=3, past_length=23),
                ),
                ("batch 2, empty past", dict(batch_size=2, encoder_length=7, decoder_length=2, past_length=0)),
            ]
        else:
            shapes = [
                (
                    "batch 1, 7 decoder tokens over 4 encoder tokens",
                    dict(batch_size=1, encoder_length=4, decoder_length=7, padded=False),
                )
            ]
        for label, shape in shapes:
            scenarios.append(Scenario(label, self.generate_inputs(preprocessor, seed=7, framework="np", **shape)))
        return scenarios

    def dummy_arrays(
        self,
        preprocessor: Any,
        spec: dummy_inputs.DummySpec,
        *,
        decoder_length: int | None = None,
        past_length: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Decoder ids, an encoder mask (right-padded when `spec.padded`), and an encoder output or past tensors."""
        parent = self.parent
        if decoder_length is None:
            decoder_length = (
                parent.traced_new_tokens
                if self.use_past
                else max(2, spec.sequence_length - parent.decoder_length_offset)
            )
        if past_length is None:
            past_length = spec.sequence_length + parent.past_length_offset
        encoder_length = spec.sequence_length
        mask = dummy_inputs.padding_mask(
            dummy_inputs.row_lengths(spec.batch_size, encoder_length, spec.padded), encoder_length, "right"
        )
        arrays = {
            "input_ids": parent.decoder_ids(spec.batch_size, decoder_length, spec.seed, starts=not self.use_past),
            "encoder_attention_mask": mask,
        }
        if self.use_past:
            arrays.update(parent.past_arrays(spec.batch_size, past_length, encoder_length, spec.seed))
        else:
            rng = np.random.default_rng(spec.seed + 2000)
            shape = (spec.batch_size, encoder_length, parent.hidden_size)
            arrays["encoder_hidden_states"] = rng.standard_normal(shape).astype(np.float32)
        return arrays

    def generate_inputs(
        self,
        preprocessor: Any = None,
        *,
        batch_size: int,
        encoder_length: int,
        decoder_length: int,
        past_length: int = 0,
        padded: bool = True,
        seed: int = 1,
        framework: Any = "np",
    ) -> OrderedDict[str, Any]:
        """Inputs at explicit lengths (`past_length` 0: an empty past), the encoder mask right-padded when `padded`."""
        spec = dummy_inputs.DummySpec(batch_size=batch_size, sequence_length=encoder_length, padded=padded, seed=seed)
        arrays = self.dummy_arrays(preprocessor, spec, decoder_length=decoder_length, past_length=past_length)
        return self.ordered_inputs(arrays, framework)

    def generate_reference_inputs(
        self, preprocessor: Any = None, batch_size: int = 3, seq_length: int = 9, framework: Any = "np"
    ) -> OrderedDict[str, Any]:
        """Batch 3, encoder 9 with padding, one decoder token (as in generation); with past a past of 4 (traced: 11)."""
        return self.generate_inputs(
            preprocessor,
            batch_size=batch_size,
            encoder_length=seq_length,
            decoder_length=1,
            past_length=4 if self.use_past else 0,
            framework=framework,
        )

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        from transformers.modeling_outputs import BaseModelOutput

        hidden = inputs.get("encoder_hidden_states")
        if hidden is None:
            # With past, cross-attention reads its cached keys and values; the model still wants an encoder
            # output (for its shape only).
            key = inputs[next(n for n in self.parent.layout.names(PAST_PREFIX) if ".encoder." in n)]
            hidden = key.new_zeros((key.shape[0], key.shape[2], self.parent.hidden_size))
        return {
            "decoder_input_ids": inputs["input_ids"],
            "attention_mask": inputs["encoder_attention_mask"],
            "encoder_outputs": BaseModelOutput(last_hidden_state=hidden),
            cache_keyword(self._config): self.parent.make_cache(inputs if self.use_past else None),
            "use_cache": True,
            "return_dict": True,
        }

    @staticmethod
    def module_of(model: Any) -> Any:
        """The torch module this part's hooks call: the whole model."""
        return model


class _BartFamilyOnnxConfig(CausalLMFromDecoderMixin, Seq2SeqOnnxConfig):
    """BART and its relatives: the seq2seq features, the decoder alone as a causal LM, and two heads.

    The classification head pools the last ``eos_token_id`` of every row, and refuses rows with different
    numbers of them: dummies for the heads carry exactly one, on each row's last real token.
    """

    features: ClassVar[tuple[str, ...]] = (
        _SEQ2SEQ_FEATURES[:2] + _CAUSAL_FEATURES + _SEQ2SEQ_FEATURES[2:] + _HEAD_FEATURES
    )

    def encoder_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        arrays = super().encoder_arrays(preprocessor, spec)
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
