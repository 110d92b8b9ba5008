"""Command line: ``monodir run | validate | init-config | demo | report``.

Every :class:`monodir.errors.InputError` becomes one line ``monodir: error: <message>`` on
stderr and exit status 2; any other exception keeps its traceback and gives exit status 1.

Examples
--------
::

    monodir init-config my_run.yaml          # commented default config
    monodir validate my_run.yaml             # config + input headers, nothing scheduled
    monodir run my_run.yaml --set directional.fast=true --set cluster.n_workers=2
    python -m monodir run my_run.yaml
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monodir.errors import InputError

__all__ = ["build_parser", "main"]

log = logging.getLogger("monodir")

_PROG = "monodir"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``monodir`` command."""
    from monodir import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Directional local resolution and local anisotropy of cryo-EM maps "
        "(MonoRes + MonoDir), on a laptop or a SLURM cluster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_set(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value (YAML syntax), e.g. --set directional.fast=true; "
            "repeatable",
        )

    p_run = sub.add_parser("run", help="run MonoRes + MonoDir as configured")
    p_run.add_argument("config", type=Path, help="YAML config file")
    add_set(p_run)

    p_val = sub.add_parser(
        "validate", help="check a config and its input files without running anything"
    )
    p_val.add_argument("config", type=Path, help="YAML config file")
    add_set(p_val)

    p_init = sub.add_parser("init-config", help="write a commented default config")
    p_init.add_argument(
        "path", nargs="?", type=Path, default=Path("monodir.yaml"), help="default monodir.yaml"
    )

    p_demo = sub.add_parser("demo", help="run a small synthetic example end to end", add_help=False)
    p_demo.add_argument("args", nargs=argparse.REMAINDER)
    p_vsim = sub.add_parser(
        "validate-sim",
        help="run the validation on simulated half maps with known angular distributions",
        add_help=False,
    )
    p_vsim.add_argument("args", nargs=argparse.REMAINDER)

    p_rep = sub.add_parser("report", help="regenerate tables, figures and report of a run")
    p_rep.add_argument("run_dir", type=Path, help="the run's output directory")
    p_rep.add_argument("args", nargs=argparse.REMAINDER)
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log to whatever ``sys.stderr`` is when a record is emitted.

    The handler is installed once per process; binding it to the stream of that moment
    would send later records to a stream that was only redirected for one call.
    """

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("monodir")
    root.setLevel(level)
    if not any(getattr(h, "_monodir_cli", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        handler._monodir_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False
    # Dask is chatty at INFO; keep its warnings.
    for name in ("distributed", "dask_jobqueue", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _cmd_init_config(args: argparse.Namespace) -> int:
    from monodir.config import default_config_yaml

    path: Path = args.path
    if path.exists():
        raise InputError(f"{path} already exists; choose another path or remove it first") from None
    if not path.parent.exists():
        raise InputError(f"directory {path.parent} does not exist")
    # exclusive create: never overwrite, even in a race
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(default_config_yaml())
    except FileExistsError:
        raise InputError(f"{path} already exists; choose another path or remove it first") from None
    print(f"wrote {path}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from monodir.config import load_config
    from monodir.pipeline.runner import load_inputs

    config = load_config(args.config, args.overrides)
    inputs = load_inputs(config)
    print(f"config OK: {args.config}")
    for line in inputs.describe():
        print(f"  {line}")
    print(f"  output directory: {config.output.directory}")
    print(f"  cluster: {config.cluster.kind}")
    return 0


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from monodir.config import load_config
    from monodir.pipeline.runner import run_pipeline

    config = load_config(args.config, args.overrides)
    out = run_pipeline(config, [_PROG, *argv])
    print(f"done: {out}")
    return 0


def _optional_module(name: str, command: str) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
            raise InputError(
                f"'monodir {command}' is not available: module {name} is missing"
            ) from None
        raise


def _cmd_demo(args: argparse.Namespace) -> int:
    """Dispatch to :mod:`monodir.demo`.

    The module either exposes ``add_args(parser)`` and ``main(args)`` (parsed namespace),
    or ``main(argv)`` taking the remaining command-line words.
    """
    mod = _optional_module("monodir.demo", "demo")
    rest = list(args.args)
    if hasattr(mod, "add_args"):
        parser = argparse.ArgumentParser(prog=f"{_PROG} demo", description=mod.__doc__)
        mod.add_args(parser)
        result = mod.main(parser.parse_args(rest))
    elif hasattr(mod, "main"):
        result = mod.main(rest)
    else:
        raise InputError("'monodir demo' is not available: monodir.demo has no main()")
    return int(result or 0)


def _cmd_report(args: argparse.Namespace) -> int:
    """Regenerate the outputs of a run.

    Dispatches to :mod:`monodir.report.regenerate` when it exists (``regenerate(run_dir)``,
    or ``main([run_dir, *rest])`` when extra arguments are given); otherwise rewrites every
    output from the run store with :func:`monodir.pipeline.runner.regenerate_outputs`.
    """
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    rest = list(args.args)
    try:
        mod = _optional_module("monodir.report.regenerate", "report")
    except InputError:
        mod = None
    if mod is not None and hasattr(mod, "regenerate") and not rest:
        result = mod.regenerate(run_dir)
        return result if isinstance(result, int) else 0
    if mod is not None and hasattr(mod, "main"):
        return int(mod.main([str(run_dir), *rest]) or 0)
    if rest:
        raise InputError(f"monodir report: unexpected arguments {' '.join(rest)}")
    from monodir.pipeline.runner import regenerate_outputs

    written = regenerate_outputs(run_dir)
    print(f"wrote {len(written)} files in {run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``monodir`` command line; return the exit status.

    Parameters
    ----------
    argv
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for an :class:`InputError` (one line on stderr), 1 for any other
        error (traceback on stderr), 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command in ("demo", "report", "validate-sim"):
            args.args = [*extra, *args.args]  # sub-commands with their own options
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)
    _setup_logging(args.verbose, args.quiet)
    try:
        if args.command == "run":
            return _cmd_run(args, argv)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "init-config":
            return _cmd_init_config(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "validate-sim":
            from monodir.validation import main as validation_main

            return int(validation_main(list(args.args)) or 0)
        if args.command == "report":
            return _cmd_report(args)
        parser.error(f"unknown command {args.command}")  # pragma: no cover
    except InputError as exc:
        message = " ".join(str(exc).split())
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    return 0  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
