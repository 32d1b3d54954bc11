"""The generic text encoder family: features, inputs and tiny sizes per model type, the extra inputs a few types take,
and that the tiny models run on the dummy inputs. Fast: no export (the export cases run every type on every backend
in the matrix tier)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
import pytest
import torch

from exporter_core.architectures.text_encoders import TextEncoderFamilyOnnxConfig
from exporter_core.loading import model_class_for
from exporter_core.modeling import export_module, prepared_for_export
from exporter_core.plugins import load_architecture

FAMILY_TYPES = sorted(
    ep.name
    for ep in metadata.entry_points(group="exporter.architectures")
    if ep.value.startswith("exporter_core.architectures.text_encoders:")
)


def _config(model_type: str, **overrides: object) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**TextEncoderFamilyOnnxConfig.tiny_sizes(model_type), **overrides})


def _export_config(model_type: str, feature: str = "default", **overrides: object) -> TextEncoderFamilyOnnxConfig:
    config = TextEncoderFamilyOnnxConfig.for_feature(_config(model_type, **overrides), feature)
    assert isinstance(config, TextEncoderFamilyOnnxConfig)
    return config


def test_the_family_serves_the_model_types_of_the_issue() -> None:
    issue = {
        "deberta", "deberta-v2", "modernbert", "nystromformer", "longformer", "funnel", "canine", "esm", "ernie",
        "rembert", "roc_bert", "megatron-bert", "xmod", "roberta-prelayernorm", "mra", "yoso", "luke", "markuplm",
        "layoutlmv3", "nomic_bert",
    }  # fmt: skip
    assert issue <= set(FAMILY_TYPES)
    assert {load_architecture(t) for t in FAMILY_TYPES} == {TextEncoderFamilyOnnxConfig}


@pytest.mark.parametrize(
    ("model_type", "features"),
    [
        ("deberta", ("default", "masked-lm", "sequence-classification", "token-classification", "question-answering")),
        ("esm", ("default", "masked-lm", "sequence-classification", "token-classification")),
        ("markuplm", ("default", "sequence-classification", "token-classification", "question-answering")),
        (
            "modernbert",
            (
                "default",
                "masked-lm",
                "sequence-classification",
                "multiple-choice",
                "token-classification",
                "question-answering",
            ),
        ),
    ],
)
def test_features_are_the_heads_transformers_has(model_type: str, features: tuple[str, ...]) -> None:
    assert TextEncoderFamilyOnnxConfig.supported_features(model_type) == features


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_tiny_sizes_are_small_and_keep_special_ids_in_the_vocabulary(model_type: str) -> None:
    config = _config(model_type)
    vocab = getattr(config, "vocab_size", None)
    assert getattr(config, "hidden_size", getattr(config, "d_model", 32)) <= 32
    if vocab is not None:
        assert vocab <= 99
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            value = getattr(config, name, None)
            assert value is None or 0 <= value < vocab, (name, value)


def test_token_types_are_an_input_only_where_the_checkpoint_has_several() -> None:
    assert "token_type_ids" in _export_config("roberta-prelayernorm").inputs
    assert "token_type_ids" not in _export_config("roberta-prelayernorm", type_vocab_size=1).inputs
    assert "token_type_ids" not in _export_config("deberta").inputs  # type_vocab_size 0
    assert "token_type_ids" not in _export_config("modernbert").inputs  # no token types at all
    # Funnel builds its attention structure from token types without embedding them.
    assert "token_type_ids" in _export_config("funnel").inputs


def test_ernie_task_ids_follow_the_config_and_skip_multiple_choice() -> None:
    assert list(_export_config("ernie").inputs) == ["input_ids", "attention_mask", "token_type_ids", "task_type_ids"]
    assert "task_type_ids" not in _export_config("ernie", use_task_id=False).inputs
    # ErnieForMultipleChoice does not flatten task ids with the choices.
    assert "task_type_ids" not in _export_config("ernie", "multiple-choice").inputs


def test_multiple_choice_inserts_a_choice_axis_in_every_input() -> None:
    config = _export_config("luke", "multiple-choice")
    assert config.inputs["input_ids"] == {0: "batch", 1: "choice", 2: "sequence"}
    assert config.inputs["entity_position_ids"] == {0: "batch", 1: "choice", 2: "entity_sequence", 3: "mention"}
    arrays = config.generate_dummy_inputs(framework="np", batch_size=2, num_choices=3, seq_length=9)
    assert arrays["input_ids"].shape == (2, 3, 9)
    assert arrays["entity_ids"].shape == (2, 3, 3)
    assert arrays["entity_position_ids"].shape == (2, 3, 3, 2)  # mentions keep one length at every shape


def test_luke_entities_point_at_real_tokens_and_pad_with_minus_one() -> None:
    config = _export_config("luke", "masked-lm")
    arrays = config.generate_dummy_inputs(framework="np", batch_size=3, seq_length=9, padded=True, seed=1)
    mask, positions, entity_mask = (
        arrays["attention_mask"],
        arrays["entity_position_ids"],
        arrays["entity_attention_mask"],
    )
    for row in range(3):
        real = int(mask[row].sum())
        used = positions[row][positions[row] >= 0]
        assert used.size and used.max() < real
        # A padded entity has no mention at all.
        assert all((positions[row, e] == -1).all() for e in range(positions.shape[1]) if not entity_mask[row, e])
    assert entity_mask[0].all() and not entity_mask[-1].all()  # the first row is full, the last padded
    assert list(config.outputs) == ["logits", "entity_logits"]
    assert config.outputs["entity_logits"] == {0: "batch", 1: "entity_sequence"}


def test_extra_inputs_of_markuplm_layoutlmv3_longformer_and_roc_bert() -> None:
    markup = _export_config("markuplm").generate_dummy_inputs(framework="np", batch_size=2, seq_length=5)
    assert markup["xpath_tags_seq"].shape == (2, 5, 4) and markup["xpath_tags_seq"].max() < 16
    layout = _export_config("layoutlmv3")
    arrays = layout.generate_dummy_inputs(framework="np", batch_size=2, seq_length=5)
    assert arrays["pixel_values"].shape == (2, 3, 16, 16)
    assert arrays["bbox"].shape == (2, 5, 4)
    assert layout.outputs["last_hidden_state"] == {0: "batch", 1: "text_and_patches"}
    longformer = _export_config("longformer").generate_dummy_inputs(framework="np", batch_size=2, seq_length=5)
    assert longformer["global_attention_mask"].tolist() == [[1, 0, 0, 0, 0]] * 2
    roc = _export_config("roc_bert").generate_dummy_inputs(framework="np", batch_size=2, seq_length=6, padded=True)
    assert (roc["input_shape_ids"][roc["attention_mask"] == 0] == 0).all()


def test_funnel_base_checkpoints_declare_their_pooled_sequence() -> None:
    assert _export_config("funnel").outputs["last_hidden_state"] == {0: "batch", 1: "sequence"}
    base = _export_config("funnel", architectures=["FunnelBaseModel"])
    assert base.outputs["last_hidden_state"] == {0: "batch", 1: "pooled_sequence"}


def test_canine_dummies_are_code_points_without_a_vocabulary() -> None:
    config = _export_config("canine")
    assert getattr(config.model_config, "vocab_size", None) is None
    arrays = config.generate_dummy_inputs(framework="np", batch_size=2, seq_length=7)
    assert arrays["input_ids"].max() < 256 and arrays["input_ids"].shape == (2, 7)
    assert getattr(config.model_config, "vocab_size", None) is None  # the model config is left as it was


def test_xmod_exports_its_first_language_unless_the_checkpoint_names_a_default() -> None:
    assert _export_config("xmod").values_override == {"use_cache": False, "default_language": "en_XX"}
    assert _export_config("xmod", default_language="de_DE").values_override == {"use_cache": False}


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_tiny_models_run_on_the_dummies_at_two_shapes(model_type: str) -> None:
    """Every type's tiny model, through the export wrapper, on the export dummies and on the validation inputs."""
    features = TextEncoderFamilyOnnxConfig.supported_features(model_type)
    feature = "sequence-classification" if "sequence-classification" in features else features[0]
    torch.manual_seed(0)
    model = model_class_for(feature, TextEncoderFamilyOnnxConfig).from_config(_config(model_type)).eval()
    config = TextEncoderFamilyOnnxConfig.for_feature(model.config, feature)
    with prepared_for_export(model, config), torch.no_grad():
        module = export_module(model, config)
        for inputs in (config.generate_dummy_inputs(framework="pt"), config.generate_reference_inputs(framework="pt")):
            (logits,) = module(**inputs)
            assert logits.shape == (inputs["input_ids"].shape[0], model.config.num_labels)
            assert bool(torch.isfinite(logits).all())
    assert np.ndim(config.generate_reference_inputs()["attention_mask"]) == 2


def test_nystromformer_landmarks_are_refused_because_pytorch_fails_on_them() -> None:
    from exporter_core.errors import UnsupportedFeatureError

    config = _config("nystromformer", num_landmarks=2, segment_means_seq_len=8)
    with pytest.raises(UnsupportedFeatureError, match="fails in PyTorch itself"):
        TextEncoderFamilyOnnxConfig.for_feature(config, "default")
    # The refusal is what PyTorch does: the landmark path fails on a padded row.
    model = model_class_for("default", TextEncoderFamilyOnnxConfig).from_config(config).eval()
    padded = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    with pytest.raises(RuntimeError), torch.no_grad():
        model(input_ids=torch.full((1, 8), 5), attention_mask=padded)
    assert _export_config("nystromformer").inputs["input_ids"] == {0: "batch", 1: "sequence"}


def test_yoso_is_refused_by_static_traces_for_its_python_kernel() -> None:
    torch.manual_seed(0)
    model = model_class_for("default", TextEncoderFamilyOnnxConfig).from_config(_config("yoso")).eval()
    config = TextEncoderFamilyOnnxConfig.for_feature(model.config, "default")
    assert "YosoCumulation" in (config.export_plan(model).static_trace_refusal or "")
    deberta = model_class_for("default", TextEncoderFamilyOnnxConfig).from_config(_config("deberta")).eval()
    plan = TextEncoderFamilyOnnxConfig.for_feature(deberta.config, "default").export_plan(deberta)
    assert plan.static_trace_refusal is None


@pytest.mark.parametrize("model_type", ["canine", "funnel", "longformer"])
def test_types_a_dynamic_sequence_cannot_carry_are_refused_for_onnx(model_type: str) -> None:
    from exporter_core.errors import UnsupportedFeatureError

    with pytest.raises(UnsupportedFeatureError, match="static-shape backend"):
        _export_config(model_type).check_opset(18)
    _export_config("deberta").check_opset(18)  # others pass


def test_longformer_is_captured_with_transformers_export_switch() -> None:
    assert _export_config("longformer").values_override == {"onnx_export": True}
