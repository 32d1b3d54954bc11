"""The public test kit: tiny configs for the guide's 35 model types, tiny tokenizer and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter_core import loading, plugins
from exporter_core.testing import (
    SPECIAL_TOKENS,
    TINY_CONFIGS,
    build_tiny_checkpoint,
    build_tiny_tokenizer,
    tiny_model_config,
)


def test_tiny_configs_cover_the_guide_architectures() -> None:
    assert len(TINY_CONFIGS) == 35
    for model_type in ("bert", "distilbert", "layoutlm", "gpt2", "gptj", "bart", "t5", "vit", "perceiver"):
        assert model_type in TINY_CONFIGS


def test_tiny_model_config_applies_overrides_without_touching_the_table() -> None:
    config = tiny_model_config("bert", num_hidden_layers=3)
    assert config.model_type == "bert"
    assert config.num_hidden_layers == 3 and config.hidden_size == 32
    assert TINY_CONFIGS["bert"]["num_hidden_layers"] == 2


def test_tiny_tokenizer_ids_fit_the_vocabulary() -> None:
    tokenizer = build_tiny_tokenizer(vocab_size=20)
    vocab = tokenizer.get_vocab()
    assert max(vocab.values()) < 20
    assert {token: vocab[token] for token in SPECIAL_TOKENS} == SPECIAL_TOKENS
    assert tokenizer.pad_token_id == SPECIAL_TOKENS["[PAD]"]
    ids = tokenizer("the model", "reads a")["input_ids"]
    assert ids[0] == SPECIAL_TOKENS["[CLS]"] and ids.count(SPECIAL_TOKENS["[SEP]"]) == 2


@pytest.mark.parametrize(
    ("model_type", "feature", "class_name"),
    [
        ("bert", "masked-lm", "BertForMaskedLM"),
        ("distilbert", "sequence-classification", "DistilBertForSequenceClassification"),
        ("flaubert", "causal-lm", "FlaubertWithLMHeadModel"),
        ("layoutlm", "token-classification", "LayoutLMForTokenClassification"),
        ("gpt2", "causal-lm-with-past", "GPT2LMHeadModel"),
    ],
)
def test_build_tiny_checkpoint(tmp_path: Path, model_type: str, feature: str, class_name: str) -> None:
    folder = build_tiny_checkpoint(model_type, feature, tmp_path / model_type, with_tokenizer=True)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert loading.resolve_checkpoint(folder) == folder
    assert loading.read_model_type(folder) == json.loads((folder / "config.json").read_text())["model_type"]
    model = loading.load_model(folder, feature, plugins.load_architecture(model_type))
    assert type(model).__name__ == class_name
    assert model.config.hidden_size == 32
    assert loading.load_preprocessor(folder) is not None


def test_build_tiny_checkpoint_is_seeded(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    first = load_file(build_tiny_checkpoint("distilbert", "default", tmp_path / "a", seed=3) / "model.safetensors")
    second = load_file(build_tiny_checkpoint("distilbert", "default", tmp_path / "b", seed=3) / "model.safetensors")
    third = load_file(build_tiny_checkpoint("distilbert", "default", tmp_path / "c", seed=4) / "model.safetensors")
    assert first.keys() == second.keys()
    name = next(k for k in first if k.endswith("q_lin.weight"))
    assert (first[name] == second[name]).all()
    assert not (first[name] == third[name]).all()
    assert not (tmp_path / "a" / "tokenizer.json").exists()


def test_build_tiny_checkpoint_config_overrides(tmp_path: Path) -> None:
    folder = build_tiny_checkpoint("bert", "default", tmp_path, config_overrides={"num_hidden_layers": 1})
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 1


def test_build_tiny_checkpoint_needs_no_architecture_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "list_architectures", lambda: [])
    assert plugins.load_architecture("t5") is None
    folder = build_tiny_checkpoint("t5", "seq2seq-lm", tmp_path)
    assert type(loading.load_model(folder, "seq2seq-lm")).__name__ == "T5ForConditionalGeneration"
