"""Which ONNX engine writes a part: ``dynamo`` (torch.export + onnxscript, opset 18 and above) or ``torchscript``
(the TorchScript-based exporter, opsets up to 20, the only one for 14-17).

``auto`` picks, per part, the TorchScript engine for a part of an architecture without a cache and with token
inputs only (`is_traceable`: text encoders and classifiers) at opset 20 or below, because one trace costs a
fraction of the dynamo engine's capture, decompositions, translation and optimizer passes; the dynamo engine
otherwise (and below 18 the TorchScript engine, the only one there). `exporter_onnx.convert.export_onnx` applies
the choice, with the conditions that depend on how the part is written (streamed weights, external data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from exporter_core.errors import InvalidArgumentError, OpsetError

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = [
    "DYNAMO_MIN_OPSET",
    "TORCHSCRIPT_MAX_OPSET",
    "choose_engine",
    "is_traceable",
    "max_opset",
    "torchscript_engine_available",
]

#: Lowest opset the torch.export-based engine writes faithfully (asked for less, it silently writes 18).
DYNAMO_MIN_OPSET = 18
#: Highest opset the TorchScript-based engine supports.
TORCHSCRIPT_MAX_OPSET = 20


def max_opset() -> int:
    """Highest opset both the installed onnx and onnxruntime know."""
    import onnx
    import onnxruntime

    highest = onnx.defs.onnx_opset_version()
    ort_major_minor = tuple(int(x) for x in onnxruntime.__version__.split(".")[:2])
    # ONNX Runtime implements the opsets of the onnx release it was built against; 1.20+ covers opset 23.
    return min(highest, 23 if ort_major_minor >= (1, 20) else 21)


def torchscript_engine_available() -> bool:
    """Whether the installed torch still ships the TorchScript-based ONNX exporter (deprecated since torch 2.9)."""
    import importlib.util

    # torch 2.9+ keeps it in torch.onnx._internal.torchscript_exporter; 2.6-2.8 in torch.onnx.utils.
    for name in ("torch.onnx._internal.torchscript_exporter", "torch.onnx.utils"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except ImportError:
            continue
    return False


def choose_engine(opset: int, engine: str = "auto", *, traceable: bool = False) -> str:
    """The engine that writes `opset`, or an error for a bad pair. ``auto``: "torchscript" below 18, and up to 20
    for a `traceable` part (see `is_traceable`) when torch still has that engine; "dynamo" otherwise."""
    if engine not in ("auto", "dynamo", "torchscript"):
        raise InvalidArgumentError(f"unknown engine {engine!r}; use auto, dynamo or torchscript")
    if engine == "auto":
        if opset < DYNAMO_MIN_OPSET:
            return "torchscript"
        fast = traceable and opset <= TORCHSCRIPT_MAX_OPSET and torchscript_engine_available()
        return "torchscript" if fast else "dynamo"
    if engine == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise OpsetError(
            f"the dynamo engine writes opset {DYNAMO_MIN_OPSET} or higher; use --engine torchscript for opset {opset}"
        )
    if engine == "torchscript" and opset > TORCHSCRIPT_MAX_OPSET:
        raise OpsetError(
            f"the torchscript engine writes opset {TORCHSCRIPT_MAX_OPSET} at most; use --engine dynamo for opset {opset}"
        )
    return engine


def is_traceable(config: OnnxConfig, dummy: Mapping[str, Any]) -> bool:
    """Whether the TorchScript engine's trace of a part is as general as a dynamo capture: an architecture without
    a cache (decoders' and encoder-decoders' configs support past key values, and their causal masks and rotary
    tables are sized in Python from the traced lengths, which a trace keeps as constants) and token inputs only
    (ids and masks, integer tensors: an image's or a sound's size is fixed by the model's convolutions and
    positions, which the dynamo engine reads and states in the graph's input shapes, and a trace does not)."""
    import torch

    from exporter_core.config import OnnxConfigWithPast

    names = [*config.inputs, *config.outputs]
    architecture = getattr(config, "parent", config)  # an encoder-decoder's part config names its architecture's
    if isinstance(architecture, OnnxConfigWithPast) or any(n.startswith(("past", "present")) for n in names):
        return False
    return all(isinstance(v, torch.Tensor) and not v.is_floating_point() for v in dummy.values())
