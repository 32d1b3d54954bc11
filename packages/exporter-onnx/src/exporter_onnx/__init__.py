"""exporter-onnx: the ONNX backend (torch.onnx engines, opsets, external data, ONNX Runtime runner)."""

from __future__ import annotations

from exporter_onnx.backend import OnnxBackend

__all__ = ["OnnxBackend"]
