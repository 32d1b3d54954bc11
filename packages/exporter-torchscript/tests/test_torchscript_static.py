"""The static-trace layer TorchScript and Neuron share: an injected tracer, static-shape scenarios with the padding
effect, labels from the shape contract, and the fresh-process worker with an injected loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from exporter_core.errors import ExportError
from exporter_core.features import config_class_for
from exporter_core.testing import tiny_model_config
from exporter_torchscript.runtime import SavedModuleRunner
from exporter_torchscript.static import PaddedReference, Tracer, static_scenarios, trace_static


def _model_and_config(model_type: str) -> tuple[Any, Any]:
    from transformers import AutoModel

    torch.manual_seed(0)
    model_config = tiny_model_config(model_type)
    return AutoModel.from_config(model_config).eval(), config_class_for(model_type).for_feature(model_config, "default")


def _refuse(module: Any, inputs: tuple[Any, ...]) -> Any:
    raise RuntimeError("operator aten::gelu is not supported\nmore detail")


def test_a_failing_tracer_is_one_line_naming_the_call_the_model_the_target_and_the_shape():
    model, config = _model_and_config("bert")
    tracer = Tracer("sdk.trace", _refuse, verb="compile", target="inf2", hint="see `exporter neuron analyze`")
    with pytest.raises(ExportError) as caught:
        trace_static(model, config, tracer, batch_size=2, sequence_length=6)
    assert str(caught.value) == (
        "sdk.trace could not compile BertModel for inf2 at batch 2 × sequence 6: RuntimeError: operator aten::gelu "
        "is not supported; see `exporter neuron analyze`"
    )


def test_the_injected_tracer_gets_the_prepared_module_and_the_contract_records_the_trace():
    model, config = _model_and_config("bert")
    seen: dict[str, Any] = {}

    def record(module: Any, inputs: tuple[Any, ...]) -> Any:
        seen.update(training=module.training, shapes=[tuple(x.shape) for x in inputs], outputs=module(*inputs))
        return module

    model.train()
    traced = trace_static(model, config, Tracer("record", record), batch_size=3, sequence_length=7, feature="default")
    assert model.training and seen["training"] is False  # eval while tracing, the caller's mode restored
    assert seen["shapes"] == [(3, 7)] * 3 and isinstance(seen["outputs"], tuple)
    contract = traced.contract
    assert contract.static_shape == contract.traced_shape == {"batch": 3, "sequence": 7}
    assert contract.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert contract.padding_side == "right" and contract.feature == "default"
    assert contract.describe_call({"batch": 3, "sequence": 7}) == "traced shape (batch 3 × sequence 7)"
    assert (
        contract.describe_call({"batch": 1, "sequence": 4})
        == "smaller inputs (batch 1 × sequence 4) padded to the traced shape"
    )


def test_padding_that_changes_the_outputs_makes_the_padded_scenario_compare_with_the_padded_model():
    jit = Tracer("torch.jit.trace", lambda module, inputs: torch.jit.trace(module, inputs, check_trace=False))
    for model_type, changes in (("bert", False), ("convbert", True)):
        model, config = _model_and_config(model_type)
        contract = trace_static(model, config, jit, batch_size=2, sequence_length=9).contract
        at_traced, smaller = static_scenarios(model, config, contract)
        assert at_traced.reference is None and at_traced.label == "traced shape (batch 2 × sequence 9)"
        assert contract.padding_effect is not None and contract.padding_effect["changes_outputs"] is changes
        assert contract.padding_effect["shape"] == {"batch": 1, "sequence": 6}
        if changes:  # ConvBERT's convolutions read the padding tokens
            assert (
                isinstance(smaller.reference, PaddedReference)
                and "padding changes this model's outputs" in smaller.label
            )
        else:
            assert smaller.reference is None and contract.padding_effect["max_abs_diff"] <= config.atol_for_validation


def test_a_larger_batch_scenario_is_added_for_artifacts_that_take_any_batch():
    model, config = _model_and_config("bert")
    jit = Tracer("torch.jit.trace", lambda module, inputs: torch.jit.trace(module, inputs, check_trace=False))
    contract = trace_static(model, config, jit, batch_size=2, sequence_length=8).contract
    contract.static_shape = {"sequence": 8}  # what a dynamic-batch artifact's contract keeps fixed
    scenarios = static_scenarios(model, config, contract, larger_batch=True)
    assert [dict(s.inputs)["input_ids"].shape for s in scenarios] == [(2, 8), (1, 5), (5, 8)]
    assert scenarios[2].label == "larger batch (5) than traced, which the module takes as it is (batch 5 × sequence 8)"


def test_the_worker_loads_with_the_injected_loader_and_a_bad_loader_is_reported(tmp_path: Path):
    runner = SavedModuleRunner(
        tmp_path / "model.pt", loader="exporter_torchscript.runtime:no_such_loader", label="Test"
    )
    with pytest.raises(
        ExportError, match=r"(?s)the Test loader process died; its last words: .*no attribute 'no_such_loader'"
    ):
        runner({})


class _PythonFunction(torch.autograd.Function):
    """An autograd function: a trace records it as a Python call, which TorchScript cannot save."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2


class _Doubled(torch.nn.Module):
    """Runs a module and doubles its outputs through `_PythonFunction`."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_PythonFunction.apply(x) for x in self.inner(*inputs))


def test_a_trace_torchscript_cannot_save_is_one_line_naming_the_model(tmp_path: Path):
    from exporter_torchscript.static import save_module

    model, config = _model_and_config("bert")

    def trace_with_python_call(module: Any, inputs: tuple[Any, ...]) -> Any:
        return torch.jit.trace(_Doubled(module), inputs, check_trace=False)

    traced = trace_static(
        model, config, Tracer("torch.jit.trace", trace_with_python_call), batch_size=1, sequence_length=4
    )
    with pytest.raises(
        ExportError,
        match=r"torch\.jit\.save could not save the traced BertModel: RuntimeError: Could not export Python function",
    ):
        save_module(traced.module, traced.contract, tmp_path / "model.pt")
