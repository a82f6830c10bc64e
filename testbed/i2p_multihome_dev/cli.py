"""The `i2p-multihome-dev` command: the test bed's subcommands, each beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from i2p_multihome.logs import configure_logging

# Modules that contribute subcommands through a `register_cli(subparsers)` function.
# Each sets `func` on its parser: a callable taking the parsed namespace, returning an exit code.
_COMMAND_MODULES = (
    "i2p_multihome_dev.testnet",
    "i2p_multihome_dev.cluster",
    "i2p_multihome_dev.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i2p-multihome-dev",
        description="The test bed of i2p-multihome: a private i2pd testnet, a local "
        "Kubernetes control plane, and the demo that runs the operator on both.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(logging, args.log_level))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
