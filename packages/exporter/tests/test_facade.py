"""The facade on its own: no backend installed in its nox session (the tests also hold where one is)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

import exporter
from exporter import cli
from exporter.pipeline import check_atol, report_name, resolve_output
from exporter_core import plugins
from exporter_core.errors import BackendNotInstalledError, InvalidArgumentError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tiny-bert"


@pytest.fixture
def no_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every installed backend, as on a machine where only the facade is installed."""
    real = plugins._entry_points
    monkeypatch.setattr(
        plugins, "_entry_points", lambda ns: [] if ns == plugins.BACKENDS_NAMESPACE else real(ns)
    )


def test_missing_backend_names_pip_command(no_backends, capsys):
    code = cli.main(["onnx", "--model", str(EXAMPLE), "out"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "error: unknown command or backend 'onnx'; install it with: pip install exporter-onnx"


def test_one_call_api_without_backend(no_backends, tmp_path):
    with pytest.raises(BackendNotInstalledError, match="pip install exporter-torchscript"):
        exporter.export(EXAMPLE, tmp_path, format="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_backends_command_without_backends(no_backends, capsys):
    assert cli.main(["backends"]) == 0
    assert "no backends installed" in capsys.readouterr().out
    assert exporter.list_backends() == []


def test_features_command_needs_no_backend(no_backends, capsys):
    assert cli.main(["features", "layoutlm"]) == 0
    assert capsys.readouterr().out.split() == ["default", "masked-lm", "sequence-classification", "token-classification"]
    assert cli.main(["features", str(EXAMPLE)]) == 0
    assert "multiple-choice" in capsys.readouterr().out.split()


def test_no_arguments_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: exporter" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [0, -1e-5, math.nan, math.inf, True])
def test_check_atol_refuses(bad):
    with pytest.raises(InvalidArgumentError, match="positive finite"):
        check_atol(bad)


def test_check_atol_accepts():
    assert check_atol(None) is None
    assert check_atol(1e-4) == 1e-4


def test_resolve_output(tmp_path):
    existing = tmp_path / "mine.onnx"
    existing.write_bytes(b"")
    assert resolve_output(existing, "model.onnx") == (tmp_path, "mine.onnx")
    assert resolve_output(tmp_path / "new", "model.pt") == (tmp_path / "new", "model.pt")
    assert report_name("model.onnx") == "model.validation.json"
    assert report_name("model_neuron.pt") == "model_neuron.validation.json"


def test_configs_module_lists_ready_made_configs():
    import exporter.configs as configs

    assert "BertOnnxConfig" in dir(configs)
    from exporter.configs import DistilBertOnnxConfig

    assert DistilBertOnnxConfig.__name__ == "DistilBertOnnxConfig"
    with pytest.raises(AttributeError, match="no config 'NopeOnnxConfig'"):
        configs.NopeOnnxConfig  # noqa: B018


def test_importing_the_facade_is_cheap():
    code = (
        "import sys, exporter, exporter.cli, exporter.configs; "
        "exporter.list_backends(); "
        "print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
