"""A model held in its checkpoint's half precision computes what its float32 copy computes
(`exporter_core.precision`), with at most the called module's weights widened at a time.

Default tier: Llama (rotary buffer, RMSNorm, untied head) and GPT-2 (tied head, learned positions), a few seconds.
Matrix tier: more decoder families. Each compares logits bit for bit and greedy generation with the model loaded
in float32 from the same bfloat16 checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FEATURE = "causal-lm-with-past"


def _bf16_checkpoint(tiny_checkpoint: Callable[..., Path], model_type: str, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint(model_type, FEATURE)), dtype=torch.float32).to(
        torch.bfloat16
    ).save_pretrained(str(folder))
    return folder


def _loaded(folder: Path, model_type: str, hold_half: bool) -> Any:
    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model_checked

    return load_model_checked(folder, FEATURE, config_class_for(model_type), hold_half=hold_half)


def _assert_computes_as_float32(tiny_checkpoint: Callable[..., Path], model_type: str, tmp_path: Path) -> None:
    import torch

    folder = _bf16_checkpoint(tiny_checkpoint, model_type, tmp_path / "bf16")
    widened = _loaded(folder, model_type, hold_half=False)
    held = _loaded(folder, model_type, hold_half=True)
    assert widened.held_dtype is None and held.held_dtype == "bfloat16"
    assert {p.dtype for p in widened.model.parameters()} == {torch.float32}
    assert {p.dtype for p in held.model.parameters()} == {torch.bfloat16}
    vocab = int(widened.model.config.vocab_size)
    ids = torch.randint(3, vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    with torch.no_grad():
        expected = widened.model(input_ids=ids, attention_mask=mask).logits
        got = held.model(input_ids=ids, attention_mask=mask).logits
        assert got.dtype == torch.float32
        assert torch.equal(got, expected), (got - expected).abs().max()
        generated = {
            name: loaded.model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
            for name, loaded in (("widened", widened), ("held", held))
        }
    assert torch.equal(generated["held"], generated["widened"])
    # The weights are back in half precision after every call.
    assert {p.dtype for p in held.model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_held_model_computes_as_its_float32_copy(
    model_type: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    _assert_computes_as_float32(tiny_checkpoint, model_type, tmp_path)


@pytest.mark.exporter_matrix
@pytest.mark.parametrize("model_type", ["gptj", "mistral", "qwen2", "qwen3", "phi3", "falcon", "gpt_neox", "opt"])
def test_a_held_model_computes_as_its_float32_copy_across_families(
    model_type: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    _assert_computes_as_float32(tiny_checkpoint, model_type, tmp_path)


class _Block:
    """A feed-forward that casts its input to its output projection's weight dtype before calling it (as T5's
    does): the projection's weights must be float32 while the block runs, not only while the projection does."""

    @staticmethod
    def build() -> Any:
        import torch

        class Block(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.first = torch.nn.Linear(4, 4)
                self.second = torch.nn.Linear(4, 4)
                self.register_buffer("scale", torch.tensor(0.5, dtype=torch.bfloat16))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.second(self.first(x).to(self.second.weight.dtype)) * self.scale

        class Stack(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.blocks = torch.nn.ModuleList([Block(), Block()])
                self.head = torch.nn.Linear(4, 2)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                for block in self.blocks:
                    x = block(x)
                return self.head(x)

        return Stack()


def test_each_unit_is_widened_whole_for_its_call_and_restored_after_a_failure(monkeypatch: Any) -> None:
    import torch

    from exporter_core import precision

    held = _Block.build().to(torch.bfloat16)
    reference = _Block.build()
    reference.load_state_dict({k: v.float() for k, v in held.state_dict().items()})
    # Units of one block's size: a block's two Linear(4, 4) hold 2 x 20 weights, 160 bytes in float32.
    monkeypatch.setattr(precision, "UNIT_MIN_BYTES", 160)
    monkeypatch.setattr(precision, "UNIT_FRACTION", 0.0)
    precision.compute_in_float32(held)
    assert precision.held_dtype(held) == "bfloat16" and precision.held_dtype(held.blocks[1]) == "bfloat16"
    assert precision.held_dtype(torch.nn.Linear(1, 1)) is None
    assert held.blocks[0].scale.dtype == torch.float32  # buffers widened once
    widened_during_calls: list[list[str]] = []

    def record(module: Any, args: Any) -> None:  # runs after the widening pre-hook of the same module
        widened_during_calls.append(sorted(n for n, p in held.named_parameters() if p.dtype == torch.float32))

    for block in held.blocks:
        block.second.register_forward_pre_hook(record)
    held.head.register_forward_pre_hook(record)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(held(x), reference(x))
    block_names = [f"{n}.{w}" for n in ("first", "second") for w in ("bias", "weight")]
    assert widened_during_calls == [
        [f"blocks.0.{n}" for n in block_names],
        [f"blocks.1.{n}" for n in block_names],
        ["head.bias", "head.weight"],
    ], "one block (or the head) at a time"
    assert all(p.dtype == torch.bfloat16 for p in held.parameters())
    with pytest.raises(RuntimeError):
        held.blocks[0](torch.randn(3, 5))  # a shape mistake raises inside the call
    assert all(p.dtype == torch.bfloat16 for p in held.parameters()), "restored when the call raised"


def test_a_small_model_is_one_unit() -> None:
    import torch

    from exporter_core import precision

    held = _Block.build().to(torch.bfloat16)
    reference = _Block.build()
    reference.load_state_dict({k: v.float() for k, v in held.state_dict().items()})
    precision.compute_in_float32(held)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(held(x), reference(x))


def test_an_encoder_decoder_that_reads_a_childs_dtype_computes_as_its_float32_copy(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: Any
) -> None:
    """T5 casts its feed-forward input to ``wo.weight.dtype`` before calling ``wo``; units smaller than the model
    (as at billions of parameters) must still widen ``wo`` first."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from exporter_core import precision
    from exporter_core.features import config_class_for
    from exporter_core.loading import load_model_checked

    feature = "seq2seq-lm-with-past"
    folder = tmp_path / "t5"
    AutoModelForSeq2SeqLM.from_pretrained(str(tiny_checkpoint("t5", feature)), dtype=torch.float32).to(
        torch.bfloat16
    ).save_pretrained(str(folder))
    widened = load_model_checked(folder, feature, config_class_for("t5")).model
    # Units of one T5 block, as at billions of parameters (a tiny model is otherwise one unit).
    blocks = [*widened.encoder.block, *widened.decoder.block]
    monkeypatch.setattr(precision, "UNIT_MIN_BYTES", max(4 * sum(p.numel() for p in b.parameters()) for b in blocks))
    monkeypatch.setattr(precision, "UNIT_FRACTION", 0.0)
    held = load_model_checked(folder, feature, config_class_for("t5"), hold_half=True).model
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = widened(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
        got = held(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
    assert torch.equal(got, expected)
    # The units were the blocks: the stacks above them are not widened whole.
    assert all(block._forward_pre_hooks for block in [*held.encoder.block, *held.decoder.block])
    assert not held.encoder._forward_pre_hooks and not held.decoder._forward_pre_hooks


def test_hold_half_leaves_a_float32_checkpoint_as_it_is(tiny_checkpoint: Callable[..., Path]) -> None:
    import torch

    loaded = _loaded(tiny_checkpoint("gpt2", FEATURE), "gpt2", hold_half=True)
    assert loaded.held_dtype is None and loaded.checkpoint_dtype == "float32"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
