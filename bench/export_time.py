"""Whole-process wall time and peak memory of ``exporter onnx`` against ``optimum-cli export onnx`` and import floors.

Models: the example tiny BERT (``examples/tiny-bert``) and a BERT-base (bert-base-uncased's shape: hidden 768,
12 layers, 12 heads, intermediate 3072, vocabulary 30522) with random weights, built once into ``--work``.
Tools, each a fresh process per round:

- ``exporter``: ``exporter onnx --model DIR OUT`` (the default engine; export *and* validation, as a user runs it);
- ``optimum``: ``optimum-cli export onnx --model DIR --task feature-extraction OUT`` from its own virtual
  environment (``--optimum-venv``: it needs Transformers < 4.58; never imported here);
- ``floor``: ``python -c "import torch, onnx; from transformers import AutoModel"`` in exporter's environment,
  the least any exporter written in Python on these libraries pays before it does anything;
- ``optimum floor``: the same line in Optimum's environment.

Every round rotates the order of the tools, so that a slow neighbour (page cache, another process on the 2 cores)
does not always hit the same one. Ratios are per round (exporter / optimum, exporter / floor, optimum / optimum
floor); the table gives each time's median and each ratio's per-round values and median. Peak memory is the
maximum resident set size of each process tree (``os.wait4``'s ``ru_maxrss``), median over rounds.

    python bench/export_time.py --write              # the numbers in bench/results/export-time.md (5 rounds)
    python bench/export_time.py --rounds 2           # a quick look while developing
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "export-time.md"
TINY_BERT = ROOT / "examples" / "tiny-bert"
BERT_BASE = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
FLOOR = "import torch, onnx; from transformers import AutoModel"


@dataclass
class Tool:
    """One command to time, and what each round measured."""

    name: str
    command: list[str]
    #: Whether the command writes into an output folder given as its last argument.
    writes: bool
    seconds: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)


def _bert_base_folder(work: Path) -> Path:
    """A BERT-base checkpoint with random weights (seeded) and a word-level tokenizer over its vocabulary."""
    import torch
    from transformers import BertConfig, BertModel

    from exporter_core.testing import build_tiny_tokenizer

    folder = work / "bert-base-random"
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    BertModel(BertConfig(**BERT_BASE)).eval().save_pretrained(folder)
    build_tiny_tokenizer(BERT_BASE["vocab_size"]).save_pretrained(str(folder))
    return folder


def _run(command: list[str], log: Path) -> tuple[float, float]:
    """Run `command`; return (wall seconds, peak RSS of its process tree in MiB). Exits on a failure."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def tools_for(folder: Path, optimum_venv: Path) -> list[Tool]:
    exporter_cli = Path(sys.executable).parent / "exporter"
    optimum_python = optimum_venv / "bin" / "python"
    return [
        Tool("exporter", [str(exporter_cli), "onnx", "--model", str(folder)], writes=True),
        Tool(
            "optimum",
            [
                *(str(optimum_venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(folder)),
                *("--task", "feature-extraction"),
            ],
            writes=True,
        ),
        Tool("floor", [sys.executable, "-c", FLOOR], writes=False),
        Tool("optimum floor", [str(optimum_python), "-c", FLOOR], writes=False),
    ]


def measure(tools: list[Tool], rounds: int, work: Path, label: str) -> None:
    for index in range(rounds):
        shift = index % len(tools)
        order = tools[shift:] + tools[:shift]
        for tool in order:
            out = work / "out" / tool.name.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            command = [*tool.command, str(out)] if tool.writes else tool.command
            seconds, peak = _run(command, work / f"{label}-{tool.name.replace(' ', '-')}.log")
            tool.seconds.append(seconds)
            tool.peak_mib.append(peak)
            shutil.rmtree(out, ignore_errors=True)
        print(
            f"  {label} round {index + 1}: "
            + ", ".join(f"{t.name} {t.seconds[-1]:.1f} s / {t.peak_mib[-1]:.0f} MiB" for t in order),
            flush=True,
        )


def _ratio_cell(numerator: Tool, denominator: Tool) -> str:
    ratios = [a / b for a, b in zip(numerator.seconds, denominator.seconds, strict=True)]
    return f"**{statistics.median(ratios):.2f}×** ({', '.join(f'{r:.2f}' for r in ratios)})"


def table(label: str, tools: list[Tool]) -> list[str]:
    by_name = {t.name: t for t in tools}
    rows = [
        f"### {label}",
        "",
        "| process | median wall s | per round s | median peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for tool in tools:
        per_round = ", ".join(f"{s:.2f}" for s in tool.seconds)
        rows.append(
            f"| {tool.name} | {statistics.median(tool.seconds):.2f} | {per_round} | {statistics.median(tool.peak_mib):.0f} |"
        )
    rows += [
        "",
        "| ratio (per round) | median (rounds) |",
        "|---|---|",
        f"| exporter / optimum | {_ratio_cell(by_name['exporter'], by_name['optimum'])} |",
        f"| exporter / floor | {_ratio_cell(by_name['exporter'], by_name['floor'])} |",
        f"| optimum / optimum floor | {_ratio_cell(by_name['optimum'], by_name['optimum floor'])} |",
        "",
    ]
    return rows


def _versions(optimum_python: Path) -> str:
    import onnx
    import onnxruntime
    import torch
    import transformers

    ours = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )
    script = (
        "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
        "('optimum', 'optimum-onnx', 'transformers', 'torch', 'onnxruntime')))"
    )
    theirs = subprocess.run(
        [str(optimum_python), "-c", script], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"exporter venv: {ours}; Optimum venv: {theirs or 'unknown'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="tiny,base", help="comma-separated: tiny, base")
    parser.add_argument("--optimum-venv", type=Path, default=Path("/work/optimum-venv"))
    parser.add_argument("--work", type=Path, default=None, help="folder for checkpoints and logs (default: a temp one)")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="export-time-"))
    work.mkdir(parents=True, exist_ok=True)
    folders = {"tiny": ("tiny BERT (examples/tiny-bert)", TINY_BERT), "base": ("BERT-base, random weights", None)}
    sections: list[str] = []
    started = datetime.datetime.now(datetime.UTC)
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        label, folder = folders[key]
        if folder is None:
            # Built in a child process: the parent must not import torch, or every child it forks starts with the
            # parent's resident set and reports it as its own ru_maxrss.
            build = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from export_time import "
            build += f"_bert_base_folder; from pathlib import Path; _bert_base_folder(Path({str(work)!r}))"
            subprocess.run([sys.executable, "-c", build], check=True)
            folder = work / "bert-base-random"
        tools = tools_for(folder, args.optimum_venv)
        print(f"{label}: {args.rounds} rounds", flush=True)
        measure(tools, args.rounds, work, key)
        sections += table(label, tools)
    text = "\n".join(sections)
    print(text)
    if args.write:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
        header = [
            "# Export time: exporter vs optimum-cli vs the import floor",
            "",
            f"Run {started:%Y-%m-%d %H:%M} UTC with `python bench/export_time.py --write --rounds {args.rounds}`; "
            f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}.",
            f"`uptime` before the run's end: {uptime}",
            "",
            _versions(args.optimum_venv / "bin" / "python"),
            "",
            "Whole-process wall time (exporter: export and validation; optimum-cli: export and its own validation), "
            "tools rotated each round, ratios per round. Peak RSS: `ru_maxrss` of each process tree.",
            "",
            "",
        ]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(header) + text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
