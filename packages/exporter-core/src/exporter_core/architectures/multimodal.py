"""Dual text/image encoders (CLIP, SigLIP, SigLIP 2, Chinese-CLIP, AltCLIP, CLIPSeg, BLIP, OWL-ViT, OWLv2): one family.

These models run a text tower and an image tower side by side and compare their pooled, projected embeddings. One
config (`DualEncoderOnnxConfig`) serves every model type it is registered for and reads what differs from
Transformers itself:

- the features: ``default`` (both embeddings, then the similarity logits the model returns) everywhere, and
  ``zero-shot-image-classification`` where the Auto mapping of that task names the type (OWL-ViT and OWLv2 are
  detectors: their zero-shot task is object detection, so they keep ``default`` only);
- the tiny test sizes: the fields of the type's own ``text_config`` and ``vision_config`` classes, shrunk
  (`tiny_sizes`); special token ids outside the tiny vocabulary are moved inside it.

Texts and images are independent: a batch of texts is compared with a batch of images, so the text batch
(``text_batch``) and the image batch (``image_batch``) are separate dynamic axes, and validation uses text and
image batches of different sizes, other than the traced ones, with padded text rows.

SigLIP 2 takes images as patch sequences (``pixel_values`` of shape image_batch × patches × patch pixels, a
``pixel_attention_mask`` over the patches and each image's patch grid in ``spatial_shapes``); its position
embeddings are resized to each grid inside the graph, so validation uses several grids and another patch count.
Its input checks (every grid positive and within the patch count) are asserts on input values that torch.export
records as ``aten._is_all_true``, which has no ONNX function: they are switched off while exporting (a patch restored
afterwards); they validate inputs and compute nothing the outputs depend on.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core import dummy_inputs
from exporter_core.config import OnnxConfig, PatchingSpec
from exporter_core.errors import InvalidArgumentError
from exporter_core.model_config import ModelConfigView

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.plan import Scenario

__all__ = ["TINY_SUBCONFIG_FIELDS", "DualEncoderOnnxConfig", "input_check_patches", "subconfig_fields"]

_TEXT_AXES: Mapping[int, str] = {0: "text_batch", 1: "sequence"}
_IMAGE_AXES: Mapping[int, str] = {0: "image_batch", 1: "num_channels", 2: "height", 3: "width"}
_PATCH_AXES: Mapping[int, str] = {0: "image_batch", 1: "patches", 2: "patch_pixels"}

#: Tiny values of the text and vision sub-configs, each set under every one of its names the class has as a field.
TINY_SUBCONFIG_FIELDS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("vocab_size",), 99),
    (("hidden_size",), 32),
    (("num_hidden_layers",), 2),
    (("num_attention_heads",), 4),
    (("intermediate_size",), 37),
    (("max_position_embeddings",), 32),
    # Projections: BLIP's text cross-attention reads the vision width, SigLIP's text head must end at it.
    (("encoder_hidden_size", "projection_size"), 32),
    (("projection_dim", "project_dim"), 16),
    (("image_size",), 16),
    (("patch_size",), 4),
    (("num_channels",), 3),
    # SigLIP 2: a 4 × 4 grid of position embeddings, resized to each image's patch grid.
    (("num_patches",), 16),
    # The test kit's weight scale (`exporter_core.testing.INIT_STD`) for the towers too: the kit sets it on the top
    # config only, and with the towers' own (BLIP's vision tower: 1e-10) every image gives the same embedding and
    # class-token text towers (Chinese-CLIP, AltCLIP, BLIP) nearly the same for every text.
    (("initializer_range",), 0.1),
)

#: Special ids the tiny vocabulary cannot hold moved inside it (a default of the real vocabulary, CLIP's 49407 say).
#: None of them is 2: CLIP reads an eos id of 2 as its old checkpoints' convention (pooling at the largest id).
_TINY_SPECIAL_IDS: Mapping[str, int] = {"bos_token_id": 4, "eos_token_id": 5, "sep_token_id": 6}

#: Top-level fields of the dual-encoder configs, shrunk the same way.
_TINY_TOP_FIELDS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("projection_dim",), 16),
    (("image_text_hidden_size",), 16),
)

_TEXT_NAMES = ("input_ids", "attention_mask")


@functools.cache
def subconfig_fields(model_type: str) -> Mapping[str, Mapping[str, Any]]:
    """For each sub-config (``text_config``, ``vision_config``) of `model_type`, its declared fields with defaults;
    ``""`` holds the top-level config's own fields."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    found: dict[str, Mapping[str, Any]] = {"": _declared_fields(config_class)}
    for key, sub_class in (getattr(config_class, "sub_configs", None) or {}).items():
        found[key] = _declared_fields(sub_class)
    return found


def _declared_fields(config_class: Any) -> Mapping[str, Any]:
    defaults = config_class()
    names = [field.name for field in dataclasses.fields(config_class)] if dataclasses.is_dataclass(config_class) else []
    return {name: getattr(defaults, name, None) for name in names}


def _shrunk(fields: Mapping[str, Any], table: tuple[tuple[tuple[str, ...], Any], ...]) -> dict[str, Any]:
    sizes = {name: value for names, value in table for name in names if name in fields}
    vocab = sizes.get("vocab_size")
    if vocab is not None:
        for name, small in _TINY_SPECIAL_IDS.items():
            value = fields.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= vocab:
                sizes[name] = small
    return sizes


class DualEncoderOnnxConfig(OnnxConfig):
    """A text tower and an image tower compared by similarity; features and tiny sizes come from the model type."""

    features: ClassVar[tuple[str, ...]] = ("default", "zero-shot-image-classification")
    #: Similarity logits are cosines times exp(logit_scale) (about 14 for a fresh model): 1e-4 on values up to ~15.
    atol: ClassVar[float] = 1e-4

    def __init__(
        self, config: PretrainedConfig, task: str = "default", patching_specs: list[PatchingSpec] | None = None
    ) -> None:
        if patching_specs is None:
            patching_specs = input_check_patches(config)
        super().__init__(config, task=task, patching_specs=patching_specs)

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """``default``, plus zero-shot-image-classification where Transformers maps the type to that task."""
        from transformers.models.auto import modeling_auto

        zero_shot = modeling_auto.MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES
        return tuple(f for f in cls.features if f == "default" or model_type in zero_shot)

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """The type's sub-config fields shrunk (`TINY_SUBCONFIG_FIELDS`), special ids moved inside the tiny
        vocabulary, then the class's `tiny_config`. The nine types need no per-type override."""
        fields = subconfig_fields(model_type)
        sizes: dict[str, Any] = _shrunk(fields[""], _TINY_TOP_FIELDS)
        for key in ("text_config", "vision_config"):
            if key in fields:
                sizes[key] = _shrunk(fields[key], TINY_SUBCONFIG_FIELDS)
        sizes.update(cls.tiny_config)
        return sizes

    # -- the towers' configs ---------------------------------------------------------------------------------
    @property
    def text_config(self) -> Any:
        """The text tower's Transformers config."""
        return getattr(self._config, "text_config", self._config)

    @property
    def vision_config(self) -> Any:
        """The image tower's Transformers config."""
        return getattr(self._config, "vision_config", self._config)

    @property
    def takes_patches(self) -> bool:
        """True when images come as patch sequences with a mask and grid shapes (SigLIP 2)."""
        return hasattr(self.vision_config, "num_patches") and getattr(self.vision_config, "image_size", None) is None

    # -- inputs and outputs ----------------------------------------------------------------------------------
    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        ordered: OrderedDict[str, Mapping[int, str]] = OrderedDict((name, dict(_TEXT_AXES)) for name in _TEXT_NAMES)
        if self.takes_patches:
            ordered["pixel_values"] = dict(_PATCH_AXES)
            ordered["pixel_attention_mask"] = {0: "image_batch", 1: "patches"}
            ordered["spatial_shapes"] = {0: "image_batch"}
        else:
            ordered["pixel_values"] = dict(_IMAGE_AXES)
        return ordered

    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        common = super().outputs
        if self.task != "default":
            return common
        # The embeddings a retrieval index stores come first; the similarity logits the model returns follow.
        names = ("text_embeds", "image_embeds", "logits_per_image", "logits_per_text")
        zero_shot = super()._tasks_to_common_outputs["zero-shot-image-classification"]
        return OrderedDict((name, dict(zero_shot[name])) for name in names)

    def model_kwargs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The named inputs, without the loss (the base class also asks for a dict result)."""
        kwargs = super().model_kwargs(inputs)
        kwargs["return_loss"] = False
        return kwargs

    # -- dummy inputs ----------------------------------------------------------------------------------------
    def dummy_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        """Texts and images for `spec`, as many images as texts (`dual_arrays` takes them apart)."""
        return self.dual_arrays(preprocessor, spec, image_batch=spec.batch_size)

    def dual_arrays(
        self, preprocessor: Any, spec: dummy_inputs.DummySpec, *, image_batch: int, patches: int | None = None
    ) -> dict[str, np.ndarray]:
        """`spec.batch_size` texts of `spec.sequence_length` tokens and `image_batch` images (of at most `patches`
        patches for patch inputs; the config's ``num_patches`` by default)."""
        arrays = self._text_arrays(preprocessor, spec)
        image_spec = dataclasses.replace(spec, batch_size=image_batch)
        if self.takes_patches:
            arrays.update(self._patch_arrays(preprocessor, image_spec, patches))
        else:
            arrays["pixel_values"] = self._pixel_values(preprocessor, image_spec)
        return arrays

    def _text_arrays(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> dict[str, np.ndarray]:
        tokenizer = _tokenizer_of(preprocessor)
        arrays = dummy_inputs.text_arrays(self.text_config, _TEXT_NAMES, spec.batch_size, spec, tokenizer)
        if tokenizer is None:
            arrays["input_ids"] = _random_words(
                arrays["input_ids"], arrays["attention_mask"], self.text_config, spec.seed
            )
            _bracket_rows(arrays, self.text_config)
        return arrays

    def _pixel_values(self, preprocessor: Any, spec: dummy_inputs.DummySpec) -> np.ndarray:
        from exporter_core.architectures.vision import image_size_of

        height, width = image_size_of(self.vision_config)
        channels = int(getattr(self.vision_config, "num_channels", 3) or 3)
        return dummy_inputs.image_arrays(spec, _image_processor_of(preprocessor), height, width, channels)

    def _patch_arrays(
        self, preprocessor: Any, spec: dummy_inputs.DummySpec, patches: int | None
    ) -> dict[str, np.ndarray]:
        processor = _image_processor_of(preprocessor)
        limit = patches or int(self.vision_config.num_patches)
        rng = np.random.default_rng(spec.seed)
        if processor is not None and "spatial_shapes" in (getattr(processor, "model_input_names", None) or ()):
            # Pictures of several aspect ratios, so the images get different patch grids.
            images = [
                rng.integers(0, 256, size=(spec.image_height, spec.image_width + 8 * i, 3), dtype=np.uint8)
                for i in range(spec.batch_size)
            ]
            made = processor(images=images, return_tensors="np", max_num_patches=limit)
            return {
                "pixel_values": np.asarray(made["pixel_values"], dtype=np.float32),
                "pixel_attention_mask": np.asarray(made["pixel_attention_mask"], dtype=np.int64),
                "spatial_shapes": np.asarray(made["spatial_shapes"], dtype=np.int64),
            }
        patch = int(self.vision_config.patch_size)
        channels = int(getattr(self.vision_config, "num_channels", 3) or 3)
        grids = _patch_grids(spec.batch_size, limit)
        pixels = rng.standard_normal((spec.batch_size, limit, channels * patch * patch)).astype(np.float32)
        mask = np.zeros((spec.batch_size, limit), dtype=np.int64)
        for row, (height, width) in enumerate(grids):
            mask[row, : height * width] = 1
        pixels *= mask[..., None]
        return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": np.asarray(grids, np.int64)}

    # -- validation --------------------------------------------------------------------------------------------
    def validation_scenarios(self, preprocessor: Any = None) -> list[Scenario]:
        """Text and image batches other than the traced ones and than each other, with padded text rows: 3 texts of
        9 tokens against 4 images, then 4 texts of 6 tokens against 1 image (patch inputs: fewer patches)."""
        from exporter_core.padding import describe_shape, static_shape_of
        from exporter_core.plan import Scenario

        scenarios = []
        fewer = None
        if self.takes_patches:
            fewer = max(4, int(self.vision_config.num_patches) * 3 // 4)
        for seed, (texts, length, images, patches) in enumerate(((3, 9, 4, None), (4, 6, 1, fewer)), start=1):
            spec = dummy_inputs.DummySpec(
                batch_size=texts, sequence_length=length, padded=True, padding_side=self.padding_side, seed=seed
            )
            arrays = self.dual_arrays(preprocessor, spec, image_batch=images, patches=patches)
            inputs = self.ordered_inputs(arrays, "np")
            label = describe_shape(static_shape_of(inputs, self.inputs)) + ", padded text rows"
            scenarios.append(Scenario(label, inputs))
        return scenarios


def _no_input_check(cond: Any, msg: Any, error_type: type[Exception] = ValueError) -> None:
    """`transformers.utils.torch_compilable_check` while exporting: the assert on input values is left out."""


def input_check_patches(config: Any) -> list[PatchingSpec]:
    """Patches leaving out the assertions on input values (``torch_compilable_check``) of the vision tower's modeling
    module, which torch.export writes as an operator ONNX has no function for; none when the module has none."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return []
    name = type(vision).__module__.replace(".configuration_", ".modeling_")
    try:
        module = importlib.import_module(name)
    except ImportError:
        return []
    if not hasattr(module, "torch_compilable_check"):
        return []
    return [PatchingSpec(module, "torch_compilable_check", _no_input_check)]


def _tokenizer_of(preprocessor: Any) -> Any | None:
    """The tokenizer of a processor, a tokenizer itself, or None (an image processor alone, or nothing)."""
    if preprocessor is None:
        return None
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    names = getattr(preprocessor, "model_input_names", None) or []
    return preprocessor if "input_ids" in names else None


def _image_processor_of(preprocessor: Any) -> Any | None:
    """The image processor of a processor, an image processor itself, or None (a tokenizer alone, or nothing)."""
    if preprocessor is None:
        return None
    processor = getattr(preprocessor, "image_processor", preprocessor)
    names = getattr(processor, "model_input_names", None) or []
    if "pixel_values" in names:
        return processor
    if "input_ids" in names:
        return None
    raise InvalidArgumentError(
        f"{type(preprocessor).__name__} makes neither pixel_values nor input_ids; pass --preprocessor processor "
        "(a checkpoint with a tokenizer and preprocessor_config.json) or no preprocessor"
    )


def _random_words(ids: np.ndarray, mask: np.ndarray, text_config: Any, seed: int) -> np.ndarray:
    """Random ids over the whole vocabulary at real positions, special ids left out (the pad id stays at padded ones).

    `dummy_inputs` draws ids above the largest special id, which leaves nothing to draw from in vocabularies whose
    special tokens come last (CLIP's eos is its last id): every token would be eos.
    """
    vocab = ModelConfigView(text_config).vocab_size
    special = sorted(ModelConfigView(text_config).special_token_ids)
    ordinary = np.setdiff1d(np.arange(vocab), special)
    drawn = ordinary[np.random.default_rng(seed).integers(0, ordinary.size, size=ids.shape)]
    return np.where(mask == 1, drawn, ids)


def _bracket_rows(arrays: dict[str, np.ndarray], text_config: Any) -> None:
    """Random rows begin with the bos id and end their real tokens with the eos id, as tokenised text does (CLIP's
    text tower pools at the eos token)."""
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    bos = getattr(text_config, "bos_token_id", None)
    eos = getattr(text_config, "eos_token_id", None)
    for row in range(ids.shape[0]):
        real = np.flatnonzero(mask[row])
        if real.size < 2:
            continue
        if isinstance(bos, int) and not isinstance(bos, bool):
            ids[row, real[0]] = bos
        if isinstance(eos, int) and not isinstance(eos, bool):
            ids[row, real[-1]] = eos


def _patch_grids(images: int, limit: int) -> list[tuple[int, int]]:
    """(rows, columns) of patches per image, of several aspect ratios, each at most `limit` patches."""
    side = max(1, int(limit**0.5))
    grids = [(side, side), (max(1, side - 1), limit // max(1, side - 1)), (max(1, side - 2), side), (1, limit)]
    return [grids[i % len(grids)] for i in range(images)]
