"""Greedy generation with exported ONNX files: the ONNX Runtime front ends of `exporter_core.generation`.

`OnnxCausalLM` drives a decoder exported with past key values (``causal-lm-with-past``, one file);
`Seq2SeqOnnxGenerator` the encoder and decoder files of an encoder-decoder: ``decoder_model_merged.onnx`` (both
decoder steps in one file, the default) or ``decoder_model.onnx`` and ``decoder_with_past_model.onnx``
(``--no-merge``). Token choice, the loop and the parity checks are core's, shared with every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exporter_core.architectures.seq2seq import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE
from exporter_core.cache import CacheLayout
from exporter_core.generation import CausalLMGenerator, GreedySettings, Seq2SeqGenerator, greedy_loop, torch_greedy
from exporter_onnx.merge import merged_artifact_name
from exporter_onnx.runtime import MergedDecoderStep, OnnxRuntimeRunner

__all__ = ["GreedySettings", "OnnxCausalLM", "Seq2SeqOnnxGenerator", "greedy_loop", "layout_of", "torch_greedy"]


def layout_of(runner: OnnxRuntimeRunner) -> CacheLayout:
    """The cache layout an ONNX decoder file declares: heads and head size of every cached layer."""
    layout = CacheLayout.from_past_shapes({i.name: i.shape for i in runner.session.get_inputs()})
    if not layout.layers or "logits" not in runner.output_names:
        raise ValueError(
            "this ONNX file has no past key value inputs or no logits output; export it with --feature causal-lm-with-past"
        )
    return layout


class OnnxCausalLM(CausalLMGenerator):
    """A decoder exported with past key values (``causal-lm-with-past``), driven step by step with its cache."""

    def __init__(self, model: str | Path | OnnxRuntimeRunner) -> None:
        runner = model if isinstance(model, OnnxRuntimeRunner) else OnnxRuntimeRunner(model)
        super().__init__(runner, layout_of(runner))


class Seq2SeqOnnxGenerator(Seq2SeqGenerator):
    """Greedy decoding over ``encoder_model.onnx`` and the decoder: ``decoder_model_merged.onnx`` (each step through
    its branch), or ``decoder_model.onnx`` and ``decoder_with_past_model.onnx``."""

    @classmethod
    def from_folder(
        cls, folder: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> Seq2SeqOnnxGenerator:
        """Load the encoder and the merged decoder from `folder`, or the two decoder files where there is no merged
        one."""
        folder = Path(folder)
        encoder = OnnxRuntimeRunner(folder / ENCODER_FILE, providers=providers)
        merged = folder / merged_artifact_name(DECODER_FILE)
        if merged.is_file():
            runner = OnnxRuntimeRunner(merged, providers=providers)
            return cls(encoder, MergedDecoderStep(runner, use_cache=False), MergedDecoderStep(runner, use_cache=True))
        names = (DECODER_FILE, DECODER_WITH_PAST_FILE)
        return cls(encoder, *(OnnxRuntimeRunner(folder / name, providers=providers) for name in names))
