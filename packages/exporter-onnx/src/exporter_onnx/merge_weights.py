"""The weights of the decoder graphs `exporter_onnx.merge` joins, handled without holding them in memory.

A graph is read without its external data (`load_structure`); each weight's content is hashed from the bytes ONNX
stores for it (`content`: read from its external file a chunk at a time, or serialised from the inline tensor), and
the merged file's ``<name>.data`` is written by copying those bytes (`save_streaming_weights`). Merging two graphs
of 64 MiB weights grew the peak resident set by 8 MiB this way; loading them with their weights, by 704 MiB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from exporter_core.errors import ExportError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["CHUNK", "Content", "content", "graph_tensors", "load_structure", "save_streaming_weights", "subgraphs"]


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs `node`'s attributes hold (an ``If``'s branches, a ``Loop``'s body)."""
    import onnx

    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


#: What makes two tensors one: (element type, shape, SHA-256 of the values), whatever their names.
Content = tuple[int, tuple[int, ...], str]


def content(tensor: onnx.TensorProto) -> tuple[Content, int]:
    """(the tensor's `Content`, its size in bytes), from the bytes ONNX stores for its values (`stored_bytes`):
    a tensor in external data (its location made absolute by `load_structure`) is hashed from its file, a chunk
    at a time, its values never held in memory; an inline one and an external one of the same values hash alike."""
    digest = hashlib.sha256()
    size = 0
    for chunk in stored_bytes(tensor):
        digest.update(chunk)
        size += len(chunk)
    return (tensor.data_type, tuple(tensor.dims), digest.hexdigest()), size


def stored_bytes(tensor: onnx.TensorProto) -> Iterator[bytes]:
    """The tensor's values as ONNX stores them in ``raw_data`` or external data (little-endian, 4-bit types packed
    two to a byte): read from its external file in chunks, or serialised from the inline tensor (`onnx_ir` packs
    what ``numpy_helper.to_array`` would unpack, a byte per 4-bit value)."""
    from onnx.external_data_helper import uses_external_data

    if uses_external_data(tensor):
        yield from external_chunks(tensor)
    elif tensor.HasField("raw_data"):
        yield tensor.raw_data
    else:
        import onnx_ir as ir

        yield ir.serde.deserialize_tensor(tensor).tobytes()


#: Bytes read at a time from a source's external data (hashing and copying).
CHUNK = 4 * 2**20


def external_entries(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def external_chunks(tensor: onnx.TensorProto) -> Iterator[bytes]:
    """The bytes of an external tensor (absolute location), in chunks of at most `CHUNK`: read with plain file
    reads, not a memory map, so that the pages read stay in the page cache and out of this process's memory."""
    entries = external_entries(tensor)
    if "length" not in entries:
        raise ExportError(
            f"weight {tensor.name!r} is in external data without a length; the decoder graphs cannot be merged "
            "(use --no-merge)"
        )
    offset, length = int(entries.get("offset", 0)), int(entries["length"])
    with open(entries["location"], "rb") as file:
        file.seek(offset)
        while length > 0:
            chunk = file.read(min(CHUNK, length))
            if not chunk:
                raise ExportError(
                    f"the external data of weight {tensor.name!r} ends early in {entries['location']}; "
                    "the decoder graphs cannot be merged (use --no-merge)"
                )
            length -= len(chunk)
            yield chunk


def graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, bool]]:
    """(tensor, whether it is an initializer) for the initializers of `graph` and of its subgraphs, and the
    tensors node attributes hold."""
    import onnx

    for tensor in graph.initializer:
        yield tensor, True
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t, False
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from ((tensor, False) for tensor in attribute.tensors)
        for subgraph in subgraphs(node):
            yield from graph_tensors(subgraph)


def load_structure(path: Path) -> tuple[onnx.ModelProto, set[Path]]:
    """The model at `path` without its external data loaded, each external tensor's location made absolute (the
    two sources and the merged file need not share a folder); and the external-data files it reads. A location
    must name a file inside the model's folder (what ``onnx.load`` also requires): the merge reads those files and
    then deletes them."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent.resolve()
    files: set[Path] = set()
    for tensor, _ in graph_tensors(model.graph):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    location = (folder / entry.value).resolve()
                    if Path(entry.value).is_absolute() or location.parent != folder or not location.is_file():
                        raise ExportError(
                            f"{path.name}: weight {tensor.name!r} has its data in {entry.value!r}, not a file "
                            "beside the model; the decoder graphs cannot be merged (use --no-merge)"
                        )
                    entry.value = str(location)
                    files.add(location)
    for function in model.functions:
        for node in function.node:
            for attribute in node.attribute:
                tensors = [attribute.t] if attribute.type == onnx.AttributeProto.TENSOR else attribute.tensors
                if any(uses_external_data(tensor) for tensor in tensors):
                    raise ExportError(
                        f"{path.name}: function {function.name!r} holds a tensor in external data, which the merge "
                        "does not move; use --no-merge"
                    )
    return model, files


def save_streaming_weights(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` to `path`, every initializer of 1 KiB or more in one ``<name>.data`` file beside it: a tensor
    already in external data is copied there from its source file a chunk at a time, an inline one written there
    from the (small) graph, each as ONNX stores it (`stored_bytes`). Tensors over 1 MiB start at 64 KiB-aligned
    offsets, as `save_with_external_data` lays them out, so that ONNX Runtime can memory-map them. Tensors held by
    node attributes stay inline (as ``onnx.save_model`` leaves them) unless they were external already."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    data_path = path.with_name(f"{path.name}.data")
    moved: list[tuple[onnx.TensorProto, int]] = []  # (tensor, its stored size)
    for tensor, initializer in graph_tensors(model.graph):
        if uses_external_data(tensor):
            if Path(external_entries(tensor)["location"]) == data_path.resolve():
                # Checked before the file is opened for writing, which would empty it.
                raise ExportError(f"a decoder graph's weights are in {data_path.name}, the merged file's own")
            moved.append((tensor, stored_size(tensor)))
        elif initializer and tensor.data_type != onnx.TensorProto.STRING and (size := stored_size(tensor)) >= 1024:
            moved.append((tensor, size))
    offset = 0
    with data_path.open("wb") as data:
        for tensor, size in moved:
            if offset % 65536 and size > 2**20:
                padding = 65536 - offset % 65536
                data.write(b"\0" * padding)
                offset += padding
            start = offset
            for chunk in stored_bytes(tensor):
                data.write(chunk)
                offset += len(chunk)
            for field_name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                tensor.ClearField(field_name)
            del tensor.external_data[:]
            for key, value in (("location", data_path.name), ("offset", start), ("length", offset - start)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(path))


def stored_size(tensor: onnx.TensorProto) -> int:
    """Bytes of the tensor's values as stored: an external tensor's ``length``, else its element count times its
    element bits (sub-byte types packed), rounded up to a byte."""
    import math

    import onnx
    from onnx.external_data_helper import uses_external_data
    from onnx.helper import tensor_dtype_to_np_dtype

    if uses_external_data(tensor):
        return int(external_entries(tensor).get("length", 0))
    packed = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}
    bits = {getattr(onnx.TensorProto, name): n for name, n in packed.items() if hasattr(onnx.TensorProto, name)}
    count = math.prod(tensor.dims)
    if tensor.data_type in bits:
        return (count * bits[tensor.data_type] + 7) // 8
    return count * tensor_dtype_to_np_dtype(tensor.data_type).itemsize
