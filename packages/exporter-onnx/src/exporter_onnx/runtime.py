"""Running an exported ONNX file with ONNX Runtime: a whole file (`OnnxRuntimeRunner`), or one step of a merged
decoder file (`MergedDecoderStep`, see `exporter_onnx.merge`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["MergedDecoderStep", "OnnxRuntimeRunner"]

_ORT_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


class OnnxRuntimeRunner:
    """Named NumPy inputs in, named NumPy outputs out, through an ONNX Runtime session on the CPU by default."""

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        *,
        session_config: Mapping[str, str] | None = None,
        disabled_optimizers: Sequence[str] = (),
    ) -> None:
        """`session_config` (session config entries) and `disabled_optimizers` tune the session; a streamed
        export's are `exporter_onnx.streaming.LOW_MEMORY_SESSION`."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(key, value)
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=list(providers),
            disabled_optimizers=list(disabled_optimizers) or None,
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._types = {i.name: _ORT_TYPES.get(i.type) for i in self.session.get_inputs()}
        #: Declared input shapes: an int per fixed axis, the axis name (or None) per dynamic one.
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise KeyError(f"the ONNX model needs inputs {missing}; got {sorted(inputs)}")
        feed = {}
        for name in self.input_names:
            value = np.asarray(inputs[name])
            wanted = self._types.get(name)
            feed[name] = value.astype(wanted) if wanted is not None and value.dtype != wanted else value
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))


class MergedDecoderStep:
    """One step of a merged decoder file (`exporter_onnx.merge`): the branch ``use_cache`` picks, fed and answered
    like the step's own file.

    `inputs` are the step's own inputs (a caller must feed them), `outputs` what it returns (default: every output
    of the file). Every other input of the file is read by the other branch only; when the caller does not feed it,
    it gets zeros whose dynamic axes take the sizes the fed inputs give the same axis names, 0 for an axis they do
    not name: the first step gets a past of decoder length 0 (and cross-attention zeros of the encoder length), the
    step with past an ``encoder_hidden_states`` of zeros.
    """

    def __init__(
        self,
        runner: OnnxRuntimeRunner,
        *,
        use_cache: bool,
        inputs: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> None:
        from exporter_onnx.merge import USE_CACHE_INPUT, branch_inputs

        self.runner = runner
        self.session = runner.session
        self.use_cache = use_cache
        self._switch = USE_CACHE_INPUT
        if USE_CACHE_INPUT not in runner.input_names:
            raise ValueError(f"this ONNX file has no {USE_CACHE_INPUT!r} input: it is not a merged decoder")
        if inputs is None:
            inputs = branch_inputs(runner.path)[use_cache]
        unknown = [name for name in inputs if name not in runner.input_names]
        if unknown:
            raise ValueError(f"the merged decoder has no inputs {unknown}; its inputs: {runner.input_names}")
        self.input_names = list(inputs)
        self.output_names = list(outputs) if outputs is not None else list(runner.output_names)

    def placeholders(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Zeros for the file's inputs that are neither the step's own nor in `inputs`."""
        sizes: dict[str, int] = {}
        for name, value in inputs.items():
            for axis, size in zip(self.runner.input_shapes.get(name, ()), np.shape(value), strict=False):
                if isinstance(axis, str):
                    sizes.setdefault(axis, int(size))
        feed: dict[str, np.ndarray] = {}
        for name in self.runner.input_names:
            if name == self._switch or name in inputs or name in self.input_names:
                continue
            shape = [
                axis if isinstance(axis, int) else sizes.get(str(axis), 0) for axis in self.runner.input_shapes[name]
            ]
            feed[name] = np.zeros(shape, dtype=self.runner._types.get(name) or np.float32)
        return feed

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise KeyError(f"this decoder step needs inputs {missing}; got {sorted(inputs)}")
        feed = {name: value for name, value in inputs.items() if name in self.runner.input_names}
        feed.update(self.placeholders(inputs))
        feed[self._switch] = np.array(self.use_cache)
        outputs = self.runner(feed)
        return {name: outputs[name] for name in self.output_names}
