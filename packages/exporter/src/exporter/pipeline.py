"""One export, end to end: discovery -> checkpoint -> config -> backend -> validation -> atomic commit."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core import loading, plugins
from exporter_core.backend import ExportedPart, ExportRequest
from exporter_core.description import write_description
from exporter_core.errors import (
    BackendUnavailableError,
    ExportError,
    InvalidArgumentError,
    UnsupportedFeatureError,
    UnsupportedFrameworkError,
    ValidationError,
)
from exporter_core.features import config_class_for
from exporter_core.output import StagedOutput, ensure_writable_folder
from exporter_core.plan import PlanPart
from exporter_core.task_detection import choose_feature

if TYPE_CHECKING:  # pragma: no cover
    from exporter_validate import ExportReport

__all__ = ["check_atol", "resolve_output", "run_export"]

logger = logging.getLogger("exporter")


def check_atol(atol: float | None) -> float | None:
    """A tolerance must be a finite positive number."""
    if atol is None:
        return None
    if not isinstance(atol, (int, float)) or isinstance(atol, bool) or not math.isfinite(atol) or atol <= 0:
        raise InvalidArgumentError(f"atol must be a positive finite number, got {atol!r}; for example --atol 1e-4")
    return float(atol)


def resolve_output(output: str | Path, default_artifact: str) -> tuple[Path, str]:
    """(destination folder, artifact file name): an existing file is replaced, anything else is a folder."""
    path = Path(output).expanduser()
    if path.is_file():
        return path.parent, path.name
    return path, default_artifact


def report_name(artifact: str) -> str:
    """File name of the JSON report beside `artifact` (``model.onnx`` -> ``model.validation.json``)."""
    return f"{Path(artifact).stem}.validation.json"


def _check_parts(backend_name: str, planned: Sequence[PlanPart], exported: Sequence[ExportedPart]) -> None:
    """Every plan part exported once, nothing else: a part left out would go unvalidated."""
    wanted = [part.name for part in planned]
    got = [part.name for part in exported]
    if sorted(got) != sorted(wanted):
        raise ExportError(
            f"the {backend_name} backend returned parts {got} for an export plan of parts {wanted}; "
            "a backend must export every part of the plan once (report this to the backend's authors)"
        )


def run_export(
    backend_name: str,
    model: str | Path,
    output: str | Path,
    *,
    feature: str | None = "default",
    atol: float | None = None,
    preprocessor: str = "auto",
    framework: str | None = None,
    cache_dir: str | Path | None = None,
    keep_invalid: bool = False,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export `model` with backend `backend_name` into `output`, validate, and keep the files only if valid.

    Returns the `ExportReport`; raises `ValidationError` (carrying the report) when validation fails.
    """
    from exporter_validate import ExportReport, validate_outputs

    emit = log if log is not None else logger.info
    backend_cls = plugins.load_backend(backend_name)
    reason = backend_cls.unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)
    atol = check_atol(atol)
    # Option mistakes are refused before the checkpoint is read.
    backend_options = backend_cls.check_options(dict(options or {}))
    if framework not in (None, "pt"):
        raise UnsupportedFrameworkError(
            f"framework {framework!r} is not supported: Transformers 5 has no TensorFlow; use --framework pt"
        )
    folder = loading.resolve_checkpoint(model, cache_dir=cache_dir)
    model_type = loading.read_model_type(folder)
    config_cls = config_class_for(model_type)
    supported = config_cls.supported_features(model_type)
    # None: the checkpoint's own feature (its architectures, modules.json); an Optimum task name is translated.
    choice = choose_feature(feature, folder, model_type, supported)
    feature = choice.feature
    if choice.reason:
        emit(f"feature: {feature} ({choice.reason})")
    if feature not in supported:
        raise UnsupportedFeatureError(
            f"{model_type} does not support feature {feature!r}; supported features: {', '.join(supported)}"
        )
    destination, artifact = resolve_output(output, backend_cls.default_artifact)
    ensure_writable_folder(destination)
    torch_model = loading.load_model(folder, feature, config_cls)
    processor = loading.load_preprocessor(folder, preprocessor)
    config = config_cls.for_feature(torch_model.config, feature)
    plan = config.export_plan(torch_model, processor)
    backend = backend_cls()
    with StagedOutput(destination) as staged:
        request = ExportRequest(
            plan=plan, staging=staged.path, artifact_name=artifact, preprocessor=processor, options=backend_options
        )
        result = backend.export(request)
        _check_parts(backend_name, plan.parts, result.parts)
        parts = []
        for exported in result.parts:
            part = plan.part(exported.name)
            scenarios = exported.scenarios if exported.scenarios is not None else part.scenarios
            single = len(result.parts) == 1 and len(scenarios) == 1
            for scenario in scenarios:
                report = validate_outputs(
                    part.config,
                    scenario.reference if scenario.reference is not None else part.module,
                    exported.runner,
                    preprocessor=processor,
                    atol=atol,
                    format_name=backend_cls.display_name,
                    inputs=scenario.inputs,
                    log=emit,
                )
                report.artifact = exported.artifact
                report.part = exported.name if single else f"{exported.name} ({scenario.label})"
                report.feature = feature
                report.model = str(model)
                report.export_inputs = dict(exported.export_inputs)
                parts.append(report)
        runners = {exported.name: exported.runner for exported in result.parts}
        checks = [check.run(runners) for check in plan.checks]
        export_report = ExportReport(
            format=backend_cls.display_name,
            backend=backend_name,
            feature=feature,
            parts=parts,
            model=str(model),
            # An export that writes several files (encoder/decoder) and no file of the default name is "in" its folder.
            output=str(destination / artifact) if artifact in result.artifacts else str(destination),
            checks=checks,
            metadata=result.metadata,
        )
        for line in export_report.log_lines():
            emit(line)
        # config, generation config, preprocessor files (and sentence modules) beside the artifacts.
        write_description(folder, staged.path, torch_model, processor)
        export_report.write_json(staged.path / report_name(artifact))
        if export_report.passed or keep_invalid:
            staged.commit()
        else:
            staged.discard()
    if not export_report.passed:
        kept = "kept (--keep-invalid)" if keep_invalid else "not kept (pass --keep-invalid to keep it)"
        raise ValidationError(
            f"validation failed: {'; '.join(export_report.failures)}; the model was {kept}", export_report
        )
    return export_report
