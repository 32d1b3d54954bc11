"""One decoder file for both steps of an encoder-decoder: the weights stored once.

An encoder-decoder exported with past has two decoder graphs made from the same module: the first step (no past:
takes the encoder output, returns every present) and every later step (takes the past). Written separately, each
file holds the decoder's weights. `merge_decoders` writes one file, ``<first step>_merged.onnx``, that holds both:

- a boolean scalar input ``use_cache_branch`` and one ``If`` node: its then-branch is the step with past, its
  else-branch the step without. Both branches read the top-level inputs (the union of the two graphs' inputs, in
  the first step's order then the later step's) as outer-scope values, so a branch reads only what it needs;
- the weights: an initializer whose content (type, shape and bytes) occurs in both graphs becomes one top-level
  initializer both branches read; identical content under different names (the dynamo engine names a folded
  weight ``val_<n>`` by its position in the graph, which differs between the two) is kept once under one name.
  Anything else stays inside its branch;
- the outputs: both branches return every output in the same order and types. A present output the later step
  does not compute (the cross-attention keys and values, which never change) is its past input passed through,
  so the file returns every present whatever the branch;
- every value a branch computes is renamed under a prefix of its branch (``with_past/``, ``no_past/``), so no name
  of a branch shadows a top-level input, initializer or output.

Memory: the two graphs are read without their external data, and each weight is hashed, then copied into the
merged file's ``<name>.data``, from its file a chunk at a time (`exporter_onnx.merge_weights`): merging holds no
weight in memory whatever the decoder's size (merging two graphs of 64 MiB weights grew the peak resident set by
8 MiB; loading them with their weights, as the merge did before, by 704 MiB), so a streamed export stays streamed
through the merge.

Why an ``If`` rather than one graph whose past may be empty: the two graphs were captured and validated as they
are; the merged file runs exactly those two graphs, and the validation of the merged file (every scenario of both
plan parts, through the matching branch, and the generation parity check) runs the very file a user ships.

With ``use_cache_branch`` false the past inputs are read by nothing, yet ONNX Runtime wants every input fed: feed
them with a past decoder length of 0 (and the cross-attention past at the encoder length, e.g. zeros); the
declared length of the returned self-attention presents, ``past_decoder_sequence + decoder_sequence``, is then
true of both branches. With it true, ``encoder_hidden_states`` is read by nothing: feed zeros of the encoder
length. `exporter_onnx.runtime.MergedDecoderStep` does this for a caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core.errors import ExportError
from exporter_onnx.merge_weights import Content, content, load_structure, save_streaming_weights, subgraphs

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from exporter_core.plan import ExportPlan, PlanPart

__all__ = [
    "USE_CACHE_INPUT",
    "MergeInfo",
    "branch_inputs",
    "decoder_pair",
    "merge_decoders",
    "merged_artifact_name",
]

#: The boolean scalar input that picks the branch: true runs the step with past.
USE_CACHE_INPUT = "use_cache_branch"
_WITH_PAST_PREFIX = "with_past/"
_NO_PAST_PREFIX = "no_past/"


def merged_artifact_name(artifact: str) -> str:
    """The merged file's name: the first step's with ``_merged`` before the suffix (``decoder_model_merged.onnx``)."""
    path = Path(artifact)
    return f"{path.stem}_merged{path.suffix}"


@dataclass
class MergeInfo:
    """What `merge_decoders` wrote, for the report and metadata."""

    path: Path
    #: Top-level initializers both branches read (the weights stored once).
    shared_initializers: int
    #: Of those, how many were stored under another name in one of the two graphs.
    renamed_initializers: int
    #: Initializers left inside a branch: (with past, without past).
    branch_initializers: tuple[int, int]
    #: Outputs the branch with past returns by passing its past input through.
    passed_through: list[str] = field(default_factory=list)
    #: Bytes of initializer data in the merged file, and in the two graphs it replaces together.
    weight_bytes: int = 0
    source_weight_bytes: int = 0

    def metadata(self) -> dict[str, Any]:
        """Facts for the report and metadata files."""
        return {
            "switch": f"{USE_CACHE_INPUT} (bool scalar): true runs the step with past, false the first step",
            "no_cache_feed": "past_key_values.*: past decoder length 0 (cross-attention past: zeros of the encoder "
            "length); the runner feeds them",
            "shared_initializers": self.shared_initializers,
            "renamed_initializers": self.renamed_initializers,
            "branch_initializers": {"with_past": self.branch_initializers[0], "no_past": self.branch_initializers[1]},
            "passed_through": self.passed_through,
            "weight_bytes": self.weight_bytes,
            "source_weight_bytes": self.source_weight_bytes,
        }


def _referenced(graph: onnx.GraphProto) -> set[str]:
    """Names the nodes of `graph` (and of its subgraphs) read, the graph's outputs included."""
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(name for name in node.input if name)
        for subgraph in subgraphs(node):
            names.update(_referenced(subgraph))
    return names


def _rename_references(graph: onnx.GraphProto, renamed: Mapping[str, str]) -> None:
    """Rename what the nodes of a subgraph read from outer scopes (SSA: a subgraph never redefines those names)."""
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        for subgraph in subgraphs(node):
            _rename_references(subgraph, renamed)
    for output in graph.output:
        output.name = renamed.get(output.name, output.name)


@dataclass
class _Source:
    """One of the two decoder graphs, loaded without its external data (`load_structure`)."""

    model: onnx.ModelProto
    prefix: str

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    @property
    def input_names(self) -> list[str]:
        return [value.name for value in self.graph.input]

    @property
    def output_names(self) -> list[str]:
        return [value.name for value in self.graph.output]

    def weights(self) -> dict[str, onnx.TensorProto]:
        """Initializers by name (none that is also a graph input: a caller may override those)."""
        inputs = set(self.input_names)
        if self.graph.sparse_initializer:
            raise ExportError(
                "a decoder graph holds sparse initializers, which the merge does not handle; use --no-merge"
            )
        return {t.name: t for t in self.graph.initializer if t.name not in inputs}


def _value_types(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    return {value.name: value for value in [*graph.input, *graph.output]}


def _same_type(a: onnx.ValueInfoProto, b: onnx.ValueInfoProto) -> bool:
    ta, tb = a.type.tensor_type, b.type.tensor_type
    return ta.elem_type == tb.elem_type and len(ta.shape.dim) == len(tb.shape.dim)


def _branch(
    source: _Source,
    shared: Mapping[str, str],
    local_keep: set[str],
    outputs: Sequence[str],
    passed_through: Mapping[str, str],
) -> onnx.GraphProto:
    """`source`'s graph as an ``If`` branch: no inputs (top-level ones are read from the outer scope), shared
    weights read from the top level (`shared`: own name -> top-level name), every value it computes renamed under
    its prefix, `outputs` in this order (`passed_through`: output -> the input it returns)."""
    import onnx
    from onnx import helper

    graph = source.graph
    prefix = source.prefix
    inputs = set(source.input_names)
    renamed: dict[str, str] = dict(shared)
    for tensor in graph.initializer:
        if tensor.name in local_keep:
            renamed[tensor.name] = prefix + tensor.name
    for node in graph.node:
        for name in node.output:
            if name:
                renamed[name] = prefix + name
    for name in inputs:
        renamed.pop(name, None)

    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [renamed.get(name, name) for name in node.input]
        copy.output[:] = [renamed.get(name, name) if name else name for name in node.output]
        if copy.name:
            copy.name = prefix + copy.name
        for subgraph in subgraphs(copy):
            _rename_references(subgraph, renamed)
        nodes.append(copy)
    initializers = []
    for tensor in graph.initializer:
        if tensor.name in local_keep:
            copy_tensor = onnx.TensorProto()
            copy_tensor.CopyFrom(tensor)
            copy_tensor.name = prefix + tensor.name
            initializers.append(copy_tensor)
    value_info = []
    for value in graph.value_info:
        if value.name in renamed:
            copy_value = onnx.ValueInfoProto()
            copy_value.CopyFrom(value)
            copy_value.name = renamed[value.name]
            value_info.append(copy_value)

    types = _value_types(graph)
    branch_outputs = []
    for name in outputs:
        source_name = passed_through.get(name, name)
        value = renamed.get(source_name, source_name)
        if value in inputs or value in shared.values() or name in passed_through:
            # A branch output must be computed inside the branch: an Identity returns an outer-scope value.
            produced = f"{prefix}{name}/identity"
            nodes.append(helper.make_node("Identity", [value], [produced], name=produced))
            value = produced
        declared = onnx.ValueInfoProto()
        declared.CopyFrom(types[source_name])
        declared.name = value
        branch_outputs.append(declared)
    return helper.make_graph(
        _topological(nodes),
        prefix.rstrip("/"),
        inputs=[],
        outputs=branch_outputs,
        initializer=initializers,
        value_info=value_info,
    )


def _topological(nodes: Sequence[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` in an order where each comes after the nodes whose outputs it reads (its subgraphs' reads included),
    otherwise in their given order. onnxruntime's float16 converter appends the casts of graph inputs after the nodes
    reading them: onnxruntime runs such a graph, but ``onnx.checker`` refuses a subgraph that is not sorted."""
    import heapq

    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    readers: dict[int, list[int]] = {}
    waiting = []
    for index, node in enumerate(nodes):
        reads = set(node.input)
        for subgraph in subgraphs(node):
            reads |= _referenced(subgraph)
        needs = {producer[name] for name in reads if name in producer and producer[name] != index}
        for needed in needs:
            readers.setdefault(needed, []).append(index)
        waiting.append(len(needs))
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for reader in readers.get(index, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) != len(nodes):
        raise ExportError("a decoder graph has a cycle; it cannot be merged (use --no-merge)")
    return [nodes[index] for index in order]


def _switch_node(
    outputs: Sequence[str], *, with_past_branch: onnx.GraphProto, no_past_branch: onnx.GraphProto
) -> onnx.NodeProto:
    """The ``If`` node: ``use_cache_branch`` true runs the step with past, false the first step."""
    from onnx import helper

    return helper.make_node(
        "If",
        [USE_CACHE_INPUT],
        list(outputs),
        name=USE_CACHE_INPUT,
        then_branch=with_past_branch,
        else_branch=no_past_branch,
    )


def _domains(graph: onnx.GraphProto) -> set[str]:
    """Operator domains the nodes of `graph` and of its subgraphs use."""
    used = set()
    for node in graph.node:
        used.add("" if node.domain == "ai.onnx" else node.domain)
        for subgraph in subgraphs(node):
            used |= _domains(subgraph)
    return used


def _opsets(no_past: onnx.ModelProto, with_past: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    from onnx import helper

    versions: dict[str, int] = {}
    for model in (no_past, with_past):
        for opset in model.opset_import:
            domain = "" if opset.domain == "ai.onnx" else opset.domain
            if versions.setdefault(domain, opset.version) != opset.version:
                raise ExportError(
                    f"the two decoder graphs import different versions of opset domain {domain or 'ai.onnx'!r} "
                    f"({versions[domain]} and {opset.version}); export them with one --opset, or use --no-merge"
                )
    # onnxruntime's transformer optimizer writes its com.microsoft nodes without importing the domain (onnxruntime
    # runs them; onnx.checker refuses them): a domain used but not imported is imported at version 1, the version of
    # every onnxruntime contrib operator.
    for model in (no_past, with_past):
        for domain in _domains(model.graph) - set(versions):
            versions[domain] = 1
    return [helper.make_opsetid(domain, version) for domain, version in versions.items()]


def _functions(no_past: onnx.ModelProto, with_past: onnx.ModelProto) -> list[onnx.FunctionProto]:
    functions: dict[tuple[str, str, str], onnx.FunctionProto] = {}
    for model in (no_past, with_past):
        for function in model.functions:
            key = (function.domain, function.name, function.overload)
            if key in functions and functions[key].SerializeToString() != function.SerializeToString():
                raise ExportError(
                    f"the two decoder graphs define function {function.domain}.{function.name} differently; "
                    "use --no-merge"
                )
            functions.setdefault(key, function)
    return list(functions.values())


def _output_value(name: str, no_past: onnx.ValueInfoProto, with_past: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """The top-level output: the step with past's axes (true of the first step too, fed a past of length 0)."""
    import onnx

    value = onnx.ValueInfoProto()
    value.CopyFrom(with_past)
    value.name = name
    dims = value.type.tensor_type.shape.dim
    others = no_past.type.tensor_type.shape.dim
    if len(dims) != len(others):
        raise ExportError(
            f"output {name!r} has rank {len(others)} in the first decoder step but {len(dims)} in the step with "
            "past; use --no-merge"
        )
    for dim, other in zip(dims, others, strict=True):
        if dim.HasField("dim_value") and other.HasField("dim_value") and dim.dim_value != other.dim_value:
            dim.Clear()  # (a size the two steps disagree on: left unnamed)
    return value


def merge_decoders(no_past_path: Path, with_past_path: Path, path: Path, *, remove_sources: bool = True) -> MergeInfo:
    """Write the decoder graphs at `no_past_path` (first step) and `with_past_path` (later steps) as one file at
    `path`, weights stored once in ``<name>.data`` beside it, checked with ``onnx.checker``. The two source files
    (and their external data) are removed unless `remove_sources` is false.

    Raises `ExportError` when the graphs cannot be merged (different input or output types, a present output the
    later step neither computes nor has as an input), naming what differs.
    """
    import onnx
    from onnx import helper

    from exporter_core.cache import PAST_PREFIX, PRESENT_PREFIX

    no_past_model, no_past_files = load_structure(no_past_path)
    with_past_model, with_past_files = load_structure(with_past_path)
    no_past = _Source(no_past_model, _NO_PAST_PREFIX)
    with_past = _Source(with_past_model, _WITH_PAST_PREFIX)
    sources_external = no_past_files | with_past_files

    # -- inputs: the union, each name of one type --------------------------------------------------------------
    no_past_types, with_past_types = _value_types(no_past.graph), _value_types(with_past.graph)
    inputs: list[onnx.ValueInfoProto] = []
    for source in (no_past, with_past):
        for value in source.graph.input:
            known = next((v for v in inputs if v.name == value.name), None)
            if known is None:
                inputs.append(value)
            elif not _same_type(known, value):
                raise ExportError(
                    f"input {value.name!r} has different types in the two decoder graphs; they cannot be merged "
                    "(use --no-merge)"
                )
    if USE_CACHE_INPUT in {v.name for v in inputs}:
        raise ExportError(f"a decoder graph already has an input named {USE_CACHE_INPUT!r}; use --no-merge")
    switch = helper.make_tensor_value_info(USE_CACHE_INPUT, onnx.TensorProto.BOOL, [])

    # -- outputs: the first step's, in its order; the later step passes through what it does not compute ------
    outputs = no_past.output_names
    extra = [name for name in with_past.output_names if name not in outputs]
    if extra:
        raise ExportError(f"the decoder with past returns {extra}, which the first step does not; use --no-merge")
    passed_through: dict[str, str] = {}
    for name in outputs:
        if name in with_past_types and name in with_past.output_names:
            if not _same_type(no_past_types[name], with_past_types[name]):
                raise ExportError(f"output {name!r} has different types in the two decoder graphs; use --no-merge")
            continue
        past = PAST_PREFIX + name[len(PRESENT_PREFIX) :] if name.startswith(PRESENT_PREFIX + ".") else None
        if past is None or past not in with_past.input_names:
            raise ExportError(
                f"the decoder with past neither returns {name!r} nor takes it back as an input; use --no-merge"
            )
        passed_through[name] = past

    # -- weights: one top-level initializer per content both graphs hold ---------------------------------------
    weights = {source.prefix: source.weights() for source in (no_past, with_past)}
    contents = {prefix: {name: content(t) for name, t in tensors.items()} for prefix, tensors in weights.items()}
    digests = {prefix: {name: c for name, (c, _) in named.items()} for prefix, named in contents.items()}
    sizes = {prefix: {name: n for name, (_, n) in named.items()} for prefix, named in contents.items()}
    in_no_past = set(digests[_NO_PAST_PREFIX].values())
    in_both = in_no_past & set(digests[_WITH_PAST_PREFIX].values())
    top_names: dict[Content, str] = {}
    # A name both graphs give the same content keeps it; other shared contents take the first step's first name.
    for name, digest in digests[_NO_PAST_PREFIX].items():
        if digest in in_both and digests[_WITH_PAST_PREFIX].get(name) == digest:
            top_names.setdefault(digest, name)
    for name, digest in digests[_NO_PAST_PREFIX].items():
        if digest in in_both:
            top_names.setdefault(digest, name)
    shared_tensors = []
    for name in top_names.values():
        tensor = onnx.TensorProto()
        tensor.CopyFrom(weights[_NO_PAST_PREFIX][name])
        shared_tensors.append(tensor)
    shared_maps: dict[str, dict[str, str]] = {}
    local: dict[str, set[str]] = {}
    for prefix in (_NO_PAST_PREFIX, _WITH_PAST_PREFIX):
        shared_maps[prefix] = {n: top_names[d] for n, d in digests[prefix].items() if d in top_names}
        local[prefix] = {n for n in digests[prefix] if n not in shared_maps[prefix]}
    renamed_count = len(
        {d for prefix in shared_maps for n, d in digests[prefix].items() if d in top_names and top_names[d] != n}
    )
    top_level = [v.name for v in inputs] + [USE_CACHE_INPUT] + list(top_names.values()) + outputs
    if len(set(top_level)) != len(top_level):
        raise ExportError(
            "the merged decoder's top-level names collide (an input named like a weight?); use --no-merge"
        )

    then_branch = _branch(with_past, shared_maps[_WITH_PAST_PREFIX], local[_WITH_PAST_PREFIX], outputs, passed_through)
    else_branch = _branch(no_past, shared_maps[_NO_PAST_PREFIX], local[_NO_PAST_PREFIX], outputs, {})
    switch_node = _switch_node(outputs, with_past_branch=then_branch, no_past_branch=else_branch)
    declared = [
        _output_value(name, no_past_types[name], with_past_types[passed_through.get(name, name)]) for name in outputs
    ]
    graph = helper.make_graph(
        [switch_node], "merged_decoder", inputs=[*inputs, switch], outputs=declared, initializer=shared_tensors
    )
    model = helper.make_model(
        graph,
        opset_imports=_opsets(no_past.model, with_past.model),
        functions=_functions(no_past.model, with_past.model),
        producer_name=no_past.model.producer_name or "exporter",
        producer_version=no_past.model.producer_version,
    )
    model.ir_version = max(no_past.model.ir_version, with_past.model.ir_version)
    source_bytes = sum(n for named in sizes.values() for n in named.values())
    merged_bytes = sum(sizes[_NO_PAST_PREFIX][name] for name in top_names.values()) + sum(
        sizes[prefix][name] for prefix in local for name in local[prefix]
    )
    info = MergeInfo(
        path=path,
        shared_initializers=len(shared_tensors),
        renamed_initializers=renamed_count,
        branch_initializers=(len(local[_WITH_PAST_PREFIX]), len(local[_NO_PAST_PREFIX])),
        passed_through=sorted(passed_through),
        weight_bytes=merged_bytes,
        source_weight_bytes=source_bytes,
    )
    del no_past, with_past, weights, no_past_model, with_past_model
    save_streaming_weights(model, path)
    del model
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        path.unlink(missing_ok=True)
        Path(f"{path}.data").unlink(missing_ok=True)
        raise ExportError(f"the merged decoder is not a valid ONNX model ({first}); use --no-merge") from None
    if remove_sources:
        for source_file in {no_past_path, with_past_path, *sources_external}:
            if source_file.resolve() != path.resolve() and source_file.is_file():
                source_file.unlink()
    return info


def branch_inputs(path: str | Path) -> dict[bool, list[str]]:
    """The top-level inputs each branch of the merged decoder at `path` reads (True: the step with past), in the
    file's input order; read from the graph itself (weights not loaded)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    switch = next((node for node in graph.node if node.op_type == "If" and USE_CACHE_INPUT in node.input), None)
    if switch is None:
        raise ValueError(f"{path} is not a merged decoder: no If node switched by {USE_CACHE_INPUT!r}")
    names = [value.name for value in graph.input if value.name != USE_CACHE_INPUT]
    branches = {attribute.name: attribute.g for attribute in switch.attribute}
    read = {True: _referenced(branches["then_branch"]), False: _referenced(branches["else_branch"])}
    return {flag: [name for name in names if name in read[flag]] for flag in (True, False)}


def decoder_pair(plan: ExportPlan) -> tuple[PlanPart, PlanPart] | None:
    """(first step, step with past) of a plan that has two steps of one decoder to merge, else None.

    Read from what the plan declares, whatever the family: two parts of one module and one cache layout, one taking
    no past key values and one taking them.
    """
    from exporter_core.cache import PAST_PREFIX

    cached = [part for part in plan.parts if part.cache is not None]
    takes_past = [part for part in cached if any(n.startswith(PAST_PREFIX + ".") for n in part.input_names)]
    first = [part for part in cached if part not in takes_past]
    if len(first) != 1 or len(takes_past) != 1:
        return None
    no_past, with_past = first[0], takes_past[0]
    if no_past.module is not with_past.module or no_past.cache != with_past.cache:
        return None
    return no_past, with_past
