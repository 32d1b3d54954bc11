"""Dual text/image encoders (CLIP, SigLIP, ...) on ONNX: what the generated cases do not prove.

Every (architecture, feature) pair is exported and validated by the test kit's generated cases
(``test_onnx_cases.py``). Here the exported graphs (through the kit's cache, so never twice) are checked further:
the text batch and the image batch are two dynamic axes of the written graph, the graph agrees with PyTorch when
one side has a single row, a real tokenizer's text validates too, and the validated rows differ by far more than the
tolerance (so a row mix-up would fail). CLIP runs in the default tier, the other types with ``--exporter-matrix``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.dummy_inputs import DummySpec
from exporter_core.export_cases import CaseOutcome
from exporter_core.features import config_class_for
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs

_MATRIX = pytest.mark.exporter_matrix
TYPES = [
    "clip",
    *(
        pytest.param(t, marks=_MATRIX)
        for t in ("siglip", "siglip2", "chinese_clip", "altclip", "clipseg", "blip", "owlvit", "owlv2")
    ),
]


@dataclasses.dataclass
class Exported:
    """An export outcome with its loaded model, preprocessor, export config and an ONNX Runtime runner."""

    model_type: str
    outcome: CaseOutcome
    model: Any
    preprocessor: Any
    config: Any
    path: Path
    runner: OnnxRuntimeRunner


def _load(model_type: str, feature: str, outcome: CaseOutcome) -> Exported:
    assert outcome.validated, outcome.reason
    assert outcome.checkpoint is not None
    config_cls = config_class_for(model_type)
    model = loading.load_model(outcome.checkpoint, feature, config_cls)
    preprocessor = loading.load_preprocessor(outcome.checkpoint)
    config = config_cls.for_feature(model.config, feature)
    (path,) = outcome.artifacts(".onnx")
    return Exported(model_type, outcome, model, preprocessor, config, path, OnnxRuntimeRunner(path))


@pytest.fixture(scope="module", params=TYPES)
def pair(request: pytest.FixtureRequest, exported: Callable[..., CaseOutcome]) -> Exported:
    """The type's default feature exported through the pipeline (the kit's cache: once per run)."""
    return _load(request.param, "default", exported(request.param, "default", "onnx"))


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = [*graph.input, *graph.output]
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_text_and_image_batches_are_two_dynamic_axes_of_the_graph(pair: Exported) -> None:
    dims = _graph_dims(pair.path)
    text_batch, sequence = dims["input_ids"]
    image_batch = dims["pixel_values"][0]
    assert all(isinstance(d, str) for d in (text_batch, sequence, image_batch))
    assert len({text_batch, sequence, image_batch}) == 3
    assert dims["attention_mask"] == [text_batch, sequence]
    assert dims["logits_per_image"] == [image_batch, text_batch]
    assert dims["logits_per_text"] == [text_batch, image_batch]
    assert dims["text_embeds"][0] == text_batch and dims["image_embeds"][0] == image_batch


def test_report_validated_other_batches_than_traced(pair: Exported) -> None:
    parts = pair.outcome.report["parts"]  # type: ignore[index]
    assert len(parts) == 2, "one validation per scenario"
    for part in parts:
        traced, validated = part["export_inputs"], part["reference_inputs"]
        assert traced["input_ids"][0] == traced["pixel_values"][0] == 2
        texts, images = validated["input_ids"][0], validated["pixel_values"][0]
        assert texts != images and 2 not in (texts, images)
        assert validated["input_ids"][1] != traced["input_ids"][1]
    assert pair.outcome.worst_difference is not None and pair.outcome.worst_difference <= 1e-4


@pytest.mark.parametrize(("texts", "images"), [(1, 3), (5, 1)])
def test_one_text_or_one_image_against_several(pair: Exported, texts: int, images: int, record_property: Any) -> None:
    spec = DummySpec(batch_size=texts, sequence_length=7, padded=True, seed=5)
    inputs = pair.config.ordered_inputs(pair.config.dual_arrays(pair.preprocessor, spec, image_batch=images), "np")
    report = validate_outputs(pair.config, pair.model, pair.runner, inputs=inputs, log=lambda line: None)
    assert report.passed, "\n".join(report.log_lines())
    record_property(f"max_abs_diff_{texts}x{images}", max(check.max_abs_diff for check in report.outputs))


def test_validated_rows_differ_so_a_row_mixup_would_fail(pair: Exported) -> None:
    """Validation only means something if different texts and images give outputs further apart than the tolerance."""
    (scenario, *_) = pair.config.validation_scenarios(pair.preprocessor)
    outputs = pair.runner(scenario.inputs)
    atol = pair.config.atol_for_validation
    for name in ("text_embeds", "image_embeds"):
        rows = outputs[name]
        assert float(np.abs(rows[0] - rows[1]).max()) > 100 * atol, name


def test_a_real_tokenizer_s_text_validates(exported: Callable[..., CaseOutcome]) -> None:
    """CLIP with the kit's tokenizer (bos/eos written by the tokenizer itself, padding with its pad id)."""
    outcome = exported("clip", "zero-shot-image-classification", "onnx", preprocessor="tokenizer")
    loaded = _load("clip", "zero-shot-image-classification", outcome)
    assert loaded.preprocessor is not None and "input_ids" in loaded.preprocessor.model_input_names
    assert list(loaded.config.outputs)[:2] == ["logits_per_image", "logits_per_text"]
    spec = DummySpec(batch_size=4, sequence_length=6, padded=True, seed=7)
    inputs = loaded.config.ordered_inputs(loaded.config.dual_arrays(loaded.preprocessor, spec, image_batch=3), "np")
    assert inputs["input_ids"][0, 0] == loaded.preprocessor.cls_token_id
    report = validate_outputs(loaded.config, loaded.model, loaded.runner, inputs=inputs, log=lambda line: None)
    assert report.passed, "\n".join(report.log_lines())
