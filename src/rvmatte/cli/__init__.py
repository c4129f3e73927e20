"""The ``rvmatte`` command: thin argument parsing over the Python API.

Each subcommand lives in its own module with ``register(subparsers)`` that adds a parser and
sets ``func`` (called with the parsed namespace, returns an exit code). Modules whose optional
dependencies are missing are skipped. The options subcommands share (the model options,
``-o/--output``, ``-q/--quiet``) and the help formatter are declared once, in
:mod:`rvmatte.cli.options`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

# OpenMP workers that sleep instead of spinning when idle: on small or busy machines spinning
# threads starve the decode/encode threads and each other (measured 15-20x slower under load,
# docs/SPEED.md). Must be set before torch / onnxruntime load their OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import RvmatteError

# Subcommand modules, in the order they appear in --help.
SUBCOMMANDS = ("convert", "demo", "evaluate", "benchmark", "diagnose", "train", "export",
               "serve", "live")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    from .options import Parser

    parser = Parser(prog="rvmatte", description="Robust human video matting.")
    parser.add_argument("--version", action="version", version=f"rvmatte {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("rvmatte.cli."):
                continue  # subcommand not implemented in this build
            raise
        mod.register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM (``kill``, ``docker stop``, a service manager) while a command runs: unwinds
    like Ctrl-C, so a conversion keeps its checkpoint for ``--resume``, leaves no partial
    output and its helpers (encoder processes, temporary files) are cleaned up."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except RvmatteError as e:
        print(f"rvmatte: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rvmatte: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        hint = " (a conversion continues with --resume)" if args.command == "convert" else ""
        print(f"rvmatte: terminated{hint}", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
