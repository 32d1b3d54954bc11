"""The whole Neuron path on CPU against the SDK stand-in: argument mapping per target, padding to the static shape,
metadata, save, load in a fresh process, validation, operator analysis.

The stand-in (tests/fixtures/neuron-sdk-standin) traces with torch.jit.trace behind a guard that refuses any shape
but the compiled one, and records every SDK call; what these tests prove is exporter-neuron's side of the
contract, not what neuron-cc / neuronx-cc compile (see test_neuron_hardware.py for that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import standin_or_skip

import exporter
from exporter_core.errors import InvalidArgumentError
from exporter_core.padding import InputShapeError
from exporter_neuron import load, read_metadata
from exporter_neuron.runtime import CompiledModuleRunner
from exporter_torchscript.runtime import without_jit_deprecation

TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def _text(rows: int, length: int, real: list[int] | None = None, seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    for row, count in enumerate(real or []):
        mask[row, count:] = 0
        ids[row, count:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _eager(folder: Path, feature: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model

    model = load_model(folder, feature, config_class_for("bert"))
    with torch.no_grad():
        output = model(**inputs)
    return output.logits if feature == "sequence-classification" else output.last_hidden_state


def _calls(standin: Any, function: str) -> list[dict[str, Any]]:
    return [call["arguments"] for call in standin.CALLS if call["function"] == function]


@pytest.fixture(scope="module")
def inf2_export(checkpoint, tmp_path_factory) -> dict[str, Any]:
    """`exporter neuron` (the command line, in this process) for inf2 at batch 2 × sequence 12 with cast options."""
    standin = standin_or_skip()
    standin.CALLS.clear()
    from exporter.cli import main

    folder = checkpoint("bert", "default")
    out = tmp_path_factory.mktemp("inf2")
    argv = [
        "neuron",
        "--model",
        str(folder),
        "--batch-size",
        "2",
        "--sequence-length",
        "12",
        "--auto-cast",
        "matmul",
        "--auto-cast-type",
        "fp16",
        "--compiler-args=--optlevel 1",
        str(out),
    ]
    code = main(argv)
    return {"code": code, "out": out, "folder": folder, "calls": list(standin.CALLS)}


def test_command_line_writes_module_metadata_and_report(inf2_export):
    assert inf2_export["code"] == 0
    out = inf2_export["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",  # the folder describes itself: the checkpoint's config and tokenizer files beside the model
        "model_neuron.neuron.json",
        "model_neuron.pt",
        "model_neuron.pt.validation.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    metadata = json.loads((out / "model_neuron.neuron.json").read_text())
    assert metadata["target"] == "inf2" and metadata["trace_function"] == "torch_neuronx.trace"
    assert metadata["static_shape"] == {"batch": 2, "sequence": 12} and metadata["dynamic_batch"] is False
    assert metadata["input_names"] == TEXT_INPUTS and metadata["output_names"] == ["last_hidden_state"]
    assert metadata["input_shapes"] == {name: [2, 12] for name in TEXT_INPUTS}
    expected_args = ["--target", "inf2", "--auto-cast", "matmult", "--auto-cast-type", "fp16", "--optlevel", "1"]
    assert metadata["compiler_args"] == expected_args and metadata["trace_arguments"] == {
        "compiler_args": expected_args
    }
    assert metadata["sdk"]["module"] == "torch_neuronx" and metadata["sdk"]["aws_sdk"] is False
    assert (
        metadata["sdk"]["distribution"] == "exporter-neuron-sdk-standin" and metadata["sdk"]["compiler"] == "neuronx-cc"
    )
    assert metadata["versions"]["torch"] == torch.__version__ and metadata["versions"]["exporter-neuron"] == "0.1.0"
    # The SDK got exactly what the metadata says, at the declared static shape.
    (trace,) = [call["arguments"] for call in inf2_export["calls"] if call["function"] == "torch_neuronx.trace"]
    assert trace["compiler_args"] == expected_args and trace["partitioner_config"] is None
    assert trace["example_inputs"] == [{"shape": [2, 12], "dtype": "int64"}] * 3
    assert not [call for call in inf2_export["calls"] if call["function"] == "torch_neuronx.dynamic_batch"]


def test_validation_ran_at_the_compiled_shape_and_padded_smaller_inputs(inf2_export):
    report = json.loads((inf2_export["out"] / "model_neuron.pt.validation.json").read_text())
    assert report["passed"] is True and report["format"] == "Neuron" and report["backend"] == "neuron"
    shapes = [part["reference_inputs"]["input_ids"] for part in report["parts"]]
    assert shapes == [[2, 12], [1, 8]]
    assert all(part["export_inputs"] == {name: [2, 12] for name in TEXT_INPUTS} for part in report["parts"])
    assert [part["part"] for part in report["parts"]] == [
        "model (traced shape (batch 2 × sequence 12))",
        "model (smaller inputs (batch 1 × sequence 8) padded to the traced shape)",
    ]
    assert report["worst_max_abs_diff"] <= 1e-5
    assert report["metadata"]["target"] == "inf2" and report["metadata"]["files"] == [
        "model_neuron.pt",
        "model_neuron.neuron.json",
    ]


def test_loaded_module_pads_smaller_inputs_and_refuses_larger_ones(inf2_export):
    path = inf2_export["out"] / "model_neuron.pt"
    model = load(path)
    inputs = _text(1, 7, real=[5])
    (hidden,) = model(*inputs.values())
    assert hidden.shape == (1, 7, 32)
    reference = _eager(inf2_export["folder"], "default", inputs)
    assert float((hidden - reference)[:, :5].abs().max()) <= 1e-5
    with pytest.raises(InputShapeError, match=r"larger than the traced shape \(batch 2 × sequence 12\)"):
        model(*_text(1, 13).values())
    with pytest.raises(InputShapeError, match="batch 3"):
        model(**_text(3, 12))
    # The artifact itself, like a real Neuron module, accepts nothing but the compiled shape: padding is needed.
    with without_jit_deprecation():
        raw = torch.jit.load(str(path))
    with pytest.raises(torch.jit.Error, match="does not match the compiled shape"):
        raw(*_text(1, 7).values())


def test_metadata_is_read_from_inside_the_file(inf2_export, tmp_path):
    copy = tmp_path / "renamed.pt"
    shutil.copy(inf2_export["out"] / "model_neuron.pt", copy)  # no side-car beside the copy
    metadata = read_metadata(copy)
    assert metadata.target == "inf2" and metadata.static_shape == {"batch": 2, "sequence": 12}
    assert not metadata.compiled_by_aws_sdk
    with pytest.raises(InvalidArgumentError, match="carries no exporter Neuron metadata"):
        read_metadata(Path(__file__))


def test_fresh_process_runner_loads_without_transformers_and_reports_shape_errors(inf2_export):
    runner = CompiledModuleRunner(inf2_export["out"] / "model_neuron.pt")
    inputs = {name: value.numpy() for name, value in _text(2, 12, real=[12, 6]).items()}
    outputs = runner(inputs)
    assert outputs["last_hidden_state"].shape == (2, 12, 32)
    assert runner.last_call["transformers_imported"] is False and runner.last_call["sdk"] == "torch_neuronx"
    with pytest.raises(InputShapeError, match="larger than the traced shape"):
        runner({name: np.concatenate([value, value], axis=1) for name, value in inputs.items()})


def test_inf1_with_dynamic_batch_through_the_python_api(checkpoint, tmp_path, standin):
    folder = checkpoint("bert", "sequence-classification")
    report = exporter.export(
        folder,
        tmp_path,
        format="neuron",
        feature="sequence-classification",
        target="inf1",
        batch_size=2,
        sequence_length=10,
        dynamic_batch=True,
        auto_cast="all",
    )
    assert report.passed, report.failures
    (trace,) = _calls(standin, "torch_neuron.trace")
    assert trace["dynamic_batch_size"] is True and trace["compiler_args"] == ["--fast-math", "fp32-cast-all"]
    assert trace["fallback"] is True and trace["example_inputs"] == [{"shape": [2, 10], "dtype": "int64"}] * 3
    metadata = json.loads((tmp_path / "model_neuron.neuron.json").read_text())
    assert (
        metadata["target"] == "inf1"
        and metadata["dynamic_batch"] is True
        and metadata["sdk"]["module"] == "torch_neuron"
    )
    assert metadata["trace_arguments"] == {
        "compiler_args": ["--fast-math", "fp32-cast-all"],
        "dynamic_batch_size": True,
    }
    # Validated at the compiled shape, smaller (padded in sequence only), and a larger batch than compiled.
    saved = json.loads((tmp_path / "model_neuron.pt.validation.json").read_text())
    assert [part["reference_inputs"]["input_ids"] for part in saved["parts"]] == [[2, 10], [1, 6], [5, 10]]
    model = load(tmp_path / "model_neuron.pt")
    inputs = _text(5, 10, real=[10, 4, 7, 10, 2])
    (logits,) = model(**inputs)
    assert logits.shape == (5, 2)
    assert float((logits - _eager(folder, "sequence-classification", inputs)).abs().max()) <= 1e-5
    with pytest.raises(InputShapeError, match=r"traced shape \(sequence 10\)"):
        model(**_text(5, 11))


def test_inf2_dynamic_batch_with_the_architectures_default_shape(checkpoint, tmp_path, standin):
    report = exporter.export(checkpoint("bert", "default"), tmp_path, format="neuron", dynamic_batch=True)
    assert report.passed, report.failures
    assert [call["function"] for call in standin.CALLS] == ["torch_neuronx.trace", "torch_neuronx.dynamic_batch"]
    assert _calls(standin, "torch_neuronx.trace")[0]["example_inputs"] == [{"shape": [2, 8], "dtype": "int64"}] * 3
    assert read_metadata(tmp_path / "model_neuron.pt").static_shape == {"batch": 2, "sequence": 8}
    standin.CALLS.clear()
    model = load(tmp_path / "model_neuron.pt")  # dynamic batching is switched on again after torch.jit.load
    assert _calls(standin, "torch_neuronx.dynamic_batch") == [{"enabled": True}]
    (hidden,) = model(**_text(3, 8))
    assert hidden.shape == (3, 8, 32)


def test_a_model_neuronx_cc_cannot_compile_fails_with_one_line_and_no_files(
    checkpoint, cli, tmp_path, standin, monkeypatch
):
    monkeypatch.setenv("NEURON_STANDIN_UNSUPPORTED_OPS", "aten::gelu")
    out = tmp_path / "out"
    result = cli("neuron", "--model", checkpoint("bert", "default"), out)
    assert result.returncode == 3
    assert "torch_neuronx.trace could not compile BertModel for inf2 at batch 2 × sequence 8" in result.stderr
    assert "neuronx-cc does not support aten::gelu" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_analyze_inf2_lists_operators_on_neuron_and_the_unsupported_ones(checkpoint, cli, standin, monkeypatch):
    monkeypatch.setenv("NEURON_STANDIN_UNSUPPORTED_OPS", "aten::gelu")
    result = cli("neuron", "analyze", "--model", checkpoint("bert", "default"), "--sequence-length", "12")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "Neuron operator support for inf2 (torch_neuronx.analyze, exporter-neuron-sdk-standin 0.1.0, a stand-in"
    )
    assert "at batch 2 × sequence 12" in lines[0]
    assert "\t\taten::linear  12" in lines  # 2 layers × (q, k, v, out, intermediate, output)
    assert any(line.startswith("\t-[x] 2 operators (1 kind) are not supported by neuronx-cc") for line in lines)
    assert "\t\taten::gelu  2  (failed at: neuronx-cc (stand-in))" in lines
    (analyze,) = _calls(standin, "torch_neuronx.analyze")
    assert (
        analyze["is_hf_transformers"] is True
        and analyze["example_inputs"] == [{"shape": [2, 12], "dtype": "int64"}] * 3
    )


def test_analyze_inf1_as_json_classifies_by_the_sdks_supported_operations(checkpoint, cli, standin, monkeypatch):
    monkeypatch.setenv("NEURON_STANDIN_UNSUPPORTED_OPS", "aten::gelu,aten::layer_norm")
    result = cli("neuron", "analyze", "--model", checkpoint("bert", "default"), "--target", "inf1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == "inf1" and report["source"] == "torch_neuron.analyze_model + get_supported_operations"
    assert report["cpu"] == {"aten::gelu": 2, "aten::layer_norm": 5}
    assert report["neuron"]["aten::linear"] == 12 and "aten::gelu" not in report["neuron"]
    assert 0 < report["percent_on_neuron"] < 100
    assert len(_calls(standin, "torch_neuron.analyze_model")) == 1


def test_analyze_refuses_a_head_the_model_type_lacks_before_loading(tmp_path, cli, standin):
    # The LLM family lists classification heads; LFM2 has none, so the refusal must come from the model type's own
    # features (as for an export), not from a load that fails.
    (tmp_path / "config.json").write_text('{"model_type": "lfm2"}', encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the refusal comes first
    result = cli("neuron", "analyze", "--model", tmp_path, "--feature", "sequence-classification")
    assert result.returncode == 2
    assert "lfm2 does not support feature 'sequence-classification'; supported features: " in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
