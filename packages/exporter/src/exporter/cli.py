"""The ``exporter`` command line: ``exporter [-v] <backend> ...``, ``exporter backends``, ``exporter features``.

Every failure prints one ``error:`` line and exits with a documented status (`EXIT_STATUSES`): 1 validation
failed (the model is not kept unless ``--keep-invalid``, the report is), 2 a mistake in the request or an
unusable checkpoint, 3 the environment or the conversion failed, 130 Ctrl-C, 143 SIGTERM. ``--verbose`` adds the
traceback; an unexpected exception is reported as a bug with the file its traceback was written to. Backends add
their own options to their subcommand; only the backend named on the command line is imported.

Parsing has two argparse stages, as git and pip do: the first reads the global options and the command
name and leaves the rest to the command's own parser, which for a backend exists only once that backend
is loaded. Every command's parser takes the global options too, so they go before or after the command.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from exporter_core import plugins
from exporter_core.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EnvironmentProblemError,
    ExporterError,
    TerminationRequested,
    UserError,
    ValidationError,
    did_you_mean,
    spelling_flags,
)
from exporter_core.loading import PREPROCESSOR_KINDS
from exporter_core.output import MACHINE_ERRNOS, interruptions_as_exceptions, os_error
from exporter_core.tasks import AVAILABLE_FEATURES, FEATURE_ALIASES

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.backend import Backend

__all__ = ["EXIT_STATUSES", "add_common_arguments", "main", "progress_printer", "run_cli"]

#: The exit statuses of every command, as `--help` and the user guide list them.
EXIT_STATUSES = (
    (0, "exported and validated"),
    (1, "validation failed (the report is written; the model is kept only with --keep-invalid)"),
    (2, "a mistake in the request, or a checkpoint that cannot be used (damaged, missing head weights, NaN)"),
    (
        3,
        "the environment or the conversion failed: a backend or dependency missing, disk full, permission "
        "denied, a backend error, or a bug in exporter (the message says which)",
    ),
    (130, "interrupted by Ctrl-C (SIGINT): nothing is left behind"),
    (143, "stopped by SIGTERM: nothing is left behind"),
)


def _exit_status_text() -> str:
    return "exit status:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_STATUSES)


logger = logging.getLogger("exporter")


def add_common_arguments(parser: argparse.ArgumentParser, *, legacy: bool = False) -> None:
    """Options every backend subcommand (and the old ``python -m exporter.onnx``) shares."""
    parser.add_argument(
        "-m",
        "--model",
        required=True,
        help="Model ID on huggingface.co (local hub cache) or path on disk to load model from.",
    )
    parser.add_argument(
        "--feature",
        # Without --feature, `exporter <backend>` exports the feature the checkpoint was saved for (and says which);
        # the old tool keeps its old default.
        default="default" if legacy else None,
        choices=[*AVAILABLE_FEATURES, *FEATURE_ALIASES] if legacy else None,
        metavar=None if legacy else "FEATURE",
        help="The type of features to export the model with (see `exporter features MODEL`); Optimum task names "
        "are accepted. " + ("Default: default." if legacy else "Default: the checkpoint's own (its architectures)."),
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=None,
        help="Absolute difference tolerance when validating the model. Given alone it is the whole tolerance "
        "(no relative term); default: the architecture's (1e-05 for most) plus the relative term of --rtol.",
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="Relative tolerance: each output may differ by atol + rtol x max|reference output| (its largest "
        "value). Default: 1e-04 unless --atol is given alone (then 0).",
    )
    parser.add_argument(
        "--framework",
        choices=["pt", "tf"],
        default=None,
        help="The framework to use (pt only: Transformers 5 has no TensorFlow).",
    )
    parser.add_argument(
        "--cache_dir", "--cache-dir", dest="cache_dir", default=None, help="Path of the local hub cache."
    )
    parser.add_argument(
        "--preprocessor", choices=list(PREPROCESSOR_KINDS), default="auto", help="Which type of preprocessor to use."
    )
    parser.add_argument(
        "--keep-invalid", action="store_true", help="Keep the exported files even when validation fails."
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Export into a folder that already holds files: the files of a previous export of the same artifact "
        "are replaced as a whole, other files are left alone.",
    )
    parser.add_argument(
        "--allow-random-head",
        action="store_true",
        help="Export a feature whose head weights the checkpoint lacks (randomly initialised; the report says so).",
    )
    parser.add_argument("--allow-nonfinite", action="store_true", help="Export weights that hold NaN or Inf values.")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="PATH",
        help="Also write the JSON validation report to PATH (written whether validation passes or fails).",
    )
    if legacy:
        parser.add_argument(
            "--export_with_transformers",
            action="store_true",
            help="Accepted for scripts of the old tool and ignored: there is only one export path now.",
        )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="No progress lines (printed on a terminal as each stage starts and ends) and no timing line.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Show tracebacks and library warnings.")
    parser.add_argument(
        "output",
        type=Path,
        help="Path indicating where to store generated files (a folder, or an existing file to replace).",
    )


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


def _crash_report(exc: BaseException) -> str:
    """Write the traceback of an unexpected exception to a file; return its path."""
    text = "".join(traceback.format_exception(exc))
    try:
        handle, path = tempfile.mkstemp(prefix="exporter-crash-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError:
        return "(could not be written; rerun with --verbose to see it)"
    return path


def _print_error(exc: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    # A backend's conversion error has details a user mistake does not.
    hint = (
        ""
        if verbose or isinstance(exc, (UserError, ValidationError, EnvironmentProblemError))
        else " (rerun with --verbose for details)"
    )
    print(f"error: {exc}{hint}", file=sys.stderr)


def run_cli(func: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """Run `func(args)`: every failure becomes one line and an exit status (`EXIT_STATUSES`), Ctrl-C and SIGTERM
    unwind the export (staging removed, worker processes ended) and exit 130 and 143."""
    verbose = bool(getattr(args, "verbose", False))
    try:
        with interruptions_as_exceptions(), spelling_flags(), _quiet_libraries(verbose):
            func(args)
    except TerminationRequested:
        print("stopped by SIGTERM: the export was abandoned and its unfinished files removed", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): the export was abandoned and its unfinished files removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ExporterError as exc:
        _print_error(exc, verbose)
        return exc.exit_code
    except OSError as exc:
        if exc.errno in MACHINE_ERRNOS:
            error = os_error(exc, "the export")
            _print_error(error, verbose)
            return error.exit_code
        return _report_bug(exc, verbose)
    except MemoryError as exc:
        _print_error(exc, verbose)
        print("error: out of memory; free memory or export on a larger machine", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except Exception as exc:
        return _report_bug(exc, verbose)
    return 0


def _report_bug(exc: Exception, verbose: bool) -> int:
    """An exception exporter did not expect: a bug. One line, and where the traceback went."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    summary = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    where = _crash_report(exc)
    print(
        f"error: internal error (a bug in exporter): {type(exc).__name__}: {summary}; the traceback is in {where}; "
        "please report it with that file",
        file=sys.stderr,
    )
    return EXIT_ENVIRONMENT


def _write_progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def progress_printer(quiet: bool) -> Callable[[str], None] | None:
    """Where progress lines go: stderr when it is a terminal and not `quiet`; nowhere otherwise (a log file or a
    pipe gets the final lines only)."""
    if quiet:
        return None
    isatty = getattr(sys.stderr, "isatty", None)
    return _write_progress if callable(isatty) and isatty() else None


def export_command(backend_name: str, args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Run one export from parsed arguments and print where the model went (after its times, unless --quiet)."""
    from exporter.pipeline import run_export

    quiet = bool(getattr(args, "quiet", False))

    report = run_export(
        backend_name,
        args.model,
        args.output,
        feature=args.feature,
        atol=args.atol,
        rtol=args.rtol,
        preprocessor=args.preprocessor,
        framework=args.framework,
        cache_dir=args.cache_dir,
        keep_invalid=args.keep_invalid,
        overwrite=args.overwrite,
        allow_random_head=args.allow_random_head,
        allow_nonfinite=args.allow_nonfinite,
        report=args.report,
        options=options,
        progress=progress_printer(quiet),
    )
    if not quiet:
        logger.info(report.timing_line())
    logger.info(f"All good, model saved at: {report.output}")


def _print_backends(_args: argparse.Namespace) -> None:
    infos = plugins.list_backends()
    if not infos:
        from exporter.install import backend_extras

        choices = " | ".join(" ".join(packages) for packages in backend_extras().values())
        print(f"no backends installed; install one: pip install {choices or 'the package that provides it'}")
        return
    for info in infos:
        status = "ready"
        notes: list[str] = []
        missing = plugins.missing_requirements(info.distribution) if info.distribution else []
        if missing:
            status = f"installed, not usable: missing {', '.join(missing)}"
        else:
            try:
                backend = plugins.load_backend(info.name)
                reason = backend.unavailable_reason()
                notes = backend.environment_notes()
            except ExporterError as exc:
                reason = str(exc)
            if reason:
                status = f"installed, not usable: {reason}"
        print(f"{info.name:<12} {info.distribution or '?'} {info.version or ''}  {status}")
        for note in notes:
            print(f"{'':<12} {note}")


def _print_features(args: argparse.Namespace) -> None:
    from exporter_core import loading
    from exporter_core.features import supported_features
    from exporter_core.tasks import aliases_of, resolve_feature

    target = args.model_type
    model_type = target
    if os.sep in target or Path(target).exists():
        model_type = loading.read_model_type(loading.resolve_checkpoint(target))
    features = supported_features(model_type)
    width = max((len(f) for f in features), default=0)
    for feature in features:
        # Optimum task names accepted for the feature (--feature takes either).
        aliases = [a for a in aliases_of(feature) if resolve_feature(a, features) == feature]
        print(f"{feature:<{width}}  (also: {', '.join(aliases)})" if aliases else feature)


def _add_backends_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=_print_backends)


def _add_features_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_type", help="A Transformers model_type (bert) or a checkpoint folder.")
    parser.set_defaults(func=_print_features)


#: Commands that are not backends: name -> (help line, function adding its arguments and ``func``).
BUILTIN_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "backends": ("List installed backends and whether each can run here.", _add_backends_arguments),
    "features": ("List the features of a model type or checkpoint folder.", _add_features_arguments),
}


def _add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="Show tracebacks and library warnings.")


def _add_version_argument(parser: argparse.ArgumentParser) -> None:
    from exporter import __version__

    parser.add_argument("--version", action="version", version=f"exporter {__version__}")


def _add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """The global options, on the top parser and on every command's (where the command has none of that name)."""
    for add in (_add_verbose_argument, _add_version_argument):
        with contextlib.suppress(argparse.ArgumentError):  # the command defines an option of that name itself
            add(parser)


def _global_parser(backend_names: list[str]) -> argparse.ArgumentParser:
    """Stage one: global options, the command name, and the command's arguments left unparsed."""
    commands = [(name, text) for name, (text, _) in BUILTIN_COMMANDS.items()]
    commands += [(name, f"Export with the {name} backend (see `exporter {name} --help`).") for name in backend_names]
    listing = "\n".join(f"  {name:<12} {text}" for name, text in commands)
    parser = argparse.ArgumentParser(
        prog="exporter",
        description="Export 🤗 Transformers models to ONNX, TorchScript and AWS Neuron, validated against PyTorch.",
        epilog=f"commands:\n{listing}\n\n{_exit_status_text()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_arguments(parser)
    parser.add_argument("command", nargs="?", metavar="COMMAND", help="One of the commands below.")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="...", help="The command's own arguments.")
    return parser


def _command_parser(prog: str, add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, epilog=_exit_status_text(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    _add_global_arguments(parser)
    return parser


def _backend_parser(
    name: str, backend_cls: type[Backend], arguments: list[str]
) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of ``exporter <name> ...`` and the arguments it reads.

    A backend may offer sub-actions (``exporter neuron analyze ...``): `subcommands()` maps each name to a function
    that adds the sub-action's arguments to a parser and sets ``func``. A sub-action is named right after the
    backend, so an export into a folder of that name needs a path (``./analyze``).
    """
    actions = backend_cls.subcommands()
    if arguments and arguments[0] in actions:
        return _command_parser(f"exporter {name} {arguments[0]}", actions[arguments[0]]), arguments[1:]

    def add_export_arguments(parser: argparse.ArgumentParser) -> None:
        parser.description = f"Export with the {name} backend."
        add_common_arguments(parser)
        backend_cls.add_arguments(parser)
        # Options are read inside run_cli so that a backend refusing them gives one error line and exit 2.
        parser.set_defaults(func=lambda a: export_command(name, a, backend_cls.options_from_arguments(a)))

    return _command_parser(f"exporter {name}", add_export_arguments), arguments


def _verbose_in(arguments: list[str]) -> bool:
    """Whether a command's arguments ask for --verbose, read without the command's own parser."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_verbose_argument(parser)
    known, _ = parser.parse_known_args(arguments)
    return bool(known.verbose)


def _report(exc: ExporterError, verbose: bool) -> int:
    """Print `exc` as one error line (after its traceback with --verbose) and return its exit status."""
    _print_error(exc, verbose)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``exporter`` console script."""
    _setup_logging()
    names = [p.name for p in plugins.list_backends()]
    top = _global_parser(names)
    first = top.parse_args(list(sys.argv[1:] if argv is None else argv))
    command: str | None = first.command
    arguments: list[str] = first.arguments
    if command is None:
        top.print_help()
        return 2
    if command in BUILTIN_COMMANDS:
        parser = _command_parser(f"exporter {command}", BUILTIN_COMMANDS[command][1])
    elif command in names:
        try:
            backend_cls = plugins.load_backend(command)
        except ExporterError as exc:
            return _report(exc, first.verbose or _verbose_in(arguments))
        parser, arguments = _backend_parser(command, backend_cls, arguments)
    else:
        from exporter.install import backend_packages, install_command

        packages = backend_packages(command)
        if packages:
            print(
                f"error: the {command} backend is not installed; install it with: {install_command(packages)}",
                file=sys.stderr,
            )
            return EXIT_ENVIRONMENT
        known = [*BUILTIN_COMMANDS, *names]
        print(
            f"error: unknown command or backend {command!r}{did_you_mean(command, known)}; run `exporter backends` "
            "to see what is installed",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(arguments)
    args.verbose = bool(getattr(args, "verbose", False)) or first.verbose
    return run_cli(args.func, args)


def exit_without_teardown(code: int) -> NoReturn:
    """End the process with `code` after the exit handlers, skipping the interpreter's own teardown.

    Tearing down an interpreter that has imported torch, Transformers and onnxruntime takes about a second
    (measured after a BERT-base export: 1.05 s from `main` returning to the process ending, 0.07 s this way; 0.58 s
    for the import line ``import torch, onnx; from transformers import AutoModel`` alone), spent freeing what the
    operating system frees at exit anyway. What a normal exit does that matters still happens: every `atexit`
    handler runs (logging's flush, helper processes stopped, temporary folders removed by their finalizers, file
    locks released), then Python's standard streams and the C library's are flushed; a failed flush of stdout
    turns a success into status 120, as Python's own exit does. The files an export writes are closed when
    written. The normal exit is taken when a thread that a normal exit would wait for is still running, or where
    the interpreter has no ``atexit._run_exitfuncs`` (not a documented function).
    """
    import threading

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    waited_for = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if run_exit_handlers is None or waited_for:
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more can be written to it
            if stream is sys.stdout and code == 0:
                code = 120
    with contextlib.suppress(Exception):  # output written by native libraries through C's stdio
        import ctypes

        ctypes.CDLL(None).fflush(None)
    os._exit(code)


def console() -> NoReturn:
    """The ``exporter`` console script and ``python -m exporter``: `main`, then `exit_without_teardown`.

    `main` raising (``--help`` and usage errors exit through argparse's SystemExit) leaves the normal exit."""
    exit_without_teardown(main())
