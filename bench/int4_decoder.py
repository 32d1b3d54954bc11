"""How much smaller is a ``--quantize int4`` decoder, and how close are its logits?

Builds a Llama-shaped decoder with random weights (seeded, fp32 safetensors, a word-level tokenizer over its
vocabulary so the task checks also run on real sentences), exports ``causal-lm-with-past`` with the ONNX backend
twice — the plain fp32 graph and ``--quantize int4`` — each as its own process, and prints the files' sizes on disk
(graph and external data), their ratio, the int4 export's worst logit difference, next-token top-1 agreement and
logit cosine, as the export's own report states them (validation at the plan's scenarios and the task checks).

    python bench/int4_decoder.py --size small [--block-size 32] [--write]

Sizes: tiny (hidden 64, 2 layers, vocab 1000), small (hidden 1024, 8 layers, vocab 32000, ~170M parameters),
1b (hidden 2048, 16 layers, vocab 32000, ~1.1B parameters: about 10 GB of memory, several minutes per export).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "vocab_size": 1000},
    "small": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "vocab_size": 32000},
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16, "vocab_size": 32000},
}

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "int4-decoder.md"


def build_checkpoint(size: str, folder: Path) -> int:
    """A Llama-shaped decoder with random weights and untied embeddings; returns its parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from exporter_core.testing import build_tiny_tokenizer

    sizes = SIZES[size]
    heads = max(4, sizes["hidden_size"] // 64)
    config = AutoConfig.for_model(
        "llama",
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        **sizes,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder))
    build_tiny_tokenizer(sizes["vocab_size"]).save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and "onnx" in path.name)


def export(checkpoint: Path, output: Path, extra: list[str]) -> tuple[dict[str, Any], float, int]:
    """Run ``exporter onnx`` in its own process; the report, the wall time and the exit code."""
    report = output.with_suffix(".json")
    command = [
        sys.executable, "-m", "exporter", "onnx", "--model", str(checkpoint),
        "--feature", "causal-lm-with-past", "--quiet", "--report", str(report), *extra, str(output),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if not report.exists():
        raise SystemExit(f"export {' '.join(extra) or 'plain'} wrote no report:\n{done.stderr[-2000:]}")
    return json.loads(report.read_text()), wall, done.returncode


def logit_figures(report: dict[str, Any]) -> dict[str, Any]:
    """Worst logit difference over the validated scenarios and the task check's figures for ``logits``."""
    worst = 0.0
    for part in report.get("parts", []):
        for output in part.get("outputs", []):
            if output.get("name") == "logits" and output.get("max_abs_diff") is not None:
                worst = max(worst, float(output["max_abs_diff"]))
    by_sample: dict[str, Any] = {}
    generation = None
    for check in report.get("checks", []):
        if check.get("name", "").startswith("task check"):
            by_sample.update(check.get("outputs", {}).get("logits", {}))
        elif check.get("name") == "generation parity":
            generation = check
    top1 = min((f["top1_agreement"] for f in by_sample.values() if "top1_agreement" in f), default=float("nan"))
    cosine = min((f["min_cosine"] for f in by_sample.values() if "min_cosine" in f), default=float("nan"))
    mean = min((f["mean_cosine"] for f in by_sample.values() if "mean_cosine" in f), default=float("nan"))
    return {
        "worst_logit_diff": worst,
        "top1": top1,
        "min_cosine": cosine,
        "mean_cosine": mean,
        "by_sample": by_sample,
        "generation": generation,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--write", action="store_true", help=f"append the table to {RESULTS.relative_to(HERE.parent)}")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch
    import transformers

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="int4-bench-") as tmp:
        root = Path(tmp)
        checkpoint = root / "checkpoint"
        parameters = build_checkpoint(args.size, checkpoint)
        _, plain_wall, plain_rc = export(checkpoint, root / "plain", [])
        int4_report, int4_wall, int4_rc = export(
            checkpoint, root / "int4", ["--quantize", "int4", "--block-size", str(args.block_size), "--keep-invalid"]
        )
        plain_bytes, int4_bytes = folder_bytes(root / "plain"), folder_bytes(root / "int4")
    figures = logit_figures(int4_report)
    generation = figures["generation"] or {}
    lines = [
        f"## Llama-shaped decoder `{args.size}` ({parameters / 1e6:.0f}M parameters), causal-lm-with-past, "
        f"int4 block size {args.block_size}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.2f} before the run; torch "
        f"{torch.__version__}, transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}.",
        "",
        "| export | exit | ONNX files on disk | ratio | worst logit diff | next-token top-1 (lowest sample) | logit "
        "cosine (lowest vector) | logit cosine (lowest sample mean) | wall |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| plain fp32 | {plain_rc} | {plain_bytes / 1e6:.1f} MB | 1.000 | — | — | — | — | {plain_wall:.0f} s |",
        f"| `--quantize int4` | {int4_rc} | {int4_bytes / 1e6:.1f} MB | {int4_bytes / plain_bytes:.3f} | "
        f"{figures['worst_logit_diff']:.3g} | {figures['top1']:.4f} | {figures['min_cosine']:.5f} | "
        f"{figures['mean_cosine']:.5f} | {int4_wall:.0f} s |",
        "",
        "Per input set (the task check's samples):",
        "",
        "| sample | vectors | next-token top-1 | lowest logit cosine | mean logit cosine |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {f.get('vectors')} | {f.get('top1_agreement', float('nan')):.4f} | "
            f"{f.get('min_cosine', float('nan')):.5f} | {f.get('mean_cosine', float('nan')):.5f} |"
            for label, f in figures["by_sample"].items()
        ),
        "",
        f"Failures of the int4 export: {'; '.join(int4_report.get('failures', [])) or 'none'}",
        "",
        f"Greedy generation parity: {generation.get('detail', 'not run')}"
        + (f" (advisory: {generation['advisory']})" if generation.get("advisory") else ""),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        header = (
            "" if RESULTS.exists() else "# int4 decoders: size and logits\n\nWritten by `bench/int4_decoder.py`.\n\n"
        )
        with RESULTS.open("a") as handle:
            handle.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
