"""Audio encoders: raw-waveform models (wav2vec 2.0 and its descendants) and the Audio Spectrogram Transformer.

Waveform encoders (wav2vec2, wav2vec2-conformer, HuBERT, WavLM, Data2Vec-Audio, SEW, SEW-D, UniSpeech,
UniSpeech-SAT) take ``input_values``, one float sample per position ``(batch, samples)``. A convolutional feature
encoder strides over the samples, so the outputs have ``frames`` (a function of the sample count) instead of the
input's length. One config (`AudioEncoderOnnxConfig`) serves every such model type, one entry point per type; the
features are the heads Transformers has for the type (``ctc``, ``audio-classification``) and tiny sizes come from
the type's own config fields, as the decoder LLM family does. SEW-D and the conformer export through the TorchScript-based engine (opset 17):
the dynamo engine fixes some of their shape arithmetic at the traced length (`DYNAMO_WRONG_SHAPES`).

The attention mask follows the checkpoint's feature extractor: models whose feature encoder normalises each layer
(``feat_extract_norm == "layer"``, and Data2Vec-Audio, which has no other) take ``attention_mask`` and are validated
with rows of different real lengths, the padding masked. Group-norm models (base wav2vec2, HuBERT base, SEW...) were
trained without a mask: their feature extractor returns none, the group norm mixes every sample of a row, and
padding is meant to be zeros; they take ``input_values`` only and are validated on zero-padded rows, which they read
as silence (still the same inputs on both sides). Outputs are compared at every frame: padded frames are computed
from the same inputs by both sides, so nothing is excluded.

Inputs go through the checkpoint's feature extractor when it has one (synthetic sine tones plus noise, normalised
and padded by it), else the same waveforms are made from the config alone. ONNX exports take any batch and sample
count; static traces (TorchScript, Neuron) fix the sample count (``samples`` is not a padded sequence axis: padding
waveforms would add output frames a loader cannot cut back), so they are validated at the traced sample count with
padded rows and at a smaller batch.

The Audio Spectrogram Transformer (`ASTOnnxConfig`) takes log-mel features ``(batch, frames, mel bins)`` from its
feature extractor, padded or cut to the model's fixed ``max_length`` frames: only the batch is dynamic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.architectures.llm import model_config_fields
from exporter_core.config import OnnxConfig
from exporter_core.errors import InvalidArgumentError, OpsetError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.plan import ExportPlan, Scenario

__all__ = [
    "AUDIO_HEAD_MAPPINGS",
    "DYNAMO_WRONG_SHAPES",
    "STATIC_TRACE_REFUSALS",
    "ASTOnnxConfig",
    "AudioEncoderBelowOpset18OnnxConfig",
    "AudioEncoderOnnxConfig",
    "synthetic_waveforms",
    "uses_attention_mask",
]

#: Feature -> the name of the Auto mapping (``transformers.models.auto.modeling_auto``) listing the types with it.
AUDIO_HEAD_MAPPINGS: Mapping[str, str] = {
    "default": "MODEL_MAPPING_NAMES",
    "ctc": "MODEL_FOR_CTC_MAPPING_NAMES",
    "audio-classification": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
}

#: Sampling rate of synthetic waveforms when no feature extractor names one.
DEFAULT_SAMPLING_RATE = 16000

#: Tiny test values of waveform encoders, each set where the config class has the field. Two feature-encoder
#: convolutions (kernel 10 stride 5, kernel 3 stride 2) turn 400 samples into 39 frames.
TINY_WAVEFORM_FIELDS: Mapping[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "conv_dim": (32, 32),
    "conv_stride": (5, 2),
    "conv_kernel": (10, 3),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "classifier_proj_size": 16,
    "num_labels": 3,
    "vocab_size": 32,
    "conv_depthwise_kernel_size": 3,
    "num_buckets": 16,
    "max_bucket_distance": 32,
    "position_buckets": 8,
}

#: Per model type, tiny sizes that differ from the shared ones (each with its reason). Large checkpoints of
#: wav2vec2, HuBERT, WavLM, UniSpeech-SAT and the conformer normalise every feature-encoder layer and take an
#: attention mask; the others keep their group-norm default, so both kinds are exported.
_TINY_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    "wav2vec2": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    "wav2vec2-conformer": {"feat_extract_norm": "layer"},
    "hubert": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    "wavlm": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    "unispeech-sat": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    # Data2Vec-Audio's num_conv_pos_embeddings counts positional convolution layers (of conv_pos_kernel_size).
    "data2vec-audio": {"num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5},
}

_WAVE_AXES: Mapping[int, str] = {0: "batch", 1: "samples"}
_FRAME_AXES: Mapping[int, str] = {0: "batch", 1: "frames"}


def uses_attention_mask(model_config: Any) -> bool:
    """True when the model is meant to get an attention mask: its feature encoder normalises each layer
    (``feat_extract_norm == "layer"``; Data2Vec-Audio has no other kind)."""
    return str(getattr(model_config, "feat_extract_norm", "layer")) == "layer"


def _feature_extractor(preprocessor: Any) -> Any | None:
    """The feature extractor inside `preprocessor` (a processor bundles one), or an error for anything else."""
    if preprocessor is None:
        return None
    extractor = getattr(preprocessor, "feature_extractor", preprocessor)
    if "input_values" not in (getattr(extractor, "model_input_names", None) or []):
        raise InvalidArgumentError(
            f"{type(preprocessor).__name__} does not make input_values; pass --preprocessor feature_extractor "
            "(a checkpoint with preprocessor_config.json) or no preprocessor"
        )
    return extractor


def synthetic_waveforms(lengths: list[int], sampling_rate: int, seed: int) -> list[np.ndarray]:
    """One float32 waveform per entry of `lengths`: a tone (a different pitch per row) with a harmonic and noise."""
    rng = np.random.default_rng(seed)
    waves = []
    for row, length in enumerate(lengths):
        t = np.arange(length) / sampling_rate
        pitch = 220.0 * (1.0 + 0.25 * row) + float(rng.uniform(0, 40))
        wave = 0.6 * np.sin(2 * np.pi * pitch * t) + 0.2 * np.sin(2 * np.pi * 3 * pitch * t + float(rng.uniform(0, 3)))
        wave += 0.05 * rng.standard_normal(length)
        waves.append(wave.astype(np.float32))
    return waves


class AudioEncoderOnnxConfig(OnnxConfig):
    """A raw-waveform speech encoder (``input_values`` and, for layer-norm feature encoders, ``attention_mask``)."""

    features: ClassVar[tuple[str, ...]] = ("default", "ctc", "audio-classification")
    #: Samples of export dummies and static traces (`seq_length` counts samples here).
    default_fixed_sequence: ClassVar[int] = 400
    #: Samples of the validation scenarios: other lengths than the traced one, one longer and one shorter.
    validation_samples: ClassVar[tuple[tuple[int, int], ...]] = ((3, 547), (1, 331))

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """`features` narrowed to the heads Transformers has for `model_type`."""
        from transformers.models.auto import modeling_auto

        return tuple(f for f in cls.features if model_type in getattr(modeling_auto, AUDIO_HEAD_MAPPINGS[f]))

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """`TINY_WAVEFORM_FIELDS` the type's config class has, then the per-type overrides."""
        fields = model_config_fields(model_type)
        sizes = {name: value for name, value in TINY_WAVEFORM_FIELDS.items() if name in fields or name == "num_labels"}
        sizes.update(cls.tiny_config)
        sizes.update(_TINY_OVERRIDES.get(model_type, {}))
        return sizes

    @classmethod
    def tiny_feature_extractor(cls, model_config: PretrainedConfig) -> Any:
        """The wav2vec2 feature extractor (16 kHz, normalising), returning a mask where the model takes one."""
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor(
            sampling_rate=DEFAULT_SAMPLING_RATE,
            do_normalize=True,
            return_attention_mask=uses_attention_mask(model_config),
        )

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        names = ["input_values", "attention_mask"] if uses_attention_mask(self._config) else ["input_values"]
        return OrderedDict((name, dict(_WAVE_AXES)) for name in names)

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        outputs = OrderedDict((name, dict(axes)) for name, axes in super().outputs.items())
        for axes in outputs.values():
            for axis, axis_name in axes.items():
                if axis_name == "sequence":
                    axes[axis] = _FRAME_AXES[1]
        return outputs

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        """Waveforms of `spec.sequence_length` samples, rows of different real lengths when `spec.padded`."""
        samples = spec.sequence_length
        lengths = dummy_inputs.row_lengths(spec.batch_size, samples, spec.padded)
        extractor = _feature_extractor(preprocessor)
        rate = int(getattr(extractor, "sampling_rate", None) or DEFAULT_SAMPLING_RATE)
        waves = synthetic_waveforms(lengths, rate, spec.seed)
        mask = dummy_inputs.padding_mask(lengths, samples, "right")
        if extractor is not None:
            encoded = extractor(
                waves, sampling_rate=rate, padding="max_length", max_length=samples, return_tensors="np"
            )
            values = np.asarray(encoded["input_values"], dtype=np.float32)
            if "attention_mask" in encoded:
                mask = np.asarray(encoded["attention_mask"], dtype=np.int64)
        else:
            values = np.zeros((spec.batch_size, samples), dtype=np.float32)
            for row, wave in enumerate(waves):
                values[row, : len(wave)] = wave
        arrays = {"input_values": values, "attention_mask": mask}
        return {name: arrays[name] for name in self.inputs}

    def export_plan(self, model: Any, preprocessor: Any = None) -> ExportPlan:
        """The one-part plan, refused by static-trace backends where `STATIC_TRACE_REFUSALS` names the type."""
        plan = super().export_plan(model, preprocessor)
        reason = STATIC_TRACE_REFUSALS.get(self.model_view.model_type)
        if reason is not None:
            plan.static_trace_refusal = plan.static_trace_refusal or reason
        return plan

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """Other batch sizes and sample counts than the traced ones, rows of different real lengths."""
        from exporter_core.plan import Scenario

        masked = "attention_mask" in self.inputs
        scenarios = []
        for index, (batch, samples) in enumerate(self.validation_samples):
            inputs = self.generate_dummy_inputs(
                preprocessor, batch_size=batch, seq_length=samples, framework="np", padded=True, seed=1 + index
            )
            label = f"batch {batch} × samples {samples}"
            if batch > 1:
                label += ", padded rows (masked)" if masked else ", zero-padded rows (no mask: group-norm encoder)"
            scenarios.append(Scenario(label, inputs))
        return scenarios


#: Waveform types whose graphs the dynamo engine (opset 18 and above) writes wrong for other sample counts than the
#: traced one, with the reason; the TorchScript-based engine records their shape arithmetic and serves every count
#: (measured: validated at an odd and an even frame count, worst difference below 4e-6).
DYNAMO_WRONG_SHAPES: Mapping[str, str] = {
    "sew-d": (
        "its encoder pads the upsampled frames back by one when the frame count is odd (a Python branch on a shape), "
        "which torch.export fixes at the traced parity, so the graph gives one frame too many for half of all "
        "sample counts"
    ),
    "wav2vec2-conformer": (
        "torch.export fixes the sizes of its relative-position shift at the traced frame count, so the graph fails "
        "at other sample counts"
    ),
}


#: Waveform types a static trace (TorchScript, Neuron) cannot hold, with the reason.
STATIC_TRACE_REFUSALS: Mapping[str, str] = {
    "sew-d": (
        "sew-d's attention softmax is a Python autograd.Function (XSoftmax), which a TorchScript archive cannot hold; "
        "use the onnx backend"
    ),
}


class AudioEncoderBelowOpset18OnnxConfig(AudioEncoderOnnxConfig):
    """A waveform encoder exported by the TorchScript-based engine: opset 17 by default, 18 and above refused with
    the reason (`DYNAMO_WRONG_SHAPES`)."""

    default_opset: ClassVar[int] = 17

    def check_opset(self, opset: int) -> None:
        """Refuse the dynamo engine's opsets (18 and above) with the reason."""
        if isinstance(opset, int) and not isinstance(opset, bool) and opset > self.default_opset:
            model_type = self.model_view.model_type
            reason = DYNAMO_WRONG_SHAPES.get(model_type, "the dynamo engine writes a graph fixed to the traced shape")
            raise OpsetError(
                f"{model_type} exports up to opset {self.default_opset}: from opset 18 (the dynamo engine) {reason}; "
                f"pass --opset {self.default_opset} or lower"
            )
        super().check_opset(opset)


class ASTOnnxConfig(OnnxConfig):
    """Audio Spectrogram Transformer: log-mel ``input_values`` (batch, max_length frames, mel bins); only the batch
    is dynamic."""

    features: ClassVar[tuple[str, ...]] = ("default", "audio-classification")
    tiny_config: ClassVar[Mapping[str, Any]] = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "patch_size": 4,
        "frequency_stride": 4,
        "time_stride": 4,
        "max_length": 24,
        "num_mel_bins": 16,
        "num_labels": 3,
    }

    @classmethod
    def tiny_feature_extractor(cls, model_config: PretrainedConfig) -> Any:
        """An AST feature extractor making the model's mel bins and frame count."""
        from transformers import ASTFeatureExtractor

        return ASTFeatureExtractor(num_mel_bins=model_config.num_mel_bins, max_length=model_config.max_length)

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict({"input_values": {0: "batch"}})

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict((name, {0: "batch"}) for name in super().outputs)

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        """Spectrograms of waveforms of different lengths (padded or cut to max_length frames by the extractor),
        or standard-normal features of the same shape without one."""
        frames, bins = int(self._config.max_length), int(self._config.num_mel_bins)
        extractor = _feature_extractor(preprocessor)
        if extractor is None:
            rng = np.random.default_rng(spec.seed)
            return {"input_values": rng.standard_normal((spec.batch_size, frames, bins)).astype(np.float32)}
        rate = int(getattr(extractor, "sampling_rate", None) or DEFAULT_SAMPLING_RATE)
        # 10 ms hops: a row of this many samples fills every frame; shorter rows are padded by the extractor.
        full = (frames + 2) * rate // 100
        lengths = dummy_inputs.row_lengths(spec.batch_size, full, True)
        encoded = extractor(synthetic_waveforms(lengths, rate, spec.seed), sampling_rate=rate, return_tensors="np")
        return {"input_values": np.asarray(encoded["input_values"], dtype=np.float32)}
