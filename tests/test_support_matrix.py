"""docs/support-matrix.md lists exactly what is installed, and the renderer puts each outcome in its cell (no export)."""

from __future__ import annotations

from matrix import render_support_matrix as renderer  # tests/ is on sys.path, as for conftest

from exporter_core.export_cases import CaseOutcome, ExportCase


def test_the_page_lists_exactly_the_installed_architectures_features_and_backends() -> None:
    backends, rows = renderer.listed(renderer.PAGE.read_text(encoding="utf-8"))
    installed = sorted(pair for pairs in renderer.installed_pairs().values() for pair in pairs)
    assert len(rows) == len(set(rows)), "a (model type, feature) row appears twice"
    missing, extra = sorted(set(installed) - set(rows)), sorted(set(rows) - set(installed))
    assert not missing and not extra, (
        f"docs/support-matrix.md is stale: {len(missing)} pairs missing {missing[:8]}, {len(extra)} not installed "
        f"{extra[:8]}; run `nox -s matrix` (or `python tests/matrix/render_support_matrix.py` for cells not yet run)"
    )
    assert backends == renderer.installed_backends()


def test_test_only_plugins_are_not_on_the_page() -> None:
    shipped = renderer.shipped_distributions()
    assert "exporter-core" in shipped and not any("fixture" in name for name in shipped)
    assert "splinter" not in {mt for pairs in renderer.installed_pairs().values() for mt, _ in pairs}


def test_each_outcome_lands_in_its_cell() -> None:
    bert = ExportCase("bert", "default", "b1", "encoders")
    records = [
        CaseOutcome(bert, "validated", worst_difference=1.5e-6).to_record(),
        CaseOutcome(
            ExportCase("bert", "masked-lm", "b1", "encoders"), "refused", reason="NoError: not this"
        ).to_record(),
        CaseOutcome(
            ExportCase("bert", "default", "b2", "encoders"), "failed", reason="Traceback\n  ...\nExportError: boom"
        ).to_record(),
        # An export at other sizes is not a cell of the matrix.
        CaseOutcome(bert.but(sizes={"hidden_size": 48}), "failed", reason="other sizes").to_record(),
    ]
    families = {"encoders": [("bert", "default"), ("bert", "masked-lm")]}
    page = renderer.render(records, families, ["b1", "b2"])
    backends, rows = renderer.listed(page)
    assert backends == ["b1", "b2"] and rows == families["encoders"]
    assert "| `bert` | `default` | ✓ 1.5e-06 | ✗ failed [1] |" in page
    assert "| `bert` | `masked-lm` | refused [2] | not yet run |" in page
    assert "1. ExportError: boom" in page and "2. NoError: not this" in page
    assert "other sizes" not in page
    assert "2 validated" not in page and "1 validated, 1 refused, 1 failed, 1 not yet run, of 4 cells." in page
    empty = renderer.render([], families, ["b1"])
    assert "has not been run yet" in empty and empty.count("not yet run |") == 2
