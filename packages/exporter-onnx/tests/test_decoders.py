"""Decoders (GPT-2, GPT-J, GPT-Neo, and the BART family's decoder alone) exported to ONNX with past key values.

Every (architecture, feature) pair is exported and validated by the generated cases (``nox -s matrix``); this file
keeps what those cannot show. A few representative with-past exports go through the facade's pipeline (the
plan's parts, scenarios and generation parity, as users run them) and their files are checked for separate
dynamic batch, past and sequence axes. The other tests show that the checks bite:

- `test_an_export_right_only_at_its_traced_past_length_fails_validation`: a graph right at the traced past length
  and wrong at every other one fails every scenario the plan declares;
- `test_generation_pads_on_the_left_without_changing_tokens`: a left-padded row generates what the same prompt
  alone does (position ids from the mask), and generation parity fails for a model that is not the exported one.

The TorchScript-based engine (opset 17, about a second per export) serves every test not about the default one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.architectures.decoders import (
    PAST_AXIS,
    TOTAL_AXIS,
    BartDecoderOnnxConfig,
    GPT2OnnxConfig,
    GPTJOnnxConfig,
    GPTNeoOnnxConfig,
)
from exporter_core.cache import CacheLayout
from exporter_core.errors import UnsupportedFeatureError
from exporter_core.features import config_class_for
from exporter_core.generation import GreedySettings, causal_lm_parity
from exporter_core.testing import tiny_model_config
from exporter_onnx.convert import export_onnx
from exporter_onnx.generation import OnnxCausalLM, layout_of
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs

# GPT-J rotates 6 of its 8 channels per head; GPT-Neo's local layers see 4 tokens back, fewer than the prompts;
# the BART decoder has fewer heads (2) than the encoder (4), so its cache must be sized from the decoder's.
_GPTJ = {"rotary_dim": 6}
_NEO = {"window_size": 4}
_BART_DECODER = {"encoder_layers": 3, "decoder_layers": 2, "decoder_attention_heads": 2}


def _load(
    tiny_checkpoint: Callable[..., Path], model_type: str, feature: str, *, tokenizer: bool = False, **overrides: Any
) -> tuple[Any, Any, Any]:
    folder = tiny_checkpoint(model_type, feature, with_tokenizer=tokenizer, **overrides)
    config_cls = config_class_for(model_type)
    model = loading.load_model(folder, feature, config_cls)
    preprocessor = loading.load_preprocessor(folder)
    return model, preprocessor, config_cls.for_feature(model.config, feature)


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = list(graph.input) + list(graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.mark.parametrize(
    ("model_type", "overrides", "tokenizer", "opset"),
    [
        pytest.param("gpt2", {}, True, None, id="gpt2-default-engine"),
        pytest.param("bart", _BART_DECODER, False, 17, id="bart-decoder-opset17"),
    ],
)
def test_with_past_export_validates_every_scenario_and_generates_like_generate(
    model_type: str,
    overrides: dict[str, Any],
    tokenizer: bool,
    opset: int | None,
    tiny_checkpoint: Callable[..., Path],
    record_difference: Callable[..., float],
    tmp_path: Path,
) -> None:
    from exporter.pipeline import run_export

    folder = tiny_checkpoint(model_type, "causal-lm-with-past", with_tokenizer=tokenizer, **overrides)
    report = run_export(
        "onnx", folder, tmp_path / "out", feature="causal-lm-with-past", options={"opset": opset}, log=lambda _: None
    )
    assert report.passed, report.failures
    engine = "dynamo" if opset is None else "torchscript"
    assert report.metadata["engine"] == engine and "fallback_reason" not in report.metadata

    # The file takes and returns the declared cache, with dynamic batch, past, past + sequence and sequence axes.
    model, _, config = _load(tiny_checkpoint, model_type, "causal-lm-with-past", tokenizer=tokenizer, **overrides)
    layout = config.cache_layout
    assert isinstance(layout, CacheLayout)
    path = tmp_path / "out" / "model.onnx"
    assert layout_of(OnnxRuntimeRunner(path)) == layout, "heads and head size of every cached layer"
    dims = _graph_dims(path)
    assert [n for n in dims if n.startswith("past_key_values.")] == layout.names("past_key_values")
    assert [n for n in dims if n.startswith("present.")] == layout.names("present")
    past, present, mask = (
        dims["past_key_values.0.key"],
        dims[f"present.{layout.num_layers - 1}.value"],
        dims["attention_mask"],
    )
    assert isinstance(past[0], str) and isinstance(past[2], str) and isinstance(past[1], int)
    assert past[0] == mask[0] == present[0], "one batch axis"
    assert len({past[2], mask[1], dims["input_ids"][1]}) == 3, "past, past + sequence and sequence are separate axes"

    # Every scenario passed, none at the traced shape (batch 2, sequence 8, past 10), an empty past among them.
    shapes = set()
    for part in report.parts:
        record_difference(f"{model_type}:causal-lm-with-past [{part.part}]", part, arch=model_type)
        assert part.atol == 1e-5 and part.export_inputs["past_key_values.0.key"][2] == 10
        ids = part.reference_inputs["input_ids"]
        shapes.add((ids[0], ids[1], part.reference_inputs["past_key_values.0.key"][2]))
    assert len(report.parts) == 4 and (2, 8, 10) not in shapes
    assert {past_length for _, _, past_length in shapes} == {0, 2, 5, 11} and (1, 1, 5) in shapes

    # Rows of the reference inputs differ by far more than the tolerance: a batch mix-up would fail.
    import torch

    inputs = config.generate_reference_inputs(None, framework="pt")
    with torch.no_grad():
        first = config.select_outputs(model(**config.model_kwargs(inputs)))[0]
    assert float((first[0, -1] - first[1, -1]).abs().max()) > 100 * config.atol_for_validation

    (parity,) = report.checks
    assert parity.name == "generation parity" and parity.passed, parity.detail
    assert "identical to model.generate" in parity.detail
    assert np.shape(parity.data["exported_tokens"]) == (2, 16), "16 new tokens in each of 2 rows"


@pytest.mark.parametrize(("model_type", "overrides", "tokenizer"), [("gptj", _GPTJ, False), ("gpt_neo", _NEO, False)])
def test_generation_pads_on_the_left_without_changing_tokens(
    model_type: str, overrides: dict[str, Any], tokenizer: bool, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Position ids come from the mask: a left-padded row generates what the same prompt alone generates,
    and the parity check fails for a model that is not the exported one."""
    import torch
    from transformers import AutoModelForCausalLM

    model, preprocessor, config = _load(
        tiny_checkpoint, model_type, "causal-lm-with-past", tokenizer=tokenizer, **overrides
    )
    info = export_onnx(model, config, tmp_path / "model.onnx", preprocessor=preprocessor, opset=17)
    runner = OnnxRuntimeRunner(info.path)
    generator = OnnxCausalLM(runner)
    settings = GreedySettings.from_model(model, max_new_tokens=8)
    prompt = config.generate_past_inputs(preprocessor, batch_size=2, seq_length=8, past_length=0, padded=True, seed=2)
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    real = int(mask[1].sum())
    assert 0 < real < ids.shape[1] and mask[0].all()
    together = generator.generate(ids, mask, settings=settings)
    alone = generator.generate(ids[1:, -real:], None, settings=settings)
    assert together.shape[1] > ids.shape[1]
    assert np.array_equal(together[1, ids.shape[1] :], alone[0, real:])

    parity = causal_lm_parity(model, config, runner, preprocessor)
    assert parity.passed, parity.detail
    torch.manual_seed(123)
    other = AutoModelForCausalLM.from_config(model.config).eval()
    failed = causal_lm_parity(other, config, runner, preprocessor)
    assert not failed.passed
    assert failed.detail.startswith("new token ") and "differs: export" in failed.detail
    assert failed.data["exported_tokens"] == parity.data["exported_tokens"], "the export's tokens did not change"


class _PastBakedIn(GPT2OnnxConfig):
    """Counts positions from the traced past length (10) whatever the past is: right only at that length."""

    traced_past = 10

    def model_kwargs(self, inputs: Any) -> dict[str, Any]:
        import torch

        kwargs = super().model_kwargs(inputs)
        new_tokens = inputs["input_ids"].shape[1]
        kwargs["position_ids"] = torch.arange(new_tokens).unsqueeze(0) + self.traced_past
        return kwargs


def test_an_export_right_only_at_its_traced_past_length_fails_validation(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, preprocessor, correct = _load(tiny_checkpoint, "gpt2", "causal-lm-with-past", tokenizer=True)
    baked = _PastBakedIn.with_past(model.config, task="causal-lm")
    assert baked.past_length_offset + baked.default_sequence_length == _PastBakedIn.traced_past
    info = export_onnx(model, baked, tmp_path / "model.onnx", preprocessor=preprocessor, opset=17)
    runner = OnnxRuntimeRunner(info.path)

    def validate(inputs: Any) -> Any:
        return validate_outputs(correct, model, runner, inputs=inputs, log=lambda _: None)

    def at_past(past_length: int) -> Any:
        return correct.generate_past_inputs(
            preprocessor, batch_size=2, seq_length=8, past_length=past_length, padded=False, seed=3
        )

    assert validate(at_past(10)).passed, "the broken graph is right at the traced past length"
    for past_length in (0, 5, 13):
        report = validate(at_past(past_length))
        assert not report.passed
        assert any(f.startswith('output "logits"') for f in report.failures)

    # Every scenario the plan declares (all at other past lengths) fails on it.
    plan = correct.export_plan(model, preprocessor)
    reports = [validate(scenario.inputs) for scenario in plan.main.scenarios]
    assert len(reports) == 4 and not any(r.passed for r in reports)


# -- configs, without exporting ------------------------------------------------------------------------------------


def test_with_past_inputs_and_outputs() -> None:
    config = GPT2OnnxConfig.with_past(tiny_model_config("gpt2"), task="causal-lm")
    assert list(config.inputs) == [
        "input_ids",
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
        "attention_mask",
    ]
    assert config.inputs["past_key_values.1.value"] == {0: "batch", 2: PAST_AXIS}
    assert config.inputs["attention_mask"] == {0: "batch", 1: TOTAL_AXIS}
    assert list(config.outputs) == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert config.outputs["present.0.key"] == {0: "batch", 2: TOTAL_AXIS}
    assert config.values_override == {"use_cache": True}
    plain = GPT2OnnxConfig(tiny_model_config("gpt2"), task="sequence-classification")
    assert list(plain.inputs) == ["input_ids", "attention_mask"] and list(plain.outputs) == ["logits"]
    assert plain.values_override == {"use_cache": False} and plain.cache_layout is None
    assert GPT2OnnxConfig.padding_side == "left"


@pytest.mark.parametrize(
    ("config_cls", "model_type", "heads", "head_dim"),
    [(GPT2OnnxConfig, "gpt2", 4, 8), (GPTNeoOnnxConfig, "gpt_neo", 4, 8), (GPTJOnnxConfig, "gptj", 2, 16)],
)
def test_past_inputs_at_any_past_length(config_cls: type, model_type: str, heads: int, head_dim: int) -> None:
    overrides = {"n_head": 2} if model_type == "gptj" else {}
    config = config_cls.with_past(tiny_model_config(model_type, **overrides), task="causal-lm")
    dummy = config.generate_dummy_inputs(framework="np")
    assert dummy["past_key_values.0.key"].shape == (2, heads, 10, head_dim)
    assert dummy["attention_mask"].shape == (2, 18) and dummy["attention_mask"].all()
    for past_length in (0, 3):
        inputs = config.generate_past_inputs(batch_size=3, seq_length=4, past_length=past_length, padded=True)
        assert inputs["past_key_values.1.value"].shape == (3, heads, past_length, head_dim)
        mask = inputs["attention_mask"]
        assert mask.shape == (3, past_length + 4)
        assert mask[0].all() and not mask[2].all()
        assert (np.diff(mask, axis=1) >= 0).all(), "padding is on the left"
        pad = config.model_config.pad_token_id or 0
        assert (inputs["input_ids"][mask[:, past_length:] == 0] == pad).all()
    with pytest.raises(TypeError, match="without past"):
        config_cls(config.model_config).generate_past_inputs(batch_size=1, seq_length=1, past_length=0)


def test_sequence_classification_without_a_pad_token_is_refused_with_the_fix() -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"set pad_token_id in config\.json"):
        GPTNeoOnnxConfig.for_feature(tiny_model_config("gpt_neo", pad_token_id=None), "sequence-classification")
    assert GPTNeoOnnxConfig.for_feature(tiny_model_config("gpt_neo", pad_token_id=1), "sequence-classification")


def test_bart_family_causal_lm_is_the_decoder_alone() -> None:
    bart = tiny_model_config("bart", encoder_layers=3, decoder_layers=3, decoder_attention_heads=2)
    config = config_class_for("bart").for_feature(bart, "causal-lm-with-past")
    assert isinstance(config, BartDecoderOnnxConfig) and config.use_past
    assert config.num_layers == 3 and config.num_attention_heads == 2 and config.head_dim == 16
    assert config.cache_layout == CacheLayout.uniform(3, 2, 16), "the decoder's heads, not the encoder's 4"
    assert not BartDecoderOnnxConfig.position_ids_from_mask
    plain = config_class_for("marian").for_feature(tiny_model_config("marian"), "causal-lm")
    assert isinstance(plain, BartDecoderOnnxConfig) and not plain.use_past
    assert not isinstance(config_class_for("bart").for_feature(bart, "seq2seq-lm"), BartDecoderOnnxConfig)
