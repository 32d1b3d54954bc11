"""The fresh process behind `SavedModuleRunner`: ``python -m exporter_torchscript.worker --loader module:function``.

The loader is a function of a file path that returns a `TracedModel` (``exporter_torchscript.runtime:load`` for
TorchScript, ``exporter_neuron.runtime:load`` for Neuron, which imports the SDK first). Reads one JSON request per
line on stdin ({"path", "inputs", "outputs"}: the module file and two ``.npz`` files), loads the module from disk
with the loader, runs it and writes the outputs; answers one JSON line per request on the original stdout, with
the loader's facts (`TracedModel.facts`). Anything else printed (by torch or an SDK) goes to stderr so that it
cannot corrupt the answers. Exits when stdin closes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = ["Loader", "handle", "main", "resolve_loader", "serve"]

#: A loader: the module file's path in, a `TracedModel` out.
Loader = Callable[[str], Any]


def resolve_loader(spec: str) -> Loader:
    """The function named by ``module:function``."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"a loader is named module:function, got {spec!r}")
    loader = getattr(importlib.import_module(module_name), function_name)
    if not callable(loader):
        raise ValueError(f"{spec} is not a function")
    return loader


def handle(loader: Loader, request: dict[str, Any]) -> dict[str, Any]:
    """Load with `loader`, run, write the outputs; return the answer."""
    import numpy as np
    import torch

    model = loader(request["path"])
    with np.load(request["inputs"]) as data:
        inputs = {name: torch.from_numpy(np.array(data[name])) for name in data.files}
    outputs = model.run(inputs)
    arrays = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
    np.savez(request["outputs"], **arrays)
    return {
        **dict(getattr(model, "facts", {})),
        "ok": True,
        "output_names": list(arrays),
        "pid": os.getpid(),
        "transformers_imported": "transformers" in sys.modules,
        "torch_version": torch.__version__,
    }


def serve(loader: Loader, requests: IO[str], answers: IO[str]) -> None:
    """Answer requests until `requests` ends; a failure is answered, not raised."""
    for line in requests:
        if not line.strip():
            continue
        try:
            answer = handle(loader, json.loads(line))
        except Exception as exc:  # every failure goes back to the parent, which raises it there
            answer = {"ok": False, "error_type": type(exc).__name__, "message": str(exc)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """Watch the parent process from a daemon thread; end this process when it is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exporter-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Serve on stdin/stdout, with fd 1 pointed at stderr so stray output stays out of the protocol."""
    parser = argparse.ArgumentParser(prog="python -m exporter_torchscript.worker")
    parser.add_argument("--loader", default="exporter_torchscript.runtime:load", help="module:function loading a file")
    _exit_with_parent(os.getppid())
    loader = resolve_loader(parser.parse_args(argv).loader)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    serve(loader, sys.stdin, answers)


if __name__ == "__main__":  # pragma: no cover - run as a process
    main()
