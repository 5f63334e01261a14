"""Command line: ``python -m dlum <command> …`` (prepare, and the commands registered below).

Each command is a :class:`Command`: a name, a one-line help, a function that adds its arguments
to an ``argparse`` parser and a function that runs it. Adding one is a single :func:`register`
call; heavy imports (torch, the data readers) happen inside ``run`` so that ``--help`` is instant.

Errors meant for a person (:class:`dlum.errors.DLUMError`) are printed to stderr as
``dlum <command>: error: …`` and the exit status is 2; no traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dlum.errors import DLUMError

__all__ = ["COMMANDS", "Command", "build_parser", "main", "register"]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` does the work
    and returns an exit status (``None`` = 0)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


#: Registered commands, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add (or replace) a subcommand."""
    COMMANDS[command.name] = command
    return command


# ------------------------------------------------------------------------------------- prepare
def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    from dlum.data.cache import CACHE_SIZE

    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="public data folder laid out like ../shared/data (default: $DLUM_DATA_DIR, "
        "else ../shared/data beside the repository)",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, pairs and simulated MG BI-RADS (default 0)")
    parser.add_argument(
        "--cache-size",
        type=int,
        default=CACHE_SIZE,
        metavar="PX",
        help=f"side of the cached crops in pixels (default {CACHE_SIZE})",
    )
    parser.add_argument("--no-crops", action="store_true", help="write the tables only, no crop cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _prepare_run(args: argparse.Namespace) -> int:
    from dlum.data.cache import format_summary, prepare
    from dlum.data.public import default_data_dir
    from dlum.errors import InputError

    data = args.data or default_data_dir()
    if data is None:
        raise InputError(
            "no data folder: pass --data DIR (a folder laid out like ../shared/data) or set "
            "DLUM_DATA_DIR"
        )
    summary = prepare(
        data, args.out, seed=args.seed, size=args.cache_size, crops=not args.no_crops,
        progress=not args.quiet,
    )
    print(format_summary(summary))
    print(f"Wrote {args.out}")
    return 0


register(
    Command(
        name="prepare",
        help="build the public pseudo-paired cohort table and its crop cache",
        description="Build cohort.csv (BUS-BRA + BrEaST-Lesions-USG ultrasound paired with "
        "mini-MIAS mammography of the same pathology inside each split: pseudo-pairs, NOT "
        "same-patient pairs), lesions.csv, a compact crop cache and prepare_summary.json.",
        add_arguments=_prepare_arguments,
        run=_prepare_run,
    )
)


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from dlum import __version__

    parser = argparse.ArgumentParser(
        prog="python -m dlum",
        description="DL-UM: deep-learning fusion of breast ultrasound and mammography "
        "(Xu et al., Breast Cancer Research 2025). For research use only.",
    )
    parser.add_argument("--version", action="version", version=f"dlum {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a DLUMError, with its message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = command.run(args)
    except DLUMError as err:
        print(f"dlum {command.name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dlum {command.name}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)
