"""Every installed ready-made config under its old class name: ``from exporter.configs import BertOnnxConfig``.

Names resolve through the ``exporter.architectures`` entry points, so configs added by third-party
packages are importable here too.
"""

from __future__ import annotations

from typing import Any

from exporter_core.plugins import list_architectures, load_architecture


def _class_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for info in list_architectures():
        _, _, attr = info.target.partition(":")
        names.setdefault(attr, info.name)
    return names


def __getattr__(name: str) -> Any:
    model_type = _class_names().get(name)
    if model_type is None:
        raise AttributeError(
            f"module 'exporter.configs' has no config {name!r} (installed: {', '.join(sorted(_class_names()))})"
        )
    cls = load_architecture(model_type)
    if cls is None:  # pragma: no cover - listed a moment ago
        raise AttributeError(f"config {name!r} was uninstalled while loading")
    if cls.__name__ != name:  # an alias entry point for the same model type
        raise AttributeError(f"config {name!r} resolved to {cls.__name__}")
    return cls


def __dir__() -> list[str]:
    return sorted(_class_names())
