"""The TorchScript backend end to end: command line, Python API, shape contract, untied weights, fresh-process reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import exporter
import exporter.torchscript
from exporter_core.backend import ExportRequest
from exporter_core.errors import InvalidArgumentError, UserError
from exporter_core.padding import InputShapeError
from exporter_torchscript import TorchScriptBackend, load, read_metadata
from exporter_torchscript.runtime import SavedModuleRunner

TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def _eager(folder: Path, feature: str = "default") -> torch.nn.Module:
    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model

    return load_model(folder, feature, config_class_for("bert"))


def _text(rows: int, length: int, seed: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (rows, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def bert_export(checkpoint, tmp_path_factory):
    """One tiny BERT traced at batch 2 × sequence 16 through `exporter.torchscript.export`: (report, folder, checkpoint)."""
    folder = checkpoint("bert", "default")
    out = tmp_path_factory.mktemp("bert-ts")
    report = exporter.torchscript.export(folder, out, batch_size=2, sequence_length=16)
    return report, out, folder


def test_python_api_writes_module_metadata_and_report(bert_export):
    report, out, _ = bert_export
    assert report.passed and report.format == "TorchScript" and report.backend == "torchscript"
    assert {"model.pt", "model.pt.validation.json", "model.torchscript.json"} <= {p.name for p in out.iterdir()}
    metadata = json.loads((out / "model.torchscript.json").read_text())
    assert metadata["input_names"] == TEXT_INPUTS
    assert metadata["input_shapes"] == {name: [2, 16] for name in TEXT_INPUTS}
    assert metadata["output_names"] == ["last_hidden_state"]
    assert metadata["static_shape"] == {"batch": 2, "sequence": 16}
    assert metadata["torch_version"] == torch.__version__
    # Transformers 5 BERT traces do run at other shapes: recorded from a check, not assumed.
    assert metadata["generalizes"] is True
    assert [c["shape"] for c in metadata["generalization_checks"]] == [
        {"batch": 1, "sequence": 12},
        {"batch": 3, "sequence": 20},
    ]
    assert metadata["padding_effect"]["changes_outputs"] is False
    saved = json.loads((out / "model.pt.validation.json").read_text())
    assert saved["passed"] is True and saved["metadata"]["static_shape"] == {"batch": 2, "sequence": 16}
    assert [p["reference_inputs"]["input_ids"] for p in saved["parts"]] == [[2, 16], [1, 10]]
    assert all(p["artifact"] == "model.pt" and p["atol"] == 1e-5 for p in saved["parts"])
    assert read_metadata(out / "model.pt").to_dict() == metadata  # the copy inside the .pt file


def test_loader_pads_shorter_inputs_and_refuses_larger_ones_naming_the_traced_shape(bert_export):
    _, out, folder = bert_export
    model = load(out / "model.pt")
    eager = _eager(folder)
    short = _text(1, 5)
    short["attention_mask"][0, 4] = 0
    (hidden,) = model(short["input_ids"], short["attention_mask"], short["token_type_ids"])
    with torch.no_grad():
        expected = eager(**short).last_hidden_state
    assert hidden.shape == (1, 5, 32)
    torch.testing.assert_close(hidden[:, :4], expected[:, :4], atol=1e-5, rtol=0)
    for rows, length in ((1, 17), (3, 4)):
        with pytest.raises(InputShapeError) as caught:
            model(**_text(rows, length))
        assert "traced shape (batch 2 × sequence 16)" in str(caught.value)
    # The validation runner loads the file in another process and reports the same error here.
    runner = SavedModuleRunner(out / "model.pt")
    with pytest.raises(InputShapeError, match=r"sequence 17, larger than the traced shape \(batch 2 × sequence 16\)"):
        runner({name: value.numpy() for name, value in _text(1, 17).items()})
    outputs = runner({name: value.numpy() for name, value in short.items()})
    np.testing.assert_allclose(outputs["last_hidden_state"][:, :4], expected[:, :4].numpy(), atol=1e-5, rtol=0)
    assert runner.last_call["pid"] != os.getpid() and runner.last_call["transformers_imported"] is False


def test_saved_module_reloads_in_a_separate_process_with_plain_torch(bert_export, tmp_path):
    _, out, folder = bert_export
    inputs = _text(2, 16)
    inputs["attention_mask"][1, 9:] = 0
    np.savez(tmp_path / "inputs.npz", **{name: value.numpy() for name, value in inputs.items()})
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        module = torch.jit.load({str(out / "model.pt")!r})
        data = np.load({str(tmp_path / "inputs.npz")!r})
        names = ["input_ids", "attention_mask", "token_type_ids"]
        (hidden,) = module(*(torch.from_numpy(data[n]) for n in names))
        np.save({str(tmp_path / "hidden.npy")!r}, hidden.detach().numpy())
        print("transformers" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    with torch.no_grad():
        expected = _eager(folder)(**inputs).last_hidden_state.numpy()
    hidden = np.load(tmp_path / "hidden.npy")
    np.testing.assert_allclose(hidden[0], expected[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(hidden[1, :9], expected[1, :9], atol=1e-5, rtol=0)


def test_cli_exports_and_logs_both_validations(checkpoint, tmp_path, capsys):
    from exporter.cli import main

    out = tmp_path / "ts"
    code = main(
        [
            "torchscript",
            "--model",
            str(checkpoint("bert", "sequence-classification")),
            "--feature",
            "sequence-classification",
            "--sequence-length",
            "12",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()
    assert lines.count("Validating TorchScript model...") == 2
    assert lines[0] == "Running model.pt in a fresh process: traced shape (batch 2 × sequence 12)"
    assert (
        "Running model.pt in a fresh process: smaller inputs (batch 1 × sequence 8) padded to the traced shape" in lines
    )
    assert "\t\t-[✓] (2, 2) matches (2, 2)" in lines and "\t\t-[✓] (1, 2) matches (1, 2)" in lines
    assert lines[-1] == f"All good, model saved at: {out / 'model.pt'}"
    assert json.loads((out / "model.torchscript.json").read_text())["static_shape"] == {"batch": 2, "sequence": 12}
    code = main(
        [
            "torchscript",
            "--model",
            str(checkpoint("bert", "sequence-classification")),
            "--feature",
            "sequence-classification",
            "--sequence-length",
            "65",
            str(tmp_path / "too-long"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "error: sequence_length 65 is longer than the model's 64 positions; pass --sequence-length 64 or less"
    ]
    assert not (tmp_path / "too-long" / "model.pt").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"opset": 14}, "has no option 'opset'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"sequence_length": 1}, "sequence_length must be at least 2"),
    ],
)
def test_bad_options_are_user_errors(checkpoint, tmp_path, options, message):
    with pytest.raises(InvalidArgumentError, match=message):
        exporter.export(checkpoint("bert", "default"), tmp_path, format="torchscript", **options)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("feature", "overrides"), [("masked-lm", {}), ("causal-lm", {"is_decoder": True})])
def test_lm_heads_are_traced_with_untied_weights_of_equal_values(checkpoint, tmp_path, feature, overrides):
    folder = checkpoint("bert", feature, **overrides)
    report = exporter.export(folder, tmp_path, format="torchscript", feature=feature)
    assert report.passed, report.failures
    metadata = read_metadata(tmp_path / "model.pt")
    assert ["bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"] in metadata.untied_parameters
    module = torch.jit.load(str(tmp_path / "model.pt"))
    params = dict(module.named_parameters())
    embedding = params["model.bert.embeddings.word_embeddings.weight"]
    head = params["model.cls.predictions.decoder.weight"]
    assert embedding.data_ptr() != head.data_ptr()
    assert torch.equal(embedding, head)
    assert not module.training and not any(m.training for m in module.modules())


def test_callers_model_is_left_unchanged(tmp_path):
    from transformers import BertForMaskedLM

    from exporter_core.architectures.encoders import BertOnnxConfig
    from exporter_core.testing import tiny_model_config

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_model_config("bert"))
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    plan = BertOnnxConfig.for_feature(model.config, "masked-lm").export_plan(model)
    result = TorchScriptBackend().export(ExportRequest(plan=plan, staging=tmp_path, artifact_name="model.pt"))
    assert model.training and all(m.training for m in model.modules())
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert model.config.use_cache is True
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    # Validation uses the caller's model as the reference (the plan's module; eval is set there): usable as is.
    (part,) = result.parts
    assert plan.main.module is model and part.name == plan.main.name
    assert part.scenarios and all(scenario.reference is None for scenario in part.scenarios)
    assert part.export_inputs == {name: [2, 8] for name in TEXT_INPUTS}
    assert result.metadata["untied_parameters"]


def test_multiple_choice_keeps_the_choice_axis_fixed(checkpoint, tmp_path):
    report = exporter.export(
        checkpoint("bert", "multiple-choice"), tmp_path, format="torchscript", feature="multiple-choice"
    )
    assert report.passed, report.failures
    model = load(tmp_path / "model.pt")
    assert model.static_shape == {"batch": 2, "choice": 4, "sequence": 8}
    ids = torch.randint(5, 99, (1, 3, 6))
    with pytest.raises(InputShapeError, match="choice 3 but the module was traced with choice 4"):
        model(ids, torch.ones_like(ids), torch.zeros_like(ids))
    ids = torch.randint(5, 99, (1, 4, 6))
    (logits,) = model(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert logits.shape == (1, 4)


class _ShapeBound(torch.nn.Module):
    """A stand-in encoder whose trace is specialised: it turns the sequence length into a Python int."""

    def __init__(self, config: object) -> None:
        super().__init__()
        self.config = config
        self.embed = torch.nn.Embedding(99, 8)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=True, use_cache=None):
        length = int(input_ids.shape[1])
        positions = torch.arange(length).reshape(1, length, 1).expand(input_ids.shape[0], length, 8)
        hidden = self.embed(input_ids) + positions * attention_mask.unsqueeze(-1)
        return {"last_hidden_state": hidden}


def test_a_shape_specialised_trace_is_recorded_and_padding_makes_it_usable(tmp_path):
    from exporter_core.architectures.encoders import BertOnnxConfig
    from exporter_core.testing import tiny_model_config
    from exporter_torchscript.static import save_module
    from exporter_torchscript.tracing import trace_for_export

    model_config = tiny_model_config("bert")
    model = _ShapeBound(model_config).eval()
    traced = trace_for_export(model, BertOnnxConfig(model_config), batch_size=2, sequence_length=8)
    metadata = traced.contract
    assert metadata.generalizes is False
    assert all(c["passed"] is False and c["error"] for c in metadata.generalization_checks)
    assert metadata.tracer_warnings and "Python" in " ".join(metadata.tracer_warnings)
    save_module(traced.module, metadata, tmp_path / "model.pt")
    short = _text(1, 5)
    with pytest.raises(RuntimeError):  # the raw module, as the guide warned, fails at another length
        torch.jit.load(str(tmp_path / "model.pt"))(*short.values())
    (hidden,) = load(tmp_path / "model.pt")(*short.values())
    with torch.no_grad():
        expected = model(**short)["last_hidden_state"]
    torch.testing.assert_close(hidden, expected, atol=0, rtol=0)


def test_loader_errors_are_user_errors(bert_export, tmp_path):
    _, out, _ = bert_export
    model = load(out / "model.pt")
    inputs = _text(1, 4)
    with pytest.raises(UserError, match="missing inputs token_type_ids"):
        model(inputs["input_ids"], inputs["attention_mask"])
    with pytest.raises(UserError, match="has no input 'pixel_values'"):
        model(pixel_values=torch.zeros(1))
    with pytest.raises(UserError, match="no such file"):
        load(tmp_path / "missing.pt")


def test_fresh_process_runner_reports_a_broken_file_and_survives_a_dead_worker(bert_export, tmp_path):
    from exporter_core.errors import ExportError
    from exporter_torchscript import runtime

    _, out, _ = bert_export
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a TorchScript archive")
    inputs = {name: value.numpy() for name, value in _text(1, 4).items()}
    with pytest.raises(ExportError, match="failed in a fresh process"):
        SavedModuleRunner(broken)(inputs)
    runner = SavedModuleRunner(out / "model.pt")
    first = runner(inputs)
    worker = runtime.loader_process().process
    assert worker is not None
    worker.kill()
    worker.wait()
    again = runner(inputs)  # a new worker is started
    assert runner.last_call["pid"] != worker.pid
    np.testing.assert_array_equal(first["last_hidden_state"], again["last_hidden_state"])


def test_with_past_features_are_refused(checkpoint, tmp_path):
    from exporter_core.errors import UnsupportedFeatureError

    with pytest.raises(UnsupportedFeatureError, match="'causal-lm-with-past' takes past key values: a trace fixes"):
        exporter.export(checkpoint("gpt2", "causal-lm"), tmp_path, format="torchscript", feature="causal-lm-with-past")
    assert not any(tmp_path.iterdir())


def test_facade_module_names_the_package_when_the_backend_is_missing():
    script = (
        "import sys\n"
        "sys.modules['exporter_torchscript'] = None\n"
        "try:\n"
        "    import exporter.torchscript\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    # The install command follows how exporter was installed: a checkout's folder or the facade's extra.
    assert done.stdout.strip().startswith("exporter.torchscript needs the TorchScript backend: pip install ")
    assert done.stdout.strip().endswith(("exporter-torchscript", "'exporter[torchscript]'"))
