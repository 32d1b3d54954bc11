"""The core padding helper that static-shape backends share (TorchScript here, Neuron next)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporter_core.errors import UserError
from exporter_core.padding import InputShapeError, describe_shape, pad_inputs, pad_to_static_shape, static_shape_of

AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "token_type_ids": {0: "batch", 1: "sequence"},
}


def _inputs(rows: int, length: int) -> dict[str, np.ndarray]:
    ids = np.arange(10, 10 + rows * length, dtype=np.int64).reshape(rows, length)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.ones_like(ids)}


def test_sequences_get_pad_tokens_and_zero_mask_extra_rows_copy_the_first_then_outputs_are_cut_back():
    padded = pad_inputs(_inputs(1, 3), AXES, {"batch": 2, "sequence": 5}, pad_token_id=7)
    assert padded.padded and padded.original == {"batch": 1, "sequence": 3}
    np.testing.assert_array_equal(padded.inputs["input_ids"], [[10, 11, 12, 7, 7], [10, 11, 12, 7, 7]])
    np.testing.assert_array_equal(padded.inputs["attention_mask"], [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(padded.inputs["token_type_ids"], [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    hidden = np.arange(2 * 5 * 4).reshape(2, 5, 4)
    pooled = np.arange(2 * 3).reshape(2, 3)
    cut = padded.unpad({"h": hidden, "p": pooled}, {"h": {0: "batch", 1: "sequence"}, "p": {0: "batch"}})
    np.testing.assert_array_equal(cut["h"], hidden[:1, :3])
    np.testing.assert_array_equal(cut["p"], pooled[:1])


def test_left_padding_pads_and_cuts_on_the_left_and_keeps_torch_tensors():
    inputs = {name: torch.from_numpy(value) for name, value in _inputs(2, 2).items()}
    padded = pad_inputs(inputs, AXES, {"batch": 2, "sequence": 4}, pad_token_id=0, padding_side="left")
    assert isinstance(padded.inputs["input_ids"], torch.Tensor)
    assert padded.inputs["input_ids"].tolist() == [[0, 0, 10, 11], [0, 0, 12, 13]]
    assert padded.inputs["attention_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    logits = torch.arange(2 * 4).reshape(2, 4)
    assert padded.unpad({"logits": logits}, {"logits": {0: "batch", 1: "sequence"}})["logits"].tolist() == [
        [2, 3],
        [6, 7],
    ]


def test_exact_shape_is_passed_through_untouched():
    inputs = _inputs(2, 4)
    padded = pad_inputs(inputs, AXES, {"batch": 2, "sequence": 4})
    assert not padded.padded and all(padded.inputs[n] is inputs[n] for n in inputs)


def test_larger_input_is_refused_naming_the_traced_shape():
    with pytest.raises(InputShapeError) as caught:
        pad_inputs(_inputs(1, 9), AXES, {"batch": 2, "sequence": 8})
    assert isinstance(caught.value, UserError)
    message = str(caught.value)
    assert "sequence 9" in message and "batch 2 × sequence 8" in message
    assert caught.value.static_shape == {"batch": 2, "sequence": 8}
    with pytest.raises(InputShapeError, match=r"batch 3, larger than the traced shape \(batch 2 × sequence 8\)"):
        pad_inputs(_inputs(3, 4), AXES, {"batch": 2, "sequence": 8})


def test_fixed_axes_are_not_padded():
    axes = {"input_ids": {0: "batch", 1: "choice", 2: "sequence"}}
    inputs = {"input_ids": np.ones((1, 3, 4), dtype=np.int64)}
    with pytest.raises(InputShapeError, match="choice 3 but the module was traced with choice 4"):
        pad_inputs(inputs, axes, {"batch": 2, "choice": 4, "sequence": 8})
    padded = pad_inputs(
        {"input_ids": np.ones((1, 4, 4), dtype=np.int64)}, axes, {"batch": 2, "choice": 4, "sequence": 8}
    )
    assert padded.inputs["input_ids"].shape == (2, 4, 8)


def test_inconsistent_inputs_and_config_helper(tiny_tokenizer):
    bad = _inputs(2, 4)
    bad["attention_mask"] = np.ones((2, 5), dtype=np.int64)
    with pytest.raises(UserError, match="sequence 5 but another input has sequence 4"):
        static_shape_of(bad, AXES)
    from exporter_core.architectures.encoders import LayoutLMOnnxConfig
    from exporter_core.testing import tiny_model_config

    config = LayoutLMOnnxConfig(tiny_model_config("layoutlm", pad_token_id=5))
    inputs = config.generate_dummy_inputs(None, batch_size=1, seq_length=3, framework="np")
    padded = pad_to_static_shape(inputs, config, {"batch": 2, "sequence": 6})
    assert padded.inputs["bbox"].shape == (2, 6, 4) and not padded.inputs["bbox"][:, 3:].any()
    assert (padded.inputs["input_ids"][:, 3:] == 5).all()
    np.testing.assert_array_equal(padded.inputs["bbox"][1], padded.inputs["bbox"][0])
    assert describe_shape({"batch": 2, "sequence": 6}) == "batch 2 × sequence 6"
