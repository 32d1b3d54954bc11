"""Streamed weights: an ONNX export that writes the checkpoint's tensors into external data one at a time.

The normal dynamo path captures the model with its weights and serialises the whole ONNX program at once: below
the 2 GiB protobuf limit the file holds every weight inline, so writing it copies them all into memory again
(a 355M-parameter GPT-2 peaked at 7.3 GB, about 5x its checkpoint). A streamed export instead

1. captures the graph with the module's parameters swapped for fake tensors (`fake_parameters`: same shapes and
   dtypes, no data), so torch.export and the ONNX translation never touch a weight; buffers stay real (rotary
   ``inv_freq``, position ids and masks computed at init are needed as values, and are small);
2. gives every initializer the capture left fake a lazy value read from the checkpoint's safetensors
   (`CheckpointWeights`: memory-mapped, converted to the captured dtype when the checkpoint's differs), checked
   equal to the loaded module's own tensor the first time it is read;
3. folds each ``Transpose`` of a weight into a lazy transposed initializer (`transpose_lazily`: onnxscript's
   optimizer folds those whatever their size and would hold them all in memory), lets the optimizer run as the
   normal path does (it reads only constants below its size limits), and writes the graph with every
   initializer in ``<file>.data``, one tensor at a time, through `exporter_onnx.convert.save_with_external_data`.

The written initializers are the normal path's, byte for byte. A parameter the checkpoint does not hold under
its name (or its tied twin's), or holds with other values than the loaded model's, cannot be streamed: the part
is exported the normal way (said in the log) unless streaming was asked for, which makes it an error naming the
tensor. When to stream is `choose_streaming`'s rule: the dynamo engine, a safetensors checkpoint, and weights of
`STREAM_MIN_BYTES` or more, unless the caller forces it on or off.

Validation then reads the same weights from two memory-mapped files (the checkpoint behind the PyTorch model, the
external data behind the ONNX Runtime session), so neither copy is anonymous memory: `LOW_MEMORY_SESSION` keeps
ONNX Runtime from copying weights at session start (pre-packing MatMul weights, folding ``Transpose(weight)`` into
a new initializer); both only change how the same products are laid out in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core.errors import CheckpointError, InvalidArgumentError, option_hint

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "LOW_MEMORY_SESSION",
    "STREAM_MIN_BYTES",
    "CheckpointWeights",
    "StreamFallback",
    "StreamedWeights",
    "check_stream_option",
    "choose_streaming",
    "fake_parameters",
    "runner_options",
    "stream_initializers",
    "streaming_checkpoint",
    "transpose_lazily",
]

logger = logging.getLogger("exporter")

#: Checkpoint size (bytes of tensors) from which weights are streamed when the caller does not say.
STREAM_MIN_BYTES = 1 << 30

#: ONNX Runtime settings of the validation session of a streamed export: (session config entries, optimizers
#: disabled). Pre-packing copies every MatMul weight into a packed buffer, and constant folding turns
#: ``Transpose(tied embedding)`` into a transposed copy; without them the weights stay in the memory-mapped
#: external data file (the transpose is fused into the MatMul instead).
LOW_MEMORY_SESSION: tuple[dict[str, str], tuple[str, ...]] = (
    {"session.disable_prepacking": "1"},
    ("ConstantFolding",),
)

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


class StreamFallback(Exception):
    """This part cannot be streamed; `reason` says why (the caller exports it the normal way or refuses)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_stream_option(options: Mapping[str, Any]) -> bool | None:
    """The ``stream_weights`` option: True (always stream), False (never), None (`choose_streaming` decides)."""
    value = options.get("stream_weights")
    if value is not None and not isinstance(value, bool):
        raise InvalidArgumentError(
            f"stream_weights must be True, False or None (decide by size), got {value!r}; for example "
            f"{option_hint('stream_weights', True)}"
        )
    return value


@dataclass
class CheckpointWeights:
    """The tensors of a safetensors checkpoint (one file or shards), read memory-mapped one at a time, and which
    checkpoint tensor holds each parameter of the loaded model."""

    folder: Path
    #: Checkpoint tensor name -> the file holding it.
    files: dict[str, Path]
    #: id() of a parameter of the loaded model -> checkpoint names it may be stored under (its own names, its
    #: tied twins', with and without the base model's prefix).
    names_of: dict[int, list[str]] = field(default_factory=dict)
    #: Why the weights are streamed (for the report).
    reason: str = ""
    #: True when the caller asked for streaming, or the model is held in half precision: a weight that cannot be
    #: streamed is then an error, not a fallback to the normal path.
    forced: bool = False
    #: The half dtype the loaded model holds its weights in while computing in float32 (`exporter_core.precision`),
    #: None when it holds them in float32; the graph is captured in float32 either way.
    held: str | None = None
    _handles: dict[Path, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def find(cls, folder: str | Path) -> CheckpointWeights | None:
        """The safetensors checkpoint in `folder`, or None when it has none (a ``.bin`` checkpoint)."""
        folder = Path(folder)
        if (folder / _SINGLE).is_file():
            from safetensors import safe_open

            with safe_open(str(folder / _SINGLE), framework="pt") as handle:
                return cls(folder, {key: folder / _SINGLE for key in handle.keys()})  # noqa: SIM118 - no __iter__
        if (folder / _INDEX).is_file():
            try:
                weight_map = json.loads((folder / _INDEX).read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError):
                raise CheckpointError(f"{folder / _INDEX} is corrupt (no readable weight_map)") from None
            return cls(folder, {str(key): folder / str(shard) for key, shard in weight_map.items()})
        return None

    def total_bytes(self) -> int:
        """Bytes of the checkpoint's safetensors files (their tensors and small JSON headers)."""
        return sum(path.stat().st_size for path in set(self.files.values()) if path.is_file())

    def map_model(self, model: Any) -> None:
        """Record, for each parameter of `model` (the loaded Transformers model), the checkpoint names it may be
        stored under."""
        prefix = str(getattr(model, "base_model_prefix", "") or "")
        self.names_of = {}
        for name, tensor in model.named_parameters(remove_duplicate=False):
            candidates = self.names_of.setdefault(id(tensor), [])
            # Last, the name below a wrapper's first attribute (the sentence-embedding model's ``transformer.``): a
            # wrong match cannot pass, every tensor is checked against the loaded one when read.
            inner = name.split(".", 1)[1] if "." in name else ""
            for candidate in (name, f"{prefix}.{name}" if prefix else name, _strip(name, prefix), inner):
                if candidate and candidate not in candidates:
                    candidates.append(candidate)

    def key_for(self, tensor: Any) -> str | None:
        """The checkpoint tensor holding the loaded model's parameter `tensor`, None when none does."""
        for name in self.names_of.get(id(tensor), []):
            if name in self.files:
                return name
        return None

    def _handle(self, path: Path) -> Any:
        if path not in self._handles:
            from safetensors import safe_open

            if not path.is_file():
                raise CheckpointError(f"{path} is missing; the checkpoint changed while it was exported")
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path]

    def read(self, key: str) -> torch.Tensor:
        """Checkpoint tensor `key`, memory-mapped (no copy while its dtype is the one stored)."""
        path = self.files[key]
        handle = self._handle(path)
        try:
            return handle.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types for a missing or damaged tensor
            raise CheckpointError(
                f"tensor {key!r} cannot be read from {path} ({type(exc).__name__}: {exc}); the checkpoint changed "
                "or is damaged: save it again, or export without streamed weights "
                f"({option_hint('stream_weights', False)})"
            ) from None

    def close(self) -> None:
        """Drop the open files (their memory maps go with the last tensor read from them)."""
        self._handles.clear()


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else ""


def streaming_checkpoint(
    option: bool | None, folder: str | Path | None, engine: str, opset: int | None, dynamo_min_opset: int
) -> tuple[CheckpointWeights | None, str]:
    """Whether to stream the weights of the checkpoint in `folder`, and why (for the log and the report).

    The rule when `option` is None: the dynamo engine (the TorchScript-based one writes its own files), a
    safetensors checkpoint in `folder`, and at least `STREAM_MIN_BYTES` of tensors in it; smaller models keep the
    normal path (one self-contained file, the suite's reference). True streams whenever it can and refuses when it
    cannot; False never streams. Decided from the files alone, before the model is loaded.
    """
    if option is False:
        return None, "not asked (stream_weights off)"
    dynamo = engine == "dynamo" or (engine == "auto" and (opset is None or opset >= dynamo_min_opset))
    checkpoint = CheckpointWeights.find(folder) if folder and Path(str(folder)).is_dir() else None
    why_not = (
        "the TorchScript-based engine writes its own files"
        if not dynamo
        else "the model was not loaded from a local safetensors checkpoint"
        if checkpoint is None
        else None
    )
    if why_not is not None:
        if option:
            raise InvalidArgumentError(
                f"weights cannot be streamed here: {why_not}; export without {option_hint('stream_weights', True)}"
            )
        return None, why_not
    assert checkpoint is not None
    size = checkpoint.total_bytes()
    if option is None and size < STREAM_MIN_BYTES:
        return (
            None,
            f"checkpoint of {size / 2**20:.0f} MiB, under the {STREAM_MIN_BYTES / 2**30:.0f} GiB streaming threshold",
        )
    checkpoint.forced = bool(option)
    checkpoint.reason = "asked for" if option else f"checkpoint of {size / 2**30:.2f} GiB"
    return checkpoint, checkpoint.reason


def choose_streaming(
    option: bool | None, model: Any, engine: str, opset: int | None, dynamo_min_opset: int
) -> tuple[CheckpointWeights | None, str]:
    """`streaming_checkpoint` for the folder `model` was loaded from, mapped to `model`'s parameters.

    A model held in its checkpoint's half precision (`exporter_core.precision`, loaded so because this rule chose
    to stream) cannot be exported the normal way: its weights must be streamed, as if asked for."""
    from exporter_core.precision import held_dtype

    # A wrapper (the sentence-embedding model) has no name_or_path of its own; its config says where it came from.
    folder = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    checkpoint, reason = streaming_checkpoint(option, folder, engine, opset, dynamo_min_opset)
    if checkpoint is not None:
        checkpoint.map_model(model)
        checkpoint.held = held_dtype(model)
        checkpoint.forced = checkpoint.forced or checkpoint.held is not None
    return checkpoint, reason


@contextlib.contextmanager
def fake_parameters(module: Any, float_dtype: torch.dtype | None = None) -> Iterator[None]:
    """Inside the block every parameter of `module` is a fake tensor of the same shape and dtype (tied parameters
    stay one) — of `float_dtype` instead for a floating parameter when given (a model held in half precision is
    captured in float32); the real ones are put back in ``finally``."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def fake_of(parameter: torch.Tensor) -> torch.Tensor:
        if float_dtype is None or not parameter.is_floating_point() or parameter.dtype == float_dtype:
            return mode.from_tensor(parameter)
        with mode:
            return torch.empty(parameter.shape, dtype=float_dtype, device=parameter.device)

    fakes: dict[int, torch.nn.Parameter] = {}
    swapped: list[tuple[Any, str, Any]] = []
    try:
        for submodule in module.modules():
            for name, parameter in list(submodule._parameters.items()):
                if parameter is None:
                    continue
                if id(parameter) not in fakes:
                    fakes[id(parameter)] = torch.nn.Parameter(fake_of(parameter), requires_grad=False)
                swapped.append((submodule, name, parameter))
                submodule._parameters[name] = fakes[id(parameter)]
        yield
    finally:
        for submodule, name, parameter in reversed(swapped):
            submodule._parameters[name] = parameter


@dataclass
class StreamedWeights:
    """What a streamed export wrote, for the report."""

    checkpoint: str
    reason: str
    #: Initializers read from the checkpoint.
    streamed: int = 0
    streamed_bytes: int = 0
    #: Initializers written from memory: buffers and constants (rotary frequencies, folded shapes).
    from_memory: int = 0
    from_memory_bytes: int = 0

    def metadata(self) -> dict[str, Any]:
        """Facts for the report."""
        return {
            "checkpoint": self.checkpoint,
            "reason": self.reason,
            "initializers_from_checkpoint": self.streamed,
            "bytes_from_checkpoint": self.streamed_bytes,
            "initializers_from_memory": self.from_memory,
            "bytes_from_memory": self.from_memory_bytes,
        }


def _is_fake(value: Any) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(getattr(value, "raw", None), FakeTensor)


def stream_initializers(ir_model: Any, module: Any, checkpoint: CheckpointWeights) -> StreamedWeights:
    """Give every fake initializer of `ir_model` (captured from `module` under `fake_parameters`) a lazy value read
    from `checkpoint`; raise `StreamFallback` (or, `forced`, `CheckpointError`) when one has no checkpoint tensor of
    its shape."""
    import onnx_ir as ir

    real = dict(module.named_parameters(remove_duplicate=False))
    forced = checkpoint.forced
    summary = StreamedWeights(checkpoint=str(checkpoint.folder), reason=checkpoint.reason)
    plan: list[tuple[Any, str, Any]] = []
    missing: list[str] = []
    for name, value in ir_model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None:
            continue
        if not _is_fake(tensor):
            summary.from_memory += 1
            summary.from_memory_bytes += int(tensor.nbytes)
            continue
        parameter = real.get(name)
        key = checkpoint.key_for(parameter) if parameter is not None else None
        if key is None or tuple(checkpoint_shape(checkpoint, key)) != tuple(tensor.shape):
            missing.append(name)
            continue
        plan.append((value, key, parameter))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        reason_text = (
            f"{len(missing)} weight(s) of the graph have no tensor of their name and shape in the checkpoint "
            f"{checkpoint.folder} ({shown})"
        )
        if forced:
            raise CheckpointError(
                f"cannot stream the weights: {reason_text}; export them the normal way "
                f"({option_hint('stream_weights', False)})"
            )
        raise StreamFallback(reason_text)
    for value, key, parameter in plan:
        fake = value.const_value
        value.const_value = ir.LazyTensor(
            _reader(checkpoint, key, parameter, value.name, forced, fake.raw.dtype),
            dtype=fake.dtype,
            shape=ir.Shape(list(fake.shape)),
            name=value.name,
        )
        summary.streamed += 1
        summary.streamed_bytes += int(fake.nbytes)
    return summary


def transpose_lazily(ir_model: Any) -> int:
    """Turn each ``Transpose`` of a streamed weight used nowhere else into a lazy initializer holding the transposed
    weight; return how many.

    onnxscript's optimizer folds such a ``Transpose`` whatever its size (a ``Linear``'s ``x @ W^T``), and the folded
    tensor is computed at once and held in memory until the file is written: all of a Llama's projection weights,
    27 GB at 7B in float32. Folded here instead, each transposed weight is computed when it is written, one at a
    time, under the name the optimizer would give it (the ``Transpose`` output's), so the file is the normal path's.
    """
    import numpy as np
    import onnx_ir as ir

    graph = ir_model.graph
    folded = 0
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            continue
        source = node.inputs[0] if node.inputs else None
        if source is None or not source.is_initializer() or not isinstance(source.const_value, ir.LazyTensor):
            continue
        if len(source.uses()) != 1 or source.is_graph_input() or source.is_graph_output():
            continue
        lazy = source.const_value
        rank = len(lazy.shape)
        perm_attr = node.attributes.get("perm")
        perm = [int(i) for i in perm_attr.as_ints()] if perm_attr is not None else list(reversed(range(rank)))
        output = node.outputs[0]
        if output.is_graph_output():
            continue
        name = str(output.name)
        shape = ir.Shape([lazy.shape[i] for i in perm])

        def transposed(lazy: Any = lazy, perm: list[int] = perm, name: str = name) -> Any:
            return ir.Tensor(np.ascontiguousarray(np.transpose(lazy.numpy(), perm)), name=name)

        value = ir.Value(
            name=None,
            type=ir.TensorType(lazy.dtype),
            shape=shape,
            const_value=ir.LazyTensor(transposed, dtype=lazy.dtype, shape=shape, name=name),
        )
        output.replace_all_uses_with(value)
        graph.remove(node, safe=True)
        graph.initializers.pop(str(source.name))
        value.name = name
        graph.register_initializer(value)
        folded += 1
    return folded


def checkpoint_shape(checkpoint: CheckpointWeights, key: str) -> list[int]:
    """The shape the checkpoint's header gives tensor `key` (nothing is read); a shard that does not hold the
    tensor its index names is a `CheckpointError`."""
    path = checkpoint.files[key]
    try:
        return list(checkpoint._handle(path).get_slice(key).get_shape())
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path} does not hold tensor {key!r}, which {checkpoint.folder / _INDEX} places there "
            f"({type(exc).__name__}); download or save the checkpoint again"
        ) from None


def _reader(
    checkpoint: CheckpointWeights, key: str, parameter: Any, name: str, forced: bool, dtype: torch.dtype
) -> Any:
    """A function returning checkpoint tensor `key` in the captured `dtype`, checked equal to `parameter` (the
    loaded model's tensor, in its own dtype) the first time it runs."""
    checked = False

    def read() -> Any:
        nonlocal checked
        from onnx_ir.tensor_adapters import TorchTensor

        tensor = checkpoint.read(key)
        if tensor.dtype != parameter.dtype:
            tensor = tensor.to(parameter.dtype)
        if not checked:
            if parameter.device.type != "meta" and not _same_bits(tensor, parameter.detach()):
                reason = (
                    f"checkpoint tensor {key!r} ({checkpoint.files[key].name}) differs from the loaded model's "
                    f"{name} (converted while loading, or changed since)"
                )
                if forced:
                    raise CheckpointError(
                        f"cannot stream the weights: {reason}; export them the normal way "
                        f"({option_hint('stream_weights', False)})"
                    )
                raise StreamFallback(reason)
            checked = True
        if tensor.dtype != dtype:
            tensor = tensor.to(dtype)  # a model held in half precision, captured in float32: exact
        return TorchTensor(tensor.contiguous(), name)

    return read


def runner_options(info: Any) -> dict[str, Any]:
    """Keyword arguments of `OnnxRuntimeRunner` for a part `info` (an `OnnxExportInfo`) describes: the
    `LOW_MEMORY_SESSION` when its weights were streamed, none otherwise (None: none)."""
    if info is None or getattr(info, "streamed", None) is None:
        return {}
    config, disabled = LOW_MEMORY_SESSION
    return {"session_config": dict(config), "disabled_optimizers": disabled}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when both tensors hold the same values bit for bit (NaN equal to the same NaN, unlike `torch.equal`)."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() and a.element_size() in (2, 4, 8):
        as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))
    return torch.equal(a, b)
