"""The Neuron backend as the facade sees it. Cheap to import: torch and the SDK load inside `export`."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

from exporter_core.backend import Backend, ExportPart, ExportRequest, ExportResult
from exporter_neuron.commands import add_shape_arguments, configure_analyze
from exporter_neuron.options import AUTO_CAST, AUTO_CAST_TYPES, check_options
from exporter_neuron.sdk import require_sdk, unavailable_reason

__all__ = ["NeuronBackend"]

logger = logging.getLogger("exporter")


class NeuronBackend(Backend):
    """Compiles for AWS Inferentia / Trainium at a static shape and validates the saved module in a fresh process."""

    name = "neuron"
    display_name = "Neuron"
    default_artifact = "model_neuron.pt"

    @classmethod
    def unavailable_reason(cls, target: str | None = None) -> str | None:
        """Why nothing can be compiled here (for `target`, or for any target when None); read from package metadata."""
        return unavailable_reason(target)

    @classmethod
    def subcommands(cls) -> dict[str, Callable[[argparse.ArgumentParser], None]]:
        """Sub-actions of ``exporter neuron``: name -> function that adds its arguments and sets ``func``."""
        return {"analyze": configure_analyze}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """``--target``, the static shape, dynamic batching, casting and compiler options."""
        parser.epilog = (
            "Compiles OUTPUT/model_neuron.pt for one static shape. To see which operators run on Neuron and which "
            "fall back to CPU first: exporter neuron analyze --model M [--target T] (see --help there). The SDK "
            "comes from AWS's index: pip install torch-neuronx (inf2, trn1) or torch-neuron (inf1) "
            "--extra-index-url https://pip.repos.neuron.amazonaws.com"
        )
        add_shape_arguments(parser)
        parser.add_argument(
            "--dynamic-batch",
            action="store_true",
            help="Accept any batch size: the SDK splits a batch into chunks of the compiled batch size "
            "(inf1: dynamic_batch_size=True; inf2/trn1: torch_neuronx.dynamic_batch).",
        )
        parser.add_argument(
            "--auto-cast",
            choices=AUTO_CAST,
            default=None,
            help="Cast FP32 operations to a faster type: none, matmul (matrix multiplications) or all "
            "(inf2/trn1: --auto-cast; inf1: --fast-math). Default: the compiler's own.",
        )
        parser.add_argument(
            "--auto-cast-type",
            choices=AUTO_CAST_TYPES,
            default=None,
            help="Type to cast to with --auto-cast matmul/all (default bf16; tf32 on inf2/trn1 only).",
        )
        parser.add_argument(
            "--compiler-args",
            default=None,
            metavar="ARGS",
            help="More compiler arguments, passed through as one quoted string: --compiler-args='--optlevel 2'.",
        )
        parser.add_argument("--compiler-workdir", default=None, metavar="DIR", help="Keep the compiler's intermediate files in DIR.")

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The options `export` reads, checked, after checking the chosen target's SDK (raises `UserError`)."""
        options = {
            "target": args.target,
            "batch_size": args.batch_size,
            "sequence_length": args.sequence_length,
            "dynamic_batch": args.dynamic_batch,
            "compiler_args": args.compiler_args,
            "auto_cast": args.auto_cast,
            "auto_cast_type": args.auto_cast_type,
            "compiler_workdir": args.compiler_workdir,
        }
        # Refuse a mistake, or a missing SDK for the chosen target, before any model is loaded or file written.
        require_sdk(check_options(options).target)
        return options

    def export(self, request: ExportRequest) -> ExportResult:
        """Compile at the static shape, save with metadata, and describe the validation runs (compiled shape, padded, batch)."""
        from exporter_core.padding import describe_shape
        from exporter_neuron.compiling import compile_for_neuron, example_inputs, save_compiled
        from exporter_neuron.runtime import CompiledModuleRunner
        from exporter_torchscript.reference import PaddedReference, padding_effect
        from exporter_torchscript.tracing import reference_shapes

        options = check_options(request.options)
        installed = require_sdk(options.target)
        config = request.config
        compiled = compile_for_neuron(
            request.model, config, options, preprocessor=request.preprocessor, feature=request.feature, installed=installed
        )
        metadata, contract = compiled.metadata, compiled.contract
        logger.info(
            f"Compiled for {metadata.target} with {metadata.trace_function} ({installed.distribution} {installed.version}) "
            f"at {describe_shape(metadata.static_shape)}{' with dynamic batch' if metadata.dynamic_batch else ''}; "
            f"compiler arguments: {' '.join(metadata.compiler_args) or 'none'}"
        )
        if not installed.is_aws:
            logger.warning(
                f"\t-[!] {installed.distribution} is a stand-in for AWS's {installed.sdk.distribution}: the file is "
                "TorchScript traced on CPU, not a Neuron artifact"
            )
        path = request.staging / request.artifact_name
        files = save_compiled(compiled, path)
        runner = CompiledModuleRunner(path)
        # The saved file runs at the compiled shape (rows of several lengths), then with smaller inputs that the
        # loader pads up to it, and with dynamic batching at a larger batch. Padded calls are compared with the
        # unpadded model unless padding by itself changes this model's outputs (then with the padded model).
        inputs_sets = reference_shapes(config, metadata.static_shape, request.preprocessor)
        if metadata.dynamic_batch:
            batch = metadata.static_shape.get("batch", 1)
            larger = example_inputs(
                config, request.preprocessor, 2 * batch + 1, metadata.static_shape.get("sequence", -1), framework="np", seed=5
            )
            inputs_sets.append((f"larger batch ({2 * batch + 1}) through dynamic batching", larger))
        parts = []
        for index, (label, inputs) in enumerate(inputs_sets):
            reference_model = request.model
            if index > 0 and contract.static_shape:
                effect = padding_effect(request.model, config, inputs, contract.static_shape, contract.pad_token_id)
                if effect > config.atol_for_validation:
                    logger.warning(
                        "\t-[!] padding changes %s's outputs at real positions by up to %.2e (the model mixes positions "
                        "outside attention); padded calls are validated against the model on the same padded inputs",
                        type(request.model).__name__,
                        effect,
                    )
                    reference_model = PaddedReference(request.model, config, contract.static_shape, contract.pad_token_id)
                    label += f" (padding changes this model's outputs by up to {effect:.2e}: compared with the model on the same padded inputs)"
            parts.append(
                ExportPart(
                    name=label,
                    artifact=request.artifact_name,
                    config=config,
                    model=reference_model,
                    runner=runner,
                    input_names=list(metadata.input_names),
                    output_names=list(metadata.output_names),
                    reference_inputs=inputs,
                )
            )
        return ExportResult(artifacts=files, parts=parts, metadata={"files": files, **metadata.to_dict()})
