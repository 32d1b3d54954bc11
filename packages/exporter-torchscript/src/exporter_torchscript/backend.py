"""The TorchScript backend as the facade sees it. Cheap to import: torch loads inside `export`."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Mapping

from exporter_core.backend import Backend, ExportPart, ExportRequest, ExportResult
from exporter_core.errors import InvalidArgumentError, UnsupportedFeatureError

__all__ = ["TorchScriptBackend", "check_options"]

logger = logging.getLogger("exporter")

#: Options `export` reads from `ExportRequest.options`.
OPTIONS = ("batch_size", "sequence_length")


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        flag = "--" + name.replace("_", "-")
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}; for example {flag} 16")
    return value


def check_options(options: Mapping[str, Any]) -> dict[str, int | None]:
    """The backend's options, checked: known names only, sizes positive integers (None = the config's default)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidArgumentError(
            f"the torchscript backend has no option {', '.join(map(repr, unknown))}; its options are {', '.join(OPTIONS)}"
        )
    checked = {name: _positive(name, options.get(name)) for name in OPTIONS}
    if checked["sequence_length"] is not None and checked["sequence_length"] < 2:
        raise InvalidArgumentError("sequence_length must be at least 2 (room for the special tokens); for example --sequence-length 16")
    return checked


class TorchScriptBackend(Backend):
    """Traces with ``torch.jit.trace`` at a declared maximum shape and validates the saved file in a fresh process."""

    name = "torchscript"
    display_name = "TorchScript"
    default_artifact = "model.pt"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Largest batch the saved module accepts: it is traced at this size and smaller batches are "
            "padded (default: the architecture's, 2 for most).",
        )
        parser.add_argument(
            "--sequence-length",
            type=int,
            default=None,
            help="Largest sequence length (special tokens included) the saved module accepts; shorter inputs are "
            "padded (default: the architecture's, 8 for most).",
        )

    @classmethod
    def options_from_arguments(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"batch_size": args.batch_size, "sequence_length": args.sequence_length}

    def export(self, request: ExportRequest) -> ExportResult:
        from exporter_torchscript.reference import PaddedReference, padding_effect
        from exporter_torchscript.runtime import SavedModuleRunner
        from exporter_torchscript.tracing import reference_shapes, save_traced, trace_for_export

        options = check_options(request.options)
        config = request.config
        if getattr(config, "use_past", False):
            raise UnsupportedFeatureError(
                f"the torchscript backend does not export {request.feature!r}: a trace fixes the past length and a "
                "cache cannot be padded like text; export the feature without -with-past, or use the onnx backend"
            )
        traced = trace_for_export(
            request.model,
            config,
            batch_size=options["batch_size"],
            sequence_length=options["sequence_length"],
            preprocessor=request.preprocessor,
            feature=request.feature,
        )
        metadata = traced.metadata
        # Validation runs the saved file at the traced shape (rows of several lengths, padded), then with smaller
        # inputs that the loader pads up to the traced shape. Those are compared with the unpadded model, unless
        # padding by itself changes this model's outputs (then with the model on the same padded inputs).
        parts_inputs = []
        for index, (label, inputs) in enumerate(reference_shapes(config, metadata.static_shape, request.preprocessor)):
            reference_model = request.model
            if index > 0:
                effect = padding_effect(
                    request.model, config, inputs, metadata.static_shape, metadata.pad_token_id, metadata.padding_side
                )
                changes = effect > config.atol_for_validation
                metadata.padding_effect = {
                    "shape": {name: list(value.shape) for name, value in inputs.items()},
                    "max_abs_diff": effect,
                    "changes_outputs": changes,
                }
                if changes:
                    logger.warning(
                        "\t-[!] padding changes %s's outputs at real positions by up to %.2e (a property of the "
                        "model, not of TorchScript); padded calls are validated against the model on the same "
                        "padded inputs",
                        type(request.model).__name__,
                        effect,
                    )
                    reference_model = PaddedReference(
                        request.model, config, metadata.static_shape, metadata.pad_token_id, metadata.padding_side
                    )
                    label += f" (padding changes this model's outputs by up to {effect:.2e}: compared with the model on the same padded inputs)"
            parts_inputs.append((label, inputs, reference_model))
        path = request.staging / request.artifact_name
        files = save_traced(traced.module, metadata, path)
        runner = SavedModuleRunner(path)
        parts = [
            ExportPart(
                name=label,
                artifact=request.artifact_name,
                config=config,
                model=reference_model,
                runner=_Announced(runner, f"Running {request.artifact_name} in a fresh process: {label}"),
                input_names=list(metadata.input_names),
                output_names=list(metadata.output_names),
                reference_inputs=inputs,
            )
            for label, inputs, reference_model in parts_inputs
        ]
        return ExportResult(artifacts=files, parts=parts, metadata={"files": files, **metadata.to_dict()})


class _Announced:
    """A runner that logs which validation it serves before running (the pipeline logs parts alike)."""

    def __init__(self, runner: Callable[[Mapping[str, Any]], dict[str, Any]], line: str) -> None:
        self.runner = runner
        self.line = line

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        logger.info(self.line)
        return self.runner(inputs)
