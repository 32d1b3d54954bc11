"""The default ONNX graph is one onnxruntime optimises fully (issue 11, part 1).

Structural, not timed: a tiny BERT is exported with the defaults and loaded by onnxruntime with every graph
optimisation on; the optimised graph it writes must hold no per-layer leftovers of the SDPA decomposition
(IsNaN, and the Where that goes with it), no unfused exact GELU (Erf), one BiasGelu and one fused
transposed-key MatMul per layer. These leftovers made the graph 1.26x to 1.44x slower than Optimum's on
all-MiniLM-L6-v2 (bench/onnx_latency.py measures it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core.architectures.encoders import BertOnnxConfig

_LAYERS = 3
_SIZES = {"hidden_size": 48, "num_hidden_layers": _LAYERS, "num_attention_heads": 6, "intermediate_size": 61}


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def exported(
    request: pytest.FixtureRequest, tiny_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The tiny BERT, its attention implementation before export, and the exported and ORT-optimised graphs, for
    both engines (the TorchScript one traces it by default; the dynamo one captures it when asked)."""
    import onnx
    import onnxruntime as ort

    from exporter_core import loading
    from exporter_onnx.convert import export_onnx

    folder = tiny_checkpoint("bert", "default", with_tokenizer=True, **_SIZES)
    model = loading.load_model(folder, "default", BertOnnxConfig)
    before = model.config._attn_implementation
    out = tmp_path_factory.mktemp("fast-graph")
    config = BertOnnxConfig.from_model_config(model.config, task="default")
    info = export_onnx(
        model, config, out / "model.onnx", engine=request.param, preprocessor=loading.load_preprocessor(folder)
    )
    assert info.engine == request.param
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out / "optimised.onnx")
    session = ort.InferenceSession(str(info.path), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(out / "optimised.onnx"), load_external_data=False)
    return {
        "model": model,
        "before": before,
        "session": session,
        "ops": Counter(node.op_type for node in optimised.graph.node),
        "engine": info.engine,
    }


def test_model_keeps_its_attention_implementation(exported: dict[str, Any]) -> None:
    # The graph is captured with eager attention; the caller's model is switched back afterwards.
    assert exported["before"] == "sdpa"
    assert exported["model"].config._attn_implementation == "sdpa"


def test_optimised_graph_has_no_sdpa_nan_guard(exported: dict[str, Any]) -> None:
    ops = exported["ops"]
    assert ops["IsNaN"] == 0, ops
    # At most the one that turns the padding mask into an additive mask (the traced graph also expands the mask
    # through a Where, once): none per layer.
    assert ops["Where"] <= (2 if exported["engine"] == "torchscript" else 1), ops


def test_optimised_graph_fuses_gelu_and_key_transpose(exported: dict[str, Any]) -> None:
    ops = exported["ops"]
    assert ops["Erf"] == 0, ops
    assert ops["BiasGelu"] == _LAYERS, ops
    assert ops["FusedMatMul"] == _LAYERS, ops
    # Per layer: query, key and value heads split, context heads merged (the key's transpose is fused); no more.
    assert ops["Transpose"] <= 4 * _LAYERS, ops


def test_fast_graph_matches_pytorch_on_padded_batch(exported: dict[str, Any]) -> None:
    import torch

    model, session = exported["model"], exported["session"]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (3, 13), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    (got,) = session.run(["last_hidden_state"], feeds)
    kept = mask.bool().numpy()
    assert np.abs(got[kept] - expected.numpy()[kept]).max() < 1e-4
