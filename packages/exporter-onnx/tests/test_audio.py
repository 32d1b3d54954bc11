"""The audio encoder family on ONNX: what the generated cases do not prove about sample counts.

Every (model type, feature) pair is exported and validated by the test kit's generated cases (``test_onnx_cases.py``:
one audio pair in the default tier, every pair with ``--exporter-matrix``) at two other (batch, samples) shapes than
the traced one, with padded rows. Here the graphs are checked further: samples and frames stay dynamic, and the graph
agrees with PyTorch at a third sample count (an even frame count where the scenarios had odd ones, and the reverse);
a group-norm wav2vec2 takes no mask; SEW-D and the conformer refuse the dynamo engine's opsets with the reason. wav2vec2 CTC runs in
the default tier, the rest with ``--exporter-matrix``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from exporter_core import loading
from exporter_core.errors import OpsetError
from exporter_core.export_cases import CaseOutcome
from exporter_core.features import config_class_for
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs

_MATRIX = pytest.mark.exporter_matrix

THIRD_SHAPE = [
    ("wav2vec2", "ctc"),
    pytest.param("hubert", "audio-classification", marks=_MATRIX),
    pytest.param("sew", "ctc", marks=_MATRIX),
    pytest.param("sew-d", "default", marks=_MATRIX),
    pytest.param("data2vec-audio", "default", marks=_MATRIX),
    pytest.param("wav2vec2-conformer", "ctc", marks=_MATRIX),
]


def _graph_inputs(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}


@pytest.mark.parametrize(("model_type", "feature"), THIRD_SHAPE)
def test_samples_stay_dynamic_and_a_third_sample_count_matches_pytorch(
    model_type: str, feature: str, exported: Callable[..., CaseOutcome]
) -> None:
    outcome = exported(model_type, feature, "onnx")
    assert outcome.validated, outcome.reason
    assert outcome.checkpoint is not None and outcome.report is not None
    labels = [part["part"] for part in outcome.report["parts"]]
    assert len(labels) == 2 and all("samples" in label for label in labels)
    config_cls = config_class_for(model_type)
    model = loading.load_model(outcome.checkpoint, feature, config_cls)
    config = config_cls.for_feature(model.config, feature)
    (path,) = outcome.artifacts(".onnx")
    dims = _graph_inputs(path)
    assert list(dims) == list(config.inputs)
    assert all(isinstance(d, str) for shape in dims.values() for d in shape), dims
    extractor = loading.load_preprocessor(outcome.checkpoint)
    assert type(extractor).__name__ == "Wav2Vec2FeatureExtractor"
    for batch, samples in ((2, 760), (4, 1005)):  # 75 and 100 frames: both parities
        inputs = config.generate_dummy_inputs(
            extractor, batch_size=batch, seq_length=samples, framework="np", padded=True, seed=7
        )
        report = validate_outputs(config, model, OnnxRuntimeRunner(path), inputs=inputs, log=lambda _: None)
        assert report.passed, report.failures()
        assert report.worst_difference < config.atol_for_validation


@pytest.mark.exporter_matrix
def test_a_group_norm_wav2vec2_takes_no_mask_and_validates_on_its_padded_rows(
    exported: Callable[..., CaseOutcome],
) -> None:
    outcome = exported("wav2vec2", "ctc", "onnx", sizes={"feat_extract_norm": "group", "do_stable_layer_norm": False})
    assert outcome.validated, outcome.reason
    (path,) = outcome.artifacts(".onnx")
    assert list(_graph_inputs(path)) == ["input_values"]
    assert outcome.report is not None
    assert all("no mask" in part["part"] for part in outcome.report["parts"] if "batch 3" in part["part"])


@pytest.mark.parametrize("model_type", ["sew-d", "wav2vec2-conformer"])
def test_types_the_dynamo_engine_writes_wrong_refuse_its_opsets_before_export(model_type: str) -> None:
    import transformers

    config_cls = config_class_for(model_type)
    model_config = transformers.AutoConfig.for_model(model_type, **config_cls.tiny_sizes(model_type))
    config = config_cls.for_feature(model_config, "ctc")
    assert config.default_onnx_opset == 17
    config.check_opset(17)
    with pytest.raises(OpsetError, match=rf"{model_type} exports up to opset 17: from opset 18.*--opset 17") as refused:
        config.check_opset(18)
    assert "\n" not in str(refused.value)
    assert config_class_for("wav2vec2").for_feature(model_config, "ctc").default_onnx_opset == 18
