"""Encoder-decoder models (BART family, Blenderbot, Marian, M2M-100, T5) exported to ONNX and validated against PyTorch.

Every (architecture, feature) pair is exported and validated by the generated cases (``nox -s matrix``); this file
keeps what those cannot show, on two representatives of different shapes (BART; T5 with 3 heads of 16 channels and
relative positions), with the TorchScript-based engine (opset 17, about ten times faster here than the default):

- `test_with_past_export_is_three_files_that_generate_like_generate`: ``seq2seq-lm-with-past`` through the facade's
  pipeline with ``merge=False`` (``--no-merge``; the default merged file is test_merged_decoder.py's) writes the
  three files a runtime drives (``encoder_model.onnx``, ``decoder_model.onnx``,
  ``decoder_with_past_model.onnx``) with dynamic batch, length and past axes; every scenario of the plan passes
  (batch 1 to 4, past lengths 0, 1, 4 and 23; traced: batch 2, past 11), greedy generation equals
  ``model.generate`` for 16 tokens, a right-padded row generates what it does alone, and generation parity fails
  for another model;
- `test_an_export_right_only_at_its_traced_past_length_fails_validation`: a decoder graph right at its traced past
  length and wrong at every other one fails every scenario the plan declares for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.architectures.decoders import BartDecoderOnnxConfig, cache_keyword
from exporter_core.architectures.seq2seq import (
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_FILE,
    PAST_DECODER_AXIS,
    BartOnnxConfig,
    PLBartOnnxConfig,
    Seq2SeqDecoderOnnxConfig,
    T5OnnxConfig,
)
from exporter_core.features import config_class_for
from exporter_core.generation import GreedySettings, banned_token_ids, seq2seq_parity
from exporter_core.testing import INIT_STD, build_tiny_tokenizer, tiny_model_config
from exporter_onnx.convert import export, export_onnx
from exporter_onnx.generation import Seq2SeqOnnxGenerator
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs

_WITH_HEADS = (
    "default",
    "default-with-past",
    "seq2seq-lm",
    "seq2seq-lm-with-past",
    "sequence-classification",
    "question-answering",
)
_SEQ2SEQ = _WITH_HEADS[:4]
#: The features the old exporter listed per architecture (plus the decoder alone as a causal LM where declared).
_FEATURES = {
    "bart": _WITH_HEADS,
    "mbart": _WITH_HEADS,
    "bigbird_pegasus": _WITH_HEADS,
    "plbart": _WITH_HEADS[:5],
    "blenderbot": _SEQ2SEQ,
    "blenderbot-small": _SEQ2SEQ,
    "marian": _SEQ2SEQ,
    "m2m_100": _SEQ2SEQ,
    "t5": _SEQ2SEQ,
}
#: T5 unlike the regular 32-wide, 4-head model: 3 heads of 16 channels (an inner width unlike d_model).
_SIZES: dict[str, dict[str, Any]] = {"bart": {}, "t5": {"num_heads": 3, "d_kv": 16}}
#: Traced shape of the decoder with past: batch 2, past 11 (the encoder length 8 + 3).
TRACED_PAST = (2, 11)
FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)


def _load(tiny_checkpoint: Callable[..., Path], model_type: str, feature: str) -> tuple[Any, Any, Any]:
    folder = tiny_checkpoint(model_type, feature, with_tokenizer=False, **_SIZES[model_type])
    config_cls = config_class_for(model_type)
    model = loading.load_model(folder, feature, config_cls)
    preprocessor = loading.load_preprocessor(folder)
    return model, preprocessor, config_cls.for_feature(model.config, feature)


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = list(graph.input) + list(graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _check_with_past_files(plan: Any, folder: Path) -> None:
    """Three files with the declared names, dynamic batch / length / past axes, and one present per past."""
    layers = plan.part("decoder").cache.num_layers
    written = {name: _graph_dims(folder / name) for name in FILES}
    for part in plan.parts:
        dims = written[part.artifact]
        assert [n for n in dims if n in part.config.inputs] == part.input_names, part.name
        assert [n for n in dims if n in part.config.outputs] == part.output_names, part.name
        assert len(dims) == len(part.input_names) + len(part.output_names), part.name
    encoder, decoder, with_past = (written[name] for name in FILES)
    assert encoder["input_ids"] == encoder["attention_mask"] and all(isinstance(d, str) for d in encoder["input_ids"])
    assert len([n for n in decoder if n.startswith("present.") and ".encoder." in n]) == 2 * layers
    assert len([n for n in decoder if n.startswith("present.") and ".decoder." in n]) == 2 * layers
    assert not [n for n in with_past if n.startswith("present.") and ".encoder." in n]
    past = with_past["past_key_values.0.decoder.key"]
    cross = with_past[f"past_key_values.{layers - 1}.encoder.value"]
    present = with_past[f"present.{layers - 1}.decoder.value"]
    mask = with_past["encoder_attention_mask"]
    assert isinstance(past[1], int) and isinstance(past[3], int)
    assert all(isinstance(d, str) for d in (past[0], past[2], cross[2], present[2], with_past["input_ids"][1]))
    assert past[0] == cross[0] == mask[0] == present[0], "one batch axis"
    assert cross[2] == mask[1], "cached encoder keys and the encoder mask share the encoder length"
    assert len({past[2], present[2], with_past["input_ids"][1], mask[1]}) == 4


@pytest.mark.parametrize("model_type", ["bart", "t5"])
def test_with_past_export_is_three_files_that_generate_like_generate(
    model_type: str, tiny_checkpoint: Callable[..., Path], record_difference: Callable[..., float], tmp_path: Path
) -> None:
    from exporter.pipeline import run_export

    feature = "seq2seq-lm-with-past"
    folder = tiny_checkpoint(model_type, feature, with_tokenizer=False, **_SIZES[model_type])
    out = tmp_path / "out"
    options = {"opset": 17, "merge": False}
    report = run_export("onnx", folder, out, feature=feature, options=options, log=lambda _: None)
    assert report.passed, report.failures
    assert set(FILES) <= {p.name for p in out.iterdir()} and not (out / "model.onnx").exists()
    assert report.output == str(out), "no file of the default name: the export is the folder"
    for name, part_metadata in report.metadata["parts"].items():
        assert part_metadata["engine"] == "torchscript" and "fallback_reason" not in part_metadata, name
    model, preprocessor, config = _load(tiny_checkpoint, model_type, feature)
    plan = config.export_plan(model, preprocessor)
    _check_with_past_files(plan, out)

    past_shapes = set()
    for part in report.parts:
        record_difference(f"{model_type}:{feature} [{part.part}]", part, arch=model_type)
        assert part.atol == 1e-5
        shapes = part.reference_inputs
        if part.artifact == ENCODER_FILE:
            assert shapes["input_ids"][0] == 3, "validated at another batch size than traced (2)"
        if part.artifact == DECODER_WITH_PAST_FILE:
            assert part.export_inputs["past_key_values.0.decoder.key"][2] == TRACED_PAST[1]
            past_shapes.add((shapes["input_ids"][0], shapes["past_key_values.0.decoder.key"][2]))
    assert len(report.parts) == sum(len(p.scenarios) for p in plan.parts)
    assert TRACED_PAST not in past_shapes
    assert {past for _, past in past_shapes} == {0, 1, 4, 23}
    assert {batch for batch, _ in past_shapes} >= {1, 3, 4}

    (parity,) = report.checks
    assert parity.name == "generation parity" and parity.passed, parity.detail
    assert "identical to model.generate" in parity.detail
    assert np.shape(parity.data["exported_tokens"]) == (2, 17), "16 new tokens after the start token"
    _check_padding_and_other_model(model, config, preprocessor, out)


def _check_padding_and_other_model(model: Any, config: Any, preprocessor: Any, folder: Path) -> None:
    """A right-padded row generates what it generates alone; the parity check fails for another model."""
    import torch

    settings = GreedySettings.from_model(model, max_new_tokens=8)
    options = {"decoder_start_token_id": config.decoder_start_token_id, "banned_token_ids": banned_token_ids(model)[0]}
    generator = Seq2SeqOnnxGenerator.from_folder(folder)
    inputs = config.encoder_config().generate_reference_inputs(preprocessor, batch_size=2, seq_length=9)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    real = int(mask[1].sum())
    assert 0 < real < ids.shape[1] and mask[0].all()
    together = generator.generate(ids, mask, settings=settings, **options)
    alone = generator.generate(ids[1:, :real], None, settings=settings, **options)
    assert together.shape[1] > 2 and np.array_equal(together[1], alone[0])

    runners = {
        "encoder": generator.encoder,
        "decoder": generator.decoder,
        "decoder_with_past": generator.decoder_with_past,
    }
    assert seq2seq_parity(model, config, runners, preprocessor).passed
    torch.manual_seed(123)
    other = type(model)(model.config).eval()
    failed = seq2seq_parity(other, config, runners, preprocessor)
    assert not failed.passed
    assert "differs: export" in failed.detail


class _PastLengthBakedIn(Seq2SeqDecoderOnnxConfig):
    """Counts decoder positions from the past length seen while tracing: right only at that length."""

    def model_kwargs(self, inputs: Any) -> dict[str, Any]:
        import torch

        kwargs = super().model_kwargs(inputs)
        cache = kwargs[cache_keyword(self._config)]
        past = inputs["past_key_values.0.decoder.key"]
        seen = int(past.shape[2])  # a Python int: a constant in a trace
        # BART's decoder counts positions from the cache's length; an explicit mask (of the true length, built
        # from tensors) keeps the baked length out of the masks, so only the positions go wrong.
        cache.get_seq_length = lambda layer_idx=0: seen
        kwargs["decoder_attention_mask"] = torch.ones_like(
            torch.cat([past[:, 0, :, 0], inputs["input_ids"].float()], dim=1)
        )
        return kwargs


def test_an_export_right_only_at_its_traced_past_length_fails_validation(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, preprocessor, config = _load(tiny_checkpoint, "bart", "seq2seq-lm-with-past")
    baked = _PastLengthBakedIn(config, with_past=True)
    info = export_onnx(model, baked, tmp_path / DECODER_WITH_PAST_FILE, opset=17)
    runner = OnnxRuntimeRunner(info.path)

    def validate(inputs: Any) -> Any:
        return validate_outputs(baked, model, runner, inputs=inputs, log=lambda _: None)

    def shaped(**shape: Any) -> Any:
        return baked.generate_inputs(preprocessor, **shape)

    at_traced = validate(shaped(batch_size=3, encoder_length=9, decoder_length=2, past_length=TRACED_PAST[1]))
    assert at_traced.passed, "\n".join(at_traced.log_lines())
    for past_length in (1, 4, 23):
        report = validate(shaped(batch_size=3, encoder_length=9, decoder_length=1, past_length=past_length))
        assert not report.passed, f"past {past_length}"
        assert any(f.startswith('output "logits"') for f in report.failures), report.failures
    # Every scenario the plan declares for the decoder with past fails on it.
    scenarios = config.export_plan(model, preprocessor).part("decoder_with_past").scenarios
    assert len(scenarios) == 4 and not any(validate(s.inputs).passed for s in scenarios)
    # The same graph exported from the plan's own part config is right at every past length.
    honest = config.decoder_config(with_past=True)
    info = export_onnx(model, honest, tmp_path / "honest.onnx", opset=17)
    inputs = honest.generate_inputs(preprocessor, batch_size=3, encoder_length=9, decoder_length=1, past_length=4)
    assert validate_outputs(honest, model, OnnxRuntimeRunner(info.path), inputs=inputs, log=lambda _: None).passed


# -- configs (no export) --------------------------------------------------------------------------------------
def test_features_follow_the_old_exporter() -> None:
    expected_heads = {"bart", "mbart", "bigbird_pegasus"}
    for model_type, features in _FEATURES.items():
        cls = config_class_for(model_type)
        declared = set(cls.features)
        assert set(features) <= declared, model_type
        assert declared - set(features) <= {"causal-lm", "causal-lm-with-past"}, model_type
        has_causal = model_type not in ("m2m_100", "t5")
        assert ("causal-lm-with-past" in declared) is has_causal, model_type
        assert ("question-answering" in declared) is (model_type in expected_heads), model_type
    assert "sequence-classification" in PLBartOnnxConfig.features, "PLBart has no QA head in Transformers"
    causal = BartOnnxConfig.for_feature(tiny_model_config("bart"), "causal-lm-with-past")
    assert isinstance(causal, BartDecoderOnnxConfig) and causal.use_past


def test_part_configs_declare_the_runtime_layout() -> None:
    config = T5OnnxConfig.for_feature(tiny_model_config("t5", num_decoder_layers=3), "seq2seq-lm-with-past")
    assert config.num_layers == (2, 3)
    assert list(config.encoder_config().inputs) == ["input_ids", "attention_mask"]
    assert list(config.encoder_config().outputs) == ["last_hidden_state"]
    first = config.decoder_config(with_past=False)
    assert list(first.inputs) == ["input_ids", "encoder_attention_mask", "encoder_hidden_states"]
    assert list(first.outputs)[:5] == [
        "logits",
        "present.0.decoder.key",
        "present.0.decoder.value",
        "present.0.encoder.key",
        "present.0.encoder.value",
    ]
    assert len(first.outputs) == 1 + 4 * 3
    later = config.decoder_config(with_past=True)
    assert list(later.inputs)[:4] == [
        "input_ids",
        "encoder_attention_mask",
        "past_key_values.0.decoder.key",
        "past_key_values.0.decoder.value",
    ]
    assert later.inputs["past_key_values.2.encoder.value"] == {0: "batch", 2: "encoder_sequence"}
    assert later.inputs["past_key_values.2.decoder.key"] == {0: "batch", 2: PAST_DECODER_AXIS}
    assert list(later.outputs) == ["logits"] + [f"present.{i}.decoder.{k}" for i in range(3) for k in ("key", "value")]
    arrays = later.generate_inputs(batch_size=2, encoder_length=5, decoder_length=1, past_length=0)
    assert arrays["past_key_values.1.decoder.key"].shape == (2, 4, 0, 8)
    assert arrays["past_key_values.1.encoder.key"].shape == (2, 4, 5, 8)
    assert arrays["encoder_attention_mask"].tolist()[1] == [1, 1, 0, 0, 0]
    with pytest.raises(TypeError, match="no decoder"):
        BartOnnxConfig(tiny_model_config("bart"), task="sequence-classification").decoder_config(with_past=True)


def test_old_single_graph_with_past_layout() -> None:
    """The architecture config itself keeps the old one-graph layout: encoder and decoder inputs plus every past."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_config(tiny_model_config("bart")).eval()
    config = BartOnnxConfig.for_feature(model.config, "seq2seq-lm-with-past")
    assert list(config.inputs)[:5] == [
        "input_ids",
        "attention_mask",
        "decoder_input_ids",
        "decoder_attention_mask",
        "past_key_values.0.decoder.key",
    ]
    assert config.inputs["decoder_attention_mask"] == {0: "batch", 1: "past_decoder_sequence + decoder_sequence"}
    assert list(config.outputs)[:3] == ["logits", "present.0.decoder.key", "present.0.decoder.value"]
    inputs = config.generate_reference_inputs(framework="pt")
    with torch.no_grad():
        values = config.select_outputs(model(**config.model_kwargs(inputs)))
    shapes = dict(zip(config.outputs, (tuple(v.shape) for v in values), strict=True))
    assert shapes["logits"] == (3, 1, 99)
    assert shapes["present.1.decoder.key"] == (3, 4, 5, 8)
    assert shapes["present.1.encoder.key"] == (3, 4, 9, 8)


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_classification_dummies_hold_one_eos_per_row(with_tokenizer: bool) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_model_config("bart")).eval()
    config = BartOnnxConfig.for_feature(model.config, "sequence-classification")
    assert list(config.inputs) == ["input_ids", "attention_mask"]
    tokenizer = build_tiny_tokenizer() if with_tokenizer else None
    eos = model.config.eos_token_id
    for inputs in (
        config.generate_dummy_inputs(tokenizer, framework="np"),
        config.generate_reference_inputs(tokenizer),
    ):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        assert ((ids == eos) & (mask == 1)).sum(axis=1).tolist() == [1] * ids.shape[0]
        if not with_tokenizer:  # random ids hold no eos: it goes on each row's last real token
            last_real = mask.sum(axis=1) - 1
            assert (ids[np.arange(ids.shape[0]), last_real] == eos).all()
        with torch.no_grad():
            logits = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits
        assert logits.shape == (ids.shape[0], model.config.num_labels)


def test_old_export_call_writes_the_single_graph(tmp_path: Path) -> None:
    """``export(preprocessor, model, config, opset, output)`` with a with-past config: one file, validated."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_config(tiny_model_config("marian", init_std=INIT_STD)).eval()
    config = config_class_for("marian").for_feature(model.config, "seq2seq-lm-with-past")
    inputs, outputs = export(None, model, config, 17, tmp_path / "model.onnx")
    assert inputs == list(config.inputs) and outputs == list(config.outputs)
    report = validate_outputs(config, model, OnnxRuntimeRunner(tmp_path / "model.onnx"), log=lambda _: None)
    assert report.passed, "\n".join(report.log_lines())
