"""``python -m exporter.onnx``: the old ``python -m transformers.onnx`` command line, log lines included.

``--export_with_transformers`` (the old tool's switch between two export paths) is accepted and ignored with a
note: there is one path now. Opsets below an architecture's lowest (14 for Transformers 5 attention) are refused
naming the operator that needs it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from exporter.cli import _setup_logging, add_common_arguments, exit_without_teardown, export_command, run_cli

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the old options and export with the ONNX backend."""
    parser = argparse.ArgumentParser("Hugging Face Transformers ONNX exporter (exporter.onnx)")
    add_common_arguments(parser, legacy=True)
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset version to export the model with.")
    args = parser.parse_args(argv)
    _setup_logging()
    if args.export_with_transformers:
        print("note: --export_with_transformers is ignored: exporter has a single export path", file=sys.stderr)
    return run_cli(lambda a: export_command("onnx", a, {"opset": a.opset, "engine": "auto"}), args)


if __name__ == "__main__":
    exit_without_teardown(main())
