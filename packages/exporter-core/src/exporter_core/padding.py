"""Padding named inputs up to a static shape, for backends whose artifacts only run at the shape they were traced at.

A TorchScript trace or a Neuron compilation is specialised to its example input's shape. Such an artifact is
traced at a declared maximum shape, a size per symbolic axis name (``{"batch": 2, "sequence": 128}``, the axis
names of the architecture config's `inputs`); shorter inputs are padded up to it and the outputs cut back.
Inputs larger than the static shape are refused with an error naming the traced shape (padding cannot shrink
them, and a trace would fail with a cryptic size mismatch).

How the padding is done, and why:

* Sequence axes are extended at the end (``padding_side="right"``), with the pad token id for input ids and 0
  for attention masks and everything else. Appending keeps every real token at its position, so masked
  bidirectional attention and causal attention both give the real positions what they gave unpadded, even in
  models that count positions from the start of the row (BERT, the BART family) rather than from the mask. Rows
  the caller padded on the left (decoders) stay as they are; only the extension is appended.
* Extra batch rows are copies of the first row. Their outputs are dropped; copies keep every row well formed
  for models that fail on a row with no real token (BART's classification head needs an end-of-sequence token
  in every row).

Works on NumPy arrays and torch tensors alike, and imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter_core.errors import InputShapeError, InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = [
    "InputShapeError",
    "PaddedInputs",
    "describe_shape",
    "pad_inputs",
    "pad_to_static_shape",
    "pad_token_id_for",
    "static_shape_of",
]

#: Inputs padded with the pad token id; every other input is padded with 0 (attention masks included).
TOKEN_ID_INPUTS = ("input_ids", "decoder_input_ids")


def describe_shape(static_shape: Mapping[str, int]) -> str:
    """``batch 2 × sequence 16``: a static shape as messages show it."""
    return " × ".join(f"{name} {size}" for name, size in static_shape.items()) or "no dynamic axes"


def static_shape_of(inputs: Mapping[str, Any], axes: Mapping[str, Mapping[int, str]]) -> dict[str, int]:
    """The size of every symbolic axis in `inputs` (``{"batch": 2, "sequence": 8}``), checked to agree across inputs."""
    sizes: dict[str, int] = {}
    for name, value in inputs.items():
        shape = tuple(value.shape)
        for axis, axis_name in axes.get(name, {}).items():
            if axis >= len(shape):
                raise InvalidArgumentError(f"input {name!r} has shape {shape}; it needs an axis {axis} ({axis_name})")
            size = int(shape[axis])
            if sizes.setdefault(axis_name, size) != size:
                raise InvalidArgumentError(
                    f"input {name!r} has {axis_name} {size} but another input has {axis_name} {sizes[axis_name]}; "
                    "give every input the same sizes"
                )
    return sizes


def pad_token_id_for(model_config: Any, preprocessor: Any = None) -> int:
    """The id padding uses: the tokenizer's pad token, else the model config's, else 0 (`ModelConfigView`)."""
    from exporter_core.model_config import ModelConfigView

    return ModelConfigView(model_config, tokenizer=preprocessor).pad_token_id_or(0)


def _is_paddable(axis_name: str) -> bool:
    return axis_name == "batch" or "sequence" in axis_name


def _full(like: Any, shape: tuple[int, ...], fill: int | float) -> Any:
    if hasattr(like, "new_full"):  # a torch tensor: stay on its device and dtype without importing torch
        return like.new_full(shape, fill)
    return np.full(shape, fill, dtype=np.asarray(like).dtype)


@dataclass
class PaddedInputs:
    """Inputs padded to a static shape, and what is needed to cut outputs back to the caller's sizes."""

    inputs: dict[str, Any]
    #: Sizes of the caller's inputs per axis name (before padding).
    original: dict[str, int]
    #: The static shape the inputs were padded to.
    static_shape: dict[str, int]
    padding_side: str = "right"

    @property
    def padded(self) -> bool:
        """True when at least one axis was padded."""
        return any(self.original.get(name, size) != size for name, size in self.static_shape.items())

    def unpad(self, outputs: Mapping[str, Any], output_axes: Mapping[str, Mapping[int, str]]) -> dict[str, Any]:
        """Outputs cut back to the caller's sizes along their batch and sequence axes."""
        cut = {}
        for name, value in outputs.items():
            index: list[slice] = [slice(None)] * len(tuple(value.shape))
            for axis, axis_name in output_axes.get(name, {}).items():
                if axis >= len(index) or axis_name not in self.original:
                    continue
                wanted, have = self.original[axis_name], int(value.shape[axis])
                if wanted >= have:
                    continue
                left = axis_name != "batch" and self.padding_side == "left"
                index[axis] = slice(have - wanted, have) if left else slice(0, wanted)
            cut[name] = value[tuple(index)]
        return cut


def pad_inputs(
    inputs: Mapping[str, Any],
    axes: Mapping[str, Mapping[int, str]],
    static_shape: Mapping[str, int],
    *,
    pad_token_id: int = 0,
    padding_side: str = "right",
) -> PaddedInputs:
    """Pad every input's batch and sequence axes up to `static_shape`; other axes must already match it.

    `axes` maps input name -> {axis index: axis name} (an architecture config's `inputs`). Sequences are extended
    on `padding_side` (keep "right" unless the artifact needs otherwise, see the module notes); extra batch rows
    copy the first row. Raises `InputShapeError`, naming the static shape, for an input larger than it or a fixed
    axis of another size.
    """
    if padding_side not in ("left", "right"):
        raise InvalidArgumentError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    static = dict(static_shape)
    traced = describe_shape(static)
    original = static_shape_of(inputs, axes)
    for axis_name, size in original.items():
        limit = static.get(axis_name)
        if limit is None:
            continue
        if size > limit:
            raise InputShapeError(
                f"the inputs have {axis_name} {size}, larger than the traced shape ({traced}); split or truncate "
                f"them to {axis_name} {limit} at most, or export again with a larger maximum shape",
                static,
            )
        if size < limit and not _is_paddable(axis_name):
            raise InputShapeError(
                f"the inputs have {axis_name} {size} but the module was traced with {axis_name} {limit} ({traced}); "
                f"pass exactly {limit}",
                static,
            )
    padded: dict[str, Any] = {}
    for name, value in inputs.items():
        shape = tuple(int(s) for s in value.shape)
        target = list(shape)
        batch_axis = None
        for axis, axis_name in axes.get(name, {}).items():
            if axis_name in static:
                target[axis] = static[axis_name]
            if axis_name == "batch":
                batch_axis = axis
        if tuple(target) == shape:
            padded[name] = value
            continue
        fill = pad_token_id if name in TOKEN_ID_INPUTS else 0
        out = _full(value, tuple(target), fill)
        index: list[slice] = []
        for axis, size in enumerate(shape):
            axis_name = axes.get(name, {}).get(axis, "")
            left = padding_side == "left" and axis_name != "batch"
            index.append(slice(target[axis] - size, target[axis]) if left else slice(0, size))
        out[tuple(index)] = value
        if batch_axis is not None and shape[batch_axis] < target[batch_axis] and shape[batch_axis] > 0:
            rows = shape[batch_axis]
            source: list[slice] = [slice(None)] * len(target)
            source[batch_axis] = slice(0, 1)
            for row in range(rows, target[batch_axis]):
                destination: list[slice] = [slice(None)] * len(target)
                destination[batch_axis] = slice(row, row + 1)
                out[tuple(destination)] = out[tuple(source)]
        padded[name] = out
    return PaddedInputs(inputs=padded, original=original, static_shape=static, padding_side=padding_side)


def pad_to_static_shape(
    inputs: Mapping[str, Any],
    config: OnnxConfig,
    static_shape: Mapping[str, int],
    preprocessor: Any = None,
    padding_side: str = "right",
) -> PaddedInputs:
    """`pad_inputs` with the axes and pad token of an architecture config (and its preprocessor's, if given)."""
    return pad_inputs(
        inputs,
        config.inputs,
        static_shape,
        pad_token_id=pad_token_id_for(config.model_config, preprocessor),
        padding_side=padding_side,
    )
