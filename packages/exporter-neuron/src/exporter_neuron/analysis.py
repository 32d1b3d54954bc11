"""Which operators of a model run on Neuron and which fall back to CPU (``exporter neuron analyze``).

* Inf2/Trn1: ``torch_neuronx.analyze(wrapper, example_inputs)`` checks each operator against neuronx-cc and
  returns supported operators with counts and unsupported ones with where they failed; that result is the report.
  (``torch_neuronx.trace`` refuses a model with unsupported operators unless partitioned.)
* Inf1: ``torch_neuron.analyze_model(wrapper, example_inputs=...)`` runs the SDK's own analysis, which it logs;
  its return value is not documented, so the per-operator table is built from the operators of the model's
  TorchScript graph, each looked up in the SDK's ``get_supported_operations()``. ``torch_neuron.trace`` runs the
  unsupported ones on CPU (``fallback=True``).

The model is wrapped and traced at the static shape exactly as for compiling.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from exporter_core.errors import ExportError
from exporter_core.padding import describe_shape, static_shape_of
from exporter_neuron.options import NeuronOptions
from exporter_neuron.sdk import InstalledSdk, import_sdk, require_sdk

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = ["OperatorReport", "analyze_operators", "graph_operators"]


@dataclass
class OperatorReport:
    """Operator support of one model for one target."""

    target: str
    #: The SDK call that produced the verdicts (``torch_neuronx.analyze``, ``torch_neuron.get_supported_operations``).
    source: str
    sdk: dict[str, Any]
    static_shape: dict[str, int]
    #: Operator kind -> count, for operators that run on Neuron.
    neuron: dict[str, int]
    #: Operator kind -> count, for operators that fall back to CPU (or that neuronx-cc rejects).
    cpu: dict[str, int]
    #: Per CPU operator kind, what the SDK said about it (where it failed, the source line).
    cpu_details: dict[str, str] = field(default_factory=dict)
    #: The SDK's own result, as returned (JSON-ready), for whoever needs more than the table.
    sdk_result: Any = None

    @property
    def percent_on_neuron(self) -> float | None:
        """Share of the analysed operators that run on Neuron, in percent; None when none were analysed."""
        total = sum(self.neuron.values()) + sum(self.cpu.values())
        return 100.0 * sum(self.neuron.values()) / total if total else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, with the percentage."""
        data = asdict(self)
        data["percent_on_neuron"] = self.percent_on_neuron
        return data

    def lines(self) -> list[str]:
        """The report as the command line prints it."""
        sdk = f"{self.sdk.get('distribution')} {self.sdk.get('version')}"
        if not self.sdk.get("aws_sdk"):
            sdk += ", a stand-in, not AWS's SDK"
        out = [
            f"Neuron operator support for {self.target} ({self.source}, {sdk}) at {describe_shape(self.static_shape)}:"
        ]
        on_neuron = sum(self.neuron.values())
        out.append(f"\t-[✓] {_count(on_neuron, 'operator')} ({_count(len(self.neuron), 'kind')}) run on Neuron")
        out += [f"\t\t{name}  {count}" for name, count in sorted(self.neuron.items())]
        on_cpu = sum(self.cpu.values())
        if on_cpu:
            fallback = (
                "fall back to CPU"
                if self.target == "inf1"
                else "are not supported by neuronx-cc (they fail tracing unless partitioned to CPU)"
            )
            out.append(f"\t-[x] {_count(on_cpu, 'operator')} ({_count(len(self.cpu), 'kind')}) {fallback}")
            for name, count in sorted(self.cpu.items()):
                detail = self.cpu_details.get(name)
                out.append(f"\t\t{name}  {count}" + (f"  ({detail})" if detail else ""))
        else:
            out.append("\t-[✓] no operator falls back to CPU")
        percent = self.percent_on_neuron
        if percent is not None:
            out.append(f"{percent:.1f}% of the analysed operators run on Neuron")
        return out


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_ready(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def graph_operators(traced: Any) -> Counter[str]:
    """Counts of the ``aten::`` operators in a traced module's graph, submodule calls inlined."""
    import torch

    graph = traced.inlined_graph if hasattr(traced, "inlined_graph") else traced.graph.copy()
    torch._C._jit_pass_inline(graph)
    counts: Counter[str] = Counter()
    stack = list(graph.nodes())
    while stack:
        node = stack.pop()
        if node.kind().startswith("aten::"):
            counts[node.kind()] += 1
        for block in node.blocks():
            stack.extend(block.nodes())
    return counts


def _accepted_keywords(function: Any, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `wanted` that `function` takes (SDK releases differ in their optional keywords)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(wanted)
    return {key: value for key, value in wanted.items() if key in parameters}


def _from_neuronx(result: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    neuron = {str(name): int(count) for name, count in dict(result.get("supported_operators") or {}).items()}
    cpu: Counter[str] = Counter()
    details: dict[str, str] = {}
    for entry in result.get("unsupported_operators") or []:
        kind = str(entry.get("kind", "?")) if isinstance(entry, Mapping) else str(entry)
        cpu[kind] += 1
        if isinstance(entry, Mapping) and kind not in details:
            where = entry.get("failureAt")
            call = entry.get("call")
            text = "; ".join(
                part
                for part in (f"failed at: {where}" if where else "", str(call).strip().splitlines()[0] if call else "")
                if part
            )
            if text:
                details[kind] = re.sub(r"\s+", " ", text)[:200]
    return neuron, dict(cpu), details


def analyze_operators(
    model: Any,
    config: OnnxConfig,
    options: NeuronOptions,
    *,
    preprocessor: Any = None,
    installed: InstalledSdk | None = None,
) -> OperatorReport:
    """Ask the target's SDK which of `model`'s operators run on Neuron at the options' static shape."""
    import torch

    from exporter_torchscript.static import example_inputs, first_line, static_sizes, traceable

    installed = installed or require_sdk(options.target)
    batch, sequence = static_sizes(config, options.batch_size, options.sequence_length)
    sdk_module = import_sdk(installed)
    dummy = example_inputs(config, preprocessor, batch, sequence)
    names = list(dummy)
    values = tuple(dummy.values())
    static = static_shape_of(dummy, config.inputs)
    with traceable(model, config, names) as wrapper:
        try:
            if options.uses_neuronx:
                extra = _accepted_keywords(sdk_module.analyze, {"is_hf_transformers": True})
                if options.compiler_workdir is not None:
                    extra["compiler_workdir"] = options.compiler_workdir
                result = sdk_module.analyze(wrapper, values, **extra)
                neuron, cpu, details = _from_neuronx(result or {})
                return OperatorReport(
                    target=options.target,
                    source=f"{installed.sdk.module}.analyze",
                    sdk=installed.describe(),
                    static_shape=static,
                    neuron=neuron,
                    cpu=cpu,
                    cpu_details=details,
                    sdk_result=_json_ready(result),
                )
            result = sdk_module.analyze_model(wrapper, example_inputs=values)
            supported = set(sdk_module.get_supported_operations())
            traced = torch.jit.trace(wrapper, values, check_trace=False, strict=True)
        except Exception as exc:
            raise ExportError(
                f"the {installed.sdk.module} analysis of {type(model).__name__} failed: {first_line(exc)}"
            ) from exc
    counts = graph_operators(traced)
    return OperatorReport(
        target=options.target,
        source=f"{installed.sdk.module}.analyze_model + get_supported_operations",
        sdk=installed.describe(),
        static_shape=static,
        neuron={name: count for name, count in counts.items() if name in supported},
        cpu={name: count for name, count in counts.items() if name not in supported},
        cpu_details={name: "not in get_supported_operations()" for name in counts if name not in supported},
        sdk_result=_json_ready(result),
    )
