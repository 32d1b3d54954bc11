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
    "RoFormerOnnxConfig",
    "RobertaOnnxConfig",
    "SqueezeBertOnnxConfig",
    "XLMOnnxConfig",
    "XLMRobertaOnnxConfig",
    "XLMRobertaXLOnnxConfig",
]

#: The opt-in of a text encoder to sentence embeddings (`exporter_core.sentence`): listing the feature is all it
#: takes, since the pooled graph takes the encoder's own text inputs.
SENTENCE_EMBEDDING = "sentence-embedding"
#: Features of the encoders with every head of the old exporter, and sentence embeddings.
_ENCODER_FEATURES = (*TextEncoderOnnxConfig.features, SENTENCE_EMBEDDING)
#: Features of the encoders without a causal-lm head in the old exporter, and sentence embeddings.
_NO_CAUSAL_LM = (
    "default",
    "masked-lm",
    "sequence-classification",
    "multiple-choice",
    "token-classification",
    "question-answering",
    SENTENCE_EMBEDDING,
)
_IDS_AND_MASK = ("input_ids", "attention_mask")


#: Tiny sizes shared by the BERT-like encoders (the classic test sizes; vocabulary 99).
_TINY_TEXT = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}


class BertOnnxConfig(TextEncoderOnnxConfig):
    """BERT: input_ids, attention_mask, token_type_ids."""

    features = _ENCODER_FEATURES

    tiny_config = dict(_TINY_TEXT)


class ElectraOnnxConfig(TextEncoderOnnxConfig):
    """ELECTRA."""

    features = _ENCODER_FEATURES

    tiny_config = {**_TINY_TEXT, "embedding_size": 16}


class RoFormerOnnxConfig(TextEncoderOnnxConfig):
    """RoFormer (rotary position embeddings)."""

    features = _ENCODER_FEATURES

    tiny_config = {**_TINY_TEXT, "embedding_size": 32}


class FlaubertOnnxConfig(TextEncoderOnnxConfig):
    """FlauBERT: input_ids, attention_mask (as the old exporter); no Auto class maps its causal-lm head any more."""

    features = _ENCODER_FEATURES

    model_classes = {"causal-lm": "FlaubertWithLMHeadModel"}
    input_names = _IDS_AND_MASK

    tiny_config = {"vocab_size": 99, "emb_dim": 32, "n_layers": 2, "n_heads": 4, "max_position_embeddings": 64}


class XLMOnnxConfig(TextEncoderOnnxConfig):
    """XLM."""

    features = _ENCODER_FEATURES

    model_classes = {"causal-lm": "XLMWithLMHeadModel"}

    tiny_config = {"vocab_size": 99, "emb_dim": 32, "n_layers": 2, "n_heads": 4, "max_position_embeddings": 64}


class RobertaOnnxConfig(TextEncoderOnnxConfig):
    """RoBERTa: input_ids, attention_mask (one token type)."""

    features = _ENCODER_FEATURES

    input_names = _IDS_AND_MASK

    tiny_config = dict(_TINY_TEXT)


class CamembertOnnxConfig(RobertaOnnxConfig):
    """CamemBERT."""

    tiny_config = dict(_TINY_TEXT)


class XLMRobertaOnnxConfig(RobertaOnnxConfig):
    """XLM-RoBERTa."""

    tiny_config = dict(_TINY_TEXT)


class XLMRobertaXLOnnxConfig(RobertaOnnxConfig):
    """XLM-RoBERTa-XL."""

    tiny_config = dict(_TINY_TEXT)


class BigBirdOnnxConfig(RobertaOnnxConfig):
    """BigBird, exported with full attention.

    Block-sparse checkpoints switch to full attention for sequences up to (5 + 2 x num_random_blocks) x block_size
    tokens (704 for the released ones); traced below that, the file computes full attention at every length, so it
    matches PyTorch up to that length and differs (exact attention instead of the block-sparse approximation) beyond.
    """

    tiny_config = {**_TINY_TEXT, "attention_type": "original_full"}


class AlbertOnnxConfig(TextEncoderOnnxConfig):
    """ALBERT."""

    features = _NO_CAUSAL_LM

    tiny_config = {**_TINY_TEXT, "embedding_size": 16}


class ConvBertOnnxConfig(TextEncoderOnnxConfig):
    """ConvBERT."""

    features = _NO_CAUSAL_LM

    tiny_config = {**_TINY_TEXT, "embedding_size": 32, "head_ratio": 2, "conv_kernel_size": 9}


class MobileBertOnnxConfig(TextEncoderOnnxConfig):
    """MobileBERT."""

    features = _NO_CAUSAL_LM

    tiny_config = {**_TINY_TEXT, "embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16}


class SqueezeBertOnnxConfig(TextEncoderOnnxConfig):
    """SqueezeBERT."""

    features = _NO_CAUSAL_LM

    tiny_config = {
        **_TINY_TEXT,
        "intermediate_size": 32,
        "embedding_size": 32,
        "q_groups": 2,
        "k_groups": 2,
        "v_groups": 2,
        "post_attention_groups": 2,
        "intermediate_groups": 2,
        "output_groups": 2,
    }


class DistilBertOnnxConfig(TextEncoderOnnxConfig):
    """DistilBERT: input_ids, attention_mask."""

    features = _NO_CAUSAL_LM
    input_names = _IDS_AND_MASK

    tiny_config = {
        "vocab_size": 99,
        "dim": 32,
        "n_layers": 2,
        "n_heads": 4,
        "hidden_dim": 37,
        "max_position_embeddings": 64,
    }


class Data2VecTextOnnxConfig(DistilBertOnnxConfig):
    """Data2Vec for text (RoBERTa-like inputs)."""

    tiny_config = dict(_TINY_TEXT)


class IBertOnnxConfig(DistilBertOnnxConfig):
    """I-BERT (exported in full precision, ``quant_mode`` off)."""

    tiny_config = {**_TINY_TEXT, "quant_mode": False}


class LayoutLMOnnxConfig(TextEncoderOnnxConfig):
    """LayoutLM: text plus one bounding box (x0, y0, x1, y1) per token."""

    features = ("default", "masked-lm", "sequence-classification", "token-classification")
    input_names = ("input_ids", "bbox", "attention_mask", "token_type_ids")

    tiny_config = dict(_TINY_TEXT)
