"""Generated export cases with every package installed: a third-party architecture on every backend, and the matrix.

Default tier: for each installed backend, one complete validated pair per family of the architectures that come
from outside this repository's packages (the fixture plugin: the kit tests them exactly as it tests exporter-core's
own; the package sessions cover those). ``--exporter-matrix`` (``nox -s matrix``): every (architecture, feature,
backend) case, recorded with ``--exporter-record`` for docs/support-matrix.md.
"""

from __future__ import annotations

import pytest
from matrix.render_support_matrix import shipped_distributions  # tests/ is on sys.path, as for conftest

from exporter_core.export_cases import (
    ArtifactCache,
    CaseOutcome,
    ExportCase,
    coverage_problems,
    generate_cases,
    representatives,
)
from exporter_core.plugins import list_architectures
from exporter_core.pytest_plugin import assert_case


def _third_party_groups() -> dict[str, list[ExportCase]]:
    shipped = shipped_distributions()
    outside = {info.name for info in list_architectures() if info.distribution not in shipped}
    chosen = representatives(c for c in generate_cases() if c.model_type in outside)
    return {f"{backend}:{family}": candidates for (backend, family), candidates in chosen.items()}


THIRD_PARTY = _third_party_groups()


def test_every_installed_architecture_has_tiny_sizes_and_a_case_per_backend() -> None:
    assert coverage_problems(generate_cases()) == []


@pytest.mark.parametrize("group", sorted(THIRD_PARTY))
def test_third_party_family_validates_on_every_backend(group: str, exporter_cache: ArtifactCache) -> None:
    assert_case(exporter_cache.first_accepted(THIRD_PARTY[group]))


@pytest.mark.exporter_matrix
def test_case(export_case: CaseOutcome) -> None:
    assert_case(export_case)
