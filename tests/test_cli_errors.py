"""Every user mistake: one line naming problem and fix, exit 2, no traceback, nothing written (a failed validation
writes only its report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_module


def _single_error_line(stderr: str) -> str:
    # "feature: ..." says which feature was chosen when --feature is not given; it is not part of the failure.
    lines = [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("feature: ")]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _nothing_written(folder: Path) -> None:
    if folder.exists():
        leftovers = [p.name for p in folder.iterdir()]
        assert leftovers == [], leftovers


def test_missing_path(cli, tmp_path):
    result = cli("onnx", "--model", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "no such folder" in _single_error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def test_hub_id_not_cached(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = cli("onnx", "--model", "some-org/not-cached-model", str(tmp_path / "out"))
    assert result.returncode == 2
    line = _single_error_line(result.stderr)
    assert "not in the local hub cache" in line and "download some-org/not-cached-model" in line


def test_unknown_model_type(cli, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "not-a-real-type"}))
    (folder / "model.safetensors").write_bytes(b"")
    result = cli("onnx", "--model", str(folder), str(tmp_path / "out"))
    assert result.returncode == 2
    line = _single_error_line(result.stderr)
    assert "not-a-real-type" in line and "bert" in line and "exporter.architectures" in line


def test_unsupported_feature_lists_supported(cli, checkpoint, tmp_path):
    result = cli("onnx", "--model", str(checkpoint("bert")), "--feature", "seq2seq-lm", str(tmp_path / "out"))
    assert result.returncode == 2
    line = _single_error_line(result.stderr)
    assert "seq2seq-lm" in line and "masked-lm" in line and "question-answering" in line
    _nothing_written(tmp_path / "out")


@pytest.mark.parametrize("opset, expected", [("9", "at least 14"), ("99", "or lower")])
def test_opset_out_of_range(cli, checkpoint, tmp_path, opset, expected):
    result = cli("onnx", "--model", str(checkpoint("bert")), "--opset", opset, str(tmp_path / "out"))
    assert result.returncode == 2
    assert expected in _single_error_line(result.stderr)
    _nothing_written(tmp_path / "out")


@pytest.mark.parametrize("atol", ["-1", "0", "nan", "inf"])
def test_bad_atol(cli, checkpoint, tmp_path, atol):
    result = cli("onnx", "--model", str(checkpoint("bert")), "--atol", atol, str(tmp_path / "out"))
    assert result.returncode == 2
    assert "atol must be a positive finite number" in _single_error_line(result.stderr)


def test_unwritable_output(cli, checkpoint, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("onnx", "--model", str(checkpoint("bert")), str(blocker / "out"))
    assert result.returncode == 2
    assert "choose" in _single_error_line(result.stderr)
    assert blocker.read_text() == "not a folder"


def test_tensorflow_only_checkpoint(cli, tmp_path):
    folder = tmp_path / "tf-ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "tf_model.h5").write_bytes(b"\x89HDF")
    result = cli("onnx", "--model", str(folder), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "TensorFlow" in _single_error_line(result.stderr)


def test_framework_tf_refused(cli, checkpoint, tmp_path):
    result = cli("onnx", "--model", str(checkpoint("bert")), "--framework", "tf", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "TensorFlow" in _single_error_line(result.stderr)


def test_unknown_backend_names_pip(cli, tmp_path):
    result = cli("coreml", "--model", "x", str(tmp_path))
    assert result.returncode == 2
    assert "exporter backends" in _single_error_line(result.stderr)


def test_misspelt_backend_suggests_the_name(cli, tmp_path):
    result = cli("onxx", "--model", "x", str(tmp_path))
    assert result.returncode == 2
    assert "did you mean onnx?" in _single_error_line(result.stderr)


def test_failed_validation_exits_1_and_keeps_nothing(cli, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = cli("onnx", "--model", str(checkpoint("bert")), "--atol", "1e-15", str(out))
    assert result.returncode == 1
    assert "-[x] values not close enough (atol: 1e-15" in result.stderr
    assert "validation failed" in result.stderr and "--keep-invalid" in result.stderr
    assert "Traceback" not in result.stderr
    # Only the report, under a name no tool takes for a model.
    assert [p.name for p in out.iterdir()] == ["model.onnx.validation-failed.json"]
    assert json.loads((out / "model.onnx.validation-failed.json").read_text())["passed"] is False


def test_keep_invalid_keeps_model_and_report(cli, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = cli("onnx", "--model", str(checkpoint("bert")), "--atol", "1e-15", "--keep-invalid", str(out))
    assert result.returncode == 1
    assert (out / "model.onnx").is_file()
    report = json.loads((out / "model.onnx.validation.json").read_text())
    assert report["passed"] is False and report["failures"]


def test_interrupt_leaves_nothing(cli, checkpoint, tmp_path, monkeypatch):
    from exporter_onnx import convert

    real = convert.export_onnx

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the file is fully written into staging ...
        raise KeyboardInterrupt  # ... then the user presses Ctrl-C

    monkeypatch.setattr(convert, "export_onnx", interrupted)
    out = tmp_path / "out"
    result = cli("onnx", "--model", str(checkpoint("bert")), str(out))
    assert result.returncode == 130
    assert not out.exists(), "the export removes the output folder it created"


def test_verbose_shows_traceback(tmp_path):
    result = run_module("exporter", "onnx", "--verbose", "--model", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_before_the_backend_is_recognised(flag, tmp_path, capsys):
    from exporter.cli import main

    assert main([flag, "onnx", "--model", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ModelNotFoundError" in err


def test_verbose_before_the_backend_in_a_fresh_process(tmp_path):
    result = run_module("exporter", "-v", "onnx", "--model", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr


def test_backend_options_are_still_parsed_with_a_global_option_first(tmp_path, capsys):
    from exporter.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["-v", "onnx", "--model", str(tmp_path / "nope"), "--engine", "nope", str(tmp_path / "out")])
    assert caught.value.code == 2
    assert "exporter onnx: error: argument --engine: invalid choice: 'nope'" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    result = run_module("exporter.onnx", "--model", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "no such folder" in _single_error_line(result.stderr)
