"""A small public test kit: tiny random-weight checkpoints built offline.

`build_tiny_checkpoint("bert", "masked-lm", folder)` writes config, weights and (for text models) a small
WordLevel tokenizer or (for vision models) an image processor into `folder` with `save_pretrained`, so
preprocessor-driven code runs with no hub.
The sizes are the classic test sizes (hidden 32, 2 layers, 4 heads, intermediate 37, vocab 99).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

__all__ = [
    "TINY_CONFIGS",
    "build_tiny_checkpoint",
    "build_tiny_image_processor",
    "build_tiny_tokenizer",
    "tiny_model_config",
]

_TEXT = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 37, "max_position_embeddings": 64}
_SEQ2SEQ = {"vocab_size": 99, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 37, "decoder_ffn_dim": 37, "max_position_embeddings": 64,
            "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}
_VISION = {"image_size": 30, "patch_size": 2, "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 37}

#: model_type -> keyword arguments of `AutoConfig.for_model` giving a tiny model that runs (Transformers 5.24).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "albert": {**_TEXT, "embedding_size": 16},
    "bert": dict(_TEXT),
    "big_bird": {**_TEXT, "attention_type": "original_full"},
    "camembert": dict(_TEXT),
    "convbert": {**_TEXT, "embedding_size": 32, "head_ratio": 2, "conv_kernel_size": 9},
    "data2vec-text": dict(_TEXT),
    "distilbert": {"vocab_size": 99, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37, "max_position_embeddings": 64},
    "electra": {**_TEXT, "embedding_size": 16},
    "flaubert": {"vocab_size": 99, "emb_dim": 32, "n_layers": 2, "n_heads": 4, "max_position_embeddings": 64},
    "ibert": {**_TEXT, "quant_mode": False},
    "layoutlm": dict(_TEXT),
    "mobilebert": {**_TEXT, "embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16},
    "roberta": dict(_TEXT),
    "roformer": {**_TEXT, "embedding_size": 32},
    "squeezebert": {**_TEXT, "intermediate_size": 32, "embedding_size": 32, "q_groups": 2, "k_groups": 2, "v_groups": 2,
                    "post_attention_groups": 2, "intermediate_groups": 2, "output_groups": 2},
    "xlm": {"vocab_size": 99, "emb_dim": 32, "n_layers": 2, "n_heads": 4, "max_position_embeddings": 64},
    "xlm-roberta": dict(_TEXT),
    "xlm-roberta-xl": dict(_TEXT),
    "gpt2": {"vocab_size": 99, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 64,
             "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0},
    "gpt_neo": {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 37,
                "max_position_embeddings": 64, "attention_types": [[["global", "local"], 1]], "window_size": 8,
                "bos_token_id": 0, "eos_token_id": 0},
    "gptj": {"vocab_size": 99, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 64,
             "rotary_dim": 4, "bos_token_id": 0, "eos_token_id": 0},
    "bart": dict(_SEQ2SEQ),
    "mbart": dict(_SEQ2SEQ),
    "plbart": dict(_SEQ2SEQ),
    "blenderbot": dict(_SEQ2SEQ),
    "blenderbot-small": dict(_SEQ2SEQ),
    "m2m_100": dict(_SEQ2SEQ),
    "marian": {**_SEQ2SEQ, "decoder_start_token_id": 1, "decoder_vocab_size": 99},
    "bigbird_pegasus": {**_SEQ2SEQ, "attention_type": "original_full"},
    "t5": {"vocab_size": 99, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4,
           "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0},
    "vit": dict(_VISION),
    "deit": dict(_VISION),
    "beit": dict(_VISION),
    "data2vec-vision": dict(_VISION),
    "perceiver": {"num_latents": 8, "d_latents": 32, "d_model": 32, "num_blocks": 1, "num_self_attends_per_block": 2,
                  "num_self_attention_heads": 4, "num_cross_attention_heads": 4, "vocab_size": 262,
                  "max_position_embeddings": 64, "image_size": 30, "num_labels": 3},
}

#: Special tokens of the tiny tokenizer, with their ids.
SPECIAL_TOKENS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}


def tiny_model_config(model_type: str, **overrides: Any) -> Any:
    """`AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type], **overrides)`."""
    from transformers import AutoConfig

    kwargs = copy.deepcopy(TINY_CONFIGS[model_type])
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def build_tiny_tokenizer(vocab_size: int = 99) -> Any:
    """A WordLevel tokenizer over the dummy-text words with BERT-style special tokens, ids below `vocab_size`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from exporter_core.dummy_inputs import _WORDS

    vocab = dict(SPECIAL_TOKENS)
    for word in _WORDS + ["hello", "world", "using", "with", "runtime", "is", "this"]:
        if word not in vocab and len(vocab) < vocab_size:
            vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_tiny_image_processor(height: int, width: int) -> Any:
    """A `ViTImageProcessor` resizing to (`height`, `width`) and normalising; needs Pillow, like every image processor."""
    import transformers

    # The Pillow flavour is what ViTImageProcessor falls back to without torchvision (minus the warning).
    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return cls(size={"height": height, "width": width}, image_mean=[0.45, 0.5, 0.55], image_std=[0.25, 0.2, 0.3])


def build_tiny_checkpoint(
    model_type: str,
    feature: str,
    folder: str | Path,
    *,
    with_tokenizer: bool = False,
    with_image_processor: bool = False,
    seed: int = 0,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    """Save a random-weight tiny model for (`model_type`, `feature`) into `folder` and return the folder.

    `with_image_processor` saves an image processor sized to the model's ``image_size`` (preprocessor_config.json).
    """
    import torch

    from exporter_core.loading import model_class_for
    from exporter_core.plugins import load_architecture

    folder = Path(folder)
    config = tiny_model_config(model_type, **(config_overrides or {}))
    # Every model type of TINY_CONFIGS can be built, with or without its architecture plugin installed;
    # a plugin only adds its model-class overrides.
    cls = model_class_for(feature, load_architecture(model_type))
    torch.manual_seed(seed)
    if hasattr(cls, "from_config"):
        model = cls.from_config(config)
    else:
        model = cls(config)
    model.eval()
    model.save_pretrained(str(folder))
    if with_tokenizer:
        build_tiny_tokenizer(int(getattr(config, "vocab_size", 99))).save_pretrained(str(folder))
    if with_image_processor:
        from exporter_core.architectures.vision import image_size_of

        build_tiny_image_processor(*image_size_of(config)).save_pretrained(str(folder))
    return folder
