"""The ``exporter`` command line: ``exporter <backend> ...``, ``exporter backends``, ``exporter features``.

A user mistake prints one ``error:`` line and exits 2; a failed validation exits 1 and keeps no model
unless ``--keep-invalid``; ``--verbose`` shows tracebacks. Backends add their own options to their
subcommand; only the backend named on the command line is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from exporter_core import plugins
from exporter_core.errors import ExporterError, UserError, ValidationError
from exporter_core.loading import PREPROCESSOR_KINDS
from exporter_core.tasks import AVAILABLE_FEATURES

__all__ = ["add_common_arguments", "main", "run_cli"]

logger = logging.getLogger("exporter")


def add_common_arguments(parser: argparse.ArgumentParser, *, legacy: bool = False) -> None:
    """Options every backend subcommand (and the old ``python -m exporter.onnx``) shares."""
    parser.add_argument("-m", "--model", required=True, help="Model ID on huggingface.co (local hub cache) or path on disk to load model from.")
    parser.add_argument(
        "--feature",
        default="default",
        choices=list(AVAILABLE_FEATURES) if legacy else None,
        metavar=None if legacy else "FEATURE",
        help="The type of features to export the model with (see `exporter features MODEL`).",
    )
    parser.add_argument("--atol", type=float, default=None, help="Absolute difference tolerance when validating the model.")
    parser.add_argument("--framework", choices=["pt", "tf"], default=None, help="The framework to use (pt only: Transformers 5 has no TensorFlow).")
    parser.add_argument("--cache_dir", "--cache-dir", dest="cache_dir", default=None, help="Path of the local hub cache.")
    parser.add_argument("--preprocessor", choices=list(PREPROCESSOR_KINDS), default="auto", help="Which type of preprocessor to use.")
    parser.add_argument("--keep-invalid", action="store_true", help="Keep the exported files even when validation fails.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show tracebacks and library warnings.")
    parser.add_argument("output", type=Path, help="Path indicating where to store generated files (a folder, or an existing file to replace).")


@contextlib.contextmanager
def _quiet_libraries(verbose: bool) -> Iterator[None]:
    """Keep Transformers' progress bars and warnings off the terminal unless --verbose."""
    if verbose:
        yield
        return
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class _StderrHandler(logging.Handler):
    """Writes log lines to whatever `sys.stderr` is at the time (so captured streams see them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - a broken stderr must not break the export
            self.handleError(record)


def _setup_logging() -> None:
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def run_cli(func: Any, args: argparse.Namespace) -> int:
    """Run `func(args)`, turning exporter errors into one line and an exit status."""
    verbose = bool(getattr(args, "verbose", False))
    try:
        with _quiet_libraries(verbose):
            func(args)
    except ValidationError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExporterError as exc:
        if verbose:
            raise
        print(f"error: {exc} (rerun with --verbose for details)", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    return 0


def export_command(backend_name: str, args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Run one export from parsed arguments and print where the model went."""
    from exporter.pipeline import run_export

    report = run_export(
        backend_name,
        args.model,
        args.output,
        feature=args.feature,
        atol=args.atol,
        preprocessor=args.preprocessor,
        framework=args.framework,
        cache_dir=args.cache_dir,
        keep_invalid=args.keep_invalid,
        options=options,
    )
    logger.info(f"All good, model saved at: {report.output}")


def _print_backends(_args: argparse.Namespace) -> None:
    infos = plugins.list_backends()
    if not infos:
        print("no backends installed; install one, for example: pip install exporter-onnx")
        return
    for info in infos:
        status = "ready"
        missing = plugins.missing_requirements(info.distribution) if info.distribution else []
        if missing:
            status = f"installed, not usable: missing {', '.join(missing)}"
        else:
            try:
                reason = plugins.load_backend(info.name).unavailable_reason()
            except ExporterError as exc:
                reason = str(exc)
            if reason:
                status = f"installed, not usable: {reason}"
        print(f"{info.name:<12} {info.distribution or '?'} {info.version or ''}  {status}")


def _print_features(args: argparse.Namespace) -> None:
    from exporter_core import loading
    from exporter_core.features import supported_features

    target = args.model_type
    model_type = target
    if os.sep in target or Path(target).exists():
        model_type = loading.read_model_type(loading.resolve_checkpoint(target))
    for feature in supported_features(model_type):
        print(feature)


def _build_parser(backend_names: list[str], chosen: str | None) -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(prog="exporter", description="Export 🤗 Transformers models to ONNX, TorchScript and AWS Neuron, validated against PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    backends_parser = sub.add_parser("backends", help="List installed backends and whether each can run here.")
    backends_parser.set_defaults(func=_print_backends)
    features_parser = sub.add_parser("features", help="List the features of a model type or checkpoint folder.")
    features_parser.add_argument("model_type", help="A Transformers model_type (bert) or a checkpoint folder.")
    features_parser.add_argument("-v", "--verbose", action="store_true")
    features_parser.set_defaults(func=_print_features)
    backend_cls = None
    for name in backend_names:
        if name != chosen:
            sub.add_parser(name, help=f"Export with the {name} backend (see `exporter {name} --help`).", add_help=False)
            continue
        backend_cls = plugins.load_backend(name)
        backend_parser = sub.add_parser(name, help=f"Export with the {name} backend.")
        add_common_arguments(backend_parser)
        backend_cls.add_arguments(backend_parser)
    return parser, backend_cls


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``exporter`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    names = [p.name for p in plugins.list_backends()]
    chosen = argv[0] if argv and argv[0] in names else None
    verbose = "--verbose" in argv or "-v" in argv
    try:
        parser, backend_cls = _build_parser(names, chosen)
    except ExporterError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if argv and not argv[0].startswith("-") and argv[0] not in names and argv[0] not in ("backends", "features"):
        dist = plugins.KNOWN_BACKEND_DISTRIBUTIONS.get(argv[0])
        hint = f"install it with: pip install {dist}" if dist else "run `exporter backends` to see what is installed"
        print(f"error: unknown command or backend {argv[0]!r}; {hint}", file=sys.stderr)
        return 2
    # A backend may offer sub-actions (`exporter neuron analyze ...`): `subcommands()` maps each name to a function
    # that adds the sub-action's arguments to a parser and sets `func`, which then runs like any command.
    actions = backend_cls.subcommands() if backend_cls is not None else {}
    if len(argv) > 1 and argv[1] in actions:
        action_parser = argparse.ArgumentParser(prog=f"exporter {chosen} {argv[1]}")
        actions[argv[1]](action_parser)
        action_args = action_parser.parse_args(argv[2:])
        return run_cli(action_args.func, action_args)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if backend_cls is not None:
        # Options are read inside run_cli so that a backend refusing them gives one error line and exit 2.
        return run_cli(lambda a: export_command(chosen, a, backend_cls.options_from_arguments(a)), args)
    return run_cli(args.func, args)
