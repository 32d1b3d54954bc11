"""The TorchScript backend as the facade sees it. Cheap to import: torch loads inside `export`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from exporter_core.backend import Backend, ExportedPart, ExportRequest, ExportResult, refuse_unknown_options
from exporter_core.errors import InvalidArgumentError, UnsupportedFeatureError, option_hint

__all__ = ["TorchScriptBackend", "check_sequence_fits"]

#: Options `export` reads from `ExportRequest.options`.
OPTIONS = ("batch_size", "sequence_length")


def check_sequence_fits(sequence_length: int | None, model_config: Any) -> None:
    """Refuse a sequence length beyond the model's positions (read from its config, when there is one)."""
    if sequence_length is None or model_config is None:
        return
    from exporter_core.model_config import ModelConfigView

    limit = ModelConfigView(model_config).max_positions
    if limit is not None and sequence_length > limit:
        raise InvalidArgumentError(
            f"sequence_length {sequence_length} is longer than the model's {limit} positions; pass "
            f"{option_hint('sequence_length', limit)} or less"
        )


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(
            f"{name} must be a positive integer, got {value!r}; for example {option_hint(name, 16)}"
        )
    return value


class TorchScriptBackend(Backend):
    """Traces with ``torch.jit.trace`` at a declared maximum shape and validates the saved file in a fresh process."""

    name = "torchscript"
    display_name = "TorchScript"
    default_artifact = "model.pt"
    option_names = OPTIONS

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

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Known names only, sizes positive integers (None: the architecture's default), a sequence of 2 at least."""
        refuse_unknown_options(cls.name, options, OPTIONS)
        checked = {name: _positive(name, options.get(name)) for name in OPTIONS}
        if checked["sequence_length"] is not None and checked["sequence_length"] < 2:
            raise InvalidArgumentError(
                "sequence_length must be at least 2 (room for the special tokens); for example "
                f"{option_hint('sequence_length', 16)}"
            )
        return checked

    @classmethod
    def check_for_architecture(cls, options: Mapping[str, Any], config_cls: type, model_config: Any = None) -> None:
        """A sequence longer than the model's positions is refused before the weights are read."""
        check_sequence_fits(options.get("sequence_length"), model_config)

    def export(self, request: ExportRequest) -> ExportResult:
        """Trace the plan's part at the static shape, save it with its contract, and say where to validate it:
        at the traced shape, then with smaller inputs the loader pads."""
        plan = request.plan
        if plan.static_trace_refusal is not None:
            raise UnsupportedFeatureError(plan.static_trace_refusal)
        from exporter_torchscript.runtime import SavedModuleRunner
        from exporter_torchscript.static import save_module, static_scenarios
        from exporter_torchscript.tracing import trace_for_export

        options = self.check_options(request.options)
        part = plan.main
        with plan.capture():
            traced = trace_for_export(
                part.module,
                part.config,
                batch_size=options["batch_size"],
                sequence_length=options["sequence_length"],
                preprocessor=request.preprocessor,
                feature=plan.feature,
            )
        contract = traced.contract
        # Measured before saving: the padding effect goes into the contract saved with the module.
        scenarios = static_scenarios(part.module, part.config, contract, preprocessor=request.preprocessor)
        path = request.staging / request.artifact_name
        files = save_module(traced.module, contract, path)
        exported = ExportedPart(
            name=part.name,
            artifact=request.artifact_name,
            runner=SavedModuleRunner(path, contract=contract),
            export_inputs=dict(contract.input_shapes),
            scenarios=scenarios,
        )
        return ExportResult(artifacts=files, parts=[exported], metadata={"files": files, **contract.to_dict()})
