"""Second Python environments for the cross-environment tests, built without a download.

`build_environment` makes a virtual environment (no pip) whose site-packages holds exactly the distributions
asked for and their requirements, linked from this interpreter's: torch, transformers, numpy and the SDK
stand-in — what an AWS Neuron environment holds — and none of exporter's packages. A worker started with that
environment's python therefore imports the stand-in SDK from there, in another interpreter than the tests, and
could not import exporter even by accident.

`declare_requirements` gives the stand-in's provider of an SDK package (torch_neuron, say) a distribution of its
own whose metadata declares requirements, to mimic torch-neuron's (PyTorch 1.13, Transformers 4.x).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

__all__ = ["build_environment", "declare_requirements", "site_packages"]


def _closure(names: list[str]) -> list[metadata.Distribution]:
    """`names` and everything they require (extras left out), as installed here."""
    seen: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return list(seen.values())


def _top_level(dist: metadata.Distribution) -> set[str]:
    """The entries a distribution put directly in its site-packages folder (packages, modules, .dist-info, .libs)."""
    entries = set()
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if parts and parts[0] != ".." and not str(file).startswith("/"):
            entries.add(parts[0])
    return entries


def site_packages(venv: Path) -> Path:
    """The site-packages folder of a virtual environment made by this interpreter's version."""
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def build_environment(venv: Path, distributions: list[str]) -> Path:
    """A venv at `venv` holding `distributions` and their requirements (linked, not copied); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = site_packages(venv)
    for dist in _closure(distributions):
        source = Path(str(dist.locate_file("")))
        for entry in _top_level(dist):
            link = target / entry
            if not link.exists() and (source / entry).exists():
                os.symlink(source / entry, link)
    return venv / "bin" / "python"


def declare_requirements(venv: Path, module: str, name: str, requires: list[str]) -> None:
    """Make distribution `name`, declaring `requires`, the only provider of the top-level package `module` in
    `venv`: the linked stand-in's own metadata is removed there (its files stay)."""
    target = site_packages(venv)
    for info in target.glob("exporter_neuron_sdk_standin-*.dist-info"):
        info.unlink()
    info = target / f"{name.replace('-', '_')}-0.0.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 0.0.0", "Summary: declares torch-neuron's needs"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n")
    (info / "top_level.txt").write_text(module + "\n")
    (info / "RECORD").write_text(f"{module}/__init__.py,,\n")
