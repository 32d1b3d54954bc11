"""Dummy and reference inputs, built from a preprocessor when there is one and from the model config otherwise.

Everything here returns NumPy arrays; configs convert to the framework the caller asked for. Text is made of
real words separated by spaces (the old exporter repeated the unknown token), and each row is tokenised to
exactly the requested length, special tokens included. With ``padded=True`` rows get different real lengths
and the rest is padding, so validation exercises the attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exporter_core.model_config import ModelConfigView

__all__ = ["TEXT_INPUTS", "DummySpec", "boxes_for", "image_arrays", "padding_mask", "row_lengths", "text_arrays"]

#: Inputs `text_arrays` makes.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

_WORDS = [
    "the",
    "model",
    "reads",
    "a",
    "short",
    "sentence",
    "about",
    "rivers",
    "and",
    "mountains",
    "while",
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dogs",
    "near",
    "an",
    "old",
    "bridge",
    "where",
    "people",
    "walk",
    "every",
    "morning",
    "to",
    "see",
    "boats",
    "carry",
    "fresh",
    "bread",
]


@dataclass(frozen=True)
class DummySpec:
    """The shape request behind one set of dummy inputs."""

    batch_size: int
    sequence_length: int
    num_choices: int = 4
    is_pair: bool = False
    padded: bool = False
    padding_side: str = "right"
    seed: int = 0
    num_channels: int = 3
    image_height: int = 40
    image_width: int = 40


def row_lengths(rows: int, length: int, padded: bool) -> list[int]:
    """Real-token count for each row: all `length`, or decreasing lengths when `padded` (first row full)."""
    if not padded or length <= 2:
        return [length] * rows
    shortest = max(2, length // 2)
    if rows == 1:
        return [length]
    return [length - round(i * (length - shortest) / (rows - 1)) for i in range(rows)]


def _sentence(index: int, words: int) -> str:
    return " ".join(_WORDS[(index * 7 + k) % len(_WORDS)] for k in range(words))


def _tokenize_row(tokenizer: Any, index: int, length: int, is_pair: bool) -> tuple[str, str | None]:
    """Pick text that tokenises to at least `length` tokens (truncation then cuts it to exactly `length`)."""
    words = 1
    while True:
        first = _sentence(index, words)
        second = _sentence(index + 3, words) if is_pair else None
        count = len(tokenizer(first, second)["input_ids"])
        if count >= length or words > 4 * length + 8:
            return first, second
        words += 1


def text_arrays(
    model_config: Any,
    names: list[str] | tuple[str, ...],
    rows: int,
    spec: DummySpec,
    tokenizer: Any | None = None,
) -> dict[str, np.ndarray]:
    """`input_ids`, `attention_mask` and `token_type_ids` (those of `names` that are text inputs) for `rows` rows."""
    length = spec.sequence_length
    lengths = row_lengths(rows, length, spec.padded)
    if tokenizer is not None:
        texts = [_tokenize_row(tokenizer, i, n, spec.is_pair) for i, n in enumerate(lengths)]
        encoded: dict[str, list[list[int]]] = {}
        for (first, second), n in zip(texts, lengths, strict=True):
            row = tokenizer(first, second, truncation=True, max_length=n)
            for key, value in row.items():
                encoded.setdefault(key, []).append(list(value))
        pad_id = ModelConfigView(model_config, tokenizer=tokenizer).pad_token_id_or(0)
        arrays = _pad_rows(encoded, lengths, length, pad_id, spec.padding_side)
    else:
        arrays = _random_text(model_config, rows, lengths, length, spec)
    if "attention_mask" not in arrays:
        arrays["attention_mask"] = padding_mask(lengths, length, spec.padding_side)
    if "token_type_ids" not in arrays:
        arrays["token_type_ids"] = np.zeros((rows, length), dtype=np.int64)
    return {name: arrays[name] for name in names if name in arrays}


def padding_mask(lengths: list[int], length: int, side: str) -> np.ndarray:
    """Attention mask (rows, `length`): each row's `lengths` entry of ones, the zeros on `side` ("left" or "right")."""
    mask = np.zeros((len(lengths), length), dtype=np.int64)
    for i, n in enumerate(lengths):
        if side == "left":
            mask[i, length - n :] = 1
        else:
            mask[i, :n] = 1
    return mask


def _pad_rows(
    encoded: dict[str, list[list[int]]], lengths: list[int], length: int, pad_id: int, side: str
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, rows in encoded.items():
        fill = pad_id if key == "input_ids" else 0
        array = np.full((len(rows), length), fill, dtype=np.int64)
        for i, row in enumerate(rows):
            row = row[:length]
            if side == "left":
                array[i, length - len(row) :] = row
            else:
                array[i, : len(row)] = row
        out[key] = array
    out["attention_mask"] = padding_mask([min(len(r), length) for r in encoded["input_ids"]], length, side)
    return out


def _random_text(
    model_config: Any, rows: int, lengths: list[int], length: int, spec: DummySpec
) -> dict[str, np.ndarray]:
    view = ModelConfigView(model_config)
    vocab = view.vocab_size
    rng = np.random.default_rng(spec.seed)
    low = min(max(view.special_token_ids | {2}) + 1, vocab - 1) if vocab > 8 else 0
    ids = rng.integers(low, vocab, size=(rows, length), dtype=np.int64)
    pad_id = view.pad_token_id_or(0)
    mask = padding_mask(lengths, length, spec.padding_side)
    ids = np.where(mask == 1, ids, pad_id)
    token_types = np.zeros((rows, length), dtype=np.int64)
    if spec.is_pair and int(getattr(model_config, "type_vocab_size", 1) or 1) > 1:
        token_types[:, length // 2 :] = 1
        token_types *= mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types}


def boxes_for(input_ids: np.ndarray, seed: int = 0, scale: int = 1000) -> np.ndarray:
    """Valid layout boxes (x0 <= x1, y0 <= y1, within `scale`) for every token position."""
    rng = np.random.default_rng(seed)
    shape = (*input_ids.shape, 2)
    start = rng.integers(0, scale // 2, size=shape, dtype=np.int64)
    size = rng.integers(0, scale // 2, size=shape, dtype=np.int64)
    end = start + size
    return np.stack([start[..., 0], start[..., 1], end[..., 0], end[..., 1]], axis=-1)


def image_arrays(spec: DummySpec, preprocessor: Any | None, height: int, width: int, channels: int) -> np.ndarray:
    """`pixel_values` for `spec.batch_size` images: through the image processor when given, else random values."""
    rng = np.random.default_rng(spec.seed)
    if preprocessor is not None:
        images = [
            rng.integers(0, 256, size=(spec.image_height, spec.image_width, 3), dtype=np.uint8)
            for _ in range(spec.batch_size)
        ]
        processed = preprocessor(images=images, return_tensors="np")
        return np.asarray(processed["pixel_values"], dtype=np.float32)
    return rng.standard_normal((spec.batch_size, channels, height, width)).astype(np.float32)
