"""Decoders (GPT-2, GPT-Neo, GPT-J, and the BART family's decoder alone) exported to ONNX, with and without past.

Every (architecture, feature) pair is exported once, in one test (with ``-n 2`` a fixture shared by several tests
could be built on both workers), through the ONNX backend as the pipeline calls it, and validated against
PyTorch on every part the backend returns: without past one left-padded reference shape, with past also an
empty past, a single new token at batch 1 and left padding reaching into the new tokens. Exports are traced
at batch 2, sequence 8, past 10. ``causal-lm-with-past`` exports must also generate, greedily, exactly the
tokens ``model.generate`` does (16 new tokens, batch 2, left padding).

`test_an_export_right_only_at_its_traced_past_length_fails_validation` shows that this validation catches a
graph that is right at the traced past length and wrong at every other one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.architectures.decoders import (
    PAST_AXIS,
    TOTAL_AXIS,
    BartDecoderOnnxConfig,
    GPT2OnnxConfig,
    GPTJOnnxConfig,
    GPTNeoOnnxConfig,
)
from exporter_core.backend import ExportRequest
from exporter_core.errors import UnsupportedFeatureError
from exporter_core.features import config_class_for
from exporter_core.testing import tiny_model_config
from exporter_onnx.backend import OnnxBackend
from exporter_onnx.convert import export_onnx
from exporter_onnx.decoders import validation_parts
from exporter_onnx.generation import (
    GreedySettings,
    OnnxCausalLM,
    causal_lm_parity_check,
    greedy_loop,
    switched_off_settings,
)
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_validate.compare import validate_outputs


@dataclasses.dataclass(frozen=True)
class Case:
    """One (architecture, feature) pair and how its tiny checkpoint is built."""

    model_type: str
    feature: str
    overrides: tuple[tuple[str, Any], ...] = ()
    tokenizer: bool = False

    @property
    def id(self) -> str:
        return f"{self.model_type}:{self.feature}{'+tokenizer' if self.tokenizer else ''}"


_GPT_FEATURES = ("default", "default-with-past", "causal-lm", "causal-lm-with-past")
# GPT-Neo's local layers see 4 tokens back here, fewer than most validated lengths; GPT-J rotates 6 of 8 channels.
# Sequence classification pools each row's last non-padding token: it needs a pad token id, which the tiny
# GPT-Neo and GPT-J configs (like the real checkpoints) lack.
_NEO = (("window_size", 4),)
_GPTJ = (("rotary_dim", 6),)
_PAD = (("pad_token_id", 1),)
CASES = (
    [Case("gpt2", f, tokenizer=True) for f in _GPT_FEATURES + ("sequence-classification", "token-classification")]
    + [Case("gpt_neo", f, _NEO) for f in _GPT_FEATURES]
    + [Case("gpt_neo", "sequence-classification", _NEO + _PAD)]
    + [Case("gptj", f, _GPTJ) for f in _GPT_FEATURES + ("question-answering",)]
    + [Case("gptj", "sequence-classification", _GPTJ + _PAD)]
    + [
        Case(model_type, feature)
        for model_type in ("bart", "mbart", "bigbird_pegasus", "plbart", "blenderbot", "blenderbot-small", "marian")
        for feature in ("causal-lm", "causal-lm-with-past")
    ]
)
GENERATION_PARITY_REQUIRED = {"gpt2", "gpt_neo", "gptj"}


def _load(case: Case, tiny_checkpoint: Callable[..., Path]) -> tuple[Any, Any, Any]:
    folder = tiny_checkpoint(case.model_type, case.feature, with_tokenizer=case.tokenizer, **dict(case.overrides))
    config_cls = config_class_for(case.model_type)
    model = loading.load_model(folder, case.feature, config_cls)
    preprocessor = loading.load_preprocessor(folder)
    return model, preprocessor, config_cls.for_feature(model.config, case.feature)


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = list(graph.input) + list(graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_export_validates_at_other_shapes(
    case: Case, tiny_checkpoint: Callable[..., Path], record_difference: Callable[..., float], tmp_path: Path
) -> None:
    model, preprocessor, config = _load(case, tiny_checkpoint)
    with_past = case.feature.endswith("-with-past")
    assert config.use_past is with_past
    backend = OnnxBackend()
    request = ExportRequest(
        model=model,
        config=config,
        feature=case.feature,
        staging=tmp_path,
        artifact_name="model.onnx",
        preprocessor=preprocessor,
    )
    result = backend.export(request)

    # The file takes and returns what the config declares, with dynamic batch, sequence and past axes.
    layers = config.num_layers
    assert result.metadata["engine"] == "dynamo" and "fallback_reason" not in result.metadata
    assert result.input_names == list(config.inputs)
    assert result.output_names == list(config.outputs)
    dims = _graph_dims(tmp_path / "model.onnx")
    if with_past:
        assert len([n for n in result.input_names if n.startswith("past_key_values.")]) == 2 * layers
        assert len([n for n in result.output_names if n.startswith("present.")]) == 2 * layers
        past, present, mask = dims["past_key_values.0.key"], dims[f"present.{layers - 1}.value"], dims["attention_mask"]
        assert isinstance(past[0], str) and isinstance(past[2], str) and isinstance(past[1], int)
        assert past[0] == mask[0] == present[0]
        assert len({past[2], mask[1], dims["input_ids"][1]}) == 3, "past, past + sequence and sequence are separate axes"
    else:
        assert dims["input_ids"] == dims["attention_mask"] and all(isinstance(d, str) for d in dims["input_ids"])

    # Validation at every input set; none of them has the traced shape, an empty past is among them.
    shapes = []
    for part in result.parts:
        report = validate_outputs(
            part.config, part.model, part.runner, preprocessor=preprocessor, inputs=part.reference_inputs, log=lambda _: None
        )
        record_difference(f"{case.id} [{part.name}]", report, arch=case.model_type)
        assert report.passed, f"{part.name}:\n" + "\n".join(report.log_lines())
        assert report.atol == 1e-5
        ids = report.reference_inputs["input_ids"]
        past_length = report.reference_inputs["past_key_values.0.key"][2] if with_past else None
        shapes.append((ids[0], ids[1], past_length))
    traced = (config.default_batch_size, config.default_sequence_length, 10 if with_past else None)
    assert traced not in shapes
    if with_past:
        assert len(result.parts) == 4
        assert {past_length for _, _, past_length in shapes} >= {0, 5, 11}
        assert (1, 1, 5) in shapes
    else:
        assert len(result.parts) == 1

    # Rows of the reference inputs differ by far more than the tolerance: a batch mix-up would fail.
    import torch

    inputs = config.generate_reference_inputs(preprocessor, framework="pt")
    with torch.no_grad():
        first = config.select_outputs(model(**config.model_kwargs(inputs)))[0]
    assert float((first[0, -1] - first[1, -1]).abs().max()) > 100 * config.atol_for_validation

    checks = backend.run_checks(request, result)
    if case.feature != "causal-lm-with-past":
        assert checks == []
        return
    (parity,) = checks
    assert parity["name"] == "generation parity"
    assert parity["passed"], parity["detail"]
    assert np.shape(parity["onnx_tokens"]) == (2, 16) or case.model_type not in GENERATION_PARITY_REQUIRED
    assert "identical to model.generate" in parity["detail"]


@pytest.mark.parametrize("model_type", ["gpt2", "gptj"])
def test_generation_pads_on_the_left_without_changing_tokens(
    model_type: str, tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Position ids come from the mask: a left-padded row generates what the same prompt alone generates,
    and the parity check fails for a model that is not the exported one."""
    import torch
    from transformers import AutoModelForCausalLM

    case = Case(model_type, "causal-lm-with-past", _GPTJ if model_type == "gptj" else (), tokenizer=model_type == "gpt2")
    model, preprocessor, config = _load(case, tiny_checkpoint)
    info = export_onnx(model, config, tmp_path / "model.onnx", preprocessor=preprocessor, engine="torchscript", opset=17)
    runner = OnnxRuntimeRunner(info.path)
    generator = OnnxCausalLM(runner)
    settings = GreedySettings.from_model(model, max_new_tokens=8)
    prompt = config.generate_past_inputs(preprocessor, batch_size=2, seq_length=8, past_length=0, padded=True, seed=2)
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    real = int(mask[1].sum())
    assert 0 < real < ids.shape[1] and mask[0].all()
    together = generator.generate(ids, mask, settings=settings)
    alone = generator.generate(ids[1:, -real:], None, settings=settings)
    assert np.array_equal(together[1, ids.shape[1] :], alone[0, real:])

    parity = causal_lm_parity_check(model, config, runner, preprocessor)
    assert parity["passed"], parity["detail"]
    torch.manual_seed(123)
    other = AutoModelForCausalLM.from_config(model.config).eval()
    failed = causal_lm_parity_check(other, config, runner, preprocessor)
    assert not failed["passed"]
    assert failed["detail"].startswith("new token ") and "differs: ONNX" in failed["detail"]


class _PastBakedIn(GPT2OnnxConfig):
    """Counts positions from the traced past length (10) whatever the past is: right only at that length."""

    traced_past = 10

    def model_kwargs(self, inputs: Any) -> dict[str, Any]:
        import torch

        kwargs = super().model_kwargs(inputs)
        new_tokens = inputs["input_ids"].shape[1]
        kwargs["position_ids"] = torch.arange(new_tokens).unsqueeze(0) + self.traced_past
        return kwargs


def test_an_export_right_only_at_its_traced_past_length_fails_validation(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, preprocessor, correct = _load(Case("gpt2", "causal-lm-with-past", tokenizer=True), tiny_checkpoint)
    baked = _PastBakedIn.with_past(model.config, task="causal-lm")
    assert baked.past_length_offset + baked.default_sequence_length == _PastBakedIn.traced_past
    # The torchscript engine is the quick one here; what matters is the graph it writes, not how.
    info = export_onnx(model, baked, tmp_path / "model.onnx", preprocessor=preprocessor, engine="torchscript", opset=17)
    runner = OnnxRuntimeRunner(info.path)

    def validate(past_length: int) -> Any:
        inputs = correct.generate_past_inputs(
            preprocessor, batch_size=2, seq_length=8, past_length=past_length, padded=False, seed=3
        )
        return validate_outputs(correct, model, runner, inputs=inputs, log=lambda _: None)

    assert validate(10).passed, "the broken graph is right at the traced past length"
    for past_length in (0, 5, 13):
        report = validate(past_length)
        assert not report.passed
        assert any(f.startswith('output "logits"') for f in report.failures)

    # The backend's own validation parts (all at other past lengths) all fail on it.
    from exporter_core.backend import ExportPart

    part = ExportPart("model", "model.onnx", correct, model, runner, info.input_names, info.output_names)
    reports = [
        validate_outputs(p.config, p.model, p.runner, preprocessor=preprocessor, inputs=p.reference_inputs, log=lambda _: None)
        for p in validation_parts(part, preprocessor)
    ]
    assert [r.passed for r in reports] == [False] * 4


# -- configs, without exporting ------------------------------------------------------------------------------------


def test_with_past_inputs_and_outputs() -> None:
    config = GPT2OnnxConfig.with_past(tiny_model_config("gpt2"), task="causal-lm")
    assert list(config.inputs) == [
        "input_ids",
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
        "attention_mask",
    ]
    assert config.inputs["past_key_values.1.value"] == {0: "batch", 2: PAST_AXIS}
    assert config.inputs["attention_mask"] == {0: "batch", 1: TOTAL_AXIS}
    assert list(config.outputs) == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert config.outputs["present.0.key"] == {0: "batch", 2: TOTAL_AXIS}
    assert config.values_override == {"use_cache": True}
    plain = GPT2OnnxConfig(tiny_model_config("gpt2"), task="sequence-classification")
    assert list(plain.inputs) == ["input_ids", "attention_mask"] and list(plain.outputs) == ["logits"]
    assert plain.values_override == {"use_cache": False}
    assert GPT2OnnxConfig.padding_side == "left"


@pytest.mark.parametrize(
    ("config_cls", "model_type", "heads", "head_dim"),
    [(GPT2OnnxConfig, "gpt2", 4, 8), (GPTNeoOnnxConfig, "gpt_neo", 4, 8), (GPTJOnnxConfig, "gptj", 2, 16)],
)
def test_past_inputs_at_any_past_length(config_cls: type, model_type: str, heads: int, head_dim: int) -> None:
    overrides = {"n_head": 2} if model_type == "gptj" else {}
    config = config_cls.with_past(tiny_model_config(model_type, **overrides), task="causal-lm")
    dummy = config.generate_dummy_inputs(framework="np")
    assert dummy["past_key_values.0.key"].shape == (2, heads, 10, head_dim)
    assert dummy["attention_mask"].shape == (2, 18) and dummy["attention_mask"].all()
    for past_length in (0, 3):
        inputs = config.generate_past_inputs(batch_size=3, seq_length=4, past_length=past_length, padded=True)
        assert inputs["past_key_values.1.value"].shape == (3, heads, past_length, head_dim)
        mask = inputs["attention_mask"]
        assert mask.shape == (3, past_length + 4)
        assert mask[0].all() and not mask[2].all()
        assert (np.diff(mask, axis=1) >= 0).all(), "padding is on the left"
        pad = config.model_config.pad_token_id or 0
        assert (inputs["input_ids"][mask[:, past_length:] == 0] == pad).all()
    with pytest.raises(TypeError, match="without past"):
        config_cls(config.model_config).generate_past_inputs(batch_size=1, seq_length=1, past_length=0)


def test_sequence_classification_without_a_pad_token_is_refused_with_the_fix() -> None:
    with pytest.raises(UnsupportedFeatureError, match="set pad_token_id in config.json"):
        GPTNeoOnnxConfig.for_feature(tiny_model_config("gpt_neo"), "sequence-classification")
    assert GPTNeoOnnxConfig.for_feature(tiny_model_config("gpt_neo", pad_token_id=1), "sequence-classification")


def test_bart_family_causal_lm_is_the_decoder_alone() -> None:
    bart = tiny_model_config("bart", encoder_layers=3, decoder_layers=3, decoder_attention_heads=2)
    config = config_class_for("bart").for_feature(bart, "causal-lm-with-past")
    assert isinstance(config, BartDecoderOnnxConfig) and config.use_past
    assert config.num_layers == 3 and config.num_attention_heads == 2 and config.head_dim == 16
    assert not BartDecoderOnnxConfig.position_ids_from_mask
    plain = config_class_for("marian").for_feature(tiny_model_config("marian"), "causal-lm")
    assert isinstance(plain, BartDecoderOnnxConfig) and not plain.use_past
    assert not isinstance(config_class_for("bart").for_feature(bart, "seq2seq-lm"), BartDecoderOnnxConfig)


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
    model.generation_config = GenerationConfig(eos_token_id=[7, 8], forced_eos_token_id=2, no_repeat_ngram_size=3)
    model.config.pad_token_id = None
    settings = GreedySettings.from_model(model, 16)
    assert settings.eos_token_ids == (7, 8) and settings.pad_token_id == 7 and settings.forced_eos_token_ids == (2,)
    assert switched_off_settings(model) == {"no_repeat_ngram_size": 3}
