"""Peak memory of a whole ``exporter onnx`` run (export and validation) with and without streamed weights.

Builds GPT-2-style decoders with random fp32 weights (the sizes of ``bench/tolerance_scale.py``: 350m and 1b) and
exports each with ``causal-lm-with-past`` as a user would, a fresh process per run under ``/usr/bin/time -v``:

- ``normal``: ``--no-stream-weights``, the path every export below 1 GiB takes (the weights are held by the ONNX
  program and written with it; the file is self-contained below 2 GiB);
- ``streamed``: ``--stream-weights``, captured on fake weights, each checkpoint tensor written into external data
  one at a time, validated with ONNX Runtime reading the memory-mapped external data.

While a run goes, this script samples every 50 ms the resident anonymous and file-backed memory of the process
tree (``RssAnon`` and ``RssFile`` of ``/proc/<pid>/status`` summed over the processes): Linux keeps no peak of
anonymous memory, so the sampled peak is what the table calls peak anonymous memory (a lower bound that misses
only spikes shorter than 50 ms). Beside it: GNU time's maximum resident set size (file-backed pages included,
which is why it counts the memory-mapped weights, twice when two mappings are read), the wall time, the report's
own figures (``peak_memory``: ``VmHWM``, the ``RssAnon`` sampled at stage boundaries) and the validation verdict.

    python bench/stream_memory.py --size 350m --size 1b --record bench/results/stream-memory.md

Checkpoints are kept in ``--work`` (default: a folder in the system temporary directory) for later runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tolerance_scale import SIZES, build_checkpoint  # the sibling bench script, found through sys.path

MODES = {"normal": "--no-stream-weights", "streamed": "--stream-weights"}

#: ONNX Runtime session settings compared by ``--probe-sessions`` on the streamed file: (label, config entries,
#: disabled optimizers). The last is what exporter validates a streamed export with (streaming.LOW_MEMORY_SESSION).
SESSIONS = [
    ("defaults", {}, []),
    ("no pre-packing", {"session.disable_prepacking": "1"}, []),
    ("no constant folding", {}, ["ConstantFolding"]),
    ("no pre-packing, no constant folding", {"session.disable_prepacking": "1"}, ["ConstantFolding"]),
]

#: Run in a fresh interpreter per setting: open a session on argv[1] with the settings in argv[2], run one step
#: of 2 x 5 new tokens after a past of 3, print the anonymous and file-backed memory the session added.
_PROBE = """
import json, re, sys
import numpy as np
def status():
    text = open("/proc/self/status").read()
    return [int(re.search(key + r":\\s+(\\d+)", text).group(1)) * 1024 for key in ("RssAnon", "RssFile")]
import onnxruntime as ort
config, disabled = json.loads(sys.argv[2])
options = ort.SessionOptions()
for key, value in config.items():
    options.add_session_config_entry(key, value)
before = status()
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled or None)
opened = status()
feed = {}
for i in session.get_inputs():
    if i.name == "input_ids":
        feed[i.name] = np.ones((2, 5), np.int64)
    elif i.name == "attention_mask":
        feed[i.name] = np.ones((2, 8), np.int64)
    elif i.name == "position_ids":
        feed[i.name] = np.arange(3, 8)[None].repeat(2, 0)
    else:
        feed[i.name] = np.zeros([2 if n == 0 else 3 if isinstance(d, str) else d for n, d in enumerate(i.shape)], np.float32)
session.run(None, feed)
ran = status()
print(json.dumps({"anon_open": opened[0] - before[0], "anon_run": ran[0] - before[0], "file_run": ran[1] - before[1]}))
"""


def probe_sessions(model: Path) -> list[dict[str, Any]]:
    """The memory each of `SESSIONS` adds when ONNX Runtime opens `model` and runs one step, a process each."""
    rows = []
    for label, config, disabled in SESSIONS:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(model), json.dumps([config, disabled])],
            capture_output=True,
            text=True,
            check=False,
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
        rows.append({"label": label, **figures, "error": done.stderr[-300:] if done.returncode else ""})
    return rows


def _status(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of `pid` in bytes, (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(RssAnon|RssFile):\s+(\d+) kB", text, flags=re.MULTILINE))
    return int(values.get("RssAnon", 0)) * 1024, int(values.get("RssFile", 0)) * 1024


def _descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass
class Sampler:
    """Samples the anonymous and file-backed resident memory of a process tree until stopped."""

    root: int
    peak_anon: int = 0
    peak_file: int = 0
    samples: int = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            anon = file = 0
            for pid in _descendants(self.root):
                a, f = _status(pid)
                anon += a
                file += f
            self.peak_anon = max(self.peak_anon, anon)
            self.peak_file = max(self.peak_file, file)
            self.samples += 1
            stop.wait(0.05)


def _time_field(stderr: str, name: str) -> str:
    match = re.search(rf"^\s*{re.escape(name)}: (.+)$", stderr, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def run_once(checkpoint: Path, mode: str, work: Path, probe: bool = False) -> dict[str, Any]:
    """One export in a fresh process; its measured figures (and, `probe`, the session settings' memory)."""
    output = work / f"out-{mode}"
    report = work / f"report-{mode}.json"
    shutil.rmtree(output, ignore_errors=True)
    report.unlink(missing_ok=True)
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "exporter",
        "onnx",
        "--model",
        str(checkpoint),
        "--feature",
        "causal-lm-with-past",
        "--quiet",
        "--report",
        str(report),
        MODES[mode],
        str(output),
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(process.pid)
    stop = threading.Event()
    thread = threading.Thread(target=sampler.run, args=(stop,), daemon=True)
    thread.start()
    stdout, stderr = process.communicate()
    stop.set()
    thread.join()
    seconds = time.perf_counter() - start
    data = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
    sizes = {p.name: p.stat().st_size for p in output.iterdir() if p.is_file()} if output.is_dir() else {}
    probes = probe_sessions(output / "model.onnx") if probe and (output / "model.onnx").is_file() else []
    shutil.rmtree(output, ignore_errors=True)
    peak = data.get("peak_memory") or {}
    stages = {s["name"]: s["seconds"] for s in data.get("stages") or []}
    return {
        "mode": mode,
        "returncode": process.returncode,
        "seconds": seconds,
        "max_rss": int(_time_field(stderr, "Maximum resident set size (kbytes)") or 0) * 1024,
        "peak_anon": sampler.peak_anon,
        "peak_file": sampler.peak_file,
        "samples": sampler.samples,
        "report_anon_sampled": peak.get("rss_anon_peak_sampled_bytes"),
        "report_vm_hwm": peak.get("vm_hwm_bytes"),
        "passed": data.get("passed"),
        "worst": data.get("worst_max_abs_diff"),
        "streamed": (data.get("metadata") or {}).get("streamed_weights"),
        "stages": stages,
        "files": sizes,
        "load": (load_before, os.getloadavg()[0]),
        "probes": probes,
        "tail": (stdout + stderr)[-1500:] if process.returncode else "",
    }


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def table(size: str, parameters: int, checkpoint_bytes: int, results: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for one size."""
    lines = [
        f"### GPT-2 {size}: {parameters:,} parameters, checkpoint {checkpoint_bytes / 1e9:.2f} GB (fp32 safetensors)",
        "",
        "| run | wall s | peak anon GB (sampled, tree) | peak anon / checkpoint | max RSS GB (time -v) | report: anon at "
        "stage ends / VmHWM GB | export s | validation s | validated | worst abs diff | files |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stages = r["stages"]
        validate = sum(v for k, v in stages.items() if k.startswith(("validate", "check")))
        export = next((v for k, v in stages.items() if k.startswith("export")), None)
        files = ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sorted(r["files"].items()) if size > 1e6)
        verdict = "yes" if r["passed"] else "NO" if r["passed"] is False else f"exit {r['returncode']}"
        worst = "-" if r["worst"] is None else f"{r['worst']:.2e}"
        lines.append(
            f"| {r['mode']} | {r['seconds']:.0f} | {_gb(r['peak_anon'])} | {r['peak_anon'] / checkpoint_bytes:.2f}x | "
            f"{_gb(r['max_rss'])} | {_gb(r['report_anon_sampled'])} / {_gb(r['report_vm_hwm'])} | "
            f"{'-' if export is None else f'{export:.0f}'} | {validate:.0f} | "
            f"{verdict} | {worst} | {files or '-'} |"
        )
    loads = ", ".join(f"{r['mode']} {r['load'][0]:.1f}->{r['load'][1]:.1f}" for r in results)
    lines += ["", f"Load average (1 min) before -> after each run: {loads}.", ""]
    for r in results:
        if not r["probes"]:
            continue
        lines += [
            f"ONNX Runtime sessions on the {r['mode']} file (a fresh process each; memory the session added):",
            "",
            "| session settings | anon after opening GB | anon after one step GB | file-backed after one step GB |",
            "|---|---|---|---|",
        ]
        for p in r["probes"]:
            if p.get("error"):
                lines.append(f"| {p['label']} | failed: {p['error'].splitlines()[-1] if p['error'] else ''} | | |")
            else:
                lines.append(f"| {p['label']} | {_gb(p['anon_open'])} | {_gb(p['anon_run'])} | {_gb(p['file_run'])} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the modes at each size asked for; print (and optionally append to a file) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", choices=[s for s in SIZES if s != "tiny"], default=None)
    parser.add_argument("--mode", action="append", choices=list(MODES), default=None)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "exporter-stream-memory")
    parser.add_argument("--record", type=Path, default=None, help="Append the tables to this Markdown file.")
    parser.add_argument(
        "--probe-sessions",
        action="store_true",
        help="Also open the streamed file with each of SESSIONS' ONNX Runtime settings and measure what it adds.",
    )
    args = parser.parse_args(argv)
    import torch
    import transformers

    lines = [
        f"## Run of {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; Python "
        f"{platform.python_version()}, torch {torch.__version__}, Transformers {transformers.__version__}, "
        f"onnxruntime {_version('onnxruntime')}, onnx {_version('onnx')}, onnx-ir {_version('onnx-ir')}. Command: "
        f"`python bench/stream_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
    ]
    failed = False
    for size in args.size or ["350m"]:
        folder = args.work / size
        if not (folder / "model.safetensors").is_file():
            build_checkpoint(size, folder)
        parameters = _parameters(folder)
        checkpoint_bytes = (folder / "model.safetensors").stat().st_size
        results = []
        for mode in args.mode or list(MODES):
            result = run_once(folder, mode, args.work, probe=args.probe_sessions and mode == "streamed")
            print(
                f"{size} {mode}: {result['seconds']:.0f} s, peak anon {_gb(result['peak_anon'])} GB, max RSS "
                f"{_gb(result['max_rss'])} GB, exit {result['returncode']}",
                file=sys.stderr,
            )
            if result["tail"]:
                print(result["tail"], file=sys.stderr)
            failed = failed or result["returncode"] != 0
            results.append(result)
        lines += table(size, parameters, checkpoint_bytes, results)
    text = "\n".join(lines)
    print(text)
    if args.record is not None:
        with args.record.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 1 if failed else 0


def _parameters(folder: Path) -> int:
    """Parameters stored in the checkpoint (read from the safetensors header)."""
    import math

    with (folder / "model.safetensors").open("rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
