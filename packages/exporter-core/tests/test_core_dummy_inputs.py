"""Dummy inputs: exact lengths with special tokens, real words, padded rows, choices, layout boxes, frameworks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from exporter_core import dummy_inputs
from exporter_core.architectures.encoders import BertOnnxConfig, LayoutLMOnnxConfig, RobertaOnnxConfig
from exporter_core.errors import UnsupportedFrameworkError
from exporter_core.testing import SPECIAL_TOKENS, tiny_model_config

CLS, SEP, PAD, UNK = SPECIAL_TOKENS["[CLS]"], SPECIAL_TOKENS["[SEP]"], SPECIAL_TOKENS["[PAD]"], SPECIAL_TOKENS["[UNK]"]


@pytest.fixture(scope="module")
def bert() -> BertOnnxConfig:
    """BERT default-feature config over a tiny model config."""
    return BertOnnxConfig(tiny_model_config("bert"))


@pytest.mark.parametrize("seq_length", [-1, 5, 13])
def test_sequence_length_counts_special_tokens(bert: BertOnnxConfig, tiny_tokenizer: Any, seq_length: int) -> None:
    inputs = bert.generate_dummy_inputs(tiny_tokenizer, seq_length=seq_length, framework="np")
    expected = 8 if seq_length == -1 else seq_length
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for value in inputs.values():
        assert value.shape == (2, expected)
        assert value.dtype == np.int64
    ids = inputs["input_ids"]
    assert (ids[:, 0] == CLS).all() and (ids[:, -1] == SEP).all()
    assert (inputs["attention_mask"] == 1).all()
    assert not (ids == PAD).any()


def test_dummy_text_is_real_words_not_the_unknown_token(bert: BertOnnxConfig, tiny_tokenizer: Any) -> None:
    ids = bert.generate_dummy_inputs(tiny_tokenizer, framework="np")["input_ids"]
    words = ids[:, 1:-1]
    # The tiny tokenizer splits on whitespace: text without spaces would be one unknown token per row.
    assert not (words == UNK).any()
    for row in words:
        assert len(set(row.tolist())) > 1
    decoded = tiny_tokenizer.decode(ids[0], skip_special_tokens=True)
    assert decoded.count(" ") == words.shape[1] - 1
    assert all(word in dummy_inputs._WORDS for word in decoded.split())


def test_pairs_are_two_segments_of_the_exact_length(bert: BertOnnxConfig, tiny_tokenizer: Any) -> None:
    ids = bert.generate_dummy_inputs(tiny_tokenizer, is_pair=True, framework="np")["input_ids"]
    assert ids.shape == (2, 8)
    for row in ids:
        assert row[0] == CLS and row[-1] == SEP
        assert (row == SEP).sum() == 2


def test_padded_rows_have_decreasing_real_lengths_and_mask_zeros(bert: BertOnnxConfig, tiny_tokenizer: Any) -> None:
    inputs = bert.generate_reference_inputs(tiny_tokenizer)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == mask.shape == (3, 9)
    lengths = mask.sum(axis=1).tolist()
    assert lengths[0] == 9
    assert all(a > b for a, b in zip(lengths, lengths[1:]))
    assert (mask == 0).any()
    for row, mask_row, length in zip(ids, mask, lengths):
        assert mask_row[:length].all() and not mask_row[length:].any()
        assert row[0] == CLS and row[length - 1] == SEP
        assert (row[length:] == PAD).all()
    assert (inputs["token_type_ids"][mask == 0] == 0).all()


def test_left_padding_puts_the_zeros_first(tiny_tokenizer: Any) -> None:
    class LeftPadded(BertOnnxConfig):
        padding_side = "left"

    inputs = LeftPadded(tiny_model_config("bert")).generate_reference_inputs(tiny_tokenizer)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    lengths = mask.sum(axis=1)
    for row, mask_row, length in zip(ids, mask, lengths):
        assert not mask_row[: 9 - length].any() and mask_row[9 - length :].all()
        assert row[9 - length] == CLS and row[-1] == SEP


def test_without_a_tokenizer_ids_avoid_special_tokens_and_padding_uses_pad_id(bert: BertOnnxConfig) -> None:
    config = bert.model_config
    inputs = bert.generate_reference_inputs(None)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == (3, 9)
    lengths = mask.sum(axis=1).tolist()
    assert lengths[0] == 9 and lengths == sorted(lengths, reverse=True) and lengths[-1] < 9
    real = ids[mask == 1]
    assert real.max() < config.vocab_size
    assert real.min() > config.pad_token_id
    assert (ids[mask == 0] == config.pad_token_id).all()


def test_pairs_without_a_tokenizer_mark_the_second_segment(bert: BertOnnxConfig) -> None:
    token_types = bert.generate_dummy_inputs(None, is_pair=True, framework="np")["token_type_ids"]
    assert (token_types[:, :4] == 0).all() and (token_types[:, 4:] == 1).all()


def test_export_and_reference_inputs_differ_in_shape_and_values(bert: BertOnnxConfig, tiny_tokenizer: Any) -> None:
    export = bert.generate_dummy_inputs(None, framework="np")
    again = bert.generate_dummy_inputs(None, framework="np")
    reference = bert.generate_reference_inputs(None)
    np.testing.assert_array_equal(export["input_ids"], again["input_ids"])
    assert export["input_ids"].shape == (2, 8) and reference["input_ids"].shape == (3, 9)
    assert not np.array_equal(export["input_ids"][:2, :8], reference["input_ids"][:2, :8])


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_multiple_choice_shape(tiny_tokenizer: Any, with_tokenizer: bool) -> None:
    config = BertOnnxConfig(tiny_model_config("bert"), task="multiple-choice")
    tokenizer = tiny_tokenizer if with_tokenizer else None
    inputs = config.generate_dummy_inputs(tokenizer, framework="np")
    assert {name: value.shape for name, value in inputs.items()} == {
        "input_ids": (2, 4, 8),
        "attention_mask": (2, 4, 8),
        "token_type_ids": (2, 4, 8),
    }
    reference = config.generate_reference_inputs(tokenizer)
    assert reference["input_ids"].shape == (3, 3, 9)
    assert (reference["attention_mask"] == 0).any()


def test_layoutlm_boxes_are_valid_and_the_model_runs(tiny_tokenizer: Any) -> None:
    import torch
    from transformers import AutoModel

    model_config = tiny_model_config("layoutlm")
    config = LayoutLMOnnxConfig(model_config)
    for inputs in (config.generate_dummy_inputs(tiny_tokenizer, framework="np"), config.generate_reference_inputs(tiny_tokenizer)):
        boxes = inputs["bbox"]
        assert boxes.shape == inputs["input_ids"].shape + (4,)
        x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
        assert (x0 <= x1).all() and (y0 <= y1).all()
        assert boxes.min() >= 0 and boxes.max() <= 1000
    torch.manual_seed(0)
    model = AutoModel.from_config(model_config).eval()
    tensors = config.generate_reference_inputs(tiny_tokenizer, framework="pt")
    with torch.no_grad():
        hidden = model(**tensors).last_hidden_state
    assert hidden.shape == (3, 9, 32)
    assert torch.isfinite(hidden).all()


def test_roberta_takes_no_token_types(tiny_tokenizer: Any) -> None:
    inputs = RobertaOnnxConfig(tiny_model_config("roberta")).generate_dummy_inputs(tiny_tokenizer, framework="np")
    assert list(inputs) == ["input_ids", "attention_mask"]


def test_frameworks(bert: BertOnnxConfig, tiny_tokenizer: Any) -> None:
    import torch
    from transformers.utils import TensorType

    as_numpy = bert.generate_dummy_inputs(tiny_tokenizer, framework="np")
    assert all(isinstance(v, np.ndarray) for v in as_numpy.values())
    for framework in ("pt", None, TensorType.PYTORCH):
        as_torch = bert.generate_dummy_inputs(tiny_tokenizer, framework=framework)
        assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in as_torch.values())
        np.testing.assert_array_equal(as_torch["input_ids"].numpy(), as_numpy["input_ids"])
    assert isinstance(bert.generate_dummy_inputs(tiny_tokenizer, framework=TensorType.NUMPY)["input_ids"], np.ndarray)
    # The old keyword: the tokenizer passed as `tokenizer=`.
    np.testing.assert_array_equal(
        bert.generate_dummy_inputs(tokenizer=tiny_tokenizer, framework="np")["input_ids"], as_numpy["input_ids"]
    )


def test_tensorflow_is_refused(bert: BertOnnxConfig, tiny_tokenizer: Any) -> None:
    with pytest.raises(UnsupportedFrameworkError, match="framework 'tf' is not supported.*use 'pt'"):
        bert.generate_dummy_inputs(tiny_tokenizer, framework="tf")


@pytest.mark.parametrize(
    ("rows", "length", "padded", "expected"),
    [
        (3, 9, True, [9, 7, 4]),
        (2, 8, True, [8, 4]),
        (1, 8, True, [8]),
        (3, 9, False, [9, 9, 9]),
        (3, 2, True, [2, 2, 2]),
    ],
)
def test_row_lengths(rows: int, length: int, padded: bool, expected: list[int]) -> None:
    assert dummy_inputs.row_lengths(rows, length, padded) == expected


def test_boxes_for_is_seeded() -> None:
    ids = np.zeros((2, 5), dtype=np.int64)
    np.testing.assert_array_equal(dummy_inputs.boxes_for(ids, seed=3), dummy_inputs.boxes_for(ids, seed=3))
    assert not np.array_equal(dummy_inputs.boxes_for(ids, seed=3), dummy_inputs.boxes_for(ids, seed=4))
