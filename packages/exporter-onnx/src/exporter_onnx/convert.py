"""ONNX conversion: capture the graph with ``torch.onnx``, write it, check it.

Two engines: ``dynamo`` (torch.export + onnxscript, for opset 18 and above) and ``torchscript`` (the
TorchScript-based exporter, for opsets up to 20, the only one for 14-17 that older runtimes need); the choice's
rules are in `exporter_onnx.engines`. ``auto`` picks, per part: the TorchScript engine for a part of an architecture
without a cache and with token inputs only (`is_traceable`: text encoders and classifiers) at opset 20 or below,
because one trace costs a fraction of the dynamo engine's capture, decompositions, translation and optimizer passes
(tiny BERT in process: 0.7 s against 5.3 s) and onnxruntime runs its graph as fast; the dynamo engine for decoders
and encoder-decoders, float inputs (images, audio), streamed or held weights, parts written as external data, and
opsets above 20. A traced graph can hold a traced shape or branch as a constant: the ONNX backend then offers the
facade a retry with the dynamo engine (`exporter_core.backend.Retry`), taken when a part fails validation. An
explicit opset is honoured exactly: the written file is checked to carry it. Capture and writing are separate steps:
given a checkpoint to stream from (`exporter_onnx.streaming`), the dynamo engine captures on fake weights and the
checkpoint's tensors are written into external data one at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core.errors import CheckpointError, ExportError, InvalidArgumentError, OpsetError, option_hint
from exporter_core.modeling import argument_name, eager_attention_for_capture, export_module, prepared_for_export
from exporter_core.output import StagedOutput
from exporter_onnx.engines import (
    DYNAMO_MIN_OPSET,
    TORCHSCRIPT_MAX_OPSET,
    choose_engine,
    is_traceable,
    max_opset,
)
from exporter_onnx.file_facts import FileFacts, read_facts

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig
    from exporter_onnx.streaming import CheckpointWeights, StreamedWeights

__all__ = [
    "DYNAMO_MIN_OPSET",
    "OnnxExportInfo",
    "choose_engine",
    "export",
    "export_onnx",
    "is_traceable",
    "max_opset",
]

logger = logging.getLogger("exporter")


@dataclass
class OnnxExportInfo:
    """What one export wrote."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    opset: int
    engine: str
    external_data: bool
    files: list[str] = field(default_factory=list)
    fallback_reason: str | None = None
    #: Shapes of the dummy inputs the graph was captured with.
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    #: What a streamed export read from the checkpoint (None: the normal path).
    streamed: StreamedWeights | None = None
    #: Why weights meant to be streamed were not (the part was exported the normal way).
    stream_fallback: str | None = None

    def metadata(self) -> dict[str, Any]:
        """Facts for the report and metadata files."""
        import onnx
        import torch

        data = {
            "opset": self.opset,
            "engine": self.engine,
            "external_data": self.external_data,
            "input_names": self.input_names,
            "output_names": self.output_names,
            "files": self.files,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        }
        if self.fallback_reason:
            data["fallback_reason"] = self.fallback_reason
        if self.streamed is not None:
            data["streamed_weights"] = self.streamed.metadata()
        if self.stream_fallback:
            data["stream_fallback"] = self.stream_fallback
        return data


def _dim_name(axis_name: str) -> str:
    name = re.sub(r"\W+", "_", axis_name).strip("_") or "dim"
    return name if not name[0].isdigit() else f"d_{name}"


def _dynamic_shapes(config: OnnxConfig, names: list[str]) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes: dict[str, dict[int, Any]] = {}
    for name in names:
        axes = config.inputs[name]
        shape = shapes[argument_name(name)] = {}
        for axis, axis_name in axes.items():
            key = _dim_name(axis_name)
            if key not in dims:
                dims[key] = Dim(key)
            shape[axis] = dims[key]
    return shapes


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence torch.onnx's progress chatter and warnings for the duration of one export."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in noisy]
    try:
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)


def _count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


#: Node metadata the dynamo engine records for debugging: Python stack traces with this machine's absolute
#: paths and FX node dumps (in a tiny BERT, more bytes than its weights). Not shipped in exported files.
_DEBUG_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def _strip_debug_metadata(program: Any) -> None:
    import onnx_ir as ir

    for node in ir.traversal.RecursiveGraphIterator(program.model.graph):
        for key in _DEBUG_NODE_METADATA:
            node.metadata_props.pop(key, None)


def _scalar(value: Any, expected: float) -> bool:
    """True when `value` is a constant holding the one number `expected` (to float32 precision)."""
    import numpy as np

    tensor = getattr(value, "const_value", None)
    if tensor is None or tensor.size != 1:  # a weight is never read here (streamed ones are read lazily)
        return False
    array = tensor.numpy()
    return bool(array.size == 1 and np.isclose(float(array.reshape(())), expected, rtol=1e-6, atol=0.0))


def _producer(value: Any, op_type: str) -> Any:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None


def _reorder_erf_gelu(program: Any) -> int:
    """Write each exact GELU as ``(x * (1 + erf(x / sqrt 2))) * 0.5``; return how many were rewritten.

    The converter writes ``x * (0.5 * (1 + erf(x / sqrt 2)))``: the same function with the halving applied
    first, an order onnxruntime's GELU fusion does not recognise, so each layer keeps five elementwise
    operators (and its bias Add) instead of one BiasGelu. Reordering the two products changes the result by at
    most one rounding of a float32 product, and the graph stays standard ONNX.
    """
    import math

    import onnx_ir as ir

    rewritten = 0
    for outer in list(ir.traversal.RecursiveGraphIterator(program.model.graph)):
        if outer.op_type != "Mul" or outer.domain not in ("", "ai.onnx") or len(outer.inputs) != 2:
            continue
        for half_index in (0, 1):
            half = _producer(outer.inputs[half_index], "Mul")
            x = outer.inputs[1 - half_index]
            if half is None or len(half.inputs) != 2 or len(half.outputs[0].uses()) != 1:
                continue
            const_index = 0 if _scalar(half.inputs[0], 0.5) else 1 if _scalar(half.inputs[1], 0.5) else None
            if const_index is None:
                continue
            add = _producer(half.inputs[1 - const_index], "Add")
            if add is None or len(add.inputs) != 2:
                continue
            one_index = 0 if _scalar(add.inputs[0], 1.0) else 1 if _scalar(add.inputs[1], 1.0) else None
            erf = _producer(add.inputs[1 - one_index], "Erf") if one_index is not None else None
            div = _producer(erf.inputs[0], "Div") if erf is not None else None
            if div is None or div.inputs[0] is not x or not _scalar(div.inputs[1], math.sqrt(2.0)):
                continue
            constant, erf_term = half.inputs[const_index], half.inputs[1 - const_index]
            half.replace_input_with(0, x)
            half.replace_input_with(1, erf_term)
            outer.replace_input_with(0, half.outputs[0])
            outer.replace_input_with(1, constant)
            rewritten += 1
            break
    return rewritten


def _capture_dynamo(module: Any, dummy: dict[str, Any], config: OnnxConfig, opset: int, optimize: bool) -> Any:
    import torch

    names = list(dummy)
    return torch.onnx.export(
        module,
        (),
        kwargs={argument_name(name): value for name, value in dummy.items()},
        dynamo=True,
        optimize=optimize,
        opset_version=opset,
        dynamic_shapes=_dynamic_shapes(config, names),
        input_names=names,
        output_names=list(config.outputs),
        verbose=False,
    )


def _failure(exc: BaseException) -> str:
    """An exception as one short line for a fallback reason: its type and the first line of its message."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def _remove_written(path: Path) -> None:
    """Remove what an engine that failed may have written: the file and its external data."""
    for written in (path, path.with_name(f"{path.name}.data")):
        written.unlink(missing_ok=True)


def _save_dynamo(program: Any, path: Path, external: bool) -> FileFacts:
    """Write a captured program to `path` without debug metadata, its exact GELUs in the form ORT fuses."""
    _strip_debug_metadata(program)
    _reorder_erf_gelu(program)
    program.save(str(path), external_data=external)
    return _program_facts(program.model, path)


def _export_torchscript(module: Any, dummy: dict[str, Any], config: OnnxConfig, opset: int, path: Path) -> None:
    import torch

    names = list(dummy)
    axes = {name: dict(config.inputs[name]) for name in names}
    axes.update({name: dict(v) for name, v in config.outputs.items()})
    torch.onnx.export(
        module,
        tuple(dummy.values()),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=names,
        output_names=list(config.outputs),
        dynamic_axes=axes,
        do_constant_folding=True,
    )


def _move_weights_to_external_data(path: Path) -> None:
    """Rewrite `path` with its weights in ``<name>.data`` beside it.

    The TorchScript-based engine writes external data by itself only past the 2 GiB protobuf limit; below it
    (a config that asks for external data earlier) the weights are inline, and are moved out here.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return
    save_with_external_data(model, path)


def save_with_external_data(model: Any, path: Path) -> None:
    """Write `model` to `path` with its weights (tensors of 1 KiB and more) in one ``<name>.data`` file beside it.

    `model` is an ``onnx.ModelProto``, or an ``onnx_ir`` model (a streamed export): its tensors are then written one
    at a time, each produced only when written (a lazy tensor reads its checkpoint tensor then), tensors over
    1 MiB at 64 KiB-aligned offsets so that ONNX Runtime can memory-map them; progress is noted in bytes.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        import onnx_ir as ir

        from exporter_core.progress import note

        shown = {"next": 0.0}

        def progress(tensor: Any, info: Any) -> None:
            if info.total and info.index / info.total >= shown["next"]:
                note(f"weights: tensor {info.index + 1} of {info.total}, {info.offset / 2**20:,.0f} MiB written")
                shown["next"] += 0.1

        ir.save(
            model,
            str(path),
            external_data=f"{path.name}.data",
            size_threshold_bytes=1023,
            alignment=65536,
            callback=progress,
        )
        return
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
        size_threshold=1024,
    )


def _program_facts(model: Any, path: Path) -> FileFacts:
    """`FileFacts` of the dynamo engine's in-memory model just saved to `path`, without reading the file again.

    Parsing a BERT-base's 440 MB protobuf back costs as long as the checker's own pass over it. The opset, names
    and initializers are those `save` serialised; external data is the ``<name>.data`` file `save` writes beside
    `path` when asked or past 2 GiB.
    """
    opsets = model.opset_imports
    return FileFacts(
        opsets.get("", opsets.get("ai.onnx")),
        [str(value.name) for value in model.graph.inputs],
        [str(value.name) for value in model.graph.outputs],
        path.with_name(f"{path.name}.data").is_file(),
    )


def _model_device(model: Any) -> Any:
    """The device of the model's first parameter or buffer (None when it has neither)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return None


def _on_device(dummy: dict[str, Any], device: Any) -> dict[str, Any]:
    """The dummy inputs on `device`, where the model is (the old API's ``export(device="cuda")`` moves the model)."""
    import torch

    if device is None:
        return dummy
    return {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in dummy.items()}


def export_onnx(
    model: Any,
    config: OnnxConfig,
    path: str | Path,
    *,
    opset: int | None = None,
    engine: str = "auto",
    preprocessor: Any = None,
    optimize: bool = True,
    weights: CheckpointWeights | None = None,
    trace: bool = True,
) -> OnnxExportInfo:
    """Export `model` as described by `config` to `path` (and external data beside it when large).

    `path`'s folder should be private to this call (a staging folder): files are written straight into it. With
    `weights` (the checkpoint `model` was loaded from, see `exporter_onnx.streaming.choose_streaming`) the dynamo
    engine captures on fake weights and writes the checkpoint's tensors into ``<name>.data`` one at a time; a
    part that cannot be streamed is exported the normal way (or refused, when streaming was asked for).
    `trace` False: ``auto`` never picks the TorchScript engine for speed (callers that do not validate the file,
    which is what would catch a traced shape held as a constant).
    """
    import onnx
    import torch

    from exporter_core.precision import held_dtype

    opset = config.default_onnx_opset if opset is None else opset
    config.check_opset(opset)
    highest = max_opset()
    if opset > highest:
        raise OpsetError(
            f"opset {opset} is newer than the installed onnx/onnxruntime support ({highest}); pass {option_hint('opset', highest)} or lower"
        )
    path = Path(path)
    dummy = _on_device(config.generate_dummy_inputs(preprocessor, framework="pt"), _model_device(model))
    names = list(dummy)
    external = config.use_external_data_format(_count_parameters(model))
    # Traced only below 2 GiB: past it the TorchScript engine writes a file per tensor, not one .data file.
    traceable = trace and weights is None and not external and is_traceable(config, dummy)
    chosen = choose_engine(opset, engine, traceable=traceable)
    fallback_reason = None
    streamed: StreamedWeights | None = None
    stream_fallback = None
    with prepared_for_export(model, config), eager_attention_for_capture(model), torch.no_grad(), _quiet_exporter():
        module = export_module(model, config, names)
        if chosen == "dynamo" and weights is not None:
            from exporter_onnx.streaming import StreamFallback

            try:
                streamed, facts = _export_streamed(module, dict(dummy), config, opset, optimize, weights, path)
            except StreamFallback as exc:
                stream_fallback = exc.reason
                logger.warning("weights not streamed (%s); exporting them the normal way", exc.reason)
                _remove_written(path)
        held = held_dtype(model)
        if held is not None and streamed is None:
            # Its weights are half precision and widened by hooks (exporter_core.precision): only a capture on fake
            # float32 weights turns it into the float32 graph.
            raise ExportError(
                f"the model is held in its checkpoint's {held} to be exported with streamed weights, but this part's "
                f"weights cannot be streamed ({'the ' + chosen + ' engine' if chosen != 'dynamo' else 'no checkpoint'}"
                f"); export the weights the normal way ({option_hint('stream_weights', False)})"
            )
        if chosen == "dynamo" and streamed is None:
            try:
                program = _capture_dynamo(module, dict(dummy), config, opset, optimize)
            except Exception as exc:  # torch.export refuses some graphs; the other engine may not
                if engine != "auto":
                    raise ExportError(f"the dynamo engine could not capture {type(model).__name__}: {exc}") from exc
                fallback_reason = _failure(exc)
                logger.warning("dynamo engine failed (%s); exporting with the torchscript engine", fallback_reason)
                if opset > TORCHSCRIPT_MAX_OPSET:
                    raise ExportError(
                        f"the dynamo engine failed ({fallback_reason}) and opset {opset} is above the torchscript engine's {TORCHSCRIPT_MAX_OPSET}"
                    ) from exc
                chosen = "torchscript"
            else:
                facts = _save_dynamo(program, path, external)
        if chosen == "torchscript":
            try:
                _export_torchscript(module, dict(dummy), config, opset, path)
            except Exception as exc:
                if engine != "auto" or opset < DYNAMO_MIN_OPSET or fallback_reason is not None:
                    raise ExportError(f"the torchscript engine could not export {type(model).__name__}: {exc}") from exc
                # Chosen for speed: the dynamo engine captures what tracing cannot.
                fallback_reason = _failure(exc)
                logger.info("torchscript engine failed (%s); exporting with the dynamo engine", fallback_reason)
                _remove_written(path)
                chosen = "dynamo"
                try:
                    program = _capture_dynamo(module, dict(dummy), config, opset, optimize)
                    facts = _save_dynamo(program, path, external)
                except Exception as again:
                    raise ExportError(
                        f"neither engine could export {type(model).__name__}: torchscript: {fallback_reason}; "
                        f"dynamo: {again}"
                    ) from again
            else:
                if external:
                    _move_weights_to_external_data(path)
    if chosen != "dynamo":
        facts = read_facts(path)
    if facts.opset != opset:
        raise ExportError(f"asked for opset {opset} but the {chosen} engine wrote opset {facts.opset}")
    onnx.checker.check_model(str(path))
    external = external or facts.external_data
    files = sorted(p.name for p in path.parent.iterdir() if p.is_file())
    return OnnxExportInfo(
        path=path,
        input_names=[n for n in names if n in facts.inputs],
        output_names=facts.outputs,
        opset=opset,
        engine=chosen,
        external_data=external,
        files=files,
        fallback_reason=fallback_reason,
        input_shapes={name: list(value.shape) for name, value in dummy.items()},
        streamed=streamed,
        stream_fallback=stream_fallback,
    )


def _export_streamed(
    module: Any,
    dummy: dict[str, Any],
    config: OnnxConfig,
    opset: int,
    optimize: bool,
    weights: CheckpointWeights,
    path: Path,
) -> tuple[StreamedWeights, FileFacts]:
    """Capture `module` on fake weights, give its initializers the checkpoint's tensors, optimise as the engine
    does, and write the file with every weight streamed into external data. Raises `StreamFallback` when a weight
    cannot be streamed (the caller then exports the normal way)."""
    import torch

    from exporter_core.precision import held_dtype
    from exporter_onnx.streaming import StreamFallback, fake_parameters, stream_initializers, transpose_lazily

    # A model held in half precision computes in float32 (exporter_core.precision): captured so, its graph is the
    # float32 model's, and each weight is widened as it is written.
    float_dtype = torch.float32 if held_dtype(module) is not None else None
    try:
        with fake_parameters(module, float_dtype):
            # The optimizer folds constants: it runs once the initializers can be read (lazily, from the checkpoint).
            program = _capture_dynamo(module, dummy, config, opset, optimize=False)
    except Exception as exc:
        reason = (
            f"capture on fake weights failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
        if weights.forced:
            raise ExportError(
                f"{reason[:300]}; export the weights the normal way ({option_hint('stream_weights', False)})"
            ) from exc
        raise StreamFallback(reason[:300]) from exc
    streamed = stream_initializers(program.model, module, weights)
    try:
        if optimize:
            transpose_lazily(program.model)  # what the optimizer would fold, computed only when written
            program.optimize()
        _strip_debug_metadata(program)
        _reorder_erf_gelu(program)
        save_with_external_data(program.model, path)
    except Exception as exc:
        # A checkpoint tensor is read (and checked) when first needed: by the optimizer, which wraps what a read
        # raises in its own PassError, or by the writer. What the read said is what the caller must see.
        found = _read_failure(exc)
        if found is None or found is exc:
            raise
        raise found from None
    return streamed, _program_facts(program.model, path)


def _read_failure(exc: BaseException) -> BaseException | None:
    """The `StreamFallback` or `CheckpointError` a checkpoint read raised, found in `exc`'s chain of causes."""
    from exporter_onnx.streaming import StreamFallback

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (StreamFallback, CheckpointError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def export(
    preprocessor: Any,
    model: Any,
    config: OnnxConfig,
    opset: int,
    output: str | Path,
    tokenizer: Any = None,
    device: str = "cpu",
) -> tuple[list[str], list[str]]:
    """The old ``transformers.onnx.export``: write `output` atomically; return (input names, output names)."""
    if device != "cpu":
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidArgumentError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
        model = model.to(device)
    if preprocessor is None:
        preprocessor = tokenizer
    output = Path(output)
    with StagedOutput(output.parent) as staged:
        # No validation follows here to catch a trace holding a traced shape: torch.export from opset 18, as before.
        info = export_onnx(
            model, config, staged.path / output.name, opset=opset, preprocessor=preprocessor, trace=False
        )
        staged.commit(info.files)
    return info.input_names, info.output_names
