"""Property-based: generated arguments and damaged checkpoints through `exporter.export` and the command line.

Whatever is asked, no exception outside exporter's hierarchy escapes, the exit status is a documented one, and on
every failure the output folder is as it was (a failed validation adds only its report). The default run tries
``EXPORTER_FUZZ_EXAMPLES`` examples per entry point (12 unless set); the matrix tier (``--exporter-matrix``) runs
the same properties marked ``exporter_matrix`` with ``EXPORTER_FUZZ_MATRIX_EXAMPLES`` (150 unless set).
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property-based test needs hypothesis (the test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import exporter  # noqa: E402
from exporter.cli import EXIT_STATUSES  # noqa: E402
from exporter_core.errors import ExporterError, ValidationError  # noqa: E402

DOCUMENTED = {code for code, _ in EXIT_STATUSES}
EXAMPLES = int(os.environ.get("EXPORTER_FUZZ_EXAMPLES", "12"))
#: Examples per entry point in the matrix tier (the tests marked exporter_matrix).
MATRIX_EXAMPLES = int(os.environ.get("EXPORTER_FUZZ_MATRIX_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _truncated(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-37])


def _garbage(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(os.urandom(64))


def _huge_header(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")


def _missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )


def _wrong_config(folder: Path) -> None:
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text.replace('"hidden_size": 32', '"hidden_size": 40'))


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _broken_config(folder: Path) -> None:
    (folder / "config.json").write_text("{ not json")


def _intact(folder: Path) -> None:
    return None


DAMAGE: dict[str, Callable[[Path], None]] = {
    "intact": _intact,
    "truncated": _truncated,
    "garbage": _garbage,
    "huge-header": _huge_header,
    "missing-shard": _missing_shard,
    "wrong-config": _wrong_config,
    "no-weights": _no_weights,
    "broken-config": _broken_config,
}

FEATURES = st.sampled_from(
    ["default", "sequence-classification", "question-answering", "sequence-clasification", "seq2seq-lm", "", "??"]
)
# No default opset: the default engine (torch.export) is the slow one, and any export proves the point.
OPSETS = st.sampled_from([-3, 0, 9, 12, 13, 17, 99, "17", 17.5, True])
ATOLS = st.sampled_from([None, 1e-4, 0.0, -1.0, float("nan"), float("inf"), 1e-30])
EXTRA = st.dictionaries(
    st.sampled_from(["opsett", "enigne", "atoll", "batch_size", "sequence_length", "overwrite", "bogus"]),
    st.sampled_from([1, "x", None, True]),
    max_size=2,
)
OUTPUTS = st.sampled_from(["new", "empty", "holds-files", "wrong-file", "nested-new"])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def _prepare(base: Path, work: Path, damage: str, output_kind: str) -> tuple[Path, Path]:
    if work.exists():
        shutil.rmtree(work)
    folder = work / "ckpt"
    shutil.copytree(base, folder)
    DAMAGE[damage](folder)
    room = work / "room"
    room.mkdir()
    output = {
        "new": room / "out",
        "empty": room / "empty",
        "holds-files": room / "full",
        "wrong-file": room / "notes.txt",
        "nested-new": room / "a" / "b",
    }[output_kind]
    if output_kind == "empty":
        output.mkdir()
    elif output_kind == "holds-files":
        output.mkdir()
        (output / "README.md").write_text("someone else's")
    elif output_kind == "wrong-file":
        output.write_text("not a model")
    return folder, output


def _check_failure(room_before: dict[str, bytes], room: Path, allow_report: bool) -> None:
    after = _snapshot(room)
    if allow_report:
        after = {k: v for k, v in after.items() if not k.endswith(".validation-failed.json")}
        # the folder the failed report went into may be new
        after = {k: v for k, v in after.items() if k in room_before or v != b"<dir>"}
    assert after == room_before


@pytest.fixture(scope="module")
def base_checkpoint(checkpoint: Callable[..., Path]) -> Path:
    return checkpoint("bert", "sequence-classification")


API_CASES = given(
    damage=st.sampled_from(sorted(DAMAGE)),
    feature=FEATURES,
    opset=OPSETS,
    atol=ATOLS,
    extra=EXTRA,
    output_kind=OUTPUTS,
)


def _python_api_fails_only_in_documented_ways(
    base_checkpoint: Path,
    tmp_path: Path,
    damage: str,
    feature: str,
    opset: Any,
    atol: Any,
    extra: dict[str, Any],
    output_kind: str,
) -> None:
    folder, output = _prepare(base_checkpoint, tmp_path / "work", damage, output_kind)
    room = tmp_path / "work" / "room"
    before = _snapshot(room)
    options: dict[str, Any] = dict(extra)
    if opset is not None:
        options["opset"] = opset
    try:
        exporter.export(folder, output, feature=feature, atol=atol, **options)
    except ValidationError as exc:
        assert exc.exit_code == 1
        _check_failure(before, room, allow_report=True)
    except ExporterError as exc:
        assert exc.exit_code in DOCUMENTED and exc.exit_code != 0
        assert str(exc).strip() and "\n" not in str(exc).strip()
        _check_failure(before, room, allow_report=False)
    else:
        assert not [p for p in room.rglob(".exporter-*")]


CLI_CASES = given(
    damage=st.sampled_from(sorted(DAMAGE)),
    feature=FEATURES,
    opset=st.sampled_from(["9", "13", "17", "x", "-1"]),
    atol=st.sampled_from([None, "1e-4", "0", "nan", "abc"]),
    flags=st.lists(
        st.sampled_from(["--overwrite", "--allow-nonfinite", "--framework=tf", "--engine=dynamo"]), max_size=2
    ),
    output_kind=OUTPUTS,
)


def _command_line_exits_only_with_documented_statuses(
    base_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    feature: str,
    opset: str | None,
    atol: str | None,
    flags: list[str],
    output_kind: str,
) -> None:
    from exporter.cli import main

    folder, output = _prepare(base_checkpoint, tmp_path / "work", damage, output_kind)
    room = tmp_path / "work" / "room"
    before = _snapshot(room)
    argv = ["onnx", "--model", str(folder), "--feature", feature, *flags]
    if opset is not None:
        argv += ["--opset", opset]
    if atol is not None:
        argv += ["--atol", atol]
    argv.append(str(output))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing a malformed value
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code in DOCUMENTED, err
    assert "Traceback" not in err
    if code != 0:
        _check_failure(before, room, allow_report=code == 1)
    if code not in (0, 1) and "usage:" not in err:
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err


test_python_api_fails_only_in_documented_ways = FUZZ(API_CASES(_python_api_fails_only_in_documented_ways))
test_command_line_exits_only_with_documented_statuses = FUZZ(
    CLI_CASES(_command_line_exits_only_with_documented_statuses)
)
test_python_api_many_examples = pytest.mark.exporter_matrix(
    settings(FUZZ, max_examples=MATRIX_EXAMPLES)(API_CASES(_python_api_fails_only_in_documented_ways))
)
test_command_line_many_examples = pytest.mark.exporter_matrix(
    settings(FUZZ, max_examples=MATRIX_EXAMPLES)(CLI_CASES(_command_line_exits_only_with_documented_statuses))
)
