"""``exporter neuron --sdk-python``: the SDK in another interpreter, really.

A second virtual environment is built for these tests (`sdk_environments`): torch, transformers, numpy and the
SDK stand-in, none of exporter's packages. Compiling and running on the "device" happen in that interpreter;
loading the reference, choosing the inputs and comparing happen here. The answers of that environment's worker
say which interpreter ran and which exporter modules it imported (none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import standin_or_skip
from sdk_environments import build_environment, declare_requirements

from exporter_core.errors import BackendUnavailableError, InvalidArgumentError
from exporter_neuron.environments import (
    ENV_ROOTS_VARIABLE,
    SdkWorker,
    describe_environment,
    find_environments,
    resolve_sdk_python,
)


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a second environment holding the SDK stand-in (and no exporter)."""
    standin_or_skip()
    venv = tmp_path_factory.mktemp("sdk-env") / "aws_neuronx_venv_pytorch_standin"
    return str(build_environment(venv, ["torch", "transformers", "numpy", "exporter-neuron-sdk-standin"]))


@pytest.fixture(scope="module")
def inf1_like_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An environment whose torch_neuron provider declares torch-neuron's needs: PyTorch 1.13, Transformers 4.x."""
    standin_or_skip()
    venv = tmp_path_factory.mktemp("inf1-env") / "aws_neuron_venv_pytorch"
    python = build_environment(venv, ["torch", "transformers", "numpy", "exporter-neuron-sdk-standin"])
    declare_requirements(venv, "torch_neuron", "torch-neuron-requirements", ["torch<1.14,>=1.13.1", "transformers<5"])
    return str(python)


def _export(checkpoint: Path, out: Path, **options: Any) -> Any:
    import exporter

    return exporter.export(str(checkpoint), str(out), format="neuron", feature="sequence-classification", **options)


def test_the_environment_describes_itself_without_exporter(sdk_python: str) -> None:
    from importlib import metadata

    environment = describe_environment(sdk_python)
    assert environment.facts["executable"] == sdk_python
    assert environment.torch == metadata.version("torch")
    assert environment.transformers == metadata.version("transformers")
    assert environment.sdk("inf2")["distribution"] == "exporter-neuron-sdk-standin"
    assert environment.sdk("inf1")["unmet"] == [] and environment.problem("inf2") is None
    # Nothing of exporter can be imported there.
    worker = SdkWorker(environment)
    try:
        answer = worker.request({"op": "describe"})
    finally:
        worker.close()
    assert answer["exporter_modules"] == [] and answer["executable"] == sdk_python


@pytest.mark.parametrize("target", ["inf2", "inf1"])
def test_compiled_and_run_there_validated_here(sdk_python: str, checkpoint, tmp_path: Path, target: str) -> None:
    folder = checkpoint("bert", "sequence-classification")
    out = tmp_path / "out"
    report = _export(folder, out, target=target, sdk_python=sdk_python, batch_size=2, sequence_length=12)
    metadata = json.loads((out / "model_neuron.neuron.json").read_text())
    assert metadata["sdk"]["environment"]["python"] == sdk_python
    assert metadata["sdk"]["module"] == ("torch_neuron" if target == "inf1" else "torch_neuronx")
    assert metadata["static_shape"] == {"batch": 2, "sequence": 12}
    # Both Transformers versions are recorded: the one that traced (there) and the reference's (here).
    assert metadata["versions"]["transformers"] and metadata["versions"]["exporter_transformers"]
    assert report.passed
    # Validated at the compiled shape and at smaller inputs padded up to it, outputs compared here.
    assert len(report.parts) == 2 and "padded to the traced shape" in str(report.parts[1].part)
    assert report.worst_difference < 1e-4


def test_a_wrong_export_there_fails_validation_here(sdk_python: str, checkpoint, tmp_path: Path) -> None:
    """The comparison is real: a module compiled from other weights than the reference's fails."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    from exporter_core.errors import ValidationError

    folder = checkpoint("bert", "sequence-classification")
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with __import__("torch").no_grad():
        model.classifier.weight.mul_(-1.0)
    model.save_pretrained(other)
    from exporter_neuron import compiling

    original = compiling.compile_in_environment

    def swapped(model: Any, *args: Any, **kwargs: Any) -> Any:
        # The environment loads the altered copy; the reference here keeps the original weights.
        model.name_or_path = str(other)
        try:
            return original(model, *args, **kwargs)
        finally:
            model.name_or_path = str(folder)

    compiling.compile_in_environment = swapped
    try:
        with pytest.raises(ValidationError):
            _export(folder, tmp_path / "out", sdk_python=sdk_python)
    finally:
        compiling.compile_in_environment = original
    assert not (tmp_path / "out" / "model_neuron.pt").exists()


def test_unmet_sdk_requirements_are_refused_before_loading(inf1_like_python: str, checkpoint, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        _export(
            checkpoint("bert", "sequence-classification"), tmp_path / "out", target="inf1", sdk_python=inf1_like_python
        )
    message = str(caught.value)
    assert "torch-neuron-requirements" in message and "torch<1.14,>=1.13.1 (found" in message
    assert "transformers<5 (found" in message
    assert not (tmp_path / "out").exists()


def test_auto_finds_the_dlami_environment(sdk_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(sdk_python).parents[1].parent
    monkeypatch.setenv(ENV_ROOTS_VARIABLE, str(root))
    assert find_environments() == [sdk_python]
    assert resolve_sdk_python("auto", "inf2").python == sdk_python
    monkeypatch.setenv(ENV_ROOTS_VARIABLE, str(root / "nowhere"))
    with pytest.raises(BackendUnavailableError, match="found no Neuron environment for inf2"):
        resolve_sdk_python("auto", "inf2")


def test_a_missing_interpreter_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no such interpreter"):
        resolve_sdk_python(str(tmp_path / "missing" / "python"), "inf2")


def test_inf1_without_an_environment_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter_neuron import backend

    monkeypatch.setattr(backend, "sdk_problem", lambda target: "torch-neuron is not installed")
    with pytest.raises(BackendUnavailableError) as caught:
        backend.NeuronBackend.check_options({"target": "inf1"})
    message = str(caught.value)
    assert "PyTorch 1.13" in message and "Transformers 4.x" in message and "--sdk-python" in message


def test_configs_with_exporter_computation_are_refused_there() -> None:
    from transformers import BertConfig

    from exporter_core.architectures.encoders import BertOnnxConfig
    from exporter_neuron.compiling import remote_refusal

    class Pooled(BertOnnxConfig):
        def select_outputs(self, model_output: Any) -> tuple[Any, ...]:
            return (model_output.last_hidden_state.mean(1),)

    assert remote_refusal(BertOnnxConfig(BertConfig())) is None
    assert "select_outputs" in str(remote_refusal(Pooled(BertConfig())))


def test_backends_lists_the_environments_found(sdk_python: str, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ROOTS_VARIABLE, str(Path(sdk_python).parents[1].parent))
    result = cli("backends")
    lines = [line for line in result.stdout.splitlines() if "SDK environment (--sdk-python)" in line]
    assert len(lines) == 1 and sdk_python in lines[0] and "exporter-neuron-sdk-standin" in lines[0]
