"""The export plan: its invariants, and the plan each family declares (parts, scenarios, checks).

The plan checks are run here with PyTorch itself as the "exported" artifact (a runner calling the part's module
through its config), so generation parity is shown to pass for the model and to fail for another one without
any backend installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from exporter_core.architectures.encoders import BertOnnxConfig
from exporter_core.architectures.seq2seq import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE
from exporter_core.cache import CacheLayout
from exporter_core.features import config_class_for
from exporter_core.plan import CheckResult, ExportPlan, PlanPart, Scenario
from exporter_core.testing import tiny_model_config


def _part(name: str, config: Any, cache: CacheLayout | None = None, artifact: str | None = None) -> PlanPart:
    return PlanPart(name=name, artifact=artifact, config=config, module=None, cache=cache)


@pytest.fixture(scope="module")
def bert_config() -> BertOnnxConfig:
    return BertOnnxConfig(tiny_model_config("bert"))


def test_part_names_are_unique_and_a_plan_has_parts(bert_config: BertOnnxConfig) -> None:
    with pytest.raises(ValueError, match=r"unique.*'a', 'a'"):
        ExportPlan("bert", "default", None, [_part("a", bert_config), _part("a", bert_config)])
    with pytest.raises(ValueError, match="at least one part"):
        ExportPlan("bert", "default", None, [])


def test_static_trace_refusal_is_filled_from_the_parts(bert_config: BertOnnxConfig) -> None:
    single = ExportPlan("bert", "default", None, [_part("model", bert_config)])
    assert single.static_trace_refusal is None and not single.with_past
    with_past = ExportPlan(
        "gpt2", "causal-lm-with-past", None, [_part("model", bert_config, CacheLayout.uniform(1, 1, 1))]
    )
    assert with_past.with_past
    assert "'causal-lm-with-past' takes past key values" in (with_past.static_trace_refusal or "")
    assert "without -with-past" in (with_past.static_trace_refusal or "")
    several = ExportPlan("x", "default", None, [_part("encoder", bert_config), _part("decoder", bert_config)])
    assert "2 graphs (encoder, decoder)" in (several.static_trace_refusal or "")
    declared = ExportPlan(
        "x", "default", None, [_part("a", bert_config), _part("b", bert_config)], static_trace_refusal="mine"
    )
    assert declared.static_trace_refusal == "mine", "a family's own reason is kept"


def test_part_lookup_and_names(bert_config: BertOnnxConfig) -> None:
    plan = ExportPlan(
        "x", "default", None, [_part("encoder", bert_config, artifact="e.onnx"), _part("decoder", bert_config)]
    )
    assert plan.main.name == "encoder"
    assert plan.part("decoder") is plan.parts[1]
    with pytest.raises(KeyError, match="no part 'decoder_with_past'; parts: encoder, decoder"):
        plan.part("decoder_with_past")
    assert plan.parts[0].artifact_name("model.onnx") == "e.onnx"
    assert plan.parts[1].artifact_name("model.onnx") == "model.onnx"
    assert plan.parts[0].input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert plan.parts[0].output_names == ["last_hidden_state"]


def test_capture_switches_attention_and_restores_it() -> None:
    from transformers import AutoModel

    model = AutoModel.from_config(tiny_model_config("bert"), attn_implementation="sdpa")
    config = BertOnnxConfig(model.config)
    plan = ExportPlan("bert", "default", model, [PlanPart("model", None, config, model)], attn_implementation="eager")
    with plan.capture():
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="boom"), plan.capture():
        assert model.config._attn_implementation == "eager"
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    keep = ExportPlan("bert", "default", model, [PlanPart("model", None, config, model)])
    with keep.capture():
        assert model.config._attn_implementation == "sdpa"


def test_check_result_to_dict() -> None:
    result = CheckResult("generation parity", False, "token 3 differs", {"exported_tokens": [[1, 2]]})
    assert result.to_dict() == {
        "name": "generation parity",
        "passed": False,
        "detail": "token 3 differs",
        "exported_tokens": [[1, 2]],
    }


# -- the plans the families declare ------------------------------------------------------------------------------


def _torch_runner(part: PlanPart) -> Any:
    """A runner that calls the part's module through its config: PyTorch standing in for an exported artifact."""
    import torch

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {name: torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in part.config.inputs}
        with torch.no_grad():
            values = part.config.select_outputs(part.module(**part.config.model_kwargs(tensors)))
        return {name: value.numpy() for name, value in zip(part.config.outputs, values, strict=True)}

    return run


def _model(model_type: str, feature: str, seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
    import torch

    from exporter_core.loading import model_class_for

    config_cls = config_class_for(model_type)
    torch.manual_seed(seed)
    model_config = tiny_model_config(model_type, **overrides)
    model = model_class_for(feature, config_cls).from_config(model_config).eval()
    return model, config_cls.for_feature(model.config, feature)


def test_an_encoder_plan_is_one_part_validated_at_another_shape() -> None:
    model, config = _model("bert", "sequence-classification")
    plan = config.export_plan(model)
    assert (plan.model_type, plan.feature) == ("bert", "sequence-classification")
    (part,) = plan.parts
    assert (part.name, part.artifact, part.module, part.cache) == ("model", None, model, None)
    assert part.output_names == ["logits"]
    (scenario,) = part.scenarios
    assert scenario.reference is None
    assert {name: value.shape for name, value in scenario.inputs.items()} == {name: (3, 9) for name in part.input_names}
    assert plan.checks == [] and plan.static_trace_refusal is None and not plan.with_past


def test_a_decoder_plan_without_past_has_no_cache_and_no_check() -> None:
    model, config = _model("gpt2", "causal-lm")
    plan = config.export_plan(model)
    assert plan.checks == [] and plan.main.cache is None and plan.static_trace_refusal is None
    assert [s.label for s in plan.main.scenarios] == ["batch 3, sequence 9, left padding"]


def test_a_decoder_plan_with_past_validates_other_past_lengths_and_checks_generation() -> None:
    model, config = _model("gpt2", "causal-lm-with-past")
    plan = config.export_plan(model)
    (part,) = plan.parts
    assert part.cache == CacheLayout.uniform(2, 4, 8)
    assert "past key values" in (plan.static_trace_refusal or "")
    shapes = [
        (s.inputs["input_ids"].shape, s.inputs["past_key_values.0.key"].shape[2], s.inputs["attention_mask"].shape)
        for s in part.scenarios
    ]
    assert len(shapes) == 4
    for ids, past, mask in shapes:
        assert mask == (ids[0], past + ids[1]), "the mask covers past and new tokens"
    traced = config.generate_dummy_inputs(framework="np")
    traced_shape = (traced["input_ids"].shape, traced["past_key_values.0.key"].shape[2])
    assert traced_shape not in [(ids, past) for ids, past, _ in shapes]
    assert {past for _, past, _ in shapes} == {11, 0, 5, 2}
    (check,) = plan.checks
    assert check.name == "generation parity"

    result = check.run({"model": _torch_runner(part)})
    assert result.passed, result.detail
    assert np.shape(result.data["exported_tokens"]) == (2, 16)
    assert result.data["exported_tokens"] == result.data["expected_tokens"]

    # The same check over another random model's "artifact" bites.
    other_model, other_config = _model("gpt2", "causal-lm-with-past", seed=1)
    other = other_config.export_plan(other_model).main
    failed = check.run({"model": _torch_runner(other)})
    assert not failed.passed and failed.detail.startswith("new token ")
    broken = check.run({"model": lambda inputs: {}})
    assert not broken.passed and broken.detail.startswith("decoding with the export failed: KeyError")


def test_a_seq2seq_plan_with_past_is_three_graphs_with_a_generation_check() -> None:
    model, config = _model("bart", "seq2seq-lm-with-past", decoder_start_token_id=0)
    plan = config.export_plan(model)
    assert [(p.name, p.artifact) for p in plan.parts] == [
        ("encoder", ENCODER_FILE),
        ("decoder", DECODER_FILE),
        ("decoder_with_past", DECODER_WITH_PAST_FILE),
    ]
    encoder, decoder, with_past = plan.parts
    assert encoder.module is model.get_encoder() and decoder.module is model and with_past.module is model
    assert encoder.cache is None
    assert decoder.cache == with_past.cache == CacheLayout.uniform(2, 4, 8, cross_attention=True)
    assert encoder.output_names == ["last_hidden_state"]
    assert "encoder_hidden_states" in decoder.input_names and "past_key_values.0.encoder.key" in with_past.input_names
    assert not [n for n in with_past.output_names if ".encoder." in n]
    assert all(len(p.scenarios) >= 2 for p in plan.parts[1:])
    past_lengths = {s.inputs["past_key_values.0.decoder.key"].shape[2] for s in with_past.scenarios}
    assert past_lengths == {4, 1, 23, 0}
    assert plan.static_trace_refusal is not None

    (check,) = plan.checks
    runners = {part.name: _torch_runner(part) for part in plan.parts}
    result = check.run(runners)
    assert result.passed, result.detail
    assert np.shape(result.data["exported_tokens"]) == (2, 17), "the start token and 16 new ones"
    other_model, other_config = _model("bart", "seq2seq-lm-with-past", seed=1, decoder_start_token_id=0)
    other_parts = other_config.export_plan(other_model).parts
    swapped = {**runners, "decoder_with_past": _torch_runner(other_parts[2])}
    assert not check.run(swapped).passed, "a wrong decoder-with-past graph is caught"


def test_a_seq2seq_plan_without_past_is_one_graph() -> None:
    model, config = _model("t5", "seq2seq-lm")
    plan = config.export_plan(model)
    assert [p.name for p in plan.parts] == ["model"] and plan.checks == [] and plan.static_trace_refusal is None
    assert plan.main.input_names == ["input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"]


def test_a_family_may_add_scenarios_with_another_reference(bert_config: BertOnnxConfig) -> None:
    """A scenario can compare with a module other than the part's own (a wrapper, say)."""
    marker = object()

    class _WithExtra(BertOnnxConfig):
        def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
            extra = Scenario("batch 1", self.generate_dummy_inputs(batch_size=1, framework="np"), reference=marker)
            return [*super().validation_scenarios(preprocessor), extra]

    plan = _WithExtra(tiny_model_config("bert")).export_plan(model=None)
    assert [s.reference for s in plan.main.scenarios] == [None, marker]
    assert plan.checks == []
