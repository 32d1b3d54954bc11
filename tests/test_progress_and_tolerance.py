"""Progress lines, stage times and peak memory in the report, and the scaled tolerance catching broken exports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO

from exporter.pipeline import run_export
from exporter_core.errors import ValidationError
from exporter_validate.compare import DEFAULT_RTOL


def _bench() -> ModuleType:
    """bench/tolerance_scale.py: the breakages the 1B benchmark applies, applied here at tiny scale."""
    spec = importlib.util.spec_from_file_location("tolerance_scale", REPO / "bench" / "tolerance_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.lstrip().startswith(("▸ ", "✓ ", "✗ "))]


def test_a_terminal_gets_a_line_per_stage_and_the_report_holds_times_and_memory(cli, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    result = cli("onnx", "--model", str(checkpoint("bert")), str(tmp_path))
    assert result.returncode == 0, result.stderr
    progress = _progress_lines(result.stderr)
    for name in ("load model", "plan", "export (onnx)", "validate model", "write description files"):
        assert f"▸ {name} ..." in progress
        assert any(line.startswith(f"✓ {name} done in ") for line in progress), name
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("exported in ") and "peak memory" in lines[-2]
    report = json.loads((tmp_path / "model.onnx.validation.json").read_text())
    stages = {stage["name"]: stage for stage in report["stages"]}
    assert {"load model", "plan", "export (onnx)", "validate model"} <= set(stages)
    assert all(stage["seconds"] >= 0 and not stage["failed"] for stage in report["stages"])
    assert report["seconds"] >= sum(s["seconds"] for s in report["stages"] if s["depth"] == 0)
    memory = report["peak_memory"]
    assert memory["max_rss_bytes"] > 0 and "ru_maxrss" in memory["sources"]["max_rss_bytes"]
    if sys.platform.startswith("linux"):
        assert memory["vm_hwm_bytes"] > 0 and memory["rss_anon_peak_sampled_bytes"] > 0


def test_quiet_prints_no_progress_even_on_a_terminal(cli, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    result = cli("onnx", "--model", str(checkpoint("bert")), "--quiet", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert _progress_lines(result.stderr) == []
    assert not any(line.startswith("exported in ") for line in result.stderr.splitlines())
    assert result.stderr.splitlines()[-1].startswith("All good, model saved at: ")
    # The report has the times whatever is printed.
    assert json.loads((tmp_path / "model.onnx.validation.json").read_text())["stages"]


@pytest.mark.parametrize("breakage", ["position_offset", "dropped_feed_forward"])
def test_a_broken_export_fails_under_the_default_tolerance(checkpoint, tmp_path, breakage):
    """The exported module is broken while it is captured, the reference is not: validation must say so."""
    bench = _bench()
    folder = checkpoint("gpt2", "causal-lm-with-past")
    with bench.broken_export(getattr(bench, breakage)), pytest.raises(ValidationError) as caught:
        run_export("onnx", folder, tmp_path, feature="causal-lm-with-past", log=lambda _line: None)
    report = caught.value.report
    assert all(part.rtol == DEFAULT_RTOL for part in report.parts)
    logits = [check for part in report.parts for check in part.outputs if check.name == "logits"]
    # Every scenario's logits fail, and by far: the scaled tolerance is no loophole for a wrong model.
    assert logits and all(not check.passed for check in logits)
    assert all(check.max_abs_diff > 100 * check.tolerance for check in logits)
    assert not Path(tmp_path / "model.onnx").exists()
