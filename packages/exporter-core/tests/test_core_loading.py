"""Checkpoint resolution (local folders, the local hub cache, offline), model type, model and preprocessor loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporter_core import loading
from exporter_core.errors import (
    ModelNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFrameworkError,
    UnsupportedModelTypeError,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HOME and HF_HUB_CACHE pointing at an empty folder (huggingface_hub reads them at import, so patch both)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache


def _add_to_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """Lay out `checkpoint` as huggingface_hub does: blobs, a snapshot of symlinks, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for index, file in enumerate(sorted(checkpoint.iterdir())):
        blob = repo / "blobs" / f"blob{index:04d}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def _copy_only(source: Path, destination: Path, names: list[str]) -> Path:
    destination.mkdir()
    for name in names:
        shutil.copyfile(source / name, destination / name)
    return destination


# -- resolve_checkpoint -------------------------------------------------------------------------------------------


def test_missing_path_says_no_such_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"^no such folder: .*nowhere; check the path given to --model$"):
        loading.resolve_checkpoint(tmp_path / "nowhere")


def test_relative_missing_path_is_not_taken_for_a_hub_id(empty_hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        loading.resolve_checkpoint("./checkpoints/bert")


def test_hub_id_not_in_the_cache_mentions_the_cache(empty_hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        loading.resolve_checkpoint("some-org/not-downloaded")
    message = str(caught.value)
    assert "not in the local hub cache" in message
    # The download command of the installed huggingface_hub: `hf` since 0.34, `huggingface-cli` before.
    assert "hf download some-org/not-downloaded" in message or "huggingface-cli download some-org" in message
    assert "\n" not in message


def test_hub_id_in_the_local_cache_resolves_to_its_snapshot(bert_checkpoint: Path, empty_hub_cache: Path) -> None:
    snapshot = _add_to_hub_cache(empty_hub_cache, "tiny-org/tiny-bert", bert_checkpoint)
    resolved = loading.resolve_checkpoint("tiny-org/tiny-bert")
    assert resolved.resolve() == snapshot.resolve()
    assert loading.read_model_type(resolved) == "bert"
    model = loading.load_model(resolved, "masked-lm")
    assert type(model).__name__ == "BertForMaskedLM"


def test_hub_id_resolves_from_an_explicit_cache_dir(bert_checkpoint: Path, empty_hub_cache: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-cache"
    snapshot = _add_to_hub_cache(other, "tiny-org/tiny-bert", bert_checkpoint)
    with pytest.raises(ModelNotFoundError, match="local hub cache"):
        loading.resolve_checkpoint("tiny-org/tiny-bert")
    assert loading.resolve_checkpoint("tiny-org/tiny-bert", cache_dir=other).resolve() == snapshot.resolve()


def test_folder_with_only_model_safetensors_is_recognised(bert_checkpoint: Path, tmp_path: Path) -> None:
    folder = _copy_only(bert_checkpoint, tmp_path / "st", ["config.json", "model.safetensors"])
    assert loading.resolve_checkpoint(folder) == folder
    assert type(loading.load_model(folder, "masked-lm")).__name__ == "BertForMaskedLM"


def test_folder_with_only_tensorflow_weights_is_unsupported(bert_checkpoint: Path, tmp_path: Path) -> None:
    folder = _copy_only(bert_checkpoint, tmp_path / "tf", ["config.json"])
    (folder / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(UnsupportedFrameworkError, match="TensorFlow") as caught:
        loading.resolve_checkpoint(folder)
    assert "model.safetensors" in str(caught.value)


def test_folder_without_weights_or_config_is_not_a_checkpoint(bert_checkpoint: Path, tmp_path: Path) -> None:
    no_weights = _copy_only(bert_checkpoint, tmp_path / "cfg", ["config.json"])
    with pytest.raises(ModelNotFoundError, match="no PyTorch weights"):
        loading.resolve_checkpoint(no_weights)
    no_config = _copy_only(bert_checkpoint, tmp_path / "w", ["model.safetensors"])
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        loading.resolve_checkpoint(no_config)


def test_a_file_is_not_a_checkpoint(bert_checkpoint: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="is a file"):
        loading.resolve_checkpoint(bert_checkpoint / "config.json")


# -- read_model_type ----------------------------------------------------------------------------------------------


def test_read_model_type(bert_checkpoint: Path, tmp_path: Path) -> None:
    assert loading.read_model_type(bert_checkpoint) == "bert"
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UnsupportedModelTypeError, match="names no model_type"):
        loading.read_model_type(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="cannot be read as JSON"):
        loading.read_model_type(tmp_path)


# -- load_model -----------------------------------------------------------------------------------------------------


def test_load_model_is_in_eval_mode_with_the_feature_class(bert_checkpoint: Path) -> None:
    model = loading.load_model(bert_checkpoint, "sequence-classification")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.training is False
    assert all(not module.training for module in model.modules())


def test_load_model_for_a_feature_the_checkpoint_cannot_serve(bert_checkpoint: Path) -> None:
    with pytest.raises(UnsupportedFeatureError, match="AutoModelForSeq2SeqLM cannot load this checkpoint"):
        loading.load_model(bert_checkpoint, "seq2seq-lm")


def test_model_class_for_uses_the_config_override_then_the_auto_class() -> None:
    import transformers

    from exporter_core.architectures.encoders import BertOnnxConfig, FlaubertOnnxConfig

    assert loading.model_class_for("causal-lm", FlaubertOnnxConfig) is transformers.FlaubertWithLMHeadModel
    assert loading.model_class_for("causal-lm-with-past", BertOnnxConfig) is transformers.AutoModelForCausalLM
    with pytest.raises(UnsupportedFeatureError, match="unknown feature 'no-such-feature'"):
        loading.model_class_for("no-such-feature")


# -- load_preprocessor ----------------------------------------------------------------------------------------------


def test_load_preprocessor_auto_returns_none_without_one(bert_checkpoint: Path, tmp_path: Path) -> None:
    folder = _copy_only(bert_checkpoint, tmp_path / "bare", ["config.json", "model.safetensors"])
    assert loading.load_preprocessor(folder) is None
    with pytest.raises(ModelNotFoundError, match="no tokenizer files"):
        loading.load_preprocessor(folder, "tokenizer")


def test_load_preprocessor_auto_returns_the_saved_tokenizer(bert_checkpoint: Path, tiny_tokenizer: object) -> None:
    tokenizer = loading.load_preprocessor(bert_checkpoint)
    assert tokenizer is not None
    text = "the quick brown fox"
    assert tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert loading.load_preprocessor(bert_checkpoint, "tokenizer")(text)["input_ids"][0] == tokenizer.cls_token_id


def test_load_preprocessor_refuses_an_unknown_kind(bert_checkpoint: Path) -> None:
    with pytest.raises(UnsupportedFeatureError, match="unknown preprocessor 'tokeniser'"):
        loading.load_preprocessor(bert_checkpoint, "tokeniser")


@pytest.mark.parametrize(
    ("dtype", "values", "flagged"),
    [
        ("float32", [1.0, float("nan")], True),
        ("float32", [1.0, float("inf")], True),
        ("float32", [float("inf"), float("-inf")], True),  # the two make the sum NaN, not Inf
        ("float32", [3e38] * 10, False),  # finite values whose float32 sum overflows: not damaged
        ("float16", [65504.0] * 100, False),
        ("float16", [1.0, float("-inf")], True),
        ("bfloat16", [3e38] * 10, False),
        ("bfloat16", [2.0, float("nan")], True),
        ("float64", [1e308] * 4, False),
        ("float8_e4m3fn", [448.0] * 10, False),
        ("float8_e4m3fn", [1.0, float("nan")], True),  # torch has no isfinite for float8: widened first
    ],
)
def test_nonfinite_weights_are_found_exactly(dtype, values, flagged):
    import torch

    from exporter_core.loading import _nonfinite_weights

    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(torch.tensor(values, dtype=getattr(torch, dtype)), requires_grad=False)
    model.clean = torch.nn.Parameter(torch.ones(4, dtype=getattr(torch, dtype)), requires_grad=False)
    model.register_buffer("mask", torch.tensor([float("-inf")]))  # buffers are not checked
    assert _nonfinite_weights(model) == (["weight"] if flagged else [])
