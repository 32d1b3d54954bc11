"""What a saved TorchScript module was traced with: the shape contract a loader needs, as JSON.

The same JSON is stored twice: inside the ``.pt`` file (``torch.jit.save(..., _extra_files=...)``, readable from
C++ with ``torch::jit::load(path, device, extra_files)``) and beside it as ``<stem>.torchscript.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exporter_core.padding import describe_shape

__all__ = ["EXTRA_FILE", "FORMAT_VERSION", "TraceMetadata", "metadata_path"]

#: Name of the metadata entry inside the saved ``.pt`` archive.
EXTRA_FILE = "exporter/torchscript.json"
FORMAT_VERSION = 1


def metadata_path(artifact: str | Path) -> Path:
    """The side-car metadata file of `artifact` (``model.pt`` -> ``model.torchscript.json``)."""
    artifact = Path(artifact)
    return artifact.with_name(f"{artifact.stem}.torchscript.json")


def _axes_to_json(axes: Mapping[str, Mapping[int, str]]) -> dict[str, dict[str, str]]:
    return {name: {str(axis): axis_name for axis, axis_name in value.items()} for name, value in axes.items()}


def _axes_from_json(axes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[int, str]]:
    return {name: {int(axis): axis_name for axis, axis_name in value.items()} for name, value in axes.items()}


@dataclass
class TraceMetadata:
    """The contract of one traced module: call order, traced (maximum) shape, padding, and what was checked."""

    #: Input names in the order the module's ``forward`` takes them.
    input_names: list[str]
    #: Output names in the order of the returned tuple.
    output_names: list[str]
    #: Shape of each example input the trace was made with.
    input_shapes: dict[str, list[int]]
    input_dtypes: dict[str, str]
    #: Symbolic axes of inputs and outputs ({name: {axis index: axis name}}).
    input_axes: dict[str, dict[int, str]]
    output_axes: dict[str, dict[int, str]]
    #: The traced shape per axis name ({"batch": 2, "sequence": 16}): the largest inputs the module accepts.
    static_shape: dict[str, int]
    pad_token_id: int = 0
    #: Side on which the loader extends shorter sequences ("right": appending keeps real tokens in place).
    padding_side: str = "right"
    #: True when the module, called directly at other shapes, matched the eager model; None if not checked.
    generalizes: bool | None = None
    #: One entry per other shape tried: {"shape", "passed", "max_abs_diff", "error"}.
    generalization_checks: list[dict[str, Any]] = field(default_factory=list)
    #: How much padding a smaller input up to the traced shape changes the eager model's outputs at real
    #: positions: {"shape", "max_abs_diff", "changes_outputs"}; None when no smaller shape was tried.
    padding_effect: dict[str, Any] | None = None
    #: Groups of parameter names that shared one tensor in the model and were cloned apart in the trace.
    untied_parameters: list[list[str]] = field(default_factory=list)
    model_type: str | None = None
    model_class: str | None = None
    feature: str | None = None
    torch_version: str | None = None
    transformers_version: str | None = None
    #: Distinct warnings the tracer gave (values it had to treat as constants, and the like).
    tracer_warnings: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def traced_shape(self) -> dict[str, int]:
        """The size of every axis in the traced example (`static_shape` leaves out axes the module lets vary)."""
        sizes: dict[str, int] = {}
        for name, axes in self.input_axes.items():
            shape = self.input_shapes.get(name, [])
            for axis, axis_name in axes.items():
                if axis < len(shape):
                    sizes.setdefault(axis_name, shape[axis])
        return sizes

    def describe_call(self, shape: Mapping[str, int]) -> str:
        """How a call with inputs of `shape` (size per axis name) is served, as validation labels and logs say it."""
        shown = describe_shape(shape)
        traced = self.traced_shape
        if dict(shape) == traced:
            return f"traced shape ({shown})"
        larger = [f"{name} ({size})" for name, size in shape.items() if size > traced.get(name, size)]
        if larger:
            return f"larger {' × '.join(larger)} than traced, which the module takes as it is ({shown})"
        return f"smaller inputs ({shown}) padded to the traced shape"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data = asdict(self)
        data["input_axes"] = _axes_to_json(self.input_axes)
        data["output_axes"] = _axes_to_json(self.output_axes)
        return data

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceMetadata:
        """Read `to_dict()` output back (unknown keys from newer writers are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        values["input_axes"] = _axes_from_json(values.get("input_axes", {}))
        values["output_axes"] = _axes_from_json(values.get("output_axes", {}))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> TraceMetadata:
        """Parse JSON text written by `to_json`."""
        return cls.from_dict(json.loads(text))
