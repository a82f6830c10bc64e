"""The `i2p-multihome` command: each subcommand lives beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules that contribute subcommands through a `register_cli(subparsers)` function.
# Each sets `func` on its parser: a callable taking the parsed namespace, returning an exit code.
_COMMAND_MODULES = (
    "i2p_multihome.standalone",
    "i2p_multihome.k8s.main",
)


def build_parser(
    modules: Sequence[str] = _COMMAND_MODULES,
    prog: str = "i2p-multihome",
    description: str = "Host one I2P Destination on several routers with one merged LeaseSet.",
) -> argparse.ArgumentParser:
    """A command whose subcommands the `modules` register (the test bed's command too)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in modules:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    from i2p_multihome.logs import configure_logging

    configure_logging(getattr(logging, args.log_level))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
