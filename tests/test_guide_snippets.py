"""The guide's Python snippets, with only ``transformers.onnx`` replaced by ``exporter.onnx``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import onnx
import pytest
from onnxruntime import InferenceSession
from transformers import AutoConfig, AutoModel, AutoTokenizer

from exporter.onnx import OnnxConfig, export, validate_model_outputs
from exporter.onnx.features import FeaturesManager


@pytest.fixture(scope="module")
def distilbert_checkpoint(tmp_path_factory) -> Path:
    from exporter_core.testing import build_tiny_checkpoint, build_tiny_tokenizer

    folder = build_tiny_checkpoint("distilbert", "default", tmp_path_factory.mktemp("distilbert"))
    tokenizer = build_tiny_tokenizer()
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # as DistilBERT's tokenizer
    tokenizer.save_pretrained(str(folder))
    return folder


class DistilBertOnnxConfig(OnnxConfig):
    """The guide's custom config, verbatim in substance."""

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict(
            [
                ("input_ids", {0: "batch", 1: "sequence"}),
                ("attention_mask", {0: "batch", 1: "sequence"}),
            ]
        )


def test_features_manager_snippet():
    distilbert_features = list(FeaturesManager.get_supported_features_for_model_type("distilbert").keys())
    assert distilbert_features == [
        "default",
        "masked-lm",
        "sequence-classification",
        "multiple-choice",
        "token-classification",
        "question-answering",
    ]


def test_ready_made_config_snippet(distilbert_checkpoint):
    from exporter.configs import DistilBertOnnxConfig as ReadyMade

    config = AutoConfig.from_pretrained(distilbert_checkpoint)
    onnx_config = ReadyMade(config)
    assert list(onnx_config.outputs.keys()) == ["last_hidden_state"]
    assert onnx_config.outputs == OrderedDict([("last_hidden_state", {0: "batch", 1: "sequence"})])
    onnx_config_for_seq_clf = ReadyMade(config, task="sequence-classification")
    assert onnx_config_for_seq_clf.outputs == OrderedDict([("logits", {0: "batch"})])
    assert isinstance(onnx_config.default_onnx_opset, int)


def test_custom_config_export_check_validate_and_run(distilbert_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = AutoConfig.from_pretrained(distilbert_checkpoint)
    onnx_config = DistilBertOnnxConfig(config)
    assert onnx_config.default_onnx_opset == 18
    assert onnx_config.outputs == OrderedDict([("last_hidden_state", {0: "batch", 1: "sequence"})])

    onnx_path = Path("model.onnx")
    base_model = AutoModel.from_pretrained(distilbert_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(distilbert_checkpoint)
    onnx_inputs, onnx_outputs = export(tokenizer, base_model, onnx_config, onnx_config.default_onnx_opset, onnx_path)
    assert onnx_inputs == ["input_ids", "attention_mask"]
    assert onnx_outputs == ["last_hidden_state"]

    onnx_model = onnx.load("model.onnx")
    onnx.checker.check_model(onnx_model)

    validate_model_outputs(onnx_config, tokenizer, base_model, onnx_path, onnx_outputs, onnx_config.atol_for_validation)

    session = InferenceSession("model.onnx")
    inputs = tokenizer("hello world with runtime", return_tensors="np")
    outputs = session.run(output_names=["last_hidden_state"], input_feed=dict(inputs))
    assert outputs[0].shape == (1, inputs["input_ids"].shape[1], 32)


def test_validate_model_outputs_raises_value_error(distilbert_checkpoint, tmp_path):
    config = AutoConfig.from_pretrained(distilbert_checkpoint)
    onnx_config = DistilBertOnnxConfig(config)
    model = AutoModel.from_pretrained(distilbert_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(distilbert_checkpoint)
    path = tmp_path / "model.onnx"
    _, outputs = export(tokenizer, model, onnx_config, 18, path)
    with pytest.raises(ValueError, match="exceeds atol"):
        validate_model_outputs(onnx_config, tokenizer, model, path, outputs, 1e-15)
