"""The feature a checkpoint was saved for, read from the checkpoint itself.

A sentence-transformers folder (``modules.json``) is for ``sentence-embedding``. Otherwise the class names in
config.json's ``architectures`` are looked up in Transformers' Auto mappings (the class of each feature's Auto
class, `AUTO_CLASS_FOR_FEATURE`): ``LlamaForCausalLM`` is in the causal-LM mapping, ``WhisperForConditionalGeneration``
in the speech seq2seq one, ``BertModel`` in the base-model one. Generative heads are exported with past key values
when the model type supports it, as they are used. Only a feature the installed config supports is chosen; else
``default``, and the reason says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter_core.tasks import AUTO_CLASS_FOR_FEATURE, FEATURE_ALIASES, feature_to_task, resolve_feature

__all__ = ["FeatureChoice", "choose_feature", "detect_feature", "tasks_of_class"]

#: Tasks whose checkpoints generate: exported with past key values where the model type supports it.
_GENERATIVE = ("speech2seq-lm", "seq2seq-lm", "causal-lm")
#: Tasks that no architectures entry names by itself (the base-model mapping serves every model type).
_NOT_FROM_CLASS = ("default", "sentence-embedding")


@dataclass(frozen=True)
class FeatureChoice:
    """The feature an export uses, and why (None when the caller named our feature itself)."""

    feature: str
    reason: str | None = None


def tasks_of_class(class_name: str) -> list[str]:
    """Tasks whose Auto mapping holds the Transformers class `class_name`, generative heads first, base model last."""
    import transformers

    found = []
    for task, auto_name in AUTO_CLASS_FOR_FEATURE.items():
        if task == "sentence-embedding":
            continue
        auto_class = getattr(transformers, auto_name, None)
        mapping: Mapping[str, str | Sequence[str]] = getattr(
            getattr(auto_class, "_model_mapping", None), "_model_mapping", {}
        )
        for names in mapping.values():
            if class_name == names or (not isinstance(names, str) and class_name in names):
                found.append(task)
                break
    order = [t for t in _GENERATIVE if t in found]
    order += [t for t in found if t not in order and t != "default"]
    return order + (["default"] if "default" in found else [])


def _architectures(folder: Path) -> list[str]:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    names = data.get("architectures") if isinstance(data, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def detect_feature(folder: Path, model_type: str, supported: Sequence[str]) -> FeatureChoice:
    """The feature `folder`'s checkpoint was saved for, among `supported` (its model type's features)."""
    from exporter_core.sentence import MODULES_FILE, is_sentence_transformers_folder

    folder = Path(folder)
    if is_sentence_transformers_folder(folder):
        if "sentence-embedding" in supported:
            return FeatureChoice(
                "sentence-embedding", f"the checkpoint is a sentence-transformers folder ({MODULES_FILE})"
            )
        return FeatureChoice(
            "default",
            f"the checkpoint is a sentence-transformers folder ({MODULES_FILE}), but the installed config for "
            f"{model_type} does not offer sentence-embedding; using default",
        )
    names = _architectures(folder)
    if not names:
        return FeatureChoice("default", "config.json names no architectures: a base model")
    unserved = []
    for name in names:
        tasks = tasks_of_class(name)
        if not tasks:
            unserved.append(f"{name} is in no Auto mapping of a known feature")
            continue
        for task in tasks:
            with_past = f"{task}-with-past"
            if task in _GENERATIVE and with_past in supported:
                return FeatureChoice(with_past, f"config.json names {name} ({task}, generating with past key values)")
            if task in supported:
                return FeatureChoice(task, f"config.json names {name} ({task})")
        unserved.append(
            f"{name} is a {' / '.join(tasks)} model, which the installed config for {model_type} does not support"
        )
    return FeatureChoice("default", "; ".join(unserved) + "; using default")


def choose_feature(requested: str | None, folder: Path, model_type: str, supported: Sequence[str]) -> FeatureChoice:
    """The feature of an export: `requested` (an Optimum task name translated), or the checkpoint's own when None.

    For sentence embeddings the reason also says how the graph pools (read from modules.json, or the plain-checkpoint
    default), and a module list the graph cannot hold is refused here, before the model is loaded.
    """
    if requested is None:
        choice = detect_feature(folder, model_type, supported)
    else:
        feature = resolve_feature(requested, supported)
        translated = feature != requested and requested in FEATURE_ALIASES
        choice = FeatureChoice(
            feature, f"{requested!r} is the task name of our feature {feature!r}" if translated else None
        )
    if feature_to_task(choice.feature) != "sentence-embedding" or choice.feature not in supported:
        return choice
    from exporter_core.sentence import read_sentence_modules

    # What the graph pools, said before the model loads (and a module list it cannot hold refused as early).
    pooling = read_sentence_modules(folder).describe()
    return FeatureChoice(choice.feature, f"{choice.reason}; {pooling}" if choice.reason else pooling)
