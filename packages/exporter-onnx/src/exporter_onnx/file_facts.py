"""What an export checks of a written ONNX file, read without parsing its weights.

`onnx.load` parses the whole protobuf, weights included: 0.42 s for a BERT-base file (440 MB) that the export
only needs the opset and the graph's input and output names of (the TorchScript-based engine drops inputs the
model does not use). `read_facts` walks the protobuf's wire format instead, decoding only those fields and
stepping over every other one by its length (the weights are never read: the file is memory-mapped). Field numbers
are those of ``onnx.proto``: ModelProto.graph 7, ModelProto.opset_import 8 (OperatorSetIdProto: domain 1,
version 2), GraphProto.input 11 and output 12, ValueInfoProto.name 1, TensorProto.data_location 14 (EXTERNAL 1)
on GraphProto.initializer 5.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileFacts", "read_facts"]

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class FileFacts:
    """The facts `exporter_onnx.convert.export_onnx` checks of a written file."""

    #: The ai.onnx opset the file imports (None when it imports none).
    opset: int | None
    inputs: list[str]
    outputs: list[str]
    #: Whether any initializer's data is stored outside the file.
    external_data: bool


def _varint(data: mmap.mmap | bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it."""
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("malformed protobuf: the file ends inside a field")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("malformed protobuf: varint longer than 10 bytes")


def _fields(data: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or first byte, last byte) of each field of the message in `data[start:end]`:
    for a length-delimited field the value is its first byte's position, else the field's value."""
    position = start
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, after = _varint(data, position)
        elif wire == _LENGTH:
            length, position = _varint(data, position)
            value, after = position, position + length
        elif wire in (_FIXED64, _FIXED32):
            after = position + (8 if wire == _FIXED64 else 4)
            value = int.from_bytes(data[position:after], "little")
        else:
            raise ValueError(f"malformed protobuf: wire type {wire} (groups are not used by ONNX)")
        if after > end:
            raise ValueError("malformed protobuf: a field runs past its message")
        yield number, wire, value, after
        position = after


def _name(data: mmap.mmap | bytes, start: int, end: int) -> str:
    """The ``name`` (field 1) of the ValueInfoProto in `data[start:end]`."""
    for number, wire, first, last in _fields(data, start, end):
        if number == 1 and wire == _LENGTH:
            return bytes(data[first:last]).decode("utf-8")
    return ""


def _is_external(data: mmap.mmap | bytes, start: int, end: int) -> bool:
    """Whether the TensorProto in `data[start:end]` has ``data_location`` (field 14) EXTERNAL."""
    return any(number == 14 and wire == _VARINT and value == 1 for number, wire, value, _ in _fields(data, start, end))


def read_facts(path: str | Path) -> FileFacts:
    """`FileFacts` of the ONNX file at `path`. Raises ValueError when the file is not a well-formed protobuf."""
    if Path(path).stat().st_size == 0:
        raise ValueError("malformed protobuf: the file is empty")
    with Path(path).open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        opset = None
        graph = None
        for number, wire, first, last in _fields(data, 0, len(data)):
            if number == 8 and wire == _LENGTH:
                domain, version = "", None
                for inner, inner_wire, value, end in _fields(data, first, last):
                    if inner == 1 and inner_wire == _LENGTH:
                        domain = bytes(data[value:end]).decode("utf-8")
                    elif inner == 2 and inner_wire == _VARINT:
                        version = value
                if domain in ("", "ai.onnx") and opset is None:
                    opset = version
            elif number == 7 and wire == _LENGTH:
                graph = (first, last)
        inputs: list[str] = []
        outputs: list[str] = []
        external = False
        if graph is not None:
            for number, wire, first, last in _fields(data, *graph):
                if wire != _LENGTH:
                    continue
                if number == 11:
                    inputs.append(_name(data, first, last))
                elif number == 12:
                    outputs.append(_name(data, first, last))
                elif number == 5 and not external:
                    external = _is_external(data, first, last)
    return FileFacts(opset, inputs, outputs, external)
