"""Today's text encoder-decoders (the generic family of ``exporter_core.architectures.seq2seq``) on ONNX.

Every (architecture, feature) pair is exported and validated by the generated cases (``--exporter-matrix``); this file
keeps what those cannot show:

- features come from Transformers' Auto mappings, tiny sizes from each type's own config fields, and the types no
  export serves faithfully are refused with their reason (fast, no export);
- the routers' experts, made dense while exporting, compute the numbers Transformers' loop computes, and NLLB-MoE's
  capacity follows the number of tokens (fast, tiny modules, no export);
- T5Gemma's part configs read the decoder's grouped key/value heads and the (wider) encoder's width (fast);
- matrix tier: ``seq2seq-lm-with-past`` of mT5 and T5Gemma writes three graphs whose greedy generation equals
  ``model.generate`` for 16 tokens on padded rows, and the routed types validate at other batches and lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exporter_core.architectures.seq2seq import (
    Seq2SeqLMOnnxConfig,
    T5GemmaOnnxConfig,
)
from exporter_core.errors import UnsupportedFeatureError
from exporter_core.export_cases import CaseOutcome, config_class
from exporter_core.testing import tiny_model_config

NEW_TYPES = (
    "fsmt",
    "led",
    "longt5",
    "mt5",
    "mvp",
    "nllb-moe",
    "pegasus",
    "pegasus_x",
    "prophetnet",
    "switch_transformers",
    "t5gemma",
    "umt5",
)
SEQ2SEQ = ("default", "default-with-past", "seq2seq-lm", "seq2seq-lm-with-past")


def test_features_follow_the_auto_mappings() -> None:
    expected = {
        "mt5": (*SEQ2SEQ, "sequence-classification", "question-answering", "token-classification"),
        "umt5": (*SEQ2SEQ, "sequence-classification", "question-answering", "token-classification"),
        "t5gemma": (*SEQ2SEQ, "sequence-classification", "token-classification"),
        "mvp": (*SEQ2SEQ, "sequence-classification", "question-answering", "causal-lm", "causal-lm-with-past"),
        "pegasus": (*SEQ2SEQ, "causal-lm", "causal-lm-with-past"),
        "led": (*SEQ2SEQ, "question-answering"),
    }
    for model_type in NEW_TYPES:
        features = config_class(model_type).supported_features(model_type)
        assert features == expected.get(model_type, SEQ2SEQ), model_type


@pytest.mark.parametrize("model_type", NEW_TYPES)
def test_tiny_sizes_come_from_the_type_and_build_a_small_config(model_type: str) -> None:
    config = tiny_model_config(model_type)
    sizes = config_class(model_type).tiny_sizes(model_type)
    assert sizes and all(getattr(config, name) == value for name, value in sizes.items() if not isinstance(value, dict))
    assert config.get_text_config(decoder=True).vocab_size == 99


@pytest.mark.parametrize(
    ("model_type", "feature", "reason"),
    [
        ("led", "seq2seq-lm", "attention_window"),
        ("led", "question-answering", "attention_window"),
        ("pegasus_x", "default", "block_size"),
        ("prophetnet", "seq2seq-lm-with-past", "one token per call"),
    ],
)
def test_types_no_export_serves_are_refused_with_the_reason(model_type: str, feature: str, reason: str) -> None:
    with pytest.raises(UnsupportedFeatureError, match=reason):
        config_class(model_type).for_feature(tiny_model_config(model_type), feature)


def test_prophetnet_without_past_returns_its_ngram_streams() -> None:
    config = config_class("prophetnet").for_feature(tiny_model_config("prophetnet"), "seq2seq-lm")
    assert list(config.outputs) == ["logits", "logits_ngram"]
    default = config_class("prophetnet").for_feature(tiny_model_config("prophetnet"), "default")
    assert list(default.outputs) == ["last_hidden_state", "last_hidden_state_ngram"]


def test_nllb_moe_refuses_a_random_second_expert_policy() -> None:
    with pytest.raises(UnsupportedFeatureError, match="second_expert_policy"):
        Seq2SeqLMOnnxConfig.for_feature(tiny_model_config("nllb-moe", second_expert_policy="random"), "seq2seq-lm")


def test_t5gemma_parts_read_the_decoder_cache_and_the_encoder_width() -> None:
    model_config = tiny_model_config("t5gemma")
    config = T5GemmaOnnxConfig.for_feature(model_config, "seq2seq-lm-with-past")
    assert model_config.encoder.hidden_size != model_config.decoder.hidden_size
    first = config.decoder_config(with_past=False)
    arrays = first.generate_inputs(batch_size=2, encoder_length=5, decoder_length=1)
    assert arrays["encoder_hidden_states"].shape == (2, 5, model_config.encoder.hidden_size)
    later = config.decoder_config(with_past=True)
    arrays = later.generate_inputs(batch_size=2, encoder_length=5, decoder_length=1, past_length=3)
    heads, head_dim = model_config.decoder.num_key_value_heads, model_config.decoder.head_dim
    assert arrays["past_key_values.1.decoder.key"].shape == (2, heads, 3, head_dim)
    assert arrays["past_key_values.1.encoder.value"].shape == (2, heads, 5, head_dim)


def _sparse_mlp(model_type: str, **overrides: Any) -> Any:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    sizes = {"initializer_factor": 1.0, "init_std": 0.5, **overrides}
    model = AutoModelForSeq2SeqLM.from_config(tiny_model_config(model_type, **sizes))
    model.eval()
    return next(m for name, m in model.named_modules() if type(m).__name__.endswith("SparseMLP")), model


@pytest.mark.parametrize("model_type", ["switch_transformers", "nllb-moe"])
def test_dense_experts_compute_what_the_routed_loop_computes(model_type: str) -> None:
    """With capacity overflow (tokens dropped) and several batch shapes: the patched layer equals the loop."""
    import torch

    mlp, model = _sparse_mlp(model_type)
    config = Seq2SeqLMOnnxConfig.for_feature(model.config, "seq2seq-lm")
    for batch, length in ((1, 3), (3, 9), (4, 17)):
        hidden = torch.randn(batch, length, model.config.d_model)
        with torch.no_grad():
            expected = mlp(hidden)
            with config.patched_ops():
                got = mlp(hidden)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), (batch, length)
        assert expected.abs().max() > 0.1, "the layer computes something"
    # The patches are gone afterwards: the loop runs again (it would not under the patched class).
    assert type(mlp.experts).forward.__name__ == "forward"


def test_nllb_moe_capacity_follows_the_number_of_tokens() -> None:
    """NLLB-MoE drops second choices beyond ceil(fraction * tokens): the patched router does at every token count."""
    import torch

    mlp, model = _sparse_mlp("nllb-moe", moe_eval_capacity_token_fraction=0.5)
    config = Seq2SeqLMOnnxConfig.for_feature(model.config, "seq2seq-lm")
    dropped = 0
    for tokens in (2, 9, 31):
        logits = torch.randn(tokens, model.config.num_experts)
        expected_mask, expected_probs = mlp.router.route_tokens(logits.clone(), torch.float32)
        with config.patched_ops():
            mask, probs = mlp.router.route_tokens(logits.clone(), torch.float32)
        assert torch.equal(mask, expected_mask) and torch.equal(probs, expected_probs), tokens
        dropped += int((expected_probs > 0).sum() < 2 * tokens)
    assert dropped == 3, "at every token count some choice overflowed the capacity"


# -- matrix tier: exports -----------------------------------------------------------------------------------
@pytest.mark.exporter_matrix
@pytest.mark.parametrize("model_type", ["mt5", "t5gemma"])
def test_generation_parity_of_mt5_and_t5gemma(model_type: str, exported: Callable[..., CaseOutcome]) -> None:
    outcome = exported(model_type, "seq2seq-lm-with-past", "onnx")
    assert outcome.validated, outcome.reason
    assert {p.name for p in outcome.artifacts(".onnx")} == {"encoder_model.onnx", "decoder_model_merged.onnx"}
    (parity,) = (outcome.report or {})["checks"]
    assert parity["passed"] and "16 new tokens per row identical to model.generate" in parity["detail"]
    assert len(parity["exported_tokens"]) == 2


@pytest.mark.exporter_matrix
@pytest.mark.parametrize("model_type", ["nllb-moe", "switch_transformers"])
def test_routed_types_validate_at_other_shapes(model_type: str, exported: Callable[..., CaseOutcome]) -> None:
    outcome = exported(model_type, "seq2seq-lm", "onnx")
    assert outcome.validated, outcome.reason
    (part,) = (outcome.report or {})["parts"]
    assert part["reference_inputs"]["input_ids"][0] != part["export_inputs"]["input_ids"][0]
