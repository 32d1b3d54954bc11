"""``from exporter.onnx.features import FeaturesManager`` (the old module path)."""

from __future__ import annotations

from exporter_core.features import FeaturesManager

__all__ = ["FeaturesManager"]
