"""Today's decoder-only language models (Llama, Mistral, Qwen, Phi, Gemma, OLMo, ...): one family for many model types.

Transformers 5 writes these decoders alike: token ids and an attention mask in, a cache object of per-layer keys
and values, one attention interface. So one config (`LLMOnnxConfig`, the decoder family's inputs, outputs,
scenarios and generation check) serves every model type it is registered for, one entry point per type, and
reads what differs between types from Transformers itself:

- the features: ``default`` and ``causal-lm``, with past where the config has a cache (``use_cache``), and
  the sequence-classification, token-classification and question-answering heads the Auto mappings name;
- the tiny test sizes: the model type's own config fields, shrunk (`tiny_sizes`); a field the class lacks is
  never set, so nothing spurious reaches the config (an extra ``num_key_value_heads`` would change the cache);
- refusals, before export, for what the past key/value layout cannot carry: the convolution state of hybrid
  layers (LFM2's short convolutions).

Two cache layouts differ from (layers, key/value heads, head size): DBRX names its key/value heads inside its
``attn_config`` (``kv_n_heads``), and multi-head latent attention (DeepSeek-V3) caches per layer one compressed
latent (``kv_lora_rank`` wide) as its "keys" and the shared rotary key (``qk_rope_head_dim`` wide) as its "values",
one head each, expanding them to every head inside the attention.

Mixture-of-experts layers are captured with Transformers' ``batched_mm`` experts implementation (switched on for
the export only, like ``use_cache``): the same sums as the model's own routing without its data-dependent shapes.
DBRX and JetMoE write their own experts, which `exporter_core.architectures.routing.dense_experts_specs` patches
while exporting.

Helium normalises with ``rms_norm_eps`` 1e-8. The ONNX optimizer of the torch.export engine drops an ``Add`` of a
scalar constant it finds close to zero (within NumPy's default absolute tolerance, 1e-8), so the exported norm
divided by ``sqrt(mean(x**2))`` alone: NaN for the zero embeddings of padding tokens, spread to the whole row by
attention. While exporting, `helium_rms_norm` adds the epsilon as a tensor shaped like the variance, which the
optimizer keeps (the same sum in PyTorch).

Sliding-window layers keep every token in the exported cache: the window is applied by the attention mask, as
the model does for a cache that keeps every token, so each layer's past grows like the others' and a caller
feeds ``present.*`` back unchanged; the reference PyTorch run takes the same full-length cache.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from exporter_core.architectures.decoders import DecoderOnnxConfig
from exporter_core.architectures.routing import dense_experts_specs
from exporter_core.config import PatchingSpec
from exporter_core.errors import OpsetError, UnsupportedFeatureError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.cache import CacheLayout
    from exporter_core.plan import ExportPlan

__all__ = [
    "HEAD_MAPPINGS",
    "TINY_FIELDS",
    "BloomOnnxConfig",
    "LLMFromOpset18OnnxConfig",
    "LLMOnnxConfig",
    "helium_rms_norm",
    "model_config_fields",
]

#: Feature -> the name of the Auto mapping (``transformers.models.auto.modeling_auto``) listing the types with it.
HEAD_MAPPINGS: Mapping[str, str] = {
    "default": "MODEL_MAPPING_NAMES",
    "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "sequence-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "question-answering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
}

#: Tiny test values, each set under every one of its names the config class has as a field of its own.
TINY_FIELDS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("vocab_size",), 99),
    (("hidden_size", "n_embd", "d_model"), 32),
    (("num_hidden_layers", "n_layer", "n_layers", "num_layers"), 2),
    (("num_attention_heads", "n_head", "n_heads", "attention_heads"), 4),
    (("num_key_value_heads", "num_kv_heads"), 2),
    (("head_dim", "kv_channels"), 8),
    (("rotary_dim",), 4),
    (("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"), 37),
    (("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx"), 64),
    (("num_local_experts", "num_experts", "n_routed_experts"), 4),
    (("num_experts_per_tok",), 2),
    (("pad_token_id",), 0),
    (("bos_token_id",), 1),
    (("eos_token_id",), 2),
)

#: Tokens a sliding-window layer of a tiny model sees: fewer than the validated and generated lengths, so
#: validation and the generation check cover tokens falling out of the window.
TINY_SLIDING_WINDOW = 4

#: Per model type, tiny sizes that differ from the derived ones (each with its reason).
_TINY_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    # Real LFM2 checkpoints mix short-convolution layers with attention; the default config has attention only.
    "lfm2": {"layer_types": ["conv", "full_attention"]},
    # DBRX keeps its attention and expert sizes in sub-configs; fewer key/value heads than heads, as in DBRX itself;
    # 40-wide experts (16-byte rows for torch._grouped_mm, as for the other experts). Its attention reads rope_theta
    # and clip_qkv from attn_config, which DBRX checkpoints set there (clip_qkv 8) and its default cannot run with.
    "dbrx": {
        "attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
        "ffn_config": {"ffn_hidden_size": 40, "moe_num_experts": 4, "moe_top_k": 2},
    },
    # Multi-head latent attention at tiny widths (rotary dims even); 4 routed experts in 2 groups of which 1 is
    # kept, so group-limited routing is exercised; layer 0 dense, layer 1 mixture-of-experts.
    "deepseek_v3": {
        "num_key_value_heads": 4,
        "kv_lora_rank": 16,
        "q_lora_rank": 24,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 8,
        "n_group": 2,
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "n_shared_experts": 1,
    },
}


@functools.cache
def model_config_fields(model_type: str) -> Mapping[str, Any]:
    """The fields the Transformers config class of `model_type` declares, with their default values."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    defaults = config_class()
    if dataclasses.is_dataclass(config_class):
        names = [field.name for field in dataclasses.fields(config_class)]
    else:  # pragma: no cover - every Transformers 5 config is a dataclass; older ones keep init arguments
        import inspect

        names = [n for n in inspect.signature(config_class.__init__).parameters if n not in ("self", "kwargs")]
    return {name: getattr(defaults, name, None) for name in names}


def helium_rms_norm(self: Any, hidden_states: Any) -> Any:
    """`HeliumRMSNorm.forward` with its epsilon added as a tensor, which the ONNX optimizer does not fold away."""
    import torch

    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + torch.full_like(variance, self.variance_epsilon))
    return (self.weight.to(torch.float32) * hidden_states).to(input_dtype)


def _export_specs(model_type: str) -> list[PatchingSpec]:
    """What `model_type` needs patched while exporting: experts without routing-dependent shapes, Helium's norm."""
    specs = dense_experts_specs(model_type)
    if model_type == "helium":
        from transformers.models.helium import modeling_helium

        specs.append(PatchingSpec(modeling_helium.HeliumRMSNorm, "forward", helium_rms_norm))
    return specs


def _derived_tiny_sizes(model_type: str) -> dict[str, Any]:
    fields = model_config_fields(model_type)
    sizes = {name: value for names, value in TINY_FIELDS for name in names if name in fields}
    if "num_experts_per_tok" in fields:
        # Experts run through torch._grouped_mm in PyTorch, which needs weight rows aligned to 16 bytes.
        names = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size")
        sizes.update({name: 40 for name in names if name in fields})
    window = fields.get("sliding_window")
    if isinstance(window, int) and not isinstance(window, bool) and window > 0:
        sizes["sliding_window"] = TINY_SLIDING_WINDOW
        layer_types = fields.get("layer_types") or ()
        if "sliding_attention" in layer_types and "full_attention" in layer_types:
            sizes["layer_types"] = ["sliding_attention", "full_attention"]
    return sizes


class LLMOnnxConfig(DecoderOnnxConfig):
    """A Transformers 5 decoder-only language model; the features and tiny sizes come from its model type."""

    features: ClassVar[tuple[str, ...]] = (
        "default",
        "default-with-past",
        "causal-lm",
        "causal-lm-with-past",
        "sequence-classification",
        "token-classification",
        "question-answering",
    )

    #: How mixture-of-experts layers are captured: each token's chosen experts gathered by id and applied as batched
    #: matrix products, the same sums as the model's own loop over experts without its data-dependent shapes
    #: (nonzero, histc) that exporters fix at the traced routing or cannot write.
    experts_implementation: ClassVar[str] = "batched_mm"

    def __init__(
        self,
        config: PretrainedConfig,
        task: str = "default",
        patching_specs: list[PatchingSpec] | None = None,
        use_past: bool = False,
    ) -> None:
        if use_past:
            reason = self.past_refusal(config)
            if reason is not None:
                raise UnsupportedFeatureError(
                    f"{config.model_type} {task}-with-past: {reason}; export {task} without past"
                )
        specs = _export_specs(str(getattr(config, "model_type", ""))) + list(patching_specs or [])
        super().__init__(config, task=task, patching_specs=specs, use_past=use_past)

    @property
    def num_key_value_heads(self) -> int:
        """Heads of the cached keys and values; DBRX names them in its ``attn_config``."""
        heads = getattr(getattr(self._config, "attn_config", None), "kv_n_heads", None)
        return int(heads) if isinstance(heads, int) and heads > 0 else super().num_key_value_heads

    @property
    def cache_layout(self) -> CacheLayout | None:
        """The decoder's layout; with multi-head latent attention (``kv_lora_rank``), the latent and rotary key."""
        layout = super().cache_layout
        rank = getattr(self._config, "kv_lora_rank", None)
        if layout is None or rank is None:
            return layout
        from exporter_core.cache import CacheLayout, LayerCache

        latent = LayerCache(1, int(rank), value_head_dim=int(self._config.qk_rope_head_dim))
        return CacheLayout(tuple(latent for _ in range(self.num_layers)))

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        """The decoder's cache setting and, for mixture-of-experts models, `experts_implementation` while exporting."""
        override = dict(super().values_override or {})
        if getattr(self._config, "num_experts_per_tok", None) is not None:
            override["_experts_implementation"] = self.experts_implementation
        return override

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """`features` narrowed to the heads Transformers has for `model_type`, without past when it has no cache."""
        from transformers.models.auto import modeling_auto

        with_cache = "use_cache" in model_config_fields(model_type)
        supported = []
        for feature in cls.features:
            task = feature.removesuffix("-with-past")
            if model_type not in getattr(modeling_auto, HEAD_MAPPINGS[task]):
                continue
            if feature.endswith("-with-past") and not with_cache:
                continue
            supported.append(feature)
        return tuple(supported)

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """The model type's own size fields shrunk (`TINY_FIELDS`), a small sliding window where it has one, then the
        class's `tiny_config` and the per-type overrides."""
        sizes = _derived_tiny_sizes(model_type)
        sizes.update(cls.tiny_config)
        sizes.update(_TINY_OVERRIDES.get(model_type, {}))
        return sizes

    @classmethod
    def past_refusal(cls, config: PretrainedConfig) -> str | None:
        """Why `config`'s model cannot be exported with past key values, or None."""
        layer_types = getattr(config, "layer_types", None) or ()
        other = sorted({t for t in layer_types if t not in ("full_attention", "sliding_attention")})
        if other:
            return (
                f"its {', '.join(other)} layers keep a state that is not attention keys and values, which the past "
                "key/value layout has no room for"
            )
        return None


class LLMFromOpset18OnnxConfig(LLMOnnxConfig):
    """A decoder the TorchScript-based ONNX exporter (opsets below 18) cannot write, so ONNX starts at opset 18.

    That exporter fails on rotary embeddings that interleave channels with ``repeat_interleave`` over a dynamic
    axis (Cohere, Cohere 2, GLM, GLM-4, ERNIE 4.5) and has no ``expm1`` (Apertus's xIELU activation).
    """

    min_onnx_opset: ClassVar[int] = 18
    min_onnx_opset_reason: ClassVar[str] = (
        "below it the TorchScript-based exporter cannot write its rotary embedding (repeat_interleave over a "
        "dynamic axis) or Apertus's expm1 activation"
    )

    def check_opset(self, opset: int) -> None:
        """Refuse opsets below 18 with the reason."""
        if isinstance(opset, int) and not isinstance(opset, bool) and opset < self.min_onnx_opset:
            raise OpsetError(
                f"{self.model_view.model_type} exports from opset {self.min_onnx_opset}: below it the TorchScript-based "
                f"exporter cannot write its rotary embedding or activation; pass --opset {self.min_onnx_opset} or higher"
            )
        super().check_opset(opset)


class BloomOnnxConfig(LLMOnnxConfig):
    """Bloom: its GeLU is a Python ``torch.autograd.Function``, which a TorchScript archive cannot hold, so static
    traces (TorchScript, Neuron) are refused; ONNX exports inline it."""

    def export_plan(self, model: Any, preprocessor: Any = None) -> ExportPlan:
        """The decoder plan, refused by static-trace backends with the reason."""
        plan = super().export_plan(model, preprocessor)
        plan.static_trace_refusal = plan.static_trace_refusal or (
            "bloom's GeLU is a Python autograd.Function (GeLUFunction), which a TorchScript archive cannot hold; "
            "use the onnx backend"
        )
        return plan
