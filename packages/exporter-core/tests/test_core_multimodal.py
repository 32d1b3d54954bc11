"""The dual text/image encoder family (CLIP, SigLIP, ...): features and tiny sizes per model type, the two batch axes,
the validation scenarios and what the tiny models compute on them. Fast: no export (exporter-onnx's
test_multimodal.py exports)."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import torch

from exporter_core.architectures.multimodal import DualEncoderOnnxConfig
from exporter_core.dummy_inputs import DummySpec
from exporter_core.plugins import load_architecture

DUAL_TYPES = sorted(
    ep.name
    for ep in metadata.entry_points(group="exporter.architectures")
    if ep.value.startswith("exporter_core.architectures.multimodal:")
)


def _tiny(model_type: str, feature: str = "default") -> tuple[torch.nn.Module, DualEncoderOnnxConfig]:
    from exporter_core.loading import model_class_for
    from exporter_core.testing import init_std_overrides, tiny_model_config

    config_cls = load_architecture(model_type)
    config = tiny_model_config(model_type, **init_std_overrides(model_type))
    torch.manual_seed(0)
    model = model_class_for(feature, config_cls).from_config(config).eval()
    export_config = config_cls.for_feature(model.config, feature)
    assert isinstance(export_config, DualEncoderOnnxConfig)
    return model, export_config


def test_the_family_serves_the_model_types_of_the_issue() -> None:
    wanted = ["clip", "siglip", "siglip2", "chinese_clip", "altclip", "clipseg", "blip", "owlvit", "owlv2"]
    assert sorted(wanted) == DUAL_TYPES
    assert {load_architecture(t) for t in DUAL_TYPES} == {DualEncoderOnnxConfig}


@pytest.mark.parametrize("model_type", DUAL_TYPES)
def test_zero_shot_classification_only_where_transformers_maps_the_type(model_type: str) -> None:
    features = DualEncoderOnnxConfig.supported_features(model_type)
    if model_type in ("owlvit", "owlv2"):  # detectors: their zero-shot task is object detection
        assert features == ("default",)
    else:
        assert features == ("default", "zero-shot-image-classification")


@pytest.mark.parametrize("model_type", DUAL_TYPES)
def test_tiny_sizes_shrink_both_towers_and_keep_special_ids_in_the_vocabulary(model_type: str) -> None:
    sizes = DualEncoderOnnxConfig.tiny_sizes(model_type)
    text, vision = sizes["text_config"], sizes["vision_config"]
    assert text["vocab_size"] == 99 and text["hidden_size"] == vision["hidden_size"] == 32
    model, _ = _tiny(model_type)
    text_config = model.config.text_config
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
        value = getattr(text_config, name, None)
        assert value is None or 0 <= value < text_config.vocab_size, (name, value)
    assert sum(p.numel() for p in model.parameters()) < 200_000


@pytest.mark.parametrize("model_type", DUAL_TYPES)
def test_text_and_image_batches_are_separate_axes(model_type: str) -> None:
    _, config = _tiny(model_type)
    inputs = config.inputs
    assert list(inputs)[:2] == ["input_ids", "attention_mask"]
    assert inputs["input_ids"] == {0: "text_batch", 1: "sequence"}
    assert inputs["pixel_values"][0] == "image_batch"
    outputs = config.outputs
    assert list(outputs) == ["text_embeds", "image_embeds", "logits_per_image", "logits_per_text"]
    assert outputs["logits_per_image"] == {0: "image_batch", 1: "text_batch"}
    if model_type == "siglip2":
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "pixel_attention_mask", "spatial_shapes"}
    else:
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}


def test_zero_shot_outputs_are_the_tasks_logits_first() -> None:
    _, config = _tiny("clip", "zero-shot-image-classification")
    assert list(config.outputs) == ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"]


@pytest.mark.parametrize("model_type", DUAL_TYPES)
def test_scenarios_use_other_batches_than_traced_and_than_each_other_with_padded_rows(model_type: str) -> None:
    model, config = _tiny(model_type)
    traced = config.generate_dummy_inputs(None, framework="np")
    assert traced["input_ids"].shape[0] == traced["pixel_values"].shape[0] == 2
    scenarios = config.validation_scenarios(None)
    assert len(scenarios) == 2
    seen = set()
    for scenario in scenarios:
        texts, length = scenario.inputs["input_ids"].shape
        images = scenario.inputs["pixel_values"].shape[0]
        assert texts != images and texts != 2 and images != 2 and length != 8
        seen.add((texts, images))
        mask = scenario.inputs["attention_mask"]
        assert mask[0].all() and not mask.all(), "the first row is full, later rows are padded"
        with torch.no_grad():
            output = model(**config.model_kwargs({k: torch.from_numpy(v) for k, v in scenario.inputs.items()}))
        values = dict(zip(config.outputs, config.select_outputs(output), strict=True))
        assert tuple(values["logits_per_image"].shape) == (images, texts)
        assert values["text_embeds"].shape[0] == texts
        assert values["image_embeds"].shape[0] == images
        assert all(torch.isfinite(v).all() for v in values.values())
        # Rows apart by far more than the tolerance, on both sides: validation would see a row mix-up.
        for name in ("text_embeds", "image_embeds") if images > 1 else ("text_embeds",):
            assert float((values[name][0] - values[name][1]).abs().max()) > 100 * config.atol_for_validation, name
    assert len(seen) == 2


def test_random_text_rows_end_with_eos_so_clip_pools_a_real_token() -> None:
    model, config = _tiny("clip")
    spec = DummySpec(batch_size=3, sequence_length=9, padded=True, seed=1)
    arrays = config.dual_arrays(None, spec, image_batch=1)
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    eos, bos = model.config.text_config.eos_token_id, model.config.text_config.bos_token_id
    for row in range(3):
        real = np.flatnonzero(mask[row])
        assert ids[row, real[0]] == bos and ids[row, real[-1]] == eos
        assert (ids[row, real[1:-1]] != eos).all()
    # The padded rows' embeddings are those of the same texts unpadded: padding reaches nothing CLIP pools.
    short = int(mask[2].sum())
    with torch.no_grad():
        padded = model.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        alone = model.get_text_features(input_ids=torch.from_numpy(ids[2:, :short]))
    padded = getattr(padded, "pooler_output", padded)
    alone = getattr(alone, "pooler_output", alone)
    torch.testing.assert_close(padded[2:], alone, atol=1e-5, rtol=0)


def test_siglip2_patches_come_in_several_grids_and_validation_changes_the_patch_count() -> None:
    _, config = _tiny("siglip2")
    scenarios = config.validation_scenarios(None)
    counts = {s.inputs["pixel_values"].shape[1] for s in scenarios}
    assert counts == {16, 12}
    first = scenarios[0].inputs
    grids = {tuple(g) for g in first["spatial_shapes"]}
    assert len(grids) > 1
    np.testing.assert_array_equal(first["pixel_attention_mask"].sum(-1), first["spatial_shapes"].prod(-1))


def test_a_tokenizer_makes_the_text_and_an_image_processor_the_pixels() -> None:
    from exporter_core.testing import build_tiny_image_processor, build_tiny_tokenizer

    _, config = _tiny("clip")
    tokenizer = build_tiny_tokenizer(99)
    spec = DummySpec(batch_size=2, sequence_length=7, padded=True, seed=0)
    text = config.dual_arrays(tokenizer, spec, image_batch=3)
    assert text["input_ids"][:, 0].tolist() == [tokenizer.cls_token_id] * 2
    assert text["pixel_values"].shape == (3, 3, 16, 16)
    images = config.dual_arrays(build_tiny_image_processor(16, 16), spec, image_batch=3)
    assert images["pixel_values"].shape == (3, 3, 16, 16)
    assert not np.array_equal(images["pixel_values"], text["pixel_values"]), "processed pictures, not random values"


def test_random_text_of_a_real_size_vocabulary_is_not_all_special_tokens() -> None:
    """CLIP's special ids are its last ones: the words are drawn from the whole vocabulary without them."""
    import transformers

    config = DualEncoderOnnxConfig(transformers.CLIPConfig())
    spec = DummySpec(batch_size=3, sequence_length=9, padded=True, seed=1)
    arrays = config.dual_arrays(None, spec, image_batch=1)
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    assert arrays["pixel_values"].shape == (1, 3, 224, 224)
    words = ids[:, 1:][mask[:, 1:] == 1]
    specials = {49406, 49407, config.text_config.pad_token_id}
    assert len(set(words.tolist()) - specials) >= 10
    assert [int(row[mask[i] == 1][-1]) for i, row in enumerate(ids)] == [49407] * 3
