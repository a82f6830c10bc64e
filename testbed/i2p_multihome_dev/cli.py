"""The `i2p-multihome-dev` command: the test bed's subcommands, each beside the code it
drives, on the product's command machinery (logging, exit codes)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from i2p_multihome import cli

_COMMAND_MODULES = (
    "i2p_multihome_dev.testnet.cli",
    "i2p_multihome_dev.cluster",
    "i2p_multihome_dev.demo",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.build_parser(
        _COMMAND_MODULES,
        prog="i2p-multihome-dev",
        description="The test bed of i2p-multihome: a private i2pd testnet, a local "
        "Kubernetes control plane, and the demo that runs the operator on both.",
    )
    return cli.main(argv, parser)


if __name__ == "__main__":
    sys.exit(main())
