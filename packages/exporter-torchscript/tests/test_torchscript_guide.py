"""The guide's TorchScript snippet (trace a BertModel with two inputs, save, load, call) on Transformers 5.

The guide built the model with ``torchscript=True`` and called ``torch.jit.trace``; Transformers 5 has no such
flag, so the one changed line is the trace: ``exporter.torchscript.trace`` instead of ``torch.jit.trace``.
The model is BERT-shaped but tiny (the guide's is bert-base) and the tokenizer is the test kit's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from exporter.torchscript import trace
from exporter_core.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def guide_inputs(tiny_tokenizer):
    """The guide's tokens_tensor and segments_tensors, made with the tiny tokenizer."""
    enc = tiny_tokenizer
    text = "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"
    tokenized_text = enc.tokenize(text)
    masked_index = 8
    tokenized_text[masked_index] = "[MASK]"
    indexed_tokens = enc.convert_tokens_to_ids(tokenized_text)
    first_sep = tokenized_text.index("[SEP]")
    segments_ids = [0] * (first_sep + 1) + [1] * (len(tokenized_text) - first_sep - 1)
    tokens_tensor = torch.tensor([indexed_tokens])
    segments_tensors = torch.tensor([segments_ids])
    return tokens_tensor, segments_tensors


def test_guide_snippet_trace_save_load_call(guide_inputs, tmp_path):
    tokens_tensor, segments_tensors = guide_inputs
    dummy_input = [tokens_tensor, segments_tensors]
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    model = BertModel(config)
    model.eval()

    traced_model = trace(model, [tokens_tensor, segments_tensors])  # was: torch.jit.trace(model, [...])
    torch.jit.save(traced_model, str(tmp_path / "traced_bert.pt"))

    loaded_model = torch.jit.load(str(tmp_path / "traced_bert.pt"))
    loaded_model.eval()
    all_encoder_layers, pooled_output = loaded_model(*dummy_input)
    again = traced_model(tokens_tensor, segments_tensors)

    # Positional inputs bind as they always did: to forward's first parameters (input_ids, attention_mask).
    with torch.no_grad():
        expected = model(tokens_tensor, segments_tensors)
    torch.testing.assert_close(all_encoder_layers, expected.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled_output, expected.pooler_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(again[0], expected.last_hidden_state, atol=1e-5, rtol=0)
    assert not model.training

    # The same file works in a process that never saw Transformers.
    np.savez(tmp_path / "inputs.npz", tokens=tokens_tensor.numpy(), segments=segments_tensors.numpy())
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        loaded_model = torch.jit.load({str(tmp_path / "traced_bert.pt")!r})
        data = np.load({str(tmp_path / "inputs.npz")!r})
        layers, pooled = loaded_model(torch.from_numpy(data["tokens"]), torch.from_numpy(data["segments"]))
        np.save({str(tmp_path / "pooled.npy")!r}, pooled.detach().numpy())
        assert "transformers" not in sys.modules
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "pooled.npy"), expected.pooler_output.numpy(), atol=1e-5, rtol=0)


def test_guide_inputs_by_name_and_a_tied_lm_head(guide_inputs):
    from transformers import BertForMaskedLM

    tokens_tensor, segments_tensors = guide_inputs
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    model = BertForMaskedLM(config)  # training mode, tied embeddings: both must survive the trace
    traced_model = trace(model, [tokens_tensor, segments_tensors], input_names=["input_ids", "token_type_ids"])
    assert model.training
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    params = dict(traced_model.named_parameters())
    embedding = params["model.bert.embeddings.word_embeddings.weight"]
    head = params["model.cls.predictions.decoder.weight"]
    assert embedding.data_ptr() != head.data_ptr() and torch.equal(embedding, head)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=tokens_tensor, token_type_ids=segments_tensors).logits
    torch.testing.assert_close(traced_model(tokens_tensor, segments_tensors)[0], expected, atol=1e-5, rtol=0)
    with pytest.raises(InvalidArgumentError, match="2 input names for 1 example inputs"):
        trace(model, [tokens_tensor], input_names=["input_ids", "token_type_ids"])
