"""exporter-core: architecture configs, features, dummy inputs, model loading and plugin discovery.

Cheap to import: torch and transformers are imported only by the functions that need them.
"""

from __future__ import annotations

from exporter_core.backend import Backend, ExportedPart, ExportRequest, ExportResult
from exporter_core.config import (
    OnnxConfig,
    OnnxConfigWithPast,
    OnnxSeq2SeqConfigWithPast,
    PatchingSpec,
    TextEncoderOnnxConfig,
)
from exporter_core.errors import ExporterError, UserError, ValidationError
from exporter_core.features import FeaturesManager
from exporter_core.plan import CheckResult, ExportPlan, PlanCheck, PlanPart, Scenario

__all__ = [
    "Backend",
    "CheckResult",
    "ExportPlan",
    "ExportRequest",
    "ExportResult",
    "ExportedPart",
    "ExporterError",
    "FeaturesManager",
    "OnnxConfig",
    "OnnxConfigWithPast",
    "OnnxSeq2SeqConfigWithPast",
    "PatchingSpec",
    "PlanCheck",
    "PlanPart",
    "Scenario",
    "TextEncoderOnnxConfig",
    "UserError",
    "ValidationError",
]
