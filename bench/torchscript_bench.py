"""TorchScript backend timings for a BERT-base-size model with random weights.

Measures, for each traced (maximum) shape: the trace (untied copy, wrapper, ``torch.jit.trace``), the check of
two other shapes, the save; then, in a fresh Python process, ``import torch``, ``torch.jit.load`` and the first
call, the steady-state call, and the same through exporter's loader (`exporter_torchscript.load`, which pads a
shorter input up to the traced shape). Eager PyTorch latency is given for comparison. Prints a Markdown table
and, with ``--write``, records it in bench/results/torchscript.md.

    python bench/torchscript_bench.py --write
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import transformers
from transformers import BertConfig, BertModel

from exporter_core.architectures.encoders import BertOnnxConfig
from exporter_torchscript.static import save_module
from exporter_torchscript.tracing import generalization_checks, trace_for_export

RESULTS = Path(__file__).parent / "results" / "torchscript.md"
BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}

FRESH_PROCESS = textwrap.dedent(
    """
    import json, statistics, sys, time
    started = time.perf_counter()
    import torch
    imported = time.perf_counter()
    path, batch, length, loader = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "loader"
    if loader:
        from exporter_torchscript import load
        module = load(path)
    else:
        module = torch.jit.load(path)
    loaded = time.perf_counter()
    ids = torch.randint(1000, 30000, (batch, length))
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    with torch.no_grad():
        module(*inputs)
        first = time.perf_counter()
        steady = []
        for _ in range(5):
            t = time.perf_counter()
            module(*inputs)
            steady.append(time.perf_counter() - t)
    print(json.dumps({"import_torch": imported - started, "load": loaded - imported, "first_call": first - loaded,
                      "steady_call": statistics.median(steady)}))
    """
)


def _fresh(path: Path, batch: int, length: int, loader: bool) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), str(batch), str(length), "loader" if loader else "raw"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _eager_latency(model: torch.nn.Module, batch: int, length: int) -> float:
    ids = torch.randint(1000, 30000, (batch, length))
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        model(**kwargs)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model(**kwargs)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(shapes: list[tuple[int, int]]) -> str:
    """Measure every shape and return the Markdown report."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**BERT_BASE)).eval()
    config = BertOnnxConfig(model.config)
    parameters = sum(p.numel() for p in model.parameters())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for batch, length in shapes:
            path = Path(folder) / f"bert-{batch}x{length}.pt"
            t = time.perf_counter()
            traced = trace_for_export(model, config, batch_size=batch, sequence_length=length, check_other_shapes=False)
            trace_s = time.perf_counter() - t
            t = time.perf_counter()
            checks = generalization_checks(traced.module, model, config, traced.contract.traced_shape)
            check_s = time.perf_counter() - t
            traced.contract.generalization_checks = checks
            traced.contract.generalizes = all(c["passed"] for c in checks if c["passed"] is not None)
            t = time.perf_counter()
            save_module(traced.module, traced.contract, path)
            save_s = time.perf_counter() - t
            raw = _fresh(path, batch, length, loader=False)
            shorter = max(2, length // 2)
            loader = _fresh(path, batch, shorter, loader=True)
            rows.append(
                {
                    "shape": f"{batch} × {length}",
                    "trace": trace_s,
                    "check": check_s,
                    "save": save_s,
                    "size": path.stat().st_size / 2**20,
                    "raw": raw,
                    "loader": loader,
                    "shorter": f"{batch} × {shorter}",
                    "eager": _eager_latency(model, batch, length),
                    "generalizes": traced.contract.generalizes,
                }
            )
    return _markdown(rows, parameters)


def _markdown(rows: list[dict], parameters: int) -> str:
    lines = [
        "# TorchScript backend: BERT-base-size model, random weights",
        "",
        f"Recorded {datetime.date.today().isoformat()} by `python bench/torchscript_bench.py --write`: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {parameters / 1e6:.1f} M parameters "
        "(hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30522). Times in seconds; calls are "
        "`torch.no_grad()`, steady = median of 5 calls after the first.",
        "",
        "| traced shape | trace | check 2 other shapes | save | file MiB | fresh process: import torch | torch.jit.load | first call | steady call | eager steady call | generalizes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        raw = r["raw"]
        lines.append(
            f"| {r['shape']} | {r['trace']:.2f} | {r['check']:.2f} | {r['save']:.2f} | {r['size']:.0f} | "
            f"{raw['import_torch']:.2f} | {raw['load']:.2f} | {raw['first_call']:.3f} | {raw['steady_call']:.3f} | "
            f"{r['eager']:.3f} | {r['generalizes']} |"
        )
    lines += [
        "",
        "Through exporter's loader (`exporter_torchscript.load`: reads the metadata, pads a shorter input up to the "
        "traced shape, cuts the outputs back), called with a shorter input:",
        "",
        "| traced shape | input shape | load | first call | steady call |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        loader = r["loader"]
        lines.append(
            f"| {r['shape']} | {r['shorter']} | {loader['load']:.2f} | {loader['first_call']:.3f} | {loader['steady_call']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark; print the table; with --write, record it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"record the table in {RESULTS}")
    parser.add_argument("--shapes", default="1x128,8x128", help="traced shapes, BATCHxSEQUENCE, comma-separated")
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in item.split("x")) for item in args.shapes.split(",")]
    report = run(shapes)  # type: ignore[arg-type]
    print(report)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
