"""SDK detection from installed package metadata, and every Neuron command refusing to run without the SDK it needs.

AWS's distributions are simulated with hand-written ``.dist-info`` folders on ``sys.path`` (metadata only, no
module): detection must decide from metadata alone. Where exporter-neuron's test stand-in is installed, the
"no SDK" tests hide it from the provider lookup.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import standin_or_skip

import exporter
from exporter_core.errors import BackendUnavailableError
from exporter_neuron import NeuronBackend
from exporter_neuron.sdk import AWS_INDEX, SDKS, find_sdk, require_sdk, sdk_problem

INSTALL_X = f"pip install torch-neuronx --extra-index-url {AWS_INDEX}"
INSTALL_1 = f"pip install torch-neuron --extra-index-url {AWS_INDEX}"


def _aws_sdk_installed() -> bool:
    for sdk in SDKS:
        try:
            metadata.distribution(sdk.distribution)
            return True
        except metadata.PackageNotFoundError:
            continue
    return False


@pytest.fixture
def no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider of torch_neuron / torch_neuronx: the stand-in, where installed, is hidden; skip on AWS hosts."""
    if _aws_sdk_installed():
        pytest.skip("AWS's Neuron SDK is installed here")
    monkeypatch.setattr("exporter_neuron.sdk._providers", lambda module: [])


def _fake_aws_distribution(root: Path, name: str, version: str, requires: list[str]) -> None:
    """Metadata of an installed distribution, without any module (what detection must be satisfied with)."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", "Summary: fake AWS SDK metadata"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_without_sdk_the_reason_names_both_packages_and_awss_index(no_sdk):
    reason = NeuronBackend.unavailable_reason()
    assert reason.startswith("no Neuron SDK is installed")
    assert INSTALL_X in reason and INSTALL_1 in reason
    inf1 = NeuronBackend.unavailable_reason("inf1")
    assert "torch-neuron " in inf1 and INSTALL_1 in inf1 and "torch-neuronx" not in inf1
    assert INSTALL_X in NeuronBackend.unavailable_reason("trn1")


def test_backends_lists_neuron_as_installed_but_not_usable(no_sdk, cli):
    result = cli("backends")
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("neuron"))
    assert "exporter-neuron" in line and "installed, not usable: no Neuron SDK is installed" in line
    assert INSTALL_X in line


def test_every_neuron_command_exits_3_naming_the_package_and_writes_nothing(no_sdk, cli, tmp_path):
    # The SDK is checked before anything else: not even the (absent) checkpoint is looked at.
    folder = tmp_path / "checkpoint-never-read"
    out = tmp_path / "out"
    for argv in (
        ("neuron", "--model", folder, "--sequence-length", 16, out),
        ("neuron", "--model", folder, "--target", "inf1", out),
        ("neuron", "analyze", "--model", folder),
        ("neuron", "analyze", "--model", folder, "--target", "trn1", "--json"),
    ):
        result = cli(*argv)
        assert result.returncode == BackendUnavailableError.exit_code == 3, result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
        if "inf1" in argv:
            # torch-neuron never shares exporter's process: the line says why and names --sdk-python.
            assert "--target inf1 needs torch-neuron" in result.stderr and "--sdk-python" in result.stderr
        else:
            assert INSTALL_X in result.stderr
        assert result.stdout == ""
    with pytest.raises(BackendUnavailableError, match="no Neuron SDK is installed"):
        exporter.export(folder, out, format="neuron")
    assert not out.exists()


def test_the_chosen_targets_sdk_is_the_one_checked(no_sdk, cli, tmp_path, monkeypatch):
    _fake_aws_distribution(tmp_path / "site", "torch-neuronx", "2.5.0", ["numpy"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    installed = find_sdk(SDKS[1])
    assert installed is not None and installed.is_aws and installed.version == "2.5.0"
    # One usable SDK makes the backend usable; the other target still names its own package.
    assert NeuronBackend.unavailable_reason() is None
    assert NeuronBackend.unavailable_reason("inf2") is None
    assert INSTALL_1 in NeuronBackend.unavailable_reason("inf1")
    out = tmp_path / "out"
    # torch-neuron cannot share this process: Inf1 is refused saying why and how to point at its environment.
    result = cli("neuron", "--model", tmp_path / "checkpoint-never-read", "--target", "inf1", out)
    assert result.returncode == BackendUnavailableError.exit_code
    assert "--target inf1 needs torch-neuron" in result.stderr and "--sdk-python" in result.stderr
    assert not out.exists()


def test_an_sdk_whose_requirements_are_not_met_is_not_usable(no_sdk, tmp_path, monkeypatch):
    _fake_aws_distribution(tmp_path / "site", "torch-neuronx", "2.5.0", ["torch==2.1.2", "neuronx-cc==2.*"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    problem = sdk_problem("inf2")
    assert problem.startswith("torch-neuronx 2.5.0 is installed but its requirements are not: ")
    assert (
        f"torch==2.1.2 (found {metadata.version('torch')})" in problem
        and "neuronx-cc==2.*" in problem
        and INSTALL_X in problem
    )
    with pytest.raises(BackendUnavailableError, match="cannot compile for trn1"):
        require_sdk("trn1")


def test_the_stand_in_is_found_by_its_import_package_and_never_passes_for_awss():
    standin_or_skip()
    for sdk in SDKS:
        installed = find_sdk(sdk)
        assert installed.distribution == "exporter-neuron-sdk-standin" and not installed.is_aws
        assert installed.summary.startswith("TEST STAND-IN") and installed.describe()["aws_sdk"] is False


def test_entry_point_module_and_availability_check_import_neither_torch_nor_the_sdk():
    script = (
        "import json, sys\n"
        "from exporter_neuron.backend import NeuronBackend\n"
        "NeuronBackend.unavailable_reason(); NeuronBackend.unavailable_reason('inf1')\n"
        "heavy = ('torch', 'transformers', 'torch_neuron', 'torch_neuronx', 'neuron_sdk_standin')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_help_of_export_and_analyze(cli):
    with pytest.raises(SystemExit) as caught:
        cli("neuron", "analyze", "--help")
    assert caught.value.code == 0
    with pytest.raises(SystemExit):
        cli("neuron", "--help")


def test_plans_a_static_trace_cannot_serve_are_refused_before_the_sdk_is_needed(no_sdk, tmp_path):
    from transformers import GPT2LMHeadModel

    from exporter_core.backend import ExportRequest
    from exporter_core.errors import UnsupportedFeatureError
    from exporter_core.features import config_class_for
    from exporter_core.testing import tiny_model_config

    model_config = tiny_model_config("gpt2")
    plan = (
        config_class_for("gpt2")
        .for_feature(model_config, "causal-lm-with-past")
        .export_plan(GPT2LMHeadModel(model_config))
    )
    assert plan.static_trace_refusal
    request = ExportRequest(plan=plan, staging=tmp_path, artifact_name="model_neuron.pt")
    with pytest.raises(UnsupportedFeatureError) as caught:
        NeuronBackend().export(request)
    assert str(caught.value) == plan.static_trace_refusal and "takes past key values" in str(caught.value)
    assert not any(tmp_path.iterdir())
