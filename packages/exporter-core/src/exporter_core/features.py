"""`FeaturesManager`: the old static API over the installed architecture plugins."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core import plugins
from exporter_core.errors import UnsupportedFeatureError, UnsupportedFrameworkError, UnsupportedModelTypeError
from exporter_core.tasks import AUTO_CLASS_FOR_FEATURE, AVAILABLE_FEATURES, feature_to_task

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = ["FeaturesManager", "config_class_for", "supported_features"]

ConfigConstructor = Callable[[Any], "OnnxConfig"]

#: Features that need a checkpoint's own files beyond its model config; the old static API does not list them.
CHECKPOINT_FEATURES = frozenset({"sentence-embedding"})


def config_class_for(model_type: str) -> type[OnnxConfig]:
    """The architecture config class installed for `model_type`, or a clear error listing what is installed."""
    cls = plugins.load_architecture(model_type)
    if cls is None:
        known = ", ".join(p.name for p in plugins.list_architectures()) or "none"
        raise UnsupportedModelTypeError(
            f"model type {model_type!r} is not supported (installed architectures: {known}); "
            "add one through the exporter.architectures entry point (see docs/adding-an-architecture.md)"
        )
    return cls


def supported_features(model_type: str) -> tuple[str, ...]:
    """Features the installed config for `model_type` declares."""
    return tuple(config_class_for(model_type).supported_features(model_type))


class FeaturesManager:
    """Which features each architecture supports, and how to load a model for a feature."""

    AVAILABLE_FEATURES = list(AVAILABLE_FEATURES)
    _TASKS_TO_AUTOMODELS = dict(AUTO_CLASS_FOR_FEATURE)

    @staticmethod
    def get_supported_features_for_model_type(
        model_type: str, model_name: str | None = None
    ) -> dict[str, ConfigConstructor]:
        """Feature -> constructor taking a model config and returning the export config."""
        try:
            cls = config_class_for(model_type)
        except UnsupportedModelTypeError as exc:
            if model_name:
                raise UnsupportedModelTypeError(f"{model_name}: {exc}") from None
            raise
        # The old API builds a config from a model config alone: a feature that needs the checkpoint's own files
        # (sentence-embedding reads the pooling of a sentence-transformers folder) is the new API's and CLI's.
        return {
            feature: functools.partial(cls.for_feature, feature=feature)
            for feature in cls.supported_features(model_type)
            if feature not in CHECKPOINT_FEATURES
        }

    @staticmethod
    def feature_to_task(feature: str) -> str:
        """The task of a feature (the feature without ``-with-past``)."""
        return feature_to_task(feature)

    @staticmethod
    def get_model_class_for_feature(feature: str, framework: str = "pt") -> type:
        """The Auto class that loads models for `feature`."""
        FeaturesManager._check_framework(framework)
        import transformers

        task = feature_to_task(feature)
        if task not in AUTO_CLASS_FOR_FEATURE:
            raise KeyError(f"Unknown task: {feature}. Possible values are {list(AUTO_CLASS_FOR_FEATURE)}")
        return getattr(transformers, AUTO_CLASS_FOR_FEATURE[task])

    @staticmethod
    def get_model_from_feature(
        feature: str, model: str, framework: str | None = None, cache_dir: str | None = None
    ) -> Any:
        """Load `model` (local folder or cached hub id) with the class of `feature`."""
        from exporter_core import loading

        FeaturesManager._check_framework(framework)
        folder = loading.resolve_checkpoint(model, cache_dir=cache_dir)
        model_type = loading.read_model_type(folder)
        cls = plugins.load_architecture(model_type)
        return loading.load_model(folder, feature, cls)

    @staticmethod
    def check_supported_model_or_raise(model: Any, feature: str = "default") -> tuple[str, ConfigConstructor]:
        """(model_type, constructor) for a loaded model, or an error naming the supported features."""
        model_type = model.config.model_type.replace("_", "-")
        features = FeaturesManager.get_supported_features_for_model_type(model_type, model_name=type(model).__name__)
        if feature not in features:
            raise UnsupportedFeatureError(
                f"{type(model).__name__} ({model_type}) doesn't support feature {feature!r}; "
                f"supported features: {', '.join(features)}"
            )
        return model.config.model_type, features[feature]

    @staticmethod
    def get_config(model_type: str, feature: str) -> ConfigConstructor:
        """The config constructor for (`model_type`, `feature`)."""
        features = FeaturesManager.get_supported_features_for_model_type(model_type)
        if feature not in features:
            raise UnsupportedFeatureError(
                f"model type {model_type!r} doesn't support feature {feature!r}; supported: {', '.join(features)}"
            )
        return features[feature]

    @staticmethod
    def determine_framework(model: str | Path | Any, framework: str | None = None) -> str:
        """Always "pt": Transformers 5 has no TensorFlow; a TensorFlow request is an error."""
        FeaturesManager._check_framework(framework)
        return "pt"

    @staticmethod
    def _check_framework(framework: str | None) -> None:
        if framework not in (None, "pt"):
            raise UnsupportedFrameworkError(
                f"framework {framework!r} is not supported: Transformers 5 has no TensorFlow; use --framework pt"
            )
