"""On a Neuron host only: compile with AWS's SDK, load onto a NeuronCore, validate, analyse. Marked ``neuron``.

Skipped unless AWS's own torch-neuronx (or torch-neuron) is installed with its requirements and a Neuron device
(/dev/neuron*) is present; the stand-in never satisfies that. On an Inf2 host:

    pip install torch-neuronx --extra-index-url https://pip.repos.neuron.amazonaws.com
    pytest packages/exporter-neuron/tests -m neuron -p no:xdist

The target is EXPORTER_NEURON_TARGET, else inf2 where torch-neuronx is installed, else inf1. Tolerances are
starting points, not measurements: on Inf2/Trn1 ``--auto-cast none`` keeps FP32; on Inf1 neuron-cc casts matrix
multiplications to BF16 even with ``--fast-math none``.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import aws_sdk_targets

import exporter
from exporter_neuron import load, read_metadata
from exporter_torchscript.runtime import without_jit_deprecation

pytestmark = pytest.mark.neuron

ATOL = {"inf1": 5e-2, "inf2": 1e-3, "trn1": 1e-3}


def _target() -> str:
    wanted = os.environ.get("EXPORTER_NEURON_TARGET")
    available = aws_sdk_targets()
    if wanted:
        return wanted
    return "inf2" if "inf2" in available else available[0]


def _text(rows: int, length: int, real: list[int]) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 99, (rows, length), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(ids)
    for row, count in enumerate(real):
        mask[row, count:] = 0
        ids[row, count:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def device_export(checkpoint, tmp_path_factory):
    """Tiny BERT compiled for the host's target at batch 1 × sequence 32, validated on the device."""
    target = _target()
    out = tmp_path_factory.mktemp(f"neuron-{target}")
    report = exporter.export(
        checkpoint("bert", "default"),
        out,
        format="neuron",
        target=target,
        batch_size=1,
        sequence_length=32,
        auto_cast="none",
        atol=ATOL[target],
    )
    return target, report, out


def test_compiled_with_awss_sdk_and_validated_on_the_device(device_export):
    target, report, out = device_export
    assert report.passed, report.failures
    metadata = read_metadata(out / "model_neuron.pt")
    assert metadata.target == target and metadata.compiled_by_aws_sdk
    assert metadata.sdk["compiler_version"], "the compiler's version is recorded"
    saved = json.loads((out / "model_neuron.pt.validation.json").read_text())
    print(f"{target}: worst max abs difference {saved['worst_max_abs_diff']:.3e} (atol {ATOL[target]})")


def test_the_artifact_holds_a_neuron_graph_and_runs_only_at_its_shape(device_export):
    import importlib

    target, _, out = device_export
    importlib.import_module("torch_neuron" if target == "inf1" else "torch_neuronx")
    with without_jit_deprecation():
        raw = torch.jit.load(str(out / "model_neuron.pt"))
    assert "neuron::" in str(raw.inlined_graph)
    model = load(out / "model_neuron.pt")
    (hidden,) = model(**_text(1, 20, real=[14]))
    assert hidden.shape == (1, 20, 32)
    with pytest.raises(RuntimeError):  # the compiled graph refuses any shape but its own
        raw(*_text(1, 20, real=[20]).values())


def test_dynamic_batch_on_the_device(checkpoint, tmp_path):
    target = _target()
    report = exporter.export(
        checkpoint("bert", "default"),
        tmp_path,
        format="neuron",
        target=target,
        batch_size=1,
        sequence_length=16,
        dynamic_batch=True,
        auto_cast="none",
        atol=ATOL[target],
    )
    assert report.passed, report.failures
    (hidden,) = load(tmp_path / "model_neuron.pt")(**_text(3, 16, real=[16, 9, 4]))
    assert hidden.shape == (3, 16, 32)


def test_analyze_with_the_real_sdk(checkpoint, cli):
    target = _target()
    result = cli("neuron", "analyze", "--model", checkpoint("bert", "default"), "--target", target, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sdk"]["aws_sdk"] is True and report["neuron"].get("aten::linear")
    print(json.dumps({"target": target, "cpu": report["cpu"], "percent_on_neuron": report["percent_on_neuron"]}))
