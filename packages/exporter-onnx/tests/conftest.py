"""Shared fixtures of exporter-onnx's tests: tiny checkpoints built once per worker, and a record of the measured
differences between ONNX Runtime and PyTorch.

Set ``EXPORTER_ONNX_DIFFS`` to a file path to collect every recorded difference (one JSON line per validation) and
get a table of them, worst per pair and per architecture, at the end of the run (``-n 2`` included)::

    EXPORTER_ONNX_DIFFS=$TMPDIR/onnx-diffs.jsonl python -m pytest -n 2 packages/exporter-onnx/tests
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pytest

from transformers.utils import logging as _hf_logging

# Checkpoints are saved and loaded inside tests; keep progress bars and load reports out of captured output.
_hf_logging.disable_progress_bar()
_hf_logging.set_verbosity_error()

DIFFS_ENV = "EXPORTER_ONNX_DIFFS"

#: Standard deviation of the random weights of tiny checkpoints. Transformers' 0.02 gives classification logits
#: of order 1e-3 (MobileBERT: 1e-4), against which an atol of 1e-5 proves little; 0.1 gives outputs of order 0.1-3.
INIT_STD = 0.1


def init_std_overrides(model_type: str) -> dict[str, float]:
    """Config keywords that set every random-weight standard deviation of `model_type` to `INIT_STD`."""
    if model_type in ("xlm", "flaubert"):
        return {"init_std": INIT_STD, "embed_init_std": INIT_STD}
    return {"initializer_range": INIT_STD}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per worker and arguments) a tiny checkpoint and return its folder.

    ``tiny_checkpoint(model_type, feature="default", with_tokenizer=False, **config_overrides)``; the weights'
    standard deviation is `INIT_STD` unless an override says otherwise.
    """
    from exporter_core.testing import build_tiny_checkpoint

    made: dict[tuple[Any, ...], Path] = {}

    def build(model_type: str, feature: str = "default", with_tokenizer: bool = False, **overrides: Any) -> Path:
        overrides = {**init_std_overrides(model_type), **overrides}
        key = (model_type, feature, with_tokenizer, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{model_type}-{feature}")
            made[key] = build_tiny_checkpoint(
                model_type, feature, folder, with_tokenizer=with_tokenizer, config_overrides=overrides
            )
        return made[key]

    return build


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
        write(f"{row['pair']:<48} {str(row['passed']):<7} {row['max_abs_diff']:>13.3e} {shown:>15} {row['atol']:>7g}")
    by_arch: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_arch[row.get("arch", row["pair"].split(":")[0])].append(row["max_abs_diff"])
    write("worst per architecture: " + ", ".join(f"{a} {max(v):.2e}" for a, v in sorted(by_arch.items())))
    worst = max(rows, key=lambda r: r["max_abs_diff"])
    passed = sum(1 for r in rows if r["passed"])
    write(f"worst overall: {worst['max_abs_diff']:.3e} ({worst['pair']}); {passed}/{len(rows)} validations passed")
