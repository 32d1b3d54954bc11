"""Vision transformers (ViT, DeiT, BEiT, Data2Vec-Vision) and Perceiver.

Image inputs come from the checkpoint's image processor when it has one (random pictures resized and
normalised by it, as the old exporter did), and from the model config (``image_size``, ``num_channels``)
otherwise. The declared axes are the old ones, ``{0: batch, 1: num_channels, 2: height, 3: width}``, but
these models fix channels and image size through their patch embedding and position embeddings: an export
accepts any batch size and the one image size the model was built for, which the written graph states.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.config import OnnxConfig
from exporter_core.errors import InvalidArgumentError
from exporter_core.model_config import ModelConfigView

__all__ = [
    "BeitOnnxConfig",
    "Data2VecVisionOnnxConfig",
    "DeiTOnnxConfig",
    "PerceiverOnnxConfig",
    "ViTOnnxConfig",
    "VisionOnnxConfig",
    "image_size_of",
]

_IMAGE_AXES: Mapping[int, str] = {0: "batch", 1: "num_channels", 2: "height", 3: "width"}
_TEXT_AXES: Mapping[int, str] = {0: "batch", 1: "sequence"}


def image_size_of(model_config: Any) -> tuple[int, int]:
    """(height, width) of the images the model takes, from ``image_size`` (an int or a pair)."""
    size = ModelConfigView(model_config).image_size
    if size is None:
        found = getattr(model_config, "image_size", None)
        raise AttributeError(
            f"{type(model_config).__name__} has no usable image_size ({found!r}); override `dummy_arrays`"
        )
    return size


def _image_processor(preprocessor: Any) -> Any | None:
    """The image processor inside `preprocessor` (a processor bundles one), or an error for a tokenizer."""
    if preprocessor is None:
        return None
    processor = getattr(preprocessor, "image_processor", preprocessor)
    names = getattr(processor, "model_input_names", None) or []
    if "pixel_values" not in names:
        raise InvalidArgumentError(
            f"{type(preprocessor).__name__} does not make pixel_values; pass --preprocessor image_processor "
            "(a checkpoint with preprocessor_config.json) or no preprocessor"
        )
    return processor


def _pixel_values(model_config: Any, preprocessor: Any, spec: dummy_inputs.DummySpec) -> np.ndarray:
    height, width = image_size_of(model_config)
    channels = ModelConfigView(model_config).num_channels or 3
    return dummy_inputs.image_arrays(spec, _image_processor(preprocessor), height, width, channels)


class VisionOnnxConfig(OnnxConfig):
    """Image encoders taking ``pixel_values``: features default and image-classification, atol 1e-4."""

    features: ClassVar[tuple[str, ...]] = ("default", "image-classification")
    atol = 1e-4

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        return OrderedDict({"pixel_values": dict(_IMAGE_AXES)})

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        return {"pixel_values": _pixel_values(self._config, preprocessor, spec)}


#: Tiny sizes shared by the vision transformers (30x30 images in 2x2 patches).
_TINY_VISION = {
    "image_size": 30,
    "patch_size": 2,
    "num_channels": 3,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
}


class ViTOnnxConfig(VisionOnnxConfig):
    """ViT."""

    tiny_config = dict(_TINY_VISION)


class DeiTOnnxConfig(VisionOnnxConfig):
    """DeiT; the Auto class for image-classification lists two heads and needs ``architectures``, so the class is named."""

    model_classes = {"image-classification": "DeiTForImageClassification"}

    tiny_config = dict(_TINY_VISION)


class BeitOnnxConfig(VisionOnnxConfig):
    """BEiT (relative position bias sized for the model's image size)."""

    tiny_config = dict(_TINY_VISION)


class Data2VecVisionOnnxConfig(VisionOnnxConfig):
    """Data2Vec for images (BEiT-like)."""

    tiny_config = dict(_TINY_VISION)


class PerceiverOnnxConfig(OnnxConfig):
    """Perceiver: one input named ``inputs`` (token ids plus attention_mask for text, pixel values for images)."""

    features = ("masked-lm", "sequence-classification", "image-classification")
    atol = 1e-4
    #: Three Perceiver heads answer image-classification; the learned-position one is the old default.
    model_classes = {"image-classification": "PerceiverForImageClassificationLearned"}
    _TEXT_TASKS: ClassVar[tuple[str, ...]] = ("masked-lm", "sequence-classification")

    @property
    def is_text(self) -> bool:
        """True for the text features (token ids in, attention mask beside them)."""
        return self.task in self._TEXT_TASKS

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        if self.is_text:
            return OrderedDict({"inputs": dict(_TEXT_AXES), "attention_mask": dict(_TEXT_AXES)})
        return OrderedDict({"inputs": dict(_IMAGE_AXES)})

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        common = OrderedDict((name, dict(axes)) for name, axes in super().outputs.items())
        if self.task == "masked-lm":
            # The decoder answers one query per position embedding (max_position_embeddings of them),
            # whatever the input length: axis 1 is fixed, not the input's sequence.
            common["logits"] = {0: "batch"}
        return common

    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        if not self.is_text:
            return {"inputs": _pixel_values(self._config, preprocessor, spec)}
        tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
        arrays = dummy_inputs.text_arrays(
            self._config, ["input_ids", "attention_mask"], spec.batch_size, spec, tokenizer
        )
        return {"inputs": arrays["input_ids"], "attention_mask": arrays["attention_mask"]}

    tiny_config = {
        "num_latents": 8,
        "d_latents": 32,
        "d_model": 32,
        "num_blocks": 1,
        "num_self_attends_per_block": 2,
        "num_self_attention_heads": 4,
        "num_cross_attention_heads": 4,
        "vocab_size": 262,
        "max_position_embeddings": 64,
        "image_size": 30,
        "num_labels": 3,
    }
