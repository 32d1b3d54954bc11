"""Stage times, progress lines and peak memory (`exporter_core.progress`)."""

from __future__ import annotations

import sys

import pytest

from exporter_core.progress import StageRecorder, note, peak_memory, recording, stage


def test_stages_nest_print_and_record_in_the_order_they_end() -> None:
    lines: list[str] = []
    recorder = StageRecorder(printer=lines.append)
    with recording(recorder):
        with stage("export (onnx)"), stage("capture model"):
            note("12 of 40 MB written")
        with stage("validate model"):
            pass
    assert [(s.name, s.depth, s.parent) for s in recorder.stages] == [
        ("capture model", 1, "export (onnx)"),
        ("export (onnx)", 0, None),
        ("validate model", 0, None),
    ]
    assert all(s.seconds >= 0 and not s.failed for s in recorder.stages)
    assert lines[0] == "▸ export (onnx) ..."
    assert lines[1] == "  ▸ capture model ..."
    assert lines[2] == "      12 of 40 MB written"
    assert lines[3].startswith("  ✓ capture model done in ") and lines[3].endswith(" s")
    assert lines[4].startswith("✓ export (onnx) done in ")
    assert len(lines) == 7
    data = recorder.to_list()
    assert data[1]["name"] == "export (onnx)" and set(data[1]) == {
        "name",
        "seconds",
        "depth",
        "parent",
        "failed",
        "rss_anon_bytes",
    }


def test_a_failing_stage_is_recorded_as_failed_and_the_error_passes_through() -> None:
    lines: list[str] = []
    recorder = StageRecorder(printer=lines.append)
    with recording(recorder), pytest.raises(RuntimeError, match="boom"), stage("capture model"):
        raise RuntimeError("boom")
    (only,) = recorder.stages
    assert only.failed and lines[-1].startswith("✗ capture model failed after ")


def test_without_a_recording_a_stage_only_runs_its_block() -> None:
    ran = []
    with stage("anything"):
        ran.append(True)
    note("nobody hears this")
    assert ran == [True]


def test_without_a_printer_nothing_is_printed_but_everything_is_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    recorder = StageRecorder()
    with recording(recorder), stage("load model"):
        pass
    assert [s.name for s in recorder.stages] == ["load model"]
    assert capsys.readouterr() == ("", "")


def test_a_recording_ends_with_its_block() -> None:
    recorder = StageRecorder()
    with recording(recorder):
        pass
    with stage("after"):
        pass
    assert recorder.stages == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux's")
def test_peak_memory_states_each_figure_and_its_source() -> None:
    recorder = StageRecorder()
    with recording(recorder), stage("allocate"):
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
    data = peak_memory(recorder)
    assert data["max_rss_bytes"] >= 64 * 2**20
    assert data["vm_hwm_bytes"] >= data["rss_bytes"] > 0
    assert data["rss_anon_bytes"] > 0 and data["rss_anon_peak_sampled_bytes"] > 0
    assert data["children_max_rss_bytes"] >= 0
    assert set(data["sources"]) == {k for k in data if k != "sources"}
    del block
