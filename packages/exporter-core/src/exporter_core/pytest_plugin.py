"""The test kit as a pytest plugin: exporter-core's ``pytest11`` entry point ``exporter`` (pytest: its ``test`` extra).

Fixtures:

* ``tiny_checkpoint(model_type, feature="default", *, preprocessor="auto", with_tokenizer=None, init_std=None,
  **config_overrides) -> Path``: a tiny checkpoint built once per test run (shared by pytest-xdist workers);
  random weights of standard deviation `exporter_core.testing.INIT_STD` unless `init_std` says otherwise.
* ``export_case -> CaseOutcome``: one generated case, exported through ``exporter.pipeline.run_export``. A test
  that takes it runs once per case: in the default tier, once per (backend, family) with that family's
  representative (its preferred features tried in order until one is not refused); with ``--exporter-matrix``,
  once per (architecture, feature, backend). Mark a module ``pytest.mark.exporter_backend("onnx")`` to keep one
  backend's cases. `assert_case(outcome)` passes a validated case, skips a refused one ("refused: reason") and
  fails anything else.
* ``exported(model_type, feature, backend, *, sizes=None, preprocessor="auto", **options) -> CaseOutcome``: the
  same cache, for tests that check more about an artifact (or export one at other sizes); no run exports the same
  (model type, feature, backend, options, sizes, preprocessor) twice.
* ``exporter_cache -> ArtifactCache``: the cache itself.

Options: ``--exporter-matrix`` (the matrix tier: every case, and the tests marked ``exporter_matrix``, which the
default tier deselects); ``--exporter-record=PATH`` (emptied at the start of the run, then one JSON line per case
outcome, for ``tests/matrix/render_support_matrix.py``).

Importing this module is cheap and needs neither the facade nor a backend: only running a case does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter_core.export_cases import ArtifactCache, CaseOutcome, ExportCase

__all__ = ["assert_case"]

MATRIX_OPTION = "--exporter-matrix"
RECORD_OPTION = "--exporter-record"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("exporter", "exporter test kit (exporter_core.pytest_plugin)")
    group.addoption(
        MATRIX_OPTION,
        action="store_true",
        default=False,
        help="matrix tier: every (architecture, feature, backend) case and the tests marked exporter_matrix",
    )
    group.addoption(
        RECORD_OPTION,
        metavar="PATH",
        default=None,
        help="write one JSON line per export case outcome to PATH (emptied first), for the support matrix",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "exporter_backend(*names): generated export cases of this module or class use only these backends"
    )
    config.addinivalue_line(
        "markers", "exporter_matrix: matrix tier only (run with --exporter-matrix, as `nox -s matrix` does)"
    )
    path = config.getoption(RECORD_OPTION)
    if path and not hasattr(config, "workerinput"):  # the controller, before pytest-xdist workers start
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("", encoding="utf-8")


def _matrix(config: pytest.Config) -> bool:
    return bool(config.getoption(MATRIX_OPTION))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _matrix(config):
        return
    deselected = [item for item in items if item.get_closest_marker("exporter_matrix") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("exporter_matrix") is None]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "export_case" not in metafunc.fixturenames:
        return
    from exporter_core.export_cases import generate_cases, representatives
    from exporter_core.plugins import list_backends

    names = [name for marker in metafunc.definition.iter_markers("exporter_backend") for name in marker.args]
    installed = [info.name for info in list_backends()]
    cases = generate_cases([n for n in names if n in installed] if names else installed)
    groups: list[list[ExportCase]]
    if _matrix(metafunc.config):
        groups, ids = [[case] for case in cases], [case.id for case in cases]
    else:
        chosen = representatives(cases)
        groups, ids = list(chosen.values()), [f"{backend}:{family}" for backend, family in chosen]
    if not groups:
        reason = f"no export case: backend {', '.join(names)} is not installed" if names else "no export case"
        metafunc.parametrize("export_case", [pytest.param(None, marks=pytest.mark.skip(reason=reason))], indirect=True)
        return
    metafunc.parametrize("export_case", groups, ids=ids, indirect=True)


def _cache_root(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    # pytest-xdist workers each get <run>/popen-gwN: their common parent is this run's, and theirs only.
    return (base.parent if hasattr(config, "workerinput") else base) / "exporter-kit"


@pytest.fixture(scope="session")
def exporter_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ArtifactCache:
    """Tiny checkpoints and export outcomes of this test run, shared by its pytest-xdist workers."""
    return ArtifactCache(_cache_root(request.config, tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_checkpoint(exporter_cache: ArtifactCache) -> Callable[..., Path]:
    """Build (once per run and arguments) a tiny checkpoint and return its folder.

    ``tiny_checkpoint(model_type, feature="default", *, preprocessor="auto", with_tokenizer=None, init_std=None,
    **config_overrides)``; ``with_tokenizer`` True / False is short for ``preprocessor="tokenizer"`` / None.
    """

    def build(
        model_type: str,
        feature: str = "default",
        *,
        preprocessor: str | None = "auto",
        with_tokenizer: bool | None = None,
        init_std: float | None = None,
        **overrides: Any,
    ) -> Path:
        if with_tokenizer is not None:
            preprocessor = "tokenizer" if with_tokenizer else None
        return exporter_cache.checkpoint(model_type, feature, preprocessor=preprocessor, init_std=init_std, **overrides)

    return build


def _record(config: pytest.Config, outcome: CaseOutcome) -> None:
    from exporter_core.export_cases import append_record

    path = config.getoption(RECORD_OPTION)
    if path:
        for earlier in outcome.refused_before:
            append_record(path, earlier)
        append_record(path, outcome)


@pytest.fixture
def export_case(
    request: pytest.FixtureRequest, exporter_cache: ArtifactCache, record_property: Callable[[str, object], None]
) -> CaseOutcome:
    """The outcome of this test's generated case (see the module docstring); recorded with --exporter-record."""
    candidates: list[ExportCase] = request.param
    outcome = exporter_cache.first_accepted(candidates)
    _record(request.config, outcome)
    record_property("exporter_case", outcome.case.id)
    record_property("exporter_status", outcome.status)
    if outcome.worst_difference is not None:
        record_property("max_abs_diff", outcome.worst_difference)
    return outcome


@pytest.fixture(scope="session")
def exported(exporter_cache: ArtifactCache) -> Callable[..., CaseOutcome]:
    """``exported(model_type, feature, backend, *, sizes=None, preprocessor="auto", **options)``: a cached outcome."""
    from exporter_core.export_cases import config_class, family_of

    def get(
        model_type: str,
        feature: str,
        backend: str,
        *,
        sizes: dict[str, Any] | None = None,
        preprocessor: str | None = "auto",
        **options: Any,
    ) -> CaseOutcome:
        case = ExportCase(model_type, feature, backend, family_of(config_class(model_type)))
        return exporter_cache.outcome(case.but(options=options, sizes=sizes, preprocessor=preprocessor))

    return get


def assert_case(outcome: CaseOutcome) -> None:
    """Pass a validated case, skip a refused one (a clean refusal is a result), fail every other outcome."""
    tried = "".join(f"\n  refused first: {o.case.id}: {o.reason}" for o in outcome.refused_before)
    if outcome.refused:
        pytest.skip(f"refused: {outcome.case.id}: {outcome.reason}{tried}")
    assert outcome.validated, f"{outcome.case.id} {outcome.status}: {outcome.reason}{tried}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """With --exporter-record: how many cases validated, were refused, failed; the worst difference."""
    path = config.getoption(RECORD_OPTION)
    if not path or hasattr(config, "workerinput") or not os.path.isfile(path):
        return
    from exporter_core.export_cases import read_records, summarize

    records = read_records(path)
    if not records:
        return
    counts = summarize(records)
    validated = [r for r in records if r["status"] == "validated" and r["worst_difference"] is not None]
    line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    if validated:
        worst = max(validated, key=lambda r: r["worst_difference"])
        where = f"{worst['backend']}:{worst['model_type']}:{worst['feature']}"
        line += f"; worst validated difference {worst['worst_difference']:.3e} ({where})"
    terminalreporter.section(f"exporter cases ({path})")
    terminalreporter.write_line(line)
    for record in records:
        if record["status"] == "failed":
            last = ((record["reason"] or "").strip().splitlines() or [""])[-1]
            terminalreporter.write_line(
                f"failed: {record['backend']}:{record['model_type']}:{record['feature']}: {last}"
            )
