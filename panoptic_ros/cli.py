"""The ``panoptic-ros`` command: one subcommand per job, each in ``panoptic_ros.commands``.

Every subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Expected failures (missing files, malformed input) raise
:class:`panoptic_ros.errors.UserError`; they are printed as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from panoptic_ros.errors import UserError

# name -> module; imported only when that subcommand runs, so `eval` does not import torch.
COMMANDS = {
    "infer": "panoptic_ros.commands.infer",
    "eval": "panoptic_ros.commands.eval",
    "synth": "panoptic_ros.commands.synth",
    "convert": "panoptic_ros.commands.convert",
    "train": "panoptic_ros.commands.train",
    "demo": "panoptic_ros.commands.demo",
    "export": "panoptic_ros.commands.export",
    "bag": "panoptic_ros.commands.bag",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, path in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(path)
        except ModuleNotFoundError as err:
            if err.name != path:  # a real missing dependency inside the module: surface it
                raise
    return mods


def build_parser(modules: dict[str, object]) -> argparse.ArgumentParser:
    """The argument parser with one subparser per available subcommand."""
    parser = argparse.ArgumentParser(
        prog="panoptic-ros", description="Panoptic segmentation tools of panoptic_ros."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, mod in modules.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``panoptic-ros`` console script; returns the exit code."""
    modules = _available()
    args = build_parser(modules).parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except UserError as err:
        print(f"panoptic-ros {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"panoptic-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
