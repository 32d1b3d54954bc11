"""Shared fixtures of exporter-neuron's tests: tiny checkpoints, an in-process CLI, the SDK stand-in's call record.

Tests marked ``neuron`` need AWS's own Neuron SDK and a Neuron device (an Inf1/Inf2/Trn1 host); they skip anywhere
else. Tests that need the SDK stand-in (tests/fixtures/neuron-sdk-standin, installed by this package's nox session)
skip when it is absent.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from transformers.utils import logging as _hf_logging

# Checkpoints are saved inside tests; keep Transformers' progress bars out of captured output.
_hf_logging.disable_progress_bar()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "neuron: needs AWS's Neuron SDK (torch-neuron or torch-neuronx) and a Neuron device; skipped elsewhere",
    )
    # One compiled export (a module-scoped fixture) serves several tests of a file; with xdist's default "load"
    # scheduling they would land on both workers and each would compile and validate it again. Keep a file's
    # tests on one worker instead (an explicit --dist choice is left alone).
    if getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadfile"


def aws_sdk_targets() -> list[str]:
    """Targets whose SDK is AWS's own distribution (not the stand-in) and installed with its requirements."""
    from exporter_neuron.sdk import SDKS, find_sdk, sdk_problem

    targets: list[str] = []
    for sdk in SDKS:
        installed = find_sdk(sdk)
        if installed is not None and installed.is_aws and sdk_problem(sdk.targets[0]) is None:
            targets += list(sdk.targets)
    return targets


def neuron_devices() -> list[str]:
    """Neuron device files of this host (/dev/neuron0, ...)."""
    return sorted(glob.glob("/dev/neuron[0-9]*"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if not aws_sdk_targets():
        reason = "needs AWS's Neuron SDK (pip install torch-neuronx --extra-index-url https://pip.repos.neuron.amazonaws.com)"
    elif not neuron_devices():
        reason = "needs a Neuron device (/dev/neuron*): run on an Inf1/Inf2/Trn1 host"
    if reason:
        for item in items:
            if "neuron" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per worker and arguments) a tiny checkpoint with its tokenizer and return its folder."""
    from exporter_core.testing import build_tiny_checkpoint

    made: dict[tuple[Any, ...], Path] = {}

    def build(model_type: str = "bert", feature: str = "default") -> Path:
        key = (model_type, feature)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{model_type}-{feature}")
            made[key] = build_tiny_checkpoint(model_type, feature, folder, with_tokenizer=True)
        return made[key]

    return build


@dataclass
class CliResult:
    """Exit status and output of one command-line run."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``exporter`` in this process and capture its output."""
    from exporter.cli import main

    def run(*argv: str) -> CliResult:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def standin_or_skip() -> Any:
    """The stand-in's shared module, or skip when the stand-in SDK is not installed."""
    from exporter_neuron.sdk import SDKS, find_sdk

    found = [find_sdk(sdk) for sdk in SDKS]
    if not all(item is not None and not item.is_aws for item in found):
        pytest.skip(
            "needs the Neuron SDK stand-in (pip install --no-deps packages/exporter-neuron/tests/fixtures/neuron-sdk-standin)"
        )
    import neuron_sdk_standin

    return neuron_sdk_standin


@pytest.fixture
def standin() -> Any:
    """The stand-in's shared module (its `CALLS` record emptied first); skips without the stand-in."""
    module = standin_or_skip()
    module.CALLS.clear()
    return module
