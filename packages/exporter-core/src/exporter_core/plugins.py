"""Plugin discovery: the only module that talks to stevedore.

Two namespaces, owned by their consumers:

* ``exporter.backends``: entry-point name = backend id = CLI subcommand, target = a `Backend` subclass.
* ``exporter.architectures``: entry-point name = a Transformers ``model_type``, target = its config class.

Listing reads entry-point metadata only and never imports a plugin module. Loading one named plugin goes
through a stevedore `DriverManager`, which raises on failures and on duplicate names, and then checks what the
entry point names against its namespace's contract, so that a wrong target is one error naming the distribution
and the entry point, not a failure deep inside an export. Core knows no backend by name: which distribution
provides a backend is read from the installed entry points.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from exporter_core.errors import BackendNotInstalledError, BackendUnavailableError, InvalidPluginError, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.backend import Backend
    from exporter_core.config import OnnxConfig

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

#: The class every target of a namespace must subclass, as (module, class name): imported only when a plugin is.
REQUIRED_BASES = {
    BACKENDS_NAMESPACE: ("exporter_core.backend", "Backend"),
    ARCHITECTURES_NAMESPACE: ("exporter_core.config", "OnnxConfig"),
}

#: Class attributes a backend must define (the base class only annotates them).
BACKEND_ATTRIBUTES = ("name", "display_name", "default_artifact")


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


def _declared(namespace: str, name: str) -> PluginInfo | None:
    """The one entry point called `name` in `namespace` (duplicates are refused before this is asked)."""
    return next((_describe(ep) for ep in _entry_points(namespace) if ep.name == name), None)


def _entry_point_phrase(namespace: str, name: str) -> str:
    """``entry point 'x' in exporter.backends, declared by dist-name, names module:Class``: for error messages."""
    info = _declared(namespace, name)
    if info is None:  # pragma: no cover - stevedore found it, so metadata has it
        return f"entry point {name!r} in {namespace}"
    return f"entry point {name!r} in {namespace}, declared by {info.distribution or 'an unnamed distribution'}, names {info.target}"


def _fix_hint(namespace: str, name: str) -> str:
    info = _declared(namespace, name)
    if info is None or not info.distribution:  # pragma: no cover - every installed entry point has a distribution
        return "fix the entry point or uninstall the package that declares it"
    return f"fix the entry point in that package or uninstall it: pip uninstall {info.distribution}"


def _what_it_is(target: object) -> str:
    if isinstance(target, type):
        return f"the class {target.__module__}.{target.__qualname__}"
    return f"a {type(target).__name__} object"


def _contract_problem(namespace: str, target: object) -> str | None:
    """Why `target` cannot serve as a plugin of `namespace`, or None when it can."""
    if namespace not in REQUIRED_BASES:
        return None
    module_name, class_name = REQUIRED_BASES[namespace]
    base = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(target, type) and issubclass(target, base)):
        return f"{_what_it_is(target)}, not a subclass of {module_name}.{class_name}"
    if namespace == BACKENDS_NAMESPACE:
        if inspect.isabstract(target):
            missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
            return f"{_what_it_is(target)}, an abstract Backend that does not implement {missing}"
        unset = [attr for attr in BACKEND_ATTRIBUTES if not isinstance(getattr(target, attr, None), str)]
        if unset:
            return f"{_what_it_is(target)}, a Backend without the class attribute(s) {', '.join(unset)} (strings)"
    return None


def _load(namespace: str, name: str) -> Any:
    """The object entry point `name` of `namespace` names, checked against the namespace's contract; None if absent."""
    from stevedore import driver
    from stevedore.exception import MultipleMatches, NoMatches

    def fail(_manager: object, _entrypoint: object, exc: BaseException) -> None:
        raise PluginError(
            f"{_entry_point_phrase(namespace, name)}, which failed to load: {type(exc).__name__}: {exc}"
        ) from exc

    try:
        manager: driver.DriverManager[Any] = driver.DriverManager(
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
    target = manager.driver
    problem = _contract_problem(namespace, target)
    if problem is not None:
        raise InvalidPluginError(f"{_entry_point_phrase(namespace, name)}: {problem}; {_fix_hint(namespace, name)}")
    return target


def load_backend(name: str) -> type[Backend]:
    """Import and return the backend class named `name`, after checking its requirements are installed.

    A name no installed distribution declares is a `BackendNotInstalledError` listing the installed backends;
    which package would provide it is not known here (the facade's extras say it for first-party backends).
    """
    infos = [p for p in list_backends() if p.name == name]
    if not infos:
        installed = ", ".join(p.name for p in list_backends()) or "none"
        raise BackendNotInstalledError(
            f"no backend named {name!r} is installed (installed: {installed}); "
            "pip install the package that provides it, then check with: exporter backends"
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


def load_architecture(model_type: str) -> type[OnnxConfig] | None:
    """The config class registered for `model_type`, or None when no plugin declares it."""
    key = model_type.replace("_", "-")
    for info in list_architectures():
        if info.name.replace("_", "-") == key:
            return _load(ARCHITECTURES_NAMESPACE, info.name)
    return None
