"""Vision models (ViT, DeiT, BEiT, Data2Vec-Vision) and Perceiver on ONNX: what the generated cases do not prove.

Every (architecture, feature) pair is exported and validated by the test kit's generated cases
(``test_onnx_cases.py``: one vision pair in the default tier, every pair with ``--exporter-matrix``). Here, the old
exporter's pairs are exported (through the kit's cache, so never twice) with varied sizes and preprocessors, and
checked further: validation at batch 1, rows that differ (so the 1e-4 tolerance means something), a graph that
states its fixed image size and refuses another one. DeiT at irregular sizes and Perceiver's images run in the
default tier, the other pairs with ``--exporter-matrix``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.architectures.vision import (
    BeitOnnxConfig,
    Data2VecVisionOnnxConfig,
    DeiTOnnxConfig,
    PerceiverOnnxConfig,
    ViTOnnxConfig,
    image_size_of,
)
from exporter_core.errors import InvalidArgumentError, UnsupportedFeatureError
from exporter_core.export_cases import CaseOutcome
from exporter_core.features import FeaturesManager, config_class_for
from exporter_core.testing import build_tiny_tokenizer, tiny_model_config
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs

_IMAGE_AXES = {0: "batch", 1: "num_channels", 2: "height", 3: "width"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One (architecture, feature) pair, its size overrides and the preprocessor its checkpoint carries."""

    model_type: str
    feature: str
    sizes: tuple[tuple[str, Any], ...] = ()
    preprocessor: str | None = None

    @property
    def id(self) -> str:
        return f"{self.model_type}-{self.feature}" + (f"+{self.preprocessor}" if self.preprocessor else "")


# Sizes and options vary so that not every model is the regular 30x30, 3-channel, absolute-position one.
_DEIT = (("image_size", 24), ("patch_size", 4), ("num_channels", 1))
_BEIT = (("use_relative_position_bias", True),)
_DATA2VEC = (("use_shared_relative_position_bias", True), ("use_mean_pooling", False), ("patch_size", 3))
_MATRIX = pytest.mark.exporter_matrix
CASES = [
    pytest.param(Case("vit", "default", preprocessor="image_processor"), marks=_MATRIX),
    pytest.param(Case("vit", "image-classification", preprocessor="image_processor"), marks=_MATRIX),
    pytest.param(Case("deit", "default", _DEIT), marks=_MATRIX),
    Case("deit", "image-classification", _DEIT),
    pytest.param(Case("beit", "default", _BEIT, preprocessor="image_processor"), marks=_MATRIX),
    pytest.param(Case("beit", "image-classification", _BEIT, preprocessor="image_processor"), marks=_MATRIX),
    pytest.param(Case("data2vec-vision", "default", _DATA2VEC), marks=_MATRIX),
    pytest.param(Case("data2vec-vision", "image-classification", _DATA2VEC), marks=_MATRIX),
    pytest.param(Case("perceiver", "masked-lm", preprocessor="tokenizer"), marks=_MATRIX),
    pytest.param(Case("perceiver", "sequence-classification"), marks=_MATRIX),
    Case("perceiver", "image-classification", preprocessor="image_processor"),
]


@dataclasses.dataclass
class Exported:
    """An export outcome with its loaded model, preprocessor, export config and an ONNX Runtime runner."""

    case: Case
    outcome: CaseOutcome
    model: Any
    preprocessor: Any
    config: Any
    path: Path
    runner: OnnxRuntimeRunner


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.id)
def pair(request: pytest.FixtureRequest, exported: Callable[..., CaseOutcome]) -> Exported:
    """One pair exported through the pipeline (the kit's cache: once per run), and what the checks below need."""
    case: Case = request.param
    outcome = exported(case.model_type, case.feature, "onnx", sizes=dict(case.sizes), preprocessor=case.preprocessor)
    assert outcome.validated, outcome.reason
    assert outcome.checkpoint is not None
    config_cls = config_class_for(case.model_type)
    model = loading.load_model(outcome.checkpoint, case.feature, config_cls)
    preprocessor = loading.load_preprocessor(outcome.checkpoint)
    assert (preprocessor is not None) == (case.preprocessor is not None)
    config = config_cls.for_feature(model.config, case.feature)
    (path,) = outcome.artifacts(".onnx")
    return Exported(case, outcome, model, preprocessor, config, path, OnnxRuntimeRunner(path))


def _record(record_property: Any, batch: int, report: Any) -> None:
    """Keep the worst difference in the test's properties (``pytest --junitxml`` writes them out)."""
    record_property(f"max_abs_diff_batch{batch}", max(check.max_abs_diff for check in report.outputs))


# -- export + validation at other batch sizes ----------------------------------------------------------------------


def test_validated_at_batch_three_with_reference_inputs(pair: Exported) -> None:
    assert pair.outcome.report is not None
    (part,) = pair.outcome.report["parts"]
    first = next(iter(part["reference_inputs"].values()))
    assert first[0] == 3 != pair.config.default_batch_size
    assert part["atol"] == 1e-4
    assert pair.outcome.report["metadata"].get("fallback_reason") is None


def test_validates_at_batch_one(pair: Exported, record_property: Any) -> None:
    inputs = pair.config.generate_dummy_inputs(pair.preprocessor, batch_size=1, framework="np", padded=True, seed=2)
    report = validate_outputs(
        pair.config,
        pair.model,
        pair.runner,
        preprocessor=pair.preprocessor,
        inputs=inputs,
        log=lambda line: None,
    )
    assert report.passed, "\n".join(report.log_lines())
    _record(record_property, 1, report)


def test_reference_rows_differ_so_a_batch_mixup_would_fail(pair: Exported) -> None:
    """Validation is only meaningful if different rows give outputs further apart than the tolerance."""
    import torch

    inputs = pair.config.generate_reference_inputs(pair.preprocessor, framework="pt")
    with torch.no_grad():
        first = next(iter(pair.model(**pair.config.model_kwargs(inputs)).values()))
    assert float((first[0] - first[1]).abs().max()) > 100 * pair.config.atol_for_validation


# -- what the graph accepts -----------------------------------------------------------------------------------------


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim] for value in graph.input}


def test_graph_has_a_dynamic_batch_and_the_model_s_fixed_image_size(pair: Exported) -> None:
    """Patch and position embeddings fix channels and image size; the graph says so and the runtime enforces it."""
    dims = _graph_dims(pair.path)
    model_config = pair.model.config
    if pair.config.task in ("masked-lm", "sequence-classification"):
        assert dims == {"inputs": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
        return
    name = next(iter(pair.config.inputs))
    height, width = image_size_of(model_config)
    channels = getattr(model_config, "num_channels", 3)  # Perceiver's image preprocessor takes RGB
    wrong = np.zeros((2, channels, height + 2, width + 2), dtype=np.float32)
    with pytest.raises(Exception, match=r"(?i)dimension"):
        pair.runner({name: wrong})
    if pair.case.model_type != "perceiver":
        assert dims == {name: ["batch", channels, height, width]}
        return
    # Perceiver flattens the image before adding its image_size**2 learned positions: like PyTorch, the graph
    # takes any height x width with that many pixels, and agrees with PyTorch on such a non-square image.
    assert dims == {name: ["batch", channels, "height", "width"]}
    reshaped = np.random.default_rng(3).standard_normal((2, channels, height // 2, width * 2)).astype(np.float32)
    report = validate_outputs(pair.config, pair.model, pair.runner, inputs={name: reshaped}, log=lambda line: None)
    assert report.passed, "\n".join(report.log_lines())


# -- Perceiver text: the padding (attention mask) is part of what is validated ---------------------------------------


@pytest.mark.parametrize("feature", ["masked-lm", "sequence-classification"])
def test_perceiver_text_validation_inputs_are_padded_and_the_mask_matters(feature: str) -> None:
    import torch
    import transformers

    model_config = tiny_model_config("perceiver", initializer_range=0.1)
    config = PerceiverOnnxConfig.for_feature(model_config, feature)
    torch.manual_seed(0)
    model = loading.model_class_for(feature, PerceiverOnnxConfig).from_config(model_config).eval()
    assert isinstance(model, (transformers.PerceiverForMaskedLM, transformers.PerceiverForSequenceClassification))
    inputs = config.generate_reference_inputs(None, framework="pt")
    mask = inputs["attention_mask"]
    assert mask.shape == (3, 9) and int(mask.sum(dim=1).min()) < 9, "reference rows must carry padding"
    with torch.no_grad():
        padded = model(**config.model_kwargs(inputs)).logits
        unmasked = model(**config.model_kwargs({**inputs, "attention_mask": torch.ones_like(mask)})).logits
    assert float((padded - unmasked).abs().max()) > 100 * config.atol_for_validation


# -- configs (no export) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "config_cls"),
    [
        ("vit", ViTOnnxConfig),
        ("deit", DeiTOnnxConfig),
        ("beit", BeitOnnxConfig),
        ("data2vec-vision", Data2VecVisionOnnxConfig),
    ],
)
def test_vision_configs_keep_the_old_interface(model_type: str, config_cls: type) -> None:
    assert config_class_for(model_type) is config_cls
    assert set(FeaturesManager.get_supported_features_for_model_type(model_type)) == {"default", "image-classification"}
    for feature, output in (("default", "last_hidden_state"), ("image-classification", "logits")):
        config = config_cls.from_model_config(tiny_model_config(model_type), task=feature)
        assert dict(config.inputs) == {"pixel_values": _IMAGE_AXES}
        assert list(config.outputs) == [output]
        assert config.atol_for_validation == 1e-4
    with pytest.raises(UnsupportedFeatureError):
        config_cls.for_feature(tiny_model_config(model_type), "masked-lm")


def test_perceiver_config_names_its_single_input_inputs() -> None:
    model_config = tiny_model_config("perceiver")
    assert config_class_for("perceiver") is PerceiverOnnxConfig
    assert set(FeaturesManager.get_supported_features_for_model_type("perceiver")) == {
        "masked-lm",
        "sequence-classification",
        "image-classification",
    }
    text = PerceiverOnnxConfig.for_feature(model_config, "sequence-classification")
    assert dict(text.inputs) == {"inputs": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    assert dict(PerceiverOnnxConfig.for_feature(model_config, "image-classification").inputs) == {"inputs": _IMAGE_AXES}
    assert dict(PerceiverOnnxConfig.for_feature(model_config, "masked-lm").outputs) == {"logits": {0: "batch"}}
    assert PerceiverOnnxConfig(model_config, "image-classification").atol_for_validation == 1e-4
    with pytest.raises(UnsupportedFeatureError):
        PerceiverOnnxConfig.for_feature(model_config, "default")


def test_heads_that_no_single_auto_class_names_are_named_by_the_config() -> None:
    assert loading.model_class_for("image-classification", DeiTOnnxConfig).__name__ == "DeiTForImageClassification"
    assert (
        loading.model_class_for("image-classification", PerceiverOnnxConfig).__name__
        == "PerceiverForImageClassificationLearned"
    )


def test_pixel_values_come_from_the_model_config_without_a_processor() -> None:
    config = DeiTOnnxConfig(tiny_model_config("deit", image_size=24, num_channels=1))
    values = config.generate_dummy_inputs(None, framework="np")["pixel_values"]
    assert values.shape == (2, 1, 24, 24) and values.dtype == np.float32
    reference = config.generate_reference_inputs(None)["pixel_values"]
    assert reference.shape == (3, 1, 24, 24)
    assert not np.allclose(values[:2], reference[:2])
    tuple_sized = ViTOnnxConfig(tiny_model_config("vit"))
    tuple_sized.model_config.image_size = [20, 28]
    assert tuple_sized.generate_dummy_inputs(batch_size=4, framework="np")["pixel_values"].shape == (4, 3, 20, 28)


def test_pixel_values_come_from_the_image_processor_when_there_is_one() -> None:
    from exporter_core.testing import build_tiny_image_processor

    processor = build_tiny_image_processor(18, 22)
    config = ViTOnnxConfig(tiny_model_config("vit"))
    values = config.generate_dummy_inputs(processor, framework="pt", image_height=50, image_width=35)["pixel_values"]
    # The processor's size wins over the model config's 30x30: it resizes the raw 50x35 pictures.
    assert tuple(values.shape) == (2, 3, 18, 22)
    # Normalised by the processor: raw pixels are 0..255, normalised ones are centred near zero.
    assert float(values.abs().max()) < 5


def test_a_tokenizer_is_refused_as_an_image_preprocessor() -> None:
    config = ViTOnnxConfig(tiny_model_config("vit"))
    with pytest.raises(InvalidArgumentError, match="pixel_values"):
        config.generate_dummy_inputs(build_tiny_tokenizer())
