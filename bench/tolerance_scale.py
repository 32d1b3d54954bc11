"""Does the default validation tolerance pass a correct large export and fail a broken one?

Builds a GPT-2-style decoder with random weights (fp32 safetensors) at the size asked for, exports
``causal-lm-with-past`` with the ONNX backend under the default tolerance (atol + rtol x max|reference| per
output), then exports it again twice with the *exported* module broken while the reference stays intact:

- ``position offset``: the learned position embedding is looked up at position + 1;
- ``dropped feed-forward``: the feed-forward (MLP) of the middle layer returns zeros.

For each run it prints, per validated part and output, the worst difference, max|reference|, their ratio and the
effective tolerance, and whether validation passed. A correct export must pass and both broken ones must fail.

    python bench/tolerance_scale.py --size 350m [--record bench/results/tolerance-scale.md]

Sizes: tiny (n_embd 32, 2 layers), 350m (1024, 24), 1b (2048, 22; ~1.1B parameters, 4.4 GB fp32). The 1b size needs
about 10 GB of memory and several minutes per export on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 99, "n_positions": 64},
    "350m": {"n_embd": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 50257, "n_positions": 1024},
    "1b": {"n_embd": 2048, "n_layer": 22, "n_head": 16, "vocab_size": 50257, "n_positions": 1024},
}


@contextlib.contextmanager
def position_offset(model: Any) -> Iterator[None]:
    """Look learned positions up one place too far (the classic off-by-one of a cache offset)."""
    wpe = model.transformer.wpe
    original = wpe.forward
    wpe.forward = lambda ids: original(ids + 1)
    try:
        yield
    finally:
        del wpe.forward


@contextlib.contextmanager
def dropped_feed_forward(model: Any) -> Iterator[None]:
    """The middle layer's feed-forward contributes nothing."""
    import torch

    mlp = model.transformer.h[len(model.transformer.h) // 2].mlp
    mlp.forward = lambda hidden_states: torch.zeros_like(hidden_states)
    try:
        yield
    finally:
        del mlp.forward


Breakage = Callable[[Any], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def broken_export(breakage: Breakage | None) -> Iterator[None]:
    """Apply `breakage` to the model while the ONNX backend captures it, never while the reference runs."""
    if breakage is None:
        yield
        return
    from exporter_onnx.backend import OnnxBackend

    original = OnnxBackend.export

    def export(self: Any, request: Any) -> Any:
        with breakage(request.plan.model):
            return original(self, request)

    OnnxBackend.export = export  # type: ignore[method-assign]
    try:
        yield
    finally:
        OnnxBackend.export = original  # type: ignore[method-assign]


def build_checkpoint(size: str, folder: Path) -> int:
    """Save a random-weight GPT-2 of `size` into `folder`; return its parameter count."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(**SIZES[size], bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def run(folder: Path, output: Path, breakage: Breakage | None) -> tuple[Any, float]:
    """Export and validate; return the report (passing or failing) and the wall time."""
    from exporter.pipeline import run_export
    from exporter_core.errors import ValidationError

    start = time.perf_counter()
    with broken_export(breakage):
        try:
            report = run_export("onnx", folder, output, feature="causal-lm-with-past", log=lambda _line: None)
        except ValidationError as exc:
            report = exc.report  # type: ignore[assignment]
    return report, time.perf_counter() - start


def rows(label: str, report: Any) -> list[str]:
    """One Markdown row per (part, output)."""
    lines = []
    for part in report.parts:
        for check in part.outputs:
            magnitude = check.reference_magnitude or 0.0
            diff = check.max_abs_diff
            ratio = f"{diff / magnitude:.2e}" if diff is not None and magnitude else "-"
            lines.append(
                f"| {label} | {part.part} | {check.name} | {diff if diff is None else f'{diff:.3e}'} | "
                f"{magnitude:.3e} | {ratio} | {check.tolerance:.3e} | {'pass' if check.passed else 'FAIL'} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the three exports at the size asked for and print (and optionally record) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="350m")
    parser.add_argument("--record", type=Path, default=None, help="Append the table to this Markdown file.")
    args = parser.parse_args(argv)
    runs: list[tuple[str, Breakage | None]] = [
        ("correct", None),
        ("position offset", position_offset),
        ("dropped feed-forward", dropped_feed_forward),
    ]
    table = [
        "| run | part (scenario) | output | max abs diff | max abs reference | diff / max ref | tolerance | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="tolerance-scale-") as tmp:
        folder = Path(tmp) / "checkpoint"
        count = build_checkpoint(args.size, folder)
        for label, breakage in runs:
            report, seconds = run(folder, Path(tmp) / label.replace(" ", "-"), breakage)
            verdicts.append((label, report.passed, seconds))
            table.extend(rows(label, report))
            print(f"{label}: {'passed' if report.passed else 'failed'} in {seconds:.0f} s", file=sys.stderr)
    import torch
    import transformers

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    summary = [
        f"## GPT-2 {args.size}: {count:,} parameters ({', '.join(f'{k} {v}' for k, v in SIZES[args.size].items())})",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, Transformers "
        f"{transformers.__version__}; peak RSS {peak:.1f} GB. Command: `python bench/tolerance_scale.py --size {args.size}`.",
        "",
        *(f"- {label}: {'passed' if ok else 'failed'} ({seconds:.0f} s)" for label, ok, seconds in verdicts),
        "",
        *table,
        "",
    ]
    text = "\n".join(summary)
    print(text)
    if args.record is not None:
        with args.record.open("a", encoding="utf-8") as file:
            file.write(text + "\n")
    correct_ok = verdicts[0][1]
    broken_fail = not any(ok for _, ok, _ in verdicts[1:])
    return 0 if correct_ok and broken_fail else 1


if __name__ == "__main__":
    sys.exit(main())
