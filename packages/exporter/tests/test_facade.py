"""The facade on its own: no backend installed in its nox session (the tests also hold where one is)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import exporter
from exporter import cli
from exporter.pipeline import _check_parts, check_atol, check_rtol, report_name, resolve_output
from exporter_core import plugins
from exporter_core.errors import (
    BackendNotInstalledError,
    ExportError,
    InvalidArgumentError,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tiny-bert"


@pytest.fixture
def no_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every installed backend, as on a machine where only the facade is installed."""
    real = plugins._entry_points
    monkeypatch.setattr(plugins, "_entry_points", lambda ns: [] if ns == plugins.BACKENDS_NAMESPACE else real(ns))


def test_missing_backend_names_pip_command(no_backends, capsys):
    code = cli.main(["onnx", "--model", str(EXAMPLE), "out"])
    err = capsys.readouterr().err
    assert code == 3  # a missing backend is the environment's, not a mistake in the request
    assert err.startswith("error: the onnx backend is not installed; install it with: pip install ")
    assert err.strip().endswith("exporter-onnx") or err.strip().endswith("'exporter[onnx]'")


def test_one_call_api_without_backend(no_backends, tmp_path):
    with pytest.raises(BackendNotInstalledError, match=r"pip install (-e )?\S*exporter[-\[]torchscript"):
        exporter.export(EXAMPLE, tmp_path, format="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_one_call_api_unknown_backend_lists_installed(no_backends, tmp_path):
    with pytest.raises(InvalidArgumentError) as caught:
        exporter.export(EXAMPLE, tmp_path, format="coreml")
    assert str(caught.value) == (
        "no backend named 'coreml' is installed (installed: none); "
        "pip install the package that provides it, then check with: exporter backends"
    )


def test_backends_command_without_backends(no_backends, capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no backends installed; install one: pip install ")
    assert "exporter-onnx" in out and "exporter-torchscript" in out
    assert exporter.list_backends() == []


def test_backend_extras_are_read_from_the_facade_metadata():
    from exporter.install import backend_extras, backend_packages

    extras = backend_extras()
    assert extras["onnx"] == ["exporter-onnx"] and extras["torchscript"] == ["exporter-torchscript"]
    assert "test" not in extras  # pytest & co. are not pinned to the facade's version
    assert backend_packages("test") == [] and backend_packages("coreml") == []


# -- global options: argparse reads them before the command; each command's parser reads them after it --------


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_before_the_command_is_recognised(flag, tmp_path, capsys):
    assert cli.main([flag, "features", str(tmp_path / "nope" / "checkpoint")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ModelNotFoundError" in err


def test_verbose_after_the_command_is_recognised(tmp_path, capsys):
    assert cli.main(["features", str(tmp_path / "nope" / "checkpoint"), "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ModelNotFoundError" in err


def test_without_verbose_a_mistake_is_one_line(tmp_path, capsys):
    assert cli.main(["features", str(tmp_path / "nope" / "checkpoint")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no such folder" in err[0]


def test_version_and_help_list_the_commands(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"exporter {exporter.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["-v", "--help"])
    out = capsys.readouterr().out
    assert "usage: exporter [-h] [-v] [--version] [COMMAND] ..." in out
    for name in ["backends", "features", *exporter.list_backends()]:
        assert f"\n  {name} " in out


@pytest.mark.parametrize("argv", [["--version", "features"], ["features", "--version"], ["backends", "--version"]])
def test_global_options_go_before_or_after_the_command(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"exporter {exporter.__version__}"


# -- a backend entry point of the wrong kind: one error line naming the distribution ---------------------------


@pytest.fixture
def wrong_kind_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed-looking distribution whose backend entry point names a config class instead of a Backend."""
    from stevedore.extension import ExtensionManager

    info = tmp_path / "exporter_test_wrong_kind-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exporter-test-wrong-kind\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{plugins.BACKENDS_NAMESPACE}]\nwrongkind = exporter_core.config:OnnxConfig\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    return "wrongkind"


def test_backend_of_the_wrong_kind_is_one_error_line(wrong_kind_backend, tmp_path, capsys):
    code = cli.main([wrong_kind_backend, "--model", str(EXAMPLE), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "error: entry point 'wrongkind' in exporter.backends, declared by exporter-test-wrong-kind, names "
        "exporter_core.config:OnnxConfig: the class exporter_core.config.OnnxConfig, not a subclass of "
        "exporter_core.backend.Backend; fix the entry point in that package or uninstall it: "
        "pip uninstall exporter-test-wrong-kind"
    )
    assert not (tmp_path / "out").exists()
    for argv in (
        ["-v", wrong_kind_backend, "--model", str(EXAMPLE), str(tmp_path / "out")],
        [wrong_kind_backend, "--verbose", "--model", str(EXAMPLE), str(tmp_path / "out")],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "InvalidPluginError" in err
    assert cli.main(["backends"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrongkind ")]
    assert len(listed) == 1 and "installed, not usable: entry point 'wrongkind'" in listed[0]


def test_features_command_needs_no_backend(no_backends, capsys):
    assert cli.main(["features", "layoutlm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # One feature per line, then the Optimum task names it also accepts.
    assert [line.split()[0] for line in lines] == [
        "default",
        "masked-lm",
        "sequence-classification",
        "token-classification",
    ]
    assert lines[1].split()[1:] == ["(also:", "fill-mask)"]
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


@pytest.mark.parametrize("bad", [-1e-5, math.nan, math.inf, True, "1e-4"])
def test_check_rtol_refuses(bad):
    with pytest.raises(InvalidArgumentError, match="rtol must be a finite number, zero or more"):
        check_rtol(bad)


def test_check_rtol_accepts_zero():
    assert check_rtol(None) is None
    assert check_rtol(0) == 0.0 and check_rtol(1e-3) == 1e-3


def test_a_backend_must_export_every_plan_part_once():
    planned = [SimpleNamespace(name=n) for n in ("encoder", "decoder", "decoder_with_past")]
    _check_parts("onnx", planned, [SimpleNamespace(name=n) for n in ("decoder_with_past", "encoder", "decoder")])
    for got in (["encoder", "decoder"], ["encoder", "decoder", "decoder_with_past", "decoder"], ["model"]):
        with pytest.raises(ExportError, match="must export every part of the plan once"):
            _check_parts("onnx", planned, [SimpleNamespace(name=n) for n in got])


def test_resolve_output(tmp_path):
    existing = tmp_path / "mine.onnx"
    existing.write_bytes(b"")
    assert resolve_output(existing, "model.onnx") == (tmp_path, "mine.onnx")
    assert resolve_output(tmp_path / "new", "model.pt") == (tmp_path / "new", "model.pt")
    assert report_name("model.onnx") == "model.onnx.validation.json"
    assert report_name("model_neuron.pt") == "model_neuron.pt.validation.json"


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


@pytest.mark.parametrize(
    ("argv", "status", "stream", "expected"),
    [
        (["features", "layoutlm"], 0, "stdout", "sequence-classification"),
        (["features", "/nonexistent/checkpoint"], 2, "stderr", "error: "),
    ],
)
def test_console_script_keeps_output_status_and_exit_handlers(argv, status, stream, expected):
    # The console entry point skips the interpreter's teardown: what is printed (unflushed, into a pipe), the
    # status and the atexit handlers must all survive that.
    code = (
        "import atexit, sys\n"
        "from exporter import cli\n"
        "atexit.register(lambda: print('exit handler ran', end=''))\n"
        f"sys.argv = ['exporter', *{argv!r}]\n"
        "cli.console()\n"
        "print('not reached')\n"
    )
    # Block-buffered stdout (PYTHONUNBUFFERED would flush every write and hide a missing flush).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120, env=env
    )
    assert done.returncode == status, done.stderr
    assert expected in getattr(done, stream)
    assert done.stdout.endswith("exit handler ran")
    assert "not reached" not in done.stdout


def test_console_script_lets_usage_errors_exit_through_argparse():
    code = "import sys\nfrom exporter import cli\nsys.argv = ['exporter', '--no-such-option']\ncli.console()\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2 and "usage: exporter" in done.stderr


def test_console_script_reports_a_failed_write_of_its_output():
    # stdout is /dev/full: the features list cannot be written, and the success becomes status 120 (Python's own).
    code = "import sys\nfrom exporter import cli\nsys.argv = ['exporter', 'features', 'layoutlm']\ncli.console()\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, check=False, timeout=120, env=env
        )
    assert done.returncode == 120


def test_console_script_waits_for_running_threads_as_a_normal_exit_does(tmp_path):
    marker = tmp_path / "written-by-thread"
    code = (
        "import sys, threading, time\n"
        "from pathlib import Path\n"
        "from exporter import cli\n"
        f"threading.Thread(target=lambda: (time.sleep(0.5), Path({str(marker)!r}).write_text('done'))).start()\n"
        "sys.argv = ['exporter', 'features', 'layoutlm']\n"
        "cli.console()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"
