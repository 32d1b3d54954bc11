"""`OnnxConfig` and friends keep the members and behaviour of the old ``transformers.onnx`` configs."""

from __future__ import annotations

import types
from collections import OrderedDict
from typing import Any, Mapping

import pytest

from exporter_core.architectures.encoders import (
    BertOnnxConfig,
    DistilBertOnnxConfig,
    LayoutLMOnnxConfig,
    RobertaOnnxConfig,
)
from exporter_core.config import (
    EXTERNAL_DATA_FORMAT_SIZE_LIMIT,
    OnnxConfig,
    OnnxConfigWithPast,
    OnnxSeq2SeqConfigWithPast,
    PatchingSpec,
)
from exporter_core.errors import InvalidArgumentError, OpsetError, UnsupportedFeatureError, UserError
from exporter_core.testing import tiny_model_config


@pytest.fixture(scope="module")
def bert_config() -> Any:
    """A tiny BertConfig."""
    return tiny_model_config("bert")


# -- inputs and outputs -------------------------------------------------------------------------------------------


def test_inputs_are_ordered_as_the_forward_arguments(bert_config: Any) -> None:
    inputs = BertOnnxConfig(bert_config).inputs
    assert isinstance(inputs, OrderedDict)
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(axes == {0: "batch", 1: "sequence"} for axes in inputs.values())
    assert list(DistilBertOnnxConfig(tiny_model_config("distilbert")).inputs) == ["input_ids", "attention_mask"]
    assert list(RobertaOnnxConfig(tiny_model_config("roberta")).inputs) == ["input_ids", "attention_mask"]
    assert list(LayoutLMOnnxConfig(tiny_model_config("layoutlm")).inputs) == [
        "input_ids",
        "bbox",
        "attention_mask",
        "token_type_ids",
    ]


def test_multiple_choice_inputs_have_a_choice_axis(bert_config: Any) -> None:
    inputs = BertOnnxConfig(bert_config, task="multiple-choice").inputs
    assert all(axes == {0: "batch", 1: "choice", 2: "sequence"} for axes in inputs.values())


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("default", {"last_hidden_state": {0: "batch", 1: "sequence"}}),
        ("masked-lm", {"logits": {0: "batch", 1: "sequence"}}),
        ("causal-lm", {"logits": {0: "batch", 1: "sequence"}}),
        ("sequence-classification", {"logits": {0: "batch"}}),
        ("multiple-choice", {"logits": {0: "batch"}}),
        ("token-classification", {"logits": {0: "batch", 1: "sequence"}}),
        (
            "question-answering",
            {"start_logits": {0: "batch", 1: "sequence"}, "end_logits": {0: "batch", 1: "sequence"}},
        ),
        ("semantic-segmentation", {"logits": {0: "batch", 1: "num_labels", 2: "height", 3: "width"}}),
        ("seq2seq-lm", {"logits": {0: "batch", 1: "decoder_sequence"}}),
    ],
)
def test_outputs_follow_the_task(bert_config: Any, task: str, expected: dict[str, dict[int, str]]) -> None:
    outputs = BertOnnxConfig(bert_config, task=task).outputs
    assert list(outputs) == list(expected)
    assert {k: dict(v) for k, v in outputs.items()} == expected


def test_outputs_are_a_copy(bert_config: Any) -> None:
    config = BertOnnxConfig(bert_config)
    config.outputs["last_hidden_state"][2] = "hidden"
    assert BertOnnxConfig(bert_config).outputs["last_hidden_state"] == {0: "batch", 1: "sequence"}


def test_unknown_task_is_refused_listing_the_known_ones(bert_config: Any) -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"'summarisation' is not a known task; use one of .*masked-lm"):
        BertOnnxConfig(bert_config, task="summarisation")


def test_dynamic_axes_join_inputs_and_outputs(bert_config: Any) -> None:
    axes = DistilBertOnnxConfig(tiny_model_config("distilbert"), task="question-answering").dynamic_axes()
    assert list(axes) == ["input_ids", "attention_mask", "start_logits", "end_logits"]


# -- the old members ----------------------------------------------------------------------------------------------


def test_old_defaults(bert_config: Any) -> None:
    config = BertOnnxConfig(bert_config)
    assert config.default_batch_size == 2
    assert config.default_sequence_length == 8
    assert config.default_num_choices == 4
    assert config.default_onnx_opset == 18
    assert config.atol_for_validation == 1e-5
    assert config.is_torch_support_available is True
    assert config.model_config is bert_config
    assert config.task == "default"


def test_values_override_turns_the_cache_off_and_on_with_past(bert_config: Any) -> None:
    assert hasattr(bert_config, "use_cache")
    assert BertOnnxConfig(bert_config).values_override == {"use_cache": False}
    gpt2 = tiny_model_config("gpt2")
    assert OnnxConfigWithPast(gpt2).values_override == {"use_cache": False}
    assert OnnxConfigWithPast.with_past(gpt2).values_override == {"use_cache": True}
    assert BertOnnxConfig(types.SimpleNamespace(vocab_size=5)).values_override is None


def test_use_external_data_format_at_two_gibibytes_of_fp32() -> None:
    limit_params = EXTERNAL_DATA_FORMAT_SIZE_LIMIT // 4
    assert OnnxConfig.use_external_data_format(limit_params) is True
    assert OnnxConfig.use_external_data_format(limit_params - 1) is False
    assert OnnxConfig.use_external_data_format(110_000_000) is False


def test_flatten_output_collection_property() -> None:
    flat = OnnxConfig.flatten_output_collection_property("present", [("k0", "v0"), ("k1", "v1")])
    assert flat == {"present.0": "k0", "present.1": "v0", "present.2": "k1", "present.3": "v1"}
    assert OnnxConfig.flatten_output_collection_property("hidden", ["a", "b"]) == {"hidden.0": "a", "hidden.1": "b"}
    assert OnnxConfig.flatten_output_collection_property("empty", []) == {}


def _patch_target() -> types.SimpleNamespace:
    return types.SimpleNamespace(op=lambda x: f"orig({x})")


def test_patch_ops_and_restore_ops(bert_config: Any) -> None:
    target = _patch_target()
    original = target.op
    config = BertOnnxConfig(bert_config, patching_specs=[PatchingSpec(target, "op", lambda x: f"custom({x})")])
    config.patch_ops()
    assert target.op(1) == "custom(1)"
    config.restore_ops()
    assert target.op is original


def test_patch_ops_with_a_wrapper(bert_config: Any) -> None:
    target = _patch_target()

    def wrapper(fn: Any) -> Any:
        return lambda x: f"wrapped[{fn(x)}]"

    spec = PatchingSpec(target, "op", lambda x: f"custom({x})", op_wrapper=wrapper)
    config = BertOnnxConfig(bert_config, patching_specs=[spec])
    config.patch_ops()
    assert target.op(2) == "wrapped[custom(2)]"
    config.restore_ops()
    assert target.op(2) == "wrapped[orig(2)]"


def test_patched_ops_restores_on_exception(bert_config: Any) -> None:
    target = _patch_target()
    original = target.op
    config = BertOnnxConfig(bert_config, patching_specs=[PatchingSpec(target, "op", lambda x: "custom")])
    with pytest.raises(RuntimeError, match="boom"):
        with config.patched_ops() as entered:
            assert entered is config
            assert target.op(0) == "custom"
            raise RuntimeError("boom")
    assert target.op is original


def test_from_model_config(bert_config: Any) -> None:
    config = BertOnnxConfig.from_model_config(bert_config, task="token-classification")
    assert isinstance(config, BertOnnxConfig)
    assert config.task == "token-classification"
    assert list(config.outputs) == ["logits"]
    assert BertOnnxConfig.from_model_config(bert_config).task == "default"


def test_for_feature_builds_supported_features(bert_config: Any) -> None:
    config = BertOnnxConfig.for_feature(bert_config, "question-answering")
    assert isinstance(config, BertOnnxConfig)
    assert list(config.outputs) == ["start_logits", "end_logits"]


def test_for_feature_refuses_unsupported_features_listing_supported_ones() -> None:
    with pytest.raises(UnsupportedFeatureError) as caught:
        DistilBertOnnxConfig.for_feature(tiny_model_config("distilbert"), "causal-lm")
    message = str(caught.value)
    assert "DistilBertOnnxConfig does not support feature 'causal-lm'" in message
    assert "supported: default, masked-lm, sequence-classification, multiple-choice" in message
    assert isinstance(caught.value, UserError)


def test_check_opset_refuses_low_opsets_naming_the_minimum(bert_config: Any) -> None:
    config = BertOnnxConfig(bert_config)
    config.check_opset(config.min_onnx_opset)
    config.check_opset(18)
    with pytest.raises(
        OpsetError,
        match=r"opset 11 is too low for BertOnnxConfig: it needs at least 14 \(.*scaled_dot_product_attention.*\); pass opset=14",
    ):
        config.check_opset(11)
    for bad in ("17", 17.0, True):
        with pytest.raises(InvalidArgumentError, match="opset must be an integer"):
            config.check_opset(bad)  # type: ignore[arg-type]


def test_inputs_are_required_of_subclasses(bert_config: Any) -> None:
    with pytest.raises(TypeError, match="must define `inputs`"):
        OnnxConfig(bert_config).inputs


class _GuideStyleConfig(OnnxConfig):
    """The guide's custom config: subclasses OnnxConfig and declares only `inputs`."""

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict(
            [("input_ids", {0: "batch", 1: "sequence"}), ("attention_mask", {0: "batch", 1: "sequence"})]
        )


def test_a_config_declaring_only_inputs_gets_dummies(bert_config: Any) -> None:
    inputs = _GuideStyleConfig(bert_config).generate_dummy_inputs(framework="np")
    assert list(inputs) == ["input_ids", "attention_mask"]
    assert inputs["input_ids"].shape == (2, 8)


def test_an_input_nobody_makes_is_named(bert_config: Any) -> None:
    class Unknown(_GuideStyleConfig):
        @property
        def inputs(self) -> Mapping[str, Mapping[int, str]]:
            return OrderedDict([("input_ids", {0: "batch"}), ("speaker_embedding", {0: "batch"})])

    with pytest.raises(TypeError, match=r"made no value for \['speaker_embedding'\]"):
        Unknown(bert_config).generate_dummy_inputs(framework="np")


def test_select_outputs_orders_by_config_and_names_a_missing_one(bert_config: Any) -> None:
    config = BertOnnxConfig(bert_config, task="question-answering")
    assert config.select_outputs({"end_logits": 2, "start_logits": 1, "loss": 0}) == (1, 2)
    with pytest.raises(KeyError, match="no output named 'end_logits'"):
        config.select_outputs({"start_logits": 1})


def test_model_kwargs_ask_for_a_dict_without_cache(bert_config: Any) -> None:
    kwargs = BertOnnxConfig(bert_config).model_kwargs({"input_ids": 1})
    assert kwargs == {"input_ids": 1, "return_dict": True, "use_cache": False}


# -- with past ------------------------------------------------------------------------------------------------------


def test_with_past_members() -> None:
    gpt2 = tiny_model_config("gpt2")
    config = OnnxConfigWithPast.with_past(gpt2, task="causal-lm")
    assert config.use_past is True and config.task == "causal-lm"
    assert config.num_layers == 2
    assert config.num_attention_heads == 4
    filled: OrderedDict[str, Any] = OrderedDict()
    config.fill_with_past_key_values_(filled, direction="inputs")
    assert list(filled) == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
    ]
    assert filled["past_key_values.0.key"] == {0: "batch", 2: "past_sequence + sequence"}
    outputs: OrderedDict[str, Any] = OrderedDict()
    config.fill_with_past_key_values_(outputs, direction="outputs", inverted_values_shape=True)
    assert outputs["present.1.value"] == {0: "batch", 1: "past_sequence + sequence"}
    with pytest.raises(ValueError, match='direction must either be "inputs" or "outputs"'):
        config.fill_with_past_key_values_(OrderedDict(), direction="sideways")


def test_seq2seq_with_past_members() -> None:
    bart = tiny_model_config("bart", encoder_layers=3)
    config = OnnxSeq2SeqConfigWithPast.with_past(bart, task="seq2seq-lm")
    assert config.num_layers == (3, 2)
    assert config.num_attention_heads == (4, 4)
    assert config.outputs == {"logits": {0: "batch", 1: "decoder_sequence"}}
    filled: OrderedDict[str, Any] = OrderedDict()
    config.fill_with_past_key_values_(filled, direction="outputs")
    assert len(filled) == 8
    assert filled["present.1.decoder.value"] == {0: "batch", 2: "past_decoder_sequence"}
    assert filled["present.1.encoder.key"] == {0: "batch", 2: "past_encoder_sequence"}
    assert OnnxSeq2SeqConfigWithPast(bart, task="default").outputs["last_hidden_state"] == {
        0: "batch",
        1: "decoder_sequence",
    }
