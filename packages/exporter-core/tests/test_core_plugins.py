"""Plugin discovery: listing is metadata-only, loading checks requirements and refuses broken or duplicate plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter_core import plugins
from exporter_core.errors import (
    BackendNotInstalledError,
    BackendUnavailableError,
    InvalidPluginError,
    PluginError,
    UserError,
)

MISSING_DEPENDENCY = "exporter-test-missing-dependency-0b4b"


def test_listing_and_loading_an_architecture_never_import_torch_or_transformers() -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from exporter_core import plugins
        backends = [p.name for p in plugins.list_backends()]
        architectures = [p.name for p in plugins.list_architectures()]
        bert = plugins.load_architecture("bert")
        print(json.dumps({
            "architectures": architectures,
            "bert": bert.__name__,
            "heavy": sorted(m for m in ("torch", "transformers", "onnx", "onnxruntime") if m in sys.modules),
        }))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["heavy"] == []
    assert facts["bert"] == "BertOnnxConfig"
    assert "bert" in facts["architectures"] and "distilbert" in facts["architectures"]


def test_list_architectures_reads_metadata_sorted_with_distribution() -> None:
    infos = plugins.list_architectures()
    names = [p.name for p in infos]
    assert names == sorted(names)
    bert = next(p for p in infos if p.name == "bert")
    assert bert.target == "exporter_core.architectures.encoders:BertOnnxConfig"
    assert bert.distribution == "exporter-core"
    assert bert.version


def test_load_architecture_normalises_underscores_and_returns_none_when_absent() -> None:
    from exporter_core.architectures.encoders import BigBirdOnnxConfig, Data2VecTextOnnxConfig

    assert plugins.load_architecture("big_bird") is BigBirdOnnxConfig
    assert plugins.load_architecture("big-bird") is BigBirdOnnxConfig
    assert plugins.load_architecture("data2vec_text") is Data2VecTextOnnxConfig
    assert plugins.load_architecture("no-such-model-type") is None


def test_unknown_backend_lists_the_installed_ones_and_says_pip_install() -> None:
    installed = [p.name for p in plugins.list_backends()]
    with pytest.raises(BackendNotInstalledError) as caught:
        plugins.load_backend("no-such-backend")
    message = str(caught.value)
    assert message.startswith("no backend named 'no-such-backend' is installed (installed: ")
    assert f"(installed: {', '.join(installed) or 'none'})" in message
    assert "pip install" in message and "\n" not in message
    # A backend that is not installed is the environment's problem (exit 3), as a missing dependency is.
    assert isinstance(caught.value, UserError) and caught.value.exit_code == 3


def test_core_names_no_first_party_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # Which package provides a backend comes from entry-point metadata (or the facade's extras), not from core.
    monkeypatch.setattr(plugins, "_entry_points", lambda _namespace: [])
    with pytest.raises(BackendNotInstalledError) as caught:
        plugins.load_backend("torchscript")
    assert "(installed: none)" in str(caught.value)
    assert "exporter-torchscript" not in str(caught.value)
    source = Path(plugins.__file__).read_text()
    for first_party in ("exporter-onnx", "exporter-torchscript", "exporter-neuron"):
        assert first_party not in source


def test_missing_requirements_of_an_installed_distribution_is_empty() -> None:
    assert plugins.missing_requirements("exporter-core") == []


def test_missing_requirements_of_an_absent_distribution_names_it() -> None:
    assert plugins.missing_requirements(MISSING_DEPENDENCY) == [MISSING_DEPENDENCY]


# -- fake distributions on sys.path: real metadata, read by importlib.metadata and stevedore -----------------


def _write_distribution(root: Path, name: str, requires: list[str], entry_points: dict[str, dict[str, str]]) -> None:
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"] + [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    sections = []
    for group, entries in entry_points.items():
        sections.append(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    (info / "entry_points.txt").write_text("\n".join(sections))


@pytest.fixture()
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Installed-looking distributions declaring test backends and architectures, some of the wrong kind."""
    import numpy
    from stevedore.extension import ExtensionManager

    (tmp_path / "exporter_test_fake_backend.py").write_text(
        textwrap.dedent(
            """
            from exporter_core.backend import Backend

            class FakeBackend(Backend):
                name = "fake-ok"
                display_name = "Fake"
                default_artifact = "model.fake"

                def export(self, request):
                    raise RuntimeError("not used")

            class AbstractBackend(Backend):
                name = "fake-abstract"
                display_name = "Fake"
                default_artifact = "model.fake"

            class UnnamedBackend(FakeBackend):
                display_name = None

            def make_backend():
                return FakeBackend
            """
        )
    )
    _write_distribution(
        tmp_path,
        "exporter-test-fake-ok",
        ["numpy", 'pytest; extra == "test"', 'numpy; python_version < "3"'],
        {
            plugins.BACKENDS_NAMESPACE: {
                "fake-ok": "exporter_test_fake_backend:FakeBackend",
                "fake-broken": "exporter_test_no_such_module:FakeBackend",
            },
            plugins.ARCHITECTURES_NAMESPACE: {"fake-dup": "exporter_core.architectures.encoders:BertOnnxConfig"},
        },
    )
    _write_distribution(
        tmp_path,
        "exporter-test-fake-needy",
        [f"{MISSING_DEPENDENCY}>=1", f"numpy>={int(numpy.__version__.split('.')[0]) + 100}"],
        {plugins.BACKENDS_NAMESPACE: {"fake-needy": "exporter_test_fake_backend:FakeBackend"}},
    )
    _write_distribution(
        tmp_path,
        "exporter-test-fake-dup",
        [],
        {plugins.ARCHITECTURES_NAMESPACE: {"fake-dup": "exporter_core.architectures.encoders:RobertaOnnxConfig"}},
    )
    _write_distribution(
        tmp_path,
        "exporter-test-fake-wrong",
        [],
        {
            plugins.BACKENDS_NAMESPACE: {
                "fake-function": "exporter_test_fake_backend:make_backend",
                "fake-config": "exporter_core.config:OnnxConfig",
                "fake-abstract": "exporter_test_fake_backend:AbstractBackend",
                "fake-unnamed": "exporter_test_fake_backend:UnnamedBackend",
            },
            plugins.ARCHITECTURES_NAMESPACE: {
                "fake-backend-as-config": "exporter_test_fake_backend:FakeBackend",
                "fake-module-as-config": "exporter_core.config",
            },
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exporter_test_fake_backend", raising=False)
    # stevedore keeps each namespace's entry points for the life of the process; start from a fresh view.
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    return tmp_path


def test_listed_backend_carries_its_distribution_without_importing_it(fake_plugins: Path) -> None:
    infos = {p.name: p for p in plugins.list_backends()}
    assert infos["fake-ok"].distribution == "exporter-test-fake-ok"
    assert infos["fake-ok"].version == "1.0"
    assert infos["fake-ok"].target == "exporter_test_fake_backend:FakeBackend"
    assert "exporter_test_fake_backend" not in sys.modules


def test_load_backend_returns_the_class(fake_plugins: Path) -> None:
    backend = plugins.load_backend("fake-ok")
    assert backend.__name__ == "FakeBackend"
    assert backend.default_artifact == "model.fake"


def test_missing_requirements_skips_extras_and_other_markers_and_reports_versions(fake_plugins: Path) -> None:
    assert plugins.missing_requirements("exporter-test-fake-ok") == []
    missing = plugins.missing_requirements("exporter-test-fake-needy")
    assert missing[0] == f"{MISSING_DEPENDENCY}>=1"
    assert missing[1].startswith("numpy>=") and "(found " in missing[1]
    assert len(missing) == 2


def test_backend_with_missing_requirements_is_unavailable_naming_them(fake_plugins: Path) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        plugins.load_backend("fake-needy")
    message = str(caught.value)
    assert MISSING_DEPENDENCY in message
    assert "pip install exporter-test-fake-needy" in message


def test_backend_that_fails_to_import_is_a_plugin_error_naming_its_distribution(fake_plugins: Path) -> None:
    with pytest.raises(PluginError) as caught:
        plugins.load_backend("fake-broken")
    assert str(caught.value) == (
        f"entry point 'fake-broken' in {plugins.BACKENDS_NAMESPACE}, declared by exporter-test-fake-ok, names "
        "exporter_test_no_such_module:FakeBackend, which failed to load: "
        "ModuleNotFoundError: No module named 'exporter_test_no_such_module'"
    )
    assert not isinstance(caught.value, UserError)


def test_two_distributions_claiming_one_name_is_a_plugin_error(fake_plugins: Path) -> None:
    with pytest.raises(PluginError) as caught:
        plugins.load_architecture("fake-dup")
    message = str(caught.value)
    assert "exporter-test-fake-ok" in message and "exporter-test-fake-dup" in message
    assert "uninstall all but one" in message


@pytest.mark.parametrize(
    "namespace, name, target, problem",
    [
        (
            plugins.BACKENDS_NAMESPACE,
            "fake-function",
            "exporter_test_fake_backend:make_backend",
            "a function object, not a subclass of exporter_core.backend.Backend",
        ),
        (
            plugins.BACKENDS_NAMESPACE,
            "fake-config",
            "exporter_core.config:OnnxConfig",
            "the class exporter_core.config.OnnxConfig, not a subclass of exporter_core.backend.Backend",
        ),
        (
            plugins.BACKENDS_NAMESPACE,
            "fake-abstract",
            "exporter_test_fake_backend:AbstractBackend",
            "the class exporter_test_fake_backend.AbstractBackend, an abstract Backend that does not implement export",
        ),
        (
            plugins.BACKENDS_NAMESPACE,
            "fake-unnamed",
            "exporter_test_fake_backend:UnnamedBackend",
            (
                "the class exporter_test_fake_backend.UnnamedBackend, "
                "a Backend without the class attribute(s) display_name (strings)"
            ),
        ),
        (
            plugins.ARCHITECTURES_NAMESPACE,
            "fake-backend-as-config",
            "exporter_test_fake_backend:FakeBackend",
            "the class exporter_test_fake_backend.FakeBackend, not a subclass of exporter_core.config.OnnxConfig",
        ),
        (
            plugins.ARCHITECTURES_NAMESPACE,
            "fake-module-as-config",
            "exporter_core.config",
            "a module object, not a subclass of exporter_core.config.OnnxConfig",
        ),
    ],
)
def test_an_entry_point_of_the_wrong_kind_is_refused_when_loaded_naming_it(
    fake_plugins: Path, namespace: str, name: str, target: str, problem: str
) -> None:
    load = plugins.load_backend if namespace == plugins.BACKENDS_NAMESPACE else plugins.load_architecture
    with pytest.raises(InvalidPluginError) as caught:
        load(name)
    message = str(caught.value)
    assert message == (
        f"entry point {name!r} in {namespace}, declared by exporter-test-fake-wrong, names {target}: {problem}; "
        "fix the entry point in that package or uninstall it: pip uninstall exporter-test-fake-wrong"
    )
    assert isinstance(caught.value, UserError) and isinstance(caught.value, PluginError)
    assert caught.value.exit_code == 2


def test_entry_points_of_the_right_kind_pass_the_check(fake_plugins: Path) -> None:
    from exporter_core.backend import Backend
    from exporter_core.config import OnnxConfig

    assert issubclass(plugins.load_backend("fake-ok"), Backend)
    for info in plugins.list_architectures():
        if info.distribution == "exporter-core":
            loaded = plugins.load_architecture(info.name)
            assert loaded is not None and issubclass(loaded, OnnxConfig)
