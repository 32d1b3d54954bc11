"""Shared fixtures of exporter-core's unit tests: one tiny tokenizer and one tiny checkpoint per worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The test kit's pytest plugin is tested by running pytest inside pytest.
pytest_plugins = ("pytester",)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The test kit's WordLevel tokenizer (BERT-style special tokens, vocabulary of 99)."""
    from exporter_core.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT masked-lm checkpoint with its tokenizer, saved with save_pretrained."""
    from exporter_core.testing import build_tiny_checkpoint

    return build_tiny_checkpoint("bert", "masked-lm", tmp_path_factory.mktemp("bert"), with_tokenizer=True)
