"""The fresh process behind `CompiledModuleRunner`: ``python -m exporter_neuron.worker REQUEST.json``.

The request names the module file, an ``.npz`` of inputs, where to write the outputs (``.npz``) and the answer
(JSON). The module is loaded from disk with `exporter_neuron.runtime.load` (SDK import, ``torch.jit.load``, the
shape contract) and run once. Anything printed goes to stderr; failures are answered, not raised.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["handle", "main"]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Answer the request file named on the command line; the exit status is 0 whenever an answer was written."""
    args = list(sys.argv[1:] if argv is None else argv)
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    sys.stdout = sys.stderr
    try:
        answer = handle(request)
    except Exception as exc:  # every failure goes back to the parent, which raises it there
        answer = {"ok": False, "error_type": type(exc).__name__, "message": str(exc)}
    Path(request["answer"]).write_text(json.dumps(answer), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process
    sys.exit(main())
