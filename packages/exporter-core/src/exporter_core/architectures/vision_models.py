"""Vision backbones and their heads (Swin, ConvNeXt, ResNet, MobileViT, DINOv2, SegFormer, DPT, DETR, ...): one family.

Every model type here takes ``pixel_values`` and nothing else, so one config (`VisionModelOnnxConfig`) serves them
all, one entry point per type, and reads what differs between types from Transformers and from a small table:

- the features: ``default`` and the image-classification, semantic-segmentation, object-detection and
  depth-estimation heads that Transformers' Auto mappings name for the type;
- the outputs: each head's (``logits``; ``logits`` and ``pred_boxes``; ``predicted_depth``), and for ``default``
  the backbone's ``last_hidden_state`` (tokens ``(batch, sequence, hidden)``, or a feature map
  ``(batch, channels, height, width)`` for convolutional networks) with ``pooler_output`` where the model pools;
- the image size: convolutional networks and the transformers whose position embeddings adapt to the image (rotary,
  interpolated, relative to windows) take any height and width, which the graph keeps dynamic and validation checks
  at another size than the traced one; models with position tables, attention biases or masks sized for one
  resolution keep it, and their graphs state it (`_ANY_IMAGE_SIZE`);
- the tiny test sizes (`_TINY`), each stage list shortened together.

Pixel values come from the checkpoint's image processor when it has one, else from the model config's
``image_size`` (``_DEFAULT_IMAGE_SIZE`` when a convolutional config has none).

Per-type adjustments, each with its reason:

- ``vit_mae`` masks a random 75% of patches at every call (`torch.rand` inside the forward). The export sets
  ``mask_ratio`` to 0 while capturing and passes a fixed ``noise`` (the patch index), so no patch is dropped and the
  patches keep their order: the graph is the unmasked encoder, deterministic and the same in PyTorch.
- ``detr`` and ``table-transformer`` default to a timm ResNet-50 backbone; their tiny models use Transformers'
  own ResNet backbone (``use_timm_backbone=False``), which builds offline without timm.
- ``levit``'s Auto class lists two heads; the classification head without distillation teacher is named.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.architectures.vision import VisionOnnxConfig, _image_processor
from exporter_core.model_config import ModelConfigView

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.plan import Scenario

__all__ = [
    "HEAD_MAPPINGS",
    "LevitOnnxConfig",
    "ViTMAEOnnxConfig",
    "VisionModelOnnxConfig",
]

#: Feature -> the name of the Auto mapping (``transformers.models.auto.modeling_auto``) listing the types with it.
HEAD_MAPPINGS: Mapping[str, str] = {
    "default": "MODEL_MAPPING_NAMES",
    "image-classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "semantic-segmentation": "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
    "object-detection": "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
    "depth-estimation": "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
}

#: Image size of dummy inputs for a convolutional model whose config names none (and no image processor).
_DEFAULT_IMAGE_SIZE = 224

_IMAGE_AXES: Mapping[int, str] = {0: "batch", 1: "num_channels", 2: "height", 3: "width"}
_TOKENS: Mapping[int, str] = {0: "batch", 1: "sequence"}
_FEATURE_MAP: Mapping[int, str] = {0: "batch", 2: "feature_height", 3: "feature_width"}
_BATCH: Mapping[int, str] = {0: "batch"}

#: Model types whose backbone returns a feature map (batch, channels, height, width) as last_hidden_state.
_FEATURE_MAP_BACKBONES = frozenset(
    {
        "convnext",
        "convnextv2",
        "resnet",
        "regnet",
        "efficientnet",
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilevit",
        "mobilevitv2",
        "poolformer",
        "pvt_v2",
        "cvt",
        "segformer",
        "glpn",
        "bit",
    }
)

#: The pooled output of a bare model when it is not ``pooler_output``; None when it returns none.
_POOLED_OUTPUT: Mapping[str, str | None] = {
    "cvt": "cls_token_value",
    **dict.fromkeys(
        ("poolformer", "pvt", "pvt_v2", "segformer", "glpn", "vit_mae", "vit_msn", "detr", "table-transformer")
    ),
}

#: Model types that take any height and width (with the traced one checked against another at validation).
_ANY_IMAGE_SIZE = frozenset(
    {
        "convnext",
        "convnextv2",
        "resnet",
        "regnet",
        # Not efficientnet: its pooler is an AvgPool2d whose kernel is the head width (hidden_dim, 1280 in real
        # checkpoints) in ceil mode, and torch.export cannot keep the size dynamic through it.
        # Not mobilenet_v1 / mobilenet_v2: TensorFlow "SAME" padding computed in Python from the input size
        # (size % stride) specialises the trace to the traced size.
        "poolformer",
        "cvt",
        "segformer",
        "glpn",
        "bit",
        "swin",
        "swinv2",
        "donut-swin",
        "focalnet",
        "dinov3_vit",
        "detr",
        "table-transformer",
    }
)

_SWIN = {
    "image_size": 32,
    "patch_size": 2,
    "embed_dim": 16,
    "depths": [2, 1],
    "num_heads": [2, 4],
    "window_size": 4,
    "mlp_ratio": 2.0,
}
_FOUR_STAGES = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}
_VIT = {
    "image_size": 30,
    "patch_size": 2,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
}
_MIX_TRANSFORMER = {
    "hidden_sizes": [8, 16, 24, 32],
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 2, 3, 4],
    "sr_ratios": [4, 2, 1, 1],
    "mlp_ratios": [2, 2, 2, 2],
    "decoder_hidden_size": 16,
    "image_size": 64,
}
_DETR = {
    "use_timm_backbone": False,
    "backbone_config": {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16, 24, 32],
        "depths": [1, 1, 1, 1],
        "layer_type": "basic",
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
    "num_queries": 5,
    "num_labels": 3,
    "image_size": 64,
}

#: Weight scales of the tiny models whose stacked (depthwise) convolutions or attention biases fade the signal at
#: the kit's 0.1: their outputs came out between 1e-10 and 1e-27, so validation compared zeros. Each value is the
#: smallest probed (0.1-2.0) giving outputs of order 1e-3 to 1 without ReLU6 saturation or overflow.
_DEPTHWISE_INIT: Mapping[str, Mapping[str, float]] = {
    "efficientnet": {"initializer_range": 0.5},
    "mobilenet_v1": {"initializer_range": 0.3},
    "mobilenet_v2": {"initializer_range": 0.2},
    "mobilevit": {"initializer_range": 0.3},
    "mobilevitv2": {"initializer_range": 0.5},
    "levit": {"initializer_range": 0.2},
}

#: Tiny test sizes per model type; stage lists are shortened together (depths, widths, heads of a stage).
_TINY: Mapping[str, Mapping[str, Any]] = {
    "swin": _SWIN,
    "donut-swin": _SWIN,
    "swinv2": {**_SWIN, "pretrained_window_sizes": [0, 0]},
    "convnext": {**_FOUR_STAGES, "num_stages": 4, "image_size": 64},
    "convnextv2": {**_FOUR_STAGES, "num_stages": 4, "image_size": 64},
    "resnet": {**_FOUR_STAGES, "embedding_size": 8, "layer_type": "basic", "image_size": 64},
    "regnet": {**_FOUR_STAGES, "embedding_size": 8, "groups_width": 8, "image_size": 64},
    "bit": {**_FOUR_STAGES, "embedding_size": 8, "num_groups": 2, "image_size": 64},
    "efficientnet": {
        "image_size": 32,
        "width_coefficient": 0.25,
        "depth_coefficient": 0.5,
        "kernel_sizes": [3, 5],
        "in_channels": [32, 16],
        "out_channels": [16, 24],
        "strides": [1, 2],
        "num_block_repeats": [1, 2],
        "expand_ratios": [1, 2],
        # The head's width is hard-wired to round_filters(1280) = 320 at this width coefficient.
        "hidden_dim": 320,
        **_DEPTHWISE_INIT["efficientnet"],
    },
    "mobilenet_v1": {"depth_multiplier": 0.25, "image_size": 32, **_DEPTHWISE_INIT["mobilenet_v1"]},
    "mobilenet_v2": {"depth_multiplier": 0.25, "image_size": 32, **_DEPTHWISE_INIT["mobilenet_v2"]},
    "mobilevit": {
        "image_size": 64,
        "hidden_sizes": [16, 24, 32],
        "neck_hidden_sizes": [8, 8, 16, 16, 24, 24, 32],
        "num_attention_heads": 2,
        "aspp_out_channels": 16,
        **_DEPTHWISE_INIT["mobilevit"],
    },
    "mobilevitv2": {
        "image_size": 64,
        "width_multiplier": 0.25,
        "base_attn_unit_dims": [16, 24, 32],
        "n_attn_blocks": [1, 1, 1],
        "aspp_out_channels": 16,
        **_DEPTHWISE_INIT["mobilevitv2"],
    },
    "dinov2": {**_VIT, "mlp_ratio": 2},
    "dinov2_with_registers": {**_VIT, "mlp_ratio": 2, "num_register_tokens": 2},
    "vit_msn": _VIT,
    "vit_mae": {
        **_VIT,
        "decoder_hidden_size": 16,
        "decoder_num_hidden_layers": 1,
        "decoder_num_attention_heads": 2,
        "decoder_intermediate_size": 20,
    },
    "siglip_vision_model": _VIT,
    "clip_vision_model": {**_VIT, "projection_dim": 16},
    "dinov3_vit": {**_VIT, "image_size": 32, "patch_size": 4, "num_register_tokens": 2},
    "yolos": {**_VIT, "image_size": [32, 48], "patch_size": 4, "num_detection_tokens": 5, "num_labels": 3},
    "levit": {
        "image_size": 64,
        "hidden_sizes": [16, 32, 48],
        "num_attention_heads": [2, 2, 2],
        "depths": [1, 1, 1],
        "key_dim": [4, 4, 4],
        **_DEPTHWISE_INIT["levit"],
    },
    "poolformer": {**_FOUR_STAGES, "image_size": 64},
    "pvt": {
        "image_size": 64,
        "hidden_sizes": [8, 16, 24, 32],
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 2, 3, 4],
        "sequence_reduction_ratios": [4, 2, 1, 1],
        "mlp_ratios": [2, 2, 2, 2],
    },
    "pvt_v2": {k: v for k, v in _MIX_TRANSFORMER.items() if k != "decoder_hidden_size"},
    "segformer": _MIX_TRANSFORMER,
    "glpn": _MIX_TRANSFORMER,
    "cvt": {"embed_dim": [8, 16, 24], "num_heads": [1, 2, 3], "depth": [1, 2, 3], "image_size": 64},
    "dpt": {
        **_VIT,
        "image_size": 32,
        "patch_size": 4,
        "num_hidden_layers": 4,
        "backbone_out_indices": [0, 1, 2, 3],
        "neck_hidden_sizes": [8, 16, 24, 32],
        "fusion_hidden_size": 16,
    },
    "focalnet": {
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1],
        "hidden_sizes": [32, 32],
        "focal_levels": [2, 2],
        "focal_windows": [3, 3],
    },
    "hiera": {
        "image_size": [64, 64],
        "embed_dim": 8,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "num_query_pool": 2,
    },
    "detr": _DETR,
    "table-transformer": _DETR,
}


class VisionModelOnnxConfig(VisionOnnxConfig):
    """A vision backbone or one of its heads; features, outputs, image-size axes and tiny sizes come from its type."""

    features: ClassVar[tuple[str, ...]] = tuple(HEAD_MAPPINGS)

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """`features` narrowed to the heads Transformers has for `model_type`."""
        from transformers.models.auto import modeling_auto

        return tuple(f for f in cls.features if model_type in getattr(modeling_auto, HEAD_MAPPINGS[f]))

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """The type's entry of `_TINY`, then the class's `tiny_config`."""
        return {**_TINY.get(model_type, {}), **cls.tiny_config}

    @property
    def any_image_size(self) -> bool:
        """True when the model takes any height and width (the graph keeps them dynamic)."""
        return self.model_view.model_type in _ANY_IMAGE_SIZE

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        axes = dict(_IMAGE_AXES) if self.any_image_size else dict(_BATCH)
        return OrderedDict({"pixel_values": axes})

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        model_type = self.model_view.model_type
        if self.task == "default":
            hidden = _FEATURE_MAP if model_type in _FEATURE_MAP_BACKBONES else _TOKENS
            outputs = OrderedDict({"last_hidden_state": dict(hidden)})
            pooled = _POOLED_OUTPUT.get(model_type, "pooler_output")
            if pooled is not None:
                outputs[pooled] = dict(_BATCH)
            return outputs
        if self.task == "image-classification":
            return OrderedDict({"logits": dict(_BATCH)})
        if self.task == "semantic-segmentation":
            return OrderedDict({"logits": {0: "batch", 2: "logits_height", 3: "logits_width"}})
        if self.task == "object-detection":
            return OrderedDict({"logits": {0: "batch"}, "pred_boxes": {0: "batch"}})
        if self.task == "depth-estimation":
            return OrderedDict({"predicted_depth": {0: "batch", 1: "depth_height", 2: "depth_width"}})
        return super().outputs

    def image_size(self) -> tuple[int, int]:
        """(height, width) of dummy images without an image processor: the config's, else `_DEFAULT_IMAGE_SIZE`."""
        size = ModelConfigView(self._config).image_size
        return size if size is not None else (_DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE)

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        height, width = self.image_size()
        channels = self.model_view.num_channels or 3
        processor = _image_processor(preprocessor)
        return {"pixel_values": dummy_inputs.image_arrays(spec, processor, height, width, channels)}

    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """Batch 3 (from the image processor when there is one) and, for models that take any image size, batch 3
        at another height and width than the traced ones (random pixel values: a processor resizes to one size)."""
        from exporter_core.padding import describe_shape, static_shape_of
        from exporter_core.plan import Scenario

        scenarios = super().validation_scenarios(preprocessor)
        if self.any_image_size:
            height, width = self.image_size()
            channels = self.model_view.num_channels or 3
            # Larger by multiples of 32, the coarsest stride of these networks (SegFormer's, GLPN's decoders need it).
            other = (height + 32, width + 64)
            spec = dummy_inputs.DummySpec(batch_size=3, sequence_length=1, seed=2)
            pixels = dummy_inputs.image_arrays(spec, None, *other, channels)
            inputs = {"pixel_values": pixels}
            scenarios.append(Scenario(describe_shape(static_shape_of(inputs, self.inputs)), inputs))
        return scenarios


class LevitOnnxConfig(VisionModelOnnxConfig):
    """LeViT: the Auto class for image-classification lists two heads; the one without distillation is named."""

    model_classes: ClassVar[Mapping[str, str]] = {"image-classification": "LevitForImageClassification"}


class ViTMAEOnnxConfig(VisionModelOnnxConfig):
    """ViT-MAE: the unmasked encoder (``mask_ratio`` 0 while exporting, patches kept in order by a fixed noise)."""

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        """No patch masked while exporting (the forward reads ``mask_ratio`` from the config at every call)."""
        return {**(super().values_override or {}), "mask_ratio": 0.0}

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs plus ``noise`` = each patch's index, so that sorting it keeps the patches in order."""
        import torch

        kwargs = super().model_kwargs(inputs)
        pixels = kwargs["pixel_values"]
        patch = int(self._config.patch_size)
        count = (int(pixels.shape[-2]) // patch) * (int(pixels.shape[-1]) // patch)
        order = torch.arange(count, device=pixels.device, dtype=torch.float32)
        kwargs["noise"] = order.unsqueeze(0).expand(pixels.shape[0], count)
        return kwargs
