"""Sentence embeddings: a sentence-transformers folder read as transformer + pooling (+ L2 normalisation).

A sentence-transformers checkpoint lists its modules in ``modules.json``: the Transformer (the checkpoint at the
folder's root), a Pooling module with its ``config.json``, optionally a Normalize module. The ``sentence-embedding``
feature exports all three as one graph whose ``sentence_embedding`` output is pooled over the real tokens (the
attention mask), so padded batches give what ``SentenceTransformer.encode`` gives sentence by sentence. A plain
checkpoint (no ``modules.json``) is pooled as sentence-transformers pools one: mean over the real tokens, not
normalised. A module the graph cannot hold (Dense, a prompt-excluding Pooling, ...) is refused with the reason.

Torch is imported on use only: reading a folder stays cheap.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter_core.errors import ModelNotFoundError, UnsupportedFeatureError

__all__ = [
    "KIT_SENTENCE_MODULES",
    "MODULES_FILE",
    "POOLING_MODES",
    "SentenceModules",
    "is_sentence_transformers_folder",
    "read_sentence_modules",
    "sentence_embedding_model",
    "sentence_modules_of",
    "write_sentence_modules",
]

MODULES_FILE = "modules.json"
#: Pooling modes sentence-transformers defines, in the order its old boolean keys concatenate them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: Files of a sentence-transformers folder that describe it, besides the module folders.
SENTENCE_FILES = (MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class SentenceModules:
    """What turns the transformer's token embeddings into one sentence embedding."""

    #: Pooling modes, concatenated in this order.
    pooling: tuple[str, ...]
    #: L2-normalise the pooled embedding (a Normalize module).
    normalize: bool
    #: Where the description came from ("modules.json", or the plain-checkpoint default).
    source: str
    #: Folder of the Pooling module's config, relative to the checkpoint (None: the plain-checkpoint default).
    pooling_path: str | None = None

    def describe(self) -> str:
        """One line: the pooling, the normalisation and where they come from."""
        norm = "L2-normalised" if self.normalize else "not normalised"
        return f"{' + '.join(self.pooling)} pooling over the real tokens, {norm}: {self.source}"


#: The modules of the test kit's tiny sentence-transformers checkpoints (the most common kind: mean, normalised).
KIT_SENTENCE_MODULES = SentenceModules(pooling=("mean",), normalize=True, source="test kit")


def is_sentence_transformers_folder(folder: Path) -> bool:
    """True when `folder` holds a sentence-transformers ``modules.json``."""
    return (Path(folder) / MODULES_FILE).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(
            f"{path} cannot be read as JSON ({exc}); re-save the sentence-transformers model"
        ) from None


def _class_name(module_type: str) -> str:
    """``sentence_transformers.models.Pooling`` -> ``Pooling``; a type outside sentence-transformers keeps its name."""
    if not module_type.startswith("sentence_transformers."):
        return module_type
    return module_type.rsplit(".", 1)[-1]


def _pooling_modes(config: dict[str, Any], where: Path) -> tuple[str, ...]:
    """The modes a Pooling config names (``pooling_mode``, or the old ``pooling_mode_*`` booleans; none: mean)."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key, False)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise UnsupportedFeatureError(
            f"{where} names pooling mode(s) {unknown} that sentence-embedding does not know; known: "
            f"{', '.join(POOLING_MODES)}"
        )
    if config.get("include_prompt", True) is False:
        raise UnsupportedFeatureError(
            f"{where} pools without the prompt tokens (include_prompt false): the prompt length is given to "
            "sentence-transformers at encode time and a graph of token ids cannot know it; export feature "
            "'default' and pool outside the graph"
        )
    return modes


def read_sentence_modules(folder: Path) -> SentenceModules:
    """The pooling and normalisation of the checkpoint in `folder` (the plain-checkpoint default without modules.json).

    Refuses a module list the graph cannot reproduce: a Transformer not at the folder's root, a module other than
    Transformer, Pooling and Normalize, or none of them pooling.
    """
    folder = Path(folder)
    if not is_sentence_transformers_folder(folder):
        return SentenceModules(
            pooling=("mean",),
            normalize=False,
            source="a plain checkpoint without modules.json, pooled as sentence-transformers pools a plain model",
        )
    entries = _read_json(folder / MODULES_FILE)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "type" in e for e in entries):
        raise ModelNotFoundError(f"{folder / MODULES_FILE} is not a list of modules with a type; re-save the model")
    kinds = [_class_name(str(e["type"])) for e in sorted(entries, key=lambda e: int(e.get("idx", 0)))]
    paths = [str(e.get("path", "")) for e in sorted(entries, key=lambda e: int(e.get("idx", 0)))]
    if kinds[:1] != ["Transformer"] or kinds.count("Transformer") != 1:
        raise UnsupportedFeatureError(
            f"{folder / MODULES_FILE} lists modules {kinds}; sentence-embedding exports a Transformer first, then "
            "Pooling and optionally Normalize"
        )
    if paths[0] not in ("", "."):
        raise UnsupportedFeatureError(
            f"{folder / MODULES_FILE} keeps its Transformer in {paths[0]!r}; sentence-embedding exports a checkpoint "
            f"whose transformer is at the folder's root (re-save it with a current sentence-transformers)"
        )
    allowed = ["Transformer", "Pooling", "Normalize"]
    if kinds not in (allowed, allowed[:2]):
        raise UnsupportedFeatureError(
            f"{folder / MODULES_FILE} lists modules {kinds}: sentence-embedding exports Transformer, Pooling and an "
            f"optional Normalize, in that order ({', '.join(sorted(set(kinds) - set(allowed))) or 'another order'} "
            "cannot go into the graph); export feature 'default' and run the other modules outside it"
        )
    pooling_path = paths[1]
    config_path = folder / pooling_path / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{folder / MODULES_FILE} names a Pooling module without {config_path}; re-save the model"
        )
    config = _read_json(config_path)
    return SentenceModules(
        pooling=_pooling_modes(config if isinstance(config, dict) else {}, config_path),
        normalize=len(kinds) == 3,
        source=f"as its {MODULES_FILE} says",
        pooling_path=pooling_path,
    )


def write_sentence_modules(folder: Path, modules: SentenceModules, embedding_dimension: int) -> list[Path]:
    """Write ``modules.json`` and the Pooling (and Normalize) module folders describing `modules` into `folder`.

    Used for an exported folder (what its graph does) and for the test kit's tiny sentence-transformers checkpoints.
    """
    folder = Path(folder)
    pooling_dir = "1_Pooling"
    entries: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": pooling_dir, "type": "sentence_transformers.models.Pooling"},
    ]
    if modules.normalize:
        entries.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    pooling: dict[str, Any] = {
        "word_embedding_dimension": embedding_dimension,
        **{key: name in modules.pooling for key, name in _LEGACY_POOLING_KEYS.items()},
        "include_prompt": True,
    }
    if tuple(m for m in POOLING_MODES if m in modules.pooling) != modules.pooling:
        # Booleans concatenate in a fixed order; another order needs the new key.
        pooling["pooling_mode"] = list(modules.pooling)
    written = [folder / MODULES_FILE, folder / pooling_dir / "config.json"]
    (folder / pooling_dir).mkdir(parents=True, exist_ok=True)
    written[0].write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    return written


def sentence_embedding_model(transformer: Any, modules: SentenceModules) -> Any:
    """A torch module: `transformer`'s last hidden state pooled as `modules` says, ``{"sentence_embedding": ...}``.

    It takes the transformer's keyword arguments, exposes the transformer's ``config`` (what configs and
    `prepared_for_export` read) and its attention implementation switch.
    """
    return _module_class()(transformer, modules)


def sentence_modules_of(model: Any) -> SentenceModules | None:
    """The pooling of a `sentence_embedding_model` (None for any other model)."""
    return model.modules_spec if isinstance(model, _module_class()) else None


@functools.cache
def _module_class() -> type[Any]:
    import torch

    class SentenceEmbeddingModel(torch.nn.Module):
        """Transformer, pooling over the attention mask, optional L2 normalisation: one graph."""

        def __init__(self, transformer: Any, modules: SentenceModules) -> None:
            super().__init__()
            self.transformer = transformer
            self.modules_spec = modules

        @property
        def config(self) -> Any:
            return self.transformer.config

        def set_attn_implementation(self, implementation: str) -> None:
            self.transformer.set_attn_implementation(implementation)

        def forward(self, **kwargs: Any) -> dict[str, torch.Tensor]:
            hidden = self.transformer(**kwargs)["last_hidden_state"]
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones(hidden.shape[:2], dtype=torch.int64, device=hidden.device)
            pooled = torch.cat([_pool(mode, hidden, mask) for mode in self.modules_spec.pooling], dim=-1)
            if self.modules_spec.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
            return {"sentence_embedding": pooled}

    return SentenceEmbeddingModel


def _pool(mode: str, hidden: Any, mask: Any) -> Any:
    """One pooling mode over the real tokens (mask 1) of `hidden` (batch, sequence, width), as sentence-transformers
    computes it for padded batches."""
    import torch

    real = mask.unsqueeze(-1).to(hidden.dtype)
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    if mode in ("cls", "lasttoken"):
        if mode == "cls":  # the first real token (left padding puts it after the pads)
            index = mask.to(torch.int32).argmax(dim=1)
        else:  # the last real token; position 0 for a row without one
            index = ((positions + 1) * (mask > 0)).max(dim=1).values.sub(1).clamp(min=0)
        gather = index.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        source = hidden if mode == "cls" else hidden * real
        return torch.gather(source, 1, gather).squeeze(1)
    if mode == "max":
        return hidden.masked_fill(real == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = real.sum(dim=1).clamp(min=1e-9)
        total = (hidden * real).sum(dim=1)
        return total / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":
        first = mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1)
        weights = real * ((positions + 1).unsqueeze(-1) - first).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    raise UnsupportedFeatureError(f"unknown pooling mode {mode!r}; known: {', '.join(POOLING_MODES)}")
