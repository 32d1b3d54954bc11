"""The TorchScript backend as the facade sees it. Cheap to import: torch loads inside `export`."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from exporter_core.backend import Backend, ExportPart, ExportRequest, ExportResult
from exporter_core.errors import InvalidArgumentError

__all__ = ["TorchScriptBackend", "check_options"]

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
        from exporter_torchscript.runtime import SavedModuleRunner
        from exporter_torchscript.tracing import reference_shapes, save_traced, trace_for_export

        options = check_options(request.options)
        traced = trace_for_export(
            request.model,
            request.config,
            batch_size=options["batch_size"],
            sequence_length=options["sequence_length"],
            preprocessor=request.preprocessor,
            feature=request.feature,
        )
        path = request.staging / request.artifact_name
        files = save_traced(traced.module, traced.metadata, path)
        runner = SavedModuleRunner(path)
        metadata = traced.metadata
        parts = []
        # Validation runs the saved file at the traced shape (rows of several lengths, padded), then with
        # smaller inputs that the loader pads up to the traced shape.
        for label, inputs in reference_shapes(request.config, metadata.static_shape, request.preprocessor):
            parts.append(
                ExportPart(
                    name=label,
                    artifact=request.artifact_name,
                    config=request.config,
                    model=request.model,
                    runner=runner,
                    input_names=list(metadata.input_names),
                    output_names=list(metadata.output_names),
                    reference_inputs=inputs,
                )
            )
        return ExportResult(artifacts=files, parts=parts, metadata={"files": files, **metadata.to_dict()})
