"""Shared fixtures of exporter-validate's tests: tiny models and a fake runner standing in for an artifact."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

Perturb = Callable[[dict[str, np.ndarray], Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def model_runner(
    model: Any, output_names: list[str], perturb: Perturb | None = None
) -> Callable[..., dict[str, np.ndarray]]:
    """A runner that calls the PyTorch model directly (not through exporter's wrapper), then perturbs its outputs."""
    import torch

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            result = model(**{name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in inputs.items()})
        outputs = {name: result[name].numpy().copy() for name in output_names}
        return perturb(outputs, inputs) if perturb is not None else outputs

    return run


@pytest.fixture(scope="session")
def make_runner() -> Callable[..., Callable[..., dict[str, np.ndarray]]]:
    """`model_runner`, as a fixture so test modules need not import conftest."""
    return model_runner


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The core test kit's WordLevel tokenizer."""
    from exporter_core.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def bert_default() -> tuple[Any, Any]:
    """(tiny BertModel in eval mode, its default-feature config)."""
    import torch
    from transformers import AutoModel

    from exporter_core.architectures.encoders import BertOnnxConfig
    from exporter_core.testing import tiny_model_config

    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_model_config("bert")).eval()
    return model, BertOnnxConfig(model.config)


@pytest.fixture(scope="session")
def bert_qa() -> tuple[Any, Any]:
    """(tiny BertForQuestionAnswering in eval mode, its question-answering config)."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from exporter_core.architectures.encoders import BertOnnxConfig
    from exporter_core.testing import tiny_model_config

    torch.manual_seed(1)
    model = AutoModelForQuestionAnswering.from_config(tiny_model_config("bert")).eval()
    return model, BertOnnxConfig(model.config, task="question-answering")
