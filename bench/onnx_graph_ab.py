"""Latency of several ONNX files of one text model, side by side in one process (an A/B of graphs, not of tools).

Each file gets its own onnxruntime session (CPU, 2 intra-op threads, ORT_ENABLE_ALL); every round times each
session in a block of calls after a few warm-up calls, the order rotated from round to round (never call by call
interleaved: idle onnxruntime threads spin and corrupt the neighbour's timing). Prints each file's median and its
per-round ratio to the first file named. Inputs: random token ids, no padding, ``token_type_ids`` zeros, fed only
to the files that take them.

    python bench/onnx_graph_ab.py --batch 8 optimum-O2=DIR/optimum-O2/model.onnx ours-O2=DIR/exporter-O2/model.onnx

`bench/onnx_latency.py --workdir DIR` leaves the exporter and Optimum files of each variant in DIR/<model>/.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="NAME=PATH", help="the first is the reference of the ratios")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=20, help="timed calls per file and round")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    shape = (args.batch, args.sequence)
    feeds = {
        "input_ids": rng.integers(1000, 20000, shape).astype(np.int64),
        "attention_mask": np.ones(shape, np.int64),
        "token_type_ids": np.zeros(shape, np.int64),
    }
    sessions = {}
    for item in args.files:
        name, _, path = item.partition("=")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions[name] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs = {name: {i.name: feeds[i.name] for i in s.get_inputs()} for name, s in sessions.items()}
    names = list(sessions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            session, feed = sessions[name], inputs[name]
            for _ in range(args.warmup):
                session.run(None, feed)
            started = time.perf_counter()
            for _ in range(args.block):
                session.run(None, feed)
            times[name].append((time.perf_counter() - started) / args.block * 1000)
    reference = names[0]
    print(f"{args.batch}x{args.sequence}, {args.rounds} rounds of {args.block} calls after {args.warmup} warm-up")
    print("| file | median ms | per-round ratio to " + reference + " | median ratio |")
    print("|---|---|---|---|")
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[reference], strict=True)]
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"| {name} | {statistics.median(times[name]):.1f} | {per_round} | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
