"""The backend's options and how each maps onto the arguments of the SDK that compiles for the chosen target.

* ``--target inf1`` compiles with ``torch_neuron.trace``; ``inf2`` / ``trn1`` with ``torch_neuronx.trace``, and
  neuronx-cc gets ``--target inf2|trn1``.
* ``--dynamic-batch``: Inf1 ``dynamic_batch_size=True``; Inf2/Trn1 ``torch_neuronx.dynamic_batch(traced)`` after
  tracing (and again when loading).
* ``--auto-cast none|matmul|all`` with ``--auto-cast-type bf16|fp16|tf32``: Inf1 ``--fast-math none``,
  ``fp32-cast-matmult-bf16`` / ``-fp16``, ``fp32-cast-all`` / ``fp32-cast-all-fp16`` (no tf32 on Inf1);
  Inf2/Trn1 ``--auto-cast none|matmult|all --auto-cast-type <type>`` (bf16 when no type is given).
  Without ``--auto-cast`` the compiler's own default applies, which has changed between compiler releases
  (casting FP32 matrix multiplications to BF16 in several): pass ``--auto-cast`` to be explicit.
* ``--compiler-args``: appended, as given, after the arguments above; ``--compiler-workdir``: ``compiler_workdir=``.

Pure functions: nothing here imports torch or the SDK.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from exporter_core.backend import refuse_unknown_options
from exporter_core.errors import InvalidArgumentError, did_you_mean, option_hint
from exporter_neuron.sdk import DEFAULT_TARGET, TARGETS, sdk_for

__all__ = [
    "AUTO_CAST",
    "AUTO_CAST_TYPES",
    "OPTIONS",
    "NeuronOptions",
    "compiler_arguments",
    "parse_options",
    "trace_arguments",
    "trace_function",
]

#: Our spellings of the cast policies (the compilers spell "matmul" as "matmult").
AUTO_CAST = ("none", "matmul", "all")
AUTO_CAST_TYPES = ("bf16", "fp16", "tf32")
#: Options `parse_options` accepts (the keys of `ExportRequest.options`).
OPTIONS = (
    "target",
    "batch_size",
    "sequence_length",
    "dynamic_batch",
    "compiler_args",
    "auto_cast",
    "auto_cast_type",
    "compiler_workdir",
    "sdk_python",
)

_NEURON_CC_FAST_MATH = {
    ("none", None): "none",
    ("matmul", "bf16"): "fp32-cast-matmult-bf16",
    ("matmul", "fp16"): "fp32-cast-matmult-fp16",
    ("all", "bf16"): "fp32-cast-all",
    ("all", "fp16"): "fp32-cast-all-fp16",
}
#: Compiler flags our own options set; giving them in --compiler-args too would be ambiguous.
_CAST_FLAGS = ("--auto-cast", "--auto-cast-type", "--fast-math", "--fp32-cast")


@dataclass(frozen=True)
class NeuronOptions:
    """Checked options of one compilation (None sizes: the architecture's defaults)."""

    target: str = DEFAULT_TARGET
    batch_size: int | None = None
    sequence_length: int | None = None
    dynamic_batch: bool = False
    compiler_args: tuple[str, ...] = field(default_factory=tuple)
    auto_cast: str | None = None
    auto_cast_type: str | None = None
    compiler_workdir: str | None = None
    #: The Neuron SDK's own interpreter (or its environment's folder, or ``auto``); None: this process's SDK.
    sdk_python: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The options as `parse_options` reads them back (the dict the backend's `check_options` returns)."""
        return {**asdict(self), "compiler_args": list(self.compiler_args)}

    @property
    def uses_neuronx(self) -> bool:
        """True for the torch-neuronx targets (Inf2, Trn1)."""
        return self.target != "inf1"


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(
            f"{name} must be a positive integer, got {value!r}; for example {option_hint(name, 16)}"
        )
    return value


def _split_compiler_args(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidArgumentError(
        f"compiler_args must be a string or a list of strings, got {value!r}; for example --compiler-args='--optlevel 2'"
    )


def _flag_names(args: tuple[str, ...]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def parse_options(options: Mapping[str, Any]) -> NeuronOptions:
    """`options` checked and normalised; a mistake raises `InvalidArgumentError` naming the fix."""
    refuse_unknown_options("neuron", options, OPTIONS)
    target = options.get("target") or DEFAULT_TARGET
    if target not in TARGETS:
        raise InvalidArgumentError(
            f"unknown Neuron target {target!r}{did_you_mean(str(target), TARGETS)}; choose one of "
            f"{', '.join(TARGETS)} (for example {option_hint('target', 'inf2')})"
        )
    sequence_length = _positive("sequence_length", options.get("sequence_length"))
    if sequence_length is not None and sequence_length < 2:
        raise InvalidArgumentError(
            "sequence_length must be at least 2 (room for the special tokens); for example "
            f"{option_hint('sequence_length', 128)}"
        )
    auto_cast = options.get("auto_cast")
    auto_cast_type = options.get("auto_cast_type")
    if auto_cast is not None and auto_cast not in AUTO_CAST:
        raise InvalidArgumentError(
            f"auto_cast must be one of {', '.join(AUTO_CAST)}, got {auto_cast!r}; for example "
            f"{option_hint('auto_cast', 'matmul')}"
        )
    if auto_cast_type is not None:
        if auto_cast_type not in AUTO_CAST_TYPES:
            raise InvalidArgumentError(
                f"auto_cast_type must be one of {', '.join(AUTO_CAST_TYPES)}, got {auto_cast_type!r}; for example --auto-cast-type bf16"
            )
        if auto_cast in (None, "none"):
            raise InvalidArgumentError(
                "--auto-cast-type needs --auto-cast matmul or --auto-cast all; for example --auto-cast matmul --auto-cast-type fp16"
            )
        if target == "inf1" and auto_cast_type == "tf32":
            raise InvalidArgumentError(
                "Inf1 (neuron-cc) cannot cast to tf32; use --auto-cast-type bf16 or fp16, or --target inf2"
            )
    compiler_args = _split_compiler_args(options.get("compiler_args"))
    given = _flag_names(compiler_args)
    if auto_cast is not None and given & set(_CAST_FLAGS):
        raise InvalidArgumentError(
            f"--auto-cast and --compiler-args both set the cast policy ({', '.join(sorted(given & set(_CAST_FLAGS)))}); use one of them"
        )
    if "--target" in given:
        raise InvalidArgumentError(
            "give the instance family with --target (inf1, inf2, trn1), not inside --compiler-args"
        )
    workdir = options.get("compiler_workdir")
    if workdir is not None and not isinstance(workdir, str):
        workdir = str(workdir)
    sdk_python = options.get("sdk_python")
    if sdk_python is not None and (not isinstance(sdk_python, (str, os.PathLike)) or not str(sdk_python)):
        raise InvalidArgumentError(
            f"sdk_python must be the path of a Python interpreter or 'auto', got {sdk_python!r}; "
            "for example --sdk-python /opt/aws_neuronx_venv_pytorch_2_9/bin/python"
        )
    return NeuronOptions(
        target=target,
        batch_size=_positive("batch_size", options.get("batch_size")),
        sequence_length=sequence_length,
        dynamic_batch=bool(options.get("dynamic_batch") or False),
        compiler_args=compiler_args,
        auto_cast=auto_cast,
        auto_cast_type=auto_cast_type,
        compiler_workdir=workdir,
        sdk_python=None if sdk_python is None else str(sdk_python),
    )


def compiler_arguments(options: NeuronOptions) -> list[str]:
    """The compiler's command-line arguments for `options`: target and cast policy first, then --compiler-args."""
    args: list[str] = []
    if options.uses_neuronx:
        args += ["--target", options.target]
        if options.auto_cast is not None:
            args += ["--auto-cast", "matmult" if options.auto_cast == "matmul" else options.auto_cast]
            if options.auto_cast != "none":
                args += ["--auto-cast-type", options.auto_cast_type or "bf16"]
    elif options.auto_cast is not None:
        key = (options.auto_cast, None if options.auto_cast == "none" else options.auto_cast_type or "bf16")
        args += ["--fast-math", _NEURON_CC_FAST_MATH[key]]
    return args + list(options.compiler_args)


def trace_function(options: NeuronOptions) -> str:
    """The SDK function that compiles for the target, as ``module.function``."""
    return f"{sdk_for(options.target).module}.trace"


def trace_arguments(options: NeuronOptions) -> dict[str, Any]:
    """Keyword arguments for the SDK's trace function (beyond the module and the example inputs)."""
    kwargs: dict[str, Any] = {"compiler_args": compiler_arguments(options)}
    if options.compiler_workdir is not None:
        kwargs["compiler_workdir"] = options.compiler_workdir
    if not options.uses_neuronx:
        # torch-neuron compiles dynamic batching in; torch-neuronx switches it on after tracing (dynamic_batch).
        kwargs["dynamic_batch_size"] = options.dynamic_batch
    return kwargs
