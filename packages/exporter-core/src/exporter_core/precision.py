"""A model held in its checkpoint's half precision that computes exactly what its float32 copy computes.

A bfloat16 or float16 checkpoint is loaded in float32 by default (`exporter_core.loading.load_model`): the export
traces float32 inputs and caches, and widening half precision is exact. At billions of parameters that float32
copy is the problem — a 7B bfloat16 checkpoint of 13.5 GB becomes 27 GB of anonymous memory, more than the
machine holds — while a backend that never traces the real weights (the ONNX backend streaming them from the
checkpoint, `exporter_onnx.streaming`) needs the model only as the validation's reference.

`compute_in_float32` keeps the parameters in the checkpoint's dtype (Transformers memory-maps them from the
safetensors file when the dtypes agree) and makes the model compute in float32 one unit at a time: a unit is a
module whose weights take at most max(`UNIT_MIN_BYTES`, `UNIT_FRACTION` of the model) in float32 — a decoder layer
of a 7B model, a whole small model. A forward pre-hook replaces every half-precision parameter below the unit by a
float32 copy for the duration of its call, and a forward hook (``always_call``: also when the call raises) puts the
originals back; the units' submodules are hooked too (an export part may call the encoder of an encoder-decoder
directly), and find nothing left to widen below a unit that did. Because widening is exact, each module sees the
values its float32 twin holds, so the outputs are those of the model loaded in float32 — the equality the tests
check on several families, T5 included (its feed-forward reads ``wo.weight.dtype`` before calling ``wo``) — while
at most one unit's weights exist in float32 at a time. Floating-point buffers are widened once, for good (they are
small; position tables, rotary frequencies).

Two things are not widened back: a buffer Transformers computes at load time in the checkpoint's dtype keeps
its rounding (Gemma's embedding scale √hidden, which the half-precision model itself uses) — in the reference and
in a graph captured from it alike, so such a graph differs from the float32 load's by that rounding — and a model that reads
a parameter outside the call of a unit holding it, or decides a dtype from ``model.dtype`` (the first
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

#: Module -> the dtype its model's parameters are held in, for every module of every model `compute_in_float32`
#: prepared.
_HELD: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

#: A module whose half-precision weights take at most this many bytes once widened is widened whole for its call
#: (and its submodules with it) ...
UNIT_MIN_BYTES = 256 * 2**20
#: ... or at most this fraction of the whole model's, when that is more.
UNIT_FRACTION = 1 / 16


def compute_in_float32(model: Any) -> Any:
    """Make `model` (parameters in bfloat16 or float16) compute in float32 one unit at a time; returns it.

    A unit is a module whose weights, widened, fit `UNIT_MIN_BYTES` or `UNIT_FRACTION` of the model's (a decoder
    layer of a 7B model: 0.8 GB of 27 GB; a whole small model): for the duration of the outermost unit's call every
    weight below it is float32, so a module that reads a child's weight dtype before calling it (T5's feed-forward
    casts its input to ``wo.weight.dtype``) sees float32 too. A larger module that holds weights of its own widens
    those alone. Floating buffers are widened in place, once. Idempotent."""
    import torch

    if model in _HELD:
        return model
    half = (torch.bfloat16, torch.float16)
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.dtype in half:
                module._buffers[name] = buffer.float()
    sizes = _widened_sizes(model, half)
    total = sizes.get(model, 0)
    if not total:
        return model
    limit = max(UNIT_MIN_BYTES, int(total * UNIT_FRACTION))

    visited: set[int] = set()

    def choose(module: Any) -> None:
        if not sizes.get(module) or id(module) in visited:  # a module shared by two parents is hooked once
            return
        visited.add(id(module))
        if sizes[module] <= limit:
            # Its submodules are hooked too: an export part may call one directly (an encoder-decoder's encoder),
            # bypassing this module; below a module that did widen them, their hooks find nothing left to widen.
            _hook(module, whole=True)
        elif any(p is not None and p.dtype in half for p in module._parameters.values()):
            _hook(module, whole=False)
        for child in module.children():
            choose(child)

    choose(model)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.dtype in half})
    # Every module is recorded, not only the root: an export part wraps a submodule (an encoder-decoder's
    # encoder, whose parent may be the one unit of a small model), and must be known as held through it.
    for module in model.modules():
        _HELD[module] = "/".join(dtypes)
    return model


def _widened_sizes(model: Any, half: tuple[Any, ...]) -> dict[Any, int]:
    """Module -> float32 bytes of the distinct half-precision weights below it (itself included)."""
    nbytes = {id(p): 4 * p.numel() for p in model.parameters() if p.dtype in half}
    sizes: dict[Any, int] = {}

    def below(module: Any) -> set[int]:
        ids = {id(p) for p in module._parameters.values() if p is not None and id(p) in nbytes}
        for child in module.children():
            ids |= below(child)
        sizes[module] = sum(nbytes[i] for i in ids)
        return ids

    below(model)
    return sizes


def _hook(module: Any, whole: bool) -> None:
    module.register_forward_pre_hook(lambda m, args: _widen(m, whole))
    module.register_forward_hook(_restore, always_call=True)


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


def _widen(module: Any, whole: bool) -> None:
    """Replace the half-precision weights of `module` (and, `whole`, of every module below it) by float32 copies
    (one per distinct weight: tied weights stay one), remembering the originals."""
    import torch

    saved: list[tuple[Any, str, Any]] = []
    # On the stack before anything is swapped: if widening fails half way (out of memory), the restoring hook still
    # puts back what was swapped. A stack, so that a module called inside its own call restores in order.
    module.__dict__.setdefault("_exporter_held", []).append(saved)
    copies: dict[int, Any] = {}
    for owner in module.modules() if whole else (module,):
        for name, parameter in list(owner._parameters.items()):
            if parameter is None or parameter.dtype not in (torch.bfloat16, torch.float16):
                continue
            if id(parameter) not in copies:
                copies[id(parameter)] = torch.nn.Parameter(parameter.detach().float(), requires_grad=False)
            saved.append((owner, name, parameter))
            owner._parameters[name] = copies[id(parameter)]


def _restore(module: Any, args: Any, output: Any) -> None:
    stack = module.__dict__.get("_exporter_held")
    if stack:
        for owner, name, parameter in reversed(stack.pop()):
            owner._parameters[name] = parameter
