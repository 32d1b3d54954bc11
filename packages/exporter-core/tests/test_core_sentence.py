"""exporter_core.sentence: reading a sentence-transformers folder, and pooling over the real tokens only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter_core.errors import ModelNotFoundError, UnsupportedFeatureError
from exporter_core.sentence import (
    POOLING_MODES,
    SentenceModules,
    _pool,
    read_sentence_modules,
    sentence_embedding_model,
    sentence_modules_of,
    write_sentence_modules,
)

TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def _folder(tmp_path: Path, modules: list[dict], pooling: dict | None = None) -> Path:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return tmp_path


def test_a_plain_checkpoint_pools_by_mean_without_normalising_and_says_so(tmp_path):
    modules = read_sentence_modules(tmp_path)
    assert modules.pooling == ("mean",) and modules.normalize is False
    assert "plain checkpoint" in modules.describe() and "not normalised" in modules.describe()


def test_old_boolean_keys_concatenate_in_their_fixed_order(tmp_path):
    pooling = {"word_embedding_dimension": 8, "pooling_mode_max_tokens": True, "pooling_mode_cls_token": True}
    modules = read_sentence_modules(_folder(tmp_path, [TRANSFORMER, POOLING, NORMALIZE], pooling))
    assert modules.pooling == ("cls", "max") and modules.normalize is True and "modules.json" in modules.source


def test_the_new_pooling_mode_key_keeps_its_order_and_no_normalize_module_means_none(tmp_path):
    ST6_POOLING = dict(POOLING, type="sentence_transformers.sentence_transformer.modules.pooling.Pooling")
    pooling = {"embedding_dimension": 8, "pooling_mode": ["lasttoken", "mean"], "include_prompt": True}
    modules = read_sentence_modules(_folder(tmp_path, [TRANSFORMER, ST6_POOLING], pooling))
    assert modules.pooling == ("lasttoken", "mean") and modules.normalize is False


@pytest.mark.parametrize(
    ("modules", "pooling", "error", "words"),
    [
        (
            [TRANSFORMER, POOLING, {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}],
            {"pooling_mode": "mean"},
            UnsupportedFeatureError,
            "Dense",
        ),
        ([TRANSFORMER, POOLING], {"pooling_mode": "mean", "include_prompt": False}, UnsupportedFeatureError, "prompt"),
        ([dict(TRANSFORMER, path="0_Transformer"), POOLING], {}, UnsupportedFeatureError, "0_Transformer"),
        ([TRANSFORMER, POOLING], {"pooling_mode": "median"}, UnsupportedFeatureError, "median"),
        ([TRANSFORMER, POOLING], None, ModelNotFoundError, "1_Pooling"),
        ([POOLING, dict(TRANSFORMER, idx=1)], {}, UnsupportedFeatureError, "Transformer first"),
    ],
    ids=["dense", "prompt-excluded", "transformer-in-subfolder", "unknown-mode", "no-pooling-config", "order"],
)
def test_modules_the_graph_cannot_hold_are_refused_with_the_reason(tmp_path, modules, pooling, error, words):
    with pytest.raises(error, match=words):
        read_sentence_modules(_folder(tmp_path, modules, pooling))


@pytest.mark.parametrize(
    "modules",
    [
        SentenceModules(("mean",), True, "t"),
        SentenceModules(("cls", "max"), False, "t"),
        SentenceModules(("lasttoken", "weightedmean"), True, "t"),  # not the booleans' order: the new key
    ],
)
def test_written_modules_read_back_the_same(tmp_path, modules):
    write_sentence_modules(tmp_path, modules, 16)
    read = read_sentence_modules(tmp_path)
    assert (read.pooling, read.normalize) == (modules.pooling, modules.normalize)
    assert json.loads((tmp_path / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"] == 16


def _reference(mode: str, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each row pooled over its real tokens only, row by row (what sentence-transformers computes unpadded)."""
    rows = []
    for h, m in zip(hidden, mask, strict=True):
        real = np.flatnonzero(m)
        tokens = h[real]
        if mode == "mean":
            rows.append(tokens.mean(axis=0))
        elif mode == "mean_sqrt_len_tokens":
            rows.append(tokens.sum(axis=0) / np.sqrt(len(real)))
        elif mode == "max":
            rows.append(tokens.max(axis=0))
        elif mode == "cls":
            rows.append(tokens[0])
        elif mode == "lasttoken":
            rows.append(tokens[-1])
        elif mode == "weightedmean":
            weights = np.arange(1, len(real) + 1, dtype=np.float32)[:, None]
            rows.append((tokens * weights).sum(axis=0) / weights.sum())
    return np.stack(rows)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_reads_only_the_real_tokens(mode, side):
    generator = np.random.default_rng(0)
    hidden = generator.normal(size=(3, 7, 5)).astype(np.float32)
    lengths = [7, 4, 1]
    mask = np.zeros((3, 7), dtype=np.int64)
    for row, length in enumerate(lengths):
        if side == "right":
            mask[row, :length] = 1
        else:
            mask[row, 7 - length :] = 1
    hidden[mask == 0] = 1e3  # padded positions hold garbage no pooling may read
    pooled = _pool(mode, torch.from_numpy(hidden), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(pooled, _reference(mode, hidden, mask), rtol=1e-5, atol=1e-5)


def test_the_graph_gives_a_padded_sentence_its_unpadded_embedding():
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(
        "bert", vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20
    )
    torch.manual_seed(0)
    model = sentence_embedding_model(AutoModel.from_config(config).eval(), SentenceModules(POOLING_MODES, True, "t"))
    assert sentence_modules_of(model) is not None and sentence_modules_of(model.transformer) is None
    assert model.config is model.transformer.config
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 11, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask)["sentence_embedding"]
        alone = model(input_ids=ids[1:, :3], attention_mask=mask[1:, :3])["sentence_embedding"]
    assert batched.shape == (2, 16 * len(POOLING_MODES))
    torch.testing.assert_close(batched[1:], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(2))
