"""Finding a checkpoint (local folder, or hub id in the local hub cache) and loading model and preprocessor.

Nothing here reaches the network: a hub id must already be in the local hub cache.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter_core.errors import (
    CheckpointError,
    MissingDependencyError,
    ModelNotFoundError,
    NonFiniteWeightsError,
    RandomHeadError,
    UnsupportedFeatureError,
    UnsupportedFrameworkError,
    UnsupportedModelTypeError,
)
from exporter_core.tasks import AUTO_CLASS_FOR_FEATURE, feature_to_task

__all__ = [
    "PREPROCESSOR_KINDS",
    "LoadedModel",
    "check_checkpoint_files",
    "checkpoint_features",
    "hub_download_command",
    "load_model",
    "load_model_checked",
    "load_preprocessor",
    "read_config",
    "read_model_type",
    "resolve_checkpoint",
    "stored_float_dtype",
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
            f"where there is network ({hub_download_command(text)}) and copy the cache, or pass a local folder"
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


def read_config(folder: Path) -> Any:
    """The checkpoint's Transformers config, read without its weights; None when Transformers cannot read it
    alone (a model type only a plugin knows): checks that need it are then left to loading."""
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # any failure here is reported, better worded, when the model is loaded
        return None


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


def load_model(
    folder: Path,
    feature: str,
    config_cls: type | None = None,
    *,
    loading_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Load the checkpoint in `folder` with the class of `feature`, in eval mode.

    `loading_info`, when given, receives Transformers' loading report (missing, unexpected, mismatched keys).
    The weights are loaded in float32 whatever dtype the checkpoint stores (Transformers 5 would otherwise keep a
    bfloat16 or float16 checkpoint's dtype, which the export's float32 inputs and caches do not match); widening
    half precision is exact (a float64 checkpoint is rounded), and a backend chooses the exported dtype from
    `checkpoint_dtype`. Pass ``dtype`` to load otherwise.
    """
    import torch

    kwargs.setdefault("dtype", torch.float32)
    cls = model_class_for(feature, config_cls)
    try:
        model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True, **kwargs)
        if loading_info is not None:
            loading_info.update(info)
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


def hub_download_command(repo_id: str) -> str:
    """The command the installed huggingface_hub offers to download `repo_id` (``hf download`` in recent ones)."""
    from importlib import metadata

    try:
        scripts = {
            ep.name for ep in metadata.distribution("huggingface_hub").entry_points if ep.group == "console_scripts"
        }
    except metadata.PackageNotFoundError:
        scripts = set()
    if "hf" in scripts or not scripts:
        return f"hf download {repo_id}"
    return f"huggingface-cli download {repo_id}"


# -- checkpoint integrity -------------------------------------------------------------------------------------

#: safetensors dtype -> bytes per element.
_SAFETENSORS_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_FLOAT_DTYPES = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F16", "BF16", "F32", "F64"}
_REDOWNLOAD = "download or save the checkpoint again"


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The tensors a safetensors file declares ({name: {dtype, shape, data_offsets}}), checked against its size."""
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path} is truncated ({size} bytes, not even a safetensors header); {_REDOWNLOAD}")
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > size - 8:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file (its header claims {length} bytes, the file has "
                f"{size}); {_REDOWNLOAD}"
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path} is corrupt (its header is not valid JSON); {_REDOWNLOAD}") from None
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], list(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} is corrupt (tensor {name!r} has a malformed entry); {_REDOWNLOAD}") from None
        if dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}; {_REDOWNLOAD}")
        expected = math.prod(shape) * _SAFETENSORS_DTYPES[dtype]
        if end - begin != expected or begin < 0:
            raise CheckpointError(
                f"{path} is corrupt: tensor {name!r} ({dtype} {shape}) needs {expected} bytes but its offsets span "
                f"{end - begin}; {_REDOWNLOAD}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {end} of the data but the file holds "
                f"{data_size}; {_REDOWNLOAD}"
            )
        tensors[name] = entry
    return tensors


def _check_bin(path: Path) -> None:
    import zipfile

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; {_REDOWNLOAD}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"{path} is corrupt ({exc}); {_REDOWNLOAD}") from None
        return
    with path.open("rb") as handle:
        first = handle.read(2)
    if first[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        raise CheckpointError(f"{path} is truncated or not a PyTorch weights file; {_REDOWNLOAD}")


def _index_shards(index: Path) -> list[str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{index} is corrupt (no readable weight_map); {_REDOWNLOAD}") from None
    missing = [name for name in shards if not (index.parent / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{index} names shard(s) not in {index.parent}: {', '.join(missing)}; download the missing shard(s)"
        )
    return shards


_TORCH_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def stored_float_dtype(declared: dict[str, dict[str, Any]]) -> str | None:
    """The floating dtype holding most of the checkpoint's weight bytes (`check_checkpoint_files`' tensors)."""
    totals: dict[str, int] = {}
    for entry in declared.values():
        name = _TORCH_DTYPE_NAMES.get(entry.get("dtype", ""))
        if name is not None:
            begin, end = entry.get("data_offsets", (0, 0))
            totals[name] = totals.get(name, 0) + int(end) - int(begin)
    return max(totals, key=lambda name: totals[name]) if totals else None


def check_checkpoint_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Check the weight files Transformers will read (sizes, headers, shards); return the safetensors tensors
    declared ({name: entry}). Raises `CheckpointError` naming the file and the problem."""
    declared: dict[str, dict[str, Any]] = {}
    if (folder / "model.safetensors").is_file():
        declared.update(_safetensors_header(folder / "model.safetensors"))
    elif (folder / "model.safetensors.index.json").is_file():
        for shard in _index_shards(folder / "model.safetensors.index.json"):
            declared.update(_safetensors_header(folder / shard))
    elif (folder / "pytorch_model.bin").is_file():
        _check_bin(folder / "pytorch_model.bin")
    elif (folder / "pytorch_model.bin.index.json").is_file():
        for shard in _index_shards(folder / "pytorch_model.bin.index.json"):
            _check_bin(folder / shard)
    return declared


def _weights_file(folder: Path) -> str:
    found = [name for name in _PT_WEIGHTS if (folder / name).is_file()]
    return str(folder / found[0]) if found else str(folder)


def checkpoint_features(
    folder: Path, supported: list[str] | tuple[str, ...], config_cls: type | None = None
) -> list[str]:
    """The `supported` features whose head the checkpoint holds (read from config.json's ``architectures``)."""
    import transformers

    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError):
        return []
    saved = set(data.get("architectures") or [])
    held = []
    for feature in supported:
        try:
            cls = model_class_for(feature, config_cls)
        except UnsupportedFeatureError:
            continue
        mapping = getattr(cls, "_model_mapping", None)
        model_cls = mapping.get(type(config), None) if mapping is not None else cls
        # The base model's weights are inside every head's checkpoint.
        if model_cls is not None and (model_cls.__name__ in saved or feature_to_task(feature) == "default"):
            held.append(feature)
    return held


@dataclass
class LoadedModel:
    """A model loaded for export, with what the checkpoint did not provide."""

    model: Any
    #: Weights the checkpoint lacked, randomly initialised (only when allowed).
    random_weights: list[str] = field(default_factory=list)
    #: Weights holding NaN or Inf (only when allowed).
    nonfinite: list[str] = field(default_factory=list)
    #: The floating dtype the checkpoint stores most of its weights in ("float32", "float16", "bfloat16"); None
    #: when the files do not say (a PyTorch pickle). The model itself is loaded in float32 ...
    checkpoint_dtype: str | None = None
    #: ... unless it is held in the checkpoint's half precision while computing in float32 (`hold_half`,
    #: `exporter_core.precision`): that dtype then, else None.
    held_dtype: str | None = None


def _mismatch_message(folder: Path, feature: str, config_cls: type | None) -> str:
    """The weights whose shapes differ from the config's, read by loading once more without refusing them."""
    info: dict[str, Any] = {}
    try:
        load_model(folder, feature, config_cls, loading_info=info, ignore_mismatched_sizes=True)
    except Exception:  # the first failure is what the user sees; this is only for its details
        return "some weights do not have the shapes its config.json gives"
    shown = []
    for item in list(info.get("mismatched_keys") or [])[:3]:
        if isinstance(item, (tuple, list)) and len(item) == 3:
            name, stored, wanted = item
            shown.append(f"{name} is {tuple(stored)} in the weights but {tuple(wanted)} by the config")
        else:
            shown.append(str(item))
    return "; ".join(shown) or "some weights do not have the shapes its config.json gives"


def load_model_checked(
    folder: Path,
    feature: str,
    config_cls: type | None = None,
    *,
    allow_random_head: bool = False,
    allow_nonfinite: bool = False,
    supported: list[str] | tuple[str, ...] = (),
    hold_half: bool = False,
) -> LoadedModel:
    """`load_model`, refusing what would make the export meaningless: weights that cannot be read or do not fit
    the config (`CheckpointError`), weights the checkpoint lacks (`RandomHeadError`, unless `allow_random_head`),
    NaN or Inf weights (`NonFiniteWeightsError`, unless `allow_nonfinite`).

    `hold_half` (a backend's `holds_checkpoint_dtype`): a bfloat16 or float16 checkpoint is loaded in its own dtype
    (memory-mapped, not widened into a float32 copy) and computes in float32 module by module
    (`exporter_core.precision.compute_in_float32`)."""
    import torch

    from exporter_core.errors import option_hint
    from exporter_core.precision import HALF_DTYPES, compute_in_float32

    declared = check_checkpoint_files(folder)
    stored = stored_float_dtype(declared)
    # Only a checkpoint holding every floating tensor in that one half dtype: Transformers would round a float32
    # tensor of a mixed checkpoint (a norm, a router) to it, and the graph and the reference would share the error.
    uniform = {entry.get("dtype") for entry in declared.values() if entry.get("dtype") in _FLOAT_DTYPES}
    kept = stored if hold_half and stored in HALF_DTYPES and len(uniform) == 1 else None
    info: dict[str, Any] = {}
    try:
        dtype = {"dtype": getattr(torch, kept)} if kept else {}
        model = load_model(folder, feature, config_cls, loading_info=info, **dtype)
    except (UnsupportedFeatureError, MissingDependencyError):
        raise
    except ImportError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "ignore_mismatched_sizes" in text or "size mismatch" in text:
            raise CheckpointError(
                f"{_weights_file(folder)} does not match {folder / 'config.json'}: "
                f"{_mismatch_message(folder, feature, config_cls)}; use the config saved with these weights"
            ) from None
        raise CheckpointError(
            f"{_weights_file(folder)} cannot be loaded ({type(exc).__name__}: {text[:300]}); {_REDOWNLOAD}"
        ) from None
    if kept:
        compute_in_float32(model)
    loaded = LoadedModel(model, checkpoint_dtype=stored, held_dtype=kept)
    missing = sorted(str(k) for k in info.get("missing_keys") or [])
    if missing:
        if not allow_random_head:
            held = checkpoint_features(folder, list(supported), config_cls) if supported else []
            holds = f"; the checkpoint holds the weights of: {', '.join(held)}" if held else ""
            raise RandomHeadError(
                f"feature {feature!r} needs {len(missing)} weight(s) the checkpoint does not hold "
                f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}), which would be random{holds}; "
                f"export a feature the checkpoint holds, or pass {option_hint('allow_random_head', True)} to "
                "export random weights anyway"
            )
        loaded.random_weights = missing
    _check_stored_dtypes(folder, declared, model)
    bad = _nonfinite_weights(model)
    if bad:
        if not allow_nonfinite:
            raise NonFiniteWeightsError(
                f"{_weights_file(folder)} holds NaN or Inf in {len(bad)} tensor(s): {', '.join(bad[:6])}"
                f"{', ...' if len(bad) > 6 else ''}; fix the checkpoint, or pass "
                f"{option_hint('allow_nonfinite', True)} to export it anyway"
            )
        loaded.nonfinite = bad
    return loaded


def _check_stored_dtypes(folder: Path, declared: dict[str, dict[str, Any]], model: Any) -> None:
    """Refuse integer or boolean tensors stored for floating-point parameters (a wrong-dtype checkpoint)."""
    suspicious = {name: entry["dtype"] for name, entry in declared.items() if entry["dtype"] not in _FLOAT_DTYPES}
    if not suspicious:
        return
    params = {name: tensor for name, tensor in model.state_dict().items()}
    for stored, dtype in sorted(suspicious.items()):
        for name, tensor in params.items():
            if (
                name == stored or name.endswith("." + stored) or stored.endswith("." + name)
            ) and tensor.is_floating_point():
                raise CheckpointError(
                    f"{_weights_file(folder)}: tensor {stored!r} is stored as {dtype}, but the model's {name} is "
                    f"floating point; {_REDOWNLOAD}"
                )


def _nonfinite_weights(model: Any) -> list[str]:
    """Parameters holding NaN or Inf (buffers are left out: some models keep -inf masks there on purpose).

    A tensor's sum is finite only if every element is (an Inf or a NaN makes any sum Inf or NaN), and summing
    reads the tensor once without allocating a mask of its size: 0.02 s for BERT-base's weights against 0.23 s for
    ``isfinite(...).all()``. A sum that is not finite (a damaged tensor, or finite values whose sum overflows) is
    decided by the exact check."""
    import torch

    bad = []
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if not tensor.is_floating_point():
                continue
            total = tensor.sum(dtype=torch.float32 if tensor.element_size() < 4 else tensor.dtype)
            if bool(torch.isfinite(total)):
                continue
            # torch has no isfinite for the float8 types (and misreads float8_e8m0fnu's NaN): widen them first.
            exact = tensor.float() if tensor.element_size() == 1 else tensor
            if not bool(torch.isfinite(exact).all()):
                bad.append(name)
    return bad
