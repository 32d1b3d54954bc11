"""ModelConfigView: one place for attribute aliases and special-id precedences."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from exporter_core.model_config import ModelConfigView, first_int
from exporter_core.testing import tiny_model_config


def _config(**attributes: Any) -> SimpleNamespace:
    return SimpleNamespace(model_type="toy", **attributes)


@pytest.mark.parametrize(
    ("model_type", "overrides", "hidden", "layers", "heads"),
    [
        ("bert", {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 6}, 48, 3, 6),
        ("gpt2", {"n_embd": 40, "n_layer": 3, "n_head": 5}, 40, 3, 5),
        ("distilbert", {"dim": 36, "n_layers": 3, "n_heads": 3}, 36, 3, 3),
        (
            "gpt_neo",
            {"hidden_size": 24, "num_layers": 1, "num_heads": 2, "attention_types": [[["global"], 1]]},
            24,
            1,
            2,
        ),
        ("flaubert", {"emb_dim": 28, "n_layers": 3, "n_heads": 7}, 28, 3, 7),
    ],
)
def test_sizes_are_read_under_every_alias(
    model_type: str, overrides: dict[str, Any], hidden: int, layers: int, heads: int
) -> None:
    view = ModelConfigView(tiny_model_config(model_type, **overrides))
    assert (view.hidden_size, view.num_layers, view.num_attention_heads) == (hidden, layers, heads)
    assert view.head_dim == hidden // heads
    assert view.num_key_value_heads == heads, "without grouped attention every head caches its keys"
    assert view.model_type == model_type


def test_a_missing_size_names_every_alias_looked_for() -> None:
    with pytest.raises(AttributeError, match=r"toy config names no hidden size .*n_embd, d_model"):
        _ = ModelConfigView(_config(num_attention_heads=2)).hidden_size
    # A bool or a zero is not a size.
    with pytest.raises(AttributeError):
        _ = ModelConfigView(_config(hidden_size=True, n_embd=0)).hidden_size


def test_grouped_and_multi_query_attention_cache_fewer_heads() -> None:
    from transformers import AutoConfig

    llama = AutoConfig.for_model(
        "llama", hidden_size=64, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2, intermediate_size=37
    )
    view = ModelConfigView(llama)
    assert (view.num_attention_heads, view.num_key_value_heads, view.head_dim) == (8, 2, 8)
    for multi_query, kv_heads in ((True, 1), (False, 4)):
        bigcode = AutoConfig.for_model("gpt_bigcode", n_embd=32, n_head=4, n_layer=2, multi_query=multi_query)
        assert ModelConfigView(bigcode).num_key_value_heads == kv_heads
    # A config that says only multi_query (no key/value head count) caches one head.
    assert ModelConfigView(_config(n_head=4, multi_query=True)).num_key_value_heads == 1
    # An explicit head size wins over hidden / heads.
    assert ModelConfigView(_config(hidden_size=64, num_attention_heads=8, head_dim=32)).head_dim == 32


def test_encoder_decoder_sizes() -> None:
    t5 = ModelConfigView(tiny_model_config("t5", num_layers=2, num_decoder_layers=3, num_heads=3, d_kv=16))
    assert (t5.encoder_layers, t5.decoder_layers) == (2, 3)
    assert (t5.encoder_attention_heads, t5.decoder_attention_heads) == (3, 3)
    assert t5.decoder_head_dim == 16, "T5's d_kv, not d_model / heads"
    assert t5.max_positions is None, "relative positions: no limit"
    bart = ModelConfigView(tiny_model_config("bart", encoder_layers=3, decoder_layers=1, decoder_attention_heads=2))
    assert (bart.encoder_layers, bart.decoder_layers, bart.decoder_attention_heads) == (3, 1, 2)
    assert bart.decoder_head_dim == 16, "d_model 32 over the decoder's 2 heads, not the encoder's 4"
    assert bart.max_positions == 64
    # Without decoder-specific names the decoder mirrors the encoder.
    plain = ModelConfigView(_config(encoder_layers=4, encoder_attention_heads=2, d_model=8))
    assert (plain.decoder_layers, plain.decoder_attention_heads, plain.decoder_head_dim) == (4, 2, 4)
    marian = ModelConfigView(tiny_model_config("marian", decoder_vocab_size=77))
    assert (marian.vocab_size, marian.decoder_vocab_size) == (99, 77)


def test_pad_id_comes_from_the_tokenizer_then_the_model_config() -> None:
    config = _config(pad_token_id=5)
    assert ModelConfigView(config, tokenizer=SimpleNamespace(pad_token_id=0)).pad_token_id == 0
    assert ModelConfigView(config, tokenizer=SimpleNamespace(pad_token_id=None)).pad_token_id == 5
    # A processor bundling a tokenizer counts as its tokenizer.
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=3))
    assert ModelConfigView(config, tokenizer=processor).pad_token_id == 3
    nothing = ModelConfigView(_config(pad_token_id=None))
    assert nothing.pad_token_id is None and nothing.pad_token_id_or(7) == 7
    assert ModelConfigView(_config(pad_token_id=-1)).pad_token_id is None, "a negative id is no id"


def test_padding_and_dummies_use_the_same_pad_id(tiny_tokenizer: Any) -> None:
    from exporter_core.dummy_inputs import DummySpec, text_arrays
    from exporter_core.padding import pad_token_id_for

    config = tiny_model_config("bert", pad_token_id=7)
    assert pad_token_id_for(config) == 7
    assert pad_token_id_for(config, tiny_tokenizer) == tiny_tokenizer.pad_token_id == 0
    spec = DummySpec(batch_size=3, sequence_length=9, padded=True)
    for tokenizer, pad in ((None, 7), (tiny_tokenizer, 0)):
        arrays = text_arrays(config, ["input_ids", "attention_mask"], 3, spec, tokenizer)
        padding = arrays["attention_mask"] == 0
        assert padding.any() and (arrays["input_ids"][padding] == pad).all()


def test_decoder_start_follows_generate_s_precedence() -> None:
    generation = SimpleNamespace(decoder_start_token_id=None, bos_token_id=None, pad_token_id=None)
    model = _config(decoder_start_token_id=None, bos_token_id=None, pad_token_id=None)

    def start() -> int:
        return ModelConfigView(model, generation_config=generation).decoder_start_token_id

    assert start() == 0, "nothing set: 0"
    model.pad_token_id = 6
    assert start() == 6
    generation.pad_token_id = 5
    assert start() == 5
    model.bos_token_id = 4
    assert start() == 4, "bos before pad"
    generation.bos_token_id = 3
    assert start() == 3
    model.decoder_start_token_id = 2
    assert start() == 2, "decoder start before bos"
    generation.decoder_start_token_id = 1
    assert start() == 1, "the generation config before the model config"
    assert ModelConfigView(model).decoder_start_token_id == 2


def test_end_of_sequence_and_generate_s_pad() -> None:
    model = _config(eos_token_id=2, pad_token_id=None)
    view = ModelConfigView(model, generation_config=SimpleNamespace(eos_token_id=[7, 8], pad_token_id=None))
    assert view.eos_token_ids == (7, 8)
    assert view.generation_pad_token_id == 7, "no pad anywhere: generate pads with the first eos"
    assert ModelConfigView(model).eos_token_ids == (2,)
    assert ModelConfigView(_config(eos_token_id=None)).generation_pad_token_id == 0
    model.pad_token_id = 1
    assert ModelConfigView(model, generation_config=SimpleNamespace(pad_token_id=4)).generation_pad_token_id == 4
    assert ModelConfigView(model).generation_pad_token_id == 1
    assert ModelConfigView(_config(eos_token_id=[9])).single_eos_token_id == 9
    assert ModelConfigView(_config(eos_token_id=[9, 10])).single_eos_token_id is None


def test_special_ids_cover_every_special_token_the_config_names() -> None:
    config = _config(
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=[2, 11],
        unk_token_id=3,
        sep_token_id=None,
        decoder_start_token_id=12,
        cls_token_id=-1,
    )
    assert ModelConfigView(config).special_token_ids == {0, 1, 2, 3, 11, 12}


def test_image_sizes() -> None:
    assert ModelConfigView(_config(image_size=30, num_channels=1)).image_size == (30, 30)
    assert ModelConfigView(_config(image_size=[24, 32])).image_size == (24, 32)
    assert ModelConfigView(_config(image_size="big")).image_size is None
    assert ModelConfigView(_config()).num_channels is None


def test_first_int_skips_missing_sources_bools_and_small_values() -> None:
    sources = [None, SimpleNamespace(a=True, b=0), SimpleNamespace(a=4)]
    assert first_int(sources, ("a", "b")) == 0
    assert first_int(sources, ("a", "b"), minimum=1) == 4
    assert first_int(sources, ("c",)) is None
