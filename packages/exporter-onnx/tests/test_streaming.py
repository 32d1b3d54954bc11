"""Streamed weights (`exporter_onnx.streaming`): captured on fake weights, written from the checkpoint's safetensors
one tensor at a time, the file holds the normal path's initializers byte for byte and validates; a checkpoint that
does not hold what the loaded model holds is an error naming the tensor, never a wrong file.

Default tier (about 20 s on two cores): a tiny Llama with tied embeddings (a rotary ``inv_freq`` buffer, one
weight under two names) streamed, compared with the normal export of the same checkpoint and validated at every
scenario of its plan as the backend validates it; a weight missing from the checkpoint (GPT-2); a shard without
the tensor its index names; the rule that decides when to stream. Matrix tier: tied and untied Llama and GPT-2
streamed through the pipeline (validation and generation parity) and compared with the normal export, and a
checkpoint whose values differ from the loaded model's (refused when asked for, else exported the normal way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from exporter_core.errors import CheckpointError, InvalidArgumentError

FEATURE = "causal-lm-with-past"


def _initializers(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every initializer of the ONNX file at `path` (external data read): name -> (dtype, shape, bytes)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {name: (str(a.dtype), tuple(a.shape), a.tobytes()) for name, a in arrays.items()}


def _normal_export(plan: Any, output: Path) -> Path:
    """The plan's main part exported the normal way (as the backend does below the streaming threshold)."""
    from exporter_onnx.convert import export_onnx

    output.mkdir()
    with plan.capture():
        export_onnx(plan.main.module, plan.main.config, output / "model.onnx")
    return output / "model.onnx"


def _assert_same_initializers(streamed: Path, normal: Path) -> None:
    expected = _initializers(normal)
    written = _initializers(streamed)
    assert sorted(written) == sorted(expected)
    differing = [name for name in expected if written[name] != expected[name]]
    assert not differing, f"initializers differ from the normal export: {differing}"


def test_a_streamed_tied_llama_holds_the_normal_initializers_and_validates(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from exporter_onnx.runtime import OnnxRuntimeRunner
    from exporter_onnx.streaming import runner_options
    from exporter_validate import validate_outputs

    model, plan = _loaded(tiny_checkpoint("llama", FEATURE, tie_word_embeddings=True), "llama")
    info = _export_streamed(model, plan, tmp_path / "streamed", forced=True)
    assert info.streamed is not None and info.streamed.streamed > 0 and info.external_data
    _assert_same_initializers(tmp_path / "streamed" / "model.onnx", _normal_export(plan, tmp_path / "normal"))
    # Validated as the backend validates a streamed part: its weights memory-mapped, at every scenario of the plan.
    runner = OnnxRuntimeRunner(tmp_path / "streamed" / "model.onnx", **runner_options(info))
    part = plan.main
    for scenario in part.scenarios:
        reference = scenario.reference if scenario.reference is not None else part.module
        report = validate_outputs(part.config, reference, runner, inputs=scenario.inputs)
        assert report.passed, (scenario.label, report.failures)


@pytest.mark.exporter_matrix
@pytest.mark.parametrize(
    ("model_type", "sizes"),
    [
        pytest.param("llama", {"tie_word_embeddings": True}, id="llama-tied"),
        pytest.param("llama", None, id="llama"),
        pytest.param("gpt2", None, id="gpt2-tied"),
        pytest.param("gpt2", {"tie_word_embeddings": False}, id="gpt2-untied"),
    ],
)
def test_streamed_export_through_the_pipeline_holds_the_normal_initializers_and_validates(
    model_type: str, sizes: dict[str, Any] | None, exported: Callable[..., Any], tmp_path: Path
) -> None:
    streamed = exported(model_type, FEATURE, "onnx", sizes=sizes, stream_weights=True)
    assert streamed.validated, streamed.reason
    # Generation parity ran on the streamed file too (ONNX Runtime reading its weights memory-mapped).
    (parity,) = streamed.report["checks"]
    assert parity["passed"], parity
    summary = streamed.report["metadata"]["streamed_weights"]
    assert summary["reason"] == "asked for"
    assert summary["initializers_from_checkpoint"] > 0 and summary["bytes_from_checkpoint"] > 0
    assert (streamed.output / "model.onnx.data").is_file()
    _, plan = _loaded(streamed.checkpoint, model_type)
    _assert_same_initializers(streamed.output / "model.onnx", _normal_export(plan, tmp_path / "normal"))


def _loaded(folder: Path, model_type: str) -> tuple[Any, Any]:
    """(model loaded as the pipeline loads it, its export plan)."""
    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model_checked

    config_cls = config_class_for(model_type)
    model = load_model_checked(folder, FEATURE, config_cls).model
    return model, config_cls.for_feature(model.config, FEATURE).export_plan(model, None)


def _export_streamed(model: Any, plan: Any, output: Path, forced: bool) -> Any:
    from exporter_onnx.convert import DYNAMO_MIN_OPSET, export_onnx
    from exporter_onnx.streaming import choose_streaming

    weights, _ = choose_streaming(forced or None, model, "auto", None, DYNAMO_MIN_OPSET)
    if weights is None:  # the tiny checkpoint is under the size threshold: stream it as if it were large
        weights, _ = choose_streaming(True, model, "auto", None, DYNAMO_MIN_OPSET)
        weights.forced = forced
    output.mkdir()
    with plan.capture():
        return export_onnx(plan.main.module, plan.main.config, output / "model.onnx", weights=weights)


def _drop_tensor(folder: Path, name: str) -> None:
    """Rewrite the checkpoint without tensor `name` (a new file replaces the old: the loaded model keeps its map)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[name]
    save_file(tensors, str(folder / "rewritten.safetensors"), metadata={"format": "pt"})
    os.replace(folder / "rewritten.safetensors", folder / "model.safetensors")


def test_a_weight_missing_from_the_checkpoint_is_an_error_naming_it(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint("gpt2", FEATURE), folder)
    model, plan = _loaded(folder, "gpt2")
    _drop_tensor(folder, "transformer.h.1.mlp.c_fc.weight")
    with pytest.raises(CheckpointError, match=r"no tensor of their name and shape in the checkpoint .*h\.1\.mlp\.c_fc"):
        _export_streamed(model, plan, tmp_path / "out", forced=True)
    assert not (tmp_path / "out" / "model.onnx").exists(), "no file is written"


@pytest.mark.exporter_matrix
def test_a_checkpoint_that_differs_from_the_loaded_model_is_refused_or_exported_the_normal_way(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    import torch

    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint("gpt2", FEATURE), folder)
    model, plan = _loaded(folder, "gpt2")
    with torch.no_grad():  # as if loading had converted the stored tensor
        model.transformer.h[0].attn.c_proj.bias.add_(1.0)
    with pytest.raises(CheckpointError, match=r"transformer\.h\.0\.attn\.c_proj\.bias.* differs from the loaded"):
        _export_streamed(model, plan, tmp_path / "forced", forced=True)
    # Not asked for: the part is exported from the loaded model, and the report says why it was not streamed.
    info = _export_streamed(model, plan, tmp_path / "auto", forced=False)
    assert info.streamed is None and "differs from the loaded" in (info.stream_fallback or "")
    written = _initializers(tmp_path / "auto" / "model.onnx")
    bias = model.transformer.h[0].attn.c_proj.bias.detach().numpy()
    assert any(shape == bias.shape and data == bias.tobytes() for _, shape, data in written.values())


def test_when_weights_are_streamed() -> None:
    from exporter_onnx.convert import DYNAMO_MIN_OPSET
    from exporter_onnx.streaming import STREAM_MIN_BYTES, check_stream_option, choose_streaming

    assert check_stream_option({}) is None and check_stream_option({"stream_weights": False}) is False
    with pytest.raises(InvalidArgumentError, match="stream_weights must be True, False or None"):
        check_stream_option({"stream_weights": "yes"})
    nowhere = SimpleNamespace(name_or_path="not-a-local-folder")
    assert choose_streaming(None, nowhere, "auto", None, DYNAMO_MIN_OPSET)[0] is None
    assert choose_streaming(False, nowhere, "auto", None, DYNAMO_MIN_OPSET) == (None, "not asked (stream_weights off)")
    with pytest.raises(InvalidArgumentError, match="TorchScript-based engine writes its own files"):
        choose_streaming(True, nowhere, "auto", 17, DYNAMO_MIN_OPSET)
    with pytest.raises(InvalidArgumentError, match="not loaded from a local safetensors checkpoint"):
        choose_streaming(True, nowhere, "dynamo", None, DYNAMO_MIN_OPSET)
    assert STREAM_MIN_BYTES == 1 << 30


def test_a_small_checkpoint_keeps_the_normal_path(tiny_checkpoint: Callable[..., Path]) -> None:
    from exporter_onnx.convert import DYNAMO_MIN_OPSET
    from exporter_onnx.streaming import choose_streaming

    folder = tiny_checkpoint("gpt2", FEATURE)
    weights, reason = choose_streaming(None, SimpleNamespace(name_or_path=str(folder)), "auto", None, DYNAMO_MIN_OPSET)
    assert weights is None and "under the 1 GiB streaming threshold" in reason


def test_a_shard_without_the_tensor_its_index_names_is_an_error_naming_both(tmp_path: Path) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    from exporter_onnx.streaming import CheckpointWeights, checkpoint_shape

    save_file({"held": torch.zeros(2, 3)}, str(tmp_path / "model-00001-of-00001.safetensors"))
    index = {"weight_map": {"held": "model-00001-of-00001.safetensors", "lost": "model-00001-of-00001.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    checkpoint = CheckpointWeights.find(tmp_path)
    assert checkpoint is not None and checkpoint_shape(checkpoint, "held") == [2, 3]
    with pytest.raises(CheckpointError, match=r"model-00001-of-00001\.safetensors does not hold tensor 'lost'"):
        checkpoint_shape(checkpoint, "lost")


def test_a_checkpoint_tensor_is_read_in_the_captured_dtype_and_checked(tmp_path: Path) -> None:
    import onnx_ir as ir
    import torch
    from safetensors.torch import save_file

    from exporter_onnx.streaming import CheckpointWeights, _reader

    save_file({"w": torch.arange(6, dtype=torch.float16).reshape(2, 3) / 4}, str(tmp_path / "model.safetensors"))
    checkpoint = CheckpointWeights.find(tmp_path)
    assert checkpoint is not None
    loaded = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4  # the model holds it in float32
    tensor = _reader(checkpoint, "w", loaded, "model.w", True, torch.float32)()
    assert tensor.dtype == ir.DataType.FLOAT and tensor.numpy().tobytes() == loaded.numpy().tobytes()
    with pytest.raises(CheckpointError, match=r"checkpoint tensor 'w' \(model.safetensors\) differs from the loaded"):
        _reader(checkpoint, "w", loaded + 1, "model.w", True, torch.float32)()


def test_checkpoint_equality_is_bit_for_bit_nan_included() -> None:
    import torch

    from exporter_onnx.streaming import _same_bits

    weights = torch.tensor([1.0, float("nan"), -0.0])
    assert _same_bits(weights, weights.clone()) and not torch.equal(weights, weights.clone())
    assert not _same_bits(weights, torch.tensor([1.0, float("nan"), 0.0]))  # -0.0 is not 0.0 bit for bit
    assert _same_bits(weights.to(torch.bfloat16), weights.to(torch.bfloat16))
    assert not _same_bits(weights, weights.to(torch.float64))


def test_turning_streaming_off_is_spelled_as_its_flag() -> None:
    from exporter_core.errors import option_hint, spelling_flags

    with spelling_flags():
        assert option_hint("stream_weights", False) == "--no-stream-weights"
    assert option_hint("stream_weights", False) == "stream_weights=False"


def test_a_bfloat16_checkpoint_streamed_is_held_as_stored_and_written_as_its_float32_export(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """The reference is held in bfloat16 (no float32 copy of the weights), the graph captured in float32: the file
    holds the initializers of the normal export of the model loaded in float32, and validates."""
    import torch
    from transformers import AutoModelForCausalLM

    from exporter.pipeline import run_export
    from exporter_onnx.backend import OnnxBackend

    folder = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint("llama", FEATURE)), dtype=torch.float32).to(
        torch.bfloat16
    ).save_pretrained(str(folder))
    options = OnnxBackend.check_options({"stream_weights": True})
    assert OnnxBackend.holds_checkpoint_dtype(options, folder)
    assert not OnnxBackend.holds_checkpoint_dtype(OnnxBackend.check_options({"stream_weights": False}), folder)
    assert not OnnxBackend.holds_checkpoint_dtype(OnnxBackend.check_options({}), folder), "under the threshold"
    lines: list[str] = []
    report = run_export(
        "onnx", folder, tmp_path / "out", feature=FEATURE, options={"stream_weights": True}, log=lines.append
    )
    assert report.passed and all(check.passed for check in report.checks)
    dtype = report.metadata["dtype"]
    assert (
        dtype["checkpoint"] == "bfloat16" and dtype["exported"] == "fp32" and "module by module" in dtype["reference"]
    )
    assert any("bfloat16 weights kept as stored" in line for line in lines)
    _, plan = _loaded(folder, "llama")  # loaded in float32, as without streaming
    _assert_same_initializers(tmp_path / "out" / "model.onnx", _normal_export(plan, tmp_path / "normal"))


def test_a_streamed_weights_transpose_is_computed_only_when_written() -> None:
    """onnxscript's optimizer folds ``Transpose(W)`` of any size into a tensor held in memory until the file is
    written (a 7B Llama's projections: 27 GB); `transpose_lazily` folds it into a lazy initializer instead."""
    import numpy as np
    import onnx_ir as ir
    import onnxscript.optimizer

    from exporter_onnx.streaming import transpose_lazily

    weight = np.random.default_rng(0).normal(size=(96, 512)).astype(np.float32)  # above the folding size limits

    def model() -> Any:
        x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2, 512]))
        w = ir.Value(
            name="w",
            type=ir.TensorType(ir.DataType.FLOAT),
            shape=ir.Shape([96, 512]),
            const_value=ir.LazyTensor(lambda: ir.Tensor(weight), dtype=ir.DataType.FLOAT, shape=ir.Shape([96, 512])),
        )
        transpose = ir.node("Transpose", [w], attributes={"perm": [1, 0]})
        matmul = ir.node("MatMul", [x, transpose.outputs[0]])
        matmul.outputs[0].name = "y"
        graph = ir.Graph([x], matmul.outputs, nodes=[transpose, matmul], initializers=[w], opset_imports={"": 18})
        return ir.Model(graph, ir_version=10)

    plain = model()
    onnxscript.optimizer.optimize(plain)
    (held,) = plain.graph.initializers.values()
    assert not isinstance(held.const_value, ir.LazyTensor), "the optimizer alone holds the transposed weight"
    lazy = model()
    assert transpose_lazily(lazy) == 1
    onnxscript.optimizer.optimize(lazy)
    assert [n.op_type for n in lazy.graph] == ["MatMul"]
    (folded,) = lazy.graph.initializers.values()
    assert isinstance(folded.const_value, ir.LazyTensor) and folded.name == held.name
    assert np.array_equal(folded.const_value.numpy(), held.const_value.numpy())
    assert np.array_equal(folded.const_value.numpy(), weight.T)


@pytest.mark.exporter_matrix
@pytest.mark.parametrize(
    ("model_type", "feature"), [("t5", "seq2seq-lm-with-past"), ("bart", "seq2seq-lm-with-past")], ids=["t5", "bart"]
)
def test_a_held_encoder_decoder_streams_every_part_and_validates(
    model_type: str, feature: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Each part calls its own submodule (the encoder, the decoder), never the whole model: each must compute in
    float32 and be captured in float32 (T5 also casts its feed-forward input to ``wo.weight.dtype``)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from exporter.pipeline import run_export

    folder = tmp_path / "bf16"
    AutoModelForSeq2SeqLM.from_pretrained(str(tiny_checkpoint(model_type, feature)), dtype=torch.float32).to(
        torch.bfloat16
    ).save_pretrained(str(folder))
    report = run_export(
        "onnx", folder, tmp_path / "out", feature=feature, options={"stream_weights": True}, log=lambda _line: None
    )
    assert report.passed and report.checks and all(check.passed for check in report.checks)
    assert "module by module" in report.metadata["dtype"]["reference"]
    assert len(report.parts) >= 3  # the encoder and both decoder steps, each validated


def _bf16_copy(checkpoint: Path, folder: Path, model_cls: Any = None) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    cls = model_cls or AutoModelForCausalLM
    cls.from_pretrained(str(checkpoint), dtype=torch.float32).to(torch.bfloat16).save_pretrained(str(folder))
    return folder


def test_a_held_model_the_engine_would_not_stream_is_refused_not_captured_in_half(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holding is decided from the files before loading; an architecture whose default opset takes the
    TorchScript-based engine is not held, and a held model that reaches a capture without streamed weights is an
    error naming the way out, never a graph traced through the widening hooks."""
    from exporter_core.errors import ExportError
    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model_checked
    from exporter_onnx import streaming
    from exporter_onnx.backend import OnnxBackend
    from exporter_onnx.convert import export_onnx

    folder = _bf16_copy(tiny_checkpoint("llama", FEATURE), tmp_path / "bf16")
    monkeypatch.setattr(streaming, "STREAM_MIN_BYTES", 0)  # as if the tiny checkpoint were large
    options = OnnxBackend.check_options({})
    llama = config_class_for("llama")
    assert OnnxBackend.holds_checkpoint_dtype(options, folder, llama)

    class Opset17(llama):  # type: ignore[misc, valid-type]
        default_opset = 17

    assert not OnnxBackend.holds_checkpoint_dtype(options, folder, Opset17)
    assert not OnnxBackend.holds_checkpoint_dtype(OnnxBackend.check_options({"opset": 17}), folder, llama)
    model = load_model_checked(folder, FEATURE, llama, hold_half=True).model
    plan = llama.for_feature(model.config, FEATURE).export_plan(model, None)
    with plan.capture(), pytest.raises(ExportError, match=r"held in its checkpoint's bfloat16.*stream_weights=False"):
        export_onnx(plan.main.module, plan.main.config, tmp_path / "out" / "model.onnx", opset=17)


def test_a_checkpoint_mixing_float_dtypes_is_not_held(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """Transformers would round its float32 tensors to the half dtype: the model is loaded in float32 instead."""
    import torch
    from safetensors.torch import load_file, save_file

    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model_checked

    folder = _bf16_copy(tiny_checkpoint("llama", FEATURE), tmp_path / "mixed")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"].float() + 1e-3  # not a bfloat16 value
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_model_checked(folder, FEATURE, config_class_for("llama"), hold_half=True)
    assert loaded.held_dtype is None and loaded.checkpoint_dtype == "bfloat16"
    assert loaded.model.model.norm.weight.dtype == torch.float32
    assert torch.equal(loaded.model.model.norm.weight, tensors["model.norm.weight"])


@pytest.mark.exporter_matrix
def test_a_held_sentence_embedding_model_streams_and_validates(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """The sentence-embedding wrapper has no ``name_or_path`` and prefixes its weights with ``transformer.``."""
    import shutil as _shutil

    from transformers import AutoModel

    from exporter.pipeline import run_export

    source = tiny_checkpoint("bert", "sentence-embedding")
    folder = _bf16_copy(source, tmp_path / "bf16", AutoModel)
    for extra in source.iterdir():
        if extra.is_file() and not (folder / extra.name).exists() and "safetensors" not in extra.name:
            _shutil.copy(extra, folder / extra.name)
    if (source / "1_Pooling").is_dir():
        _shutil.copytree(source / "1_Pooling", folder / "1_Pooling")
    report = run_export(
        "onnx",
        folder,
        tmp_path / "out",
        feature="sentence-embedding",
        options={"stream_weights": True},
        log=lambda _line: None,
    )
    assert report.passed and "module by module" in report.metadata["dtype"]["reference"]
    assert report.metadata["streamed_weights"]["initializers_from_checkpoint"] > 0
