"""CacheLayout: flat past/present names and axes, and the round trip through Transformers' cache objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from exporter_core.cache import CacheLayout, LayerCache, past_name, returned_cache
from exporter_core.testing import tiny_model_config


def test_decoder_names_and_axes() -> None:
    layout = CacheLayout.uniform(2, 4, 8)
    assert layout.names("past_key_values") == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
    ]
    assert layout.names("present") == ["present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert list(layout.past_inputs()) == layout.names("past_key_values")
    assert all(axes == {0: "batch", 2: "past_sequence"} for axes in layout.past_inputs().values())
    assert all(axes == {0: "batch", 2: "past_sequence + sequence"} for axes in layout.present_outputs().values())
    assert all(axes == {0: "batch", 2: "sequence"} for axes in layout.present_outputs(with_past=False).values())
    assert layout.names("past_key_values", cross=False) == layout.names("past_key_values"), "no cross-attention to drop"


def test_encoder_decoder_names_and_axes() -> None:
    layout = CacheLayout.uniform(2, 4, 8, cross_attention=True)
    assert layout.names("present")[:4] == [
        "present.0.decoder.key",
        "present.0.decoder.value",
        "present.0.encoder.key",
        "present.0.encoder.value",
    ]
    assert len(layout.names("present")) == 8
    assert layout.names("present", cross=False) == [
        "present.0.decoder.key",
        "present.0.decoder.value",
        "present.1.decoder.key",
        "present.1.decoder.value",
    ]
    past = layout.past_inputs()
    assert past["past_key_values.1.decoder.value"] == {0: "batch", 2: "past_decoder_sequence"}
    assert past["past_key_values.1.encoder.key"] == {0: "batch", 2: "encoder_sequence"}
    present = layout.present_outputs(cross=False)
    assert set(present) == set(layout.names("present", cross=False))
    assert present["present.0.decoder.key"] == {0: "batch", 2: "past_decoder_sequence + decoder_sequence"}
    first_step = layout.present_outputs(with_past=False)
    assert first_step["present.0.decoder.key"] == {0: "batch", 2: "decoder_sequence"}
    assert first_step["present.0.encoder.key"] == {0: "batch", 2: "encoder_sequence"}


def test_layers_may_differ() -> None:
    layout = CacheLayout((LayerCache(2, 8), LayerCache(4, 4), LayerCache(1, 16, sliding_window=4)))
    assert layout.num_layers == 3
    arrays = layout.past_arrays(3, 5)
    assert [arrays[f"past_key_values.{i}.key"].shape for i in range(3)] == [(3, 2, 5, 8), (3, 4, 5, 4), (3, 1, 5, 16)]
    assert arrays["past_key_values.2.value"].dtype == np.float32
    # Seeded: the same seed gives the same tensors, another seed others.
    again, other = layout.past_arrays(3, 5), layout.past_arrays(3, 5, seed=1)
    assert np.array_equal(arrays["past_key_values.1.key"], again["past_key_values.1.key"])
    assert not np.array_equal(arrays["past_key_values.1.key"], other["past_key_values.1.key"])
    cross = CacheLayout((LayerCache(2, 8), LayerCache(4, 4)), cross_attention=True)
    shapes = {name: value.shape for name, value in cross.past_arrays(1, 3, encoder_length=7).items()}
    assert shapes["past_key_values.1.decoder.key"] == (1, 4, 3, 4)
    assert shapes["past_key_values.0.encoder.value"] == (1, 2, 7, 8)
    assert not [n for n in cross.past_arrays(1, 3, encoder_length=7, cross=False) if ".encoder." in n]


def test_keys_and_values_may_differ_in_size() -> None:
    """Multi-head latent attention caches a latent as its keys and a rotary key as its values: other widths."""
    layout = CacheLayout((LayerCache(1, 16, value_head_dim=8), LayerCache(2, 4)))
    arrays = layout.past_arrays(3, 5)
    assert arrays["past_key_values.0.key"].shape == (3, 1, 5, 16)
    assert arrays["past_key_values.0.value"].shape == (3, 1, 5, 8)
    assert arrays["past_key_values.1.value"].shape == (3, 2, 5, 4)
    shapes = {name: ["batch", *value.shape[1:2], "past_sequence", value.shape[3]] for name, value in arrays.items()}
    assert CacheLayout.from_past_shapes(shapes) == layout


def test_feed_back_renames_presents_to_the_next_pasts() -> None:
    layout = CacheLayout.uniform(1, 1, 1)
    outputs = {"logits": 1, "present.0.key": 2, "present.0.value": 3}
    assert layout.feed_back(outputs) == {"past_key_values.0.key": 2, "past_key_values.0.value": 3}
    assert layout.feed_back(outputs, ["present.0.value"]) == {"past_key_values.0.value": 3}
    assert past_name("present.3.encoder.key") == "past_key_values.3.encoder.key"
    with pytest.raises(ValueError, match="not a present"):
        past_name("logits")
    assert CacheLayout.is_cache_name("past_key_values.0.key") and CacheLayout.is_cache_name("present.1.value")
    assert not CacheLayout.is_cache_name("presents") and not CacheLayout.is_cache_name("input_ids")


def test_layout_read_back_from_declared_past_shapes() -> None:
    layout = CacheLayout((LayerCache(2, 8), LayerCache(4, 4)))
    shapes: dict[str, list[Any]] = {
        f"past_key_values.{i}.{kind}": ["batch", layer.num_heads, "past_sequence", layer.head_dim]
        for i, layer in enumerate(layout.layers)
        for kind in ("key", "value")
    }
    assert CacheLayout.from_past_shapes({"input_ids": ["batch", "sequence"], **shapes}) == layout
    assert CacheLayout.from_past_shapes({"input_ids": ["batch", "sequence"]}).layers == ()
    with pytest.raises(ValueError, match=r"past_key_values\.1\.key has no fixed head count"):
        CacheLayout.from_past_shapes({**shapes, "past_key_values.1.key": ["batch", "heads", "past_sequence", 4]})


def test_returned_cache_reads_either_name() -> None:
    assert returned_cache({"cache": None, "past_key_values": "c"}) == "c"
    assert returned_cache({"cache": "d"}) == "d"
    with pytest.raises(KeyError, match="use_cache=True"):
        returned_cache({"logits": 1})


def _torch(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(value) for name, value in arrays.items()}


def test_decoder_round_trip_through_a_real_gpt2_cache() -> None:
    """Flat past -> DynamicCache -> forward -> flat present: the past comes back first, then the new tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from exporter_core.architectures.decoders import GPT2OnnxConfig, cache_keyword

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_model_config("gpt2", n_head=2)).eval()
    layout = GPT2OnnxConfig.with_past(model.config, task="causal-lm").cache_layout
    assert layout == CacheLayout.uniform(2, 2, 16)
    assert layout.to_cache(None, model.config).get_seq_length() == 0
    past = _torch(layout.past_arrays(2, 3))
    cache = layout.to_cache(past, model.config)
    assert cache.get_seq_length() == 3
    ids = torch.tensor([[5, 6], [7, 8]])
    mask = torch.ones(2, 5, dtype=torch.long)
    # Positions 0 and 1 (not 3 and 4), so that layer 0's new keys depend on nothing but the two tokens.
    with torch.no_grad():
        output = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=torch.arange(2)[None],
            use_cache=True,
            **{cache_keyword(model.config): cache},
        )
    present = dict(zip(layout.names("present"), layout.flatten(output), strict=True))
    assert list(present) == layout.names("present")
    for name, value in present.items():
        assert tuple(value.shape) == (2, 2, 5, 16)
        assert torch.equal(value[:, :, :3], past[past_name(name)]), name
    # The new keys are the model's own: the same tokens without a past give the same layer-0 keys.
    with torch.no_grad():
        fresh = model(input_ids=ids, use_cache=True)
    assert torch.allclose(layout.flatten(fresh)[0], present["present.0.key"][:, :, 3:], atol=1e-6)


def test_encoder_decoder_round_trip_through_a_real_bart_cache() -> None:
    """EncoderDecoderCache both ways: the decoder's keys grow, the encoder's come back unchanged."""
    import torch
    from transformers import AutoModelForSeq2SeqLM
    from transformers.modeling_outputs import BaseModelOutput

    from exporter_core.architectures.decoders import cache_keyword

    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(
        tiny_model_config("bart", decoder_layers=3, decoder_attention_heads=2)
    ).eval()
    layout = CacheLayout.uniform(3, 2, 16, cross_attention=True)
    past = _torch(layout.past_arrays(2, 4, encoder_length=6))
    cache = layout.to_cache(past, model.config)
    assert type(cache).__name__ == "EncoderDecoderCache" and cache.get_seq_length() == 4
    hidden = torch.zeros(2, 6, 32)
    with torch.no_grad():
        output = model(
            decoder_input_ids=torch.tensor([[5], [6]]),
            attention_mask=torch.ones(2, 6, dtype=torch.long),
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            use_cache=True,
            **{cache_keyword(model.config): cache},
        )
    present = dict(zip(layout.names("present"), layout.flatten(output), strict=True))
    assert len(present) == 12
    for name, value in present.items():
        if ".encoder." in name:
            assert torch.equal(value, past[past_name(name)]), name
        else:
            assert tuple(value.shape) == (2, 2, 5, 16)
            assert torch.equal(value[:, :, :4], past[past_name(name)]), name
    decoder_only = layout.flatten(output, cross=False)
    assert len(decoder_only) == 6
    assert all(
        torch.equal(a, present[n]) for a, n in zip(decoder_only, layout.names("present", cross=False), strict=True)
    )
    # Without cross-attention inputs, the cross-attention cache starts empty.
    self_only = layout.to_cache({n: v for n, v in past.items() if ".decoder." in n}, model.config, cross=False)
    assert self_only.self_attention_cache.get_seq_length() == 4
    assert self_only.cross_attention_cache.get_seq_length() == 0
