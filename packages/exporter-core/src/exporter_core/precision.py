"""A model held in its checkpoint's half precision that computes exactly what its float32 copy computes.

A bfloat16 or float16 checkpoint is loaded in float32 by default (`exporter_core.loading.load_model`): the export
traces float32 inputs and caches, and widening half precision is exact. At billions of parameters that float32
copy is the problem — a 7B bfloat16 checkpoint of 13.5 GB becomes 27 GB of anonymous memory, more than the
machine holds — while a backend that never traces the real weights (the ONNX backend streaming them from the
checkpoint, `exporter_onnx.streaming`) needs the model only as the validation's reference.

`compute_in_float32` keeps the parameters in the checkpoint's dtype (Transformers memory-maps them from the
safetensors file when the dtypes agree) and makes every module compute in float32: a forward pre-hook replaces
the module's own half-precision parameters by float32 copies for the duration of its call, and a forward hook
(``always_call``: also when the call raises) puts the originals back. Because widening is exact, each module sees
the values its float32 twin holds, so the outputs are those of the model loaded in float32 — the equality the
tests check on several families — while at most the parameters of the module being called (one Linear, one
embedding table) exist in float32 at a time. Floating-point buffers are widened once, for good (they are small;
position tables, rotary frequencies).

Two things are not widened back: a buffer Transformers computes at load time in the checkpoint's dtype keeps
its rounding (Gemma's embedding scale √hidden, which the half-precision model itself uses), and a model that reads
a parameter of another module outside that module's call, or decides a dtype from ``model.dtype`` (the first
parameter's), would see half precision there. So only a backend that captures without the real weights holds a
model this way (`exporter_core.backend.Backend.holds_checkpoint_dtype`): the ONNX backend streaming the weights
captures on fake float32 parameters (the hooks then find nothing to widen) and validates the graph against this
reference, so a difference of either kind would show as a validation failure, never pass silently.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["HALF_DTYPES", "compute_in_float32", "held_dtype"]

#: Checkpoint dtypes a model may be held in (names as `exporter_core.loading.stored_float_dtype` gives them).
HALF_DTYPES = ("bfloat16", "float16")

#: Root module -> the dtype its parameters are held in, for every model `compute_in_float32` prepared.
_HELD: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def compute_in_float32(model: Any) -> Any:
    """Make `model` (parameters in bfloat16 or float16) compute in float32 one module at a time; returns it.

    Floating buffers are widened in place; parameters stay as loaded. Idempotent."""
    import torch

    if model in _HELD:
        return model
    half = {torch.bfloat16, torch.float16}
    held: set[str] = set()
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.dtype in half:
                module._buffers[name] = buffer.float()
        own = [p for p in module._parameters.values() if p is not None and p.dtype in half]
        if not own:
            continue
        held.update(str(p.dtype).removeprefix("torch.") for p in own)
        module.register_forward_pre_hook(_widen)
        module.register_forward_hook(_restore, always_call=True)
    if held:
        _HELD[model] = "/".join(sorted(held))
    return model


def held_dtype(module: Any) -> str | None:
    """The half dtype `module` (or a model it wraps) holds its parameters in while computing in float32, None
    when it was not prepared by `compute_in_float32`."""
    modules = getattr(module, "modules", None)
    if modules is None:
        return None
    for candidate in modules():
        if candidate in _HELD:
            return _HELD[candidate]
    return None


def _widen(module: Any, args: Any) -> None:
    import torch

    saved: dict[str, Any] = {}
    for name, parameter in list(module._parameters.items()):
        if parameter is not None and parameter.dtype in (torch.bfloat16, torch.float16):
            saved[name] = parameter
            module._parameters[name] = torch.nn.Parameter(parameter.detach().float(), requires_grad=False)
    # A stack, so that a module called inside its own call (rare, but legal) restores in order.
    module.__dict__.setdefault("_exporter_held", []).append(saved)


def _restore(module: Any, args: Any, output: Any) -> None:
    stack = module.__dict__.get("_exporter_held")
    if stack:
        module._parameters.update(stack.pop())
