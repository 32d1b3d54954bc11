"""Features (the old name for tasks): what each one loads and what it outputs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from exporter_core.errors import UnsupportedFeatureError

__all__ = [
    "AUTO_CLASS_FOR_FEATURE",
    "AVAILABLE_FEATURES",
    "COMMON_OUTPUTS",
    "FEATURE_ALIASES",
    "aliases_of",
    "feature_to_task",
    "is_with_past",
    "resolve_feature",
]

#: Feature (without ``-with-past``) -> the Transformers Auto class that loads a model for it.
AUTO_CLASS_FOR_FEATURE: Mapping[str, str] = MappingProxyType(
    {
        "default": "AutoModel",
        "masked-lm": "AutoModelForMaskedLM",
        "causal-lm": "AutoModelForCausalLM",
        "seq2seq-lm": "AutoModelForSeq2SeqLM",
        "sequence-classification": "AutoModelForSequenceClassification",
        "token-classification": "AutoModelForTokenClassification",
        "multiple-choice": "AutoModelForMultipleChoice",
        "object-detection": "AutoModelForObjectDetection",
        "question-answering": "AutoModelForQuestionAnswering",
        "image-classification": "AutoModelForImageClassification",
        "image-segmentation": "AutoModelForImageSegmentation",
        "masked-im": "AutoModelForMaskedImageModeling",
        "semantic-segmentation": "AutoModelForSemanticSegmentation",
        "vision2seq-lm": "AutoModelForVision2Seq",
        "speech2seq-lm": "AutoModelForSpeechSeq2Seq",
        "depth-estimation": "AutoModelForDepthEstimation",
        "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
        "audio-classification": "AutoModelForAudioClassification",
        "ctc": "AutoModelForCTC",
        # The transformer module of a sentence-transformers folder; pooling and normalisation go into the graph.
        "sentence-embedding": "AutoModel",
    }
)

_SEQ = {0: "batch", 1: "sequence"}

#: Task -> ordered outputs with their dynamic axes (the old `_tasks_to_common_outputs`).
COMMON_OUTPUTS: Mapping[str, OrderedDict[str, dict[int, str]]] = MappingProxyType(
    {
        "causal-lm": OrderedDict({"logits": dict(_SEQ)}),
        "default": OrderedDict({"last_hidden_state": dict(_SEQ)}),
        "image-classification": OrderedDict({"logits": {0: "batch", 1: "sequence"}}),
        "image-segmentation": OrderedDict(
            {
                "logits": dict(_SEQ),
                "pred_boxes": dict(_SEQ),
                "pred_masks": dict(_SEQ),
            }
        ),
        "masked-im": OrderedDict({"logits": dict(_SEQ)}),
        "masked-lm": OrderedDict({"logits": dict(_SEQ)}),
        "multiple-choice": OrderedDict({"logits": {0: "batch"}}),
        "object-detection": OrderedDict({"logits": dict(_SEQ), "pred_boxes": dict(_SEQ)}),
        "question-answering": OrderedDict({"start_logits": dict(_SEQ), "end_logits": dict(_SEQ)}),
        "semantic-segmentation": OrderedDict({"logits": {0: "batch", 1: "num_labels", 2: "height", 3: "width"}}),
        "seq2seq-lm": OrderedDict({"logits": {0: "batch", 1: "decoder_sequence"}}),
        "sequence-classification": OrderedDict({"logits": {0: "batch"}}),
        "token-classification": OrderedDict({"logits": dict(_SEQ)}),
        "vision2seq-lm": OrderedDict({"logits": {0: "batch", 1: "sequence"}}),
        "speech2seq-lm": OrderedDict({"logits": {0: "batch", 1: "sequence"}}),
        "depth-estimation": OrderedDict({"predicted_depth": {0: "batch", 1: "height", 2: "width"}}),
        "zero-shot-image-classification": OrderedDict(
            {
                "logits_per_image": {0: "image_batch", 1: "text_batch"},
                "logits_per_text": {0: "text_batch", 1: "image_batch"},
                "text_embeds": {0: "text_batch"},
                "image_embeds": {0: "image_batch"},
            }
        ),
        "audio-classification": OrderedDict({"logits": {0: "batch"}}),
        "ctc": OrderedDict({"logits": {0: "batch", 1: "sequence"}}),
        "sentence-embedding": OrderedDict({"sentence_embedding": {0: "batch"}}),
    }
)

AVAILABLE_FEATURES: tuple[str, ...] = tuple(
    sorted(
        set(AUTO_CLASS_FOR_FEATURE)
        | {f"{f}-with-past" for f in ("default", "causal-lm", "seq2seq-lm", "speech2seq-lm")}
    )
)


def is_with_past(feature: str) -> bool:
    """True for the ``*-with-past`` features."""
    return feature.endswith("-with-past")


def feature_to_task(feature: str) -> str:
    """The task behind a feature: the feature without its ``-with-past`` suffix."""
    return feature.replace("-with-past", "")


#: Optimum / pipeline task names -> our features, the first one the model supports winning (automatic speech
#: recognition is an encoder-decoder's speech2seq-lm, or a CTC head's ctc). A task name that is already one of
#: our features (token-classification, question-answering, image-classification, ...) needs no entry.
FEATURE_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "feature-extraction": ("default",),
        "feature-extraction-with-past": ("default-with-past",),
        "fill-mask": ("masked-lm",),
        "text-generation": ("causal-lm",),
        "text-generation-with-past": ("causal-lm-with-past",),
        "text-classification": ("sequence-classification",),
        "text2text-generation": ("seq2seq-lm",),
        "text2text-generation-with-past": ("seq2seq-lm-with-past",),
        "automatic-speech-recognition": ("speech2seq-lm", "ctc"),
        "automatic-speech-recognition-with-past": ("speech2seq-lm-with-past",),
        "sentence-similarity": ("sentence-embedding",),
    }
)


def resolve_feature(name: str, supported: Sequence[str] | None = None) -> str:
    """Our feature for `name`: `name` itself when it is one, else the feature its task alias stands for.

    With `supported` (the features of one model type), an alias with several meanings resolves to the first of
    them the model type supports, and an alias none of whose meanings it supports is refused with the list.
    """
    if name in AVAILABLE_FEATURES or name not in FEATURE_ALIASES:
        return name
    candidates = FEATURE_ALIASES[name]
    if supported is None:
        return candidates[0]
    for feature in candidates:
        if feature in supported:
            return feature
    raise UnsupportedFeatureError(
        f"task {name!r} stands for {' or '.join(map(repr, candidates))}, which this model type does not support; "
        f"supported features: {', '.join(supported)}"
    )


def aliases_of(feature: str) -> tuple[str, ...]:
    """The task names that resolve to `feature` (for listings: ``masked-lm`` -> ``fill-mask``)."""
    return tuple(alias for alias, features in FEATURE_ALIASES.items() if feature in features)
