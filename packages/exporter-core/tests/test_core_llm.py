"""The generic decoder-only LLM family: features and tiny sizes per model type, what the tiny models compute, and
the refusals. Fast: no export (exporter-onnx's test_llm.py exports)."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch

from exporter_core.architectures.llm import (
    BloomOnnxConfig,
    LLMFromOpset18OnnxConfig,
    LLMOnnxConfig,
    helium_rms_norm,
    model_config_fields,
)
from exporter_core.errors import OpsetError, UnsupportedFeatureError
from exporter_core.modeling import prepared_for_export
from exporter_core.plugins import load_architecture

LLM_TYPES = sorted(
    ep.name
    for ep in metadata.entry_points(group="exporter.architectures")
    if ep.value.startswith("exporter_core.architectures.llm:")
)


def _tiny(model_type: str, auto_class: str = "AutoModelForCausalLM", **overrides: object) -> torch.nn.Module:
    import transformers

    sizes = {**load_architecture(model_type).tiny_sizes(model_type), **overrides}
    config = transformers.AutoConfig.for_model(model_type, **sizes)
    torch.manual_seed(0)
    return getattr(transformers, auto_class).from_config(config).eval()


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_the_family_serves_the_model_types_of_the_issue() -> None:
    assert len(LLM_TYPES) >= 45
    assert {"llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "falcon", "bloom"} <= set(
        LLM_TYPES
    )
    assert {load_architecture(t) for t in LLM_TYPES} == {LLMOnnxConfig, LLMFromOpset18OnnxConfig, BloomOnnxConfig}


@pytest.mark.parametrize(
    ("model_type", "features"),
    [
        (
            "llama",
            (
                "default",
                "default-with-past",
                "causal-lm",
                "causal-lm-with-past",
                "sequence-classification",
                "token-classification",
                "question-answering",
            ),
        ),
        (
            "biogpt",
            (
                "default",
                "default-with-past",
                "causal-lm",
                "causal-lm-with-past",
                "sequence-classification",
                "token-classification",
            ),
        ),
        ("xglm", ("default", "default-with-past", "causal-lm", "causal-lm-with-past")),
        # OpenAI GPT's forward takes no cache: no with-past feature.
        ("openai-gpt", ("default", "causal-lm", "sequence-classification")),
    ],
)
def test_features_follow_the_heads_transformers_has(model_type: str, features: tuple[str, ...]) -> None:
    assert load_architecture(model_type).supported_features(model_type) == features


def test_features_are_narrowed_per_type_but_the_class_declares_their_union() -> None:
    for model_type in LLM_TYPES:
        supported = LLMOnnxConfig.supported_features(model_type)
        assert {"default", "causal-lm"} <= set(supported) <= set(LLMOnnxConfig.features)


@pytest.mark.parametrize("model_type", LLM_TYPES)
def test_tiny_sizes_name_only_fields_of_the_config_class_and_give_a_cache_the_layout_describes(model_type: str) -> None:
    """A tiny model of every type runs with a cache, and returns past keys/values of the shapes the layout declares
    (an attribute the config class lacks, a wrong head count or head size, would show here)."""
    config_cls = load_architecture(model_type)
    sizes = config_cls.tiny_sizes(model_type)
    assert set(sizes) <= set(model_config_fields(model_type)), "a tiny size the config class has no field for"
    model = _tiny(model_type)
    assert sum(p.numel() for p in model.parameters()) < 200_000
    if "causal-lm-with-past" not in config_cls.supported_features(model_type):
        return
    try:
        export_config = config_cls.for_feature(model.config, "causal-lm-with-past")
    except UnsupportedFeatureError:
        assert model_type == "lfm2"
        return
    inputs = export_config.generate_past_inputs(batch_size=2, seq_length=3, past_length=5, framework="pt")
    with torch.no_grad():
        outputs = export_config.select_outputs(model(**export_config.model_kwargs(inputs)))
    layout = export_config.cache_layout
    assert layout is not None and layout.num_layers == 2
    presents = outputs[1:]
    assert len(presents) == 2 * layout.num_layers
    for i, layer in enumerate(layout.layers):
        for kind, tensor in zip(("key", "value"), presents[2 * i : 2 * i + 2], strict=True):
            assert tuple(tensor.shape) == (2, layer.num_heads, 8, layer.size_of(f"present.{i}.{kind}"))
    assert torch.isfinite(outputs[0]).all()


def test_grouped_and_multi_query_attention_reach_the_tiny_models() -> None:
    def kv_heads(model_type: str) -> int:
        return LLMOnnxConfig(_tiny(model_type).config, "causal-lm", use_past=True).num_key_value_heads

    assert kv_heads("llama") == 2 and kv_heads("qwen3") == 2
    assert kv_heads("falcon") == 1 and kv_heads("gpt_bigcode") == 1
    assert kv_heads("bloom") == 4 and kv_heads("opt") == 4


@pytest.mark.parametrize("model_type", ["mistral", "gemma2"])
def test_tiny_sliding_windows_are_shorter_than_the_validated_lengths(model_type: str) -> None:
    """With a window of 4, the last of 12 tokens computes something else than with the window wide open: validation
    at those lengths covers tokens falling out of the window."""
    narrow, wide = _tiny(model_type), _tiny(model_type, sliding_window=64)
    assert narrow.config.sliding_window == 4
    ids = _ids(1, 12)
    with torch.no_grad():
        a, b = narrow(input_ids=ids).logits, wide(input_ids=ids).logits
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert float((a[:, -1] - b[:, -1]).abs().max()) > 1e-3


def test_a_sliding_window_cache_keeps_every_token_and_computes_what_the_windowed_cache_does() -> None:
    """The exported cache of a windowed model keeps every token (the mask applies the window); the model's next
    token logits equal those it computes with Transformers' own windowed cache."""
    from transformers import DynamicCache

    from exporter_core.cache import returned_cache

    model = _tiny("mistral")
    config = LLMOnnxConfig(model.config, "causal-lm", use_past=True)
    layout = config.cache_layout
    assert layout is not None
    ids = _ids(1, 10)
    empty_past = {name: torch.from_numpy(value) for name, value in layout.past_arrays(1, 0).items()}
    prompt = {"input_ids": ids[:, :9], **empty_past, "attention_mask": torch.ones(1, 9, dtype=torch.long)}
    with torch.no_grad():
        # past_key_values= and returned_cache: the names every supported Transformers 5 release accepts/returns.
        windowed = returned_cache(
            model(input_ids=ids[:, :9], past_key_values=DynamicCache(config=model.config), use_cache=True)
        )
        expected = model(input_ids=ids[:, 9:], past_key_values=windowed, use_cache=True).logits
        flat = dict(zip(config.outputs, config.select_outputs(model(**config.model_kwargs(prompt))), strict=True))
    assert flat["present.0.key"].shape[2] == 9 and windowed.layers[0].keys.shape[2] == 3
    step = {"input_ids": ids[:, 9:], "attention_mask": torch.ones(1, 10, dtype=torch.long)}
    step.update(
        {name.replace("present", "past_key_values"): v for name, v in flat.items() if name.startswith("present")}
    )
    with torch.no_grad():
        got = config.select_outputs(model(**config.model_kwargs(step)))[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_mixture_of_experts_is_captured_with_batched_experts_and_restored() -> None:
    model = _tiny("mixtral")
    before = model.config._experts_implementation
    config = LLMOnnxConfig.for_feature(model.config, "causal-lm-with-past")
    assert config.values_override == {"use_cache": True, "_experts_implementation": "batched_mm"}
    with prepared_for_export(model, config):
        assert model.config._experts_implementation == "batched_mm"
    assert model.config._experts_implementation == before
    assert "_experts_implementation" not in (
        LLMOnnxConfig.for_feature(_tiny("llama").config, "causal-lm").values_override or {}
    )


@pytest.mark.parametrize(("model_type", "patched"), [("dbrx", "DbrxExperts"), ("jetmoe", "JetMoeParallelExperts")])
def test_experts_the_model_writes_itself_are_patched_to_the_same_sums_traced_for_any_routing(
    model_type: str, patched: str
) -> None:
    """DBRX loops over the experts hit and JetMoE splits rows at counts read back to Python: a trace fixes both at
    the traced routing. Patched, a trace at one input computes what PyTorch computes at another; then restored."""
    import importlib

    model = _tiny(model_type)
    experts = getattr(importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}"), patched)
    original = experts.forward
    config = LLMOnnxConfig.for_feature(model.config, "causal-lm")
    traced_ids, other_ids = _ids(2, 7, seed=1), _ids(3, 5, seed=2)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, use_cache=False).logits

    logits = Logits()
    with torch.no_grad():
        expected = logits(other_ids)
        with prepared_for_export(model, config):
            assert experts.forward is not original
            torch.testing.assert_close(logits(other_ids), expected, rtol=0, atol=1e-5)
            traced = torch.jit.trace(logits, (traced_ids,), check_trace=False)
        assert experts.forward is original
        torch.testing.assert_close(traced(other_ids), expected, rtol=0, atol=1e-5)


def test_helium_norm_adds_its_epsilon_as_a_tensor_while_exporting() -> None:
    """The ONNX optimizer drops a scalar ``+ 1e-8``; a tensor epsilon is kept, and PyTorch computes the same."""
    from transformers.models.helium import modeling_helium

    model = _tiny("helium")
    assert model.config.rms_norm_eps == 1e-8
    norm = model.model.norm
    hidden = torch.randn(2, 3, norm.weight.shape[0])
    hidden[0] = 0.0
    with torch.no_grad():
        expected = norm(hidden)
        with prepared_for_export(model, LLMOnnxConfig.for_feature(model.config, "default")):
            assert modeling_helium.HeliumRMSNorm.forward is helium_rms_norm
            torch.testing.assert_close(norm(hidden), expected, rtol=0, atol=0)
    assert modeling_helium.HeliumRMSNorm.forward is not helium_rms_norm
    assert torch.isfinite(expected).all()


def test_multi_head_latent_attention_caches_its_latent_and_rotary_key() -> None:
    config = LLMOnnxConfig.for_feature(_tiny("deepseek_v3").config, "causal-lm-with-past")
    layout = config.cache_layout
    assert layout is not None and {
        (layer.num_heads, layer.head_dim, layer.value_head_dim) for layer in layout.layers
    } == {(1, 16, 8)}
    assert config.inputs["past_key_values.0.value"] == {0: "batch", 2: "past_sequence"}


def test_dbrx_sizes_its_sub_configs_and_caches_its_key_value_heads() -> None:
    model = _tiny("dbrx")
    assert (model.config.attn_config.kv_n_heads, model.config.ffn_config.moe_top_k) == (2, 2)
    assert LLMOnnxConfig.for_feature(model.config, "causal-lm-with-past").num_key_value_heads == 2


def test_hybrid_convolution_layers_refuse_past_before_export_with_the_reason() -> None:
    model = _tiny("lfm2")
    assert model.config.layer_types == ["conv", "full_attention"]
    with pytest.raises(UnsupportedFeatureError, match="conv layers keep a state") as info:
        LLMOnnxConfig.for_feature(model.config, "causal-lm-with-past")
    assert "\n" not in str(info.value)
    assert LLMOnnxConfig.for_feature(model.config, "causal-lm").use_past is False


def test_types_the_torchscript_based_exporter_cannot_write_start_at_opset_18() -> None:
    config = LLMFromOpset18OnnxConfig.for_feature(_tiny("cohere").config, "causal-lm-with-past")
    with pytest.raises(OpsetError, match=r"cohere exports from opset 18.*--opset 18"):
        config.check_opset(17)
    config.check_opset(18)
    assert LLMOnnxConfig.min_onnx_opset < 18


def test_bloom_refuses_static_traces_with_the_reason_and_others_do_not() -> None:
    bloom = _tiny("bloom")
    plan = load_architecture("bloom").for_feature(bloom.config, "causal-lm").export_plan(bloom)
    assert plan.static_trace_refusal is not None and "GeLUFunction" in plan.static_trace_refusal
    llama = _tiny("llama")
    assert LLMOnnxConfig.for_feature(llama.config, "causal-lm").export_plan(llama).static_trace_refusal is None
