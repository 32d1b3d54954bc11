"""Speech encoder-decoders: Whisper, Speech2Text and Moonshine (``speech2seq-lm``, with and without past).

They are the text encoder-decoders of `exporter_core.architectures.seq2seq` with another encoder input, so they
reuse its features' layout: without past one graph (the encoder's inputs and ``decoder_input_ids`` -> ``logits``),
with past the three graphs a runtime drives, with the same names and cache layout (``encoder_model.onnx``,
``decoder_model.onnx``, ``decoder_with_past_model.onnx``; ``past_key_values.{i}.decoder|encoder.key|value``).
What differs per model is what the encoder takes and how the decoders mask the encoder's output:

- Whisper: ``input_features`` (batch, mel bins, frames), a log-mel spectrogram whose frame count the model fixes
  (twice ``max_source_positions``; the feature extractor pads shorter audio with silence). The encoder takes no mask
  and the decoders none either.
- Speech2Text: ``input_features`` (batch, frames, features), filter banks, and their ``attention_mask`` (batch,
  frames). The decoders take that frame mask as ``encoder_attention_mask``; the model subsamples it to the encoder's
  length itself.
- Moonshine: ``input_values`` (batch, samples), the raw waveform, and its ``attention_mask``. The encoder downsamples
  the mask and returns it: the encoder graph outputs it as ``encoder_attention_mask``, which the decoders take.
  ONNX refuses Moonshine (`MOONSHINE_ONNX_REFUSAL`: neither ONNX engine can write that downsampling for a dynamic
  audio length); TorchScript and Neuron trace its ``speech2seq-lm`` at one audio length.

Inputs are synthetic: a waveform per row (a few tones and a little noise, rows of different durations) through the
checkpoint's feature extractor when it has one, else through one built from the model config (the test kit saves
that one into its tiny checkpoints). A length in these configs' shape requests (``seq_length``, the validation's
``encoder_length``) counts encoder output positions: the audio is as long as that many positions need.

Whisper also serves ``audio-classification`` (its encoder with a classification head).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.architectures.decoders import cache_keyword
from exporter_core.architectures.seq2seq import (
    DECODER_AXIS,
    ENCODER_AXIS,
    Seq2SeqDecoderOnnxConfig,
    Seq2SeqEncoderOnnxConfig,
    Seq2SeqOnnxConfig,
)
from exporter_core.cache import PAST_PREFIX, CacheLayout
from exporter_core.config import PatchingSpec
from exporter_core.errors import OpsetError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.plan import ExportPlan, Scenario

__all__ = [
    "MOONSHINE_ONNX_REFUSAL",
    "SAMPLING_RATE",
    "MoonshineOnnxConfig",
    "Speech2TextOnnxConfig",
    "SpeechDecoderOnnxConfig",
    "SpeechEncoderOnnxConfig",
    "SpeechSeq2SeqOnnxConfig",
    "WhisperOnnxConfig",
    "moonshine_output_lengths",
    "synthetic_waveform",
]

#: Sampling rate of the synthetic audio (the rate of every checkpoint of these models).
SAMPLING_RATE = 16000
#: Name of the mask an encoder returns for the decoders' cross-attention (Moonshine).
ENCODER_MASK = "encoder_attention_mask"
_SPEECH_FEATURES = ("speech2seq-lm", "speech2seq-lm-with-past")


def synthetic_waveform(samples: int, seed: int, rate: int = SAMPLING_RATE) -> np.ndarray:
    """A speech-like test signal of `samples` samples: three tones (100 Hz to 1 kHz) and a little noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    time = np.arange(samples) / rate
    tones = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 1000) * time) for _ in range(3))
    return np.clip(tones + 0.02 * rng.standard_normal(samples), -1.0, 1.0).astype(np.float32)


class SpeechSeq2SeqOnnxConfig(Seq2SeqOnnxConfig):
    """Base of the speech encoder-decoders: the encoder's audio inputs, the decoders' mask, and the part configs."""

    features: ClassVar[tuple[str, ...]] = _SPEECH_FEATURES
    #: Keyword arguments of the feature extractor's call besides the audio and its rate.
    extractor_call: ClassVar[Mapping[str, Any]] = {"padding": True, "return_attention_mask": True}
    #: Axis of the decoders' ``encoder_attention_mask`` input; None when they take none (Whisper).
    decoder_mask_axis: ClassVar[str | None] = None
    #: Generation settings switched off on both sides of the parity check (`generation.parity_generation_config`).
    parity_neutral_generation: ClassVar[Mapping[str, Any]] = {}
    generating_task: ClassVar[str] = "speech2seq-lm"

    # -- what differs per model ---------------------------------------------------------------------------
    @property
    def encoder_inputs(self) -> OrderedDict[str, dict[int, str]]:
        """The encoder's inputs in forward order, with their dynamic axes."""
        raise TypeError(f"{type(self).__name__} must define `encoder_inputs`")

    def waveform_length(self, positions: int) -> int:
        """Samples of audio that give `positions` encoder output positions."""
        raise TypeError(f"{type(self).__name__} must define `waveform_length`")

    @classmethod
    def feature_extractor_from_config(cls, model_config: PretrainedConfig) -> Any:
        """A feature extractor that makes this model's inputs, sized from `model_config` (for checkpoints without)."""
        raise TypeError(f"{cls.__name__} must define `feature_extractor_from_config`")

    def decoder_mask_length(self, encoder_length: int) -> int:
        """Length of the decoders' ``encoder_attention_mask`` for an encoder output of `encoder_length` positions."""
        return encoder_length

    def decoder_cache_sizes(self) -> tuple[int, int, int]:
        """(decoder layers, heads of the cached keys and values, head size)."""
        view = self.model_view
        return view.decoder_layers, view.decoder_attention_heads, view.decoder_head_dim

    def decoder_call(self, hidden: Any, mask: Any) -> dict[str, Any]:
        """Keywords giving the whole model an encoder output `hidden` and the decoders' `mask` (None: no mask)."""
        from transformers.modeling_outputs import BaseModelOutput

        kwargs: dict[str, Any] = {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden)}
        if mask is not None:
            kwargs["attention_mask"] = mask
        return kwargs

    @property
    def encoder_outputs(self) -> OrderedDict[str, dict[int, str]]:
        """The encoder graph's outputs (the hidden states; Moonshine adds its downsampled mask)."""
        return OrderedDict(last_hidden_state={0: "batch", 1: ENCODER_AXIS})

    # -- shared -------------------------------------------------------------------------------------------
    @classmethod
    def tiny_feature_extractor(cls, model_config: PretrainedConfig) -> Any:
        """The feature extractor the test kit saves with a tiny checkpoint: the one built from its config."""
        return cls.feature_extractor_from_config(model_config)

    @property
    def is_decoding_task(self) -> bool:
        return self.task == "speech2seq-lm"

    @property
    def layout(self) -> CacheLayout:
        layers, heads, head_dim = self.decoder_cache_sizes()
        return CacheLayout.uniform(layers, heads, head_dim, cross_attention=True)

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        common: OrderedDict[str, Mapping[int, str]] = OrderedDict(self.encoder_inputs)
        if self.is_decoding_task:
            common["decoder_input_ids"] = {0: "batch", 1: DECODER_AXIS}
            if self.use_past:
                self.fill_with_past_key_values_(common, direction="inputs")
        return common

    def feature_extractor(self, preprocessor: Any) -> Any:
        """The checkpoint's feature extractor (alone or in a processor), else one built from the model config."""
        from transformers.feature_extraction_utils import FeatureExtractionMixin

        candidate = getattr(preprocessor, "feature_extractor", preprocessor)
        if isinstance(candidate, FeatureExtractionMixin):
            return candidate
        return self.feature_extractor_from_config(self._config)

    def encoder_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        """The encoder's inputs for `spec.batch_size` synthetic waveforms of `spec.sequence_length` encoder positions
        (rows of fewer positions when `spec.padded`, padded as the feature extractor pads)."""
        lengths = dummy_inputs.row_lengths(spec.batch_size, spec.sequence_length, spec.padded)
        waves = [synthetic_waveform(self.waveform_length(n), seed=spec.seed * 131 + i) for i, n in enumerate(lengths)]
        extracted = self.feature_extractor(preprocessor)(
            waves, sampling_rate=SAMPLING_RATE, return_tensors="np", **self.extractor_call
        )
        arrays = {}
        for name in self.encoder_inputs:
            value = np.asarray(extracted[name])
            arrays[name] = value.astype(np.int64 if name == "attention_mask" else np.float32)
        return arrays

    def encoder_config(self) -> SpeechEncoderOnnxConfig:
        return SpeechEncoderOnnxConfig(self)

    def decoder_config(self, *, with_past: bool) -> SpeechDecoderOnnxConfig:
        if not self.is_decoding_task:
            raise TypeError(f"task {self.task!r} has no decoder a runtime drives; only speech2seq-lm does")
        return SpeechDecoderOnnxConfig(self, with_past=with_past)


class SpeechEncoderOnnxConfig(Seq2SeqEncoderOnnxConfig):
    """The speech encoder alone (``encoder_model.onnx``): the audio inputs -> ``last_hidden_state`` (and a mask)."""

    parent: SpeechSeq2SeqOnnxConfig

    def __init__(self, parent: SpeechSeq2SeqOnnxConfig) -> None:
        super().__init__(parent)
        self._patching_specs = list(parent._patching_specs)

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return self.parent.encoder_inputs

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        return self.parent.encoder_outputs

    def output_value(self, model_output: Any, name: str) -> Any:
        if name == ENCODER_MASK:
            return model_output["attention_mask"].long()
        return super().output_value(model_output, name)

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """Batch 3 of 9 encoder positions, rows of different durations; batch 1 of 5 (traced: batch 2 of 8)."""
        from exporter_core.plan import Scenario

        reference = self.generate_reference_inputs(preprocessor, framework="np")
        single = self.generate_dummy_inputs(preprocessor, batch_size=1, seq_length=5, framework="np", seed=7)
        return [
            Scenario("batch 3, audio of 9 encoder positions, rows of different durations", reference),
            Scenario("batch 1, audio of 5 encoder positions", single),
        ]


class SpeechDecoderOnnxConfig(Seq2SeqDecoderOnnxConfig):
    """One decoder step of a speech encoder-decoder (``decoder_model.onnx`` / ``decoder_with_past_model.onnx``)."""

    parent: SpeechSeq2SeqOnnxConfig

    def __init__(self, parent: SpeechSeq2SeqOnnxConfig, *, with_past: bool) -> None:
        super().__init__(parent, with_past=with_past)
        self._patching_specs = list(parent._patching_specs)

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        common: OrderedDict[str, Mapping[int, str]] = OrderedDict(input_ids={0: "batch", 1: DECODER_AXIS})
        if self.parent.decoder_mask_axis is not None:
            common[ENCODER_MASK] = {0: "batch", 1: self.parent.decoder_mask_axis}
        if self.use_past:
            common.update(self.parent.layout.past_inputs())
        else:
            common["encoder_hidden_states"] = {0: "batch", 1: ENCODER_AXIS}
        return common

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """One decoder token at batch 3 over 9 encoder positions, then other batches, lengths and past lengths."""
        from exporter_core.plan import Scenario

        masked = " (shorter rows masked)" if self.parent.decoder_mask_axis is not None else ""
        shapes: list[tuple[str, dict[str, Any]]] = [
            (f"batch 3, 1 token, encoder 9{masked}", dict(batch_size=3, encoder_length=9, decoder_length=1)),
        ]
        if self.use_past:
            shapes[0][1]["past_length"] = 4
            shapes[0] = (f"batch 3, 1 token over a past of 4, encoder 9{masked}", shapes[0][1])
            shapes += [
                (
                    "batch 1, 1 token over a past of 1",
                    dict(batch_size=1, encoder_length=5, decoder_length=1, past_length=1, padded=False),
                ),
                (
                    f"batch 4, 3 tokens over a past of 23, encoder 12{masked}",
                    dict(batch_size=4, encoder_length=12, decoder_length=3, past_length=23),
                ),
                ("batch 2, empty past", dict(batch_size=2, encoder_length=7, decoder_length=2, past_length=0)),
            ]
        else:
            shapes.append(
                (
                    "batch 1, 7 tokens over 4 encoder positions",
                    dict(batch_size=1, encoder_length=4, decoder_length=7, padded=False),
                )
            )
        return [
            Scenario(label, self.generate_inputs(preprocessor, seed=1 if i == 0 else 7, framework="np", **shape))
            for i, (label, shape) in enumerate(shapes)
        ]

    def dummy_arrays(
        self,
        preprocessor: Any,
        spec: dummy_inputs.DummySpec,
        *,
        decoder_length: int | None = None,
        past_length: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Decoder ids, the decoders' mask when they take one, and an encoder output or past tensors."""
        parent = self.parent
        if decoder_length is None:
            decoder_length = parent.traced_new_tokens if self.use_past else max(2, spec.sequence_length - 3)
        if past_length is None:
            past_length = spec.sequence_length + parent.past_length_offset
        encoder_length = spec.sequence_length
        arrays = {"input_ids": parent.decoder_ids(spec.batch_size, decoder_length, spec.seed, starts=not self.use_past)}
        if parent.decoder_mask_axis is not None:
            length = parent.decoder_mask_length(encoder_length)
            lengths = dummy_inputs.row_lengths(spec.batch_size, length, spec.padded)
            arrays[ENCODER_MASK] = dummy_inputs.padding_mask(lengths, length, "right")
        if self.use_past:
            arrays.update(parent.past_arrays(spec.batch_size, past_length, encoder_length, spec.seed))
        else:
            rng = np.random.default_rng(spec.seed + 2000)
            shape = (spec.batch_size, encoder_length, parent.hidden_size)
            arrays["encoder_hidden_states"] = rng.standard_normal(shape).astype(np.float32)
        return arrays

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        hidden = inputs.get("encoder_hidden_states")
        if hidden is None:
            # With past, cross-attention reads its cached keys and values; the model still wants an encoder output
            # (for its shape only).
            key = inputs[next(n for n in self.parent.layout.names(PAST_PREFIX) if ".encoder." in n)]
            hidden = key.new_zeros((key.shape[0], key.shape[2], self.parent.hidden_size))
        return {
            "decoder_input_ids": inputs["input_ids"],
            **self.parent.decoder_call(hidden, inputs.get(ENCODER_MASK)),
            cache_keyword(self._config): self.parent.make_cache(inputs if self.use_past else None),
            "use_cache": True,
            "return_dict": True,
        }


# -- the models ---------------------------------------------------------------------------------------------
class WhisperOnnxConfig(SpeechSeq2SeqOnnxConfig):
    """Whisper: a log-mel spectrogram of fixed length in, no masks; also its audio-classification head.

    The parity check switches Whisper's decoder prompt (language, task and no-timestamps tokens, which its
    ``generate`` puts after the start token from the generation config) and its suppressed tokens off on both sides:
    both decode from the start token alone with no logits processor (the check's detail names what was switched off).
    """

    features = (*_SPEECH_FEATURES, "audio-classification")
    extractor_call: ClassVar[Mapping[str, Any]] = {}
    #: Samples per encoder position: two mel frames of 160 samples (the feature extractor's hop).
    samples_per_position: ClassVar[int] = 320
    parity_neutral_generation: ClassVar[Mapping[str, Any]] = {
        "forced_decoder_ids": None,
        "suppress_tokens": None,
        "begin_suppress_tokens": None,
        "lang_to_id": None,
        "task_to_id": None,
        "no_timestamps_token_id": None,
        "language": None,
        "task": None,
    }

    tiny_config = {
        "vocab_size": 99,
        "num_mel_bins": 16,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 37,
        "decoder_ffn_dim": 37,
        # 100 mel frames: one second of audio at the feature extractor's hop of 160 samples.
        "max_source_positions": 50,
        "max_target_positions": 64,
        "classifier_proj_size": 16,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 3,
        # The released checkpoints' suppressed token ids are beyond a tiny vocabulary.
        "begin_suppress_tokens": None,
        "suppress_tokens": None,
    }

    @property
    def encoder_inputs(self) -> OrderedDict[str, dict[int, str]]:
        # Mel bins and frames are fixed by the model: only the batch varies.
        return OrderedDict(input_features={0: "batch"})

    def waveform_length(self, positions: int) -> int:
        return max(1, min(positions, self.max_positions) * self.samples_per_position)

    @property
    def max_positions(self) -> int:
        """Encoder output positions: ``max_source_positions``, whatever the audio's duration."""
        return int(self._config.max_source_positions)

    @classmethod
    def feature_extractor_from_config(cls, model_config: PretrainedConfig) -> Any:
        from transformers import WhisperFeatureExtractor

        # Chunks as long as the encoder's fixed frame count covers (30 s for the released checkpoints).
        samples = int(model_config.max_source_positions) * cls.samples_per_position
        if samples % SAMPLING_RATE:
            raise ValueError(
                f"max_source_positions {model_config.max_source_positions} covers {samples} samples, not whole seconds; "
                "save the checkpoint's feature extractor with it"
            )
        return WhisperFeatureExtractor(
            feature_size=int(model_config.num_mel_bins),
            sampling_rate=SAMPLING_RATE,
            chunk_length=samples // SAMPLING_RATE,
        )


class Speech2TextOnnxConfig(SpeechSeq2SeqOnnxConfig):
    """Speech2Text: filter banks with a frame mask in; the decoders take the frame mask, which the model subsamples."""

    decoder_mask_axis: ClassVar[str | None] = "encoder_frames"

    tiny_config = {
        "vocab_size": 99,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 37,
        "decoder_ffn_dim": 37,
        "max_source_positions": 64,
        "max_target_positions": 64,
        "conv_channels": 16,
        "input_feat_per_channel": 16,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
    }

    @property
    def encoder_inputs(self) -> OrderedDict[str, dict[int, str]]:
        axes = {0: "batch", 1: "encoder_frames"}
        return OrderedDict(input_features=dict(axes), attention_mask=dict(axes))

    def decoder_mask_length(self, encoder_length: int) -> int:
        """The fewest frames the convolutions (stride 2 each) subsample to `encoder_length` positions."""
        return (encoder_length - 1) * 2 ** int(self._config.num_conv_layers) + 1

    def waveform_length(self, positions: int) -> int:
        # Frames of 400 samples every 160 (25 ms windows, 10 ms hop).
        return 400 + 160 * (self.decoder_mask_length(positions) - 1)

    @classmethod
    def feature_extractor_from_config(cls, model_config: PretrainedConfig) -> Any:
        from transformers import Speech2TextFeatureExtractor

        bins = int(model_config.input_feat_per_channel)
        channels = int(getattr(model_config, "input_channels", 1) or 1)
        return Speech2TextFeatureExtractor(feature_size=bins * channels, num_mel_bins=bins, sampling_rate=SAMPLING_RATE)


def moonshine_output_lengths(self: Any, input_lengths: Any) -> Any:
    """Moonshine's ``_get_feat_extract_output_lengths`` in integer arithmetic.

    Transformers computes each convolution's output length as ``int((length - kernel) / stride + 1)``: the true
    division makes a float of the audio's length, which a tracer can only turn back into an int as a constant (the
    traced length). Floor division gives the same integers for every length the convolutions accept (at least their
    kernel) and stays computed from the input's shape in a trace.
    """
    length = (input_lengths - 127) // 64 + 1
    length = (length - 7) // 3 + 1
    return (length - 3) // 2 + 1


#: Why Moonshine has no ONNX export (`MoonshineOnnxConfig.check_opset`).
MOONSHINE_ONNX_REFUSAL = (
    "moonshine cannot be exported to ONNX with a dynamic audio length: its encoder downsamples the attention mask "
    "with a strided slice cut to the convolutions' output length (attention_mask[..., ::384][..., :length]); "
    "torch.export cannot prove the cut within the slice and makes the mask's length data-dependent, and the "
    "TorchScript-based exporter (opsets below 18) cannot write that slice either; export speech2seq-lm with the "
    "torchscript backend (one static audio length) instead"
)


class MoonshineOnnxConfig(SpeechSeq2SeqOnnxConfig):
    """Moonshine: the raw waveform with its mask in; the encoder returns its downsampled mask for the decoders.

    While exporting (and computing the reference outputs), the encoder's output length is computed with
    `moonshine_output_lengths` (the same integers, computed from the input's shape rather than as Python constants).
    ONNX is refused at every opset (`MOONSHINE_ONNX_REFUSAL`); static traces (TorchScript, Neuron) serve
    ``speech2seq-lm``.
    """

    decoder_mask_axis: ClassVar[str | None] = ENCODER_AXIS

    tiny_config = {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 37,
        "encoder_num_hidden_layers": 2,
        "decoder_num_hidden_layers": 2,
        "encoder_num_attention_heads": 4,
        "decoder_num_attention_heads": 4,
        # Grouped-query attention in the decoder: its cache has fewer heads than its queries.
        "decoder_num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 1,
    }

    def __init__(
        self,
        config: PretrainedConfig,
        task: str = "default",
        patching_specs: list[PatchingSpec] | None = None,
        use_past: bool = False,
    ) -> None:
        from transformers.models.moonshine import modeling_moonshine

        lengths = PatchingSpec(
            modeling_moonshine.MoonshinePreTrainedModel, "_get_feat_extract_output_lengths", moonshine_output_lengths
        )
        super().__init__(config, task=task, patching_specs=[lengths, *(patching_specs or [])], use_past=use_past)

    def check_opset(self, opset: int) -> None:
        """Refuse ONNX at every opset, with the reason (`MOONSHINE_ONNX_REFUSAL`)."""
        raise OpsetError(MOONSHINE_ONNX_REFUSAL)

    def export_plan(self, model: Any, preprocessor: Any = None) -> ExportPlan:
        """The family's plan; with past, the static-trace refusal says that no backend serves it (ONNX refuses too)."""
        plan = super().export_plan(model, preprocessor)
        if plan.with_past:
            plan.static_trace_refusal = (
                f"{plan.feature!r} takes past key values, which a static trace fixes at one past length, and the onnx "
                "backend refuses moonshine (its encoder's mask downsampling has no dynamic-length ONNX graph); export "
                "speech2seq-lm without past"
            )
        return plan

    @property
    def encoder_inputs(self) -> OrderedDict[str, dict[int, str]]:
        axes = {0: "batch", 1: "audio_samples"}
        return OrderedDict(input_values=dict(axes), attention_mask=dict(axes))

    @property
    def encoder_outputs(self) -> OrderedDict[str, dict[int, str]]:
        outputs = super().encoder_outputs
        outputs[ENCODER_MASK] = {0: "batch", 1: ENCODER_AXIS}
        return outputs

    def waveform_length(self, positions: int) -> int:
        # Convolutions of kernel 127 stride 64, kernel 7 stride 3, kernel 3 stride 2: 384 samples a position.
        return 384 * positions + 511

    def decoder_cache_sizes(self) -> tuple[int, int, int]:
        config = self._config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.decoder_num_attention_heads
        return int(config.decoder_num_hidden_layers), int(config.decoder_num_key_value_heads), int(head_dim)

    def decoder_call(self, hidden: Any, mask: Any) -> dict[str, Any]:
        # The model reads the decoders' mask from the encoder output, where its encoder put it.
        from transformers.models.moonshine.modeling_moonshine import MoonshineEncoderModelOutput

        return {"encoder_outputs": MoonshineEncoderModelOutput(last_hidden_state=hidden, attention_mask=mask)}

    @classmethod
    def feature_extractor_from_config(cls, model_config: PretrainedConfig) -> Any:
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=SAMPLING_RATE,
            padding_value=0.0,
            do_normalize=False,
            return_attention_mask=True,
        )
