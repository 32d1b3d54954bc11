"""The generic decoder-only LLM family exported to ONNX through the facade's pipeline (export, validation at other
shapes with left padding and past lengths 0/5/11, and for causal-lm-with-past 16-token greedy generation parity).

Default tier: a sliding-window model with logit soft-capping (Gemma 2), a mixture-of-experts model (Mixtral) and a
classification head (Qwen3) on the TorchScript-based engine (opset 17), Llama on dynamo (opset 18), and the refusals.
Matrix tier (``--exporter-matrix``): every feature of every model type that exports below opset 18 on the
TorchScript-based engine; the kit's generated cases (test_onnx_cases.py) export every pair with the backend's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from exporter_core.errors import OpsetError, UnsupportedFeatureError
from exporter_core.plugins import load_architecture

LLM_TYPES = sorted(
    ep.name
    for ep in metadata.entry_points(group="exporter.architectures")
    if ep.value.startswith("exporter_core.architectures.llm:")
)
TORCHSCRIPT = {"opset": 17, "engine": "torchscript"}
DYNAMO = {"opset": 18, "engine": "dynamo"}


def _export(checkpoint: Path, feature: str, options: dict[str, Any], output: Path) -> Any:
    from exporter.pipeline import run_export

    return run_export("onnx", checkpoint, output, feature=feature, options=dict(options), log=lambda _: None)


def _assert_validated(report: Any, feature: str) -> None:
    assert report.passed, "\n".join(report.failures())
    assert report.worst_difference < 1e-4
    # Without past one left-padded shape; with past also an empty past, one token at batch 1, padding into new tokens.
    assert len(report.parts) == (4 if feature.endswith("-with-past") else 1)
    if feature == "causal-lm-with-past":
        (parity,) = report.checks
        assert parity.passed and parity.detail.startswith("16 new tokens identical to model.generate"), parity.detail
    else:
        assert report.checks == []


@pytest.mark.parametrize(
    ("model_type", "feature", "options"),
    [
        ("gemma2", "causal-lm-with-past", TORCHSCRIPT),
        ("mixtral", "causal-lm-with-past", TORCHSCRIPT),
        ("qwen3", "sequence-classification", TORCHSCRIPT),
        ("llama", "causal-lm-with-past", DYNAMO),
    ],
    ids=lambda v: v["engine"] if isinstance(v, dict) else v,
)
def test_export_validates_and_generates_like_transformers(
    model_type: str, feature: str, options: dict[str, Any], tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    report = _export(tiny_checkpoint(model_type, feature), feature, options, tmp_path / "out")
    _assert_validated(report, feature)
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_refusals_come_before_export_as_one_line_with_the_reason(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedFeatureError, match="conv layers keep a state") as refused:
        _export(tiny_checkpoint("lfm2", "causal-lm-with-past"), "causal-lm-with-past", TORCHSCRIPT, tmp_path / "a")
    with pytest.raises(OpsetError, match=r"needs at least 18 \(below it the TorchScript-based exporter") as too_low:
        _export(tiny_checkpoint("glm", "causal-lm"), "causal-lm", TORCHSCRIPT, tmp_path / "b")
    for error in (refused.value, too_low.value):
        assert "\n" not in str(error)
    assert not list(tmp_path.rglob("*.onnx")), "nothing is exported"


def _torchscript_cases() -> list[Any]:
    cases = []
    for model_type in LLM_TYPES:
        cls = load_architecture(model_type)
        if cls.min_onnx_opset <= 17:
            cases += [pytest.param(model_type, f, id=f"{model_type}:{f}") for f in cls.supported_features(model_type)]
    return cases


@pytest.mark.exporter_matrix
@pytest.mark.parametrize(("model_type", "feature"), _torchscript_cases())
def test_every_type_and_feature_on_the_torchscript_based_engine(
    model_type: str, feature: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    try:
        report = _export(tiny_checkpoint(model_type, feature), feature, TORCHSCRIPT, tmp_path / "out")
    except UnsupportedFeatureError as exc:
        pytest.skip(f"refused: {exc}")
    _assert_validated(report, feature)
