"""The ONNX conversion itself: opsets honoured exactly, engines, refusals, the old `export` API, atomic writes,
external data, the caller's model left as it was, and the backend executing whatever export plan it is given.

One tiny BERT (irregular sizes, with its tokenizer) serves every test. Opsets below 18 go through the
TorchScript-based engine (well under a second each); only the opset-18 and external-data tests pay for a
torch.export capture.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core.architectures.encoders import BertOnnxConfig
from exporter_core.errors import ExportError, InvalidArgumentError, OpsetError, UserError
from exporter_onnx.engines import DYNAMO_MIN_OPSET, TORCHSCRIPT_MAX_OPSET, choose_engine

_BERT_SIZES = {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 6, "intermediate_size": 61}


class _Bert:
    """The shared tiny BERT: model, tokenizer and the sizes it was built with."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def config(self, cls: type = BertOnnxConfig) -> BertOnnxConfig:
        """A fresh export config (tests patch theirs)."""
        return cls.from_model_config(self.model.config, task="default")


@pytest.fixture(scope="module")
def bert(tiny_checkpoint: Callable[..., Path]) -> _Bert:
    """A tiny BERT base model (hidden 48, 3 layers, 6 heads) and its tokenizer, loaded as the pipeline loads them."""
    from exporter_core import loading

    folder = tiny_checkpoint("bert", "default", with_tokenizer=True, **_BERT_SIZES)
    model = loading.load_model(folder, "default", BertOnnxConfig)
    return _Bert(model, loading.load_preprocessor(folder))


def _check_file(path: Path) -> Any:
    """Run the full onnx checker (with shape inference) on a written file and return it without its weights."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    return onnx.load(str(path), load_external_data=False)


def _default_domain_opsets(model: Any) -> list[int]:
    return [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]


def _dims(values: Any) -> dict[str, list[int | str]]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _validate(bert: _Bert, config: BertOnnxConfig, path: Path) -> Any:
    from exporter_onnx.runtime import OnnxRuntimeRunner
    from exporter_validate.compare import validate_outputs

    report = validate_outputs(
        config, bert.model, OnnxRuntimeRunner(path), preprocessor=bert.tokenizer, log=lambda _: None
    )
    assert report.reference_inputs["input_ids"] == [3, 9]
    assert report.passed, "\n".join(report.log_lines())
    return report


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".exporter-"))


# -- engines and refusals (nothing exported) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opset", "engine", "chosen"),
    [
        (14, "auto", "torchscript"),
        (17, "auto", "torchscript"),
        (18, "auto", "dynamo"),
        (23, "auto", "dynamo"),
        (21, "auto", "dynamo"),
        (18, "dynamo", "dynamo"),
        (14, "torchscript", "torchscript"),
        (18, "torchscript", "torchscript"),
        (TORCHSCRIPT_MAX_OPSET, "torchscript", "torchscript"),
    ],
)
def test_choose_engine_picks_an_engine_that_can_write_the_opset(opset: int, engine: str, chosen: str) -> None:
    assert choose_engine(opset, engine) == chosen


@pytest.mark.parametrize(
    ("opset", "engine", "chosen"),
    [
        (17, "auto", "torchscript"),
        (18, "auto", "torchscript"),
        (TORCHSCRIPT_MAX_OPSET, "auto", "torchscript"),
        (TORCHSCRIPT_MAX_OPSET + 1, "auto", "dynamo"),
        (18, "dynamo", "dynamo"),
    ],
)
def test_auto_traces_traceable_parts_up_to_the_torchscript_engine_s_opset(opset: int, engine: str, chosen: str) -> None:
    """A part without a cache is traced (seconds faster); an explicit engine is always honoured."""
    assert choose_engine(opset, engine, traceable=True) == chosen


def test_auto_captures_traceable_parts_with_dynamo_when_torch_lost_the_torchscript_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter_onnx import engines

    monkeypatch.setattr(engines, "torchscript_engine_available", lambda: False)
    assert choose_engine(18, "auto", traceable=True) == "dynamo"
    assert choose_engine(17, "auto", traceable=True) == "torchscript"  # the only engine for opsets below 18


def test_only_architectures_without_a_cache_and_parts_with_token_inputs_are_traceable() -> None:
    import torch
    from transformers import AutoConfig

    from exporter_core.architectures.decoders import GPT2OnnxConfig
    from exporter_onnx.engines import is_traceable

    tokens = {"input_ids": torch.zeros(2, 8, dtype=torch.long), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=2)
    # A decoder's masks and rotary tables are sized from the traced length: captured, even without past.
    assert not is_traceable(GPT2OnnxConfig(config, task="causal-lm"), tokens)
    assert not is_traceable(GPT2OnnxConfig.with_past(config, task="causal-lm"), tokens)
    bert = BertOnnxConfig(AutoConfig.for_model("bert", hidden_size=32, num_attention_heads=2))
    assert is_traceable(bert, tokens)
    # An image's or a sound's size is the model's to fix, which only the dynamo engine states in the graph.
    assert not is_traceable(bert, {**tokens, "pixel_values": torch.zeros(2, 3, 8, 8)})
    # An encoder-decoder's encoder part has token inputs and no cache, but its architecture has a decoder.
    from exporter_core.architectures.seq2seq import T5OnnxConfig

    t5 = AutoConfig.for_model("t5", d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64)
    encoder = T5OnnxConfig.with_past(t5, task="seq2seq-lm").encoder_config()
    assert not is_traceable(encoder, tokens)


def test_the_legacy_export_keeps_torch_export_from_opset_18(
    bert: _Bert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export()` (the old transformers.onnx API) validates nothing itself: no trace chosen for speed there."""
    from exporter_onnx import convert

    captured: list[int] = []
    real = convert._capture_dynamo

    def recording(*args: Any, **kwargs: Any) -> Any:
        captured.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(convert, "_capture_dynamo", recording)
    convert.export(bert.tokenizer, bert.model, bert.config(), 18, tmp_path / "model.onnx")
    assert captured == [18]


def test_a_part_written_as_external_data_is_captured_not_traced(
    bert: _Bert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past 2 GiB the TorchScript engine writes a file per tensor; the dynamo engine one ``model.onnx.data``."""
    from exporter_onnx.convert import export_onnx

    config = bert.config()
    monkeypatch.setattr(config, "use_external_data_format", lambda num_parameters: True)
    info = export_onnx(bert.model, config, tmp_path / "model.onnx", opset=18, preprocessor=bert.tokenizer)
    assert info.engine == "dynamo" and info.files == ["model.onnx", "model.onnx.data"]


def test_auto_falls_back_to_dynamo_when_the_trace_fails(
    bert: _Bert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TorchScript engine picked for speed may refuse a model; the dynamo engine then exports it."""
    from exporter_onnx import convert

    def refusing(*args: Any, **kwargs: Any) -> None:
        (tmp_path / "model.onnx").write_bytes(b"half-written")
        raise RuntimeError("simulated tracer failure\nsecond line")

    monkeypatch.setattr(convert, "_export_torchscript", refusing)
    info = convert.export_onnx(
        bert.model, bert.config(), tmp_path / "model.onnx", opset=18, preprocessor=bert.tokenizer
    )
    assert (info.engine, info.fallback_reason) == ("dynamo", "RuntimeError: simulated tracer failure")
    _validate(bert, bert.config(), info.path)
    with pytest.raises(ExportError, match="torchscript engine could not export"):
        convert.export_onnx(bert.model, bert.config(), tmp_path / "again.onnx", opset=18, engine="torchscript")


def test_choose_engine_refuses_pairs_no_engine_can_write() -> None:
    with pytest.raises(OpsetError, match=f"dynamo engine writes opset {DYNAMO_MIN_OPSET} or higher"):
        choose_engine(DYNAMO_MIN_OPSET - 1, "dynamo")
    with pytest.raises(OpsetError, match=f"torchscript engine writes opset {TORCHSCRIPT_MAX_OPSET} at most"):
        choose_engine(TORCHSCRIPT_MAX_OPSET + 1, "torchscript")
    with pytest.raises(InvalidArgumentError, match="unknown engine 'tensorrt'"):
        choose_engine(18, "tensorrt")


def _refusals() -> list[Any]:
    from exporter_onnx.engines import max_opset

    return [
        pytest.param(13, "auto", "needs at least 14 .*; pass (--opset |opset=)14 or higher", id="below-minimum"),
        pytest.param(11, "torchscript", "needs at least 14", id="below-minimum-torchscript"),
        pytest.param(
            max_opset() + 1, "auto", f"support \\({max_opset()}\\); pass (--opset |opset=){max_opset()}", id="above-max"
        ),
        pytest.param(14, "dynamo", "dynamo engine writes opset 18 or higher", id="dynamo-at-14"),
        pytest.param(21, "torchscript", "torchscript engine writes opset 20 at most", id="torchscript-at-21"),
    ]


@pytest.mark.parametrize(("opset", "engine", "message"), _refusals())
def test_an_unusable_opset_is_refused_before_anything_is_written(
    bert: _Bert, tmp_path: Path, opset: int, engine: str, message: str
) -> None:
    from exporter_onnx.convert import export_onnx

    with pytest.raises(OpsetError, match=message) as caught:
        export_onnx(bert.model, bert.config(), tmp_path / "model.onnx", opset=opset, engine=engine)
    assert isinstance(caught.value, UserError) and caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# -- explicit opsets: the file carries exactly the opset asked for, runs, validates ----------------------------------


@pytest.mark.parametrize(
    ("opset", "asked", "engine"),
    [(14, "auto", "torchscript"), (17, "auto", "torchscript"), (18, "auto", "torchscript"), (18, "dynamo", "dynamo")],
)
def test_explicit_opset_is_written_exactly_and_the_file_runs_and_validates(
    bert: _Bert, tmp_path: Path, opset: int, asked: str, engine: str
) -> None:
    from exporter_onnx.convert import export_onnx

    model = bert.model
    model.eval()
    assert model.config.use_cache is True
    config = bert.config()

    info = export_onnx(model, config, tmp_path / "model.onnx", opset=opset, engine=asked, preprocessor=bert.tokenizer)

    assert (info.opset, info.engine, info.fallback_reason) == (opset, engine, None)
    written = _check_file(info.path)
    assert _default_domain_opsets(written) == [opset]
    # Batch and sequence are symbolic in the graph, not the traced 2 x 8.
    assert _dims(written.graph.input) == {name: ["batch", "sequence"] for name in config.inputs}
    assert _dims(written.graph.output) == {"last_hidden_state": ["batch", "sequence", 48]}
    assert info.files == ["model.onnx"] and not info.external_data
    # The caller's model is left as it was: eval mode everywhere (the TorchScript engine restores "training" on
    # the module it is given, recursively), and the config values the export overrode put back.
    assert not any(module.training for module in model.modules())
    assert model.config.use_cache is True
    _validate(bert, config, info.path)


def test_the_caller_s_model_and_config_values_are_restored_after_export(bert: _Bert, tmp_path: Path) -> None:
    """A model in training mode stays in training mode, but is exported (and validated) in eval mode."""
    from exporter_onnx.convert import export_onnx

    class _Overriding(BertOnnxConfig):
        @property
        def values_override(self) -> Mapping[str, Any]:
            return {"use_cache": False, "exporter_test_flag": True}

    model = bert.model
    config = bert.config(_Overriding)
    seen: dict[str, Any] = {}
    original_forward = type(model).forward

    def spying_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(
            training=self.training,
            use_cache=self.config.use_cache,
            flag=getattr(self.config, "exporter_test_flag", None),
        )
        return original_forward(self, *args, **kwargs)

    model.train()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(model), "forward", spying_forward)
            info = export_onnx(model, config, tmp_path / "model.onnx", opset=14, preprocessor=bert.tokenizer)
        assert seen == {"training": False, "use_cache": False, "flag": True}
        assert model.training and all(module.training for module in model.modules())
        assert model.config.use_cache is True
        assert not hasattr(model.config, "exporter_test_flag")
    finally:
        model.eval()
    _validate(bert, bert.config(), info.path)


# -- the old API: transformers.onnx.export(preprocessor, model, config, opset, output) --------------------------------


def test_old_export_api_returns_input_names_in_forward_order_and_output_names(bert: _Bert, tmp_path: Path) -> None:
    from exporter_onnx.convert import export

    output = tmp_path / "onnx" / "model.onnx"
    inputs, outputs = export(bert.tokenizer, bert.model, bert.config(), 14, output)

    forward_order = [p for p in inspect.signature(bert.model.forward).parameters if p in inputs]
    assert inputs == forward_order == ["input_ids", "attention_mask", "token_type_ids"]
    assert outputs == ["last_hidden_state"]
    assert sorted(p.name for p in output.parent.iterdir()) == ["model.onnx"]
    assert _default_domain_opsets(_check_file(output)) == [14]
    _validate(bert, bert.config(), output)
    # The old keyword: a tokenizer passed as `tokenizer=` instead of the preprocessor.
    again = tmp_path / "again.onnx"
    assert export(None, bert.model, bert.config(), 14, again, tokenizer=bert.tokenizer) == (inputs, outputs)
    assert _leftovers(tmp_path) == [] and again.is_file()


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_old_export_api_leaves_nothing_behind_when_the_export_fails(
    bert: _Bert, tmp_path: Path, failure: type[BaseException]
) -> None:
    """A crash (or Ctrl-C) after the file is written but before it is committed leaves the previous file as it was."""
    import onnx

    from exporter_onnx.convert import export

    previous = tmp_path / "model.onnx"
    previous.write_bytes(b"previous model")

    def failing_check(*args: Any, **kwargs: Any) -> None:
        raise failure("simulated failure during the export")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx.checker, "check_model", failing_check)
        with pytest.raises(failure, match="simulated failure"):
            export(bert.tokenizer, bert.model, bert.config(), 14, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert previous.read_bytes() == b"previous model"
    assert not bert.model.training


# -- external data -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("opset", "engine"), [(14, "torchscript"), (18, "dynamo")])
def test_large_models_are_written_with_external_data_that_loads_and_validates(
    bert: _Bert, tmp_path: Path, opset: int, engine: str
) -> None:
    """Forcing the 2 GiB rule (the config's `use_external_data_format`) moves the weights out of model.onnx."""
    import onnx

    from exporter_onnx.convert import export

    config = bert.config()
    asked: list[int] = []

    def always_external(num_parameters: int) -> bool:
        asked.append(num_parameters)
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "use_external_data_format", always_external)
        output = tmp_path / "out" / "model.onnx"
        export(bert.tokenizer, bert.model, config, opset, output)

    assert asked == [sum(p.numel() for p in bert.model.parameters())]
    files = sorted(p.name for p in output.parent.iterdir())
    assert files == ["model.onnx", "model.onnx.data"]
    written = _check_file(output)
    assert _default_domain_opsets(written) == [opset]
    external = [t for t in written.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    weights = sum(p.numel() for p in bert.model.parameters()) * 4
    stored = sum(os.path.getsize(output.parent / n) for n in files if n != "model.onnx")
    # The weights live in the data file(s); model.onnx keeps the graph and small tensors (biases, norms) only.
    assert external and stored >= 0.9 * weights
    inline = [(t.name, int(np.prod(t.dims))) for t in written.graph.initializer if t not in external]
    assert all(size < 1024 for _, size in inline), inline
    assert _leftovers(output.parent) == []
    report = _validate(bert, config, output)
    assert report.worst_difference <= 1e-5


def test_reference_rows_differ_more_than_the_tolerance(bert: _Bert) -> None:
    """The validations above mean something: different rows give outputs far apart compared with the atol."""
    from exporter_validate.compare import reference_outputs

    config = bert.config()
    inputs = config.generate_reference_inputs(bert.tokenizer, framework="np")
    hidden = reference_outputs(bert.model, config, inputs)["last_hidden_state"]
    assert float(np.abs(hidden[0] - hidden[1]).max()) > 1e4 * config.atol_for_validation


def test_dynamo_files_carry_no_stack_traces_or_local_paths(bert: _Bert, tmp_path: Path) -> None:
    """The dynamo engine annotates nodes with Python stack traces (absolute paths of the exporting machine)."""
    import onnx

    from exporter_onnx.convert import _DEBUG_NODE_METADATA, export_onnx

    info = export_onnx(bert.model, bert.config(), tmp_path / "model.onnx", opset=18, engine="dynamo")
    assert info.engine == "dynamo"
    written = onnx.load(str(info.path))
    keys = {p.key for node in written.graph.node for p in node.metadata_props}
    assert not keys & set(_DEBUG_NODE_METADATA)
    raw = info.path.read_bytes()
    for local in {str(Path(__file__).resolve().parents[3]), str(Path(onnx.__file__).parents[1])}:
        assert local.encode() not in raw


# -- the backend: executes whatever plan it is given -------------------------------------------------------------------


def test_backend_options_are_checked_before_anything_is_loaded() -> None:
    from exporter_onnx.backend import OnnxBackend

    no_variant = {"optimize": None, "quantize": None, "dtype": None, "calibration": None, "block_size": None}
    assert OnnxBackend.check_options({}) == {
        "opset": None,
        "engine": "auto",
        **no_variant,
        "device": "cpu",
        "merge": True,
        "stream_weights": None,
    }
    assert OnnxBackend.check_options({"opset": 17, "engine": "torchscript", "merge": False}) == {
        "opset": 17,
        "engine": "torchscript",
        **no_variant,
        "device": "cpu",
        "merge": False,
        "stream_weights": None,
    }
    with pytest.raises(
        InvalidArgumentError,
        match=r"no option 'optimise' \(did you mean optimize\?\); its options are: opset, engine, optimize",
    ):
        OnnxBackend.check_options({"optimise": True})
    with pytest.raises(InvalidArgumentError, match="opset must be an integer, got '17'"):
        OnnxBackend.check_options({"opset": "17"})
    with pytest.raises(InvalidArgumentError, match="opset must be an integer, got True"):
        OnnxBackend.check_options({"opset": True})
    with pytest.raises(InvalidArgumentError, match="unknown engine 'tensorrt'"):
        OnnxBackend.check_options({"engine": "tensorrt"})
    with pytest.raises(InvalidArgumentError, match="opset must be a positive integer, got 0"):
        OnnxBackend.check_options({"opset": 0})
    with pytest.raises(OpsetError, match="the dynamo engine writes opset 18 or higher"):
        OnnxBackend.check_options({"opset": 14, "engine": "dynamo"})
    with pytest.raises(OpsetError, match="the torchscript engine writes opset 20 at most"):
        OnnxBackend.check_options({"opset": 21, "engine": "torchscript"})
    with pytest.raises(OpsetError, match="newer than the installed onnx/onnxruntime support"):
        OnnxBackend.check_options({"opset": 99})


def test_the_backend_writes_every_part_of_a_plan_and_records_the_traced_shapes(bert: _Bert, tmp_path: Path) -> None:
    """No family or feature is looked at: a plan of two parts (here two views of one BERT) gives two files."""
    from exporter_core.backend import ExportRequest
    from exporter_core.plan import ExportPlan, PlanPart
    from exporter_onnx.backend import OnnxBackend
    from exporter_validate.compare import validate_outputs

    config = bert.config()
    scenarios = config.validation_scenarios(bert.tokenizer)
    plan = ExportPlan(
        "bert",
        "default",
        bert.model,
        [
            PlanPart("model", None, config, bert.model, scenarios),
            PlanPart("again", "second.onnx", config, bert.model, scenarios),
        ],
    )
    request = ExportRequest(plan, tmp_path, "named.onnx", bert.tokenizer, {"opset": 14})
    result = OnnxBackend().export(request)
    assert result.artifacts == ["named.onnx", "second.onnx"]
    assert [(p.name, p.artifact) for p in result.parts] == [("model", "named.onnx"), ("again", "second.onnx")]
    assert result.metadata["files"] == result.artifacts and set(result.metadata["parts"]) == {"model", "again"}
    assert result.metadata["opset"] == 14 and result.metadata["engine"] == "torchscript"
    for exported in result.parts:
        assert exported.export_inputs == {name: [2, 8] for name in config.inputs}, "the traced shapes"
        assert exported.scenarios is None, "ONNX validates at the plan's own scenarios"
        report = validate_outputs(
            config, bert.model, exported.runner, inputs=plan.part(exported.name).scenarios[0].inputs, log=lambda _: None
        )
        assert report.passed and report.reference_inputs["input_ids"] == [3, 9]
