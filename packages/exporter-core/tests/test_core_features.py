"""`FeaturesManager` keeps the old static methods, answered from the installed architecture plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter_core.architectures.encoders import BertOnnxConfig, BigBirdOnnxConfig, DistilBertOnnxConfig
from exporter_core.errors import UnsupportedFeatureError, UnsupportedFrameworkError, UnsupportedModelTypeError
from exporter_core.features import FeaturesManager, supported_features
from exporter_core.testing import tiny_model_config

DISTILBERT_FEATURES = [
    "default",
    "masked-lm",
    "sequence-classification",
    "multiple-choice",
    "token-classification",
    "question-answering",
]


def test_the_guide_snippet_lists_distilbert_features() -> None:
    distilbert_features = list(FeaturesManager.get_supported_features_for_model_type("distilbert").keys())
    # The guide's list exactly: sentence-embedding (it reads a sentence-transformers folder) is not the old API's.
    assert distilbert_features == DISTILBERT_FEATURES


def test_supported_features_map_to_config_constructors() -> None:
    features = FeaturesManager.get_supported_features_for_model_type("bert")
    assert "causal-lm" in features
    config = features["sequence-classification"](tiny_model_config("bert"))
    assert isinstance(config, BertOnnxConfig)
    assert config.task == "sequence-classification"
    assert supported_features("big_bird") == BigBirdOnnxConfig.features


def test_unknown_model_type_lists_the_installed_ones() -> None:
    with pytest.raises(UnsupportedModelTypeError) as caught:
        FeaturesManager.get_supported_features_for_model_type("no-such-type")
    message = str(caught.value)
    assert "'no-such-type' is not supported" in message and "bert" in message and "distilbert" in message
    with pytest.raises(UnsupportedModelTypeError, match=r"^MyModel: model type 'no-such-type'"):
        FeaturesManager.get_supported_features_for_model_type("no-such-type", model_name="MyModel")


@pytest.mark.parametrize(
    ("feature", "class_name"),
    [
        ("default", "AutoModel"),
        ("masked-lm", "AutoModelForMaskedLM"),
        ("causal-lm-with-past", "AutoModelForCausalLM"),
        ("seq2seq-lm", "AutoModelForSeq2SeqLM"),
        ("multiple-choice", "AutoModelForMultipleChoice"),
        ("question-answering", "AutoModelForQuestionAnswering"),
        ("image-classification", "AutoModelForImageClassification"),
    ],
)
def test_get_model_class_for_feature(feature: str, class_name: str) -> None:
    import transformers

    assert FeaturesManager.get_model_class_for_feature(feature) is getattr(transformers, class_name)


def test_get_model_class_for_feature_refuses_unknown_features_and_tensorflow() -> None:
    with pytest.raises(KeyError, match="Unknown task: translation"):
        FeaturesManager.get_model_class_for_feature("translation")
    with pytest.raises(UnsupportedFrameworkError, match="framework 'tf'"):
        FeaturesManager.get_model_class_for_feature("default", framework="tf")


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, Any]:
    """Tiny BERT (sequence classification), DistilBERT and BigBird models built from configs."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(0)
    return {
        "bert": AutoModelForSequenceClassification.from_config(tiny_model_config("bert")),
        "distilbert": AutoModel.from_config(tiny_model_config("distilbert")),
        "big_bird": AutoModel.from_config(tiny_model_config("big_bird")),
    }


def test_check_supported_model_or_raise(tiny_models: dict[str, Any]) -> None:
    model_type, constructor = FeaturesManager.check_supported_model_or_raise(
        tiny_models["bert"], "sequence-classification"
    )
    assert model_type == "bert"
    config = constructor(tiny_models["bert"].config)
    assert isinstance(config, BertOnnxConfig) and config.task == "sequence-classification"
    model_type, constructor = FeaturesManager.check_supported_model_or_raise(tiny_models["big_bird"])
    assert model_type == "big_bird"
    assert isinstance(constructor(tiny_models["big_bird"].config), BigBirdOnnxConfig)


def test_check_supported_model_or_raise_names_the_supported_features(tiny_models: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedFeatureError) as caught:
        FeaturesManager.check_supported_model_or_raise(tiny_models["distilbert"], feature="causal-lm")
    message = str(caught.value)
    assert "DistilBertModel (distilbert) doesn't support feature 'causal-lm'" in message
    assert "supported features: " + ", ".join(DISTILBERT_FEATURES) in message


def test_get_config() -> None:
    constructor = FeaturesManager.get_config("distilbert", "question-answering")
    config = constructor(tiny_model_config("distilbert"))
    assert isinstance(config, DistilBertOnnxConfig)
    assert list(config.outputs) == ["start_logits", "end_logits"]
    with pytest.raises(UnsupportedFeatureError, match="'layoutlm' doesn't support feature 'multiple-choice'"):
        FeaturesManager.get_config("layoutlm", "multiple-choice")


def test_feature_to_task() -> None:
    assert FeaturesManager.feature_to_task("causal-lm-with-past") == "causal-lm"
    assert FeaturesManager.feature_to_task("default-with-past") == "default"
    assert FeaturesManager.feature_to_task("masked-lm") == "masked-lm"


def test_available_features_cover_the_old_table() -> None:
    old = {
        "default",
        "default-with-past",
        "masked-lm",
        "causal-lm",
        "causal-lm-with-past",
        "seq2seq-lm",
        "seq2seq-lm-with-past",
        "sequence-classification",
        "multiple-choice",
        "token-classification",
        "question-answering",
        "image-classification",
        "object-detection",
        "image-segmentation",
        "semantic-segmentation",
        "masked-im",
        "vision2seq-lm",
        "speech2seq-lm",
        "speech2seq-lm-with-past",
    }
    assert isinstance(FeaturesManager.AVAILABLE_FEATURES, list)
    assert old <= set(FeaturesManager.AVAILABLE_FEATURES)  # every old feature name still accepted


def test_determine_framework_is_always_pytorch(tmp_path: Path) -> None:
    assert FeaturesManager.determine_framework(str(tmp_path)) == "pt"
    assert FeaturesManager.determine_framework(tmp_path, framework="pt") == "pt"
    with pytest.raises(UnsupportedFrameworkError, match="Transformers 5 has no TensorFlow"):
        FeaturesManager.determine_framework(tmp_path, framework="tf")


def test_get_model_from_feature_loads_a_local_checkpoint(bert_checkpoint: Path) -> None:
    model = FeaturesManager.get_model_from_feature("token-classification", str(bert_checkpoint))
    assert type(model).__name__ == "BertForTokenClassification"
    assert model.training is False
    with pytest.raises(UnsupportedFrameworkError):
        FeaturesManager.get_model_from_feature("default", str(bert_checkpoint), framework="tf")
