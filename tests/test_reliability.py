"""Issue 12: every bad input gets one line and a documented exit status, nothing is left behind, and nothing is
exported that the checkpoint does not hold."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_module

import exporter
from exporter_core.errors import (
    CheckpointError,
    InvalidArgumentError,
    NonFiniteWeightsError,
    OpsetError,
    OutputBusyError,
    OutputExistsError,
    RandomHeadError,
    UnsupportedFeatureError,
)

FAST = {"opset": 17}  # the TorchScript-based engine: the quickest export that is a real one


def _one_error_line(stderr: str) -> str:
    # "feature: ..." says which feature was chosen (task detection); it is not part of the failure.
    lines = [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("feature: ")]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def _copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


# -- 1. exit statuses ---------------------------------------------------------------------------------------------


def test_help_lists_the_exit_statuses(capsys):
    from exporter.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for code in ("0", "1", "2", "3", "130", "143"):
        assert f"\n  {code} " in text, text


def test_unexpected_exception_is_a_bug_with_the_traceback_file(cli, checkpoint, tmp_path, monkeypatch):
    from exporter_core import loading

    def broken(folder: Path) -> str:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(loading, "read_model_type", broken)
    result = cli("onnx", "--model", str(checkpoint("bert")), str(tmp_path / "out"))
    assert result.returncode == 3
    line = _one_error_line(result.stderr)
    assert "internal error (a bug in exporter)" in line and "something nobody expected" in line
    crash = Path(line.split("the traceback is in ")[1].split(";")[0])
    assert "RuntimeError" in crash.read_text() and "Traceback" in crash.read_text()
    crash.unlink()
    assert not (tmp_path / "out").exists()


def test_verbose_shows_the_traceback_and_keeps_the_exit_status(cli, tmp_path):
    result = cli("onnx", "-v", "--model", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr


# -- 5. options and features, refused before the model is loaded ------------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    from exporter_core import loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(loading, "load_model", refuse)


@pytest.mark.parametrize(
    ("keywords", "suggestion"),
    [
        ({"opsett": 17}, "did you mean opset?"),
        ({"enigne": "dynamo"}, "did you mean engine?"),
        ({"atoll": 1e-3}, "did you mean atol?"),
    ],
)
def test_unknown_keyword_refused_with_the_nearest_name(checkpoint, tmp_path, no_model_loading, keywords, suggestion):
    with pytest.raises(InvalidArgumentError, match=suggestion):
        exporter.export(checkpoint("bert"), tmp_path / "out", **keywords)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backend", ["torchscript", "neuron"])
def test_every_backend_refuses_unknown_keywords(checkpoint, tmp_path, no_model_loading, backend):
    if backend not in exporter.list_backends():
        pytest.skip(f"{backend} is not installed")
    with pytest.raises(InvalidArgumentError, match="did you mean sequence_length"):
        exporter.export(checkpoint("bert"), tmp_path / "out", format=backend, sequence_lenght=16)


def test_misspelt_feature_suggests_the_feature(cli, checkpoint, tmp_path, no_model_loading):
    result = cli("onnx", "--model", str(checkpoint("bert")), "--feature", "sequence-clasification", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "did you mean sequence-classification?" in _one_error_line(result.stderr)


def test_low_opset_names_the_operator_in_the_callers_words(cli, checkpoint, tmp_path, no_model_loading):
    with pytest.raises(OpsetError, match=r"scaled_dot_product_attention.*pass opset=14 or higher"):
        exporter.export(checkpoint("bert"), tmp_path / "out", opset=12)
    result = cli("onnx", "--model", str(checkpoint("bert")), "--opset", "13", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "pass --opset 14 or higher" in _one_error_line(result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backend", ["torchscript", "neuron"])
def test_sequence_beyond_the_positions_refused_before_loading(checkpoint, tmp_path, no_model_loading, backend):
    if backend not in exporter.list_backends():
        pytest.skip(f"{backend} is not installed")
    with pytest.raises(InvalidArgumentError, match=r"longer than the model's \d+ positions; pass sequence_length="):
        exporter.export(checkpoint("bert"), tmp_path / "out", format=backend, sequence_length=100_000)
    assert not (tmp_path / "out").exists()


def test_old_tool_accepts_export_with_transformers(tmp_path):
    result = run_module(
        "exporter.onnx", "--export_with_transformers", "--model", str(tmp_path / "nope"), str(tmp_path / "out")
    )
    assert result.returncode == 2
    assert "--export_with_transformers is ignored" in result.stderr
    assert "no such folder" in result.stderr and "Traceback" not in result.stderr


# -- 3. checkpoint integrity --------------------------------------------------------------------------------------


def _truncate(folder: Path) -> str:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return "is truncated"


def _garbage(folder: Path) -> str:
    (folder / "model.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)
    return "model.safetensors"


def _bad_header(folder: Path) -> str:
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}'  # no closing brace
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return "corrupt"


def _unknown_dtype(folder: Path) -> str:
    header = json.dumps({"w": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return "unknown dtype 'Q7'"


def _missing_shard(folder: Path) -> str:
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return "model-00001-of-00002.safetensors"


def _config_shapes(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = config["intermediate_size"] + 3
    (folder / "config.json").write_text(json.dumps(config))
    return "does not match"


def _empty_bin(folder: Path) -> str:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    return "pytorch_model.bin is empty"


@pytest.mark.parametrize(
    "damage", [_truncate, _garbage, _bad_header, _unknown_dtype, _missing_shard, _config_shapes, _empty_bin]
)
def test_damaged_checkpoint_is_one_line_exit_2(cli, checkpoint, tmp_path, damage):
    folder = _copy_checkpoint(checkpoint("bert"), tmp_path / "ckpt")
    expected = damage(folder)
    result = cli("onnx", "--model", str(folder), str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert expected in line, line
    assert not (tmp_path / "out").exists()


def test_nan_weights_refused_naming_the_tensor_unless_allowed(checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _copy_checkpoint(checkpoint("bert"), tmp_path / "ckpt")
    tensors = load_file(folder / "model.safetensors")
    name = next(n for n in sorted(tensors) if n.endswith("encoder.layer.0.output.dense.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteWeightsError, match=r"encoder\.layer\.0\.output\.dense\.weight.*allow_nonfinite=True"):
        exporter.export(folder, tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()
    del torch


# -- 4. heads the checkpoint does not hold ------------------------------------------------------------------------


def test_missing_head_refused_naming_weights_and_held_features(cli, checkpoint, tmp_path):
    folder = checkpoint("bert", "sequence-classification")
    result = cli("onnx", "--model", str(folder), "--feature", "question-answering", str(tmp_path / "out"))
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "qa_outputs.weight" in line and "sequence-classification" in line and "--allow-random-head" in line
    assert not (tmp_path / "out").exists()


def test_allowed_random_head_is_in_the_report(checkpoint, tmp_path):
    folder = checkpoint("bert", "sequence-classification")
    with pytest.raises(RandomHeadError, match="allow_random_head=True"):
        exporter.export(folder, tmp_path / "refused", feature="question-answering", **FAST)
    report = exporter.export(folder, tmp_path / "out", feature="question-answering", allow_random_head=True, **FAST)
    saved = json.loads((tmp_path / "out" / "model.onnx.validation.json").read_text())
    assert saved["random_head"] is True and "qa_outputs.weight" in saved["random_weights"]
    assert report.random_weights == saved["random_weights"]


# -- 6. output folders --------------------------------------------------------------------------------------------


def test_folder_with_files_refused_unless_overwrite(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"README\.md.*overwrite=True"):
        exporter.export(checkpoint("bert"), out, **FAST)
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]


def test_overwrite_replaces_the_owned_set_and_leaves_other_files(checkpoint, tmp_path):
    out = tmp_path / "out"
    exporter.export(checkpoint("bert"), out, **FAST)
    first = json.loads((out / "model.onnx.validation.json").read_text())
    assert "model.onnx" in first["files"] and "model.onnx.validation.json" in first["files"]
    # A stale external-data file the previous export owned, and a file exporter never wrote.
    (out / "model.onnx.data").write_bytes(b"stale")
    first["files"].append("model.onnx.data")
    (out / "model.onnx.validation.json").write_text(json.dumps(first))
    (out / "notes.txt").write_text("keep me")
    exporter.export(checkpoint("bert"), out, overwrite=True, **FAST)
    names = sorted(p.name for p in out.iterdir())
    assert "model.onnx.data" not in names and "notes.txt" in names
    assert (out / "notes.txt").read_text() == "keep me"
    assert not [n for n in names if n.startswith(".exporter")]


def test_existing_file_of_another_kind_refused(checkpoint, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("not a model")
    with pytest.raises(OutputExistsError, match=r"not a \.onnx artifact"):
        exporter.export(checkpoint("bert"), target, **FAST)
    assert target.read_text() == "not a model"


def test_second_export_into_a_locked_folder_is_refused(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(out / '.exporter.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
            "print('locked', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            exporter.export(checkpoint("bert"), out, **FAST)
    finally:
        holder.kill()
        holder.wait()


# -- 2. leftovers of killed runs ----------------------------------------------------------------------------------


def test_staging_left_by_a_dead_process_is_removed_and_reported(checkpoint, tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".exporter-{dead.pid}-dead.partial"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"unvalidated")
    alive = out / ".exporter-1-alive.partial"  # pid 1 is always alive
    alive.mkdir()
    lines: list[str] = []
    from exporter.pipeline import run_export

    run_export("onnx", checkpoint("bert"), out, options=FAST, log=lines.append)
    assert not stale.exists() and alive.exists()
    assert any(stale.name in line and "interrupted export" in line for line in lines)


# -- 7. reports always --------------------------------------------------------------------------------------------


def test_failed_validation_writes_a_report_with_nan_facts(checkpoint, tmp_path, monkeypatch):
    import numpy as np

    from exporter_core.errors import ValidationError
    from exporter_onnx.backend import OnnxBackend

    original = OnnxBackend.export

    def nan_runner(self, request):
        result = original(self, request)
        for part in result.parts:

            def run(inputs, inner=part.runner):
                outputs = {k: np.array(v, dtype=np.float32) for k, v in inner(inputs).items()}
                first = next(iter(outputs))
                outputs[first][0, 0, 0] = np.nan
                return outputs

            part.runner = run
        return result

    monkeypatch.setattr(OnnxBackend, "export", nan_runner)
    side_report = tmp_path / "ci" / "report.json"
    side_report.parent.mkdir()
    with pytest.raises(ValidationError, match="exported model produced 1 non-finite"):
        exporter.export(checkpoint("bert"), tmp_path / "out", report=side_report, **FAST)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx.validation-failed.json"]
    text = (tmp_path / "out" / "model.onnx.validation-failed.json").read_text()

    def not_json(token: str) -> None:
        pytest.fail(f"the report holds the non-JSON token {token}")

    saved = json.loads(text, parse_constant=not_json)
    assert saved == json.loads(side_report.read_text())
    output = saved["parts"][0]["outputs"][0]
    assert output["max_abs_diff"] is None and "exported model produced" in output["max_abs_diff_reason"]
    assert output["nonfinite"]["side"] == "exported"
    assert output["nonfinite"]["exported"]["first_position"] == [0, 0, 0]
    assert output["worst_position"] == [0, 0, 0]


# -- 2. signals, in a real process --------------------------------------------------------------------------------

_SLOW_EXPORT = """
import sys, time
from exporter_onnx import convert
real = convert.export_onnx
def slow(*args, **kwargs):
    info = real(*args, **kwargs)
    print("written", flush=True)
    time.sleep(120)
    return info
convert.export_onnx = slow
from exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_export_leaves_nothing(checkpoint, tmp_path, sig, code):
    out = tmp_path / "new" / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_EXPORT, "onnx", "--model", str(checkpoint("bert")), "--opset", "17", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "written"  # the model is in staging
    assert [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert len([line for line in stderr.splitlines() if line.strip() and not line.startswith("feature: ")]) == 1, stderr
    assert not out.exists() and not out.parent.exists(), "the export left the folders it created"


def test_worker_process_ends_with_its_parent(tmp_path):
    script = (
        "import time\n"
        "from exporter_torchscript.runtime import loader_process\n"
        "worker = loader_process()\n"
        "worker.request({'path': 'missing.pt', 'inputs': 'x', 'outputs': 'y'})\n"
        "print(worker.process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no cleanup runs in the parent
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"worker {worker_pid} outlived its killed parent")


def test_file_size_limit_is_an_environment_error(checkpoint, tmp_path):
    import resource

    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "onnx", "--model", str(checkpoint("bert")), "--opset", "17", str(out)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limit,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr
    line = _one_error_line(done.stderr)
    assert "ulimit" in line or "File too large" in line, line
    assert not out.exists()


# -- 9. hints -----------------------------------------------------------------------------------------------------


def test_hub_hint_uses_the_installed_command():
    from importlib import metadata

    from exporter_core.loading import hub_download_command

    scripts = {ep.name for ep in metadata.distribution("huggingface_hub").entry_points if ep.group == "console_scripts"}
    expected = "hf download org/model" if "hf" in scripts else "huggingface-cli download org/model"
    assert hub_download_command("org/model") == expected


def test_install_hint_matches_the_installation():
    from exporter.install import install_command, local_checkout

    command = install_command(["exporter-torchscript"])
    checkout = local_checkout()
    if checkout is not None:
        assert command.startswith("pip install ") and command.endswith(str(checkout / "exporter-torchscript"))
        assert (checkout / "exporter-torchscript" / "pyproject.toml").is_file()
    else:
        assert command == "pip install 'exporter[torchscript]'"


def test_unsupported_feature_still_lists_the_features(checkpoint, tmp_path, no_model_loading):
    with pytest.raises(UnsupportedFeatureError, match="supported features"):
        exporter.export(checkpoint("bert"), tmp_path / "out", feature="seq2seq-lm")


def test_checkpoint_error_is_a_user_error():
    assert CheckpointError.exit_code == 2 and OutputBusyError.exit_code == 2
