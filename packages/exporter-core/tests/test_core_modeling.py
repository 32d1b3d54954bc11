"""The export wrapper (named inputs in, a tuple out), `prepared_for_export` and `untied_copy`."""

from __future__ import annotations

import inspect
import types
from typing import Any, Mapping

import pytest
import torch

from exporter_core.architectures.encoders import BertOnnxConfig, DistilBertOnnxConfig, LayoutLMOnnxConfig
from exporter_core.config import PatchingSpec
from exporter_core.modeling import export_module, prepared_for_export, untied_copy
from exporter_core.testing import tiny_model_config


@pytest.fixture(scope="module")
def bert_qa() -> Any:
    """A tiny BertForQuestionAnswering in eval mode."""
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(0)
    return AutoModelForQuestionAnswering.from_config(tiny_model_config("bert")).eval()


@pytest.fixture(scope="module")
def bert_mlm() -> Any:
    """A tiny BertForMaskedLM (input embeddings tied to the LM head)."""
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(1)
    return AutoModelForMaskedLM.from_config(tiny_model_config("bert")).eval()


def test_forward_signature_is_the_config_input_names(bert_qa: Any) -> None:
    for config in (
        BertOnnxConfig(bert_qa.config, task="question-answering"),
        DistilBertOnnxConfig(tiny_model_config("distilbert")),
        LayoutLMOnnxConfig(tiny_model_config("layoutlm")),
    ):
        module = export_module(bert_qa, config)
        parameters = list(inspect.signature(module.forward).parameters)
        assert parameters == list(config.inputs)
        assert all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in inspect.signature(module.forward).parameters.values()
        )


def test_explicit_input_names_and_invalid_names(bert_qa: Any) -> None:
    config = BertOnnxConfig(bert_qa.config)
    module = export_module(bert_qa, config, ["input_ids", "attention_mask"])
    assert list(inspect.signature(module.forward).parameters) == ["input_ids", "attention_mask"]
    dotted = export_module(bert_qa, config, ["input_ids", "past.key"])
    assert list(inspect.signature(dotted.forward).parameters) == ["input_ids", "past_key"]
    with pytest.raises(ValueError, match="'past key' is not a Python identifier"):
        export_module(bert_qa, config, ["input_ids", "past key"])
    with pytest.raises(ValueError, match="clashing argument names"):
        export_module(bert_qa, config, ["past.key", "past_key"])
    with pytest.raises(ValueError, match="'class' is not a Python identifier"):
        export_module(bert_qa, config, ["class"])


def test_wrapper_returns_the_config_outputs_as_a_tuple(bert_qa: Any, tiny_tokenizer: Any) -> None:
    config = BertOnnxConfig(bert_qa.config, task="question-answering")
    inputs = config.generate_dummy_inputs(tiny_tokenizer)
    module = export_module(bert_qa, config)
    with torch.no_grad():
        result = module(**inputs)
        expected = bert_qa(**inputs)
    assert isinstance(result, tuple) and len(result) == 2
    torch.testing.assert_close(result[0], expected.start_logits, rtol=0, atol=0)
    torch.testing.assert_close(result[1], expected.end_logits, rtol=0, atol=0)
    with torch.no_grad():
        positional = module(*inputs.values())
    torch.testing.assert_close(positional[1], expected.end_logits, rtol=0, atol=0)


def test_wrapper_stays_in_eval_and_never_changes_the_model_mode(bert_qa: Any) -> None:
    module = export_module(bert_qa, BertOnnxConfig(bert_qa.config))
    assert module.training is False
    module.train()
    assert module.training is True
    assert bert_qa.training is False
    assert not any(m.training for m in bert_qa.modules())


class _Overriding(BertOnnxConfig):
    """Forces a value the model config has and one it lacks."""

    @property
    def values_override(self) -> Mapping[str, Any]:
        return {"use_cache": False, "exporter_test_flag": "on"}


def _prepare_state(model: Any) -> tuple[Any, types.SimpleNamespace, Any]:
    target = types.SimpleNamespace(op=lambda: "orig")
    original_op = target.op
    config = _Overriding(model.config, patching_specs=[PatchingSpec(target, "op", lambda: "custom")])
    return config, target, original_op


def test_prepared_for_export_sets_and_restores_everything(bert_qa: Any) -> None:
    config, target, original_op = _prepare_state(bert_qa)
    bert_qa.config.use_cache = True
    bert_qa.train()
    try:
        with prepared_for_export(bert_qa, config) as prepared:
            assert prepared is bert_qa
            assert bert_qa.training is False and not any(m.training for m in bert_qa.modules())
            assert bert_qa.config.use_cache is False
            assert bert_qa.config.exporter_test_flag == "on"
            assert target.op() == "custom"
        assert bert_qa.training is True and all(m.training for m in bert_qa.modules())
        assert bert_qa.config.use_cache is True
        assert not hasattr(bert_qa.config, "exporter_test_flag")
        assert target.op is original_op
    finally:
        bert_qa.eval()


def test_prepared_for_export_restores_on_exception(bert_qa: Any) -> None:
    config, target, original_op = _prepare_state(bert_qa)
    bert_qa.config.use_cache = True
    bert_qa.train()
    try:
        with pytest.raises(RuntimeError, match="tracing failed"):
            with prepared_for_export(bert_qa, config):
                assert bert_qa.training is False
                raise RuntimeError("tracing failed")
        assert bert_qa.training is True
        assert bert_qa.config.use_cache is True
        assert not hasattr(bert_qa.config, "exporter_test_flag")
        assert target.op is original_op
    finally:
        bert_qa.eval()


def test_prepared_for_export_keeps_eval_mode_of_an_eval_model(bert_qa: Any) -> None:
    with prepared_for_export(bert_qa, BertOnnxConfig(bert_qa.config)):
        pass
    assert bert_qa.training is False


def _lm_head_and_embeddings(model: Any) -> tuple[Any, Any]:
    return model.cls.predictions.decoder.weight, model.bert.embeddings.word_embeddings.weight


def test_untied_copy_unties_and_leaves_the_original_tied(bert_mlm: Any) -> None:
    head, embeddings = _lm_head_and_embeddings(bert_mlm)
    assert head is embeddings, "the tiny masked-lm model is expected to tie its LM head"
    copy = untied_copy(bert_mlm)
    copy_head, copy_embeddings = _lm_head_and_embeddings(copy)
    assert copy_head is not copy_embeddings
    assert copy_head.data_ptr() != copy_embeddings.data_ptr()
    torch.testing.assert_close(copy_head, copy_embeddings, rtol=0, atol=0)
    ids = [id(p) for _, m in copy.named_modules(remove_duplicate=False) for p in m.parameters(recurse=False)]
    assert len(ids) == len(set(ids))
    head, embeddings = _lm_head_and_embeddings(bert_mlm)
    assert head is embeddings
    assert all(a is not b for a, b in zip(copy.parameters(), bert_mlm.parameters()))
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]])}
    with torch.no_grad():
        torch.testing.assert_close(copy(**inputs).logits, bert_mlm(**inputs).logits, rtol=0, atol=0)
    with torch.no_grad():
        copy_embeddings.add_(1.0)
    torch.testing.assert_close(copy_head, embeddings, rtol=0, atol=0)
