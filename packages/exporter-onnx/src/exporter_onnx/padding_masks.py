"""Padding masks rewritten into the form onnxruntime's attention fusion matches (``--optimize O2|O3``).

Transformers 5 builds the additive attention mask with masking_utils (And / GatherND / Where over the 2-D
``attention_mask``), a subgraph onnxruntime's BERT attention fusion does not recognise. `rewrite_padding_masks`
finds each additive Softmax operand that no weight reaches, runs it alone on probe masks (right and left padding,
a hole, a row masking every key) and, only where it equals ``where(mask, 0, lowest)`` for all of them, replaces it
with that classic form; the graph computes what it computed whether or not the fusion then applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["rewrite_padding_masks"]


#: Operators that apply weights: an additive Softmax operand that one of them computes is not a mask.
_WEIGHT_OPS = frozenset({"MatMul", "Gemm", "Conv", "Einsum", "MatMulInteger", "MatMulNBits", "Attention"})
#: (batch, sequence) shapes and rows of the probe masks: right and left padding, a hole, a row that masks every key.
_PROBE_MASKS = (
    [[1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1, 1, 1]],
    [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
    [[1, 1, 1]],
)


def _ancestors(tensor: str, producers: Mapping[str, onnx.NodeProto]) -> list[onnx.NodeProto]:
    """The nodes `tensor` is computed by, in no particular order."""
    seen: set[int] = set()
    found: list[onnx.NodeProto] = []
    pending = [tensor]
    while pending:
        node = producers.get(pending.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        pending.extend(name for name in node.input if name)
    return found


def _padding_mask_value(
    model: onnx.ModelProto, tensor: str, nodes: list[onnx.NodeProto], mask_input: str
) -> float | None:
    """The masked value when `tensor` equals ``where(mask[:, None, None, :] != 0, 0, value)`` (broadcast to its
    shape) at every probe mask, `mask_input` being that mask; None when it does not, or cannot be run alone."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if any(
        attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in nodes
        for attribute in n.attribute
    ):
        return None
    used = {name for node in nodes for name in node.input}
    inputs = [i for i in model.graph.input if i.name in used]
    if mask_input not in {i.name for i in inputs} or any(len(i.type.tensor_type.shape.dim) != 2 for i in inputs):
        return None
    order = {id(node) for node in nodes}
    graph = helper.make_graph(
        [node for node in model.graph.node if id(node) in order],
        "padding_mask_probe",
        inputs,
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None)],
        [t for t in model.graph.initializer if t.name in used],
    )
    probe = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    rng = np.random.default_rng(0)
    values: set[float] = set()
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        for rows in _PROBE_MASKS:
            mask = np.asarray(rows, dtype=np.int64)
            feeds = {
                i.name: (mask if i.name == mask_input else rng.integers(0, 2, mask.shape)).astype(
                    helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
                )
                for i in inputs
            }
            (out,) = session.run(None, feeds)
            batch, length = mask.shape
            if (
                out.ndim != 4
                or out.shape[0] != batch
                or out.shape[1] != 1
                or out.shape[2:] not in ((1, length), (length, length))
            ):
                return None
            if not mask.all():
                values.add(float(out.min()))
            expected = np.where(mask[:, None, None, :] != 0, np.float32(0), np.float32(min(values or {0.0})))
            if not np.array_equal(out, np.broadcast_to(expected, out.shape)):
                return None
    except Exception:  # onnxruntime raises its own types: a subgraph that cannot run alone is not rewritten
        return None
    if len(values) != 1:
        return None
    value = values.pop()
    return value if np.isfinite(value) and value <= -1e4 else None


def rewrite_padding_masks(model: onnx.ModelProto, mask_input: str = "attention_mask") -> int:
    """Give onnxruntime's BERT attention fusion the padding masks in a form it matches; return how many were rewritten.

    Transformers 5 builds eager attention's additive mask from the 2-D attention mask through masking_utils (index
    ranges, And, GatherND, Where: 0 where a key is attended, the dtype's lowest value where not), a subgraph the
    fusion does not match, so ``--optimize O2`` left every attention unfused. Each additive operand of a Softmax
    that no weight reaches is run alone on probe masks (`_PROBE_MASKS`); where it equals ``where(mask, 0, lowest)``
    at every probe, the Adds take instead the same values computed as
    ``Where(Cast(1 - Expand(mask[:, None, None, :]), bool), lowest, 0)``, the form of the masks of Transformers 4's
    SDPA exports that the fusion knows. (The classic ``(1 - mask) * lowest`` form is not matched here: the fusion
    takes the Add's first Mul parent as the mask, and ours is the attention scale's Mul.) The values are the same,
    so the graph computes what it computed whether or not the fusion then applies.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    mask = next((i for i in model.graph.input if i.name == mask_input), None)
    if mask is None or not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in model.opset_import):
        return 0
    producers = {output: node for node in model.graph.node for output in node.output}
    adds = [
        producers[node.input[0]]
        for node in model.graph.node
        if node.op_type == "Softmax" and node.input[0] in producers and producers[node.input[0]].op_type == "Add"
    ]
    masks: dict[str, float] = {}
    rejected: set[str] = set()
    for add in adds:
        for name in add.input:
            if name in masks or name in rejected:
                continue
            nodes = _ancestors(name, producers)
            value = None
            if nodes and not any(node.op_type in _WEIGHT_OPS for node in nodes):
                value = _padding_mask_value(model, name, nodes, mask_input)
            if value is None:
                rejected.add(name)
            else:
                masks[name] = value
    if not masks:
        return 0
    dtype = helper.tensor_dtype_to_np_dtype(mask.type.tensor_type.elem_type)
    prefix = "exporter_padding_mask"
    new_nodes: list[onnx.NodeProto] = []
    constants = {
        f"{prefix}_axis_1": np.array([1], np.int64),
        f"{prefix}_axis_2": np.array([2], np.int64),
        f"{prefix}_shape": np.array([1], np.int64),
        f"{prefix}_one": np.array(1, dtype),
        f"{prefix}_zero": np.array(0, np.float32),
    }
    new_nodes += [
        helper.make_node("Unsqueeze", [mask_input, f"{prefix}_axis_1"], [f"{prefix}_rows"]),
        helper.make_node("Unsqueeze", [f"{prefix}_rows", f"{prefix}_axis_2"], [f"{prefix}_keys"]),
        helper.make_node("Expand", [f"{prefix}_keys", f"{prefix}_shape"], [f"{prefix}_expanded"]),
        helper.make_node("Sub", [f"{prefix}_one", f"{prefix}_expanded"], [f"{prefix}_inverted"]),
        helper.make_node("Cast", [f"{prefix}_inverted"], [f"{prefix}_masked"], to=TensorProto.BOOL),
    ]
    replacement: dict[str, str] = {}
    for index, value in enumerate(sorted(set(masks.values()))):
        constants[f"{prefix}_value_{index}"] = np.array(value, np.float32)
        output = f"{prefix}_{index}"
        new_nodes.append(
            helper.make_node("Where", [f"{prefix}_masked", f"{prefix}_value_{index}", f"{prefix}_zero"], [output])
        )
        replacement.update({name: output for name, v in masks.items() if v == value})
    model.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in constants.items())
    for position, node in enumerate(new_nodes):
        node.name = node.output[0]
        model.graph.node.insert(position, node)
    for add in adds:
        for position, name in enumerate(add.input):
            if name in replacement:
                add.input[position] = replacement[name]
    _remove_dead_nodes(model)
    return len(masks)


def _remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drop the nodes whose outputs nothing reads (the old mask subgraphs)."""
    while True:
        read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
        dead = [node for node in model.graph.node if not any(output in read for output in node.output)]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)
