"""The graphs a runtime drives for an encoder-decoder exported with past: one part config per graph.

- `Seq2SeqEncoderOnnxConfig` (``encoder_model.onnx``): ``input_ids``, ``attention_mask`` -> ``last_hidden_state``;
- `Seq2SeqDecoderOnnxConfig` without past (``decoder_model.onnx``, the first step) and with past
  (``decoder_with_past_model.onnx``, every later step).

Sizes, opsets and tolerance come from the architecture config they are made from (`parent`, a
`exporter_core.architectures.seq2seq.Seq2SeqOnnxConfig`); `exporter_core.architectures.seq2seq` re-exports every
public name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.architectures.decoders import cache_keyword
from exporter_core.cache import PAST_PREFIX, CacheLayout
from exporter_core.config import OnnxConfig
from exporter_core.tasks import COMMON_OUTPUTS

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.architectures.seq2seq import Seq2SeqOnnxConfig
    from exporter_core.plan import Scenario

__all__ = [
    "DECODER_AXIS",
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_AXIS",
    "ENCODER_FILE",
    "PAST_DECODER_AXIS",
    "TOTAL_DECODER_AXIS",
    "Seq2SeqDecoderOnnxConfig",
    "Seq2SeqEncoderOnnxConfig",
    "decoder_sized",
]

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"

ENCODER_AXIS = "encoder_sequence"
DECODER_AXIS = "decoder_sequence"
PAST_DECODER_AXIS = "past_decoder_sequence"
TOTAL_DECODER_AXIS = "past_decoder_sequence + decoder_sequence"


def decoder_sized(task: str) -> OrderedDict[str, dict[int, str]]:
    """The task's outputs with their sequence axes renamed to the decoder's."""
    outputs = OrderedDict((name, dict(axes)) for name, axes in COMMON_OUTPUTS[task].items())
    for axes in outputs.values():
        for index, axis in list(axes.items()):
            if axis == "sequence":
                axes[index] = DECODER_AXIS
    return outputs


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

    def patched_ops(self) -> Any:
        """The parent's patches (a model's experts made dense, say), applied while this part is captured."""
        return self.parent.patched_ops()


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
        common = decoder_sized(self.task)
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
        hidden = inputs.get("encoder_hidden_states")
        if hidden is None:
            # With past, cross-attention reads its cached keys and values; the model still wants an encoder
            # output (for its shape only).
            key = inputs[next(n for n in self.parent.layout.names(PAST_PREFIX) if ".encoder." in n)]
            hidden = key.new_zeros((key.shape[0], key.shape[2], self.parent.hidden_size))
        return {
            # The encoder is not run (its output is given): no encoder ids. Passed as None rather than left out,
            # since some forwards (FSMTModel's) take input_ids as a required argument.
            "input_ids": None,
            "decoder_input_ids": inputs["input_ids"],
            "attention_mask": inputs["encoder_attention_mask"],
            "encoder_outputs": self.parent.encoder_output(hidden),
            cache_keyword(self._config): self.parent.make_cache(inputs if self.use_past else None),
            "use_cache": True,
            "return_dict": True,
        }

    @staticmethod
    def module_of(model: Any) -> Any:
        """The torch module this part's hooks call: the whole model."""
        return model
