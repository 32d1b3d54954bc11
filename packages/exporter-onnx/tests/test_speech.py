"""Speech encoder-decoders (Whisper, Speech2Text, Moonshine) exported to ONNX and validated against PyTorch.

Every (architecture, feature) pair is exported and validated by the generated cases (``nox -s matrix``); this file
keeps what those cannot show:

- `test_with_past_export_is_three_files_that_generate_like_generate`: ``speech2seq-lm-with-past`` through the
  facade's pipeline writes the three files a runtime drives, with the encoder's audio inputs (Whisper's fixed-length
  spectrogram, Speech2Text's frames and mask) and each model's cross-attention mask;
  every scenario passes at other batches, audio durations and past lengths (an empty past included); greedy
  generation over the three files equals ``model.generate`` for 16 tokens on synthetic audio, and fails for
  another model (the check bites);
- `test_moonshine_is_refused_with_the_reason`: Moonshine's encoder downsamples its mask with a slice neither ONNX
  engine writes for a dynamic audio length; both features are refused with that reason and nothing is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.architectures.seq2seq import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE
from exporter_core.features import config_class_for
from exporter_core.generation import seq2seq_parity
from exporter_onnx.generation import Seq2SeqOnnxGenerator

FEATURE = "speech2seq-lm-with-past"
FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
#: The encoder inputs and the decoders' mask axis of each model type.
LAYOUT = {
    "whisper": (["input_features"], None),
    "speech_to_text": (["input_features", "attention_mask"], "encoder_frames"),
}


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = list(graph.input) + list(graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


_MATRIX = pytest.mark.exporter_matrix


@pytest.mark.parametrize("model_type", ["whisper", pytest.param("speech_to_text", marks=_MATRIX)])
def test_with_past_export_is_three_files_that_generate_like_generate(
    model_type: str, tiny_checkpoint: Callable[..., Path], record_difference: Callable[..., float], tmp_path: Path
) -> None:
    from exporter.pipeline import run_export

    folder = tiny_checkpoint(model_type, FEATURE)
    out = tmp_path / "out"
    # The three-file layout (--no-merge), whose graphs are checked one by one; test_merged_decoder.py merges them.
    options = {"opset": 17, "merge": False}
    report = run_export("onnx", folder, out, feature=FEATURE, options=options, log=lambda _: None)
    assert report.passed, report.failures
    assert set(FILES) <= {p.name for p in out.iterdir()} and not (out / "model.onnx").exists()

    encoder_inputs, mask_axis = LAYOUT[model_type]
    encoder, decoder, with_past = (_graph_dims(out / name) for name in FILES)
    assert [n for n in encoder if n in encoder_inputs] == encoder_inputs
    assert encoder["last_hidden_state"][0] == encoder[encoder_inputs[0]][0], "one batch axis"
    for graph in (decoder, with_past):
        if mask_axis is None:
            assert "encoder_attention_mask" not in graph
        else:
            assert isinstance(graph["encoder_attention_mask"][1], str)
    assert "encoder_attention_mask" not in encoder, "the decoders take the encoder's own mask input, if any"
    assert not [n for n in with_past if n.startswith("present.") and ".encoder." in n]

    batches, past_lengths = set(), set()
    for part in report.parts:
        record_difference(f"{model_type}:{FEATURE} [{part.part}]", part, arch=model_type)
        assert part.atol == 1e-5
        shapes = part.reference_inputs
        batches.add(shapes["input_ids" if part.artifact != ENCODER_FILE else encoder_inputs[0]][0])
        if part.artifact == DECODER_WITH_PAST_FILE:
            past_lengths.add(shapes["past_key_values.0.decoder.key"][2])
        if part.artifact == ENCODER_FILE and model_type != "whisper":
            assert shapes[encoder_inputs[0]][1] != part.export_inputs[encoder_inputs[0]][1], "another duration"
    assert batches >= {1, 3, 4} and past_lengths == {0, 1, 4, 23}

    (parity,) = report.checks
    assert parity.name == "generation parity" and parity.passed, parity.detail
    assert "identical to model.generate" in parity.detail

    model = loading.load_model(folder, FEATURE, config_class_for(model_type))
    preprocessor = loading.load_preprocessor(folder)
    assert preprocessor is not None and hasattr(preprocessor, "sampling_rate"), "the checkpoint's feature extractor"
    config = config_class_for(model_type).for_feature(model.config, FEATURE)
    tokens = np.asarray(parity.data["exported_tokens"])
    assert tokens.shape[0] == 2 and np.array_equal(tokens[:, 0], [config.decoder_start_token_id] * 2)
    if model_type != "whisper":
        # The tiny Speech2Text (and a reinitialised one) answers its end-of-sequence token at once: its parity covers
        # one token, and another model cannot be told apart by it.
        return
    assert tokens.shape == (2, 17), "16 new tokens after the start token"
    generator = Seq2SeqOnnxGenerator.from_folder(out)
    runners = {
        "encoder": generator.encoder,
        "decoder": generator.decoder,
        "decoder_with_past": generator.decoder_with_past,
    }
    import torch

    torch.manual_seed(123)
    other = type(model)(model.config).eval()
    failed = seq2seq_parity(other, config, runners, preprocessor)
    assert not failed.passed and "differs: export" in failed.detail


def test_moonshine_is_refused_with_the_reason(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    from exporter.pipeline import run_export
    from exporter_core.errors import OpsetError

    folder = tiny_checkpoint("moonshine", "speech2seq-lm")
    for feature in ("speech2seq-lm", FEATURE):
        with pytest.raises(OpsetError, match="strided slice"):
            run_export("onnx", folder, tmp_path / feature, feature=feature, log=lambda _: None)
        assert not (tmp_path / feature).exists() or not any((tmp_path / feature).iterdir())
