"""Speech encoder-decoders (Whisper, Speech2Text, Moonshine): features, the graphs' layout, synthetic audio inputs
that the tiny models accept, Moonshine's symbolic output length, and the speech side of generation (encoder inputs by
name, the decoders' mask, Whisper's prompt switched off on both sides). Fast: no export (exporter-onnx's
test_speech.py exports)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from exporter_core.architectures.speech import (
    MoonshineOnnxConfig,
    Speech2TextOnnxConfig,
    SpeechSeq2SeqOnnxConfig,
    WhisperOnnxConfig,
    moonshine_output_lengths,
    synthetic_waveform,
)
from exporter_core.generation import GreedySettings, Seq2SeqGenerator, parity_generation_config
from exporter_core.modeling import prepared_for_export
from exporter_core.plugins import load_architecture
from exporter_core.testing import tiny_model_config

SPEECH_TYPES = ("whisper", "speech_to_text", "moonshine")


def _config(model_type: str, feature: str = "speech2seq-lm-with-past", **overrides: Any) -> Any:
    return load_architecture(model_type).for_feature(tiny_model_config(model_type, **overrides), feature)


def _model(model_type: str, auto_class: str = "AutoModelForSpeechSeq2Seq") -> Any:
    import transformers

    torch.manual_seed(0)
    return getattr(transformers, auto_class).from_config(tiny_model_config(model_type)).eval()


def _torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in arrays.items()}


def test_the_family_serves_the_three_model_types() -> None:
    assert load_architecture("whisper") is WhisperOnnxConfig
    assert load_architecture("speech_to_text") is Speech2TextOnnxConfig
    assert load_architecture("moonshine") is MoonshineOnnxConfig
    for model_type in SPEECH_TYPES:
        features = load_architecture(model_type).supported_features(model_type)
        assert features[:2] == ("speech2seq-lm", "speech2seq-lm-with-past")
        assert ("audio-classification" in features) is (model_type == "whisper")


def test_the_graphs_declare_what_each_model_takes() -> None:
    whisper, s2t, moonshine = (_config(t) for t in SPEECH_TYPES)
    assert list(whisper.encoder_config().inputs) == ["input_features"]
    assert whisper.encoder_config().inputs["input_features"] == {0: "batch"}, "mel bins and frames are fixed"
    assert list(whisper.decoder_config(with_past=False).inputs) == ["input_ids", "encoder_hidden_states"]
    assert list(s2t.encoder_config().inputs) == ["input_features", "attention_mask"]
    assert s2t.decoder_config(with_past=True).inputs["encoder_attention_mask"] == {0: "batch", 1: "encoder_frames"}
    assert list(moonshine.encoder_config().inputs) == ["input_values", "attention_mask"]
    assert list(moonshine.encoder_config().outputs) == ["last_hidden_state", "encoder_attention_mask"]
    with_past = moonshine.decoder_config(with_past=True)
    assert list(with_past.inputs)[:3] == ["input_ids", "encoder_attention_mask", "past_key_values.0.decoder.key"]
    assert with_past.inputs["encoder_attention_mask"] == {0: "batch", 1: "encoder_sequence"}
    assert not [n for n in with_past.outputs if ".encoder." in n], "the cached encoder keys are not returned again"
    # Moonshine's decoder caches 2 key/value heads for its 4 query heads.
    assert {layer.num_heads for layer in moonshine.layout.layers} == {2}
    assert {layer.num_heads for layer in whisper.layout.layers} == {4}
    for config in (whisper, s2t, moonshine):
        plan_checks = config.plan_checks(model=None)
        assert [check.name for check in plan_checks] == ["generation parity"]
    assert _config("whisper", "speech2seq-lm").plan_checks(model=None) == []


@pytest.mark.parametrize("model_type", SPEECH_TYPES)
def test_synthetic_audio_gives_the_encoder_lengths_asked_for(model_type: str) -> None:
    """Rows of different durations, through the feature extractor; the encoder's output has the asked length."""
    config = _config(model_type)
    model = _model(model_type)
    encoder = config.encoder_config()
    inputs = encoder.generate_dummy_inputs(None, batch_size=3, seq_length=9, padded=True, framework="np", seed=1)
    assert list(inputs) == list(encoder.inputs)
    with prepared_for_export(model, encoder), torch.no_grad():
        output = model.get_encoder()(**_torch(dict(inputs)))
    expected = model.config.max_source_positions if model_type == "whisper" else 9
    assert output.last_hidden_state.shape[:2] == (3, expected)
    if "attention_mask" in inputs:
        real = inputs["attention_mask"].sum(axis=1)
        assert real[0] == inputs["attention_mask"].shape[1] and real[0] > real[1] > real[2], "rows of other durations"
    else:  # Whisper: shorter audio is padded with silence up to the model's frame count
        features = inputs["input_features"]
        assert features.shape == (3, model.config.num_mel_bins, 2 * model.config.max_source_positions)
        tail = features[2, :, -5:]
        assert np.allclose(tail, tail[0, 0]) and not np.allclose(features[0, :, -5:], tail[0, 0])
    if model_type == "moonshine":
        # The encoder keeps every 384th sample's mask value (one per position, cut to the positions it outputs).
        samples = [config.waveform_length(n) for n in (9, 7, 4)]
        assert output.attention_mask.sum(dim=1).tolist() == [min(9, -(-n // 384)) for n in samples] == [9, 9, 6]


def test_a_checkpoint_feature_extractor_is_used_when_there_is_one() -> None:
    from transformers import WhisperFeatureExtractor

    config = _config("whisper")
    built = config.feature_extractor(None)
    assert (built.feature_size, built.nb_max_frames) == (16, 100)
    saved = WhisperFeatureExtractor(feature_size=16, chunk_length=1, hop_length=80)
    assert config.feature_extractor(saved) is saved
    inputs = config.encoder_config().generate_dummy_inputs(saved, batch_size=1, seq_length=4, framework="np")
    assert inputs["input_features"].shape == (1, 16, 200), "the saved extractor's hop, not the config's"
    assert WhisperOnnxConfig.tiny_feature_extractor(tiny_model_config("whisper")).nb_max_frames == 100


def test_moonshine_output_lengths_are_transformers_integers() -> None:
    from transformers.models.moonshine.modeling_moonshine import MoonshinePreTrainedModel

    original = MoonshinePreTrainedModel._get_feat_extract_output_lengths
    for samples in range(511, 20000, 97):
        assert moonshine_output_lengths(None, samples) == original(None, samples), samples
    assert moonshine_output_lengths(None, torch.tensor([4000, 20000])).tolist() == [
        original(None, 4000),
        original(None, 20000),
    ]
    config = _config("moonshine")
    with config.encoder_config().patched_ops():
        assert MoonshinePreTrainedModel._get_feat_extract_output_lengths is moonshine_output_lengths
    assert MoonshinePreTrainedModel._get_feat_extract_output_lengths is original, "restored"


def test_synthetic_waveform_is_deterministic_audio() -> None:
    wave = synthetic_waveform(16000, seed=3)
    assert wave.dtype == np.float32 and wave.shape == (16000,) and np.abs(wave).max() <= 1.0
    assert np.array_equal(wave, synthetic_waveform(16000, seed=3))
    assert not np.allclose(wave, synthetic_waveform(16000, seed=4))


# -- generation ---------------------------------------------------------------------------------------------------
def _fake_parts(encoder_mask: bool) -> tuple[Any, Any, Any, list[dict[str, Any]]]:
    """Fake graphs recording what each decoder call got; the encoder returns a downsampled mask when asked."""
    seen: list[dict[str, Any]] = []

    def encoder(inputs: Any) -> dict[str, np.ndarray]:
        assert set(inputs) == ({"input_values", "attention_mask"} if encoder_mask else {"input_features"})
        out = {"last_hidden_state": np.zeros((2, 3, 4), dtype=np.float32)}
        if encoder_mask:
            out["encoder_attention_mask"] = np.array([[1, 1, 1], [1, 1, 0]], dtype=np.int32)
        return out

    def decoder(inputs: Any) -> dict[str, np.ndarray]:
        seen.append(dict(inputs))
        logits = np.zeros((2, 1, 5), dtype=np.float32)
        logits[:, 0, 4] = 1.0
        return {"logits": logits, "present.0.decoder.key": np.zeros((2, 1, 1, 2), dtype=np.float32)}

    return encoder, decoder, decoder, seen


def test_the_generator_takes_audio_inputs_and_forwards_the_encoders_mask() -> None:
    settings = GreedySettings(max_new_tokens=3, eos_token_ids=(2,), pad_token_id=0)
    encoder, decoder, with_past, seen = _fake_parts(encoder_mask=True)
    audio = {"input_values": np.zeros((2, 900), np.float32), "attention_mask": np.ones((2, 900), np.int64)}
    tokens = Seq2SeqGenerator(encoder, decoder, with_past).generate(audio, settings=settings, decoder_start_token_id=1)
    assert tokens.tolist() == [[1, 4, 4, 4], [1, 4, 4, 4]]
    # The decoders get the encoder's downsampled mask, not the waveform's.
    assert all(call["encoder_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]] for call in seen)
    assert all(call["encoder_attention_mask"].dtype == np.int64 for call in seen)

    encoder, decoder, with_past, seen = _fake_parts(encoder_mask=False)
    features = {"input_features": np.zeros((2, 16, 100), np.float32)}
    Seq2SeqGenerator(encoder, decoder, with_past).generate(features, settings=settings, decoder_start_token_id=1)
    assert seen and all("encoder_attention_mask" not in call for call in seen), "Whisper's decoders take no mask"


def test_whisper_prompt_and_suppressed_tokens_are_switched_off_on_both_sides() -> None:
    from transformers import GenerationConfig

    model = _model("whisper")
    config = _config("whisper")
    assert parity_generation_config(model, config) == (None, []), "nothing to switch off on the tiny model"
    model.generation_config = GenerationConfig(
        decoder_start_token_id=3,
        eos_token_id=2,
        suppress_tokens=[5, 6],
        begin_suppress_tokens=[2],
        lang_to_id={"<|en|>": 7},
        task_to_id={"transcribe": 8},
        no_timestamps_token_id=9,
    )
    fair, switched_off = parity_generation_config(model, config)
    assert set(switched_off) == {
        "suppress_tokens",
        "begin_suppress_tokens",
        "lang_to_id",
        "task_to_id",
        "no_timestamps_token_id",
    }
    assert fair is not model.generation_config and model.generation_config.no_timestamps_token_id == 9
    assert not getattr(fair, "suppress_tokens", None) and not getattr(fair, "begin_suppress_tokens", None)
    assert not hasattr(fair, "lang_to_id") and not hasattr(fair, "no_timestamps_token_id")
    assert fair.decoder_start_token_id == 3
    # Text encoder-decoders name nothing to switch off.
    assert SpeechSeq2SeqOnnxConfig.parity_neutral_generation == {}


def test_moonshine_refuses_onnx_at_every_opset_with_the_reason() -> None:
    from exporter_core.errors import OpsetError

    for feature in ("speech2seq-lm", "speech2seq-lm-with-past"):
        config = _config("moonshine", feature)
        for opset in (14, 17, 18, 20):
            with pytest.raises(OpsetError, match=r"attention_mask\[\.\.\., ::384\]"):
                config.check_opset(opset)
    with pytest.raises(OpsetError, match="strided slice"):
        _config("moonshine").encoder_config().check_opset(18)  # the graphs of the with-past export too
    _config("whisper").check_opset(17)
    _config("speech_to_text").check_opset(18)


def test_static_traces_refuse_moonshine_with_past_naming_the_onnx_refusal_too() -> None:
    model = _model("moonshine")
    plan = _config("moonshine").export_plan(model)
    assert [part.artifact for part in plan.parts] == [
        "encoder_model.onnx",
        "decoder_model.onnx",
        "decoder_with_past_model.onnx",
    ]
    assert plan.static_trace_refusal is not None and "onnx backend refuses moonshine" in plan.static_trace_refusal
    assert _config("moonshine", "speech2seq-lm").export_plan(model).static_trace_refusal is None
