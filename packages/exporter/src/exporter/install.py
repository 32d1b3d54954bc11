"""What to ``pip install`` for a backend that is not installed, read from the facade's own extras.

Core knows no backend by name. The facade declares one extra per first-party backend (``exporter[onnx]``
installs exporter-onnx, released with the facade and pinned to its version); that metadata is the only
list of first-party backends, and it is read here rather than copied.
"""

from __future__ import annotations

from importlib import metadata

from exporter_core.errors import BackendNotInstalledError

__all__ = ["FACADE_DISTRIBUTION", "backend_extras", "backend_packages", "not_installed_error"]

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


def not_installed_error(name: str, installed: list[str]) -> BackendNotInstalledError:
    """The error for backend `name` missing: the pip command when the facade knows the package, else a hint."""
    packages = backend_packages(name)
    listed = ", ".join(installed) or "none"
    if packages:
        return BackendNotInstalledError(
            f"no backend named {name!r} is installed (installed: {listed}); install it with: pip install {' '.join(packages)}"
        )
    return BackendNotInstalledError(
        f"no backend named {name!r} is installed (installed: {listed}); "
        "pip install the package that provides it, then check with: exporter backends"
    )
