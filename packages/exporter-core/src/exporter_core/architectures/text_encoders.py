"""Today's text encoders (DeBERTa, ModernBERT, MPNet, ESM, LUKE, LayoutLMv3, ...): one family for many model types.

They take token ids and an attention mask like BERT and answer through the same heads, so one config
(`TextEncoderFamilyOnnxConfig`, the BERT family's inputs, outputs and validation scenarios) serves every model type
it is registered for, one entry point per type, and reads what differs between types from Transformers and from
the checkpoint's own config:

- the features: the masked-lm, sequence-classification, multiple-choice, token-classification and
  question-answering heads the Auto mappings name for the type (`HEAD_MAPPINGS`);
- ``token_type_ids``: an input when the checkpoint has more than one token type (``type_vocab_size``), as real
  RoBERTa-like checkpoints with a single type do not;
- the tiny test sizes: the type's own config fields, shrunk (`TINY_FIELDS`), special ids brought inside the tiny
  vocabulary, then per-type overrides, each with its reason (`_TINY_OVERRIDES`).

What a few types add is declared in tables, not in subclasses: inputs in forward order (`_INPUT_ORDER`: LUKE's
entities, MarkupLM's XPath ids, LayoutLMv3's boxes and page image, RoCBert's glyph and pinyin ids, ERNIE's task
ids, Longformer's global attention, set on the first token as for classification), and in `outputs` LUKE's entity
states, LayoutLMv3's page patches after the text, Funnel's pooled sequence for encoder-only checkpoints.

X-MOD picks one language adapter per row; the export serves one language, the checkpoint's ``default_language``,
or the first language it was trained with (``languages[0]``, ``en_XX`` for the released ones) when it names none.

Refused, with the reason, where an export cannot compute what the model computes:

- ONNX files (any batch and sequence length) of Funnel, CANINE and Longformer, whose forward fixes Python values
  from the sequence length or the data (`_DYNAMIC_SHAPE_REFUSALS`); static traces (TorchScript, Neuron) serve them.
  A Longformer trace takes the global-attention path: give at least one token global attention (as its heads do);
- static traces of YOSO, whose attention is a Python ``autograd.Function``; ONNX inlines it;
- Nystromformer with fewer landmarks than segment tokens, which Transformers itself fails to run on padded rows.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter_core.architectures.llm import model_config_fields
from exporter_core.config import TextEncoderOnnxConfig
from exporter_core.errors import UnsupportedFeatureError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from exporter_core.dummy_inputs import DummySpec
    from exporter_core.plan import ExportPlan

__all__ = ["HEAD_MAPPINGS", "TINY_FIELDS", "TextEncoderFamilyOnnxConfig"]

#: Feature -> the name of the Auto mapping (``transformers.models.auto.modeling_auto``) listing the types with it.
HEAD_MAPPINGS: Mapping[str, str] = {
    "default": "MODEL_MAPPING_NAMES",
    "masked-lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "sequence-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "multiple-choice": "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "question-answering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
}

#: Tiny test values, each set under every one of its names the config class has as a field of its own.
TINY_FIELDS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("vocab_size",), 99),
    (("hidden_size", "d_model", "pooler_hidden_size"), 32),
    (("num_hidden_layers",), 2),
    (("num_attention_heads", "n_head"), 4),
    (("head_dim", "d_head"), 8),
    (("intermediate_size", "d_inner"), 37),
    (("max_position_embeddings",), 64),
    (("input_embedding_size", "output_embedding_size", "entity_emb_size"), 16),
    (("shape_embed_dim", "pronunciation_embed_dim"), 16),
    (("shape_vocab_size", "pronunciation_vocab_size", "entity_vocab_size", "num_hash_buckets"), 61),
)

#: Special ids a tiny vocabulary keeps (those of `exporter_core.testing.SPECIAL_TOKENS`), for fields whose default
#: lies outside it.
_TINY_SPECIAL_IDS: Mapping[str, int] = {
    "pad_token_id": 0,
    "bos_token_id": 2,
    "cls_token_id": 2,
    "eos_token_id": 3,
    "sep_token_id": 3,
    "mask_token_id": 4,
}

#: Per model type, tiny sizes that differ from the derived ones (each with its reason).
_TINY_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    # Released DeBERTa checkpoints use disentangled relative attention (content-to-position both ways) without
    # absolute positions; the config's default has neither.
    "deberta": {"relative_attention": True, "pos_att_type": ["c2p", "p2c"], "position_biased_input": False},
    "deberta-v2": {
        "relative_attention": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "position_buckets": 16,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
    },
    # One global and one sliding-window layer, with a window shorter than the validated rows.
    "modernbert": {"layer_types": ["full_attention", "sliding_attention"], "local_attention": 4},
    # ESM's config has no pad or mask id by default (its tokenizer brings them); its positions count from the pad id.
    "esm": {"pad_token_id": 1, "mask_token_id": 4},
    # Released ERNIE 3.0 checkpoints embed a task id.
    "ernie": {"use_task_id": True},
    # Two languages, so that the chosen adapter matters.
    "xmod": {"languages": ["en_XX", "de_DE"]},
    # LayoutLMv3 splits the hidden size into 4 coordinate and 2 shape embeddings: 4 x 6 + 2 x 4 = 32; a 16-pixel
    # page in 4-pixel patches.
    "layoutlmv3": {"coordinate_size": 6, "shape_size": 4, "input_size": 16, "patch_size": 4},
    # MarkupLM: XPath units of a small depth and vocabulary, their padding ids inside it.
    "markuplm": {
        "max_depth": 4,
        "xpath_unit_hidden_size": 8,
        "max_xpath_tag_unit_embeddings": 16,
        "max_xpath_subs_unit_embeddings": 16,
        "tag_pad_id": 15,
        "subs_pad_id": 15,
    },
    # Funnel: two blocks of one layer (one pooling step), one decoder layer. Its Auto mapping lists two classes
    # (with and without the decoder); a checkpoint names its own, as saved ones do.
    "funnel": {"block_sizes": [1, 1], "num_decoder_layers": 1, "architectures": ["FunnelModel"]},
    # A window shorter than the validated rows, so that tokens fall out of it.
    "longformer": {"attention_window": 4},
    # CANINE reads code points: a tiny model keeps its hashing, downsampling and local attention, shrunk.
    "canine": {"num_hash_functions": 4, "local_transformer_stride": 4},
    # As many landmarks as segment tokens: exact attention, the one Nystromformer mode Transformers 5 runs with a
    # mask (`_model_refusal`).
    "nystromformer": {"num_landmarks": 4, "segment_means_seq_len": 4, "conv_kernel_size": 3},
}

#: Per model type, every input in forward order, where the type takes more than ids, mask and token types.
_INPUT_ORDER: Mapping[str, tuple[str, ...]] = {
    "ernie": ("input_ids", "attention_mask", "token_type_ids", "task_type_ids"),
    "roc_bert": ("input_ids", "input_shape_ids", "input_pronunciation_ids", "attention_mask", "token_type_ids"),
    "markuplm": ("input_ids", "xpath_tags_seq", "xpath_subs_seq", "attention_mask", "token_type_ids"),
    "layoutlmv3": ("input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values"),
    "longformer": ("input_ids", "attention_mask", "global_attention_mask", "token_type_ids"),
    "luke": (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "entity_ids",
        "entity_attention_mask",
        "entity_token_type_ids",
        "entity_position_ids",
    ),
}
#: Per model type, why a graph with dynamic axes cannot compute what the model computes. The ONNX backend, whose files
#: take any batch and sequence length, refuses these types with the reason (`check_opset`, the hook only it calls);
#: the static-shape backends trace one shape and serve them.
_DYNAMIC_SHAPE_REFUSALS: Mapping[str, str] = {
    "funnel": (
        "Funnel's relative-shift attention builds its relative positions from Python lists over the sequence length "
        "(Transformers keeps them Python ints on purpose), so the graph holds the traced length's positions and "
        "torch.export refuses a dynamic sequence axis"
    ),
    "canine": (
        "CANINE's local attention loops in Python over chunks of the sequence and its upsampling repeats the last "
        "molecule (length mod downsampling_rate) times, both fixed at the traced length, so torch.export refuses a "
        "dynamic sequence axis"
    ),
    "longformer": (
        "Longformer decides in Python whether any token of the batch has global attention (`.item()` on the global "
        "attention mask) and gathers the global tokens with data-dependent shapes, which torch.export cannot capture; "
        "a trace would also fix the window padding branch of the traced length"
    ),
}
_TEXT_ONLY = ("input_ids", "attention_mask", "token_type_ids")

#: Types that read ``token_type_ids`` without a token-type embedding (Funnel builds its attention structure from
#: them), so keep the input whatever ``type_vocab_size`` says.
_TOKEN_TYPES_ALWAYS = frozenset({"funnel"})

#: Inputs laid out like ``input_ids`` (batch, sequence), made from the mask by `_per_token_ids`.
_PER_TOKEN: Mapping[str, str] = {
    # input name -> the config field giving the number of ids it takes
    "task_type_ids": "task_type_vocab_size",
    "input_shape_ids": "shape_vocab_size",
    "input_pronunciation_ids": "pronunciation_vocab_size",
}
#: Code points dummy text draws from when the model has no vocabulary (CANINE): Latin-1.
_CODE_POINTS = 256
#: Token positions per LUKE entity in dummies. LUKE's tokenizer pads every mention to one length (30), so the
#: axis is not padded like a sequence: dummies of every shape keep one length.
_MENTION_LENGTH = 2
_ENTITY_INPUTS = ("entity_ids", "entity_attention_mask", "entity_token_type_ids", "entity_position_ids")


class TextEncoderFamilyOnnxConfig(TextEncoderOnnxConfig):
    """A text encoder with BERT's heads; the features, inputs and tiny sizes come from its model type."""

    features: ClassVar[tuple[str, ...]] = tuple(HEAD_MAPPINGS)

    def __init__(self, config: PretrainedConfig, task: str = "default", patching_specs: Any = None) -> None:
        reason = self._model_refusal(config)
        if reason is not None:
            raise UnsupportedFeatureError(f"{config.model_type} {task}: {reason}")
        super().__init__(config, task=task, patching_specs=patching_specs)

    @staticmethod
    def _model_refusal(config: PretrainedConfig) -> str | None:
        """Why no backend can export `config`'s model faithfully, or None."""
        if config.model_type == "nystromformer" and config.num_landmarks != config.segment_means_seq_len:
            return (
                f"with {config.num_landmarks} landmarks for segments of {config.segment_means_seq_len} tokens "
                "(the approximate attention of the released checkpoints) the model takes exactly "
                f"{config.segment_means_seq_len} tokens, so shorter texts must be padded, and on padded rows "
                "Transformers' Nystromformer adds the (sequence x sequence) mask to the (landmarks x sequence) scores "
                "and fails in PyTorch itself; only num_landmarks == segment_means_seq_len (exact attention) runs"
            )
        return None

    def export_plan(self, model: Any, preprocessor: Any = None) -> ExportPlan:
        """The one-part plan; refused by static-trace backends for YOSO, whose expectation kernel is Python."""
        plan = super().export_plan(model, preprocessor)
        if self.model_view.model_type == "yoso" and getattr(self._config, "use_expectation", False):
            plan.static_trace_refusal = plan.static_trace_refusal or (
                "yoso's expected-LSH attention is a Python autograd.Function (YosoCumulation), which a TorchScript "
                "archive cannot hold; use the onnx backend"
            )
        return plan

    @classmethod
    def supported_features(cls, model_type: str) -> tuple[str, ...]:
        """`features` narrowed to the heads Transformers has for `model_type`."""
        from transformers.models.auto import modeling_auto

        return tuple(f for f in cls.features if model_type in getattr(modeling_auto, HEAD_MAPPINGS[f]))

    @classmethod
    def tiny_sizes(cls, model_type: str) -> Mapping[str, Any]:
        """The model type's own size fields shrunk (`TINY_FIELDS`), special ids inside the tiny vocabulary, then
        the class's `tiny_config` and the per-type overrides."""
        fields = model_config_fields(model_type)
        sizes = {name: value for names, value in TINY_FIELDS for name in names if name in fields}
        vocab = sizes.get("vocab_size", TINY_FIELDS[0][1])
        for name, tiny_id in _TINY_SPECIAL_IDS.items():
            default = fields.get(name)
            if isinstance(default, int) and default >= vocab:
                sizes[name] = tiny_id
        sizes.update(cls.tiny_config)
        sizes.update(_TINY_OVERRIDES.get(model_type, {}))
        return sizes

    # -- inputs ---------------------------------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Inputs in forward order: the type's declared ones, token types only where the checkpoint has several."""
        model_type = self.model_view.model_type
        names = _INPUT_ORDER.get(model_type, _TEXT_ONLY)
        config = self._config
        keep_token_types = model_type in _TOKEN_TYPES_ALWAYS or int(getattr(config, "type_vocab_size", 0) or 0) > 1
        if not keep_token_types:
            names = tuple(n for n in names if n != "token_type_ids")
        if not getattr(config, "use_task_id", True) or (model_type == "ernie" and self.task == "multiple-choice"):
            # ErnieForMultipleChoice does not flatten task ids with the choices (it fails on them): task 0 is used.
            names = tuple(n for n in names if n != "task_type_ids")
        return names

    @property
    def inputs(self) -> Mapping[str, Mapping[int, str]]:
        """Token inputs over (batch, sequence), entity inputs over (batch, entity_sequence), the page image over
        batch; multiple-choice inserts a choice axis after the batch."""
        choice = self.task == "multiple-choice"
        axes: OrderedDict[str, dict[int, str]] = OrderedDict()
        for name in self.input_names:
            if name == "pixel_values":
                names = ["batch"]
            elif name in _ENTITY_INPUTS:
                names = ["batch", "entity_sequence"] + (["mention"] if name == "entity_position_ids" else [])
            else:
                names = ["batch", "sequence"]
            if choice:
                names.insert(1, "choice")
            axes[name] = dict(enumerate(names))
        return axes

    def dummy_arrays(self, preprocessor: Any, spec: DummySpec) -> dict[str, np.ndarray]:
        """Text arrays as for BERT (bbox included), then each extra input, random but valid for the model."""
        names = list(self.inputs)
        config = self._config
        if getattr(config, "vocab_size", None) is None and getattr(preprocessor, "tokenizer", preprocessor) is None:
            # CANINE reads Unicode code points, not a vocabulary: dummies without a tokenizer are Latin-1 ones.
            config = copy.copy(config)
            config.vocab_size = _CODE_POINTS
        arrays = self._base_arrays(config, preprocessor, spec)
        mask = arrays["attention_mask"]
        rng = np.random.default_rng(spec.seed + 7)
        for name, field in _PER_TOKEN.items():
            if name in names:
                arrays[name] = rng.integers(0, int(getattr(config, field)), size=mask.shape, dtype=np.int64) * mask
        if "global_attention_mask" in names:
            # Global attention on the first token, as Longformer's classification recipes put it.
            arrays["global_attention_mask"] = np.zeros_like(mask)
            arrays["global_attention_mask"][..., 0] = 1
        if "xpath_tags_seq" in names:
            depth = int(config.max_depth)
            for name, field in (
                ("xpath_tags_seq", "max_xpath_tag_unit_embeddings"),
                ("xpath_subs_seq", "max_xpath_subs_unit_embeddings"),
            ):
                arrays[name] = rng.integers(0, int(getattr(config, field)), size=(*mask.shape, depth), dtype=np.int64)
        if "pixel_values" in names:
            from exporter_core.dummy_inputs import image_arrays

            size = int(config.input_size)
            arrays["pixel_values"] = image_arrays(spec, None, size, size, int(config.num_channels))
        if "entity_ids" in names:
            arrays.update(self._entity_arrays(mask, rng))
        return {name: arrays[name] for name in names}

    def check_opset(self, opset: int) -> None:
        """Refuse the types a graph with dynamic axes cannot serve (`_DYNAMIC_SHAPE_REFUSALS`), then the base checks."""
        model_type = self.model_view.model_type
        reason = _DYNAMIC_SHAPE_REFUSALS.get(model_type)
        if reason is not None:
            raise UnsupportedFeatureError(
                f"{model_type} cannot be exported to a file that takes any sequence length: {reason}; export it with "
                "a static-shape backend (torchscript, neuron), which traces one shape and pads shorter inputs"
            )
        super().check_opset(opset)

    def _base_arrays(self, config: Any, preprocessor: Any, spec: DummySpec) -> dict[str, np.ndarray]:
        """The base class's arrays (text, ``bbox``) made with `config` in place of the model config."""
        saved, self._config = self._config, config
        try:
            return super().dummy_arrays(preprocessor, spec)
        finally:
            self._config = saved

    def _entity_arrays(self, mask: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """LUKE's entities: a third as many as tokens, each a mention of up to `_MENTION_LENGTH` tokens within each
        row's real tokens; the last entity of shorter rows is padding (mask 0, positions -1)."""
        rows_shape, length = mask.shape[:-1], mask.shape[-1]
        count = max(1, length // 3)
        flat_mask = mask.reshape(-1, length)
        rows = flat_mask.shape[0]
        ids = rng.integers(1, int(self._config.entity_vocab_size), size=(rows, count), dtype=np.int64)
        entity_mask = np.ones((rows, count), dtype=np.int64)
        positions = np.full((rows, count, _MENTION_LENGTH), -1, dtype=np.int64)
        for row in range(rows):
            real = int(flat_mask[row].sum())
            if real < length and count > 1:
                entity_mask[row, -1] = 0
            for entity in range(count):
                if not entity_mask[row, entity]:
                    continue
                start = int(rng.integers(0, real))
                span = min(1 + entity % _MENTION_LENGTH, real - start)
                positions[row, entity, :span] = np.arange(start, start + span)
        ids = ids * entity_mask
        shaped = {
            "entity_ids": ids,
            "entity_attention_mask": entity_mask,
            "entity_token_type_ids": np.zeros_like(ids),
            "entity_position_ids": positions,
        }
        return {name: value.reshape(*rows_shape, *value.shape[1:]) for name, value in shaped.items()}

    # -- outputs --------------------------------------------------------------------------------------------
    @property
    def outputs(self) -> Mapping[str, Mapping[int, str]]:
        """The task's outputs; LUKE adds its entity states, LayoutLMv3's token outputs also cover the patches."""
        outputs = OrderedDict((name, dict(axes)) for name, axes in super().outputs.items())
        model_type = self.model_view.model_type
        if model_type == "luke" and self.task in ("default", "masked-lm"):
            name = "entity_last_hidden_state" if self.task == "default" else "entity_logits"
            outputs[name] = {0: "batch", 1: "entity_sequence"}
        if self.task == "default" and "FunnelBaseModel" in (getattr(self._config, "architectures", None) or ()):
            # Funnel's encoder-only checkpoints return the last block's pooled sequence, not one state per token.
            outputs["last_hidden_state"][1] = "pooled_sequence"
        if model_type == "layoutlmv3" and self.task in ("default", "question-answering"):
            # The page's patches (and their [CLS]) follow the text in the encoder's output.
            for axes in outputs.values():
                axes[1] = "text_and_patches"
        return outputs

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        """No cache; X-MOD's adapters set to its default language (the first it was trained with when unset);
        Longformer's export switch."""
        override = dict(super().values_override or {})
        if self.model_view.model_type == "longformer":
            # Transformers' own switch for export: overlapping chunks by `unfold` instead of `as_strided` over a
            # size computed with `.item()` (the same chunks).
            override["onnx_export"] = True
        languages = getattr(self._config, "languages", None)
        if languages and getattr(self._config, "default_language", None) is None:
            override["default_language"] = str(languages[0])
        return override or None
