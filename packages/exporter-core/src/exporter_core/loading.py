"""Finding a checkpoint (local folder, or hub id in the local hub cache) and loading model and preprocessor.

Nothing here reaches the network: a hub id must already be in the local hub cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from exporter_core.errors import (
    MissingDependencyError,
    ModelNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFrameworkError,
    UnsupportedModelTypeError,
)
from exporter_core.tasks import AUTO_CLASS_FOR_FEATURE, feature_to_task

__all__ = [
    "PREPROCESSOR_KINDS",
    "load_model",
    "load_preprocessor",
    "read_model_type",
    "resolve_checkpoint",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_OTHER_WEIGHTS = ("tf_model.h5", "tf_model.h5.index.json", "flax_model.msgpack")
PREPROCESSOR_KINDS = ("auto", "tokenizer", "feature_extractor", "image_processor", "processor")


def _check_folder(folder: Path, shown: str) -> Path:
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"{shown} has no config.json; point --model at a folder written by save_pretrained (config and weights)"
        )
    if not any((folder / name).is_file() for name in _PT_WEIGHTS):
        if any((folder / name).is_file() for name in _OTHER_WEIGHTS):
            raise UnsupportedFrameworkError(
                f"{shown} holds only TensorFlow/Flax weights; Transformers 5 has no TensorFlow: convert the "
                "checkpoint to PyTorch (model.safetensors) with Transformers 4.x, then export that"
            )
        raise ModelNotFoundError(
            f"{shown} has no PyTorch weights (model.safetensors or pytorch_model.bin); save the model with "
            "save_pretrained into that folder"
        )
    return folder


def resolve_checkpoint(model: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The local folder of `model`: the folder itself, or the hub id's snapshot in the local hub cache."""
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"{text} is a file; --model takes a checkpoint folder or a hub id")
        return _check_folder(path, text)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelNotFoundError(f"no such folder: {text}; check the path given to --model")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(text, cache_dir=str(cache_dir) if cache_dir else None, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise ModelNotFoundError(
            f"{text} is not a local folder and is not in the local hub cache; exporter works offline: download it "
            f"where there is network (huggingface-cli download {text}) and copy the cache, or pass a local folder"
        ) from None
    return _check_folder(Path(snapshot), text)


def read_model_type(folder: Path) -> str:
    """The ``model_type`` recorded in the checkpoint's config.json."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(
            f"{folder / 'config.json'} cannot be read as JSON ({exc}); re-save the checkpoint"
        ) from None
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UnsupportedModelTypeError(
            f"{folder / 'config.json'} names no model_type; re-save it with save_pretrained"
        )
    return model_type


def model_class_for(feature: str, config_cls: type | None = None) -> Any:
    """The Transformers class that loads a model for `feature` (an Auto class unless the config names one)."""
    import transformers

    task = feature_to_task(feature)
    overrides = getattr(config_cls, "model_classes", {}) or {}
    name = overrides.get(feature) or overrides.get(task)
    if name is None:
        if task not in AUTO_CLASS_FOR_FEATURE:
            raise UnsupportedFeatureError(
                f"unknown feature {feature!r}; known: {', '.join(sorted(AUTO_CLASS_FOR_FEATURE))}"
            )
        name = AUTO_CLASS_FOR_FEATURE[task]
    return getattr(transformers, name)


def load_model(folder: Path, feature: str, config_cls: type | None = None, **kwargs: Any) -> Any:
    """Load the checkpoint in `folder` with the class of `feature`, in eval mode."""
    cls = model_class_for(feature, config_cls)
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise UnsupportedFeatureError(
                f"{cls.__name__} cannot load this checkpoint for feature {feature!r}; pick another --feature"
            ) from None
        raise
    model.eval()
    if feature_to_task(feature) == "sentence-embedding":
        from exporter_core.sentence import read_sentence_modules, sentence_embedding_model

        # Pooling and normalisation from modules.json (or the plain-checkpoint default) go into the graph.
        model = sentence_embedding_model(model, read_sentence_modules(folder)).eval()
    return model


def _has_any(folder: Path, names: tuple[str, ...]) -> bool:
    return any((folder / name).is_file() for name in names)


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _processor_kind(folder: Path) -> str:
    """``feature_extractor`` for a preprocessor_config.json that names only a feature extractor (audio models),
    else ``image_processor``."""
    path = folder / "preprocessor_config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved, dict) and "feature_extractor_type" in saved and "image_processor_type" not in saved:
        return "feature_extractor"
    return "image_processor"


def load_preprocessor(folder: Path, kind: str = "auto") -> Any | None:
    """The checkpoint's tokenizer or image/feature processor, or None when `kind` is auto and it has none."""
    import transformers

    if kind not in PREPROCESSOR_KINDS:
        raise UnsupportedFeatureError(f"unknown preprocessor {kind!r}; use one of {', '.join(PREPROCESSOR_KINDS)}")
    loaders = {
        "tokenizer": ("AutoTokenizer", _TOKENIZER_FILES),
        "feature_extractor": ("AutoFeatureExtractor", _PROCESSOR_FILES),
        "image_processor": ("AutoImageProcessor", _PROCESSOR_FILES),
        "processor": ("AutoProcessor", _PROCESSOR_FILES + _TOKENIZER_FILES),
    }
    if kind == "auto":
        if _has_any(folder, _PROCESSOR_FILES):
            kind = _processor_kind(folder)
        elif _has_any(folder, _TOKENIZER_FILES):
            kind = "tokenizer"
        else:
            return None
    loader_name, files = loaders[kind]
    if not _has_any(folder, files):
        raise ModelNotFoundError(
            f"{folder} has no {kind.replace('_', ' ')} files; drop --preprocessor {kind} or save one there"
        )
    try:
        # Without Pillow, Transformers may refuse at the class lookup or at from_pretrained.
        return getattr(transformers, loader_name).from_pretrained(str(folder), local_files_only=True)
    except ImportError as exc:
        # Image processors need Pillow, which text-only installs do not pull in.
        missing = getattr(exc, "name", None) or ("Pillow" if kind != "tokenizer" else "a package")
        raise MissingDependencyError(
            f"loading the {kind.replace('_', ' ')} of {folder} needs {missing}, which is not installed: "
            "pip install 'exporter-core[vision]' (or pass --preprocessor for another kind)"
        ) from None
