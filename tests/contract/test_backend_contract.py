"""The contract every installed backend keeps, run once per backend found in the ``exporter.backends`` entry points.

A backend passes when: its entry-point module imports without torch, Transformers or ONNX; ``unavailable_reason``
is None or a sentence; `exporter.export` of a tiny BERT (default and sequence-classification) passes validation
with the JSON report beside the artifact; a failed validation leaves only its report (``<artifact>.validation-
failed.json``); and the reliability guarantees of issue 12 hold for it: a misspelt option is refused before the
model is loaded with the nearest name, a folder holding files is refused without ``overwrite`` and with it the
previous export's files are replaced as a set, and an interruption at any point leaves nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import exporter
from exporter.pipeline import failed_report_name, report_name
from exporter_core.backend import Backend
from exporter_core.errors import InvalidArgumentError, OutputExistsError, ValidationError
from exporter_core.plugins import list_backends, load_backend

BACKENDS = {info.name: info for info in list_backends()}
HEAVY = ("torch", "transformers", "onnx", "onnxruntime")


def test_at_least_one_backend_is_installed():
    assert BACKENDS, "the contract suite needs an installed backend (pip install exporter-onnx)"


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_entry_point_module_imports_without_heavy_libraries(name):
    module, _, attribute = BACKENDS[name].target.partition(":")
    script = (
        "import importlib, json, sys\n"
        f"cls = getattr(importlib.import_module({module!r}), {attribute!r})\n"
        f"print(json.dumps({{'loaded': sorted(m for m in {HEAVY!r} if m in sys.modules), "
        "'name': cls.name, 'artifact': cls.default_artifact, 'display': cls.display_name}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["loaded"] == [], f"{module} imports {facts['loaded']} at module scope"
    assert facts["name"] == name and facts["artifact"] and facts["display"]


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_class_and_unavailable_reason(name):
    backend_cls = load_backend(name)
    assert issubclass(backend_cls, Backend)
    reason = backend_cls.unavailable_reason()
    assert reason is None or (isinstance(reason, str) and reason.strip())


def _usable(name: str) -> type[Backend]:
    backend_cls = load_backend(name)
    reason = backend_cls.unavailable_reason()
    if reason is not None:
        pytest.skip(f"backend {name} cannot run here: {reason}")
    return backend_cls


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def default_export(request, checkpoint, tmp_path_factory) -> tuple[type[Backend], Any, Path]:
    """One export of a tiny BERT (default feature) per backend: (backend class, report, output folder)."""
    backend_cls = _usable(request.param)
    out = tmp_path_factory.mktemp(f"contract-{request.param}")
    report = exporter.export(checkpoint("bert", "default"), out, format=request.param)
    return backend_cls, report, out


def _check_report_beside_artifact(backend_cls: type[Backend], report: Any, out: Path) -> dict[str, Any]:
    artifact = out / backend_cls.default_artifact
    assert artifact.is_file()
    assert report.output == str(artifact)
    saved = json.loads((out / report_name(backend_cls.default_artifact)).read_text(encoding="utf-8"))
    assert (
        saved["passed"] is True and saved["backend"] == backend_cls.name and saved["format"] == backend_cls.display_name
    )
    assert saved["parts"] and all(part["outputs"] for part in saved["parts"])
    for part in saved["parts"]:
        for output in part["outputs"]:
            assert output["passed"] and output["max_abs_diff"] <= output["tolerance"]
        # The contract's ExportedPart.export_inputs: the shapes the artifact was captured or traced at.
        assert part["export_inputs"] and set(part["export_inputs"]) == set(part["reference_inputs"]), part["part"]
    assert not [p for p in out.iterdir() if p.name.startswith(".exporter-")]
    return saved


def test_default_export_passes_validation_with_report_beside_artifact(default_export):
    backend_cls, report, out = default_export
    assert report.passed, report.failures
    saved = _check_report_beside_artifact(backend_cls, report, out)
    assert {o["name"] for part in saved["parts"] for o in part["outputs"]} == {"last_hidden_state"}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_sequence_classification_export_passes_validation(name, checkpoint, tmp_path):
    backend_cls = _usable(name)
    folder = checkpoint("bert", "sequence-classification")
    report = exporter.export(folder, tmp_path, format=name, feature="sequence-classification")
    assert report.passed, report.failures
    saved = _check_report_beside_artifact(backend_cls, report, tmp_path)
    assert {o["name"] for part in saved["parts"] for o in part["outputs"]} == {"logits"}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_failed_validation_leaves_no_artifact(name, checkpoint, tmp_path, monkeypatch):
    backend_cls = _usable(name)
    original = backend_cls.export

    def export_with_perturbed_runners(self: Backend, request: Any) -> Any:
        result = original(self, request)
        for part in result.parts:

            def perturbed(inputs: Any, run: Any = part.runner) -> dict[str, np.ndarray]:
                return {key: np.asarray(value) + 0.5 for key, value in run(inputs).items()}

            part.runner = perturbed
        return result

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(backend_cls, "export", export_with_perturbed_runners)
        with pytest.raises(ValidationError) as caught:
            exporter.export(checkpoint("bert", "default"), out, format=name)
    report = caught.value.report
    assert report is not None and not report.passed
    assert report.failures and all("last_hidden_state" in failure for failure in report.failures)
    assert "not kept" in str(caught.value)
    assert [p.name for p in out.iterdir()] == [failed_report_name(backend_cls.default_artifact)]
    saved = json.loads((out / failed_report_name(backend_cls.default_artifact)).read_text(encoding="utf-8"))
    assert saved["passed"] is False and saved["failures"] and saved["files"] == [p.name for p in out.iterdir()]


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_misspelt_option_refused_before_the_model_is_loaded(name, checkpoint, tmp_path, monkeypatch):
    from exporter_core import loading

    backend_cls = _usable(name)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    known = list(backend_cls.option_names or ())
    misspelt = (known[0][:-1] + known[0][-1] * 2) if known else "opset"
    with pytest.raises(InvalidArgumentError) as caught:
        exporter.export(checkpoint("bert", "default"), tmp_path / "out", format=name, **{misspelt: 1})
    assert misspelt in str(caught.value)
    if known:
        assert f"did you mean {known[0]}?" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_interrupted_export_leaves_nothing(name, checkpoint, tmp_path, monkeypatch):
    backend_cls = _usable(name)
    original = backend_cls.export

    def export_then_interrupt(self: Backend, request: Any) -> Any:
        original(self, request)  # every file is written into staging ...
        raise KeyboardInterrupt  # ... then Ctrl-C (SIGTERM unwinds the same way)

    monkeypatch.setattr(backend_cls, "export", export_then_interrupt)
    out = tmp_path / "new" / "out"
    with pytest.raises(KeyboardInterrupt):
        exporter.export(checkpoint("bert", "default"), out, format=name)
    assert not out.parent.exists(), "the folders the export created are removed again"


def test_overwrite_replaces_the_previous_export(default_export, checkpoint, tmp_path):
    backend_cls, _, first_out = default_export
    name = backend_cls.name
    out = tmp_path / "out"
    out.mkdir()
    for path in first_out.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    owned = json.loads((out / report_name(backend_cls.default_artifact)).read_text(encoding="utf-8"))["files"]
    assert backend_cls.default_artifact in owned and report_name(backend_cls.default_artifact) in owned
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputExistsError):
        exporter.export(checkpoint("bert", "default"), out, format=name)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "unrelated.txt").write_text("kept")
    (out / "stale-owned.bin").write_bytes(b"stale")
    listing = json.loads((out / report_name(backend_cls.default_artifact)).read_text(encoding="utf-8"))
    listing["files"].append("stale-owned.bin")
    (out / report_name(backend_cls.default_artifact)).write_text(json.dumps(listing), encoding="utf-8")
    report = exporter.export(checkpoint("bert", "default"), out, format=name, overwrite=True)
    assert report.passed
    names = {p.name for p in out.iterdir()}
    assert "stale-owned.bin" not in names and (out / "unrelated.txt").read_text() == "kept"
    assert not [n for n in names if n.startswith(".exporter")]
