"""``exporter neuron analyze``: the backend's sub-action, reached through `NeuronBackend.subcommands`.

Cheap to import; torch, Transformers and the SDK load inside `run_analyze`, after the SDK check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exporter_core.loading import PREPROCESSOR_KINDS
from exporter_neuron.sdk import DEFAULT_TARGET, TARGETS

__all__ = ["add_shape_arguments", "configure_analyze", "run_analyze"]


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """``--target``, ``--batch-size``, ``--sequence-length``: shared by the export and the analysis."""
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default=DEFAULT_TARGET,
        help=f"Instance family to compile for: inf1 (torch-neuron), inf2 or trn1 (torch-neuronx). Default {DEFAULT_TARGET}.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="Batch size compiled for (the static shape; smaller batches are padded). Default: the architecture's, 2 for most.",
    )
    parser.add_argument(
        "--sequence-length",
        type=int,
        default=None,
        help="Sequence length compiled for, special tokens included (shorter inputs are padded, longer refused). "
        "Default: the architecture's, 8 for most.",
    )


def configure_analyze(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``exporter neuron analyze``."""
    parser.description = (
        "Report which operators of the model run on Neuron and which fall back to CPU, as the target's SDK "
        "sees them at the static shape (torch_neuronx.analyze for inf2/trn1, torch_neuron.analyze_model and "
        "get_supported_operations for inf1). Writes nothing."
    )
    parser.add_argument(
        "-m", "--model", required=True, help="Model ID (local hub cache) or path on disk to load the model from."
    )
    parser.add_argument(
        "--feature", default="default", metavar="FEATURE", help="The feature (task) to analyse, as for the export."
    )
    add_shape_arguments(parser)
    parser.add_argument(
        "--cache_dir", "--cache-dir", dest="cache_dir", default=None, help="Path of the local hub cache."
    )
    parser.add_argument(
        "--preprocessor", choices=list(PREPROCESSOR_KINDS), default="auto", help="Which type of preprocessor to use."
    )
    parser.add_argument(
        "--json", action="store_true", help="Print the report as JSON (with the SDK's own result) instead of a table."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Show tracebacks and library warnings.")
    parser.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> None:
    """Check the SDK, load the model, ask the SDK, print the report."""
    from exporter_neuron.options import parse_options
    from exporter_neuron.sdk import require_sdk

    options = parse_options(
        {"target": args.target, "batch_size": args.batch_size, "sequence_length": args.sequence_length}
    )
    installed = require_sdk(options.target)  # before any model is loaded or SDK imported
    model, config, preprocessor = _load(args.model, args.feature, args.preprocessor, args.cache_dir)

    from exporter_neuron.analysis import analyze_operators

    report = analyze_operators(model, config, options, preprocessor=preprocessor, installed=installed)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report.lines()))


def _load(model: str, feature: str, preprocessor: str, cache_dir: str | Path | None) -> tuple[Any, Any, Any]:
    from exporter_core import loading
    from exporter_core.errors import UnsupportedFeatureError
    from exporter_core.features import config_class_for

    folder = loading.resolve_checkpoint(model, cache_dir=cache_dir)
    model_type = loading.read_model_type(folder)
    config_cls = config_class_for(model_type)
    # The model type's own features, as run_export reads them (a generic family narrows its class-wide list).
    supported = config_cls.supported_features(model_type)
    if feature not in supported:
        raise UnsupportedFeatureError(
            f"{model_type} does not support feature {feature!r}; supported features: {', '.join(supported)}"
        )
    torch_model = loading.load_model(folder, feature, config_cls)
    processor = loading.load_preprocessor(folder, preprocessor)
    return torch_model, config_cls.for_feature(torch_model.config, feature), processor
