"""A 7B-parameter decoder exported with past on this machine: time, peak anonymous memory, maximum RSS, files.

Builds a Llama-2-7B-shaped checkpoint (hidden 4096, 32 layers of 32 heads, feed-forward 11008, vocabulary 32000;
6.74B parameters) with random bfloat16 weights, written one tensor at a time into safetensors shards of at most
``--shard-gb`` GB (the model is never materialised: shapes come from a meta-device instance; norms are ones, every
other weight is N(0, 0.02)), then exports it as a user would, in a fresh process under ``/usr/bin/time -v``::

    python -m exporter onnx --model CHECKPOINT --feature causal-lm-with-past --report REPORT OUTPUT

with the defaults: a checkpoint of 1 GiB or more streams its weights into ``model.onnx.data`` (captured on fake
float32 weights), a bfloat16 checkpoint is exported as float32 (onnxruntime has no CPU bfloat16 MatMul), and the
reference model is held in bfloat16 as stored, memory-mapped, computing in float32 one module at a time
(`exporter_core.precision`): the validation compares the ONNX file against exactly what the float32 model computes,
at every scenario of the plan (other shapes than the traced ones, left padding, one new token) and by greedy
generation parity, without a 27 GB float32 copy in memory.

The process tree's anonymous and file-backed resident memory is sampled every 50 ms (``bench/stream_memory.py``'s
sampler); GNU time gives the maximum RSS (file-backed pages included). ``--layers N`` keeps N of the 32 layers
(same widths, same code path) for a quick run of the procedure.

    python bench/large_model.py --work /tmp/exporter-7b --record bench/results/large-model.md
    python bench/large_model.py --layers 2 --work /tmp/exporter-7b-2l
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_memory import Sampler, _gb, _time_field, _version  # the sibling bench script, found through sys.path

#: Llama-2-7B's shape (its published config.json), bfloat16.
LLAMA_7B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def build_checkpoint(folder: Path, layers: int | None, shard_bytes: int, seed: int = 0) -> int:
    """Write a random bfloat16 Llama of `LLAMA_7B`'s shape (`layers` of them, default all) into `folder`, one
    tensor at a time; return its parameter count."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = dict(LLAMA_7B)
    if layers is not None:
        sizes["num_hidden_layers"] = layers
    config = LlamaConfig(**sizes)
    config.dtype = "bfloat16"
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in LlamaForCausalLM(config).state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    shard: dict[str, torch.Tensor] = {}
    names: list[list[str]] = []  # the tensor names of each shard written

    def flush() -> None:
        if shard:
            names.append(list(shard))
            save_file(shard, str(folder / f"part-{len(names):05d}.safetensors"), metadata={"format": "pt"})
            shard.clear()  # written: drop the tensors

    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        held = sum(t.numel() * t.element_size() for t in shard.values())
        if shard and held + tensor.numel() * tensor.element_size() > shard_bytes:
            flush()
        shard[name] = tensor
    flush()
    weight_map: dict[str, str] = {}
    total = len(names)
    for index, held in enumerate(names, start=1):
        final = f"model-{index:05d}-of-{total:05d}.safetensors"
        os.replace(folder / f"part-{index:05d}.safetensors", folder / final)
        weight_map.update(dict.fromkeys(held, final))
    parameters = sum(int(torch.Size(s).numel()) for s in shapes.values())
    index_data = {"metadata": {"total_size": 2 * parameters}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_data, indent=1), encoding="utf-8")
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(str(folder))
    return parameters


def run_export(checkpoint: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    """Export `checkpoint` in a fresh process; what it measured."""
    output = work / "onnx"
    report = work / "report.json"
    log = work / "export.log"
    shutil.rmtree(output, ignore_errors=True)
    report.unlink(missing_ok=True)
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "exporter", "onnx", "--model", str(checkpoint)]
    command += ["--feature", "causal-lm-with-past", "--report", str(report), *extra, str(output)]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, text=True)
        sampler = Sampler(process.pid)
        stop = threading.Event()
        thread = threading.Thread(target=sampler.run, args=(stop,), daemon=True)
        thread.start()
        process.wait()
        stop.set()
        thread.join()
    seconds = time.perf_counter() - start
    text = log.read_text(encoding="utf-8", errors="replace")
    data = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
    return {
        "returncode": process.returncode,
        "seconds": seconds,
        "max_rss": int(_time_field(text, "Maximum resident set size (kbytes)") or 0) * 1024,
        "peak_anon": sampler.peak_anon,
        "peak_file": sampler.peak_file,
        "report": data,
        "files": {p.name: p.stat().st_size for p in output.iterdir() if p.is_file()} if output.is_dir() else {},
        "load": (load_before, os.getloadavg()[0]),
        "tail": text[-3000:] if process.returncode else "",
    }


def describe(result: dict[str, Any], parameters: int, checkpoint_bytes: int, command: str) -> list[str]:
    """Markdown lines for one run."""
    data = result["report"]
    lines = [
        f"Checkpoint: {parameters:,} parameters, {checkpoint_bytes / 1e9:.2f} GB of bfloat16 safetensors. "
        f"Command: `{command}`.",
        "",
        "| wall s | peak anon GB (sampled, tree) | peak anon / checkpoint | max RSS GB (time -v) | exit | validated |",
        "|---|---|---|---|---|---|",
        f"| {result['seconds']:.0f} | {_gb(result['peak_anon'])} | {result['peak_anon'] / checkpoint_bytes:.2f}x | "
        f"{_gb(result['max_rss'])} | {result['returncode']} | {data.get('passed')} |",
        "",
        "Stages (s): "
        + ", ".join(
            f"{s['name']} {s['seconds']:.0f}" for s in data.get("stages") or [] if s.get("seconds") is not None
        ),
        "",
        "Files: " + ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sorted(result["files"].items())),
        "",
        f"dtype: {json.dumps((data.get('metadata') or {}).get('dtype'))}",
        "",
        "Per scenario, the worst output (of the logits and every layer's present key and value):",
        "",
        "| part (scenario) | outputs | worst max abs diff | its output | worst diff / max abs reference | "
        "worst diff / tolerance | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in data.get("parts") or []:
        checks = [c for c in part.get("outputs") or [] if c.get("max_abs_diff") is not None]
        if not checks:
            continue
        worst = max(checks, key=lambda c: c["max_abs_diff"])
        relative = max(c["max_abs_diff"] / c["reference_magnitude"] for c in checks if c.get("reference_magnitude"))
        used = max(c["max_abs_diff"] / c["tolerance"] for c in checks if c.get("tolerance"))
        verdict = "pass" if all(c.get("passed") for c in part.get("outputs") or []) else "FAIL"
        lines.append(
            f"| {part.get('part')} | {len(checks)} | {worst['max_abs_diff']:.2e} | {worst['name']} | "
            f"{relative:.2e} | {used:.3f} | {verdict} |"
        )
    for check in data.get("checks") or []:
        lines += ["", f"Check {check.get('name')}: {'pass' if check.get('passed') else 'FAIL'} — {check.get('detail')}"]
    lines += ["", f"Load average (1 min) before -> after: {result['load'][0]:.1f} -> {result['load'][1]:.1f}.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Build the checkpoint (unless present), export it, print (and optionally append) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Folder for the checkpoint and the export.")
    parser.add_argument("--layers", type=int, default=None, help="Keep this many layers (default: all 32).")
    parser.add_argument("--shard-gb", type=float, default=2.0)
    parser.add_argument("--record", type=Path, default=None, help="Append the results to this Markdown file.")
    parser.add_argument("--keep", action="store_true", help="Keep the ONNX files (default: removed after).")
    parser.add_argument("extra", nargs="*", help="More exporter options (after --).")
    args = parser.parse_args(argv)
    import torch
    import transformers

    checkpoint = args.work / "checkpoint"
    if not (checkpoint / "model.safetensors.index.json").is_file():
        start = time.perf_counter()
        parameters = build_checkpoint(checkpoint, args.layers, int(args.shard_gb * 1e9))
        print(f"checkpoint built in {time.perf_counter() - start:.0f} s: {parameters:,} parameters", file=sys.stderr)
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text(encoding="utf-8"))
    parameters = index["metadata"]["total_size"] // 2
    checkpoint_bytes = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    result = run_export(checkpoint, args.work, args.extra)
    (args.work / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"exit {result['returncode']} after {result['seconds']:.0f} s", file=sys.stderr)
    if result["tail"]:
        print(result["tail"], file=sys.stderr)
    command = f"python bench/large_model.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    lines = [
        f"## Run of {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
        + (f" ({args.layers} layers)" if args.layers else ""),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no swap; Python "
        f"{platform.python_version()}, torch {torch.__version__}, Transformers {transformers.__version__}, "
        f"onnxruntime {_version('onnxruntime')}, onnx {_version('onnx')}; nothing else running.",
        "",
        *describe(result, parameters, checkpoint_bytes, command),
    ]
    text = "\n".join(lines)
    print(text)
    if args.record is not None:
        with args.record.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    if not args.keep:
        shutil.rmtree(args.work / "onnx", ignore_errors=True)
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
