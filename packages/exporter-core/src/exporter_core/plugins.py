"""Plugin discovery: the only module that talks to stevedore.

Two namespaces, owned by their consumers:

* ``exporter.backends``: entry-point name = backend id = CLI subcommand, target = a `Backend` subclass.
* ``exporter.architectures``: entry-point name = a Transformers ``model_type``, target = its config class.

Listing reads entry-point metadata only and never imports a plugin module. Loading one named plugin goes
through a stevedore `DriverManager`, which raises on failures and on duplicate names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from exporter_core.errors import BackendNotInstalledError, BackendUnavailableError, PluginError

__all__ = [
    "ARCHITECTURES_NAMESPACE",
    "BACKENDS_NAMESPACE",
    "PluginInfo",
    "list_architectures",
    "list_backends",
    "load_architecture",
    "load_backend",
    "missing_requirements",
]

BACKENDS_NAMESPACE = "exporter.backends"
ARCHITECTURES_NAMESPACE = "exporter.architectures"

#: Distribution that provides each backend we ship, for the "pip install" hint of a missing backend.
KNOWN_BACKEND_DISTRIBUTIONS = {
    "onnx": "exporter-onnx",
    "torchscript": "exporter-torchscript",
    "neuron": "exporter-neuron",
}


@dataclass(frozen=True)
class PluginInfo:
    """One entry point as declared in installed metadata (nothing imported)."""

    name: str
    target: str
    distribution: str | None
    version: str | None


def _entry_points(namespace: str) -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=namespace))


def _describe(ep: metadata.EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    return PluginInfo(
        name=ep.name,
        target=ep.value,
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
    )


def list_backends() -> list[PluginInfo]:
    """Installed backends, sorted by name, read from metadata without importing them."""
    return sorted((_describe(ep) for ep in _entry_points(BACKENDS_NAMESPACE)), key=lambda p: p.name)


def list_architectures() -> list[PluginInfo]:
    """Installed architecture configs, sorted by model type, without importing them."""
    return sorted((_describe(ep) for ep in _entry_points(ARCHITECTURES_NAMESPACE)), key=lambda p: p.name)


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def missing_requirements(distribution: str) -> list[str]:
    """Requirements of an installed distribution (extras excluded) that are not installed or off-version."""
    from packaging.requirements import Requirement

    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return [distribution]
    missing: list[str] = []
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{requirement} (found {installed})")
    return missing


def _load(namespace: str, name: str) -> Any:
    from stevedore import driver
    from stevedore.exception import MultipleMatches, NoMatches

    def fail(_manager: object, entrypoint: object, exc: BaseException) -> None:
        raise PluginError(f"plugin {name!r} in {namespace} ({entrypoint}) failed to load: {exc}") from exc

    try:
        manager = driver.DriverManager(
            namespace,
            name,
            invoke_on_load=False,
            on_load_failure_callback=fail,
            on_missing_entrypoints_callback=lambda _names: None,
        )
    except MultipleMatches as exc:
        owners = [p.distribution for p in (_describe(ep) for ep in _entry_points(namespace)) if p.name == name]
        raise PluginError(
            f"{len(owners)} installed packages declare {name!r} in {namespace} ({', '.join(map(str, owners))}); "
            "uninstall all but one"
        ) from exc
    except NoMatches:
        return None
    return manager.driver


def load_backend(name: str) -> Any:
    """Import and return the backend class named `name`, after checking its requirements are installed."""
    infos = [p for p in list_backends() if p.name == name]
    if not infos:
        dist = KNOWN_BACKEND_DISTRIBUTIONS.get(name, f"the package that provides the {name!r} backend")
        installed = ", ".join(p.name for p in list_backends()) or "none"
        raise BackendNotInstalledError(
            f"backend {name!r} is not installed (installed: {installed}); install it with: pip install {dist}"
        )
    if infos[0].distribution:
        missing = missing_requirements(infos[0].distribution)
        if missing:
            raise BackendUnavailableError(
                f"backend {name!r} needs packages that are not installed: {', '.join(missing)}; "
                f"install them with: pip install {infos[0].distribution}"
            )
    backend = _load(BACKENDS_NAMESPACE, name)
    if backend is None:  # pragma: no cover - listing and loading disagree only if metadata changes mid-call
        raise BackendNotInstalledError(f"backend {name!r} disappeared while loading; reinstall it")
    return backend


def load_architecture(model_type: str) -> Any | None:
    """The config class registered for `model_type`, or None when no plugin declares it."""
    key = model_type.replace("_", "-")
    for info in list_architectures():
        if info.name.replace("_", "-") == key:
            return _load(ARCHITECTURES_NAMESPACE, info.name)
    return None
