"""The Neuron backend as the facade sees it. Cheap to import: torch and the SDK load inside `export`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from typing import Any

from exporter_core.backend import Backend, ExportedPart, ExportRequest, ExportResult
from exporter_core.errors import BackendUnavailableError, UnsupportedFeatureError
from exporter_neuron.commands import add_shape_arguments, configure_analyze
from exporter_neuron.options import AUTO_CAST, AUTO_CAST_TYPES, OPTIONS, NeuronOptions, parse_options
from exporter_neuron.sdk import TARGETS, require_sdk, sdk_problem, unavailable_reason

#: Why Inf1 needs --sdk-python when this process has no working torch-neuron.
INF1_NEEDS_ENVIRONMENT = (
    "--target inf1 needs torch-neuron, which is built for PyTorch 1.13 and runs with Transformers 4.x: it cannot "
    "share a process with exporter (Transformers 5 needs PyTorch 2.6 or newer). Point at an environment that has "
    "it: --sdk-python /opt/aws_neuron_venv_pytorch/bin/python (Deep Learning AMI), or --sdk-python auto"
)

__all__ = ["NeuronBackend"]

logger = logging.getLogger("exporter")


class NeuronBackend(Backend):
    """Compiles for AWS Inferentia / Trainium at a static shape and validates the saved module in a fresh process."""

    name = "neuron"
    display_name = "Neuron"
    default_artifact = "model_neuron.pt"
    option_names = OPTIONS

    @classmethod
    def unavailable_reason(cls, target: str | None = None) -> str | None:
        """Why nothing can be compiled here (for `target`, or for any target when None); read from package metadata."""
        return unavailable_reason(target)

    @classmethod
    def unavailable_reason_for(cls, options: Mapping[str, Any]) -> str | None:
        """With ``sdk_python`` nothing is needed in this process (`check_options` checks that environment);
        ``--target inf1`` needs one unless this process has a working torch-neuron; otherwise the target's SDK."""
        if options.get("sdk_python"):
            return None
        target = options.get("target")
        if target == "inf1" and sdk_problem("inf1") is not None:
            return INF1_NEEDS_ENVIRONMENT
        return unavailable_reason(target if target in TARGETS else None)

    @classmethod
    def environment_notes(cls) -> list[str]:
        """The Deep Learning AMI's Neuron environments found (`exporter_neuron.environments`), each with its
        Python, torch, Transformers and SDK versions: what ``--sdk-python auto`` chooses from."""
        from exporter_neuron.environments import describe_environment, find_environments

        notes = []
        for python in find_environments():
            try:
                notes.append(f"SDK environment (--sdk-python): {describe_environment(python).summary()}")
            except BackendUnavailableError as exc:
                notes.append(f"SDK environment (--sdk-python), not usable: {exc}")
        return notes

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
        parser.add_argument(
            "--compiler-workdir", default=None, metavar="DIR", help="Keep the compiler's intermediate files in DIR."
        )
        parser.add_argument(
            "--sdk-python",
            default=None,
            metavar="PYTHON",
            help="Compile and run on the device in the Neuron SDK's own environment: the python of that "
            "environment (or its folder), or auto for the Deep Learning AMI's aws_neuron(x)_venv_pytorch_*. The "
            "checkpoint is loaded there with that environment's Transformers; the reference and the comparison "
            "stay here. Needed for --target inf1 (torch-neuron needs PyTorch 1.13 and Transformers 4.x).",
        )

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The options `export` reads, as the command line gives them (checked by `check_options`)."""
        return {
            "target": args.target,
            "batch_size": args.batch_size,
            "sequence_length": args.sequence_length,
            "dynamic_batch": args.dynamic_batch,
            "compiler_args": args.compiler_args,
            "auto_cast": args.auto_cast,
            "auto_cast_type": args.auto_cast_type,
            "compiler_workdir": args.compiler_workdir,
            "sdk_python": args.sdk_python,
        }

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Known options with good values (see `exporter_neuron.options`), and the chosen target's SDK installed:
        a mistake, or a missing SDK, is refused before any model is loaded or file written."""
        parsed = parse_options(options)
        if parsed.sdk_python is not None:
            from exporter_neuron.environments import resolve_sdk_python

            resolve_sdk_python(parsed.sdk_python, parsed.target)
        elif parsed.target == "inf1" and sdk_problem("inf1") is not None:
            raise BackendUnavailableError(INF1_NEEDS_ENVIRONMENT)
        else:
            require_sdk(parsed.target)
        return parsed.to_dict()

    @classmethod
    def check_for_architecture(cls, options: Mapping[str, Any], config_cls: type, model_config: Any = None) -> None:
        """A sequence longer than the model's positions is refused before the weights are read."""
        from exporter_torchscript.backend import check_sequence_fits

        check_sequence_fits(options.get("sequence_length"), model_config)

    def export(self, request: ExportRequest) -> ExportResult:
        """Compile the plan's part at the static shape, save it with its metadata, and say where to validate it: at
        the compiled shape, with smaller inputs the loader pads, and with dynamic batching at a larger batch."""
        plan = request.plan
        if plan.static_trace_refusal is not None:
            raise UnsupportedFeatureError(plan.static_trace_refusal)
        from exporter_core.padding import describe_shape
        from exporter_neuron.compiling import compile_for_neuron, save_compiled
        from exporter_neuron.runtime import CompiledModuleRunner
        from exporter_torchscript.static import static_scenarios

        options = parse_options(request.options)
        if options.sdk_python is not None:
            return self._export_in_environment(request, options)
        installed = require_sdk(options.target)
        part = plan.main
        with plan.capture():
            compiled = compile_for_neuron(
                part.module,
                part.config,
                options,
                preprocessor=request.preprocessor,
                feature=plan.feature,
                installed=installed,
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
        # Measured before saving: the padding effect goes into the contract saved with the module.
        scenarios = static_scenarios(
            part.module, part.config, contract, preprocessor=request.preprocessor, larger_batch=metadata.dynamic_batch
        )
        path = request.staging / request.artifact_name
        files = save_compiled(compiled, path)
        exported = ExportedPart(
            name=part.name,
            artifact=request.artifact_name,
            runner=CompiledModuleRunner(path, contract),
            export_inputs=dict(metadata.input_shapes),
            scenarios=scenarios,
        )
        return ExportResult(artifacts=files, parts=[exported], metadata={"files": files, **metadata.to_dict()})

    def _export_in_environment(self, request: ExportRequest, options: NeuronOptions) -> ExportResult:
        """`export` with the SDK in its own interpreter (`exporter_neuron.environments`): compiled and run there,
        the reference and the comparison here."""
        from exporter_neuron.compiling import compile_in_environment
        from exporter_neuron.environments import RemoteModuleRunner, SdkWorker, resolve_sdk_python
        from exporter_neuron.metadata import metadata_path
        from exporter_torchscript.static import static_scenarios

        environment = resolve_sdk_python(str(options.sdk_python), options.target)
        logger.info(f"Neuron SDK environment: {environment.summary()}")
        plan = request.plan
        part = plan.main
        worker = SdkWorker(environment)
        path = request.staging / request.artifact_name
        with plan.capture():
            compiled = compile_in_environment(
                part.module,
                part.config,
                options,
                worker,
                path,
                preprocessor=request.preprocessor,
                feature=plan.feature,
            )
        metadata, contract = compiled.metadata, compiled.contract
        if not metadata.compiled_by_aws_sdk:
            logger.warning(
                f"\t-[!] {metadata.sdk['distribution']} is a stand-in for AWS's SDK: the file is TorchScript traced "
                "on CPU, not a Neuron artifact"
            )
        side_car = metadata_path(path)
        side_car.write_text(metadata.to_json(), encoding="utf-8")
        scenarios = static_scenarios(
            part.module, part.config, contract, preprocessor=request.preprocessor, larger_batch=metadata.dynamic_batch
        )
        runner = RemoteModuleRunner(
            worker, path, contract, sdk_module=str(metadata.sdk["module"]), dynamic_batch=metadata.dynamic_batch
        )
        files = [request.artifact_name, side_car.name]
        exported = ExportedPart(
            name=part.name,
            artifact=request.artifact_name,
            runner=runner,
            export_inputs=dict(metadata.input_shapes),
            scenarios=scenarios,
        )
        return ExportResult(artifacts=files, parts=[exported], metadata={"files": files, **metadata.to_dict()})
