"""The command lines and the one-call API, end to end, with the facade and the ONNX backend installed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import EXAMPLE, run_module

import exporter
from exporter_validate.compare import DEFAULT_RTOL


def test_old_command_line_prints_old_log(tmp_path):
    out = tmp_path / "onnx"
    result = run_module("exporter.onnx", "--model", str(EXAMPLE), "--feature", "sequence-classification", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "Validating ONNX model..."
    assert "\t-[✓] ONNX model output names match reference model ({'logits'})" in lines
    assert '\t- Validating ONNX Model output "logits":' in lines
    assert "\t\t-[✓] (3, 2) matches (3, 2)" in lines
    # The old verdict line, with the default's relative term stated beside the atol (an --atol alone keeps the old
    # line word for word); the measurement line states the output's effective tolerance.
    assert f"\t\t-[✓] all values close (atol: 1e-05, rtol: {DEFAULT_RTOL:g})" in lines
    assert any(line.startswith("\t\t    max abs diff ") and "; tolerance " in line for line in lines)
    assert lines[-1] == f"All good, model saved at: {out / 'model.onnx'}"
    # Not a terminal: no progress lines, only the final ones (the times, then where the model went).
    assert not any(line.lstrip().startswith(("▸ ", "✓ ", "✗ ")) for line in lines)
    assert lines[-2].startswith("exported in ") and "peak memory" in lines[-2]
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    onnx.checker.check_model(str(out / "model.onnx"))


def test_existing_file_output_is_replaced_with_overwrite(cli, checkpoint, tmp_path):
    target = tmp_path / "custom.onnx"
    target.write_bytes(b"old")
    refused = cli("onnx", "--model", str(checkpoint("bert")), str(target))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert target.read_bytes() == b"old"
    result = cli("onnx", "--model", str(checkpoint("bert")), "--overwrite", str(target))
    assert result.returncode == 0, result.stderr
    assert onnx.load(str(target)).graph.output[0].name == "last_hidden_state"
    assert (tmp_path / "custom.onnx.validation.json").is_file()
    assert {"custom.onnx", "custom.onnx.validation.json"} <= {p.name for p in tmp_path.iterdir()}


def test_opset_14_through_cli_runs_in_onnxruntime(cli, checkpoint, tmp_path):
    result = cli("onnx", "--model", str(checkpoint("bert")), "--opset", "14", str(tmp_path))
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [14]
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: np.ones((1, 5), dtype=np.int64) for i in session.get_inputs()}
    assert session.run(None, feed)[0].shape == (1, 5, 32)
    report = json.loads((tmp_path / "model.onnx.validation.json").read_text())
    assert report["metadata"]["opset"] == 14 and report["metadata"]["engine"] == "torchscript"


def test_report_json_states_shapes_and_tolerance(cli, checkpoint, tmp_path):
    result = cli(
        "onnx",
        "--model",
        str(checkpoint("bert", "question-answering")),
        "--feature",
        "question-answering",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "model.onnx.validation.json").read_text())
    assert report["passed"] is True
    part = report["parts"][0]
    assert part["rtol"] == DEFAULT_RTOL and part["atol"] == 1e-5
    assert part["reference_inputs"]["input_ids"] == [3, 9]
    assert [o["name"] for o in part["outputs"]] == ["start_logits", "end_logits"]
    for output in part["outputs"]:
        # Each output states its own tolerance: atol + rtol x its largest reference value.
        assert output["atol"] == 1e-5 and output["rtol"] == DEFAULT_RTOL and output["reference_magnitude"] > 0
        assert output["tolerance"] == pytest.approx(1e-5 + DEFAULT_RTOL * output["reference_magnitude"])
        assert output["max_abs_diff"] <= output["tolerance"]
        assert output["compared"] == "real positions (attention_mask == 1)"


def test_backends_and_features_commands(cli):
    result = cli("backends")
    assert result.returncode == 0
    assert any(line.startswith("onnx") and "ready" in line for line in result.stdout.splitlines())
    result = cli("features", "distilbert")
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "default",
        "masked-lm",
        "sequence-classification",
        "multiple-choice",
        "token-classification",
        "question-answering",
        "sentence-embedding",
    ]
    result = cli("features", str(EXAMPLE))
    assert "causal-lm" in result.stdout.split()


def test_third_party_architecture_plugin_exports(cli, tmp_path):
    """tests/fixtures/exporter-fixture-arch adds `splinter` through an entry point; the CLI then exports it."""
    from transformers import AutoConfig, SplinterModel

    from exporter_core.testing import build_tiny_tokenizer

    config = AutoConfig.for_model(
        "splinter",
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        question_token_id=98,
    )
    folder = tmp_path / "splinter"
    SplinterModel(config).save_pretrained(str(folder))
    build_tiny_tokenizer().save_pretrained(str(folder))
    result = cli("features", str(folder))
    assert result.stdout.split()[0] == "default"
    result = cli("onnx", "--model", str(folder), "--feature", "default", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.onnx").is_file()
    from exporter.configs import SplinterFixtureOnnxConfig  # third-party configs are importable from the facade too

    assert SplinterFixtureOnnxConfig.features == ("default",)


def test_one_call_api_returns_report(checkpoint, tmp_path):
    report = exporter.export(checkpoint("bert", "token-classification"), tmp_path, feature="token-classification")
    assert report.passed and report.format == "ONNX"
    assert report.worst_difference < 1e-5
    assert (tmp_path / "model.onnx").is_file()
    assert "onnx" in exporter.list_backends()


def test_one_call_api_with_opset_option(checkpoint, tmp_path):
    report = exporter.export(checkpoint("bert"), tmp_path, format="onnx", opset=17)
    assert report.metadata["opset"] == 17


def test_every_ready_made_config_importable_from_facade():
    import exporter.configs as configs
    from exporter_core.plugins import list_architectures

    names = dir(configs)
    assert "DistilBertOnnxConfig" in names and "BertOnnxConfig" in names
    assert len(names) >= len({p.target for p in list_architectures()}) - 1
    for name in names:
        cls = getattr(configs, name)
        assert cls.__name__ == name


def test_old_api_export_puts_the_dummy_inputs_on_the_models_device(checkpoint, tmp_path, monkeypatch):
    # No CUDA here: the "meta" device stands in for it. What matters is that the capture sees the inputs on the
    # device the old API's `device=` moved the model to (it used to move only the model).
    import pytest
    import torch
    from transformers import AutoModel

    from exporter.onnx import export
    from exporter_core.features import config_class_for
    from exporter_onnx import convert

    seen: dict[str, set[str]] = {}

    class Captured(BaseException):
        """Stops the export once the capture has been called (not an Exception: no engine fallback catches it)."""

    def capture(module, dummy, config, opset, *rest):
        seen["model"] = {str(p.device) for p in module.parameters()}
        seen["inputs"] = {str(v.device) for v in dummy.values() if isinstance(v, torch.Tensor)}
        raise Captured

    monkeypatch.setattr(convert, "_capture_dynamo", capture)
    monkeypatch.setattr(convert, "_export_torchscript", capture)
    model = AutoModel.from_pretrained(checkpoint("bert"))
    config = config_class_for("bert").for_feature(model.config, "default")
    with pytest.raises(Captured):
        export(None, model, config, 18, tmp_path / "model.onnx", device="meta")
    assert seen["model"] == {"meta"}
    assert seen["inputs"] == {"meta"}
    assert not (tmp_path / "model.onnx").exists()
