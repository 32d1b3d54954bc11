"""Shared fixtures of exporter-torchscript's tests: tiny checkpoints built once per worker, a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers.utils import logging as _hf_logging

# Checkpoints are saved inside tests; keep Transformers' progress bars out of captured output.
_hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per worker and arguments) a tiny checkpoint with its tokenizer and return its folder."""
    from exporter_core.testing import build_tiny_checkpoint

    made: dict[tuple[Any, ...], Path] = {}

    def build(
        model_type: str = "bert", feature: str = "default", with_tokenizer: bool = True, **overrides: Any
    ) -> Path:
        key = (model_type, feature, with_tokenizer, tuple(sorted(overrides.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{model_type}-{feature}")
            made[key] = build_tiny_checkpoint(
                model_type, feature, folder, with_tokenizer=with_tokenizer, config_overrides=overrides or None
            )
        return made[key]

    return build


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The core test kit's WordLevel tokenizer (BERT-style special tokens, vocabulary of 99)."""
    from exporter_core.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()
