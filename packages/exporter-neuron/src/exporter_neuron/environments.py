"""Neuron SDKs in their own Python environments: finding them, asking them, compiling and running through them.

AWS ships torch-neuronx (Inf2/Trn1) for one PyTorch release and torch-neuron (Inf1) for PyTorch 1.13 with
Transformers 4.x, each in a virtual environment of its own on the Deep Learning AMIs
(``/opt/aws_neuronx_venv_pytorch_*``, ``/opt/aws_neuron_venv_pytorch*``). exporter cannot share a process with
them, so with ``--sdk-python PYTHON`` the backend keeps its own process for what it owns — loading the checkpoint
with Transformers 5 as the PyTorch reference, choosing the static shape and the example and validation inputs,
comparing outputs — and sends the SDK's part to ``PYTHON exporter_neuron/sdk_worker.py``: loading the checkpoint
with *that* environment's Transformers, tracing and compiling, saving, and running the saved module on the device.
The worker imports nothing of exporter's (`sdk_worker`).
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core.errors import BackendUnavailableError, ExportError, InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping

    import numpy as np

__all__ = [
    "DLAMI_VENV_PATTERNS",
    "ENV_ROOTS_VARIABLE",
    "SdkEnvironment",
    "describe_environment",
    "find_environments",
    "resolve_sdk_python",
    "sdk_worker_command",
]

#: The Neuron virtual environments AWS's Deep Learning AMIs ship, as glob patterns under a root.
DLAMI_VENV_PATTERNS = ("aws_neuronx_venv_pytorch*", "aws_neuron_venv_pytorch*")
#: Where the DLAMI environments are looked for: this variable (os.pathsep-separated roots), else /opt.
ENV_ROOTS_VARIABLE = "EXPORTER_NEURON_VENV_ROOTS"
WORKER_SCRIPT = Path(__file__).with_name("sdk_worker.py")
_SDK_FOR_TARGET = {"inf1": "torch_neuron", "inf2": "torch_neuronx", "trn1": "torch_neuronx"}
#: Seconds to wait for an environment to describe itself (importing nothing heavy: a second or two).
DESCRIBE_TIMEOUT = 120


@dataclass(frozen=True)
class SdkEnvironment:
    """A Python environment holding a Neuron SDK, as it describes itself (`sdk_worker.describe`)."""

    python: str
    facts: dict[str, Any]

    @property
    def torch(self) -> str | None:
        """Its torch version."""
        return self.facts.get("torch")

    @property
    def transformers(self) -> str | None:
        """Its Transformers version."""
        return self.facts.get("transformers")

    def sdk(self, target: str) -> dict[str, Any] | None:
        """The SDK provider that compiles for `target` here ({"distribution", "version", "unmet", ...}), or None."""
        found: dict[str, Any] | None = self.facts.get("sdks", {}).get(_SDK_FOR_TARGET[target])
        return found

    def summary(self) -> str:
        """One line: interpreter, torch, Transformers and the SDKs found."""
        sdks = ", ".join(f"{s['distribution']} {s['version']}" for s in self.facts.get("sdks", {}).values())
        return (
            f"{self.python}: Python {self.facts.get('python')}, torch {self.torch}, "
            f"transformers {self.transformers}, {sdks or 'no Neuron SDK'}"
        )

    def problem(self, target: str) -> str | None:
        """Why this environment cannot compile for `target`, or None."""
        sdk = self.sdk(target)
        if sdk is None:
            wanted = "torch-neuron" if target == "inf1" else "torch-neuronx"
            return f"{self.python} has no {wanted} (import package {_SDK_FOR_TARGET[target]}) for {target}"
        if sdk["unmet"]:
            return (
                f"{sdk['distribution']} {sdk['version']} in {self.python} needs what that environment lacks: "
                f"{', '.join(sdk['unmet'])}"
            )
        if self.torch is None:
            return f"{self.python} has no torch"
        if self.transformers is None:
            return f"{self.python} has no transformers: the SDK's environment loads the checkpoint itself"
        return None


def sdk_worker_command(python: str) -> list[str]:
    """The command running the worker script with `python`, isolated (``-I``: no user site, no PYTHON* variables,
    not even the script's folder on its path, so none of exporter's modules can be imported by accident)."""
    return [python, "-I", str(WORKER_SCRIPT)]


def _roots() -> list[str]:
    configured = os.environ.get(ENV_ROOTS_VARIABLE)
    return [root for root in configured.split(os.pathsep) if root] if configured else ["/opt"]


def find_environments() -> list[str]:
    """Interpreters of the DLAMI Neuron environments found under the roots (`ENV_ROOTS_VARIABLE`, else /opt)."""
    found = []
    for root in _roots():
        for pattern in DLAMI_VENV_PATTERNS:
            for folder in sorted(glob.glob(os.path.join(root, pattern))):
                python = os.path.join(folder, "bin", "python")
                if os.access(python, os.X_OK):
                    found.append(python)
    return found


def _interpreter(path: str) -> str:
    """The interpreter a --sdk-python value names: an executable, or a virtual environment's folder."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / "bin" / "python"
    if not candidate.exists():
        raise InvalidArgumentError(
            f"--sdk-python {path}: no such interpreter; pass the python of the Neuron SDK's environment "
            "(e.g. /opt/aws_neuronx_venv_pytorch_2_9/bin/python), its folder, or auto"
        )
    if not os.access(candidate, os.X_OK):
        raise InvalidArgumentError(f"--sdk-python {path}: {candidate} is not executable")
    return str(candidate)


def describe_environment(python: str) -> SdkEnvironment:
    """Ask `python` what it holds (a fresh process; imports no SDK)."""
    try:
        completed = subprocess.run(
            sdk_worker_command(python),
            input=json.dumps({"op": "describe"}) + "\n",
            capture_output=True,
            text=True,
            timeout=DESCRIBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailableError(f"--sdk-python {python} could not be started: {exc}") from exc
    answer = _answer(completed.stdout)
    if answer is None or not answer.get("ok"):
        detail = (answer or {}).get("message") or completed.stderr.strip()[-400:] or f"exit {completed.returncode}"
        raise BackendUnavailableError(f"--sdk-python {python} could not describe itself: {detail}")
    return SdkEnvironment(python=python, facts=answer)


def _answer(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        answer: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return answer


def resolve_sdk_python(value: str, target: str) -> SdkEnvironment:
    """The environment ``--sdk-python`` names (``auto``: the first DLAMI environment that can compile for
    `target`), checked: it must hold a working SDK for `target`, torch and Transformers."""
    if value == "auto":
        candidates = find_environments()
        problems = []
        for python in candidates:
            environment = describe_environment(python)
            problem = environment.problem(target)
            if problem is None:
                return environment
            problems.append(problem)
        roots = ", ".join(_roots())
        found = "; ".join(problems) if problems else f"no {' or '.join(DLAMI_VENV_PATTERNS)} under {roots}"
        raise BackendUnavailableError(
            f"--sdk-python auto found no Neuron environment for {target} ({found}); "
            "pass --sdk-python with the python of one"
        )
    environment = describe_environment(_interpreter(value))
    problem = environment.problem(target)
    if problem is not None:
        raise BackendUnavailableError(f"cannot compile for {target}: {problem}")
    return environment


class SdkWorker:
    """The worker process of one SDK environment: JSON requests in, answers out, started on first use."""

    def __init__(self, environment: SdkEnvironment) -> None:
        from exporter_torchscript.runtime import LoaderProcess

        self.environment = environment
        self._process = LoaderProcess(
            label=f"Neuron SDK ({environment.python})", command=sdk_worker_command(environment.python)
        )
        # Like the fresh-process validation workers: ended when this process exits, if not before.
        atexit.register(self.close)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request; a failure answered by the worker raises `ExportError` with its message."""
        answer = self._process.request(message)
        if not answer.get("ok"):
            raise ExportError(
                f"the Neuron SDK's environment ({self.environment.python}) failed: "
                f"{answer.get('error_type')}: {answer.get('message')}"
            )
        return answer

    def close(self) -> None:
        """Stop the worker."""
        self._process.close()


def save_inputs(folder: str | Path, name: str, arrays: dict[str, Any]) -> str:
    """Write named arrays as ``folder/name.npz``; return the path."""
    import numpy as np

    path = Path(folder) / f"{name}.npz"
    contiguous: dict[str, Any] = {key: np.ascontiguousarray(np.asarray(value)) for key, value in arrays.items()}
    np.savez(path, **contiguous)
    return str(path)


class RemoteModuleRunner:
    """Validation runner for a module compiled in another environment: our inputs padded to the compiled shape
    here (the module's shape contract), run there on the device, outputs cut back here."""

    def __init__(self, worker: SdkWorker, artifact: str | Path, contract: Any, sdk_module: str, dynamic_batch: bool):
        self.worker = worker
        self.artifact = Path(artifact)
        self.contract = contract
        self.sdk_module = sdk_module
        self.dynamic_batch = dynamic_batch
        #: Facts the worker reported on its last call (its interpreter, versions, exporter modules it imported).
        self.last_call: dict[str, Any] = {}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import torch

        from exporter_core.padding import pad_inputs

        contract = self.contract
        tensors = {name: torch.as_tensor(np.asarray(value)) for name, value in inputs.items()}
        padded = pad_inputs(
            tensors,
            contract.input_axes,
            contract.static_shape,
            pad_token_id=contract.pad_token_id,
            padding_side=contract.padding_side,
        )
        with tempfile.TemporaryDirectory(prefix="exporter-neuron-") as folder:
            answer = self.worker.request(
                {
                    "op": "run",
                    "sdk_module": self.sdk_module,
                    "artifact": str(self.artifact.resolve()),
                    "dynamic_batch": self.dynamic_batch,
                    "input_names": list(contract.input_names),
                    "output_names": list(contract.output_names),
                    "inputs": save_inputs(
                        folder, "inputs", {n: padded.inputs[n].numpy() for n in contract.input_names}
                    ),
                    "outputs": str(Path(folder) / "outputs.npz"),
                }
            )
            self.last_call = {k: v for k, v in answer.items() if k not in ("ok", "output_names")}
            with np.load(Path(folder) / "outputs.npz") as data:
                outputs = {name: torch.from_numpy(np.array(data[name])) for name in answer["output_names"]}
        cut = padded.unpad(outputs, contract.output_axes)
        return {name: value.numpy() for name, value in cut.items()}
