"""Encoder-decoder models in ONNX: the three graphs a runtime drives, their validation, and greedy generation.

A with-past feature (``default-with-past``, ``seq2seq-lm-with-past``) writes ``encoder_model.onnx``,
``decoder_model.onnx`` (the first step: no past in, every present out) and ``decoder_with_past_model.onnx``
(every later step), each exported with `export_onnx` from a part config of the architecture config. Each file
is returned as an `ExportPart` validated at batch 3 with padding; the decoders are validated again at other
batch sizes, decoder lengths and past lengths (an empty past included), so an export that is only right at
its traced shape fails. Features without past write one ``model.onnx`` as the old exporter did.

`Seq2SeqOnnxGenerator` runs greedy decoding over the three files with ONNX Runtime (token choice shared with
the decoder-only runner: `exporter_onnx.generation.greedy_loop`); `generation_parity` compares it with
``model.generate`` token for token (the check ``exporter onnx --feature seq2seq-lm-with-past`` runs).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from exporter_core.backend import ExportPart, ExportRequest, ExportResult

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.architectures.seq2seq import Seq2SeqDecoderOnnxConfig, Seq2SeqOnnxConfig
    from exporter_onnx.generation import GreedySettings

__all__ = [
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_FILE",
    "Seq2SeqOnnxGenerator",
    "attention_for_export",
    "banned_token_ids",
    "decoder_start_token_id",
    "export_seq2seq",
    "generation_parity",
    "is_seq2seq",
    "is_seq2seq_with_past",
    "scenario_parts",
]

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def is_seq2seq(config: Any) -> bool:
    """True for the configs of encoder-decoder architectures (every feature but the decoder-only causal-lm)."""
    from exporter_core.architectures.seq2seq import Seq2SeqOnnxConfig

    return isinstance(config, Seq2SeqOnnxConfig)


def is_seq2seq_with_past(config: Any) -> bool:
    """True when `config` asks for the encoder / decoder / decoder-with-past layout."""
    return is_seq2seq(config) and bool(config.use_past) and config.is_decoding_task


@contextlib.contextmanager
def attention_for_export(model: Any, implementation: str | None) -> Iterator[None]:
    """Switch `model` (and its sub-models) to another attention implementation; restore it in ``finally``."""
    if implementation is None or getattr(model.config, "_attn_implementation", None) == implementation:
        yield
        return
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation(implementation)
        yield
    finally:
        model.set_attn_implementation(previous)


# -- export ------------------------------------------------------------------------------------------------
def _decoder_scenarios(part: Seq2SeqDecoderOnnxConfig) -> list[tuple[str, dict[str, int | bool]]]:
    """(label, shape) pairs a decoder file is validated at besides its reference inputs; none is the traced shape."""
    if part.use_past:
        return [
            ("batch 1, 1 token over a past of 1", dict(batch_size=1, encoder_length=5, decoder_length=1, past_length=1, padded=False)),
            ("batch 4, 3 tokens over a past of 23, padded encoder", dict(batch_size=4, encoder_length=12, decoder_length=3, past_length=23)),
            ("batch 2, empty past", dict(batch_size=2, encoder_length=7, decoder_length=2, past_length=0)),
        ]
    return [("batch 1, 7 decoder tokens over 4 encoder tokens", dict(batch_size=1, encoder_length=4, decoder_length=7, padded=False))]


def scenario_parts(part: ExportPart, preprocessor: Any = None) -> list[ExportPart]:
    """Extra parts validating a decoder file at other shapes (same file, same runner, other reference inputs)."""
    from exporter_core.architectures.seq2seq import Seq2SeqDecoderOnnxConfig

    config = part.config
    if not isinstance(config, Seq2SeqDecoderOnnxConfig):
        return []
    extra = []
    for label, shape in _decoder_scenarios(config):
        inputs = config.generate_inputs(preprocessor, seed=7, framework="np", **shape)  # type: ignore[arg-type]
        extra.append(
            ExportPart(
                name=f"{part.name} ({label})",
                artifact=part.artifact,
                config=config,
                model=part.model,
                runner=part.runner,
                input_names=part.input_names,
                output_names=part.output_names,
                reference_inputs=inputs,
            )
        )
    return extra


def export_seq2seq(request: ExportRequest) -> ExportResult:
    """Export an encoder-decoder model: three files with past, one ``model.onnx`` without."""
    from exporter_onnx.convert import export_onnx
    from exporter_onnx.runtime import OnnxRuntimeRunner

    config: Seq2SeqOnnxConfig = request.config  # type: ignore[assignment]
    opset = request.options.get("opset")
    engine = request.options.get("engine", "auto")
    if is_seq2seq_with_past(config):
        graphs = [
            ("encoder", ENCODER_FILE, config.encoder_config()),
            ("decoder", DECODER_FILE, config.decoder_config(with_past=False)),
            ("decoder_with_past", DECODER_WITH_PAST_FILE, config.decoder_config(with_past=True)),
        ]
    else:
        graphs = [("model", request.artifact_name, config)]
    parts: list[ExportPart] = []
    infos = {}
    with attention_for_export(request.model, config.export_attn_implementation):
        for name, artifact, part_config in graphs:
            module = part_config.module_of(request.model) if hasattr(part_config, "module_of") else request.model
            path = request.staging / artifact
            info = export_onnx(module, part_config, path, opset=opset, engine=engine, preprocessor=request.preprocessor)
            infos[name] = info
            parts.append(
                ExportPart(
                    name=name,
                    artifact=artifact,
                    config=part_config,
                    model=module,
                    runner=OnnxRuntimeRunner(path),
                    input_names=info.input_names,
                    output_names=info.output_names,
                )
            )
    for part in list(parts):
        parts.extend(scenario_parts(part, request.preprocessor))
    files = sorted(p.name for p in request.staging.iterdir() if p.is_file())
    metadata = dict(infos[graphs[0][0]].metadata())
    metadata["files"] = files
    if len(graphs) > 1:
        metadata["layout"] = "encoder-decoder"
        metadata["parts"] = {name: info.metadata() for name, info in infos.items()}
    return ExportResult(artifacts=files, parts=parts, metadata=metadata)


# -- generation ---------------------------------------------------------------------------------------------
def decoder_start_token_id(model: Any) -> int:
    """The token ``generate`` starts every decoded sequence with (generation config, then model config)."""
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "decoder_start_token_id", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    pad = getattr(model.config, "pad_token_id", None)
    return pad if isinstance(pad, int) else 0


def banned_token_ids(model: Any) -> tuple[tuple[int, ...], list[str]]:
    """(tokens ``generate`` never picks for `model`, settings it applies that `Seq2SeqOnnxGenerator` cannot).

    ``suppress_tokens`` and one-token ``bad_words_ids`` (Marian bans its pad token so) are banned on the ONNX side
    too; ``generate`` fills them from the model's generation config whatever the caller passes.
    """
    generation = getattr(model, "generation_config", None)
    banned = [int(v) for v in getattr(generation, "suppress_tokens", None) or []]
    unsupported = [name for name in _UNSUPPORTED_SETTINGS if getattr(generation, name, None) not in (None, [], 1.0)]
    for words in getattr(generation, "bad_words_ids", None) or []:
        if len(words) == 1:
            banned.append(int(words[0]))
        elif "bad_words_ids" not in unsupported:
            unsupported.append("bad_words_ids")
    return tuple(banned), unsupported


#: Generation settings ``generate`` always applies when the checkpoint sets them and the runner does not implement.
_UNSUPPORTED_SETTINGS = ("begin_suppress_tokens", "sequence_bias", "forced_decoder_ids", "guidance_scale")


class Seq2SeqOnnxGenerator:
    """Greedy decoding with the encoder, decoder and decoder-with-past graphs of an encoder-decoder export.

    The encoder runs once; the decoder takes the start token and returns every present tensor; the decoder with
    past then takes one token at a time, with the decoder's growing keys and values and the encoder's fixed ones.
    Token choice (end of sequence, padding, forced tokens) is `exporter_onnx.generation.greedy_loop`'s.
    """

    def __init__(self, encoder: Runner, decoder: Runner, decoder_with_past: Runner) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.decoder_with_past = decoder_with_past

    @classmethod
    def from_folder(cls, folder: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> "Seq2SeqOnnxGenerator":
        """Load ``encoder_model.onnx``, ``decoder_model.onnx`` and ``decoder_with_past_model.onnx`` from `folder`."""
        from exporter_onnx.runtime import OnnxRuntimeRunner

        folder = Path(folder)
        names = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
        return cls(*(OnnxRuntimeRunner(folder / name, providers=providers) for name in names))

    def generate(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None,
        *,
        settings: GreedySettings,
        decoder_start_token_id: int,
        banned_token_ids: Sequence[int] = (),
    ) -> np.ndarray:
        """Decoder token ids (batch, 1 + up to ``settings.max_new_tokens``): the start token, then greedy choices."""
        from exporter_onnx.generation import greedy_loop

        input_ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        banned = list(banned_token_ids)

        def scores_of(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
            scores = np.array(outputs["logits"][:, -1, :], dtype=np.float32)
            if banned:
                scores[:, banned] = -np.inf
            return scores

        hidden = self.encoder({"input_ids": input_ids, "attention_mask": mask})["last_hidden_state"]
        start = np.full((input_ids.shape[0], 1), decoder_start_token_id, dtype=np.int64)
        outputs = self.decoder({"input_ids": start, "encoder_attention_mask": mask, "encoder_hidden_states": hidden})
        past = {_past_name(name): value for name, value in outputs.items() if name.startswith("present.")}

        def step(tokens: np.ndarray) -> np.ndarray:
            result = self.decoder_with_past({"input_ids": tokens, "encoder_attention_mask": mask, **past})
            past.update({_past_name(name): value for name, value in result.items() if name.startswith("present.")})
            return scores_of(result)

        new = greedy_loop(scores_of(outputs), step, settings, prompt_length=1)
        return np.concatenate([start, new], axis=1)


def _past_name(present_name: str) -> str:
    return present_name.replace("present.", "past_key_values.", 1)


def generation_parity(
    model: Any,
    config: Seq2SeqOnnxConfig,
    folder: str | Path,
    preprocessor: Any = None,
    *,
    batch_size: int = 2,
    max_new_tokens: int = 16,
    encoder_length: int = 9,
) -> dict[str, Any]:
    """Greedy generation with the exported files against ``model.generate(do_sample=False)``, token for token.

    The encoder rows have different real lengths (right padding). Returns a check for the report:
    ``{"name": "generation parity", "passed": ..., "detail": ...}`` plus the tokens of both sides.
    """
    from exporter_onnx.generation import GreedySettings, switched_off_settings, torch_greedy

    name = "generation parity"
    settings = GreedySettings.from_model(model, max_new_tokens)
    start = decoder_start_token_id(model)
    banned, unsupported = banned_token_ids(model)
    encoder_inputs = config.encoder_config().generate_reference_inputs(
        preprocessor, batch_size=batch_size, seq_length=encoder_length, framework="np"
    )
    input_ids, attention_mask = encoder_inputs["input_ids"], encoder_inputs["attention_mask"]
    setting = (
        f"batch {batch_size}, encoder rows of {attention_mask.sum(axis=1).tolist()} real tokens right-padded to "
        f"{encoder_length}, greedy from start token {start}"
    )
    off = switched_off_settings(model)
    if off:
        setting += "; not applied on either side: " + ", ".join(f"{k}={v}" for k, v in off.items())
    if unsupported:
        setting += "; applied by generate only: " + ", ".join(unsupported)
    try:
        generator = Seq2SeqOnnxGenerator.from_folder(folder)
        got = generator.generate(
            input_ids, attention_mask, settings=settings, decoder_start_token_id=start, banned_token_ids=banned
        )
    except Exception as exc:  # a runtime failure is a failed check, reported with its reason
        return {"name": name, "passed": False, "detail": f"ONNX Runtime decoding failed: {type(exc).__name__}: {exc}"}
    expected = torch_greedy(model, input_ids, attention_mask, settings)
    passed = got.shape == expected.shape and bool(np.array_equal(got, expected))
    if passed:
        detail = f"{got.shape[1] - 1} new tokens per row identical to model.generate ({setting})"
    else:
        detail = f"{_first_difference(expected, got)} ({setting})"
    return {"name": name, "passed": passed, "detail": detail, "expected_tokens": expected.tolist(), "onnx_tokens": got.tolist()}


def _first_difference(expected: np.ndarray, got: np.ndarray) -> str:
    for index in range(min(expected.shape[1], got.shape[1])):
        rows = np.nonzero(expected[:, index] != got[:, index])[0]
        if rows.size:
            row = int(rows[0])
            return f"token {index} of row {row} differs: ONNX {int(got[row, index])}, model.generate {int(expected[row, index])}"
    return f"ONNX produced {got.shape[1]} tokens per row, model.generate {expected.shape[1]}"
