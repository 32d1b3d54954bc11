"""`validate_outputs` and `compare_outputs` against a fake runner: the model's own outputs, then perturbed."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from exporter_core.architectures.encoders import BertOnnxConfig
from exporter_core.config import OnnxSeq2SeqConfigWithPast
from exporter_core.testing import tiny_model_config
from exporter_validate import compare_outputs, max_abs_difference, validate_outputs
from exporter_validate.compare import DEFAULT_RTOL, resolve_tolerance

ATOL = 1e-5
Outputs = dict[str, np.ndarray]


def _real(inputs: Mapping[str, np.ndarray], like: np.ndarray) -> np.ndarray:
    """The attention mask broadcast to an output of shape (batch, sequence, ...)."""
    mask = inputs["attention_mask"].astype(bool)
    return mask.reshape(mask.shape + (1,) * (like.ndim - 2))


def _add_at_real_positions(name: str, delta: float) -> Callable[[Outputs, Mapping[str, np.ndarray]], Outputs]:
    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        outputs[name] = outputs[name] + np.where(_real(inputs, outputs[name]), np.float32(delta), np.float32(0))
        return outputs

    return perturb


def _first_real_position(inputs: Mapping[str, np.ndarray], row: int) -> tuple[int, int]:
    return row, int(np.flatnonzero(inputs["attention_mask"][row])[-1])


@pytest.fixture(scope="module")
def qa_config() -> BertOnnxConfig:
    """A question-answering config: two outputs with a sequence axis."""
    return BertOnnxConfig(tiny_model_config("bert"), task="question-answering")


# -- passing ----------------------------------------------------------------------------------------------------


def test_exact_artifact_passes_with_the_old_log_lines(bert_default: Any, make_runner: Any, tiny_tokenizer: Any) -> None:
    model, config = bert_default
    lines: list[str] = []
    # An atol alone is the old, absolute tolerance: the old verdict line, word for word.
    report = validate_outputs(
        config,
        model,
        make_runner(model, ["last_hidden_state"]),
        preprocessor=tiny_tokenizer,
        atol=ATOL,
        log=lines.append,
    )
    assert report.passed and report.failures == []
    assert report.reference_inputs == {"input_ids": [3, 9], "attention_mask": [3, 9], "token_type_ids": [3, 9]}
    (check,) = report.outputs
    assert check.max_abs_diff is not None and check.max_abs_diff <= 1e-6
    assert lines[:4] == [
        "Validating ONNX model...",
        "\t-[✓] ONNX model output names match reference model ({'last_hidden_state'})",
        '\t- Validating ONNX Model output "last_hidden_state":',
        "\t\t-[✓] (3, 9, 32) matches (3, 9, 32)",
    ]
    assert lines[4].startswith("\t\t-[✓] all values close (atol: 1e-05")
    assert lines[4] == "\t\t-[✓] all values close (atol: 1e-05)"  # the old line, word for word
    assert lines[5].startswith("\t\t    max abs diff ") and len(lines) == 6
    assert lines == report.log_lines()


def test_log_goes_to_the_exporter_logger_by_default(
    bert_default: Any, make_runner: Any, caplog: pytest.LogCaptureFixture
) -> None:
    model, config = bert_default
    with caplog.at_level(logging.INFO, logger="exporter"):
        validate_outputs(config, model, make_runner(model, ["last_hidden_state"]), format_name="TorchScript")
    messages = [r.getMessage() for r in caplog.records if r.name == "exporter"]
    assert messages[0] == "Validating TorchScript model..."
    assert messages[1] == "\t-[✓] TorchScript model output names match reference model ({'last_hidden_state'})"


def test_differences_within_atol_pass(
    qa_config: BertOnnxConfig, bert_qa: Any, make_runner: Any, tiny_tokenizer: Any
) -> None:
    model, config = bert_qa
    runner = make_runner(model, ["start_logits", "end_logits"], _add_at_real_positions("start_logits", 0.5 * ATOL))
    report = validate_outputs(config, model, runner, preprocessor=tiny_tokenizer, log=lambda _line: None)
    assert report.passed
    start, end = report.outputs
    assert start.max_abs_diff == pytest.approx(0.5 * ATOL, abs=0.1 * ATOL)
    assert end.max_abs_diff is not None and end.max_abs_diff <= 1e-6
    assert report.worst_difference == start.max_abs_diff


def test_atol_comes_from_the_config_unless_given(bert_qa: Any, make_runner: Any) -> None:
    model, config = bert_qa
    runner = make_runner(model, ["start_logits", "end_logits"], _add_at_real_positions("end_logits", 5e-4))
    assert not validate_outputs(config, model, runner, log=lambda _line: None).passed
    report = validate_outputs(config, model, runner, atol=1e-3, log=lambda _line: None)
    assert report.passed and report.atol == 1e-3
    assert all(check.atol == 1e-3 for check in report.outputs)


def test_given_inputs_are_used_as_they_are(bert_default: Any, make_runner: Any) -> None:
    model, config = bert_default
    inputs = config.generate_dummy_inputs(None, batch_size=1, seq_length=5, framework="np")
    report = validate_outputs(
        config, model, make_runner(model, ["last_hidden_state"]), inputs=inputs, log=lambda _l: None
    )
    assert report.reference_inputs["input_ids"] == [1, 5]
    assert report.outputs[0].reference_shape == [1, 5, 32]
    assert report.outputs[0].compared == "all"


# -- failing: every failure reported ----------------------------------------------------------------------------


def test_every_output_beyond_atol_is_reported(bert_qa: Any, make_runner: Any, tiny_tokenizer: Any) -> None:
    model, config = bert_qa

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        outputs["start_logits"][_first_real_position(inputs, 0)] += 1e-3
        outputs["end_logits"][_first_real_position(inputs, 2)] -= 2e-3
        return outputs

    lines: list[str] = []
    report = validate_outputs(
        config,
        model,
        make_runner(model, ["start_logits", "end_logits"], perturb),
        preprocessor=tiny_tokenizer,
        atol=ATOL,
        log=lines.append,
    )
    assert not report.passed
    assert [check.passed for check in report.outputs] == [False, False]
    start, end = report.outputs
    assert start.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert end.max_abs_diff == pytest.approx(2e-3, rel=1e-3)
    assert len(report.failures) == 2
    # Each failure names the worst position (batch row, sequence position) where the difference is largest.
    assert report.failures[0].startswith('output "start_logits": max abs difference 1.000e-03 at (')
    assert report.failures[1].startswith('output "end_logits": max abs difference 2.000e-03 at (')
    assert all("exceeds atol 1e-05" in failure for failure in report.failures)
    failing_lines = [line for line in lines if line.startswith("\t\t-[x] values not close enough (atol: 1e-05")]
    assert len(failing_lines) == 2
    assert lines.count("\t\t-[✓] (3, 9) matches (3, 9)") == 2


def test_only_the_failing_output_fails(bert_qa: Any, make_runner: Any) -> None:
    model, config = bert_qa
    runner = make_runner(model, ["start_logits", "end_logits"], _add_at_real_positions("end_logits", 3 * ATOL))
    report = validate_outputs(config, model, runner, atol=ATOL, log=lambda _line: None)
    assert [check.passed for check in report.outputs] == [True, False]
    assert len(report.failures) == 1 and '"end_logits"' in report.failures[0]


def test_missing_output_and_a_failing_one_are_both_reported(bert_qa: Any, make_runner: Any) -> None:
    model, config = bert_qa

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        outputs["start_logits"] = outputs["start_logits"] + np.float32(0.1)
        del outputs["end_logits"]
        return outputs

    lines: list[str] = []
    report = validate_outputs(
        config, model, make_runner(model, ["start_logits", "end_logits"], perturb), log=lines.append
    )
    assert not report.passed and not report.names_match
    start, end = report.outputs
    assert end.missing and end.exported_shape is None and not end.passed
    assert not start.values_ok
    # Names print as Python sets, whose order is the interpreter's: build the expected text the same way.
    names = f"{{'start_logits'}} do not match reference model {set(['start_logits', 'end_logits'])}"
    assert report.failures == [
        f"output names {names}",
        report.failures[1],
        'output "end_logits" is missing from the exported model',
    ]
    assert report.failures[1].startswith('output "start_logits": max abs difference 1.000e-01')
    assert lines[1] == f"\t-[x] ONNX model output names {names}"
    assert "\t\t-[x] missing from the exported model" in lines


def test_shape_mismatch_is_reported(bert_default: Any, make_runner: Any) -> None:
    model, config = bert_default

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        outputs["last_hidden_state"] = outputs["last_hidden_state"][:, :-1]
        return outputs

    lines: list[str] = []
    report = validate_outputs(config, model, make_runner(model, ["last_hidden_state"], perturb), log=lines.append)
    (check,) = report.outputs
    assert not check.shape_ok and check.max_abs_diff is None
    assert report.names_match and not report.passed
    assert report.failures == ['output "last_hidden_state": shape (3, 8, 32) doesn\'t match (3, 9, 32)']
    assert lines[3] == "\t\t-[x] shape (3, 8, 32) doesn't match (3, 9, 32)"
    assert len(lines) == 4


def test_extra_exported_output_breaks_the_name_match_only(bert_default: Any, make_runner: Any) -> None:
    model, config = bert_default

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        outputs["pooler_output"] = np.zeros((3, 32), dtype=np.float32)
        return outputs

    report = validate_outputs(config, model, make_runner(model, ["last_hidden_state"], perturb), log=lambda _l: None)
    assert report.outputs[0].passed
    assert not report.passed
    assert len(report.failures) == 1 and report.failures[0].startswith("output names")


# -- padding ------------------------------------------------------------------------------------------------------


def test_padded_positions_are_excluded_and_reported_apart(
    bert_default: Any, make_runner: Any, tiny_tokenizer: Any
) -> None:
    model, config = bert_default

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        hidden = outputs["last_hidden_state"]
        outputs["last_hidden_state"] = hidden + np.where(_real(inputs, hidden), np.float32(0), np.float32(1.0))
        return outputs

    lines: list[str] = []
    report = validate_outputs(
        config, model, make_runner(model, ["last_hidden_state"], perturb), preprocessor=tiny_tokenizer, log=lines.append
    )
    (check,) = report.outputs
    assert report.passed
    assert check.compared == "real positions (attention_mask == 1)"
    assert check.max_abs_diff is not None and check.max_abs_diff <= 1e-6
    assert check.max_abs_diff_excluded == pytest.approx(1.0, abs=1e-5)
    assert "attention_mask == 1" in lines[5]


def test_a_real_position_is_not_excluded(bert_default: Any, make_runner: Any, tiny_tokenizer: Any) -> None:
    model, config = bert_default

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        row, last_real = _first_real_position(inputs, 2)
        outputs["last_hidden_state"][row, last_real, 7] += 0.25
        return outputs

    report = validate_outputs(
        config,
        model,
        make_runner(model, ["last_hidden_state"], perturb),
        preprocessor=tiny_tokenizer,
        log=lambda _l: None,
    )
    assert not report.passed
    assert report.outputs[0].max_abs_diff == pytest.approx(0.25, rel=1e-4)
    assert report.outputs[0].max_abs_diff_excluded is not None and report.outputs[0].max_abs_diff_excluded <= 1e-6


def test_outputs_without_a_sequence_axis_compare_everything() -> None:
    config = BertOnnxConfig(tiny_model_config("bert"), task="sequence-classification")
    inputs = {"attention_mask": np.array([[1, 1, 0], [1, 0, 0]])}
    reference = {"logits": np.array([[0.5, -0.5], [1.0, 2.0]], dtype=np.float32)}
    exported = {"logits": reference["logits"] + np.float32(2 * ATOL)}
    (check,) = compare_outputs(config, inputs, reference, exported, ATOL)
    assert check.compared == "all" and check.max_abs_diff_excluded is None
    assert not check.passed


def test_a_full_mask_or_a_mask_that_does_not_fit_excludes_nothing() -> None:
    config = BertOnnxConfig(tiny_model_config("bert"), task="token-classification")
    reference = {"logits": np.zeros((2, 3, 4), dtype=np.float32)}
    exported = {"logits": np.full((2, 3, 4), 1.0, dtype=np.float32)}
    full, choices, short, other_batch = (
        np.ones((2, 3), dtype=np.int64),
        np.zeros((2, 2, 3), dtype=np.int64),
        np.zeros((2, 2), dtype=np.int64),
        np.zeros((4, 3), dtype=np.int64),
    )
    for mask in (full, choices, short, other_batch):
        (check,) = compare_outputs(config, {"attention_mask": mask}, reference, exported, ATOL)
        assert check.compared == "all" and check.max_abs_diff == 1.0 and check.max_abs_diff_excluded is None


class _Seq2Seq(OnnxSeq2SeqConfigWithPast):
    """An encoder-decoder config without past: encoder and decoder text inputs."""

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return {
            "input_ids": {0: "batch", 1: "encoder_sequence"},
            "attention_mask": {0: "batch", 1: "encoder_sequence"},
            "decoder_input_ids": {0: "batch", 1: "decoder_sequence"},
            "decoder_attention_mask": {0: "batch", 1: "decoder_sequence"},
        }


def test_decoder_outputs_use_the_decoder_mask() -> None:
    config = _Seq2Seq(tiny_model_config("bart"), task="seq2seq-lm")
    assert config.outputs["logits"] == {0: "batch", 1: "decoder_sequence"}
    inputs = {
        "attention_mask": np.ones((2, 4), dtype=np.int64),
        "decoder_attention_mask": np.array([[1, 1, 1], [1, 0, 0]]),
    }
    reference = {"logits": np.zeros((2, 3, 5), dtype=np.float32)}
    exported = {"logits": reference["logits"].copy()}
    exported["logits"][1, 2, :] = 9.0
    (check,) = compare_outputs(config, inputs, reference, exported, ATOL)
    assert check.passed
    assert check.compared == "real positions (decoder_attention_mask == 1)"
    assert check.max_abs_diff_excluded == 9.0


# -- tolerance: atol alone is absolute only --------------------------------------------------------------------------------------


def test_rtol_is_zero_a_relatively_tiny_difference_beyond_atol_fails(qa_config: BertOnnxConfig) -> None:
    reference = {"start_logits": np.array([[1000.0, -2000.0]]), "end_logits": np.array([[1000.0, 0.5]])}
    exported = {"start_logits": reference["start_logits"] + 1.5 * ATOL, "end_logits": reference["end_logits"] + ATOL}
    # np.allclose (rtol 1e-5 added silently by the old exporter) calls the first output close.
    assert np.allclose(exported["start_logits"], reference["start_logits"], atol=ATOL)
    start, end = compare_outputs(qa_config, {}, reference, exported, ATOL)
    assert start.max_abs_diff == pytest.approx(1.5 * ATOL) and not start.passed
    assert end.max_abs_diff == pytest.approx(ATOL, rel=1e-6)


def test_rtol_is_zero_on_a_real_model_output(bert_default: Any, make_runner: Any, tiny_tokenizer: Any) -> None:
    model, config = bert_default
    captured: dict[str, np.ndarray] = {}

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        hidden = outputs["last_hidden_state"]
        captured["reference"] = hidden.copy()
        at = np.unravel_index(np.argmax(np.abs(hidden) * _real(inputs, hidden)), hidden.shape)
        hidden[at] += np.float32(1.5 * ATOL) * np.sign(hidden[at])
        captured["exported"] = hidden
        return outputs

    report = validate_outputs(
        config,
        model,
        make_runner(model, ["last_hidden_state"], perturb),
        preprocessor=tiny_tokenizer,
        atol=ATOL,
        log=lambda _l: None,
    )
    # |reference| > 1 there, so np.allclose's hidden rtol term (1e-5 * |reference|) covers the difference.
    assert np.abs(captured["reference"]).max() > 1.0
    assert np.allclose(captured["exported"], captured["reference"], atol=ATOL)
    assert not report.passed and report.rtol == 0.0
    assert report.outputs[0].max_abs_diff == pytest.approx(1.5 * ATOL, rel=0.1)


# -- NaN and infinity ----------------------------------------------------------------------------------------------


def test_nan_where_the_reference_has_a_number_fails(bert_qa: Any, make_runner: Any, tiny_tokenizer: Any) -> None:
    model, config = bert_qa

    def perturb(outputs: Outputs, inputs: Mapping[str, np.ndarray]) -> Outputs:
        outputs["end_logits"][0, 0] = np.nan
        return outputs

    report = validate_outputs(
        config,
        model,
        make_runner(model, ["start_logits", "end_logits"], perturb),
        preprocessor=tiny_tokenizer,
        atol=ATOL,
        log=lambda _l: None,
    )
    start, end = report.outputs
    assert start.passed
    assert not end.passed and end.max_abs_diff == float("inf")
    # The failure says which side produced the NaN, and where.
    (failure,) = report.failures
    assert failure.startswith('output "end_logits": max abs difference inf at (0, 0) exceeds atol 1e-05')
    assert "the exported model produced 1 non-finite value(s) (first nan at (0, 0))" in failure
    assert "the PyTorch model's values there are finite" in failure


@pytest.mark.parametrize(
    ("reference", "exported", "expected"),
    [
        ([np.nan, 1.0], [np.nan, 1.0], 0.0),
        ([np.inf, -np.inf], [np.inf, -np.inf], 0.0),
        ([np.nan, 1.0], [0.0, 1.0], float("inf")),
        ([np.inf, 1.0], [1e30, 1.0], float("inf")),
        ([np.inf, 1.0], [-np.inf, 1.0], float("inf")),
    ],
)
def test_nan_and_infinity(
    qa_config: BertOnnxConfig, reference: list[float], exported: list[float], expected: float
) -> None:
    ref = {"start_logits": np.array([reference], dtype=np.float32), "end_logits": np.zeros((1, 2), dtype=np.float32)}
    out = {"start_logits": np.array([exported], dtype=np.float32), "end_logits": np.zeros((1, 2), dtype=np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start, end = compare_outputs(qa_config, {}, ref, out, ATOL)
    assert start.max_abs_diff == expected
    assert start.passed is (expected == 0.0)
    assert end.passed


def test_nan_at_a_padded_position_is_excluded_but_shown(qa_config: BertOnnxConfig) -> None:
    inputs = {"attention_mask": np.array([[1, 1, 0]])}
    ref = {"start_logits": np.zeros((1, 3), np.float32), "end_logits": np.zeros((1, 3), np.float32)}
    out = {"start_logits": np.array([[0.0, 0.0, np.nan]], np.float32), "end_logits": np.zeros((1, 3), np.float32)}
    start, _ = compare_outputs(qa_config, inputs, ref, out, ATOL)
    assert start.passed and start.max_abs_diff == 0.0
    assert start.max_abs_diff_excluded == float("inf")


def test_empty_outputs_compare_equal(qa_config: BertOnnxConfig) -> None:
    empty = {"start_logits": np.zeros((0, 3), np.float32), "end_logits": np.zeros((0, 3), np.float32)}
    assert all(
        check.passed and check.max_abs_diff == 0.0 for check in compare_outputs(qa_config, {}, empty, dict(empty), ATOL)
    )


# -- the worst difference over every output (static-shape backends' padding-effect and other-shape checks) ---------


def test_max_abs_difference_takes_the_worst_output_at_real_positions(qa_config: BertOnnxConfig) -> None:
    inputs = {"attention_mask": np.array([[1, 1, 0]])}
    ref = {"start_logits": np.zeros((1, 3), np.float32), "end_logits": np.zeros((1, 3), np.float32)}
    out = {
        "start_logits": np.array([[0.0, 0.25, 9.0]], np.float32),
        "end_logits": np.array([[0.5, 0.0, 9.0]], np.float32),
    }
    assert max_abs_difference(qa_config, inputs, ref, out) == 0.5
    assert max_abs_difference(qa_config, {}, ref, out) == 9.0  # no mask: every position counts


@pytest.mark.parametrize(
    ("exported", "expected"),
    [
        ({"start_logits": np.array([[np.nan, 0.0]], np.float32)}, float("inf")),  # NaN against a number
        ({"start_logits": np.zeros((1, 3), np.float32)}, float("inf")),  # another shape
        ({}, float("inf")),  # an output missing
    ],
)
def test_max_abs_difference_is_infinite_for_nan_shape_or_missing_output(
    qa_config: BertOnnxConfig, exported: dict[str, np.ndarray], expected: float
) -> None:
    ref = {"start_logits": np.zeros((1, 2), np.float32), "end_logits": np.zeros((1, 2), np.float32)}
    out = {"end_logits": np.zeros((1, 2), np.float32), **exported}
    assert max_abs_difference(qa_config, {}, ref, out) == expected


# -- tolerance: the default scales with each output's magnitude -------------------------------------------------


def test_the_default_tolerance_is_atol_plus_rtol_times_the_reference_magnitude(qa_config: BertOnnxConfig) -> None:
    reference = {"start_logits": np.array([[1000.0, -2000.0]]), "end_logits": np.array([[0.5, -0.25]])}
    exported = {"start_logits": reference["start_logits"] + 0.1, "end_logits": reference["end_logits"] + 1e-4}
    start, end = compare_outputs(qa_config, {}, reference, exported, ATOL, DEFAULT_RTOL)
    # Each output's own magnitude: 2000 lets 0.1 pass (tolerance 0.21), 0.5 does not let 1e-4 pass (tolerance 6e-5).
    assert start.reference_magnitude == 2000.0 and start.tolerance == pytest.approx(ATOL + DEFAULT_RTOL * 2000.0)
    assert start.passed
    assert end.reference_magnitude == 0.5 and end.tolerance == pytest.approx(ATOL + DEFAULT_RTOL * 0.5)
    assert not end.passed


def test_the_magnitude_is_taken_at_compared_positions_only(qa_config: BertOnnxConfig) -> None:
    inputs = {"attention_mask": np.array([[1, 1, 0]])}
    reference = {"start_logits": np.array([[1.0, -2.0, 1e6]]), "end_logits": np.array([[0.0, 0.0, np.inf]])}
    exported = {"start_logits": reference["start_logits"].copy(), "end_logits": reference["end_logits"].copy()}
    start, end = compare_outputs(qa_config, inputs, reference, exported, ATOL, DEFAULT_RTOL)
    # A huge value at a padded position widens nothing; neither does a non-finite one.
    assert start.reference_magnitude == 2.0 and end.reference_magnitude == 0.0


def test_tolerance_resolution() -> None:
    config = BertOnnxConfig(tiny_model_config("bert"), task="default")
    assert resolve_tolerance(config, None, None) == (config.atol_for_validation, DEFAULT_RTOL)
    assert resolve_tolerance(config, 1e-3, None) == (1e-3, 0.0)  # an atol alone is strictly absolute
    assert resolve_tolerance(config, None, 1e-2) == (config.atol_for_validation, 1e-2)
    assert resolve_tolerance(config, 1e-3, 0.0) == (1e-3, 0.0)


def test_default_log_and_report_state_each_outputs_tolerance(
    bert_default: Any, make_runner: Any, tiny_tokenizer: Any
) -> None:
    model, config = bert_default
    lines: list[str] = []
    report = validate_outputs(
        config, model, make_runner(model, ["last_hidden_state"]), preprocessor=tiny_tokenizer, log=lines.append
    )
    (check,) = report.outputs
    assert report.passed and report.rtol == DEFAULT_RTOL and check.rtol == DEFAULT_RTOL
    assert check.reference_magnitude is not None and check.reference_magnitude > 0
    assert lines[4] == f"\t\t-[✓] all values close (atol: 1e-05, rtol: {DEFAULT_RTOL:g})"
    assert lines[5].startswith("\t\t    max abs diff ")
    assert f"; tolerance {check.tolerance:.3e} = atol 1e-05 + rtol {DEFAULT_RTOL:g} x max|reference| " in lines[5]
    (data,) = report.to_dict()["outputs"]
    assert data["atol"] == ATOL and data["rtol"] == DEFAULT_RTOL
    assert data["reference_magnitude"] == check.reference_magnitude and data["tolerance"] == check.tolerance
    assert "max|reference|" in report.to_dict()["tolerance"]


def test_a_difference_beyond_the_scaled_tolerance_fails_and_says_so(bert_qa: Any, make_runner: Any) -> None:
    model, config = bert_qa
    runner = make_runner(model, ["start_logits", "end_logits"], _add_at_real_positions("end_logits", 1e-2))
    report = validate_outputs(config, model, runner, log=lambda _line: None)
    start, end = report.outputs
    assert start.passed and not end.passed
    (failure,) = report.failures
    assert f"exceeds tolerance {end.tolerance:.3e} = atol 1e-05 + rtol {DEFAULT_RTOL:g} x max|reference|" in failure
