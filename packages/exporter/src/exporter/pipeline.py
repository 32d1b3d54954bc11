"""One export, end to end: discovery -> checkpoint -> config -> backend -> validation -> atomic commit."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core import loading, plugins
from exporter_core.backend import (
    Backend,
    ExportedPart,
    ExportRequest,
    ExportResult,
    Retry,
    Tolerance,
    refuse_unknown_options,
)
from exporter_core.description import write_description
from exporter_core.errors import (
    BackendUnavailableError,
    ExporterError,
    ExportError,
    InvalidArgumentError,
    OutputExistsError,
    UnsupportedFeatureError,
    UnsupportedFrameworkError,
    ValidationError,
    did_you_mean,
    option_hint,
)
from exporter_core.features import config_class_for
from exporter_core.output import (
    LOCK_FILE,
    MACHINE_ERRNOS,
    STAGING_PREFIX,
    STAGING_SUFFIX,
    StagedOutput,
    check_output_folder,
    os_error,
)
from exporter_core.plan import CheckResult, ExportPlan, PlanCheck, PlanPart
from exporter_core.plan import Runner as PartRunner
from exporter_core.progress import StageRecorder, peak_memory, recording, stage
from exporter_core.task_detection import choose_feature

if TYPE_CHECKING:  # pragma: no cover
    from exporter_validate import ExportReport, ValidationReport

__all__ = [
    "check_atol",
    "check_destination",
    "check_rtol",
    "failed_report_name",
    "owned_files",
    "report_name",
    "resolve_output",
    "run_export",
]

logger = logging.getLogger("exporter")

#: The keywords of `run_export` and `exporter.export` besides backend options (suggested for a misspelt option).
EXPORT_KEYWORDS = (
    "format",
    "feature",
    "atol",
    "rtol",
    "preprocessor",
    "framework",
    "cache_dir",
    "keep_invalid",
    "overwrite",
    "allow_random_head",
    "allow_nonfinite",
    "report",
    "progress",
)


def check_atol(atol: float | None) -> float | None:
    """A tolerance must be a finite positive number."""
    if atol is None:
        return None
    if not isinstance(atol, (int, float)) or isinstance(atol, bool) or not math.isfinite(atol) or atol <= 0:
        raise InvalidArgumentError(
            f"atol must be a positive finite number, got {atol!r}; for example {option_hint('atol', 1e-4)}"
        )
    return float(atol)


def check_rtol(rtol: float | None) -> float | None:
    """A relative tolerance must be a finite number, zero or more (0: the tolerance is atol alone)."""
    if rtol is None:
        return None
    if not isinstance(rtol, (int, float)) or isinstance(rtol, bool) or not math.isfinite(rtol) or rtol < 0:
        raise InvalidArgumentError(
            f"rtol must be a finite number, zero or more, got {rtol!r}; for example {option_hint('rtol', 1e-4)}"
        )
    return float(rtol)


def resolve_output(output: str | Path, default_artifact: str) -> tuple[Path, str]:
    """(destination folder, artifact file name): an existing file is replaced, anything else is a folder.

    An existing file must look like the backend's artifact (same suffix as `default_artifact`): a model is never
    written over a file of another kind.
    """
    path = Path(output).expanduser()
    if path.is_file():
        wanted = "".join(Path(default_artifact).suffixes) or Path(default_artifact).suffix
        if not path.name.endswith(wanted):
            raise OutputExistsError(
                f"{path} is an existing file that is not a {wanted} artifact of this backend; give a folder, or a "
                f"file name ending in {wanted}"
            )
        return path.parent, path.name
    return path, default_artifact


def report_name(artifact: str) -> str:
    """File name of the JSON report beside `artifact` (``model.onnx`` -> ``model.onnx.validation.json``).

    Named after the whole artifact name, so that backends writing different artifacts (``model.onnx``,
    ``model.pt``, ``model_neuron.pt``) into one folder keep separate reports.
    """
    return f"{artifact}.validation.json"


def failed_report_name(artifact: str) -> str:
    """File name of the report a failed validation leaves (``model.onnx.validation-failed.json``)."""
    return f"{artifact}.validation-failed.json"


def owned_files(folder: Path, artifact: str) -> list[str]:
    """Files of the export of `artifact` already in `folder`, as its report lists them (plus the report)."""
    names = {artifact}
    for report in (report_name(artifact), failed_report_name(artifact)):
        path = folder / report
        if not path.is_file():
            continue
        names.add(report)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        listed = data.get("files") if isinstance(data, dict) else None
        if isinstance(listed, list):
            names.update(n for n in listed if isinstance(n, str) and n == Path(n).name)
    return sorted(n for n in names if (folder / n).is_file())


def _foreign_files(folder: Path) -> list[str]:
    """What is in `folder` apart from exporter's own lock and staging folders."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name != LOCK_FILE and not (p.name.startswith(STAGING_PREFIX) and p.name.endswith(STAGING_SUFFIX))
    )


def check_destination(destination: Path, artifact: str, overwrite: bool) -> list[str]:
    """Refuse a folder that holds files unless `overwrite`; return the files the previous export owned there."""
    check_output_folder(destination)
    present = _foreign_files(destination)
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise OutputExistsError(
            f"output folder {destination} already holds files ({shown}); pass {option_hint('overwrite', True)} to "
            "replace the files of a previous export (other files are left alone), or choose an empty folder"
        )
    return owned_files(destination, artifact) if present else []


def _machine_cause(exc: BaseException) -> OSError | None:
    """The OSError of the machine (full disk, size limit, permission) behind `exc`, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in MACHINE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


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
    rtol: float | None = None,
    preprocessor: str = "auto",
    framework: str | None = None,
    cache_dir: str | Path | None = None,
    keep_invalid: bool = False,
    overwrite: bool = False,
    allow_random_head: bool = False,
    allow_nonfinite: bool = False,
    report: str | Path | None = None,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export `model` with backend `backend_name` into `output`, validate, and keep the files only if valid.

    Every check that does not need the model (backend, options, feature, output folder, checkpoint files) runs
    before the model is loaded. `overwrite` lets the export replace a previous export's files in a folder that
    holds files; `atol` and `rtol` set the tolerance of every output, ``atol + rtol * max|reference|`` (neither:
    the architecture's atol and the default rtol; `atol` alone: strictly absolute); `allow_random_head` exports a feature whose head weights the checkpoint lacks (randomly
    initialised, and said so in the report); `allow_nonfinite` exports weights holding NaN or Inf; `report` is
    where the JSON report goes in addition to the output folder; `progress` receives a line as each stage starts
    and ends (load, export and the backend's own steps, each validation, each check; None: no lines). The report
    holds every stage's wall time and the process's peak memory. Returns the `ExportReport`; raises
    `ValidationError` (carrying the report, which is also written) when validation fails.
    """
    emit = log if log is not None else logger.info
    recorder = StageRecorder(printer=progress)
    with recording(recorder):
        backend_cls = plugins.load_backend(backend_name)
        reason = backend_cls.unavailable_reason_for(dict(options or {}))
        if reason:
            raise BackendUnavailableError(reason)
        atol = check_atol(atol)
        rtol = check_rtol(rtol)
        # Option mistakes are refused before the checkpoint is read.
        if backend_cls.option_names is not None:
            refuse_unknown_options(backend_name, options or {}, backend_cls.option_names, also=EXPORT_KEYWORDS)
        backend_options = backend_cls.check_options(dict(options or {}))
        if framework not in (None, "pt"):
            raise UnsupportedFrameworkError(
                f"framework {framework!r} is not supported: Transformers 5 has no TensorFlow; use "
                f"{option_hint('framework', 'pt')}"
            )
        destination, artifact = resolve_output(output, backend_cls.default_artifact)
        previous = check_destination(destination, artifact, overwrite)
        report_path = Path(report).expanduser() if report is not None else None
        if report_path is not None:
            check_output_folder(report_path.parent)
            if report_path.is_dir():
                raise OutputExistsError(f"report path {report_path} is a folder; give a file name ending in .json")
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
                f"{model_type} does not support feature {feature!r}{did_you_mean(feature, supported)}; supported "
                f"features: {', '.join(supported)}"
            )
        backend_cls.check_for_architecture(backend_options, config_cls, loading.read_config(folder))
        with stage("load model"):
            loading.check_checkpoint_files(folder)
            loaded = loading.load_model_checked(
                folder,
                feature,
                config_cls,
                allow_random_head=allow_random_head,
                allow_nonfinite=allow_nonfinite,
                supported=supported,
                hold_half=backend_cls.holds_checkpoint_dtype(backend_options, folder, config_cls),
            )
            torch_model = loaded.model
            if loaded.held_dtype:
                emit(
                    f"reference model: {loaded.held_dtype} weights kept as stored (memory-mapped), computing in "
                    "float32 one module at a time"
                )
            processor = loading.load_preprocessor(folder, preprocessor)
        with stage("plan"):
            config = config_cls.for_feature(torch_model.config, feature)
            plan = config.export_plan(torch_model, processor)
            plan.checkpoint_dtype = loaded.checkpoint_dtype
        backend = backend_cls()
        try:
            with StagedOutput(destination, log=emit) as staged:
                # Again under the folder's lock: another export may have finished there while the model loaded.
                previous = check_destination(destination, artifact, overwrite)
                export_report = _export_and_validate(
                    backend, backend_name, plan, staged.path, artifact, processor, backend_options, atol, emit, rtol
                )
                export_report.model = str(model)
                for part_report in export_report.parts:
                    part_report.model = str(model)
                export_report.output = (
                    str(destination / artifact) if artifact in export_report.files else str(destination)
                )
                if loaded.random_weights:
                    export_report.random_weights = list(loaded.random_weights)
                    emit(
                        f"\t-[!] {len(loaded.random_weights)} weight(s) are not in the checkpoint and were randomly "
                        f"initialised ({option_hint('allow_random_head', True)}): "
                        + ", ".join(loaded.random_weights[:5])
                    )
                if loaded.nonfinite:
                    export_report.nonfinite_weights = list(loaded.nonfinite)
                for line in export_report.log_lines():
                    emit(line)
                keep = export_report.passed or keep_invalid
                # config, generation config, preprocessor files (and sentence modules) beside the artifacts.
                with stage("write description files"):
                    write_description(folder, staged.path, torch_model, processor)
                export_report.stages = recorder.to_list()
                export_report.peak_memory = peak_memory(recorder)
                export_report.seconds = round(recorder.elapsed, 3)
                name = report_name(artifact) if keep else failed_report_name(artifact)
                export_report.files = sorted({*staged.staged_names(), name}) if keep else [name]
                export_report.write_json(staged.path / name)
                if report_path is not None:
                    export_report.write_json(report_path)
                if keep:
                    # The previous export's files go, and a failed report of the same artifact with them.
                    staged.commit(replaces=[*previous, failed_report_name(artifact)])
                else:
                    staged.commit(names=[name])
        except ExportError as exc:
            cause = _machine_cause(exc)
            if cause is not None:
                raise os_error(cause, "writing the export") from exc
            raise
        except OSError as exc:
            if exc.errno in MACHINE_ERRNOS:
                raise os_error(exc, "writing the export") from exc
            raise
        if not export_report.passed:
            kept = (
                "kept (--keep-invalid)"
                if keep_invalid
                else f"not kept (pass {option_hint('keep_invalid', True)} to keep it)"
            )
            where = destination / (report_name(artifact) if keep_invalid else failed_report_name(artifact))
            raise ValidationError(
                f"validation failed: {'; '.join(export_report.failures)}; the model was {kept}; report: {where}",
                export_report,
            )
        return export_report


def _export_and_validate(
    backend: Backend,
    backend_name: str,
    plan: ExportPlan,
    staging: Path,
    artifact: str,
    processor: Any,
    backend_options: dict[str, Any],
    atol: float | None,
    emit: Callable[[str], None],
    rtol: float | None = None,
    allow_retry: bool = True,
) -> ExportReport:
    """Let the backend write the plan into `staging`, then validate every part and run the plan's checks.

    When a part fails validation (or its artifact cannot run) and the backend offered a `Retry`, the export is done
    again with the retry's options, once, from an empty staging folder, before any check runs on the bad files.
    """
    from exporter_validate import ExportReport

    request = ExportRequest(
        plan=plan, staging=staging, artifact_name=artifact, preprocessor=processor, options=backend_options
    )
    with stage(f"export ({backend_name})"):
        result = backend.export(request)
    dtype = result.metadata.get("dtype")
    if isinstance(dtype, dict) and dtype.get("reason"):
        emit(f"\t-[!] {dtype['reason']}")
    _check_parts(backend_name, plan.parts, result.parts)
    retry = result.retry if allow_retry else None
    parts, failed = _validate_parts(result, plan, type(backend).display_name, processor, atol, rtol, emit, retry)
    if retry is not None and failed:
        # The backend chose a faster way that gave a wrong graph (a traced shape held as a constant): it has a
        # sturdier one. The first attempt's files and sessions go before the second export.
        del result
        emit(f"\t-[!] {retry.reason}; exporting again")
        for written in staging.iterdir():
            shutil.rmtree(written) if written.is_dir() else written.unlink()
        again = _export_and_validate(
            backend,
            backend_name,
            plan,
            staging,
            artifact,
            processor,
            {**backend_options, **retry.options},
            atol,
            emit,
            rtol,
            allow_retry=False,
        )
        again.metadata["retried"] = {"reason": retry.reason, "first_failures": failed[:20]}
        return again
    runners = {exported.name: exported.runner for exported in result.parts}
    # A part that changes the numbers by design (quantized, fp16) cannot promise token-for-token parity: its exact
    # checks are run and reported as advisory, and the backend's task checks are the bar instead.
    lossy = next((exported.tolerance for exported in result.parts if exported.tolerance is not None), None)
    checks = [_run_check(check, runners, lossy) for check in [*plan.checks, *result.checks]]
    export_report = ExportReport(
        format=type(backend).display_name,
        backend=backend_name,
        feature=plan.feature,
        parts=parts,
        checks=checks,
        metadata=result.metadata,
    )
    export_report.files = list(result.artifacts)
    return export_report


def _validate_parts(
    result: ExportResult,
    plan: ExportPlan,
    format_name: str,
    processor: Any,
    atol: float | None,
    rtol: float | None,
    emit: Callable[[str], None],
    retry: Retry | None,
) -> tuple[list[ValidationReport], list[str]]:
    """Validate every written part at each of its scenarios; return the reports and one line per failure. With a
    `retry` on offer, an artifact that cannot run at a scenario's inputs stops the validation as a failure (the
    export is done again); without one, that error propagates."""
    from exporter_validate import validate_outputs

    parts: list[ValidationReport] = []
    for exported in result.parts:
        part = plan.part(exported.name)
        scenarios = exported.scenarios if exported.scenarios is not None else part.scenarios
        single = len(result.parts) == 1 and len(scenarios) == 1
        # A transformed part (quantized, fp16) states its looser tolerance; the caller's own wins.
        stated = exported.tolerance if atol is None and rtol is None else None
        part_atol, part_rtol = (stated.atol, stated.rtol) if stated is not None else (atol, rtol)
        if stated is not None:
            emit(f"\t-[!] {exported.artifact}: tolerance atol {stated.atol:g}, rtol {stated.rtol:g} ({stated.reason})")
        for scenario in scenarios:
            label = exported.name if single else f"{exported.name} ({scenario.label})"
            try:
                part_report = validate_outputs(
                    part.config,
                    scenario.reference if scenario.reference is not None else part.module,
                    exported.runner,
                    preprocessor=processor,
                    atol=part_atol,
                    rtol=part_rtol,
                    format_name=format_name,
                    inputs=scenario.inputs,
                    log=emit,
                    stage_name=f"validate {label}",
                )
            except (MemoryError, OSError, ExporterError):
                raise  # the machine or the caller, not the graph: a second export would meet it again
            except Exception as exc:
                if retry is None:
                    raise
                first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                return parts, [f"{label}: the exported graph could not run ({type(exc).__name__}: {first_line})"]
            part_report.artifact = exported.artifact
            part_report.part = label
            part_report.feature = plan.feature
            part_report.export_inputs = dict(exported.export_inputs)
            parts.append(part_report)
    return parts, [f"{p.part}: {failure}" for p in parts if not p.passed for failure in p.failures]


def _run_check(check: PlanCheck, runners: dict[str, PartRunner], lossy: Tolerance | None = None) -> CheckResult:
    """Run one check over the written artifacts as a stage of its own (advisory when exact over a lossy part)."""
    with stage(f"check {check.name}"):
        result = check.run(runners)
    if check.exact and lossy is not None:
        return dataclasses.replace(
            result,
            advisory=f"token-for-token parity is not expected of this variant ({lossy.reason}); its task checks decide",
        )
    return result
