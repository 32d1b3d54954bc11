"""sentence-embedding on tiny checkpoints, compared with sentence-transformers itself on padded batches.

One graph holds every pooling mode sentence-transformers has (concatenated, then normalised), so a single export
checks them all against ``SentenceTransformer.encode``; a plain checkpoint is pooled as sentence-transformers pools a
plain model (mean, not normalised).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporter_core.sentence import POOLING_MODES, SentenceModules, write_sentence_modules
from exporter_core.testing import INIT_STD, build_tiny_checkpoint

SENTENCES = ["hello world", "this is a runtime with world hello hello", "is", "using this runtime"]


def _onnx_embeddings(out: Path, tokenizer, sentences: list[str]) -> np.ndarray:
    import onnxruntime as ort

    batch = tokenizer(sentences, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {
        i.name: batch[i.name] if i.name in batch else np.zeros_like(batch["input_ids"]) for i in session.get_inputs()
    }
    (embeddings,) = session.run(["sentence_embedding"], feed)
    return embeddings


@pytest.mark.parametrize("sentence_folder", [True, False], ids=["all-pooling-modes-normalised", "plain-checkpoint"])
def test_tiny_sentence_embedding_matches_sentence_transformers(tmp_path, sentence_folder):
    sentence_transformers = pytest.importorskip("sentence_transformers", reason="test dependency not installed")
    from exporter.pipeline import run_export

    folder = build_tiny_checkpoint("bert", "default", tmp_path / "ckpt", with_tokenizer=True, init_std=INIT_STD)
    if sentence_folder:
        write_sentence_modules(folder, SentenceModules(POOLING_MODES, True, "test"), 32)
    lines: list[str] = []
    out = tmp_path / "out"
    report = run_export("onnx", folder, out, feature="sentence-similarity", log=lines.append)
    assert report.passed and report.feature == "sentence-embedding"
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    reference = model.encode(SENTENCES, convert_to_numpy=True)
    exported = _onnx_embeddings(out, model.tokenizer, SENTENCES)
    assert exported.shape == reference.shape == (len(SENTENCES), 32 * (len(POOLING_MODES) if sentence_folder else 1))
    np.testing.assert_allclose(exported, reference, atol=1e-5, rtol=0)
    # The exported folder says what its graph pools, and sentence-transformers reads the same modules back.
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"] + (
        ["Normalize"] if sentence_folder else []
    )
    (chosen,) = [line for line in lines if line.startswith("feature: ")]
    if sentence_folder:
        assert "cls + max + mean + mean_sqrt_len_tokens + weightedmean + lasttoken pooling" in chosen
        assert "L2-normalised: as its modules.json says" in chosen
    else:
        assert "mean pooling over the real tokens, not normalised: a plain checkpoint without modules.json" in chosen
