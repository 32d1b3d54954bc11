"""What to ``pip install`` for a backend that is not installed, read from the facade's own extras.

Core knows no backend by name. The facade declares one extra per first-party backend (``exporter[onnx]``
installs exporter-onnx, released with the facade and pinned to its version); that metadata is the only
list of first-party backends, and it is read here rather than copied. The command matches how the facade was
installed: from a local checkout (pip's ``direct_url.json`` names a folder) it installs the backend's folder
beside the facade's; from an index it installs the facade's extra (``exporter[torchscript]``).
"""

from __future__ import annotations

import json
import shlex
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from exporter_core.errors import BackendNotInstalledError, InvalidArgumentError, did_you_mean

__all__ = [
    "FACADE_DISTRIBUTION",
    "backend_extras",
    "backend_packages",
    "install_command",
    "local_checkout",
    "not_installed_error",
]

FACADE_DISTRIBUTION = "exporter"


def backend_extras() -> dict[str, list[str]]:
    """The facade's extras that install a backend: extra name (the backend's) -> the packages it installs.

    An extra counts as a backend's when every package it installs is released with the facade (pinned to
    the facade's exact version); the ``test`` extra, for instance, is not. Empty when the facade's metadata
    is not installed.
    """
    from packaging.requirements import Requirement

    try:
        version = metadata.version(FACADE_DISTRIBUTION)
        lines = metadata.requires(FACADE_DISTRIBUTION) or []
        extras = metadata.metadata(FACADE_DISTRIBUTION).get_all("Provides-Extra") or []
    except metadata.PackageNotFoundError:
        return {}
    found: dict[str, list[str]] = {}
    for extra in extras:
        packages: list[str] = []
        for line in lines:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or not marker.evaluate({"extra": extra}) or marker.evaluate({"extra": ""}):
                continue
            if str(requirement.specifier) != f"=={version}":
                break
            packages.append(requirement.name)
        else:
            if packages:
                found[extra] = packages
    return found


def backend_packages(name: str) -> list[str]:
    """Packages that provide backend `name` according to the facade's extras; [] when it names none."""
    return backend_extras().get(name, [])


def local_checkout() -> Path | None:
    """The ``packages/`` folder of the checkout the facade was installed from, or None (installed from an index)."""
    try:
        text = metadata.distribution(FACADE_DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    url = data.get("url", "") if isinstance(data, dict) else ""
    if "dir_info" not in data or not url.startswith("file:"):
        return None
    folder = Path(unquote(urlparse(url).path))
    return folder.parent if folder.is_dir() else None


def _editable() -> bool:
    try:
        data = json.loads(metadata.distribution(FACADE_DISTRIBUTION).read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return bool(isinstance(data, dict) and (data.get("dir_info") or {}).get("editable"))


def install_command(packages: list[str]) -> str:
    """The pip command installing `packages` the way the facade was installed (local folders, or the extras)."""
    checkout = local_checkout()
    if checkout is not None:
        folders = [checkout / name for name in packages]
        if all((folder / "pyproject.toml").is_file() for folder in folders):
            editable = "-e " if _editable() else ""
            return "pip install " + " ".join(f"{editable}{shlex.quote(str(folder))}" for folder in folders)
    extras = {extra for extra, provided in backend_extras().items() if set(provided) & set(packages)}
    if extras:
        return f"pip install {shlex.quote(FACADE_DISTRIBUTION + '[' + ','.join(sorted(extras)) + ']')}"
    return "pip install " + " ".join(packages)


def not_installed_error(name: str, installed: list[str]) -> BackendNotInstalledError | InvalidArgumentError:
    """The error for backend `name` missing: the pip command when the facade knows the package (exit 3), else
    the nearest installed name (exit 2: most likely a typo)."""
    packages = backend_packages(name)
    listed = ", ".join(installed) or "none"
    if packages:
        return BackendNotInstalledError(
            f"no backend named {name!r} is installed (installed: {listed}); install it with: "
            f"{install_command(packages)}"
        )
    return InvalidArgumentError(
        f"no backend named {name!r} is installed{did_you_mean(name, installed)} (installed: {listed}); "
        "pip install the package that provides it, then check with: exporter backends"
    )
