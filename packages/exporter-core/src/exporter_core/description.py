"""An exported folder that describes itself: the checkpoint's config, generation config and preprocessor files.

Beside the artifacts, an export writes what the usual Transformers-style tools load a folder with:
``AutoConfig.from_pretrained(OUT)``, ``AutoTokenizer.from_pretrained(OUT)``, ``AutoProcessor`` /
``AutoImageProcessor`` / ``AutoFeatureExtractor``, ``GenerationConfig.from_pretrained(OUT)``; for sentence
embeddings also ``modules.json`` and the pooling config that say what the graph pools. Files are copied as the
checkpoint holds them (nothing re-serialised), into the staging folder, so they arrive with the artifacts or not at
all. A file the backend already wrote is never overwritten.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION_FILES", "write_description"]

#: Files of a checkpoint that describe it (config, generation, tokenizer, processors, chat template), by name.
DESCRIPTION_FILES = (
    "config.json",
    "generation_config.json",
    # tokenizers
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "source.spm",
    "target.spm",
    "chat_template.jinja",
    "chat_template.json",
    # image processors, feature extractors, processors
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    # sentence-transformers' own settings (the modules themselves are written from what the graph does)
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def _vocabulary_files(preprocessor: Any) -> Iterable[str]:
    """File names the loaded tokenizer class reads (``vocab_files_names``), for tokenizers with their own names."""
    tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
    names = getattr(tokenizer, "vocab_files_names", None) or {}
    return [name for name in names.values() if isinstance(name, str) and "/" not in name]


def write_description(checkpoint: Path, staging: Path, model: Any = None, preprocessor: Any = None) -> list[str]:
    """Copy `checkpoint`'s describing files into `staging`; return the names written, sorted.

    A model that generates but whose checkpoint has no generation_config.json gets the generation config Transformers
    derived for it. A sentence-embedding model (`exporter_core.sentence`) gets its modules.json and pooling config.
    """
    checkpoint, staging = Path(checkpoint), Path(staging)
    written: list[str] = []
    for name in dict.fromkeys([*DESCRIPTION_FILES, *_vocabulary_files(preprocessor)]):
        source, target = checkpoint / name, staging / name
        if source.is_file() and not target.exists():
            shutil.copyfile(source, target)
            written.append(name)
    generation = getattr(model, "generation_config", None)
    can_generate = getattr(model, "can_generate", None)
    generates = generation is not None and callable(can_generate) and bool(can_generate())
    if generation is not None and generates and not (staging / "generation_config.json").exists():
        generation.save_pretrained(str(staging))
        written.append("generation_config.json")
    from exporter_core.sentence import sentence_modules_of

    modules = sentence_modules_of(model) if model is not None else None
    if modules is not None:
        from exporter_core.model_config import ModelConfigView
        from exporter_core.sentence import write_sentence_modules

        width = int(ModelConfigView(model.config).hidden_size)
        written += [str(p.relative_to(staging)) for p in write_sentence_modules(staging, modules, width)]
    return sorted(written)
