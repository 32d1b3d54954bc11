"""The Neuron SDK's side of ``exporter neuron --sdk-python PYTHON``: a script run by *that* interpreter.

AWS ships each Neuron SDK for one PyTorch (torch-neuronx for 2.9 today, torch-neuron for 1.13 on Inf1), in a
virtual environment of its own. The exporter's process (Transformers 5, any supported torch) cannot import it, so
this file is run by the SDK's interpreter as a plain script — ``PYTHON sdk_worker.py`` — and must import nothing
but the standard library, numpy, torch, transformers and the SDK: none of exporter's packages or dependencies.

Protocol: one JSON request per line on stdin, one JSON answer per line on the original stdout (anything the SDK
prints goes to stderr). Requests, by ``op``:

- ``describe``: versions of Python, torch, transformers, numpy and the SDK providers present, with the
  requirements each SDK provider declares that this environment does not meet (read from package metadata, no
  SDK import).
- ``compile``: load ``checkpoint`` with this environment's Transformers as ``model_class``, wrap it to take
  ``input_names`` and return ``output_names``, trace it with ``<sdk>.trace`` on the example inputs in
  ``inputs`` (an ``.npz``), switch dynamic batching on when asked (torch-neuronx), save it to ``artifact`` with
  ``extra_files`` inside, and answer the versions used.
- ``run``: load ``artifact`` (importing the SDK first: it registers the operators the file needs), run it on the
  ``.npz`` of ``inputs`` and write ``outputs``.

A failure is answered (``ok: false`` with the error's type and first line), never raised: the exporter turns it
into its own error.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

#: SDK import package -> AWS distribution name.
SDK_DISTRIBUTIONS = {"torch_neuronx": "torch-neuronx", "torch_neuron": "torch-neuron"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _providers(module: str) -> list[Any]:
    """Installed distributions providing the top-level package `module` (AWS's by name first)."""
    found = []
    try:
        found.append(metadata.distribution(SDK_DISTRIBUTIONS[module]))
    except metadata.PackageNotFoundError:
        pass
    for dist in metadata.distributions():
        if dist in found:
            continue
        top_level = (dist.read_text("top_level.txt") or "").split()
        record = "\n" + (dist.read_text("RECORD") or "")
        if module in top_level or f"\n{module}/" in record:
            found.append(dist)
    return found


def _unmet(dist: Any) -> list[str]:
    """The requirements `dist` declares (outside extras) that this environment does not satisfy."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip and transformers
        return []
    unmet = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        installed = _version(requirement.name)
        if installed is None:
            unmet.append(f"{requirement} (not installed)")
        elif requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{requirement} (found {installed})")
    return unmet


def describe() -> dict[str, Any]:
    """This environment: interpreter, library versions, and each SDK provider with its unmet requirements."""
    sdks = {}
    for module in SDK_DISTRIBUTIONS:
        providers = _providers(module)
        if providers:
            dist = providers[0]
            sdks[module] = {
                "distribution": dist.metadata["Name"],
                "version": dist.version,
                "summary": dist.metadata.get("Summary") or "",
                "unmet": _unmet(dist),
            }
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "sdks": sdks,
    }


def _load_inputs(path: str) -> dict[str, Any]:
    import numpy as np
    import torch

    with np.load(path) as data:
        return {name: torch.from_numpy(np.array(data[name])) for name in data.files}


def _wrapped(model: Any, input_names: list[str], output_names: list[str]) -> Any:
    """`model` taking `input_names` positionally and returning `output_names` as a tuple."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            # zip without strict=: this script also runs on the Pythons (3.8, 3.9) of older SDK environments.
            outputs = self.model(**dict(zip(input_names, tensors)), return_dict=True)  # noqa: B905
            missing = [name for name in output_names if name not in outputs]
            if missing:
                raise KeyError(
                    f"{type(self.model).__name__} returns {', '.join(outputs.keys())}, not {', '.join(missing)}"
                )
            return tuple(outputs[name] for name in output_names)

    return Wrapped().eval()


def compile_model(request: dict[str, Any]) -> dict[str, Any]:
    """Load, trace with the SDK, save; answer the versions that did it."""
    import torch
    import transformers

    sdk = importlib.import_module(request["sdk_module"])
    model_class = getattr(transformers, request["model_class"], None)
    if model_class is None:
        raise LookupError(
            f"Transformers {transformers.__version__} in this environment has no {request['model_class']}: "
            "it cannot load this architecture"
        )
    model = model_class.from_pretrained(request["checkpoint"], **request.get("load_kwargs", {}))
    for key, value in request.get("config_overrides", {}).items():
        setattr(model.config, key, value)
    model.eval()
    inputs = _load_inputs(request["inputs"])
    example = tuple(inputs[name] for name in request["input_names"])
    with torch.no_grad():
        compiled = sdk.trace(
            _wrapped(model, request["input_names"], request["output_names"]), example, **request["trace_kwargs"]
        )
        if request.get("dynamic_batch") and hasattr(sdk, "dynamic_batch"):
            compiled = sdk.dynamic_batch(compiled)
    extra = {name: text.encode("utf-8") for name, text in request.get("extra_files", {}).items()}
    torch.jit.save(compiled, request["artifact"], _extra_files=extra)
    return {"model_class": type(model).__name__}


def run_artifact(request: dict[str, Any]) -> dict[str, Any]:
    """Load the artifact with the SDK imported, run it, write the outputs."""
    import numpy as np
    import torch

    sdk = importlib.import_module(request["sdk_module"])
    module = torch.jit.load(request["artifact"])
    if request.get("dynamic_batch") and hasattr(sdk, "dynamic_batch"):
        module = sdk.dynamic_batch(module)
    inputs = _load_inputs(request["inputs"])
    with torch.no_grad():
        values = module(*(inputs[name] for name in request["input_names"]))
    if not isinstance(values, (tuple, list)):
        values = (values,)
    arrays = {name: value.detach().cpu().numpy() for name, value in zip(request["output_names"], values)}  # noqa: B905
    np.savez(request["outputs"], **arrays)
    return {"output_names": list(arrays)}


OPERATIONS = {"describe": lambda request: describe(), "compile": compile_model, "run": run_artifact}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """One request's answer, with the facts every answer carries."""
    try:
        answer = OPERATIONS[request["op"]](request)
    except Exception as exc:  # every failure is answered; the exporter raises it on its side
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return {"ok": False, "error_type": type(exc).__name__, "message": lines[0][:400] if lines else ""}
    return {
        **answer,
        "ok": True,
        "pid": os.getpid(),
        "executable": sys.executable,
        "exporter_modules": sorted(name for name in sys.modules if name.split(".")[0].startswith("exporter")),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
    }


def main() -> None:
    """Serve requests on stdin until it closes, answering on the original stdout only."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if line.strip():
            answers.write(json.dumps(handle(json.loads(line))) + "\n")
            answers.flush()


if __name__ == "__main__":
    main()
