"""Loading and calling a static-shape module under its shape contract, here or in a fresh process.

`load_traced(path)` loads a module saved with a shape contract (`TraceMetadata`, inside the file or beside it) and
returns a `TracedModel`: it takes the inputs positionally (the guide's ``loaded_model(*inputs)``) or by name,
refuses inputs larger than the traced shape with an error naming that shape, pads smaller ones up to it (pad
token ids, attention mask 0) and cuts the outputs back. `load` is TorchScript's loader; Neuron's prepares the SDK
first and passes its own step to `load_traced`.

`SavedModuleRunner` is the validation runner of every static-shape backend: it loads the file with a loader
function named ``module:function`` (``exporter_torchscript.runtime:load`` by default) in a separate Python process
(``python -m exporter_torchscript.worker``) that never traced it and never imports Transformers, which proves the
file stands on its own.

Cheap to import: torch loads inside the functions that need it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from exporter_core import errors
from exporter_core.errors import ExportError, InvalidArgumentError, ModelNotFoundError
from exporter_core.padding import PaddedInputs, pad_inputs, static_shape_of
from exporter_torchscript.metadata import EXTRA_FILE, TraceMetadata, metadata_path

__all__ = [
    "TORCHSCRIPT_LOADER",
    "LoaderProcess",
    "SavedModuleRunner",
    "TracedModel",
    "load",
    "load_traced",
    "loader_process",
    "read_metadata",
    "without_jit_deprecation",
]

logger = logging.getLogger("exporter")

#: The loader `SavedModuleRunner` uses unless told otherwise: `load`, as ``module:function``.
TORCHSCRIPT_LOADER = "exporter_torchscript.runtime:load"


@contextlib.contextmanager
def without_jit_deprecation() -> Iterator[None]:
    """Hide torch's notice that ``torch.jit`` is deprecated (TorchScript is the artifact format) for one call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def _load_with_metadata(path: str | Path, map_location: str | None) -> tuple[Any, TraceMetadata]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(
            f"no such file: {path}; pass the .pt file written by `exporter torchscript` or `exporter neuron`"
        )
    extra = {EXTRA_FILE: ""}
    with without_jit_deprecation():
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    text = extra[EXTRA_FILE]
    if not text and metadata_path(path).is_file():
        text = metadata_path(path).read_text(encoding="utf-8")
    if not text:
        raise InvalidArgumentError(
            f"{path} carries no exporter shape contract ({EXTRA_FILE}; it was not written by exporter); "
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

    def __init__(self, module: Any, metadata: TraceMetadata, facts: Mapping[str, Any] | None = None) -> None:
        self.module = module
        self.metadata = metadata
        #: What the loader recorded about how the module was loaded (the SDK that registered its operators).
        self.facts = dict(facts or {})

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
            raise InvalidArgumentError(
                f"the module takes {len(names)} inputs ({', '.join(names)}); {len(args)} were given"
            )
        bound = dict(zip(names, args, strict=False))  # fewer positional inputs than names: the rest by name
        for name, value in kwargs.items():
            if name not in names:
                raise InvalidArgumentError(f"the module has no input {name!r}; its inputs are {', '.join(names)}")
            if name in bound:
                raise InvalidArgumentError(f"input {name!r} given twice (by position and by name)")
            bound[name] = value
        missing = [name for name in names if name not in bound]
        if missing:
            raise InvalidArgumentError(
                f"missing inputs {', '.join(missing)}; the module takes {', '.join(names)} in that order"
            )
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
        return padded.unpad(dict(zip(self.output_names, values, strict=True)), self.metadata.output_axes)

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call like the raw module (inputs in order, or by name); returns the outputs as a tuple."""
        outputs = self.run(self._bind(args, kwargs))
        return tuple(outputs[name] for name in self.output_names)


def load_traced(
    path: str | Path,
    map_location: str | None = "cpu",
    *,
    prepare: Callable[[Any], Any] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> TracedModel:
    """Load a module saved with a shape contract; `prepare` turns the loaded module into the one to call
    (Neuron switches dynamic batching on again); `facts` are kept on the result (`TracedModel.facts`)."""
    module, metadata = _load_with_metadata(path, map_location)
    if prepare is not None:
        module = prepare(module)
    module.eval()
    return TracedModel(module, metadata, facts)


def load(path: str | Path, map_location: str | None = "cpu") -> TracedModel:
    """Load a module written by `exporter torchscript` with its shape contract."""
    return load_traced(path, map_location)


# -- the fresh-process runner ---------------------------------------------------------------------------------


def _rebuilt_error(error_type: str, message: str) -> Exception:
    """The worker's error as the same class here when it is one of exporter's user errors, else `ExportError`."""
    kind = getattr(errors, error_type, None) if error_type in errors.__all__ else None
    if isinstance(kind, type) and issubclass(kind, errors.UserError):
        return kind(message)
    return ExportError(f"the saved module failed in a fresh process: {error_type}: {message}")


def _close_pipes(process: subprocess.Popen[str]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # a pipe to a dead process may fail to flush
                pass


def _kill(process: subprocess.Popen[str]) -> None:
    """End `process` now (it may be in the middle of a request) and close its pipes."""
    if process.poll() is None:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    _close_pipes(process)


class LoaderProcess:
    """One worker process (``python -m exporter_torchscript.worker --loader <loader>``) answering load-and-run
    requests, started on first use. Requests and answers are JSON lines on its stdin/stdout."""

    def __init__(
        self, loader: str = TORCHSCRIPT_LOADER, label: str = "TorchScript", command: list[str] | None = None
    ) -> None:
        self.loader = loader
        self.label = label
        #: The worker's command line; None: ``python -m exporter_torchscript.worker --loader <loader>`` here.
        #: exporter-neuron runs its SDK worker with another environment's interpreter through this.
        self.command = command
        self._process: subprocess.Popen[str] | None = None
        # The worker's stderr goes to a file: a pipe nobody reads could fill up and stall it.
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def process(self) -> subprocess.Popen[str] | None:
        """The running worker, if one was started and has not exited."""
        return self._process if self._process is not None and self._process.poll() is None else None

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        if self.command is None:
            # The worker sees the packages this process sees, whatever path tricks started it.
            paths = [p for p in sys.path if p and os.path.isdir(p)]
            env["PYTHONPATH"] = os.pathsep.join(paths)
        if self._stderr is not None:
            self._stderr.close()
        # Kept open for the worker's lifetime and closed in `close`, so no `with` block.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        command = self.command or [sys.executable, "-P", "-m", "exporter_torchscript.worker", "--loader", self.loader]
        return subprocess.Popen(
            command,
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
        _close_pipes(process)
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer; a dead worker raises `ExportError` with its stderr."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                if self._process is not None:  # exited (killed, say) since the last request
                    _close_pipes(self._process)
                self._process = self._start()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(message) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM while the worker computes: it must not outlive the export.
                _kill(process)
                self._process = None
                raise
            if not line:
                stderr = self._last_words(process)
                self._process = None
                raise ExportError(
                    f"the {self.label} loader process died; its last words: {stderr.strip()[-2000:] or 'none'}"
                )
            answer: dict[str, Any] = json.loads(line)
            return answer

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


_loader_processes: dict[str, LoaderProcess] = {}
_loader_processes_lock = threading.Lock()


def loader_process(loader: str = TORCHSCRIPT_LOADER, label: str = "TorchScript") -> LoaderProcess:
    """The worker this process shares for `loader` (one per loader, stopped at exit)."""
    with _loader_processes_lock:
        found = _loader_processes.get(loader)
        if found is None:
            found = _loader_processes[loader] = LoaderProcess(loader, label)
            atexit.register(found.close)
        return found


class SavedModuleRunner:
    """Validation runner: named NumPy inputs in, named NumPy outputs out, the file loaded in a fresh process.

    Each call loads the file from disk again with `loader` (``module:function``, a function of the path returning
    a `TracedModel`) in a worker process that traced nothing and has not imported Transformers; the worker is
    started on first use and shared by the runners of this process that use the same loader. Inputs smaller than
    the traced shape are padded by the loaded model, larger ones refused. Given the `contract`, each call is
    announced on the log (``Running model.pt in a fresh process: traced shape (batch 2 × sequence 8)``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        loader: str = TORCHSCRIPT_LOADER,
        label: str = "TorchScript",
        contract: TraceMetadata | None = None,
    ) -> None:
        self.path = Path(path)
        self.loader = loader
        self.label = label
        self.contract = contract
        #: Facts the worker reported on its last call (pid, whether Transformers was imported there, the loader's).
        self.last_call: dict[str, Any] = {}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.contract is not None:
            shape = static_shape_of(inputs, self.contract.input_axes)
            logger.info(f"Running {self.path.name} in a fresh process: {self.contract.describe_call(shape)}")
        with tempfile.TemporaryDirectory(prefix="exporter-static-") as folder:
            inputs_file = Path(folder) / "inputs.npz"
            outputs_file = Path(folder) / "outputs.npz"
            arrays: dict[str, Any] = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
            np.savez(inputs_file, **arrays)
            reply = loader_process(self.loader, self.label).request(
                {"path": str(self.path.resolve()), "inputs": str(inputs_file), "outputs": str(outputs_file)}
            )
            if not reply.get("ok"):
                raise _rebuilt_error(str(reply.get("error_type")), str(reply.get("message", "unknown error")))
            self.last_call = {k: v for k, v in reply.items() if k not in ("ok", "output_names")}
            with np.load(outputs_file) as data:
                return {name: np.array(data[name]) for name in reply["output_names"]}
