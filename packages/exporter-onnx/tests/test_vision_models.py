"""The generic vision family on ONNX: what the generated cases do not prove about image sizes.

Every (model type, feature) pair is exported and validated by the test kit's generated cases (``test_onnx_cases.py``:
one vision pair in the default tier, every pair with ``--exporter-matrix``), at batch 3 and, for models that take
any image size, at another height and width too. Here the graphs are checked further: a model that takes any image
size keeps height and width dynamic and agrees with PyTorch at a third size and batch 1; a model whose position
tables fix the size says so in the graph and the runtime refuses another size. ResNet runs in the default tier, the
other pairs with ``--exporter-matrix``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.export_cases import CaseOutcome
from exporter_core.features import config_class_for
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs

_MATRIX = pytest.mark.exporter_matrix

ANY_SIZE = [
    ("resnet", "image-classification"),
    pytest.param("convnext", "default", marks=_MATRIX),
    pytest.param("swin", "image-classification", marks=_MATRIX),
    pytest.param("segformer", "semantic-segmentation", marks=_MATRIX),
    pytest.param("detr", "object-detection", marks=_MATRIX),
    pytest.param("dinov3_vit", "default", marks=_MATRIX),
]
FIXED_SIZE = [
    pytest.param("vit_msn", "image-classification", marks=_MATRIX),
    pytest.param("levit", "image-classification", marks=_MATRIX),
    pytest.param("vit_mae", "default", marks=_MATRIX),
]


def _graph_input_dims(path: Path) -> list[int | str]:
    import onnx

    (value,) = onnx.load(str(path), load_external_data=False).graph.input
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _loaded(outcome: CaseOutcome, model_type: str, feature: str) -> tuple[object, object, OnnxRuntimeRunner, Path]:
    assert outcome.validated, outcome.reason
    assert outcome.checkpoint is not None
    config_cls = config_class_for(model_type)
    model = loading.load_model(outcome.checkpoint, feature, config_cls)
    config = config_cls.for_feature(model.config, feature)
    (path,) = outcome.artifacts(".onnx")
    return model, config, OnnxRuntimeRunner(path), path


@pytest.mark.parametrize(("model_type", "feature"), ANY_SIZE)
def test_any_image_size_graph_keeps_height_and_width_dynamic_and_matches_pytorch(
    model_type: str, feature: str, exported: Callable[..., CaseOutcome]
) -> None:
    outcome = exported(model_type, feature, "onnx")
    model, config, runner, path = _loaded(outcome, model_type, feature)
    batch, channels, height, width = _graph_input_dims(path)
    assert isinstance(batch, str) and isinstance(height, str) and isinstance(width, str) and channels == 3
    # The pipeline validated at two sizes: the traced one's batch 3, and another height and width.
    assert outcome.report is not None
    sizes = {tuple(part["reference_inputs"]["pixel_values"]) for part in outcome.report["parts"]}
    assert len({size[2:] for size in sizes}) == 2, sizes
    # A third size, batch 1, neither of them.
    traced_height, traced_width = config.image_size()
    pixels = np.random.default_rng(5).standard_normal((1, 3, traced_height + 64, traced_width + 32)).astype(np.float32)
    report = validate_outputs(config, model, runner, inputs={"pixel_values": pixels}, log=lambda line: None)
    assert report.passed, "\n".join(report.log_lines())


@pytest.mark.parametrize(("model_type", "feature"), FIXED_SIZE)
def test_fixed_image_size_graph_states_it_and_refuses_another(
    model_type: str, feature: str, exported: Callable[..., CaseOutcome]
) -> None:
    outcome = exported(model_type, feature, "onnx")
    _, config, runner, path = _loaded(outcome, model_type, feature)
    height, width = config.image_size()
    dims = _graph_input_dims(path)
    assert isinstance(dims[0], str) and dims[1:] == [3, height, width]
    with pytest.raises(Exception, match=r"(?i)dimension"):
        runner({"pixel_values": np.zeros((2, 3, height + 4, width + 4), dtype=np.float32)})
