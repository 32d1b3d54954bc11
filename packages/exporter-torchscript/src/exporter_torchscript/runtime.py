"""Loading and calling a saved TorchScript module under its shape contract, here or in a fresh process.

`load(path)` gives a `TracedModel`: it takes the inputs positionally (the guide's ``loaded_model(*inputs)``) or
by name, refuses inputs larger than the traced shape with an error naming that shape, pads smaller ones up to it
(pad token ids, attention mask 0) and cuts the outputs back. `SavedModuleRunner` is the validation runner: it
loads the file with ``torch.jit.load`` in a separate Python process that never traced it and never imports
Transformers, which proves the file stands on its own.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Mapping

import numpy as np

from exporter_core.errors import ExportError, InvalidArgumentError, ModelNotFoundError
from exporter_core.padding import InputShapeError, PaddedInputs, pad_inputs
from exporter_torchscript.metadata import EXTRA_FILE, TraceMetadata, metadata_path
from exporter_torchscript.tracing import without_jit_deprecation

__all__ = ["LoaderProcess", "SavedModuleRunner", "TracedModel", "load", "read_metadata"]


def _load_with_metadata(path: str | Path, map_location: str | None) -> tuple[Any, TraceMetadata]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"no such file: {path}; pass the .pt file written by `exporter torchscript`")
    extra = {EXTRA_FILE: ""}
    with without_jit_deprecation():
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    text = extra[EXTRA_FILE]
    if not text and metadata_path(path).is_file():
        text = metadata_path(path).read_text(encoding="utf-8")
    if not text:
        raise InvalidArgumentError(
            f"{path} carries no exporter metadata (it was not written by `exporter torchscript`); "
            "load it with torch.jit.load and call it at the shape it was traced at"
        )
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return module, TraceMetadata.from_json(text)


def read_metadata(path: str | Path) -> TraceMetadata:
    """The contract saved with a module: from inside the ``.pt`` file, else from the side-car JSON."""
    return _load_with_metadata(path, "cpu")[1]


class TracedModel:
    """A loaded module with its contract: inputs checked against the traced shape, padded, outputs cut back."""

    def __init__(self, module: Any, metadata: TraceMetadata) -> None:
        self.module = module
        self.metadata = metadata

    @property
    def input_names(self) -> list[str]:
        """Input names in call order."""
        return list(self.metadata.input_names)

    @property
    def output_names(self) -> list[str]:
        """Output names in the order of the returned tuple."""
        return list(self.metadata.output_names)

    @property
    def static_shape(self) -> dict[str, int]:
        """The traced shape: the largest size of each axis the module accepts."""
        return dict(self.metadata.static_shape)

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        names = self.input_names
        if len(args) > len(names):
            raise InvalidArgumentError(f"the module takes {len(names)} inputs ({', '.join(names)}); {len(args)} were given")
        bound = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names:
                raise InvalidArgumentError(f"the module has no input {name!r}; its inputs are {', '.join(names)}")
            if name in bound:
                raise InvalidArgumentError(f"input {name!r} given twice (by position and by name)")
            bound[name] = value
        missing = [name for name in names if name not in bound]
        if missing:
            raise InvalidArgumentError(f"missing inputs {', '.join(missing)}; the module takes {', '.join(names)} in that order")
        return {name: torch.as_tensor(bound[name]) for name in names}

    def pad(self, inputs: Mapping[str, Any]) -> PaddedInputs:
        """`inputs` padded up to the traced shape, or `InputShapeError` naming it for inputs too large."""
        return pad_inputs(
            inputs,
            self.metadata.input_axes,
            self.metadata.static_shape,
            pad_token_id=self.metadata.pad_token_id,
            padding_side=self.metadata.padding_side,
        )

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Named inputs in, named outputs out (torch tensors), through the shape contract."""
        import torch

        padded = self.pad(self._bind((), inputs))
        with torch.no_grad():
            values = self.module(*(padded.inputs[name] for name in self.input_names))
        if not isinstance(values, (tuple, list)):
            values = (values,)
        return padded.unpad(dict(zip(self.output_names, values)), self.metadata.output_axes)

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call like the raw module (inputs in order, or by name); returns the outputs as a tuple."""
        outputs = self.run(self._bind(args, kwargs))
        return tuple(outputs[name] for name in self.output_names)


def load(path: str | Path, map_location: str | None = "cpu") -> TracedModel:
    """Load a module written by `exporter torchscript` with its shape contract."""
    module, metadata = _load_with_metadata(path, map_location)
    module.eval()
    return TracedModel(module, metadata)


# -- the fresh-process runner ---------------------------------------------------------------------------------

#: Errors the worker may report that are rebuilt as the same class here.
_KNOWN_ERRORS: dict[str, type[Exception]] = {
    "InputShapeError": InputShapeError,
    "InvalidArgumentError": InvalidArgumentError,
    "ModelNotFoundError": ModelNotFoundError,
}


class LoaderProcess:
    """One worker process (``python -m <worker_module>``) answering load-and-run requests, started on first use.

    Requests and answers are JSON lines on its stdin/stdout. The Neuron backend uses it with its own worker.
    """

    def __init__(self, worker_module: str = "exporter_torchscript.worker", label: str = "TorchScript") -> None:
        self.worker_module = worker_module
        self.label = label
        self._process: subprocess.Popen[str] | None = None
        # The worker's stderr goes to a file: a pipe nobody reads could fill up and stall it.
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        # The worker sees the packages this process sees, whatever path tricks started it.
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()
        return subprocess.Popen(
            [sys.executable, "-P", "-m", self.worker_module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )

    def _last_words(self, process: subprocess.Popen[str]) -> str:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer; a dead worker raises `ExportError` with its stderr."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(message) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            if not line:
                stderr = self._last_words(process)
                self._process = None
                raise ExportError(f"the {self.label} loader process died; its last words: {stderr.strip()[-2000:] or 'none'}")
            return json.loads(line)

    def close(self) -> None:
        """Stop the worker (it exits when its stdin closes)."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.close()
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_shared_loader = LoaderProcess()
atexit.register(_shared_loader.close)


class SavedModuleRunner:
    """Validation runner: named NumPy inputs in, named NumPy outputs out, the file loaded in a fresh process.

    Each call loads the file from disk again with ``torch.jit.load`` in a worker process that traced nothing and
    has not imported Transformers; the worker is started on first use and shared by runners of this process.
    Inputs smaller than the traced shape are padded by the loader (`load`), larger ones refused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: Facts the worker reported on its last call (pid, whether Transformers was imported there).
        self.last_call: dict[str, Any] = {}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="exporter-torchscript-") as folder:
            inputs_file = Path(folder) / "inputs.npz"
            outputs_file = Path(folder) / "outputs.npz"
            np.savez(inputs_file, **{name: np.ascontiguousarray(value) for name, value in inputs.items()})
            reply = _shared_loader.request(
                {"path": str(self.path.resolve()), "inputs": str(inputs_file), "outputs": str(outputs_file)}
            )
            if not reply.get("ok"):
                kind = _KNOWN_ERRORS.get(str(reply.get("error_type")))
                message = str(reply.get("message", "unknown error"))
                if kind is not None:
                    raise kind(message)
                raise ExportError(f"the saved module failed in a fresh process: {reply.get('error_type')}: {message}")
            self.last_call = {k: v for k, v in reply.items() if k not in ("ok", "output_names")}
            with np.load(outputs_file) as data:
                return {name: np.array(data[name]) for name in reply["output_names"]}
