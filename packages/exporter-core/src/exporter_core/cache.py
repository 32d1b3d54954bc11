"""The past key/value layout: flat tensor names and axes, and conversion to and from Transformers' caches.

Every with-past graph takes and returns its cache as flat tensors, one key and one value per layer:

- decoder-only models: inputs ``past_key_values.{i}.key|value`` (batch, heads, past_sequence, head_dim),
  outputs ``present.{i}.key|value`` (batch, heads, past_sequence + sequence, head_dim);
- encoder-decoder models: ``past_key_values.{i}.decoder.key|value`` (self-attention, axis 2
  past_decoder_sequence) and ``past_key_values.{i}.encoder.key|value`` (cross-attention, axis 2
  encoder_sequence); outputs ``present.{i}.decoder|encoder.key|value`` likewise.

Transformers 5 models take and return cache objects (`DynamicCache`, `EncoderDecoderCache`): `to_cache` fills
one from the flat tensors and `flatten` turns a returned one back into them, so an exported graph and its PyTorch
reference both see plain tensors. Configs, runners, generation and validation all go through this module.

A layout is a tuple of per-layer entries, so layers may differ (head counts, head sizes, sliding windows), and
within a layer keys and values may differ in size (multi-head latent attention caches a compressed latent as its
"keys" and the shared rotary key as its "values").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PAST_PREFIX",
    "PRESENT_PREFIX",
    "CacheLayout",
    "LayerCache",
    "past_name",
    "returned_cache",
]

PAST_PREFIX = "past_key_values"
PRESENT_PREFIX = "present"


def past_name(present: str) -> str:
    """The input that takes back an output: ``present.0.key`` -> ``past_key_values.0.key``."""
    if not present.startswith(PRESENT_PREFIX + "."):
        raise ValueError(f"{present!r} is not a present key/value output name")
    return PAST_PREFIX + present[len(PRESENT_PREFIX) :]


def returned_cache(model_output: Any) -> Any:
    """The cache a forward returned (under ``cache`` or ``past_key_values``, whichever this Transformers uses)."""
    for name in ("cache", "past_key_values"):
        try:
            value = model_output[name]
        except (KeyError, TypeError):
            continue
        if value is not None:
            return value
    raise KeyError("the model returned no cache; was it called with use_cache=True?")


@dataclass(frozen=True)
class LayerCache:
    """The cached keys and values of one layer: axis 1 (heads) and axis 3 (head size) of its tensors."""

    num_heads: int
    #: Axis 3 of the keys (and of the values, unless `value_head_dim` says otherwise).
    head_dim: int
    #: Tokens a sliding-window layer keeps (None: the layer keeps every token).
    sliding_window: int | None = None
    #: Axis 3 of the values where it differs from the keys' (None: `head_dim`).
    value_head_dim: int | None = None

    def size_of(self, name: str) -> int:
        """Axis 3 of the cached tensor `name` (a ``....key`` or ``....value`` name)."""
        if name.endswith(".value") and self.value_head_dim is not None:
            return self.value_head_dim
        return self.head_dim


@dataclass(frozen=True)
class CacheLayout:
    """Names, axes and Transformers conversion of the past key values of one model."""

    layers: tuple[LayerCache, ...]
    #: True for encoder-decoder models: each layer also caches the cross-attention keys/values of the encoder.
    cross_attention: bool = False

    @classmethod
    def uniform(cls, num_layers: int, num_heads: int, head_dim: int, *, cross_attention: bool = False) -> CacheLayout:
        """Every layer alike."""
        return cls(tuple(LayerCache(num_heads, head_dim) for _ in range(num_layers)), cross_attention)

    @classmethod
    def from_past_shapes(cls, shapes: Mapping[str, Sequence[Any]]) -> CacheLayout:
        """The decoder-only layout a graph declares: heads and key and value sizes of each of its
        ``past_key_values.{i}.key|value`` inputs (`shapes`: input name -> shape, named axes allowed); no layers when
        it takes no past."""
        layers: list[LayerCache] = []
        while (name := f"{PAST_PREFIX}.{len(layers)}.key") in shapes:
            shape = list(shapes[name])
            heads, head_dim = shape[1], shape[3]
            value_shape = list(shapes.get(f"{PAST_PREFIX}.{len(layers)}.value", shape))
            value_dim = value_shape[3]
            if not all(isinstance(size, int) for size in (heads, head_dim, value_dim)):
                raise ValueError(f"input {name} has no fixed head count and head size ({shape}, values {value_shape})")
            layers.append(LayerCache(heads, head_dim, value_head_dim=None if value_dim == head_dim else value_dim))
        return cls(tuple(layers))

    # -- names and axes -----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of cached layers."""
        return len(self.layers)

    @property
    def past_axis(self) -> str:
        """Axis name of the cached self-attention length."""
        return "past_decoder_sequence" if self.cross_attention else "past_sequence"

    @property
    def new_axis(self) -> str:
        """Axis name of the new tokens of a step."""
        return "decoder_sequence" if self.cross_attention else "sequence"

    @property
    def total_axis(self) -> str:
        """Axis name of past + new tokens (the length of the returned self-attention keys)."""
        return f"{self.past_axis} + {self.new_axis}"

    def _kinds(self, cross: bool) -> list[str | None]:
        if not self.cross_attention:
            return [None]
        return ["decoder", "encoder"] if cross else ["decoder"]

    def names(self, prefix: str, *, cross: bool = True) -> list[str]:
        """Flat names under `prefix` (``past_key_values`` or ``present``), in graph order."""
        names: list[str] = []
        for i in range(self.num_layers):
            for kind in self._kinds(cross):
                stem = f"{prefix}.{i}" if kind is None else f"{prefix}.{i}.{kind}"
                names.extend((f"{stem}.key", f"{stem}.value"))
        return names

    def past_inputs(self, *, cross: bool = True) -> OrderedDict[str, dict[int, str]]:
        """``past_key_values.*`` inputs with their dynamic axes (`cross`: the encoder's too, for encoder-decoders)."""
        return OrderedDict(
            (name, {0: "batch", 2: self._axis_of(name, self.past_axis)})
            for name in self.names(PAST_PREFIX, cross=cross)
        )

    def present_outputs(self, *, cross: bool = True, with_past: bool = True) -> OrderedDict[str, dict[int, str]]:
        """``present.*`` outputs with their dynamic axes; without a past input they hold only the new tokens."""
        self_axis = self.total_axis if with_past else self.new_axis
        return OrderedDict(
            (name, {0: "batch", 2: self._axis_of(name, self_axis)}) for name in self.names(PRESENT_PREFIX, cross=cross)
        )

    @staticmethod
    def _axis_of(name: str, self_axis: str) -> str:
        return "encoder_sequence" if ".encoder." in name else self_axis

    # -- dummy values ----------------------------------------------------------------------------------------
    def past_arrays(
        self, rows: int, past_length: int, *, encoder_length: int = 0, seed: int = 0, cross: bool = True
    ) -> dict[str, np.ndarray]:
        """Random past tensors (normal, like projected hidden states): `past_length` cached tokens per row."""
        rng = np.random.default_rng(seed + 1000)
        arrays = {}
        for name in self.names(PAST_PREFIX, cross=cross):
            layer = self.layers[int(name.split(".")[1])]
            length = encoder_length if ".encoder." in name else past_length
            shape = (rows, layer.num_heads, length, layer.size_of(name))
            arrays[name] = rng.standard_normal(shape).astype(np.float32)
        return arrays

    # -- Transformers caches ---------------------------------------------------------------------------------
    def _dynamic_cache(self, model_config: Any) -> Any:
        from transformers import DynamicCache

        if all(layer.sliding_window is None for layer in self.layers):
            # Every layer keeps every token, whatever windows the model config names: a sliding-window attention
            # masks what is out of its window (as for any cache keeping every token), so every past grows alike.
            return DynamicCache()
        cache = DynamicCache(config=model_config)
        if len(getattr(cache, "layers", ())) not in (0, self.num_layers):
            cache = DynamicCache()
        return cache

    def to_cache(self, inputs: Mapping[str, Any] | None, model_config: Any, *, cross: bool = True) -> Any:
        """A cache object as ``generate`` builds it for this model, filled from flat past tensors when given."""
        self_attention = self._dynamic_cache(model_config)
        if not self.cross_attention:
            if inputs is not None:
                for i in range(self.num_layers):
                    self_attention.update(inputs[f"{PAST_PREFIX}.{i}.key"], inputs[f"{PAST_PREFIX}.{i}.value"], i)
            return self_attention
        from transformers import EncoderDecoderCache

        cross_attention = self._dynamic_cache(model_config)
        if inputs is not None:
            for i in range(self.num_layers):
                stem = f"{PAST_PREFIX}.{i}"
                self_attention.update(inputs[f"{stem}.decoder.key"], inputs[f"{stem}.decoder.value"], i)
                if cross:
                    cross_attention.update(inputs[f"{stem}.encoder.key"], inputs[f"{stem}.encoder.value"], i)
        return EncoderDecoderCache(self_attention, cross_attention)

    def flatten(self, model_output: Any, *, cross: bool = True) -> list[Any]:
        """The cache a forward returned as flat ``present`` tensors, in `names` order."""
        cache = returned_cache(model_output)
        values: list[Any] = []
        self_attention = getattr(cache, "self_attention_cache", cache)
        for i in range(self.num_layers):
            layer = self_attention.layers[i]
            values.extend((layer.keys, layer.values))
            if self.cross_attention and cross:
                layer = cache.cross_attention_cache.layers[i]
                values.extend((layer.keys, layer.values))
        return values

    @staticmethod
    def is_cache_name(name: str) -> bool:
        """True for ``past_key_values.*`` and ``present.*`` names."""
        return name.startswith((PAST_PREFIX + ".", PRESENT_PREFIX + "."))

    @staticmethod
    def feed_back(outputs: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``present.*`` entries of `outputs` renamed to the ``past_key_values.*`` inputs of the next step."""
        selected = names if names is not None else [n for n in outputs if n.startswith(PRESENT_PREFIX + ".")]
        return {past_name(name): outputs[name] for name in selected}
