"""Turning a Transformers model into a module a tracer can capture: named inputs in, a tuple out.

`ExportModule` has a ``forward`` whose parameters are exactly the config's input names, in order
(torch.export binds inputs by parameter name, and a ``*args`` forward defeats it), and returns the
config's outputs as a tuple (TorchScript refuses dict outputs). `prepared_for_export` sets what an export
needs (eval mode, config overrides, patching specs) and restores all of it in ``finally``.
"""

from __future__ import annotations

import contextlib
import keyword
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from exporter_core.config import OnnxConfig

__all__ = [
    "argument_name",
    "attention_implementation",
    "eager_attention_for_capture",
    "export_module",
    "prepared_for_export",
    "untied_copy",
]

_modules_by_signature: dict[tuple[str, ...], type] = {}


def argument_name(input_name: str) -> str:
    """The forward parameter that takes input `input_name` (``past_key_values.0.key`` -> ``past_key_values_0_key``).

    Tracers bind inputs by parameter name; the artifact's inputs keep the config's names.
    """
    name = input_name.replace(".", "_")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"input name {input_name!r} is not a Python identifier; rename it in the config")
    return name


def _module_class(names: tuple[str, ...]) -> type:
    """A `torch.nn.Module` subclass whose forward takes exactly `names` (built once per signature)."""
    import torch

    cached = _modules_by_signature.get(names)
    if cached is not None:
        return cached
    arguments = [argument_name(name) for name in names]
    if len(set(arguments)) != len(arguments):
        raise ValueError(
            f"input names {list(names)} give clashing argument names {arguments}; rename them in the config"
        )
    params = ", ".join(arguments)
    packed = ", ".join(f"{n!r}: {a}" for n, a in zip(names, arguments, strict=True))
    namespace: dict[str, Any] = {}
    # A generated signature is the one way to give forward named parameters that vary per config.
    exec(f"def forward(self, {params}):\n    return self._run({{{packed}}})\n", namespace)

    class ExportModule(torch.nn.Module):
        """Calls the wrapped model with named inputs and returns the config's outputs as a tuple."""

        def __init__(self, model: torch.nn.Module, config: OnnxConfig) -> None:
            super().__init__()
            self.model = model
            self.export_config = config
            # A new Module starts in training mode; a trainer that restores modes after export would then
            # switch the wrapped model into training (dropout on). Start, and stay, in eval mode.
            self.train(False)

        def _run(self, inputs: dict[str, Any]) -> tuple[Any, ...]:
            kwargs = self.export_config.model_kwargs(inputs)
            return self.export_config.select_outputs(self.model(**kwargs))

        def train(self, mode: bool = True) -> ExportModule:
            # The wrapper never changes the wrapped model's mode.
            self.training = mode
            return self

    ExportModule.forward = namespace["forward"]
    _modules_by_signature[names] = ExportModule
    return ExportModule


def export_module(model: torch.nn.Module, config: OnnxConfig, input_names: list[str] | None = None) -> torch.nn.Module:
    """Wrap `model` for tracing; `input_names` defaults to the config's inputs."""
    names = tuple(input_names if input_names is not None else config.inputs)
    return _module_class(names)(model, config)


def _module_tree(model: torch.nn.Module) -> list[tuple[Any, dict[str, Any], dict[str, Any]]]:
    """Each module's children and its str/bool attributes: what a forward may switch (BigBird replaces its
    attention modules and their `attention_type` for short inputs), for `prepared_for_export` to put back."""
    return [
        (module, dict(module._modules), {k: v for k, v in vars(module).items() if isinstance(v, (str, bool))})
        for module in model.modules()
    ]


@contextlib.contextmanager
def prepared_for_export(model: torch.nn.Module, config: OnnxConfig) -> Iterator[torch.nn.Module]:
    """Eval mode, `values_override` applied to the model config, patching specs on; all restored after, along
    with the module tree and the modules' str/bool attributes, which a forward may have switched."""
    was_training = model.training
    tree = _module_tree(model)
    overrides = dict(config.values_override or {})
    model_config = getattr(model, "config", None)
    saved: dict[str, Any] = {}
    missing = object()
    try:
        model.eval()
        if model_config is not None:
            for key, value in overrides.items():
                saved[key] = getattr(model_config, key, missing)
                setattr(model_config, key, value)
        with config.patched_ops():
            yield model
    finally:
        if model_config is not None:
            for key, value in saved.items():
                if value is missing:
                    delattr(model_config, key)
                else:
                    setattr(model_config, key, value)
        model.train(was_training)
        for module, children, attributes in tree:
            module._modules.clear()
            module._modules.update(children)
            for key, value in attributes.items():
                object.__setattr__(module, key, value)


@contextlib.contextmanager
def attention_implementation(model: Any, implementation: str | None) -> Iterator[None]:
    """Switch `model` (and its sub-models) to another attention implementation; restore it in ``finally``."""
    if implementation is None or getattr(model.config, "_attn_implementation", None) == implementation:
        yield
        return
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation(implementation)
        yield
    finally:
        model.set_attn_implementation(previous)


#: Attention implementations a graph is better captured as eager: torch.export keeps SDPA as one operator that
#: the ONNX converter decomposes with a transposed-key reshape chain and an IsNaN/Where guard per layer (for
#: rows that mask everything), which onnxruntime cannot fuse away; eager attention is a plain MatMul, Softmax
#: and MatMul with a finite additive mask, the graph runtimes optimise best.
_CAPTURED_AS_EAGER = frozenset({"sdpa"})


def _outermost_pretrained(module: torch.nn.Module) -> list[Any]:
    """The Transformers models in `module`'s tree that no other Transformers model in it contains."""
    from transformers import PreTrainedModel

    found: list[Any] = []
    inside: set[int] = set()
    for sub in module.modules():
        if id(sub) in inside or not isinstance(sub, PreTrainedModel):
            continue
        found.append(sub)
        inside.update(id(m) for m in sub.modules())
    return found


def _attention_settings(models: list[Any]) -> list[tuple[Any, Any]]:
    """Every config of `models` (their sub-models' and nested sub-configs included) with the attention
    implementation it holds now: what switching to eager rewrites, to put back exactly afterwards."""
    from transformers import PreTrainedModel

    configs: dict[int, Any] = {}
    pending: list[Any] = [m.config for model in models for m in model.modules() if isinstance(m, PreTrainedModel)]
    while pending:
        config = pending.pop()
        if config is None or id(config) in configs:
            continue
        configs[id(config)] = config
        pending.extend(getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {})
    return [(config, config.__dict__.get("_attn_implementation_internal")) for config in configs.values()]


@contextlib.contextmanager
def eager_attention_for_capture(module: torch.nn.Module) -> Iterator[None]:
    """Capture the Transformers models in `module` with eager attention where they run SDPA; restore after.

    A model that refuses eager attention keeps its own implementation. Validation runs the model as the user
    loaded it (outside this block), so the graph is still compared with the model's own attention.
    """
    chosen = [
        model
        for model in _outermost_pretrained(module)
        if getattr(getattr(model, "config", None), "_attn_implementation", None) in _CAPTURED_AS_EAGER
    ]
    saved = _attention_settings(chosen)
    try:
        for model in chosen:
            try:
                model.set_attn_implementation("eager")
            except (ValueError, ImportError, NotImplementedError):
                continue
        yield
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation


def untied_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` in which every parameter shared by several modules is a separate clone.

    TorchScript cannot hold shared parameters (input embeddings tied to an LM head, encoder and decoder
    embeddings); the old ``torchscript=True`` flag cloned them. The caller's model is left as it was. The
    copy must not be trained further: the clones would drift apart.
    """
    import copy

    import torch

    clone = copy.deepcopy(model)
    seen: set[int] = set()
    for _, module in list(clone.named_modules(remove_duplicate=False)):
        for param_name, param in list(module.named_parameters(recurse=False)):
            if id(param) in seen:
                setattr(
                    module, param_name, torch.nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
                )
            else:
                seen.add(id(param))
    return clone
