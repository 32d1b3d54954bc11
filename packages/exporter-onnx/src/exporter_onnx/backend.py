"""The ONNX backend as the facade sees it. Cheap to import: torch and onnx load inside `export`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter_core.backend import Backend, ExportedPart, ExportRequest, ExportResult, Retry, refuse_unknown_options
from exporter_core.errors import (
    InvalidArgumentError,
    OpsetError,
    UnsupportedFeatureError,
    did_you_mean,
    option_hint,
)
from exporter_core.progress import stage

__all__ = ["OnnxBackend"]

ENGINES = ("auto", "dynamo", "torchscript")


class OnnxBackend(Backend):
    """Exports to ONNX with ``torch.onnx`` and runs the file with ONNX Runtime for validation."""

    name = "onnx"
    display_name = "ONNX"
    default_artifact = "model.onnx"
    option_names = (
        "opset",
        "engine",
        "optimize",
        "quantize",
        "dtype",
        "calibration",
        "block_size",
        "device",
        "merge",
        "stream_weights",
    )

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
            help="Graph capture: 'auto' (default: the TorchScript-based exporter for text encoders and classifiers "
            "(no cache, token inputs) up to opset 20 and for any model below opset 18, exported again with torch.export "
            "if the traced graph fails validation; torch.export otherwise), 'dynamo' (torch.export, opset >= 18) or "
            "'torchscript' (opsets <= 20).",
        )
        # Choices are checked by check_options (one error line, exit 2), not by argparse.
        parser.add_argument(
            "--optimize",
            metavar="O1|O2|O3",
            default=None,
            help="Write onnxruntime's transformer-optimizer fusions: O1 layer-norm and GELU fusions, O2 also "
            "attention, O3 also the tanh GELU approximation (looser tolerance). Validated like the plain graph.",
        )
        parser.add_argument(
            "--quantize",
            metavar="int8|int4",
            default=None,
            help="int8: per-channel int8 weights, dynamic (static with --calibration); int4: weight-only "
            "MatMulNBits in blocks of --block-size. Validated with a stated looser tolerance and task-level checks.",
        )
        parser.add_argument(
            "--dtype",
            metavar="fp32|fp16|bf16",
            default=None,
            help="Float type of the graph's weights and arithmetic (inputs and outputs stay float32); bf16 is "
            "refused where onnxruntime's CPU cannot run it.",
        )
        parser.add_argument(
            "--calibration",
            metavar="FILE",
            default=None,
            help="Text file of sentences, one a line, tokenized with the checkpoint's tokenizer: --quantize int8 "
            "becomes static quantization calibrated on them.",
        )
        parser.add_argument(
            "--block-size",
            dest="block_size",
            metavar="N",
            default=None,
            help="Block size of --quantize int4 along each weight's input dimension (a power of two, default 32).",
        )
        parser.add_argument(
            "--device",
            metavar="cpu|cuda",
            default=None,
            help="Execution provider --optimize prepares the fusions for (default cpu); the file is validated on "
            "the CPU.",
        )
        parser.add_argument(
            "--no-merge",
            dest="merge",
            action="store_false",
            help="Encoder-decoders with past: write the first decoder step and the step with past as two files "
            "(decoder_model.onnx, decoder_with_past_model.onnx, each with the decoder's weights) instead of one "
            "decoder_model_merged.onnx holding both with the weights stored once.",
        )
        parser.add_argument(
            "--stream-weights",
            dest="stream_weights",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Capture on fake weights and write the checkpoint's safetensors into external data one tensor at a "
            "time (default: when the checkpoint holds 1 GiB or more and the dynamo engine is used).",
        )

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        options = {"opset": args.opset, "engine": args.engine}
        for name in ("optimize", "quantize", "dtype", "calibration", "block_size", "device"):
            if getattr(args, name, None) is not None:
                options[name] = getattr(args, name)
        if getattr(args, "merge", True) is False:
            options["merge"] = False
        if getattr(args, "stream_weights", None) is not None:
            options["stream_weights"] = args.stream_weights
        return options

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``opset`` (an int or None: the architecture's), ``engine`` (auto, dynamo, torchscript) and the variant
        (``optimize``, ``quantize``, ``dtype``, ``calibration``, ``block_size``, ``device``: `VariantOptions`),
        ``merge`` (default True: the two decoder steps of an encoder-decoder with past in one file),
        ``stream_weights`` (None: streamed when the checkpoint is large, `exporter_onnx.streaming.choose_streaming`)."""
        from exporter_onnx.variants import check_variant_options

        refuse_unknown_options(cls.name, options, cls.option_names or ())
        variant = check_variant_options(options)
        opset = options.get("opset")
        if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool)):
            raise InvalidArgumentError(
                f"opset must be an integer, got {opset!r}; for example {option_hint('opset', 18)}"
            )
        merge = options.get("merge", True)
        if not isinstance(merge, bool):
            raise InvalidArgumentError(f"merge must be True or False, got {merge!r}")
        engine = options.get("engine") or "auto"
        if engine not in ENGINES:
            raise InvalidArgumentError(
                f"unknown engine {engine!r}{did_you_mean(str(engine), ENGINES)}; use {', '.join(ENGINES)}"
            )
        if opset is not None:
            # An opset no engine (or not this engine, or not the installed onnx) writes is refused here, before a
            # model is loaded; the architecture's own lowest opset is checked once its config is known.
            from exporter_onnx.engines import choose_engine, max_opset

            if opset < 1:
                raise InvalidArgumentError(
                    f"opset must be a positive integer, got {opset}; for example {option_hint('opset', 18)}"
                )
            choose_engine(opset, engine)
            highest = max_opset()
            if opset > highest:
                raise OpsetError(
                    f"opset {opset} is newer than the installed onnx/onnxruntime support ({highest}); "
                    f"pass {option_hint('opset', highest)} or lower"
                )
        from exporter_onnx.streaming import check_stream_option

        streaming = {"stream_weights": check_stream_option(options)}
        return {"opset": opset, "engine": engine, **variant.options(), "merge": merge, **streaming}

    @classmethod
    def check_for_architecture(cls, options: Mapping[str, Any], config_cls: type, model_config: Any = None) -> None:
        """An opset below the architecture's lowest is refused naming the operator that needs it; ``--optimize``
        for a model type onnxruntime's optimizer has no fusions for, naming the types it has."""
        from exporter_onnx.variants import optimizer_refusal

        model_type = getattr(model_config, "model_type", None)
        if options.get("optimize") and isinstance(model_type, str):
            reason = optimizer_refusal(model_type)
            if reason:
                raise UnsupportedFeatureError(reason)
        opset = options.get("opset")
        lowest = getattr(config_cls, "min_onnx_opset", None)
        if opset is not None and isinstance(lowest, int) and opset < lowest:
            reason = getattr(config_cls, "min_onnx_opset_reason", "")
            raise OpsetError(
                f"opset {opset} is too low for {config_cls.__name__}: it needs at least {lowest}"
                f"{f' ({reason})' if reason else ''}; pass {option_hint('opset', lowest)} or higher"
            )

    @classmethod
    def holds_checkpoint_dtype(cls, options: Mapping[str, Any], folder: Path, config_cls: type | None = None) -> bool:
        """True when the weights will be streamed from `folder`'s checkpoint (`streaming_checkpoint`'s rule, at the
        opset asked for or the architecture's default): the capture then runs on fake float32 weights and the
        model is only the validation's reference, which a half-precision checkpoint can be without a float32 copy
        of it."""
        from exporter_onnx.engines import DYNAMO_MIN_OPSET
        from exporter_onnx.streaming import streaming_checkpoint

        opset = options.get("opset") or getattr(config_cls, "default_opset", None)
        checkpoint, _ = streaming_checkpoint(
            options.get("stream_weights"), folder, options.get("engine", "auto"), opset, DYNAMO_MIN_OPSET
        )
        return checkpoint is not None

    def export(self, request: ExportRequest) -> ExportResult:
        """Export every part of the plan to its own file (external data beside it when large); the two decoder
        steps of an encoder-decoder with past then become one file (`exporter_onnx.merge`) unless ``merge`` is off."""
        from exporter_onnx.convert import export_onnx
        from exporter_onnx.engines import DYNAMO_MIN_OPSET
        from exporter_onnx.runtime import OnnxRuntimeRunner
        from exporter_onnx.streaming import choose_streaming, runner_options
        from exporter_onnx.variants import check_variant_options, with_checkpoint_dtype

        options = self.check_options(request.options)
        plan = request.plan
        parameters = getattr(plan.model, "parameters", None)
        fp32_bytes = 4 * sum(p.numel() for p in parameters()) if plan.checkpoint_dtype and parameters else 0
        variant, dtype_reason = with_checkpoint_dtype(check_variant_options(options), plan.checkpoint_dtype, fp32_bytes)
        written = {}
        infos = {}
        variants: dict[str, dict[str, Any]] = {}
        # Weights streamed from the checkpoint into external data when it is large (exporter_onnx.streaming).
        weights, _ = choose_streaming(
            options["stream_weights"], plan.model, options["engine"], options["opset"], DYNAMO_MIN_OPSET
        )
        with plan.capture():
            for part in plan.parts:
                artifact = part.artifact_name(request.artifact_name)
                path = request.staging / artifact
                with stage(f"convert {part.name}"):
                    info = export_onnx(
                        part.module,
                        part.config,
                        path,
                        opset=options["opset"],
                        engine=options["engine"],
                        preprocessor=request.preprocessor,
                        weights=weights,
                    )
                infos[part.name] = info
                written[part.name] = artifact
                if variant.active:
                    from exporter_onnx.variants import apply_variant

                    with stage(f"{variant.label} {part.name}"):
                        variants[part.name] = apply_variant(
                            path, variant, model_type=plan.model_type, part=part, preprocessor=request.preprocessor
                        )
        if weights is not None:
            weights.close()  # validation reads the checkpoint through the model's own memory map
        metadata: dict[str, Any] = {}
        if plan.checkpoint_dtype is not None:
            exported_dtype = variant.quantize or variant.dtype or "fp32"
            metadata["dtype"] = {"checkpoint": plan.checkpoint_dtype, "exported": exported_dtype}
            if dtype_reason:
                metadata["dtype"]["reason"] = dtype_reason
            if weights is not None and weights.held:
                metadata["dtype"]["reference"] = f"{weights.held} weights computed in float32 module by module"
        sessions = {name: runner_options(info if not variant.active else None) for name, info in infos.items()}
        parts = self._merged_parts(request, written, metadata, sessions) if options["merge"] else {}
        for part in plan.parts:
            if part.name not in parts:
                parts[part.name] = ExportedPart(
                    name=part.name,
                    artifact=written[part.name],
                    runner=OnnxRuntimeRunner(request.staging / written[part.name], **sessions[part.name]),
                )
            parts[part.name].export_inputs = dict(infos[part.name].input_shapes)
            parts[part.name].tolerance = variant.tolerance()
        files = sorted(p.name for p in request.staging.iterdir() if p.is_file())
        metadata = {**infos[plan.main.name].metadata(), **metadata}
        metadata["files"] = files
        if len(plan.parts) > 1:
            metadata["parts"] = {name: info.metadata() for name, info in infos.items()}
            for name, exported in parts.items():
                if exported.artifact != written[name]:
                    metadata["parts"][name]["merged_into"] = exported.artifact
        checks = []
        if variant.active:
            # A variant is also judged by what its outputs are for: cosine of embeddings, top-1 of logits.
            from exporter_validate.task_checks import task_checks

            metadata["variant"] = variants[plan.main.name] if len(plan.parts) == 1 else variants
            checks = task_checks(plan, request.preprocessor, variant.label, variant.thresholds())
        # Text parts were traced by the TorchScript engine for speed (exporter_onnx.convert): should one fail
        # validation, the plan is exported again with the dynamo engine.
        traced = [
            name
            for name, info in infos.items()
            if info.engine == "torchscript" and info.opset >= DYNAMO_MIN_OPSET and info.fallback_reason is None
        ]
        retry = None
        if options["engine"] == "auto" and traced:
            retry = Retry(
                options={"engine": "dynamo"},
                reason=f"the TorchScript engine traced {', '.join(traced)} for speed and the graph failed validation; "
                "the dynamo engine captures shapes symbolically",
            )
        return ExportResult(
            artifacts=files,
            parts=[parts[part.name] for part in plan.parts],
            metadata=metadata,
            checks=checks,
            retry=retry,
        )

    @staticmethod
    def _merged_parts(
        request: ExportRequest,
        written: Mapping[str, str],
        metadata: dict[str, Any],
        sessions: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, ExportedPart]:
        """Merge the plan's two decoder steps, if it has them, into one file; return the parts it now serves, each
        run through its branch (so every scenario and check of both parts runs the merged file). `sessions`: the
        `OnnxRuntimeRunner` settings of each part (a streamed export's keep the weights memory-mapped)."""
        from exporter_onnx.merge import decoder_pair, merge_decoders, merged_artifact_name
        from exporter_onnx.runtime import MergedDecoderStep, OnnxRuntimeRunner

        pair = decoder_pair(request.plan)
        if pair is None:
            return {}
        no_past, with_past = pair
        artifact = merged_artifact_name(written[no_past.name])
        with stage(f"merge {no_past.name} and {with_past.name}"):
            info = merge_decoders(
                request.staging / written[no_past.name],
                request.staging / written[with_past.name],
                request.staging / artifact,
            )
        runner = OnnxRuntimeRunner(info.path, **sessions.get(no_past.name, {}))
        metadata["merged"] = {"file": artifact, "parts": [no_past.name, with_past.name], **info.metadata()}
        return {
            part.name: ExportedPart(
                name=part.name,
                artifact=artifact,
                runner=MergedDecoderStep(
                    runner, use_cache=part is with_past, inputs=part.input_names, outputs=part.output_names
                ),
            )
            for part in pair
        }
