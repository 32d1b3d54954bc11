"""Greedy generation over runners (any backend's): token choice, end of sequence, forced tokens, cache feeding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from exporter_core.cache import CacheLayout
from exporter_core.generation import (
    CausalLMGenerator,
    GreedySettings,
    Seq2SeqGenerator,
    banned_token_ids,
    greedy_loop,
    switched_off_settings,
)
from exporter_core.testing import tiny_model_config


def _scripted(script: list[list[int]], vocab: int = 6) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], list]:
    """First scores and a step whose favourite token per row follows `script` (4 second); `fed` logs what is fed."""
    fed: list[list[int]] = []

    def scores_for(step: int) -> np.ndarray:
        out = np.zeros((len(script[0]), vocab), dtype=np.float32)
        out[:, 4] = 0.5  # every row's second choice
        out[np.arange(len(script[0])), script[min(step, len(script) - 1)]] = 1.0
        return out

    def step(tokens: np.ndarray) -> np.ndarray:
        fed.append(tokens[:, 0].tolist())
        return scores_for(len(fed))

    return scores_for(0), step, fed


def test_greedy_loop_stops_rows_at_end_of_sequence() -> None:
    eos, pad = 5, 0
    # Row 0 picks 1, 2, 3, eos; row 1 ends at its second token; decoding stops when both have ended.
    first, step, fed = _scripted([[1, 4], [2, eos], [3, 2], [eos, 3], [4, 4]])
    new = greedy_loop(first, step, GreedySettings(max_new_tokens=10, eos_token_ids=(eos,), pad_token_id=pad))
    assert new.tolist() == [[1, 2, 3, eos], [4, eos, pad, pad]]
    assert fed == [[1, 4], [2, eos], [3, pad]]
    first, step, fed = _scripted([[1, 4]])
    assert greedy_loop(first, step, GreedySettings(max_new_tokens=1)).tolist() == [[1], [4]] and fed == []


def test_greedy_loop_applies_forced_and_minimum_length_settings() -> None:
    eos = 5
    # Both rows want to end at once; min_new_tokens holds them for two tokens, forced_eos ends them at the 4th.
    first, step, _ = _scripted([[eos, eos], [eos, 1], [2, 2], [3, 3], [4, 4]])
    held = GreedySettings(max_new_tokens=4, eos_token_ids=(eos,), min_new_tokens=2, forced_eos_token_ids=(eos,))
    assert greedy_loop(first, step, held, prompt_length=3).tolist() == [[4, 4, 2, eos], [4, 1, 2, eos]]
    # min_length counts the prompt: a prompt of 3 and min_length 4 holds eos back for one token only.
    first, step, _ = _scripted([[eos, eos], [eos, eos]])
    by_length = GreedySettings(max_new_tokens=3, eos_token_ids=(eos,), min_length=4)
    assert greedy_loop(first, step, by_length, prompt_length=3).tolist() == [[4, eos], [4, eos]]
    # forced_bos_token_id applies where the sequence has one token (an encoder-decoder's decoder start).
    first, step, _ = _scripted([[1, 2], [3, 3]])
    forced = GreedySettings(max_new_tokens=2, forced_bos_token_id=4)
    assert greedy_loop(first, step, forced, prompt_length=1).tolist() == [[4, 3], [4, 3]]
    first, step, _ = _scripted([[1, 2], [3, 3]])
    assert greedy_loop(first, step, forced, prompt_length=2).tolist() == [[1, 3], [2, 3]]


def test_settings_come_from_the_generation_config() -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_config(tiny_model_config("bart"))
    settings = GreedySettings.from_model(model, 16)
    assert settings.eos_token_ids == (2,) and settings.pad_token_id == 1
    model.generation_config = GenerationConfig(
        eos_token_id=[7, 8],
        forced_eos_token_id=2,
        no_repeat_ngram_size=3,
        suppress_tokens=[9],
        bad_words_ids=[[10], [11, 12]],
    )
    model.config.pad_token_id = None
    settings = GreedySettings.from_model(model, 16)
    assert settings.eos_token_ids == (7, 8) and settings.pad_token_id == 7 and settings.forced_eos_token_ids == (2,)
    assert switched_off_settings(model) == {"no_repeat_ngram_size": 3}
    # One-token bad words are banned like suppressed tokens; longer ones are named as not applied.
    assert banned_token_ids(model) == ((9, 10), ["bad_words_ids"])


def test_causal_generator_feeds_presents_back_with_a_growing_mask() -> None:
    """A fake one-layer decoder: each step gets the previous presents as pasts and a mask over past + new."""
    layout = CacheLayout.uniform(1, 2, 3)
    seen: list[tuple[int, int, tuple[int, ...]]] = []

    def runner(inputs: Any) -> dict[str, np.ndarray]:
        ids, mask, past = inputs["input_ids"], inputs["attention_mask"], inputs["past_key_values.0.key"]
        seen.append((ids.shape[1], past.shape[2], mask.shape))
        assert mask.shape[1] == past.shape[2] + ids.shape[1]
        present = np.concatenate([past, np.zeros((ids.shape[0], 2, ids.shape[1], 3), np.float32)], axis=2)
        logits = np.zeros((*ids.shape, 6), dtype=np.float32)
        logits[np.arange(ids.shape[0]), -1, (ids[:, -1] + 1) % 6] = 1.0  # next: the last token plus 1
        return {"logits": logits, "present.0.key": present, "present.0.value": present}

    prompt = np.array([[0, 1, 2], [0, 0, 3]])
    mask = np.array([[1, 1, 1], [0, 0, 1]])
    out = CausalLMGenerator(runner, layout).generate(prompt, mask, settings=GreedySettings(max_new_tokens=3))
    assert out.tolist() == [[0, 1, 2, 3, 4, 5], [0, 0, 3, 4, 5, 0]]
    assert seen == [(3, 0, (2, 3)), (1, 3, (2, 4)), (1, 4, (2, 5))]


def test_seq2seq_generator_feeds_presents_back_and_applies_token_rules() -> None:
    """Fake graphs: the decoder with past gets every present back as past; banned, end, pad and forced tokens."""
    vocab, batch = 6, 2
    fed: list[set[str]] = []

    def encoder(inputs: Any) -> dict[str, np.ndarray]:
        return {"last_hidden_state": np.zeros((*inputs["input_ids"].shape, 4), dtype=np.float32)}

    def logits(preferred: list[list[int]]) -> np.ndarray:
        scores = np.zeros((batch, 1, vocab), dtype=np.float32)
        for row, tokens in enumerate(preferred):
            for rank, token in enumerate(tokens):
                scores[row, 0, token] = 10.0 - rank
        return scores

    def decoder(inputs: Any) -> dict[str, np.ndarray]:
        assert inputs["input_ids"].tolist() == [[0], [0]] and "encoder_hidden_states" in inputs
        present = np.zeros((batch, 2, 1, 3), dtype=np.float32)
        return {"logits": logits([[5, 4], [5, 4]]), "present.0.decoder.key": present, "present.0.encoder.key": present}

    def decoder_with_past(inputs: Any) -> dict[str, np.ndarray]:
        fed.append({name for name in inputs if name.startswith("past_key_values.")})
        length = inputs["past_key_values.0.decoder.key"].shape[2]
        present = np.zeros((batch, 2, length + 1, 3), dtype=np.float32)
        return {"logits": logits([[2, 0], [5, 0]]), "present.0.decoder.key": present}

    settings = GreedySettings(max_new_tokens=4, eos_token_ids=(2,), pad_token_id=1, forced_eos_token_ids=(3,))
    tokens = Seq2SeqGenerator(encoder, decoder, decoder_with_past).generate(
        np.ones((batch, 3), dtype=np.int64), None, settings=settings, decoder_start_token_id=0, banned_token_ids=(5,)
    )
    # 5 is banned (4 wins, then 0); row 0 ends with eos 2 and is padded with 1; the last token is forced to 3.
    assert tokens.tolist() == [[0, 4, 2, 1, 1], [0, 4, 0, 0, 3]]
    assert fed == [{"past_key_values.0.decoder.key", "past_key_values.0.encoder.key"}] * 3
