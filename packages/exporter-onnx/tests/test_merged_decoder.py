"""One decoder file for both steps of an encoder-decoder with past (`exporter_onnx.merge`), and ``--no-merge``.

On a tiny BART (``seq2seq-lm-with-past``, the TorchScript-based engine of opset 17, fast here), exported once merged
(the default) and once with ``merge=False``:

- the merged export is two ONNX files, every scenario of both decoder parts runs the merged file (each through its
  branch) and passes, generation parity passes over it, and the report's metadata names the file and the parts;
- its weights are stored once: the merged file holds the weights of one decoder, not of two;
- fed by hand as the user guide says (``use_cache_branch``, an empty past for the first step), the merged file
  returns what the two files of ``--no-merge`` return;
- ``--no-merge`` writes the three files;
- a merge with its branches swapped fails validation, every decoder scenario and the generation parity.

The matrix tier merges the other families' decoders (T5, Whisper: no encoder mask, speech inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core.architectures.seq2seq import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE
from exporter_core.errors import ValidationError

FEATURE = "seq2seq-lm-with-past"
MERGED_FILE = "decoder_model_merged.onnx"
DECODER_PARTS = ("decoder", "decoder_with_past")


def _export(folder: Path, out: Path, feature: str = FEATURE, **options: Any) -> Any:
    from exporter.pipeline import run_export

    return run_export("onnx", folder, out, feature=feature, options={"opset": 17, **options}, log=lambda _: None)


def _weight_bytes(path: Path) -> int:
    """Bytes of every tensor the ONNX file holds (initializers of every subgraph, constants), weights loaded."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import _get_all_tensors

    return sum(int(numpy_helper.to_array(t).nbytes) for t in _get_all_tensors(onnx.load(str(path))))


@pytest.fixture(scope="module")
def bart_exports(tiny_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tiny_checkpoint("bart", FEATURE, with_tokenizer=False)
    root = tmp_path_factory.mktemp("merged")
    merged, separate = root / "merged", root / "separate"
    return {
        "checkpoint": folder,
        "merged": (merged, _export(folder, merged)),
        "separate": (separate, _export(folder, separate, merge=False)),
    }


def test_merged_export_is_validated_through_both_branches(
    bart_exports: dict[str, Any], record_difference: Callable[..., float]
) -> None:
    out, report = bart_exports["merged"]
    assert report.passed, report.failures
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".onnx") == [MERGED_FILE, ENCODER_FILE]
    assert not (out / DECODER_FILE).exists() and not (out / DECODER_WITH_PAST_FILE).exists()
    merged = report.metadata["merged"]
    assert merged["file"] == MERGED_FILE and merged["parts"] == list(DECODER_PARTS)
    assert merged["passed_through"] == [f"present.{i}.encoder.{kv}" for i in range(2) for kv in ("key", "value")]
    assert {report.metadata["parts"][name]["merged_into"] for name in DECODER_PARTS} == {MERGED_FILE}

    scenarios: dict[str, list[Any]] = {name: [] for name in DECODER_PARTS}
    for part in report.parts:
        record_difference(f"bart:{FEATURE} merged [{part.part}]", part, arch="bart")
        name = part.part.split(" (")[0]
        if name in scenarios:
            assert part.artifact == MERGED_FILE and part.passed
            scenarios[name].append(part)
    assert len(scenarios["decoder"]) == 2 and len(scenarios["decoder_with_past"]) == 4
    past_lengths = {p.reference_inputs["past_key_values.0.decoder.key"][2] for p in scenarios["decoder_with_past"]}
    assert past_lengths == {0, 1, 4, 23}
    assert all("encoder_hidden_states" in p.reference_inputs for p in scenarios["decoder"])
    worst = max(p.worst_difference for p in report.parts)
    assert worst < 1e-5, worst
    (parity,) = report.checks
    assert parity.name == "generation parity" and parity.passed, parity.detail
    assert np.shape(parity.data["exported_tokens"]) == (2, 17), "16 new tokens after the start token"


def test_merged_file_stores_the_decoder_weights_once(bart_exports: dict[str, Any]) -> None:
    out, _ = bart_exports["merged"]
    separate, _ = bart_exports["separate"]
    first, later = _weight_bytes(separate / DECODER_FILE), _weight_bytes(separate / DECODER_WITH_PAST_FILE)
    merged = _weight_bytes(out / MERGED_FILE)
    external = (out / f"{MERGED_FILE}.data").stat().st_size
    # The first step holds every decoder weight (the later one lacks the cross-attention projections); the merged
    # file holds those once, plus at most a few small constants of the later step.
    assert first > later > 0.5 * first
    assert first <= merged <= 1.02 * first, (merged, first, later)
    assert 0.9 * first <= external <= first, (external, first)
    assert merged < 0.6 * (first + later)


def test_merged_file_fed_by_hand_returns_what_the_two_files_return(bart_exports: dict[str, Any]) -> None:
    import onnxruntime as ort

    out, _ = bart_exports["merged"]
    separate, _ = bart_exports["separate"]
    session = ort.InferenceSession(str(out / MERGED_FILE), providers=["CPUExecutionProvider"])
    first = ort.InferenceSession(str(separate / DECODER_FILE), providers=["CPUExecutionProvider"])
    later = ort.InferenceSession(str(separate / DECODER_WITH_PAST_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    batch, encoder_length, heads, head_dim = 2, 6, 4, 8
    ids = rng.integers(3, 99, size=(batch, 2), dtype=np.int64)
    mask = np.ones((batch, encoder_length), dtype=np.int64)
    mask[1, 4:] = 0
    hidden = rng.standard_normal((batch, encoder_length, 32)).astype(np.float32)
    names = [o.name for o in first.get_outputs()]
    expected = dict(
        zip(
            names,
            first.run(None, {"input_ids": ids, "encoder_attention_mask": mask, "encoder_hidden_states": hidden}),
            strict=True,
        )
    )
    # The first step, as the user guide says: an empty self-attention past, cross-attention zeros.
    feed: dict[str, np.ndarray] = {"input_ids": ids, "encoder_attention_mask": mask, "encoder_hidden_states": hidden}
    for i in range(2):
        feed[f"past_key_values.{i}.decoder.key"] = np.zeros((batch, heads, 0, head_dim), np.float32)
        feed[f"past_key_values.{i}.decoder.value"] = np.zeros((batch, heads, 0, head_dim), np.float32)
        feed[f"past_key_values.{i}.encoder.key"] = np.zeros((batch, heads, encoder_length, head_dim), np.float32)
        feed[f"past_key_values.{i}.encoder.value"] = np.zeros((batch, heads, encoder_length, head_dim), np.float32)
    outputs = [o.name for o in session.get_outputs()]
    assert outputs == names, "the merged file returns every present, in the first step's order"
    got = dict(zip(outputs, session.run(None, {**feed, "use_cache_branch": np.array(False)}), strict=True))
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6, err_msg=name)

    # A later step: the presents fed back, one token; the cross-attention past comes back unchanged.
    past = {name.replace("present", "past_key_values"): value for name, value in expected.items() if "present" in name}
    step = {"input_ids": ids[:, :1], "encoder_attention_mask": mask, **past}
    later_names = [o.name for o in later.get_outputs()]
    want = dict(zip(later_names, later.run(None, step), strict=True))
    feed = {**step, "encoder_hidden_states": np.zeros((batch, encoder_length, 32), np.float32)}
    got = dict(zip(outputs, session.run(None, {**feed, "use_cache_branch": np.array(True)}), strict=True))
    for name in later_names:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
    for name in (n for n in outputs if ".encoder." in n):
        assert np.array_equal(got[name], past[name.replace("present", "past_key_values")]), name


def test_no_merge_writes_the_three_files(bart_exports: dict[str, Any]) -> None:
    out, report = bart_exports["separate"]
    assert report.passed, report.failures
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".onnx") == sorted(
        [ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE]
    )
    assert "merged" not in report.metadata
    assert {p.artifact for p in report.parts} == {ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE}


def test_the_cli_option_no_merge(tmp_path: Path) -> None:
    import argparse

    from exporter_onnx.backend import OnnxBackend

    parser = argparse.ArgumentParser()
    OnnxBackend.add_arguments(parser)
    assert OnnxBackend.options_from_arguments(parser.parse_args(["--no-merge"]))["merge"] is False
    assert "merge" not in OnnxBackend.options_from_arguments(parser.parse_args([]))
    assert OnnxBackend.check_options({})["merge"] is True
    with pytest.raises(ValueError, match="merge must be True or False"):
        OnnxBackend.check_options({"merge": "no"})


def test_a_merge_with_its_branches_swapped_fails_validation(
    bart_exports: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter_onnx import merge

    original = merge._switch_node

    def swapped(outputs: Any, *, with_past_branch: Any, no_past_branch: Any) -> Any:
        return original(outputs, with_past_branch=no_past_branch, no_past_branch=with_past_branch)

    monkeypatch.setattr(merge, "_switch_node", swapped)
    with pytest.raises(ValidationError) as caught:
        _export(bart_exports["checkpoint"], tmp_path / "out")
    report = caught.value.report
    assert report is not None
    decoder_parts = [p for p in report.parts if p.artifact == MERGED_FILE]
    assert len(decoder_parts) == 6 and not any(p.passed for p in decoder_parts)
    assert all(p.passed for p in report.parts if p.artifact == ENCODER_FILE)
    (parity,) = report.checks
    assert not parity.passed


def _tiny_decoders(folder: Path, width: int = 4, external: bool = False) -> tuple[Path, Path]:
    """Two hand-written decoder graphs: the first step's nodes out of order (as onnxruntime's float16 converter
    leaves them), one weight under two names, a cross-attention weight the later step lacks; weights of `width` x
    `width`, in external data when `external`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    if width == 4:
        weights = rng.standard_normal((4, 4)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)
    else:  # large: cheap to make, distinct contents
        weights = tuple(
            (np.arange(width * width, dtype=np.float32).reshape(width, width) % (7 + i)) / 7 for i in range(2)
        )
    weight = numpy_helper.from_array(weights[0], "first_weight")
    bias = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "bias")
    cross = numpy_helper.from_array(weights[1], "cross_weight")

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])

    first = helper.make_graph(
        [
            helper.make_node("Add", ["hidden", "bias"], ["logits"]),
            helper.make_node("MatMul", ["input_ids", "first_weight"], ["hidden"]),
            helper.make_node("MatMul", ["encoder_hidden_states", "cross_weight"], ["present.0.encoder.key"]),
            helper.make_node("Relu", ["input_ids"], ["present.0.decoder.key"]),
        ],
        "first",
        [value("input_ids"), value("encoder_hidden_states")],
        [value("logits"), value("present.0.decoder.key"), value("present.0.encoder.key")],
        [weight, bias, cross],
    )
    renamed = numpy_helper.from_array(numpy_helper.to_array(weight), "val_7")
    later = helper.make_graph(
        [
            helper.make_node("MatMul", ["input_ids", "val_7"], ["hidden"]),
            helper.make_node("Mul", ["hidden", "past_key_values.0.encoder.key"], ["mixed"]),
            helper.make_node("Add", ["mixed", "bias"], ["logits"]),
            helper.make_node("Add", ["input_ids", "past_key_values.0.decoder.key"], ["present.0.decoder.key"]),
        ],
        "later",
        [value("input_ids"), value("past_key_values.0.decoder.key"), value("past_key_values.0.encoder.key")],
        [value("logits"), value("present.0.decoder.key")],
        [renamed, bias],
    )
    paths = folder / DECODER_FILE, folder / DECODER_WITH_PAST_FILE
    for graph, path in zip((first, later), paths, strict=True):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(model, str(path), save_as_external_data=external, location=f"{path.name}.data")
    return paths


def test_merge_shares_weights_by_content_and_runs_each_graph(tmp_path: Path) -> None:
    from exporter_onnx.merge import merge_decoders
    from exporter_onnx.runtime import MergedDecoderStep, OnnxRuntimeRunner

    first_path, later_path = _tiny_decoders(tmp_path)
    first, later = OnnxRuntimeRunner(first_path), OnnxRuntimeRunner(later_path)
    info = merge_decoders(first_path, later_path, tmp_path / MERGED_FILE)
    assert not first_path.exists() and not later_path.exists(), "the two sources are replaced by the merged file"
    assert (info.shared_initializers, info.renamed_initializers, info.branch_initializers) == (2, 1, (0, 1))
    assert info.passed_through == ["present.0.encoder.key"]
    assert info.weight_bytes == info.source_weight_bytes - (16 + 4) * 4, "the weight and bias once"

    merged = OnnxRuntimeRunner(tmp_path / MERGED_FILE)
    rng = np.random.default_rng(6)
    ids, hidden = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    step = MergedDecoderStep(merged, use_cache=False)
    assert step.input_names == ["input_ids", "encoder_hidden_states"]
    expected, got = (
        first({"input_ids": ids, "encoder_hidden_states": hidden}),
        step({"input_ids": ids, "encoder_hidden_states": hidden}),
    )
    assert all(np.array_equal(got[name], expected[name]) for name in expected) and set(got) == set(expected)
    past = {
        "past_key_values.0.decoder.key": ids * 2,
        "past_key_values.0.encoder.key": expected["present.0.encoder.key"],
    }
    step = MergedDecoderStep(merged, use_cache=True)
    assert step.input_names == ["input_ids", "past_key_values.0.decoder.key", "past_key_values.0.encoder.key"]
    expected, got = later({"input_ids": ids, **past}), step({"input_ids": ids, **past})
    assert all(np.array_equal(got[name], expected[name]) for name in expected)
    assert np.array_equal(got["present.0.encoder.key"], past["past_key_values.0.encoder.key"])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_merge_of_large_decoders_streams_their_weights(tmp_path: Path) -> None:
    # Two graphs of 64 MiB weights each (one shared under two names, one only in the first step), in external data
    # in another folder: the merge hashes and copies them a chunk at a time, so the process's peak resident memory
    # grows by far less than one weight (loading the graphs with their weights grows it by three or more). Linux
    # only: the peak is reset through /proc/self/clear_refs.
    import json
    import subprocess
    import sys

    import onnx

    sources = tmp_path / "sources"
    sources.mkdir()
    width = 4096
    first_path, later_path = _tiny_decoders(sources, width=width, external=True)
    merged_path = tmp_path / "merged" / MERGED_FILE
    merged_path.parent.mkdir()
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import onnx, onnx.numpy_helper, onnx.external_data_helper\n"
        "from exporter_onnx.merge import merge_decoders\n"
        "def peak_kib():\n"
        "    status = Path('/proc/self/status').read_text().splitlines()\n"
        "    return int(next(line.split()[1] for line in status if line.startswith('VmHWM:')))\n"
        "Path('/proc/self/clear_refs').write_text('5')  # the peak resident set starts again from the current one\n"
        "before = peak_kib()\n"
        "merge_decoders(*(Path(p) for p in sys.argv[1:]))\n"
        "print(json.dumps([before, peak_kib()]))\n"
    )
    expected = {}
    for source in (first_path, later_path):
        for tensor in onnx.load(str(source)).graph.initializer:
            expected[("no_past/" if source == first_path else "with_past/") + tensor.name] = onnx.numpy_helper.to_array(
                tensor
            )
    done = subprocess.run(
        [sys.executable, "-c", code, str(first_path), str(later_path), str(merged_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode and "clear_refs" in done.stderr:
        pytest.skip("this kernel does not let a process reset its peak resident set")
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    weight_kib = width * width * 4 // 1024
    assert after - before < weight_kib / 2, f"peak RSS grew by {after - before} KiB merging {weight_kib} KiB weights"

    assert not any(sources.iterdir()), "the sources and their external data are removed"
    data = merged_path.with_name(f"{merged_path.name}.data")
    assert 2 * weight_kib * 1024 <= data.stat().st_size < 2 * weight_kib * 1024 + 2**20, "each weight stored once"
    merged = onnx.load(str(merged_path))  # every tensor, branches included, read back from the merged data
    branches = [a.g for node in merged.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    got = {t.name: onnx.numpy_helper.to_array(t) for t in merged.graph.initializer}
    got |= {t.name: onnx.numpy_helper.to_array(t) for g in branches for t in g.initializer}
    assert sorted(got) == ["bias", "first_weight", "no_past/cross_weight"]
    for name, values in got.items():
        source = name if "/" in name else "no_past/" + name
        assert np.array_equal(values, expected[source]), name
    assert np.array_equal(got["first_weight"], expected["with_past/val_7"]), "the shared weight is both graphs'"
    structure = onnx.load(str(merged_path), load_external_data=False)
    branches = [a.g for node in structure.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    placed = {}
    for tensor in [*structure.graph.initializer, *(t for g in branches for t in g.initializer)]:
        entries = {e.key: int(e.value) for e in tensor.external_data if e.key in ("offset", "length")}
        placed[tensor.name] = (entries["offset"], entries["length"])
    assert sorted(placed) == ["bias", "first_weight", "no_past/cross_weight"]
    assert all(offset % 65536 == 0 for offset, length in placed.values() if length > 2**20), "large ones aligned"


def test_merge_writes_packed_and_half_precision_weights_as_onnx_stores_them(tmp_path: Path) -> None:
    # Inline int4 (packed two to a byte) and float16 weights of 1 KiB and more move to the merged file's data in
    # their stored form: onnxruntime loads the file and each branch computes what its source graph computes.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from exporter_onnx.merge import merge_decoders
    from exporter_onnx.runtime import MergedDecoderStep, OnnxRuntimeRunner

    width = 64
    rng = np.random.default_rng(7)
    quantized = helper.make_tensor("q", TensorProto.INT4, [width, width], rng.integers(-8, 8, width * width))
    scale = numpy_helper.from_array(np.float32(0.05), "scale")
    half = numpy_helper.from_array(rng.standard_normal(width * 8).astype(np.float16)[:width], "half_bias")
    half_big = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float16), "half_weight")

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])

    # (the dequantized weight is summed, not multiplied: onnxruntime would fuse DequantizeLinear + MatMul into
    # MatMulNBits, which wants its weight inside the branch)
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    shared_nodes = [
        helper.make_node("DequantizeLinear", ["q", "scale"], ["w"]),
        helper.make_node("ReduceSum", ["w", "axes"], ["w_sum"], keepdims=0),
        helper.make_node("Cast", ["half_weight"], ["w2"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["half_bias"], ["b"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["input_ids", "w2"], ["h"]),
        helper.make_node("Add", ["h", "w_sum"], ["h2"]),
        helper.make_node("Add", ["h2", "b"], ["logits"]),
    ]
    first = helper.make_graph(
        [*shared_nodes, helper.make_node("Relu", ["input_ids"], ["present.0.decoder.key"])],
        "first",
        [value("input_ids")],
        [value("logits"), value("present.0.decoder.key")],
        [quantized, scale, half, half_big, axes],
    )
    later = helper.make_graph(
        [
            *shared_nodes,
            helper.make_node("Add", ["input_ids", "past_key_values.0.decoder.key"], ["present.0.decoder.key"]),
        ],
        "later",
        [value("input_ids"), value("past_key_values.0.decoder.key")],
        [value("logits"), value("present.0.decoder.key")],
        [quantized, scale, half, half_big, axes],
    )
    paths = tmp_path / DECODER_FILE, tmp_path / DECODER_WITH_PAST_FILE
    for graph, path in zip((first, later), paths, strict=True):
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    ids = rng.standard_normal((2, width)).astype(np.float32)
    past = {"past_key_values.0.decoder.key": ids * 3}
    expected = {
        False: OnnxRuntimeRunner(paths[0])({"input_ids": ids}),
        True: OnnxRuntimeRunner(paths[1])({"input_ids": ids, **past}),
    }
    info = merge_decoders(*paths, tmp_path / MERGED_FILE)
    assert info.shared_initializers == 5
    assert info.weight_bytes == width * width // 2 + 4 + width * 2 + width * width * 2 + 8
    structure = onnx.load(str(tmp_path / MERGED_FILE), load_external_data=False)
    lengths = {
        t.name: int(next(e.value for e in t.external_data if e.key == "length"))
        for t in structure.graph.initializer
        if t.data_location == TensorProto.EXTERNAL
    }
    assert lengths == {"q": width * width // 2, "half_weight": width * width * 2}, "stored form, packed"
    merged = OnnxRuntimeRunner(tmp_path / MERGED_FILE)
    for use_cache, feeds in ((False, {"input_ids": ids}), (True, {"input_ids": ids, **past})):
        got = MergedDecoderStep(merged, use_cache=use_cache)(feeds)
        assert all(np.array_equal(got[name], expected[use_cache][name]) for name in expected[use_cache])


# -- matrix tier: the other families' decoders merged ------------------------------------------------------------------
@pytest.mark.exporter_matrix
@pytest.mark.parametrize(("model_type", "feature"), [("t5", FEATURE), ("whisper", "speech2seq-lm-with-past")])
def test_other_families_merge(
    model_type: str,
    feature: str,
    tiny_checkpoint: Callable[..., Path],
    tmp_path: Path,
    record_difference: Callable[..., float],
) -> None:
    from exporter_onnx.generation import Seq2SeqOnnxGenerator
    from exporter_onnx.runtime import MergedDecoderStep

    folder = tiny_checkpoint(model_type, feature)
    report = _export(folder, tmp_path / "out", feature=feature)
    assert report.passed, report.failures
    for part in report.parts:
        record_difference(f"{model_type}:{feature} merged [{part.part}]", part, arch=model_type)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".onnx") == [MERGED_FILE, ENCODER_FILE]
    (parity,) = report.checks
    assert parity.passed, parity.detail
    generator = Seq2SeqOnnxGenerator.from_folder(tmp_path / "out")
    assert isinstance(generator.decoder, MergedDecoderStep) and not generator.decoder.use_cache
    assert isinstance(generator.decoder_with_past, MergedDecoderStep) and generator.decoder_with_past.use_cache
    assert "encoder_hidden_states" in generator.decoder.input_names
    assert "encoder_hidden_states" not in generator.decoder_with_past.input_names


@pytest.mark.exporter_matrix
@pytest.mark.parametrize("options", [{"optimize": "O2"}, {"dtype": "fp16"}, {"quantize": "int8"}])
def test_variants_are_merged_after_they_transform_each_step(
    options: dict[str, Any], bart_exports: dict[str, Any], tmp_path: Path
) -> None:
    report = _export(bart_exports["checkpoint"], tmp_path / "out", **options)
    assert report.passed, report.failures
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".onnx") == [MERGED_FILE, ENCODER_FILE]
    assert all(check.passed for check in report.checks), [c.detail for c in report.checks if not c.passed]
    assert {p.artifact for p in report.parts if not p.part.startswith("encoder")} == {MERGED_FILE}
