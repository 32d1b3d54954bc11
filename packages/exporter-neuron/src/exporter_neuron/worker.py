"""The fresh process behind `CompiledModuleRunner`: ``python -m exporter_neuron.worker``.

Reads one JSON request per line on stdin ({"path", "inputs", "outputs"}: the module file and two ``.npz`` files),
loads the module from disk with `exporter_neuron.runtime.load_with_metadata` (SDK import, ``torch.jit.load``,
the shape contract), runs it and writes the outputs; answers one JSON line per request on the original stdout.
Anything else printed (by torch or the SDK) goes to stderr so that it cannot corrupt the answers. Exits when
stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

__all__ = ["handle", "main", "serve"]


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Load, run, write the outputs; return the answer."""
    import numpy as np
    import torch

    from exporter_neuron.runtime import load_with_metadata

    model, metadata = load_with_metadata(request["path"])
    with np.load(request["inputs"]) as data:
        inputs = {name: torch.from_numpy(np.array(data[name])) for name in data.files}
    outputs = model.run(inputs)
    arrays = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
    np.savez(request["outputs"], **arrays)
    return {
        "ok": True,
        "output_names": list(arrays),
        "pid": os.getpid(),
        "transformers_imported": "transformers" in sys.modules,
        "sdk": metadata.sdk.get("module"),
        "sdk_distribution": metadata.sdk.get("distribution"),
        "torch_version": torch.__version__,
    }


def serve(requests: IO[str], answers: IO[str]) -> None:
    """Answer requests until `requests` ends; a failure is answered, not raised."""
    for line in requests:
        if not line.strip():
            continue
        try:
            answer = handle(json.loads(line))
        except Exception as exc:  # every failure goes back to the parent, which raises it there
            answer = {"ok": False, "error_type": type(exc).__name__, "message": str(exc)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    """Serve on stdin/stdout, with fd 1 pointed at stderr so stray output stays out of the protocol."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    serve(sys.stdin, answers)


if __name__ == "__main__":  # pragma: no cover - run as a process
    main()
