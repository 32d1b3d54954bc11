"""One normalised view of a Transformers config: the single place that knows attribute aliases and id precedences.

Transformers names the same quantity differently per model (``hidden_size``, ``n_embd``, ``d_model``, ``dim``...)
and the ids a generation needs live in several places (tokenizer, generation config, model config). Every
reader in exporter goes through `ModelConfigView` so that each rule is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ALIASES", "SPECIAL_TOKEN_NAMES", "ModelConfigView", "first_int"]

#: Attribute names per quantity, in the order they are looked up.
ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim", "emb_dim", "embed_dim"),
    "num_layers": ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "decoder_layers"),
    "num_attention_heads": ("num_attention_heads", "num_heads", "n_head", "n_heads", "decoder_attention_heads"),
    "encoder_layers": ("encoder_layers", "num_layers", "num_hidden_layers"),
    "decoder_layers": ("decoder_layers", "num_decoder_layers"),
    "encoder_attention_heads": ("encoder_attention_heads", "num_heads", "num_attention_heads"),
    "decoder_attention_heads": ("decoder_attention_heads", "num_decoder_heads"),
    "max_positions": ("max_position_embeddings", "n_positions", "max_positions", "max_seq_len"),
    "vocab_size": ("vocab_size", "n_vocab"),
}

#: Special token ids a config may name; random dummy text avoids all of them.
SPECIAL_TOKEN_NAMES = (
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "cls_token_id",
    "unk_token_id",
    "decoder_start_token_id",
)


def first_int(sources: Sequence[Any], names: Sequence[str], *, minimum: int | None = None) -> int | None:
    """The first attribute of `names` that is an int (not a bool, at least `minimum`) on the first source having one."""
    for source in sources:
        if source is None:
            continue
        for name in names:
            value = getattr(source, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum):
                return value
    return None


class ModelConfigView:
    """Sizes and special ids of a model, read from its config (and tokenizer / generation config for ids)."""

    def __init__(self, config: Any, *, tokenizer: Any = None, generation_config: Any = None) -> None:
        self.config = config
        self.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        self.generation_config = generation_config

    def _size(self, quantity: str) -> int:
        value = first_int([self.config], ALIASES[quantity], minimum=1)
        if value is None:
            names = ", ".join(ALIASES[quantity])
            raise AttributeError(
                f"the {self.model_type} config names no {quantity.replace('_', ' ')} (looked for {names})"
            )
        return value

    @property
    def model_type(self) -> str:
        """The Transformers model type ("bert", "llama", ...)."""
        return str(getattr(self.config, "model_type", "model"))

    # -- sizes ----------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Width of the hidden states."""
        return self._size("hidden_size")

    @property
    def num_layers(self) -> int:
        """Number of (decoder) layers."""
        return self._size("num_layers")

    @property
    def num_attention_heads(self) -> int:
        """Number of attention heads (of queries)."""
        return self._size("num_attention_heads")

    @property
    def num_key_value_heads(self) -> int:
        """Heads of the cached keys and values (fewer than query heads with grouped or multi-query attention)."""
        # Multi-query attention caches one head whatever else the config says (Falcon keeps a num_kv_heads that
        # only its new decoder architecture reads).
        if getattr(self.config, "multi_query", False) and not getattr(self.config, "new_decoder_architecture", False):
            return 1
        value = first_int([self.config], ("num_key_value_heads", "num_kv_heads"), minimum=1)
        return value if value is not None else self.num_attention_heads

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        value = first_int([self.config], ("head_dim", "d_kv", "attention_head_size"), minimum=1)
        return value if value is not None else self.hidden_size // self.num_attention_heads

    @property
    def decoder_head_dim(self) -> int:
        """Size of one head of an encoder-decoder's (or a decoder used alone's) decoder attentions."""
        value = first_int([self.config], ("head_dim", "d_kv", "attention_head_size"), minimum=1)
        return value if value is not None else self.hidden_size // self.decoder_attention_heads

    @property
    def encoder_layers(self) -> int:
        """Encoder layers of an encoder-decoder."""
        return self._size("encoder_layers")

    @property
    def decoder_layers(self) -> int:
        """Decoder layers of an encoder-decoder (the encoder's count when the config names none)."""
        value = first_int([self.config], ALIASES["decoder_layers"], minimum=1)
        return value if value is not None else self.encoder_layers

    @property
    def encoder_attention_heads(self) -> int:
        """Heads of the encoder's attentions."""
        return self._size("encoder_attention_heads")

    @property
    def decoder_attention_heads(self) -> int:
        """Heads of the decoder's attentions (the encoder's count when the config names none)."""
        value = first_int([self.config], ALIASES["decoder_attention_heads"], minimum=1)
        return value if value is not None else self.encoder_attention_heads

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the position embeddings cover, or None when unbounded (relative positions)."""
        return first_int([self.config], ALIASES["max_positions"], minimum=1)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size."""
        return self._size("vocab_size")

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the images the model takes, from ``image_size`` (an int or a pair), the config's own or
        else its ``vision_config``'s (text/image dual encoders); None without one."""
        size = getattr(self.config, "image_size", None)
        if size is None:
            size = getattr(getattr(self.config, "vision_config", None), "image_size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size, size
        if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return int(size[0]), int(size[1])
        return None

    @property
    def num_channels(self) -> int | None:
        """Channels of the images the model takes (the config's, else its ``vision_config``'s); None when neither
        names one."""
        return first_int([self.config, getattr(self.config, "vision_config", None)], ("num_channels",), minimum=1)

    @property
    def decoder_vocab_size(self) -> int:
        """Vocabulary of the decoder (Marian may have its own)."""
        value = first_int([self.config], ("decoder_vocab_size", "vocab_size"), minimum=1)
        return value if value is not None else 100

    # -- special ids -------------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int | None:
        """Padding id: the tokenizer's, else the model config's; None when neither names one."""
        return first_int([self.tokenizer, self.config], ("pad_token_id",), minimum=0)

    def pad_token_id_or(self, default: int = 0) -> int:
        """`pad_token_id`, or `default` when nothing names one (inputs must still be filled with something)."""
        value = self.pad_token_id
        return default if value is None else value

    @property
    def generation_pad_token_id(self) -> int:
        """The id ``generate`` pads finished rows with: the generation config's, else the model config's, else the
        first end-of-sequence id, else 0."""
        value = first_int([self.generation_config, self.config], ("pad_token_id",), minimum=0)
        if value is not None:
            return value
        eos = self.eos_token_ids
        return eos[0] if eos else 0

    @property
    def single_eos_token_id(self) -> int | None:
        """The model config's end-of-sequence id when it names exactly one, else None."""
        value = getattr(self.config, "eos_token_id", None)
        if isinstance(value, (list, tuple)):
            value = value[0] if len(value) == 1 else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """End-of-sequence ids: the generation config's, else the model config's."""
        for source in (self.generation_config, self.config):
            value = getattr(source, "eos_token_id", None)
            if value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            return tuple(int(v) for v in values)
        return ()

    @property
    def decoder_start_token_id(self) -> int:
        """The token ``generate`` starts every decoded sequence with.

        ``decoder_start_token_id`` (generation config, then model config), else ``bos_token_id`` (likewise): the
        precedence ``generate`` applies. Where neither is set (``generate`` would refuse), the pad id, else 0.
        """
        sources = [self.generation_config, self.config]
        for names in (("decoder_start_token_id",), ("bos_token_id",), ("pad_token_id",)):
            value = first_int(sources, names, minimum=0)
            if value is not None:
                return value
        return 0

    @property
    def special_token_ids(self) -> set[int]:
        """Every special token id the model config names (`SPECIAL_TOKEN_NAMES`; each eos id of a list)."""
        found = set()
        for name in SPECIAL_TOKEN_NAMES:
            value = getattr(self.config, name, None)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
                    found.add(item)
        return found
