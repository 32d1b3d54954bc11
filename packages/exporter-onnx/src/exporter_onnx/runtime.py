"""Running an exported ONNX file with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["OnnxRuntimeRunner"]

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

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._types = {i.name: _ORT_TYPES.get(i.type) for i in self.session.get_inputs()}

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
