"""The generic vision family (backbones and heads): features per model type, declared outputs against what the tiny
models return, image-size axes and scenarios, ViT-MAE's deterministic export, DETR's offline backbone. Fast: no
export (the test kit's generated cases export every pair; exporter-onnx's test_vision_models.py checks the graphs)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
import pytest
import torch

from exporter_core.architectures.vision_models import (
    LevitOnnxConfig,
    VisionModelOnnxConfig,
    ViTMAEOnnxConfig,
)
from exporter_core.loading import model_class_for
from exporter_core.modeling import export_module, prepared_for_export
from exporter_core.plugins import load_architecture
from exporter_core.testing import build_tiny_image_processor, tiny_model_config

VISION_TYPES = sorted(
    ep.name
    for ep in metadata.entry_points(group="exporter.architectures")
    if ep.value.startswith("exporter_core.architectures.vision_models:")
)

#: The model types of the issue.
ISSUE_TYPES = set(
    [
        "swin",
        "swinv2",
        "convnext",
        "convnextv2",
        "resnet",
        "regnet",
        "efficientnet",
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilevit",
        "mobilevitv2",
        "dinov2",
        "dinov2_with_registers",
        "levit",
        "poolformer",
        "pvt",
        "pvt_v2",
        "cvt",
        "segformer",
        "dpt",
        "glpn",
        "yolos",
        "detr",
        "table-transformer",
        "vit_mae",
        "vit_msn",
        "focalnet",
        "hiera",
        "bit",
        "dinov3_vit",
        "siglip_vision_model",
        "clip_vision_model",
        "donut-swin",
    ]
)


def _model(model_type: str, feature: str = "default", **overrides: Any) -> torch.nn.Module:
    config_cls = load_architecture(model_type)
    cls = model_class_for(feature, config_cls)
    config = tiny_model_config(model_type, initializer_range=0.1, **overrides)
    torch.manual_seed(0)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    return model.eval()


def _run(model: torch.nn.Module, config: VisionModelOnnxConfig, pixels: np.ndarray) -> dict[str, torch.Tensor]:
    with prepared_for_export(model, config), torch.no_grad():
        values = export_module(model, config)(pixel_values=torch.from_numpy(pixels))
    return dict(zip(config.outputs, values, strict=True))


def test_the_family_serves_the_model_types_of_the_issue() -> None:
    assert set(VISION_TYPES) == ISSUE_TYPES
    assert {load_architecture(t) for t in VISION_TYPES} == {VisionModelOnnxConfig, LevitOnnxConfig, ViTMAEOnnxConfig}


@pytest.mark.parametrize(
    ("model_type", "features"),
    [
        ("resnet", ("default", "image-classification")),
        ("mobilevit", ("default", "image-classification", "semantic-segmentation")),
        ("segformer", ("default", "image-classification", "semantic-segmentation")),
        ("dpt", ("default", "semantic-segmentation", "depth-estimation")),
        ("glpn", ("default", "depth-estimation")),
        ("detr", ("default", "object-detection")),
        ("yolos", ("default", "object-detection")),
        ("vit_mae", ("default",)),
        ("clip_vision_model", ("default",)),
    ],
)
def test_features_are_the_heads_transformers_has_for_the_type(model_type: str, features: tuple[str, ...]) -> None:
    assert load_architecture(model_type).supported_features(model_type) == features


@pytest.mark.parametrize("model_type", VISION_TYPES)
def test_tiny_model_returns_the_declared_outputs_at_the_traced_size_and_another(model_type: str) -> None:
    """What `outputs` declares is what the bare model returns (ranks included: convnets give feature maps), and a
    model declared to take any image size runs at the other size its second scenario validates."""
    model = _model(model_type)
    config = load_architecture(model_type).for_feature(model.config, "default")
    scenarios = config.validation_scenarios(None)
    outputs = _run(model, config, scenarios[0].inputs["pixel_values"])
    assert all(isinstance(value, torch.Tensor) for value in outputs.values()), outputs
    assert outputs["last_hidden_state"].ndim == (4 if 2 in config.outputs["last_hidden_state"] else 3)
    assert all(value.shape[0] == 3 for value in outputs.values())
    axes = config.inputs["pixel_values"]
    if config.any_image_size:
        assert axes == {0: "batch", 1: "num_channels", 2: "height", 3: "width"}
        first, other = (s.inputs["pixel_values"].shape for s in scenarios)
        assert other[0] == 3 and other[2:] != first[2:]
        assert all(v.shape[0] == 3 for v in _run(model, config, scenarios[1].inputs["pixel_values"]).values())
    else:
        assert axes == {0: "batch"} and len(scenarios) == 1


@pytest.mark.parametrize(
    ("model_type", "feature", "names"),
    [
        ("mobilevitv2", "semantic-segmentation", ["logits"]),
        ("dpt", "depth-estimation", ["predicted_depth"]),
        ("detr", "object-detection", ["logits", "pred_boxes"]),
        ("levit", "image-classification", ["logits"]),
    ],
)
def test_heads_return_their_outputs(model_type: str, feature: str, names: list[str]) -> None:
    model = _model(model_type, feature)
    config = load_architecture(model_type).for_feature(model.config, feature)
    assert list(config.outputs) == names
    outputs = _run(model, config, config.generate_dummy_inputs(None, framework="np")["pixel_values"])
    assert all(value.shape[0] == 2 for value in outputs.values())


def test_vit_mae_exports_the_unmasked_encoder_deterministically() -> None:
    model = _model("vit_mae")
    assert model.config.mask_ratio == 0.75
    config = ViTMAEOnnxConfig.for_feature(model.config, "default")
    pixels = config.generate_dummy_inputs(None, framework="np")["pixel_values"]
    first, second = _run(model, config, pixels), _run(model, config, pixels)
    patches = (30 // 2) ** 2
    assert tuple(first["last_hidden_state"].shape) == (2, 1 + patches, 32)
    torch.testing.assert_close(first["last_hidden_state"], second["last_hidden_state"], rtol=0, atol=0)
    assert model.config.mask_ratio == 0.75, "the export's mask_ratio must be restored"
    # The same as the model's own forward without masking, patches in order (noise = patch index).
    model.config.mask_ratio = 0.0
    try:
        noise = torch.arange(patches, dtype=torch.float32).expand(2, patches)
        with torch.no_grad():
            plain = model(pixel_values=torch.from_numpy(pixels), noise=noise).last_hidden_state
    finally:
        model.config.mask_ratio = 0.75
    torch.testing.assert_close(first["last_hidden_state"], plain, rtol=0, atol=0)
    # Without the fixed noise, the model shuffles the patches: the override is what makes it deterministic.
    model.config.mask_ratio = 0.0
    try:
        with torch.no_grad():
            shuffled = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state
    finally:
        model.config.mask_ratio = 0.75
    assert not torch.allclose(shuffled, plain)


@pytest.mark.parametrize("model_type", ["detr", "table-transformer"])
def test_detr_style_models_build_offline_with_transformers_own_backbone(model_type: str) -> None:
    config = tiny_model_config(model_type)
    assert config.backbone_config.model_type == "resnet"
    model = _model(model_type)
    assert any(type(module).__name__ == "ResNetBackbone" for module in model.modules())


def test_pixel_values_default_to_224_when_the_config_names_no_image_size() -> None:
    model_config = tiny_model_config("resnet")
    del model_config.image_size
    config = VisionModelOnnxConfig.for_feature(model_config, "image-classification")
    assert config.generate_dummy_inputs(None, framework="np")["pixel_values"].shape == (2, 3, 224, 224)


def test_pixel_values_come_from_the_image_processor_when_there_is_one() -> None:
    config = VisionModelOnnxConfig.for_feature(tiny_model_config("convnext"), "default")
    pixels = config.generate_dummy_inputs(build_tiny_image_processor(40, 48), framework="np")["pixel_values"]
    assert pixels.shape == (2, 3, 40, 48) and float(np.abs(pixels).max()) < 5
