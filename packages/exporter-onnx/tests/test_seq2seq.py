"""Encoder-decoder models (BART family, Blenderbot, Marian, M2M-100, T5) exported to ONNX and validated against PyTorch.

Every (architecture, feature) pair is exported once, in one test (with ``-n 2`` a fixture shared by several tests
could be built on both workers), through the ONNX backend as the pipeline calls it: 20 pairs with the default
engine (torch.export, opset 18), the other 23 with the TorchScript-based one (opset 17, ten times faster here).
Without past that is one ``model.onnx``; with past the three files a runtime drives (``encoder_model.onnx``,
``decoder_model.onnx``, ``decoder_with_past_model.onnx``), each validated at batch 3 with a right-padded encoder,
the decoders again at batch 1, 2 and 4, other decoder lengths and past lengths 0, 1, 4 and 23 (traced: batch 2,
past 11).
``seq2seq-lm-with-past`` exports must also generate, greedily, exactly the tokens ``model.generate`` does (16 new
tokens, batch 2, padded encoder rows). Sizes vary between architectures (heads, widths, layer counts).

`test_an_export_right_only_at_its_traced_past_length_fails_validation` shows that this validation catches a
decoder graph that is right at its traced past length and wrong at every other one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from exporter_core import loading
from exporter_core.architectures.decoders import BartDecoderOnnxConfig, cache_keyword
from exporter_core.architectures.seq2seq import (
    PAST_DECODER_AXIS,
    BartOnnxConfig,
    PLBartOnnxConfig,
    Seq2SeqDecoderOnnxConfig,
    T5OnnxConfig,
)
from exporter_core.backend import ExportRequest
from exporter_core.features import config_class_for
from exporter_core.testing import build_tiny_tokenizer, tiny_model_config
from exporter_onnx.backend import OnnxBackend
from exporter_onnx.convert import export, export_onnx
from exporter_onnx.runtime import OnnxRuntimeRunner
from exporter_onnx.generation import GreedySettings
from exporter_onnx.seq2seq import (
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_FILE,
    Seq2SeqOnnxGenerator,
    banned_token_ids,
    decoder_start_token_id,
    generation_parity,
)
from exporter_validate.compare import validate_outputs

INIT_STD = 0.1


@dataclasses.dataclass(frozen=True)
class Case:
    """One (architecture, feature) pair and how its tiny checkpoint is built."""

    model_type: str
    feature: str
    overrides: tuple[tuple[str, Any], ...] = ()
    tokenizer: bool = False
    #: None: the default opset (18, the torch.export-based engine); 17: the TorchScript-based engine.
    opset: int | None = None

    @property
    def id(self) -> str:
        extras = ("+tokenizer" if self.tokenizer else "") + (f"@opset{self.opset}" if self.opset else "")
        return f"{self.model_type}:{self.feature}{extras}"

    @property
    def engine(self) -> str:
        """The engine the export must have used (no fallback)."""
        return "torchscript" if self.opset is not None and self.opset < 18 else "dynamo"


_WITH_HEADS = (
    "default",
    "default-with-past",
    "seq2seq-lm",
    "seq2seq-lm-with-past",
    "sequence-classification",
    "question-answering",
)
_SEQ2SEQ = _WITH_HEADS[:4]
# Not every model is the regular 32-wide, 4-head, 2 + 2 layer one: heads of 8, 12 and 16 channels, more encoder
# than decoder layers, decoders with fewer heads than encoders, T5 with an inner width unlike d_model. Where the
# start token is the eos token (2), a random model with tied embeddings answers eos at once; those start with
# token 0 (mBART's checkpoints start with a language code), so that generation runs its 16 steps everywhere.
_START_0 = (("decoder_start_token_id", 0),)
_SIZES: dict[str, tuple[tuple[str, Any], ...]] = {
    "bart": (),
    "mbart": (("d_model", 48), ("encoder_attention_heads", 4), ("decoder_attention_heads", 4)) + _START_0,
    "bigbird_pegasus": (("decoder_attention_heads", 2),) + _START_0,
    "plbart": (("encoder_layers", 3),) + _START_0,
    "blenderbot": (("d_model", 48), ("encoder_attention_heads", 6), ("decoder_attention_heads", 3)) + _START_0,
    "blenderbot-small": _START_0,
    "marian": (("d_model", 40), ("encoder_attention_heads", 5), ("decoder_attention_heads", 5)),
    "m2m_100": (("encoder_layers", 3),) + _START_0,
    "t5": (("num_heads", 3), ("d_kv", 16)),
}
_FEATURES = {
    "bart": _WITH_HEADS,
    "mbart": _WITH_HEADS,
    "bigbird_pegasus": _WITH_HEADS,
    "plbart": _WITH_HEADS[:5],
    "blenderbot": _SEQ2SEQ,
    "blenderbot-small": _SEQ2SEQ,
    "marian": _SEQ2SEQ,
    "m2m_100": _SEQ2SEQ,
    "t5": _SEQ2SEQ,
}
# The torch.export-based engine (the default) costs ~10 s of CPU per graph here, the TorchScript-based one ~1 s:
# every seq2seq-lm-with-past pair, BART's every pair and at least one pair of each other architecture use the
# default; the rest use opset 17, which also proves the TorchScript-based engine right at other past lengths.
_DEFAULT_ENGINE = {
    ("bart", f) for f in _WITH_HEADS
} | {
    ("t5", "default"),
    ("t5", "seq2seq-lm"),
    ("m2m_100", "seq2seq-lm"),
    ("marian", "seq2seq-lm"),
    ("blenderbot", "seq2seq-lm"),
    ("bigbird_pegasus", "sequence-classification"),
}


def _opset(model_type: str, feature: str) -> int | None:
    return None if feature == "seq2seq-lm-with-past" or (model_type, feature) in _DEFAULT_ENGINE else 17


# BART's checkpoints carry the tiny WordLevel tokenizer, except for generation: its [CLS] has BART's eos id (2),
# and a random model that reads an eos first answers with eos at once (the parity would cover one token).
CASES = [
    Case(mt, f, _SIZES[mt], tokenizer=mt == "bart" and f != "seq2seq-lm-with-past", opset=_opset(mt, f))
    for mt, features in _FEATURES.items()
    for f in features
]
GENERATION_PARITY_REQUIRED = {"bart", "marian", "t5"}
#: Traced shape of the decoder with past: batch 2, 2 new tokens, past 11 (the encoder length 8 + 3).
TRACED_PAST = (2, 11)


def _init_overrides(model_type: str) -> dict[str, Any]:
    """Random weights of standard deviation `INIT_STD` (T5 scales its own by d_model ** -0.5)."""
    return {} if model_type == "t5" else {"init_std": INIT_STD}


def _load(case: Case, tiny_checkpoint: Callable[..., Path]) -> tuple[Any, Any, Any]:
    overrides = {**_init_overrides(case.model_type), **dict(case.overrides)}
    folder = tiny_checkpoint(case.model_type, case.feature, with_tokenizer=case.tokenizer, **overrides)
    config_cls = config_class_for(case.model_type)
    model = loading.load_model(folder, case.feature, config_cls)
    preprocessor = loading.load_preprocessor(folder)
    return model, preprocessor, config_cls.for_feature(model.config, case.feature)


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = list(graph.input) + list(graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _check_with_past_files(config: Any, result: Any, folder: Path, engine: str) -> None:
    """Three files with the declared names, dynamic batch / length / past axes, and one present per past."""
    layers = config.num_decoder_layers
    assert {ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE} <= set(result.artifacts)
    assert "model.onnx" not in result.artifacts
    assert [p.artifact for p in result.parts[:3]] == [ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE]
    for name, part_metadata in result.metadata["parts"].items():
        assert part_metadata["engine"] == engine and "fallback_reason" not in part_metadata, name
    for part in result.parts[:3]:
        assert part.input_names == list(part.config.inputs)
        assert part.output_names == list(part.config.outputs)
    encoder, decoder, with_past = (_graph_dims(folder / name) for name in (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE))
    assert encoder["input_ids"] == encoder["attention_mask"] and all(isinstance(d, str) for d in encoder["input_ids"])
    assert len([n for n in decoder if n.startswith("present.") and ".encoder." in n]) == 2 * layers
    assert len([n for n in decoder if n.startswith("present.") and ".decoder." in n]) == 2 * layers
    assert not [n for n in with_past if n.startswith("present.") and ".encoder." in n]
    past = with_past["past_key_values.0.decoder.key"]
    cross = with_past[f"past_key_values.{layers - 1}.encoder.value"]
    present = with_past[f"present.{layers - 1}.decoder.value"]
    mask = with_past["encoder_attention_mask"]
    assert isinstance(past[1], int) and isinstance(past[3], int)
    assert all(isinstance(d, str) for d in (past[0], past[2], cross[2], present[2], with_past["input_ids"][1]))
    assert past[0] == cross[0] == mask[0] == present[0], "one batch axis"
    assert cross[2] == mask[1], "cached encoder keys and the encoder mask share the encoder length"
    assert len({past[2], present[2], with_past["input_ids"][1], mask[1]}) == 4


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_export_validates_at_other_shapes(
    case: Case, tiny_checkpoint: Callable[..., Path], record_difference: Callable[..., float], tmp_path: Path
) -> None:
    model, preprocessor, config = _load(case, tiny_checkpoint)
    with_past = case.feature.endswith("-with-past")
    backend = OnnxBackend()
    request = ExportRequest(
        model=model,
        config=config,
        feature=case.feature,
        staging=tmp_path,
        artifact_name="model.onnx",
        preprocessor=preprocessor,
        options={"opset": case.opset},
    )
    result = backend.export(request)
    if with_past:
        _check_with_past_files(config, result, tmp_path, case.engine)
    else:
        assert result.artifacts == ["model.onnx"] and len(result.parts) == 1
        assert result.metadata["engine"] == case.engine and "fallback_reason" not in result.metadata
        assert result.input_names == list(config.inputs) and result.output_names == list(config.outputs)

    past_shapes = set()
    for part in result.parts:
        report = validate_outputs(
            part.config, part.model, part.runner, preprocessor=preprocessor, inputs=part.reference_inputs, log=lambda _: None
        )
        record_difference(f"{case.id} [{part.name}]", report, arch=case.model_type)
        assert report.passed, f"{part.name}:\n" + "\n".join(report.log_lines())
        assert report.atol == 1e-5
        shapes = report.reference_inputs
        if part is result.parts[0]:
            assert shapes["input_ids"][0] == 3, "validated at another batch size than traced (2)"
        if part.artifact == DECODER_WITH_PAST_FILE:
            past_shapes.add((shapes["input_ids"][0], shapes["past_key_values.0.decoder.key"][2]))
    if with_past:
        assert TRACED_PAST not in past_shapes
        assert {past for _, past in past_shapes} >= {0, 1, 4, 23}
        assert {batch for batch, _ in past_shapes} >= {1, 3, 4}

    checks = backend.run_checks(request, result)
    if case.feature != "seq2seq-lm-with-past":
        assert checks == []
        return
    (parity,) = checks
    assert parity["name"] == "generation parity"
    assert parity["passed"], parity["detail"]
    assert "identical to model.generate" in parity["detail"]
    tokens = np.asarray(parity["onnx_tokens"])
    assert tokens.shape == (2, 17), "16 new tokens after the start token"
    if case.model_type in GENERATION_PARITY_REQUIRED:
        _check_padding_and_other_model(model, config, preprocessor, tmp_path)


def _check_padding_and_other_model(model: Any, config: Any, preprocessor: Any, folder: Path) -> None:
    """A right-padded row generates what it generates alone; the parity check fails for another model."""
    import torch

    settings = GreedySettings.from_model(model, max_new_tokens=8)
    options = {"decoder_start_token_id": decoder_start_token_id(model), "banned_token_ids": banned_token_ids(model)[0]}
    generator = Seq2SeqOnnxGenerator.from_folder(folder)
    inputs = config.encoder_config().generate_reference_inputs(preprocessor, batch_size=2, seq_length=9)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    real = int(mask[1].sum())
    assert 0 < real < ids.shape[1] and mask[0].all()
    together = generator.generate(ids, mask, settings=settings, **options)
    alone = generator.generate(ids[1:, :real], None, settings=settings, **options)
    assert np.array_equal(together[1], alone[0])

    torch.manual_seed(123)
    other = type(model)(model.config).eval()
    failed = generation_parity(other, config, folder, preprocessor)
    assert not failed["passed"]
    assert "differs: ONNX" in failed["detail"]


class _PastLengthBakedIn(Seq2SeqDecoderOnnxConfig):
    """Counts decoder positions from the past length seen while tracing: right only at that length."""

    def model_kwargs(self, inputs: Any) -> dict[str, Any]:
        import torch

        kwargs = super().model_kwargs(inputs)
        cache = kwargs[cache_keyword(self._config)]
        past = inputs["past_key_values.0.decoder.key"]
        seen = int(past.shape[2])  # a Python int: a constant in a trace
        # BART's decoder counts positions from the cache's length; an explicit mask (of the true length, built
        # from tensors) keeps the baked length out of the masks, so only the positions go wrong.
        cache.get_seq_length = lambda layer_idx=0: seen
        kwargs["decoder_attention_mask"] = torch.ones_like(torch.cat([past[:, 0, :, 0], inputs["input_ids"].float()], dim=1))
        return kwargs


def test_an_export_right_only_at_its_traced_past_length_fails_validation(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    case = Case("bart", "seq2seq-lm-with-past")
    model, preprocessor, config = _load(case, tiny_checkpoint)
    baked = _PastLengthBakedIn(config, with_past=True)
    info = export_onnx(model, baked, tmp_path / DECODER_WITH_PAST_FILE, engine="torchscript", opset=17)
    runner = OnnxRuntimeRunner(info.path)

    def validate(**shape: Any) -> Any:
        inputs = baked.generate_inputs(preprocessor, **shape)
        return validate_outputs(baked, model, runner, inputs=inputs, log=lambda _: None)

    at_traced = validate(batch_size=3, encoder_length=9, decoder_length=2, past_length=TRACED_PAST[1])
    assert at_traced.passed, "\n".join(at_traced.log_lines())
    for past_length in (1, 4, 23):
        report = validate(batch_size=3, encoder_length=9, decoder_length=1, past_length=past_length)
        assert not report.passed, f"past {past_length}"
        assert any(f.startswith('output "logits"') for f in report.failures), report.failures
    # The same graph exported as the backend does (its own part config) is right at every past length.
    honest = config.decoder_config(with_past=True)
    info = export_onnx(model, honest, tmp_path / "honest.onnx", engine="torchscript", opset=17)
    inputs = honest.generate_inputs(preprocessor, batch_size=3, encoder_length=9, decoder_length=1, past_length=4)
    assert validate_outputs(honest, model, OnnxRuntimeRunner(info.path), inputs=inputs, log=lambda _: None).passed


# -- configs (no export) --------------------------------------------------------------------------------------
def test_features_follow_the_old_exporter() -> None:
    expected_heads = {"bart", "mbart", "bigbird_pegasus"}
    for model_type, features in _FEATURES.items():
        cls = config_class_for(model_type)
        declared = set(cls.features)
        assert set(features) <= declared, model_type
        assert declared - set(features) <= {"causal-lm", "causal-lm-with-past"}, model_type
        has_causal = model_type not in ("m2m_100", "t5")
        assert ("causal-lm-with-past" in declared) is has_causal, model_type
        assert ("question-answering" in declared) is (model_type in expected_heads), model_type
    assert "sequence-classification" in PLBartOnnxConfig.features, "PLBart has no QA head in Transformers"
    causal = BartOnnxConfig.for_feature(tiny_model_config("bart"), "causal-lm-with-past")
    assert isinstance(causal, BartDecoderOnnxConfig) and causal.use_past


def test_part_configs_declare_the_runtime_layout() -> None:
    config = T5OnnxConfig.for_feature(tiny_model_config("t5", num_decoder_layers=3), "seq2seq-lm-with-past")
    assert config.num_layers == (2, 3)
    assert list(config.encoder_config().inputs) == ["input_ids", "attention_mask"]
    assert list(config.encoder_config().outputs) == ["last_hidden_state"]
    first = config.decoder_config(with_past=False)
    assert list(first.inputs) == ["input_ids", "encoder_attention_mask", "encoder_hidden_states"]
    assert list(first.outputs)[:5] == [
        "logits",
        "present.0.decoder.key",
        "present.0.decoder.value",
        "present.0.encoder.key",
        "present.0.encoder.value",
    ]
    assert len(first.outputs) == 1 + 4 * 3
    later = config.decoder_config(with_past=True)
    assert list(later.inputs)[:4] == [
        "input_ids",
        "encoder_attention_mask",
        "past_key_values.0.decoder.key",
        "past_key_values.0.decoder.value",
    ]
    assert later.inputs["past_key_values.2.encoder.value"] == {0: "batch", 2: "encoder_sequence"}
    assert later.inputs["past_key_values.2.decoder.key"] == {0: "batch", 2: PAST_DECODER_AXIS}
    assert list(later.outputs) == ["logits"] + [f"present.{i}.decoder.{k}" for i in range(3) for k in ("key", "value")]
    arrays = later.generate_inputs(batch_size=2, encoder_length=5, decoder_length=1, past_length=0)
    assert arrays["past_key_values.1.decoder.key"].shape == (2, 4, 0, 8)
    assert arrays["past_key_values.1.encoder.key"].shape == (2, 4, 5, 8)
    assert arrays["encoder_attention_mask"].tolist()[1] == [1, 1, 0, 0, 0]
    with pytest.raises(TypeError, match="no decoder"):
        BartOnnxConfig(tiny_model_config("bart"), task="sequence-classification").decoder_config(with_past=True)


def test_old_single_graph_with_past_layout() -> None:
    """The architecture config itself keeps the old one-graph layout: encoder and decoder inputs plus every past."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_config(tiny_model_config("bart")).eval()
    config = BartOnnxConfig.for_feature(model.config, "seq2seq-lm-with-past")
    assert list(config.inputs)[:5] == [
        "input_ids",
        "attention_mask",
        "decoder_input_ids",
        "decoder_attention_mask",
        "past_key_values.0.decoder.key",
    ]
    assert config.inputs["decoder_attention_mask"] == {0: "batch", 1: "past_decoder_sequence + decoder_sequence"}
    assert list(config.outputs)[:3] == ["logits", "present.0.decoder.key", "present.0.decoder.value"]
    inputs = config.generate_reference_inputs(framework="pt")
    with torch.no_grad():
        values = config.select_outputs(model(**config.model_kwargs(inputs)))
    shapes = dict(zip(config.outputs, (tuple(v.shape) for v in values)))
    assert shapes["logits"] == (3, 1, 99)
    assert shapes["present.1.decoder.key"] == (3, 4, 5, 8)
    assert shapes["present.1.encoder.key"] == (3, 4, 9, 8)


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_classification_dummies_hold_one_eos_per_row(with_tokenizer: bool) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_model_config("bart")).eval()
    config = BartOnnxConfig.for_feature(model.config, "sequence-classification")
    assert list(config.inputs) == ["input_ids", "attention_mask"]
    tokenizer = build_tiny_tokenizer() if with_tokenizer else None
    eos = model.config.eos_token_id
    for inputs in (config.generate_dummy_inputs(tokenizer, framework="np"), config.generate_reference_inputs(tokenizer)):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        assert ((ids == eos) & (mask == 1)).sum(axis=1).tolist() == [1] * ids.shape[0]
        if not with_tokenizer:  # random ids hold no eos: it goes on each row's last real token
            last_real = mask.sum(axis=1) - 1
            assert (ids[np.arange(ids.shape[0]), last_real] == eos).all()
        with torch.no_grad():
            logits = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits
        assert logits.shape == (ids.shape[0], model.config.num_labels)


def test_old_export_call_writes_the_single_graph(tmp_path: Path) -> None:
    """``export(preprocessor, model, config, opset, output)`` with a with-past config: one file, validated."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_config(tiny_model_config("marian", init_std=INIT_STD)).eval()
    config = config_class_for("marian").for_feature(model.config, "seq2seq-lm-with-past")
    inputs, outputs = export(None, model, config, 17, tmp_path / "model.onnx")
    assert inputs == list(config.inputs) and outputs == list(config.outputs)
    report = validate_outputs(config, model, OnnxRuntimeRunner(tmp_path / "model.onnx"), log=lambda _: None)
    assert report.passed, "\n".join(report.log_lines())


def test_generator_feeds_presents_back_and_applies_token_rules() -> None:
    """Fake graphs: the decoder with past gets every present back as past; banned, end, pad and forced tokens."""
    vocab, batch = 6, 2
    fed: list[set[str]] = []

    def encoder(inputs: Any) -> dict[str, np.ndarray]:
        return {"last_hidden_state": np.zeros(inputs["input_ids"].shape + (4,), dtype=np.float32)}

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
    tokens = Seq2SeqOnnxGenerator(encoder, decoder, decoder_with_past).generate(
        np.ones((batch, 3), dtype=np.int64), None, settings=settings, decoder_start_token_id=0, banned_token_ids=(5,)
    )
    # 5 is banned (4 wins, then 0); row 0 ends with eos 2 and is padded with 1; the last token is forced to 3.
    assert tokens.tolist() == [[0, 4, 2, 1, 1], [0, 4, 0, 0, 3]]
    assert fed == [{"past_key_values.0.decoder.key", "past_key_values.0.encoder.key"}] * 3
