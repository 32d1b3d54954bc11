"""The audio encoder family: features and tiny sizes per model type, inputs through a feature extractor or from the
config, what the attention mask does for layer-norm and group-norm encoders, and the feature-extractor plumbing
(loading, the test kit). Fast: tiny forwards, no export (exporter-onnx's test_audio.py exports)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter_core import loading
from exporter_core.architectures.audio import ASTOnnxConfig, AudioEncoderOnnxConfig, uses_attention_mask
from exporter_core.architectures.llm import model_config_fields
from exporter_core.errors import InvalidArgumentError
from exporter_core.plugins import load_architecture
from exporter_core.testing import build_tiny_checkpoint, build_tiny_tokenizer, preprocessor_kind

AUDIO_TYPES = sorted(
    ep.name
    for ep in metadata.entry_points(group="exporter.architectures")
    if ep.value.startswith("exporter_core.architectures.audio:")
)
WAVEFORM_TYPES = [t for t in AUDIO_TYPES if t != "audio-spectrogram-transformer"]
#: Tiny types whose feature encoder normalises each layer (and so take an attention mask).
MASKED = {"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "unispeech-sat", "data2vec-audio"}


def _tiny(model_type: str, auto_class: str = "AutoModel", **overrides: object) -> torch.nn.Module:
    import transformers

    sizes = {**load_architecture(model_type).tiny_sizes(model_type), **overrides}
    config = transformers.AutoConfig.for_model(model_type, **sizes)
    torch.manual_seed(0)
    return getattr(transformers, auto_class).from_config(config).eval()


def test_the_family_serves_the_model_types_of_the_issue() -> None:
    assert set(WAVEFORM_TYPES) == {
        "wav2vec2",
        "wav2vec2-conformer",
        "hubert",
        "wavlm",
        "data2vec-audio",
        "sew",
        "sew-d",
        "unispeech",
        "unispeech-sat",
    }
    assert "audio-spectrogram-transformer" in AUDIO_TYPES
    assert load_architecture("audio-spectrogram-transformer") is ASTOnnxConfig
    assert all(issubclass(load_architecture(t), AudioEncoderOnnxConfig) for t in WAVEFORM_TYPES)


@pytest.mark.parametrize("model_type", WAVEFORM_TYPES)
def test_waveform_types_have_the_ctc_and_classification_heads_transformers_has(model_type: str) -> None:
    from transformers.models.auto import modeling_auto

    expected = ["default"]
    if model_type in modeling_auto.MODEL_FOR_CTC_MAPPING_NAMES:
        expected.append("ctc")
    if model_type in modeling_auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES:
        expected.append("audio-classification")
    assert load_architecture(model_type).supported_features(model_type) == tuple(expected)
    assert len(expected) == 3


def test_the_spectrogram_transformer_has_no_ctc_head() -> None:
    assert ASTOnnxConfig.supported_features("audio-spectrogram-transformer") == ("default", "audio-classification")


@pytest.mark.parametrize("model_type", WAVEFORM_TYPES)
def test_tiny_sizes_are_fields_of_the_type_and_give_a_small_model_with_frames_from_samples(model_type: str) -> None:
    sizes = load_architecture(model_type).tiny_sizes(model_type)
    assert set(sizes) - {"num_labels"} <= set(model_config_fields(model_type))
    model = _tiny(model_type)
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert uses_attention_mask(model.config) == (model_type in MASKED)
    with torch.no_grad():
        frames = [model(input_values=torch.randn(1, n)).last_hidden_state.shape[1] for n in (400, 547)]
    # kernel 10 stride 5, then kernel 3 stride 2: 400 samples -> 79 -> 39 frames; 547 -> 108 -> 53.
    assert frames == [39, 53]


@pytest.mark.parametrize("model_type", ["wav2vec2", "sew"])
def test_inputs_and_outputs_name_samples_and_frames_and_the_mask_only_where_the_model_takes_one(
    model_type: str,
) -> None:
    config = AudioEncoderOnnxConfig.for_feature(_tiny(model_type).config, "ctc")
    expected = ["input_values", "attention_mask"] if model_type in MASKED else ["input_values"]
    assert list(config.inputs) == expected
    assert all(axes == {0: "batch", 1: "samples"} for axes in config.inputs.values())
    assert dict(config.outputs) == {"logits": {0: "batch", 1: "frames"}}
    classify = AudioEncoderOnnxConfig.for_feature(_tiny(model_type).config, "audio-classification")
    assert dict(classify.outputs) == {"logits": {0: "batch"}}


def test_dummy_waveforms_from_the_config_have_rows_of_different_real_lengths() -> None:
    config = AudioEncoderOnnxConfig.for_feature(_tiny("wav2vec2").config, "default")
    inputs = config.generate_dummy_inputs(batch_size=3, seq_length=500, framework="np", padded=True, seed=3)
    values, mask = inputs["input_values"], inputs["attention_mask"]
    assert values.shape == mask.shape == (3, 500) and values.dtype == np.float32
    lengths = mask.sum(axis=1).tolist()
    assert lengths[0] == 500 and len(set(lengths)) == 3
    for row, length in enumerate(lengths):
        assert np.all(values[row, length:] == 0) and np.abs(values[row, :length]).mean() > 0.1
    again = config.generate_dummy_inputs(batch_size=3, seq_length=500, framework="np", padded=True, seed=3)
    assert np.array_equal(again["input_values"], values)


def test_dummy_waveforms_go_through_the_feature_extractor_which_normalises_each_real_row() -> None:
    model = _tiny("wav2vec2")
    extractor = AudioEncoderOnnxConfig.tiny_feature_extractor(model.config)
    assert extractor.return_attention_mask is True
    config = AudioEncoderOnnxConfig.for_feature(model.config, "default")
    inputs = config.generate_dummy_inputs(extractor, batch_size=2, seq_length=300, framework="np", padded=True)
    mask = inputs["attention_mask"]
    for row in range(2):
        real = inputs["input_values"][row, : int(mask[row].sum())]
        assert abs(float(real.mean())) < 1e-3 and abs(float(real.std()) - 1.0) < 1e-2
    group = _tiny("sew")
    assert AudioEncoderOnnxConfig.tiny_feature_extractor(group.config).return_attention_mask is False


def test_a_tokenizer_is_refused_as_the_preprocessor_of_a_waveform_model() -> None:
    config = AudioEncoderOnnxConfig.for_feature(_tiny("hubert").config, "default")
    with pytest.raises(InvalidArgumentError, match="does not make input_values"):
        config.generate_dummy_inputs(build_tiny_tokenizer(), framework="np")


def test_validation_scenarios_use_other_batches_and_sample_counts_than_the_trace() -> None:
    config = AudioEncoderOnnxConfig.for_feature(_tiny("wavlm").config, "ctc")
    traced = config.generate_dummy_inputs(framework="np")["input_values"].shape
    scenarios = config.validation_scenarios()
    shapes = [s.inputs["input_values"].shape for s in scenarios]
    assert traced not in shapes and {s[0] for s in shapes} - {traced[0]} and {s[1] for s in shapes} - {traced[1]}
    assert "padded rows (masked)" in scenarios[0].label
    sew = AudioEncoderOnnxConfig.for_feature(_tiny("sew").config, "ctc")
    assert "no mask" in sew.validation_scenarios()[0].label


def test_the_mask_hides_padding_from_a_layer_norm_encoder_but_not_from_a_group_norm_one() -> None:
    """What validation with padded rows means: with a layer-norm feature encoder and the mask, the real frames of a
    padded wav2vec2 row are those of the row alone; a group-norm encoder's normalisation reads the padding.
    (Data2Vec-Audio's stacked positional convolutions read padded frames even with the mask: a model property.)"""

    def padding_effect(model: torch.nn.Module, masked: bool) -> float:
        wave = torch.randn(1, 300)
        padded = torch.cat([wave, torch.zeros(1, 200)], dim=1)
        kwargs = (
            {"attention_mask": torch.cat([torch.ones(1, 300), torch.zeros(1, 200)], dim=1).long()} if masked else {}
        )
        with torch.no_grad():
            alone = model(input_values=wave).last_hidden_state
            inside = model(input_values=padded, **kwargs).last_hidden_state[:, : alone.shape[1]]
        return float((alone - inside).abs().max())

    assert padding_effect(_tiny("wav2vec2"), masked=True) < 1e-5
    assert padding_effect(_tiny("wav2vec2", feat_extract_norm="group", do_stable_layer_norm=False), masked=False) > 1e-3


def test_spectrogram_inputs_come_from_the_feature_extractor_at_the_models_fixed_shape() -> None:
    model = _tiny("audio-spectrogram-transformer")
    config = ASTOnnxConfig.for_feature(model.config, "audio-classification")
    assert dict(config.inputs) == {"input_values": {0: "batch"}}
    extractor = ASTOnnxConfig.tiny_feature_extractor(model.config)
    inputs = config.generate_dummy_inputs(extractor, batch_size=3, framework="np")
    assert inputs["input_values"].shape == (3, 24, 16)
    assert not np.allclose(inputs["input_values"][0], inputs["input_values"][2])
    plain = config.generate_dummy_inputs(batch_size=2, framework="np")["input_values"]
    assert plain.shape == (2, 24, 16)
    with torch.no_grad():
        assert model(input_values=torch.from_numpy(inputs["input_values"])).last_hidden_state.shape[0] == 3


def test_the_kit_saves_a_feature_extractor_and_auto_loading_finds_it(tmp_path: Path) -> None:
    assert preprocessor_kind("wav2vec2", "ctc") == "feature_extractor"
    assert preprocessor_kind("audio-spectrogram-transformer", "default") == "feature_extractor"
    assert preprocessor_kind("bert", "sequence-classification") == "tokenizer"
    folder = build_tiny_checkpoint("hubert", "ctc", tmp_path / "hubert", with_feature_extractor=True)
    extractor = loading.load_preprocessor(folder)
    assert type(extractor).__name__ == "Wav2Vec2FeatureExtractor" and extractor.return_attention_mask is True
    with pytest.raises(LookupError, match="builds no feature extractor"):
        build_tiny_checkpoint("bert", "default", tmp_path / "bert", with_feature_extractor=True)


def test_sew_d_refuses_static_traces_with_the_reason_and_others_do_not() -> None:
    sew_d = _tiny("sew-d", "AutoModelForCTC")
    plan = load_architecture("sew-d").for_feature(sew_d.config, "ctc").export_plan(sew_d)
    assert plan.static_trace_refusal is not None and "XSoftmax" in plan.static_trace_refusal
    sew = _tiny("sew", "AutoModelForCTC")
    assert load_architecture("sew").for_feature(sew.config, "ctc").export_plan(sew).static_trace_refusal is None
