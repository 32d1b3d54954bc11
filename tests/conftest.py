"""Fixtures shared by the cross-package tests: tiny checkpoints and command-line runners."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny checkpoints are saved inside tests; keep Transformers' progress bars out of captured stderr.
from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.disable_progress_bar()
EXAMPLE = REPO / "examples" / "tiny-bert"


@dataclass
class CliResult:
    """Exit status and output of one command-line run."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per session and arguments) a tiny checkpoint and return its folder."""
    from exporter_core.testing import build_tiny_checkpoint

    made: dict[tuple, Path] = {}

    def build(model_type: str = "bert", feature: str = "default", with_tokenizer: bool = True) -> Path:
        key = (model_type, feature, with_tokenizer)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{model_type}-{feature}")
            made[key] = build_tiny_checkpoint(model_type, feature, folder, with_tokenizer=with_tokenizer)
        return made[key]

    return build


def run_module(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run ``python -m <args>`` in a fresh process (offline) and capture everything."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``exporter`` in this process (fast) and capture its output."""
    from exporter.cli import main

    def run(*argv: str) -> CliResult:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
