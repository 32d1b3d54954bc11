"""Every encoder architecture, and a decoder, an encoder-decoder and a vision model, traces, saves, reloads in a
fresh process and matches PyTorch with padding."""

from __future__ import annotations

import json

import pytest

import exporter
from exporter_core.architectures import encoders

ENCODERS = sorted(
    model_type
    for model_type, cls in {
        "albert": encoders.AlbertOnnxConfig,
        "bert": encoders.BertOnnxConfig,
        "big_bird": encoders.BigBirdOnnxConfig,
        "camembert": encoders.CamembertOnnxConfig,
        "convbert": encoders.ConvBertOnnxConfig,
        "data2vec-text": encoders.Data2VecTextOnnxConfig,
        "distilbert": encoders.DistilBertOnnxConfig,
        "electra": encoders.ElectraOnnxConfig,
        "flaubert": encoders.FlaubertOnnxConfig,
        "ibert": encoders.IBertOnnxConfig,
        "layoutlm": encoders.LayoutLMOnnxConfig,
        "mobilebert": encoders.MobileBertOnnxConfig,
        "roberta": encoders.RobertaOnnxConfig,
        "roformer": encoders.RoFormerOnnxConfig,
        "squeezebert": encoders.SqueezeBertOnnxConfig,
        "xlm": encoders.XLMOnnxConfig,
        "xlm-roberta": encoders.XLMRobertaOnnxConfig,
        "xlm-roberta-xl": encoders.XLMRobertaXLOnnxConfig,
    }.items()
)


def test_the_list_covers_every_encoder_config():
    assert len(ENCODERS) == len(encoders.__all__) == 18


@pytest.mark.parametrize("model_type", ENCODERS)
def test_encoder_default_feature(model_type, checkpoint, tmp_path):
    folder = checkpoint(model_type, "default", with_tokenizer=False)
    report = exporter.export(folder, tmp_path, format="torchscript", batch_size=3, sequence_length=12)
    assert report.passed, report.failures
    assert [p.reference_inputs["input_ids"] for p in report.parts] == [[3, 12], [1, 8]]
    assert report.worst_difference <= 1e-5
    metadata = json.loads((tmp_path / "model.torchscript.json").read_text())
    assert metadata["static_shape"] == {"batch": 3, "sequence": 12}
    assert metadata["generalizes"] is True
    # Padding leaves real positions alone, except in ConvBERT, whose convolutions read the padding tokens
    # (then the padded call is validated against PyTorch on the same padded inputs).
    assert metadata["padding_effect"]["changes_outputs"] is (model_type == "convbert")


@pytest.mark.parametrize(
    ("model_type", "feature", "static_shape"),
    [
        ("gpt2", "causal-lm", {"batch": 2, "sequence": 8}),
        ("bart", "seq2seq-lm", {"batch": 2, "encoder_sequence": 8, "decoder_sequence": 5}),
        ("vit", "image-classification", {"batch": 2, "num_channels": 3, "height": 30, "width": 30}),
    ],
)
def test_decoder_encoder_decoder_and_vision_models(model_type, feature, static_shape, tmp_path, tmp_path_factory):
    from exporter_core.testing import build_tiny_checkpoint

    vision = model_type == "vit"
    folder = build_tiny_checkpoint(
        model_type, feature, tmp_path_factory.mktemp(model_type), with_tokenizer=not vision, with_image_processor=vision
    )
    report = exporter.export(folder, tmp_path, format="torchscript", feature=feature)
    assert report.passed, report.failures
    metadata = report.metadata
    assert metadata["static_shape"] == static_shape
    assert metadata["generalizes"] is True and metadata["padding_effect"]["changes_outputs"] is False
    if model_type == "gpt2":  # left-padded rows, extended on the right; the LM head is tied to the embeddings
        assert ["transformer.wte.weight", "lm_head.weight"] in metadata["untied_parameters"]
