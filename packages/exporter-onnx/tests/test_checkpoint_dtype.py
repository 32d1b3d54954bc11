"""The exported dtype follows the checkpoint's where onnxruntime's CPU can run it (issue 10, item 4).

Transformers 5 loads a checkpoint in the dtype it stores; the export loads it in float32 (exact widening) and the
ONNX backend then writes fp16 for a float16 checkpoint and fp32 for a bfloat16 one, saying so in the report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter_core.loading import stored_float_dtype
from exporter_onnx.variants import VariantOptions, bf16_refusal, with_checkpoint_dtype


def _recast(checkpoint: Path, folder: Path, dtype: str) -> Path:
    """The same tiny checkpoint with its weights stored in `dtype` (config.json says so too)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=getattr(torch, dtype))
    model.save_pretrained(str(folder))
    for extra in checkpoint.iterdir():
        if extra.name.startswith(("tokenizer", "special_tokens", "vocab")) and not (folder / extra.name).exists():
            shutil.copy(extra, folder / extra.name)
    return folder


def _export(checkpoint: Path, output: Path, **options: Any) -> Any:
    from exporter.pipeline import run_export

    lines: list[str] = []
    report = run_export("onnx", checkpoint, output, feature="causal-lm", options=options, log=lines.append)
    return report, lines


def _initializer_types(path: Path) -> set[int]:
    import onnx

    return {t.data_type for t in onnx.load(str(path), load_external_data=False).graph.initializer}


def test_stored_dtype_is_the_one_holding_most_bytes() -> None:
    declared = {
        "a": {"dtype": "BF16", "data_offsets": [0, 800]},
        "b": {"dtype": "F32", "data_offsets": [800, 1200]},
        "ids": {"dtype": "I64", "data_offsets": [1200, 9000]},
    }
    assert stored_float_dtype(declared) == "bfloat16"
    assert stored_float_dtype({"ids": {"dtype": "I64", "data_offsets": [0, 8]}}) is None


def test_the_users_dtype_and_quantization_win_over_the_checkpoints() -> None:
    plain = VariantOptions()
    assert with_checkpoint_dtype(plain, "float32") == (plain, None)
    assert with_checkpoint_dtype(plain, None) == (plain, None)
    assert with_checkpoint_dtype(VariantOptions(dtype="fp32"), "float16")[0].dtype == "fp32"
    assert with_checkpoint_dtype(VariantOptions(quantize="int8"), "float16")[0].dtype is None
    half, reason = with_checkpoint_dtype(plain, "float16")
    assert half.dtype == "fp16" and reason is not None and "fp32" in reason
    brain, reason = with_checkpoint_dtype(plain, "bfloat16")
    if bf16_refusal() is not None:
        assert brain.dtype is None and reason is not None and "exactly" in reason


def test_a_bfloat16_checkpoint_exports_fp32_and_says_so(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    from onnx import TensorProto

    if bf16_refusal() is None:  # pragma: no cover - an onnxruntime with bfloat16 CPU kernels exports bf16
        pytest.skip("this onnxruntime runs bfloat16 on the CPU: the checkpoint's dtype is exported")
    checkpoint = _recast(tiny_checkpoint("llama", "causal-lm", with_tokenizer=True), tmp_path / "bf16", "bfloat16")
    report, lines = _export(checkpoint, tmp_path / "out")
    assert report.passed
    assert report.metadata["dtype"]["checkpoint"] == "bfloat16" and report.metadata["dtype"]["exported"] == "fp32"
    assert any("stores bfloat16 weights: exported as fp32" in line for line in lines)
    types = _initializer_types(tmp_path / "out" / "model.onnx")
    assert TensorProto.FLOAT in types and not types & {TensorProto.BFLOAT16, TensorProto.FLOAT16}
    assert "variant" not in report.metadata


def test_a_float16_checkpoint_exports_fp16(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    from onnx import TensorProto

    checkpoint = _recast(tiny_checkpoint("llama", "causal-lm", with_tokenizer=True), tmp_path / "fp16", "float16")
    report, lines = _export(checkpoint, tmp_path / "half")
    assert report.passed, report.failures
    assert report.metadata["dtype"] == {
        "checkpoint": "float16",
        "exported": "fp16",
        "reason": report.metadata["dtype"]["reason"],
    }
    assert report.metadata["variant"]["options"]["dtype"] == "fp16"
    assert any(check.name.startswith("task check") and check.passed for check in report.checks)
    assert TensorProto.FLOAT16 in _initializer_types(tmp_path / "half" / "model.onnx")
    assert any("exported as fp16" in line for line in lines)


def test_a_large_float16_checkpoint_stays_fp32() -> None:
    # The fp16 converter holds the whole graph in memory (protobuf's 2 GB limit): not chosen for large models.
    from exporter_onnx.variants import AUTO_FP16_MAX_BYTES

    variant, reason = with_checkpoint_dtype(VariantOptions(), "float16", AUTO_FP16_MAX_BYTES + 1)
    assert variant.dtype is None and reason is not None and "exported as fp32" in reason
    assert with_checkpoint_dtype(VariantOptions(), "float16", AUTO_FP16_MAX_BYTES - 1)[0].dtype == "fp16"
    _, reason = with_checkpoint_dtype(VariantOptions(), "float64")
    assert reason is not None and "rounded to float32" in reason


def test_int4_leaves_gathers_that_are_not_embedding_tables() -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from exporter_onnx.variants import _gathers_not_over_tables

    initializers = [
        numpy_helper.from_array(np.zeros((10, 8), np.float32), "table"),
        numpy_helper.from_array(np.arange(4, dtype=np.int64), "positions"),
        numpy_helper.from_array(np.zeros(6, np.float32), "vector"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["a"], name="embed"),
        helper.make_node("Gather", ["positions", "ids"], ["b"], name="lookup"),
        helper.make_node("Gather", ["vector", "ids"], ["c"], name="scalar"),
        helper.make_node("Gather", ["a", "ids"], ["d"], name="dynamic"),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abcd"]
    model = helper.make_model(helper.make_graph(nodes, "g", [ids], outputs, initializers))
    assert _gathers_not_over_tables(model) == ["lookup", "scalar", "dynamic"]
