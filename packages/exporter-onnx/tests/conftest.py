"""Shared fixtures of exporter-onnx's tests: a record of the measured differences between ONNX Runtime and PyTorch.

Tiny checkpoints come from the test kit's ``tiny_checkpoint`` fixture (exporter-core's pytest plugin), built once
per run and shared by pytest-xdist workers.

Set ``EXPORTER_ONNX_DIFFS`` to a file path to collect every recorded difference (one JSON line per validation) and
get a table of them, worst per pair and per architecture, at the end of the run (``-n 2`` included)::

    EXPORTER_ONNX_DIFFS=$TMPDIR/onnx-diffs.jsonl python -m pytest -n 2 packages/exporter-onnx/tests
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers.utils import logging as _hf_logging

# Checkpoints are saved and loaded inside tests; keep progress bars and load reports out of captured output.
_hf_logging.disable_progress_bar()
_hf_logging.set_verbosity_error()

DIFFS_ENV = "EXPORTER_ONNX_DIFFS"


@pytest.fixture
def record_difference(record_property: Callable[[str, object], None]) -> Callable[..., float]:
    """Record a validation report's differences (junit property, and a JSON line when ``EXPORTER_ONNX_DIFFS`` is set).

    ``record_difference(pair_id, report, **facts)`` returns the worst compared difference.
    """

    def record(pair: str, report: Any, **facts: Any) -> float:
        worst = report.worst_difference
        excluded = [c.max_abs_diff_excluded for c in report.outputs if c.max_abs_diff_excluded is not None]
        record_property("max_abs_diff", worst)
        path = os.environ.get(DIFFS_ENV)
        if path:
            line = {
                "pair": pair,
                "max_abs_diff": worst,
                "max_abs_diff_padding": max(excluded) if excluded else None,
                "atol": report.atol,
                "passed": report.passed,
                "outputs": {c.name: c.max_abs_diff for c in report.outputs},
                **facts,
            }
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        return worst

    return record


def pytest_configure(config: pytest.Config) -> None:
    """Start each run with an empty differences file (on the controller only, before workers start)."""
    path = os.environ.get(DIFFS_ENV)
    if path and not hasattr(config, "workerinput"):
        Path(path).write_text("", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the recorded differences: one row per pair, then the worst per architecture and overall."""
    path = os.environ.get(DIFFS_ENV)
    if not path or hasattr(config, "workerinput") or not Path(path).is_file():
        return
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"ONNX Runtime vs PyTorch, max abs difference ({path})")
    write(f"{'pair':<48} {'passed':<7} {'max abs diff':>13} {'padding (info)':>15} {'atol':>7}")
    for row in sorted(rows, key=lambda r: r["pair"]):
        padding = row.get("max_abs_diff_padding")
        shown = f"{padding:.3e}" if isinstance(padding, float) else "-"
        write(f"{row['pair']:<48} {row['passed']!s:<7} {row['max_abs_diff']:>13.3e} {shown:>15} {row['atol']:>7g}")
    by_arch: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_arch[row.get("arch", row["pair"].split(":")[0])].append(row["max_abs_diff"])
    write("worst per architecture: " + ", ".join(f"{a} {max(v):.2e}" for a, v in sorted(by_arch.items())))
    worst = max(rows, key=lambda r: r["max_abs_diff"])
    passed = sum(1 for r in rows if r["passed"])
    write(f"worst overall: {worst['max_abs_diff']:.3e} ({worst['pair']}); {passed}/{len(rows)} validations passed")
