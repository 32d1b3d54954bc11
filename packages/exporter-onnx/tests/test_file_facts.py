"""`exporter_onnx.file_facts.read_facts` against what `onnx.load` parses of the same files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter_onnx.file_facts import FileFacts, read_facts


def _model(opsets: list[tuple[str, int]], inputs: list[str], weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [inputs[0], "weight"], ["projected"]),
            helper.make_node("Identity", ["projected"], ["last_hidden_state"]),
            helper.make_node("Shape", ["projected"], ["shape"]),
        ],
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, weight.shape[0]]) for name in inputs],
        [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [None, weight.shape[1]]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [numpy_helper.from_array(weight, "weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in opsets])


def _parsed(path) -> FileFacts:
    model = onnx.load(str(path), load_external_data=False)
    return FileFacts(
        next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        [i.name for i in model.graph.input],
        [o.name for o in model.graph.output],
        any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer),
    )


@pytest.mark.parametrize(
    ("opsets", "inputs", "external"),
    [
        ([("", 17)], ["input_ids"], False),
        ([("com.microsoft", 1), ("", 20), ("ai.onnx.ml", 3)], ["input_ids", "attention_mask", "ids_ü"], False),
        ([("ai.onnx", 14)], ["x"], True),
        ([("com.microsoft", 1)], ["x"], False),  # no ai.onnx opset at all
    ],
)
def test_facts_match_a_full_parse(tmp_path, opsets, inputs, external):
    # Weights large enough that their bytes hold every wire type's lookalikes, and a 300-byte name (2-byte length).
    weight = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
    model = _model(opsets, inputs, weight)
    model.graph.doc_string = "d" * 300
    path = tmp_path / "model.onnx"
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    facts = read_facts(path)
    assert facts == _parsed(path)
    assert facts.inputs == inputs and facts.outputs == ["last_hidden_state", "shape"]
    assert facts.external_data is external


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(_model([("", 17)], ["x"], np.ones((4, 4), np.float32)), str(path))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="malformed protobuf"):
        read_facts(path)


@pytest.mark.parametrize("cut", [1, 2, 7, 100, 1000, "all"])
def test_a_file_cut_inside_a_field_is_refused_with_value_error(tmp_path, cut):
    # (a file cut exactly between two fields reads as a shorter model: the caller checks the opset it finds)
    path = tmp_path / "model.onnx"
    onnx.save_model(_model([("", 17)], ["x"], np.ones((16, 16), np.float32)), str(path))
    path.write_bytes(b"" if cut == "all" else path.read_bytes()[:-cut])
    with pytest.raises(ValueError, match="malformed protobuf"):
        read_facts(path)
