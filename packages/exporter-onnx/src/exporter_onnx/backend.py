"""The ONNX backend as the facade sees it. Cheap to import: torch and onnx load inside `export`."""

from __future__ import annotations

import argparse
from typing import Any

from exporter_core.backend import Backend, ExportPart, ExportRequest, ExportResult

__all__ = ["OnnxBackend"]

ENGINES = ("auto", "dynamo", "torchscript")


class OnnxBackend(Backend):
    """Exports to ONNX with ``torch.onnx`` and runs the file with ONNX Runtime for validation."""

    name = "onnx"
    display_name = "ONNX"
    default_artifact = "model.onnx"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--opset",
            type=int,
            default=None,
            help="ONNX opset version to export the model with (default: the architecture's, 18 for most).",
        )
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="auto",
            help="Graph capture: 'dynamo' (torch.export, the default for opset >= 18), 'torchscript' (the "
            "TorchScript-based exporter, used for opsets below 18), or 'auto' (default).",
        )

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"opset": args.opset, "engine": args.engine}

    def export(self, request: ExportRequest) -> ExportResult:
        from exporter_onnx.seq2seq import export_seq2seq, is_seq2seq

        if is_seq2seq(request.config):
            # Encoder-decoders: with past, encoder / decoder / decoder-with-past files; without, one model.onnx.
            return export_seq2seq(request)
        from exporter_onnx.convert import export_onnx
        from exporter_onnx.decoders import has_past_scenarios, validation_parts
        from exporter_onnx.runtime import OnnxRuntimeRunner

        path = request.staging / request.artifact_name
        info = export_onnx(
            request.model,
            request.config,
            path,
            opset=request.options.get("opset"),
            engine=request.options.get("engine", "auto"),
            preprocessor=request.preprocessor,
        )
        part = ExportPart(
            name="model",
            artifact=request.artifact_name,
            config=request.config,
            model=request.model,
            runner=OnnxRuntimeRunner(path),
            input_names=info.input_names,
            output_names=info.output_names,
        )
        parts = [part]
        if has_past_scenarios(request.config):
            # One part per input set: other batch sizes and past lengths, an empty past included.
            parts = validation_parts(part, request.preprocessor)
        return ExportResult(artifacts=info.files, parts=parts, metadata=info.metadata())

    def run_checks(self, request: ExportRequest, result: ExportResult) -> list[dict[str, Any]]:
        """Generation parity for ``causal-lm-with-past``: greedy decoding with the file equals ``model.generate``."""
        checks: list[dict[str, Any]] = []
        if request.feature == "seq2seq-lm-with-past":
            from exporter_onnx.seq2seq import generation_parity

            checks.append(generation_parity(request.model, request.config, request.staging, request.preprocessor))
        if request.feature == "causal-lm-with-past":
            from exporter_onnx.generation import causal_lm_parity_check

            checks.append(
                causal_lm_parity_check(request.model, request.config, result.parts[0].runner, request.preprocessor)
            )
        return checks
