"""A small public test kit: tiny random-weight checkpoints built offline.

Every architecture config declares its own tiny sizes (`OnnxConfig.tiny_config`, keyword arguments of
``AutoConfig.for_model``; a generic family registered for several model types derives them per type in
`OnnxConfig.tiny_sizes`), so a third-party architecture is built exactly like a first-party one.
`build_tiny_checkpoint("bert", "masked-lm", folder)` writes config, weights and (on request) a small WordLevel
tokenizer or an image processor into `folder` with `save_pretrained`, so preprocessor-driven code runs with no hub.
The export cases built on these checkpoints live in `exporter_core.export_cases`; the pytest fixtures in
`exporter_core.pytest_plugin`.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter_core.model_config import ModelConfigView

__all__ = [
    "INIT_STD",
    "SPECIAL_TOKENS",
    "build_tiny_checkpoint",
    "build_tiny_image_processor",
    "build_tiny_tokenizer",
    "init_std_overrides",
    "preprocessor_kind",
    "tiny_config_for",
    "tiny_model_config",
]

#: Special tokens of the tiny tokenizer, with their ids.
SPECIAL_TOKENS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}

#: Standard deviation of random weights in tested checkpoints. Transformers' 0.02 gives classification logits of
#: order 1e-3 (MobileBERT: 1e-4), against which an atol of 1e-5 proves little; 0.1 gives outputs of order 0.1-3.
INIT_STD = 0.1

#: Config attributes that set the standard deviation of random weights, under the names Transformers uses.
_STD_ATTRIBUTES = ("initializer_range", "init_std", "embed_init_std")


def tiny_config_for(model_type: str) -> dict[str, Any]:
    """The tiny sizes the installed architecture config of `model_type` declares (a fresh copy)."""
    from exporter_core.plugins import load_architecture

    config_cls = load_architecture(model_type)
    if config_cls is None:
        raise LookupError(f"no installed architecture declares model type {model_type!r} (exporter.architectures)")
    sizes = config_cls.tiny_sizes(model_type)
    if not sizes:
        raise LookupError(
            f"{config_cls.__module__}.{config_cls.__qualname__} ({model_type}) declares no tiny sizes; set its "
            "`tiny_config` class attribute to AutoConfig.for_model keywords of a tiny model"
        )
    return copy.deepcopy(dict(sizes))


def tiny_model_config(model_type: str, **overrides: Any) -> Any:
    """`AutoConfig.for_model(model_type, **tiny_config_for(model_type), **overrides)`."""
    from transformers import AutoConfig

    kwargs = tiny_config_for(model_type)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def init_std_overrides(model_type: str, std: float = INIT_STD) -> dict[str, float]:
    """Config keywords setting every random-weight standard deviation `model_type`'s config has to `std`.

    Models that scale their own initialisation (T5's ``initializer_factor``) are left alone.
    """
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(model_type)
    return {name: std for name in _STD_ATTRIBUTES if hasattr(defaults, name)}


def preprocessor_kind(model_type: str, feature: str, **overrides: Any) -> str | None:
    """The preprocessor a tested checkpoint of (`model_type`, `feature`) carries, as real checkpoints do.

    ``"feature_extractor"`` when the architecture builds one for its tiny model (`OnnxConfig.tiny_feature_extractor`:
    audio), ``"image_processor"`` when an input is an image (and Pillow is installed), ``"tokenizer"`` when inputs are
    token sequences, None otherwise.
    No tokenizer when the model's eos id is one the tiny tokenizer writes on every row ([CLS], [SEP]): a random model
    that reads its eos answers eos at once, and a generation check would then cover a single token.
    """
    from exporter_core.plugins import load_architecture

    config_cls = load_architecture(model_type)
    if config_cls is None:
        return None
    model_config = tiny_model_config(model_type, **overrides)
    if config_cls.tiny_feature_extractor(model_config) is not None:
        return "feature_extractor"
    axes = [set(a.values()) for a in config_cls.for_feature(model_config, feature).inputs.values()]
    if any("height" in names for names in axes):
        # Image processors need Pillow; without it the pixel values come from the model config.
        return "image_processor" if importlib.util.find_spec("PIL") is not None else None
    if not any("sequence" in name for names in axes for name in names):
        return None
    if set(ModelConfigView(model_config).eos_token_ids) & {SPECIAL_TOKENS["[CLS]"], SPECIAL_TOKENS["[SEP]"]}:
        return None
    return "tokenizer"


def build_tiny_tokenizer(vocab_size: int = 99) -> Any:
    """A WordLevel tokenizer over the dummy-text words with BERT-style special tokens, ids below `vocab_size`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from exporter_core.dummy_inputs import _WORDS

    vocab = dict(SPECIAL_TOKENS)
    for word in [*_WORDS, "hello", "world", "using", "with", "runtime", "is", "this"]:
        if word not in vocab and len(vocab) < vocab_size:
            vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_tiny_image_processor(height: int, width: int) -> Any:
    """A `ViTImageProcessor` resizing to (`height`, `width`) and normalising (needs Pillow, as image processors do)."""
    import transformers

    # The Pillow flavour is what ViTImageProcessor falls back to without torchvision (minus the warning).
    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return cls(size={"height": height, "width": width}, image_mean=[0.45, 0.5, 0.55], image_std=[0.25, 0.2, 0.3])


def build_tiny_checkpoint(
    model_type: str,
    feature: str,
    folder: str | Path,
    *,
    with_tokenizer: bool = False,
    with_image_processor: bool = False,
    with_feature_extractor: bool = False,
    seed: int = 0,
    config_overrides: Mapping[str, Any] | None = None,
    init_std: float | None = None,
) -> Path:
    """Save a random-weight tiny model for (`model_type`, `feature`) into `folder` and return the folder.

    Sizes are the architecture's (`tiny_config_for`), then `config_overrides`. `init_std` sets every random-weight
    standard deviation (`init_std_overrides`) unless the sizes or `config_overrides` name one; None keeps
    Transformers' own.
    `with_image_processor` saves an image processor sized to the model's ``image_size`` (preprocessor_config.json);
    `with_feature_extractor` the architecture's `OnnxConfig.tiny_feature_extractor` (an error when it has none).
    """
    import torch

    from exporter_core.loading import model_class_for
    from exporter_core.plugins import load_architecture

    folder = Path(folder)
    # An architecture's own tiny sizes may set a standard deviation (depthwise-convolution stacks fade to ~1e-12 at
    # the kit's): theirs wins over `init_std`, as `config_overrides` do.
    own = tiny_config_for(model_type)
    overrides = (
        {k: v for k, v in init_std_overrides(model_type, init_std).items() if k not in own}
        if init_std is not None
        else {}
    )
    overrides.update(config_overrides or {})
    config = tiny_model_config(model_type, **overrides)
    config_cls = load_architecture(model_type)
    cls = model_class_for(feature, config_cls)
    torch.manual_seed(seed)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    model.eval()
    model.save_pretrained(str(folder))
    if feature == "sentence-embedding":
        # As the feature's real checkpoints are: a sentence-transformers folder (modules.json, pooling config).
        from exporter_core.sentence import KIT_SENTENCE_MODULES, write_sentence_modules

        write_sentence_modules(folder, KIT_SENTENCE_MODULES, int(ModelConfigView(config).hidden_size))
    if with_tokenizer:
        build_tiny_tokenizer(int(getattr(config, "vocab_size", 99))).save_pretrained(str(folder))
    if with_image_processor:
        from exporter_core.architectures.vision import image_size_of

        build_tiny_image_processor(*image_size_of(config)).save_pretrained(str(folder))
    if with_feature_extractor:
        extractor = config_cls.tiny_feature_extractor(config) if config_cls is not None else None
        if extractor is None:
            raise LookupError(f"the {model_type} architecture builds no feature extractor (tiny_feature_extractor)")
        extractor.save_pretrained(str(folder))
    return folder
