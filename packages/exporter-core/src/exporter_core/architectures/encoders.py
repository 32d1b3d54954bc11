"""Encoder-only text models (BERT and its relatives)."""

from __future__ import annotations

from exporter_core.config import TextEncoderOnnxConfig

__all__ = [
    "AlbertOnnxConfig",
    "BertOnnxConfig",
    "BigBirdOnnxConfig",
    "CamembertOnnxConfig",
    "ConvBertOnnxConfig",
    "Data2VecTextOnnxConfig",
    "DistilBertOnnxConfig",
    "ElectraOnnxConfig",
    "FlaubertOnnxConfig",
    "IBertOnnxConfig",
    "LayoutLMOnnxConfig",
    "MobileBertOnnxConfig",
    "RobertaOnnxConfig",
    "RoFormerOnnxConfig",
    "SqueezeBertOnnxConfig",
    "XLMOnnxConfig",
    "XLMRobertaOnnxConfig",
    "XLMRobertaXLOnnxConfig",
]

#: Features of the encoders without a causal-lm head in the old exporter.
_NO_CAUSAL_LM = (
    "default",
    "masked-lm",
    "sequence-classification",
    "multiple-choice",
    "token-classification",
    "question-answering",
)
_IDS_AND_MASK = ("input_ids", "attention_mask")


class BertOnnxConfig(TextEncoderOnnxConfig):
    """BERT: input_ids, attention_mask, token_type_ids."""


class ElectraOnnxConfig(TextEncoderOnnxConfig):
    """ELECTRA."""


class RoFormerOnnxConfig(TextEncoderOnnxConfig):
    """RoFormer (rotary position embeddings)."""


class FlaubertOnnxConfig(TextEncoderOnnxConfig):
    """FlauBERT: input_ids, attention_mask (as the old exporter); no Auto class maps its causal-lm head any more."""

    model_classes = {"causal-lm": "FlaubertWithLMHeadModel"}
    input_names = _IDS_AND_MASK


class XLMOnnxConfig(TextEncoderOnnxConfig):
    """XLM."""

    model_classes = {"causal-lm": "XLMWithLMHeadModel"}


class RobertaOnnxConfig(TextEncoderOnnxConfig):
    """RoBERTa: input_ids, attention_mask (one token type)."""

    input_names = _IDS_AND_MASK


class CamembertOnnxConfig(RobertaOnnxConfig):
    """CamemBERT."""


class XLMRobertaOnnxConfig(RobertaOnnxConfig):
    """XLM-RoBERTa."""


class XLMRobertaXLOnnxConfig(RobertaOnnxConfig):
    """XLM-RoBERTa-XL."""


class BigBirdOnnxConfig(RobertaOnnxConfig):
    """BigBird, exported with full attention.

    Block-sparse checkpoints switch to full attention for sequences up to (5 + 2 x num_random_blocks) x block_size
    tokens (704 for the released ones); traced below that, the file computes full attention at every length, so it
    matches PyTorch up to that length and differs (exact attention instead of the block-sparse approximation) beyond.
    """


class AlbertOnnxConfig(TextEncoderOnnxConfig):
    """ALBERT."""

    features = _NO_CAUSAL_LM


class ConvBertOnnxConfig(TextEncoderOnnxConfig):
    """ConvBERT."""

    features = _NO_CAUSAL_LM


class MobileBertOnnxConfig(TextEncoderOnnxConfig):
    """MobileBERT."""

    features = _NO_CAUSAL_LM


class SqueezeBertOnnxConfig(TextEncoderOnnxConfig):
    """SqueezeBERT."""

    features = _NO_CAUSAL_LM


class DistilBertOnnxConfig(TextEncoderOnnxConfig):
    """DistilBERT: input_ids, attention_mask."""

    features = _NO_CAUSAL_LM
    input_names = _IDS_AND_MASK


class Data2VecTextOnnxConfig(DistilBertOnnxConfig):
    """Data2Vec for text (RoBERTa-like inputs)."""


class IBertOnnxConfig(DistilBertOnnxConfig):
    """I-BERT (exported in full precision, ``quant_mode`` off)."""


class LayoutLMOnnxConfig(TextEncoderOnnxConfig):
    """LayoutLM: text plus one bounding box (x0, y0, x1, y1) per token."""

    features = ("default", "masked-lm", "sequence-classification", "token-classification")
    input_names = ("input_ids", "bbox", "attention_mask", "token_type_ids")
