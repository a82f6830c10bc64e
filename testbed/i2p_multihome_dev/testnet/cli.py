"""`i2p-multihome-dev testnet up|down|status|stop-router|start-router --dir DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from i2p_multihome_dev.testnet.lifecycle import COMMAND, Testnet
from i2p_multihome_dev.testnet.network import TestnetError, TestnetRouter


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "testnet", help="run a private i2pd testnet in network namespaces (root only)"
    )
    commands = parser.add_subparsers(dest="testnet_command", required=True)

    up = commands.add_parser("up", help="create the testnet and wait until tunnels are built")
    up.add_argument("--routers", type=int, default=9)
    up.add_argument("--floodfills", type=int, default=3)
    up.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    up.set_defaults(
        func=_cli(lambda t, a: _print_routers(t.up(a.routers, a.floodfills, a.timeout)))
    )

    stop = commands.add_parser("stop-router", help="SIGKILL one router (keeps its identity)")
    stop.add_argument("name")
    stop.set_defaults(func=_cli(lambda t, a: t.stop_router(a.name)))

    start = commands.add_parser("start-router", help="restart a stopped router")
    start.add_argument("name")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    start.set_defaults(func=_cli(lambda t, a: t.start_router(a.name, a.timeout)))

    down = commands.add_parser("down", help="remove every process, namespace and link")
    down.set_defaults(func=_cli(lambda t, a: t.down()))

    status = commands.add_parser("status", help="print the routers as JSON")
    status.set_defaults(func=_cli(lambda t, a: _print_routers(t.routers)))

    for sub in (up, stop, start, down, status):
        sub.add_argument("--dir", required=True, type=Path, help="testnet state directory")


def _print_routers(routers: list[TestnetRouter]) -> None:
    print(json.dumps({"routers": [r.to_json() for r in routers]}, indent=2))


def _cli(
    action: Callable[[Testnet, argparse.Namespace], None],
) -> Callable[[argparse.Namespace], int]:
    """Run one subcommand; a TestnetError becomes one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            action(Testnet(args.dir), args)
        except (TestnetError, OSError) as exc:
            print(f"{COMMAND}: {exc}", file=sys.stderr)
            return 2
        return 0

    return run
