"""The ONNX backend traces stateless parts with the TorchScript engine for speed; a traced graph that fails
validation is exported again with the dynamo engine, once, and the report says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def _wrong_trace(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """Make the TorchScript engine write a graph whose numbers are off (as a trace holding a traced shape is)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from exporter_onnx import convert

    real = convert._export_torchscript

    def traced_wrong(module: Any, dummy: dict[str, Any], config: Any, opset: int, path: Path) -> None:
        calls.append("torchscript")
        real(module, dummy, config, opset, path)
        model = onnx.load(str(path))
        matmul_weights = {name for node in model.graph.node if node.op_type == "MatMul" for name in node.input}
        for weight in model.graph.initializer:
            if weight.name in matmul_weights:
                weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(convert, "_export_torchscript", traced_wrong)


def test_a_traced_graph_that_fails_validation_is_captured_again_with_dynamo(cli, checkpoint, tmp_path, monkeypatch):
    calls: list[str] = []
    _wrong_trace(monkeypatch, calls)
    result = cli("onnx", "--model", str(checkpoint("bert")), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert calls == ["torchscript"]
    assert "the TorchScript engine traced model for speed and the graph failed validation" in result.stderr
    assert "exporting again" in result.stderr
    report = json.loads((tmp_path / "model.onnx.validation.json").read_text())
    assert report["passed"] and report["metadata"]["engine"] == "dynamo"
    retried = report["metadata"]["retried"]
    assert "TorchScript engine" in retried["reason"] and retried["first_failures"]
    # Nothing of the first attempt is left beside the files of the second.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(report["files"])


def test_a_traced_graph_that_cannot_run_at_other_shapes_is_captured_again(cli, checkpoint, tmp_path, monkeypatch):
    """A trace that kept the traced batch and length: onnxruntime refuses other shapes, which is a failure too."""
    import torch

    from exporter_onnx import convert

    calls: list[str] = []
    real_trace, real_export = convert._export_torchscript, torch.onnx.export

    def traced(*args: Any, **kwargs: Any) -> None:
        calls.append("torchscript")
        real_trace(*args, **kwargs)

    def without_dynamic_axes(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("dynamic_axes", None)  # the trace keeps the traced batch and length
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", without_dynamic_axes)
    monkeypatch.setattr(convert, "_export_torchscript", traced)
    result = cli("onnx", "--model", str(checkpoint("bert")), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert calls == ["torchscript"] and "exporting again" in result.stderr
    report = json.loads((tmp_path / "model.onnx.validation.json").read_text())
    assert report["passed"] and report["metadata"]["engine"] == "dynamo"
    assert "the exported graph could not run" in report["metadata"]["retried"]["first_failures"][0]


def test_an_explicit_engine_is_not_retried(cli, checkpoint, tmp_path, monkeypatch):
    calls: list[str] = []
    _wrong_trace(monkeypatch, calls)
    result = cli("onnx", "--model", str(checkpoint("bert")), "--engine", "torchscript", str(tmp_path / "out"))
    assert result.returncode == 1
    assert calls == ["torchscript"] and "exporting again" not in result.stderr
    assert "validation failed" in result.stderr
