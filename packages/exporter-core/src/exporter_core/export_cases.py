"""Export cases generated from the installed plugins, their outcomes, and a cache shared by a test session.

A case is one (architecture, feature, backend) triple, with backend options; `generate_cases` makes one for every
feature every installed architecture declares and every installed backend, from entry-point names (nothing is
listed by hand). `run_case` exports a tiny checkpoint through the facade's `run_export` and returns a
`CaseOutcome`: ``validated`` (with the worst difference), ``refused`` (the backend or the pipeline raised a
`UserError`: a clean refusal is a result, not a failure), or ``failed``.

Tiers: the default tier runs, for every backend, one complete validated pair per family (`representatives`); the
matrix tier runs every case. A family is the module of the config class (``encoders``, ``decoders``, ``seq2seq``,
``vision`` for exporter-core's, the module's full name for a third party's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = [
    "CORE_FAMILIES_MODULE",
    "VERSIONED_DISTRIBUTIONS",
    "ArtifactCache",
    "CaseOutcome",
    "ExportCase",
    "append_record",
    "config_class",
    "coverage_problems",
    "family_of",
    "generate_cases",
    "installed_versions",
    "read_records",
    "representative_features",
    "representatives",
    "run_case",
    "summarize",
]

#: Package whose modules are exporter-core's families; a config class elsewhere is its module's own family.
CORE_FAMILIES_MODULE = "exporter_core.architectures"
#: Distributions whose versions every recorded outcome carries (the support matrix prints them).
VERSIONED_DISTRIBUTIONS = ("torch", "transformers", "onnx", "onnxruntime")
#: Features that exercise the most, best first: every part and cache of an encoder-decoder, a decoder's cache...
_PREFERRED_WITH_PAST = (
    "seq2seq-lm-with-past",
    "speech2seq-lm-with-past",
    "causal-lm-with-past",
    "default-with-past",
)
#: ... then a head that pools or classifies over padded rows.
_PREFERRED_HEADS = ("image-classification", "sequence-classification")
_WITH_PAST = "-with-past"


@dataclasses.dataclass(frozen=True)
class ExportCase:
    """One (architecture, feature, backend) to export and validate, with backend options.

    `sizes` override the architecture's tiny sizes; `preprocessor` is what the checkpoint carries (``"auto"``:
    `exporter_core.testing.preprocessor_kind`). Generated cases keep both at their defaults.
    """

    model_type: str
    feature: str
    backend: str
    family: str
    options: tuple[tuple[str, Any], ...] = ()
    sizes: tuple[tuple[str, Any], ...] = ()
    preprocessor: str | None = "auto"

    @property
    def id(self) -> str:
        """``backend:model_type:feature`` plus what differs from a generated case, as test ids show it."""
        extra = [f"{k}={v}" for k, v in self.options + self.sizes]
        if self.preprocessor != "auto":
            extra.append(f"preprocessor={self.preprocessor}")
        return f"{self.backend}:{self.model_type}:{self.feature}" + (f"[{','.join(extra)}]" if extra else "")

    @property
    def slug(self) -> str:
        """A file-name-safe unique key (cache folders)."""
        digest = hashlib.sha1(repr((self.options, self.sizes, self.preprocessor)).encode()).hexdigest()[:10]
        return f"{self.backend}-{self.model_type}-{self.feature}-{digest}"

    def but(
        self,
        *,
        options: Mapping[str, Any] | None = None,
        sizes: Mapping[str, Any] | None = None,
        preprocessor: str | None = "auto",
    ) -> ExportCase:
        """The same case with backend `options`, tiny-size overrides `sizes` and `preprocessor`."""
        return dataclasses.replace(
            self,
            options=tuple(sorted((options or {}).items())),
            sizes=tuple(sorted((sizes or {}).items())),
            preprocessor=preprocessor,
        )


@dataclasses.dataclass
class CaseOutcome:
    """What one case gave: status ``validated``, ``refused`` or ``failed``, and the facts behind it."""

    case: ExportCase
    status: str
    #: Worst compared difference over every part (validated and failed exports), else None.
    worst_difference: float | None = None
    #: Refusal message, or what failed (validation failures, or the error with its traceback).
    reason: str | None = None
    #: The export report as plain data (`ExportReport.to_dict()`), when the export ran.
    report: dict[str, Any] | None = None
    #: Output folder of the export (kept when it validated).
    output: Path | None = None
    #: The tiny checkpoint that was exported.
    checkpoint: Path | None = None
    #: Log lines the export marked as warnings (``-[!]``), such as a stand-in SDK.
    warnings: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    #: Cases tried before this one and refused (default tier: the family's preferred features first).
    refused_before: list[CaseOutcome] = dataclasses.field(default_factory=list)

    @property
    def validated(self) -> bool:
        """The export passed validation."""
        return self.status == "validated"

    @property
    def refused(self) -> bool:
        """The backend or the pipeline refused the case with a `UserError`."""
        return self.status == "refused"

    def artifacts(self, suffix: str = "") -> list[Path]:
        """Files the export wrote (ending with `suffix`), sorted; empty when nothing was kept."""
        if self.output is None or not self.output.is_dir():
            return []
        return sorted(p for p in self.output.rglob(f"*{suffix}") if p.is_file())

    def to_record(self) -> dict[str, Any]:
        """One JSON-able line for the matrix record: the case, the outcome, the versions, the date."""
        return {
            "model_type": self.case.model_type,
            "feature": self.case.feature,
            "backend": self.case.backend,
            "family": self.case.family,
            "options": dict(self.case.options),
            "sizes": dict(self.case.sizes),
            "preprocessor": self.case.preprocessor,
            "status": self.status,
            "worst_difference": self.worst_difference,
            "reason": self.reason,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 2),
            "versions": installed_versions(),
            "date": datetime.date.today().isoformat(),
        }

    def to_json(self) -> str:
        """Everything needed to rebuild this outcome in another process (`from_json`)."""
        data = dataclasses.asdict(self)
        data["case"]["options"] = [list(item) for item in self.case.options]
        data["case"]["sizes"] = [list(item) for item in self.case.sizes]
        data["output"] = str(self.output) if self.output is not None else None
        data["checkpoint"] = str(self.checkpoint) if self.checkpoint is not None else None
        data["refused_before"] = [json.loads(o.to_json()) for o in self.refused_before]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> CaseOutcome:
        """The outcome `to_json` wrote."""
        data = json.loads(text)
        case = data.pop("case")
        case["options"] = tuple(tuple(item) for item in case["options"])
        case["sizes"] = tuple(tuple(item) for item in case["sizes"])
        data["output"] = Path(data["output"]) if data["output"] is not None else None
        data["checkpoint"] = Path(data["checkpoint"]) if data["checkpoint"] is not None else None
        data["refused_before"] = [cls.from_json(json.dumps(o)) for o in data["refused_before"]]
        return cls(case=ExportCase(**case), **data)


def installed_versions() -> dict[str, str | None]:
    """Installed versions of `VERSIONED_DISTRIBUTIONS` (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def config_class(model_type: str) -> type[OnnxConfig]:
    """The installed config class of `model_type` (an error naming the model type when none is installed)."""
    from exporter_core.plugins import load_architecture

    config_cls = load_architecture(model_type)
    if config_cls is None:
        raise LookupError(f"no installed architecture declares model type {model_type!r} (exporter.architectures)")
    return config_cls


def family_of(config_cls: type) -> str:
    """The family of an architecture config: its module's name inside exporter-core, else the module's full name."""
    module = config_cls.__module__
    if module.startswith(CORE_FAMILIES_MODULE + "."):
        return module[len(CORE_FAMILIES_MODULE) + 1 :]
    return module


def generate_cases(backends: Iterable[str] | None = None) -> list[ExportCase]:
    """Every (architecture, feature, backend) of the installed entry points (or of `backends` only), sorted."""
    from exporter_core.plugins import list_architectures, list_backends

    names = sorted(backends) if backends is not None else [info.name for info in list_backends()]
    cases = []
    for info in list_architectures():
        config_cls = config_class(info.name)
        for feature in config_cls.supported_features(info.name):
            cases += [ExportCase(info.name, feature, backend, family_of(config_cls)) for backend in names]
    return sorted(cases, key=lambda c: (c.backend, c.family, c.model_type, c.feature))


def representative_features(features: Iterable[str]) -> list[str]:
    """`features` ordered by how much of an export they exercise, the best first.

    With-past features first (every part and the cache), then the same features without past (what a backend that
    refuses caches can still do), then a classification head, then the other heads in declared order, ``default``
    last.
    """
    declared = list(features)
    with_past = [f for f in _PREFERRED_WITH_PAST if f in declared]
    without_past = [f[: -len(_WITH_PAST)] for f in with_past if f[: -len(_WITH_PAST)] in declared]
    heads = [f for f in _PREFERRED_HEADS if f in declared]
    ordered = with_past + without_past + heads
    rest = [f for f in declared if f not in ordered and f != "default"]
    return ordered + rest + (["default"] if "default" in declared and "default" not in ordered else [])


def representatives(cases: Iterable[ExportCase]) -> dict[tuple[str, str], list[ExportCase]]:
    """(backend, family) -> the cases to try in order, until one is not refused: the default tier.

    The family's architecture is its typical member: the one whose feature set most architectures of the family
    share (ties: the first model type alphabetically); its features come in `representative_features` order.
    """
    by_group: dict[tuple[str, str], list[ExportCase]] = {}
    for case in cases:
        by_group.setdefault((case.backend, case.family), []).append(case)
    chosen: dict[tuple[str, str], list[ExportCase]] = {}
    for key, group in sorted(by_group.items()):
        features = {mt: tuple(config_class(mt).supported_features(mt)) for mt in sorted({c.model_type for c in group})}
        counts = {fs: sum(1 for other in features.values() if other == fs) for fs in features.values()}
        model_type = min(features, key=lambda mt: (-counts[features[mt]], mt))
        own = {c.feature: c for c in group if c.model_type == model_type}
        chosen[key] = [own[f] for f in representative_features(features[model_type]) if f in own]
    return chosen


def coverage_problems(cases: Iterable[ExportCase], backends: Iterable[str] | None = None) -> list[str]:
    """What `cases` miss: an installed architecture without tiny sizes, or a feature without a case for a backend.

    `backends` defaults to every installed backend.
    """
    from exporter_core.plugins import list_architectures, list_backends

    covered = {(c.model_type, c.feature, c.backend) for c in cases}
    names = sorted(backends) if backends is not None else [info.name for info in list_backends()]
    problems = []
    if backends is None and not names:
        problems.append("no backend is installed (exporter.backends): no case can be generated")
    for info in list_architectures():
        config_cls = config_class(info.name)
        where = f"{info.name} ({config_cls.__module__}.{config_cls.__qualname__}, from {info.distribution})"
        features = config_cls.supported_features(info.name)
        if not config_cls.tiny_sizes(info.name):
            problems.append(f"{where} declares no tiny sizes: set its `tiny_config` class attribute")
        if not features:
            problems.append(f"{where} declares no feature")
        for feature in features:
            missing = [b for b in names if (info.name, feature, b) not in covered]
            if missing:
                problems.append(f"{where}: feature {feature!r} has no case for {', '.join(missing)}")
    return problems


def run_case(case: ExportCase, checkpoint: Path, output: Path) -> CaseOutcome:
    """Export `checkpoint` as `case` says through `exporter.pipeline.run_export` and say how it went."""
    try:
        from exporter.pipeline import run_export
    except ImportError as exc:  # pragma: no cover - the kit's export fixtures need the facade
        raise RuntimeError("export cases run through the facade: pip install exporter") from exc
    from exporter_core.errors import UserError, ValidationError

    lines: list[str] = []
    report: Any  # the facade's ExportReport, or None when the export did not run
    start = time.perf_counter()
    outcome = CaseOutcome(case, "failed", output=output, checkpoint=checkpoint)
    try:
        report = run_export(
            case.backend, checkpoint, output, feature=case.feature, options=dict(case.options), log=lines.append
        )
    except ValidationError as exc:
        outcome.reason = str(exc)
        report = exc.report
    except UserError as exc:
        outcome.status, outcome.reason, report = "refused", f"{type(exc).__name__}: {exc}", None
    except Exception:
        outcome.reason, report = traceback.format_exc(), None
    else:
        outcome.status = "validated"
    outcome.seconds = time.perf_counter() - start
    outcome.warnings = [line.strip() for line in lines if "-[!]" in line]
    if report is not None:
        outcome.report = json.loads(json.dumps(report.to_dict(), default=str))
        outcome.worst_difference = float(report.worst_difference)
    if outcome.status != "validated" and not output.is_dir():
        outcome.output = None
    return outcome


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (shared by the processes of one test run, pytest-xdist workers included)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no POSIX locks: each process keeps its own cache
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ArtifactCache:
    """Tiny checkpoints and export outcomes made once per test run, under `root`, whichever process asks first.

    Checkpoints are keyed by (model type, model class, preprocessor, config overrides); outcomes by the case
    (model type, feature, backend, options). Files are written under a lock, so pytest-xdist workers share them.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def checkpoint(
        self,
        model_type: str,
        feature: str = "default",
        *,
        preprocessor: str | None = "auto",
        init_std: float | None = None,
        **overrides: Any,
    ) -> Path:
        """A tiny checkpoint folder for (`model_type`, `feature`), built on first use.

        `preprocessor` is ``"auto"`` (`preprocessor_kind`), ``"tokenizer"``, ``"image_processor"``,
        ``"feature_extractor"`` or None;
        `init_std` defaults to the kit's `INIT_STD`; `overrides` go to the model config.
        """
        from exporter_core.loading import model_class_for
        from exporter_core.plugins import load_architecture
        from exporter_core.testing import INIT_STD, build_tiny_checkpoint, preprocessor_kind

        kind = preprocessor_kind(model_type, feature, **overrides) if preprocessor == "auto" else preprocessor
        std = INIT_STD if init_std is None else init_std
        model_class = model_class_for(feature, load_architecture(model_type)).__name__
        key = repr((model_type, model_class, kind, std, sorted((k, repr(v)) for k, v in overrides.items())))
        folder = self.root / "checkpoints" / f"{model_type}-{model_class}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        with _locked(folder.with_suffix(".lock")):
            if not (folder / ".complete").is_file():
                build_tiny_checkpoint(
                    model_type,
                    feature,
                    folder,
                    with_tokenizer=kind == "tokenizer",
                    with_image_processor=kind == "image_processor",
                    with_feature_extractor=kind == "feature_extractor",
                    config_overrides=overrides,
                    init_std=std,
                )
                (folder / ".complete").write_text(key + "\n", encoding="utf-8")
        return folder

    def outcome(self, case: ExportCase) -> CaseOutcome:
        """The outcome of `case`, exported from its tiny checkpoint on first use."""
        folder = self.root / "exports" / case.slug
        with _locked(folder.with_suffix(".lock")):
            saved = folder / "outcome.json"
            if saved.is_file():
                return CaseOutcome.from_json(saved.read_text(encoding="utf-8"))
            folder.mkdir(parents=True, exist_ok=True)
            outcome = self._export(case, folder / "output")
            saved.write_text(outcome.to_json(), encoding="utf-8")
        return outcome

    def _export(self, case: ExportCase, output: Path) -> CaseOutcome:
        from exporter_core.errors import UserError

        try:
            source = self.checkpoint(case.model_type, case.feature, preprocessor=case.preprocessor, **dict(case.sizes))
        except UserError as exc:  # the tiny model cannot serve this feature: refused like the pipeline would
            return CaseOutcome(case, "refused", reason=f"{type(exc).__name__}: {exc}")
        except Exception:  # a checkpoint that cannot be built fails the case, recorded like any other
            return CaseOutcome(case, "failed", reason=traceback.format_exc())
        return run_case(case, source, output)

    def first_accepted(self, candidates: list[ExportCase]) -> CaseOutcome:
        """The first candidate's outcome that is not a refusal (else the last refusal); earlier refusals kept."""
        refused: list[CaseOutcome] = []
        for case in candidates:
            outcome = self.outcome(case)
            if not outcome.refused:
                outcome.refused_before = refused
                return outcome
            refused.append(outcome)
        last = refused[-1]
        last.refused_before = refused[:-1]
        return last


def append_record(path: str | os.PathLike[str], outcome: CaseOutcome) -> None:
    """Append the outcome's record as one JSON line to `path` (one write: lines of parallel workers stay whole)."""
    line = json.dumps(outcome.to_record(), default=str) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a matrix run (`append_record`), the last one of each case winning."""
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            case = {k: record.get(k) for k in ("options", "sizes", "preprocessor")}
            key = (record["backend"], record["model_type"], record["feature"], json.dumps(case, sort_keys=True))
            latest[key] = record
    return list(latest.values())


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many records have each status."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts
