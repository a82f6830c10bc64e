"""A private I2P testnet of Debian i2pd routers, one network namespace each.

Tests and the demo need real routers that talk only to each other. `network` plans the
routers and makes their namespaces and links, `i2pd` configures and runs each router,
`lifecycle` brings the whole testnet up and down and waits until it builds tunnels,
`console` reads what the routers' web consoles show, and `cli` is `i2p-multihome-dev testnet`.
"""

from i2p_multihome_dev.testnet.console import (
    ConsoleDestination,
    ConsoleLease,
    ConsoleLeaseSet,
    ConsoleParseError,
    ConsoleStatus,
    ConsoleTransitTunnel,
    ConsoleTunnel,
    ConsoleTunnelPool,
    fetch_i2cp_local_destination,
    fetch_leasesets,
    fetch_local_destinations,
    fetch_router_status,
    fetch_transit_tunnels,
    fetch_tunnels,
    parse_console_time,
    parse_i2cp_local_destination,
    parse_leasesets,
    parse_local_destinations,
    parse_router_status,
    parse_transit_tunnels,
    parse_tunnels,
)
from i2p_multihome_dev.testnet.i2pd import NETID, router_identity_hash
from i2p_multihome_dev.testnet.lifecycle import Testnet, not_ready_reason
from i2p_multihome_dev.testnet.network import (
    CONSOLE_PORT,
    I2CP_PORT,
    NTCP2_PORT,
    TESTNET_RANGE,
    TestnetError,
    TestnetRouter,
    check_host,
)

__all__ = [
    "CONSOLE_PORT",
    "I2CP_PORT",
    "NETID",
    "NTCP2_PORT",
    "TESTNET_RANGE",
    "ConsoleDestination",
    "ConsoleLease",
    "ConsoleLeaseSet",
    "ConsoleParseError",
    "ConsoleStatus",
    "ConsoleTransitTunnel",
    "ConsoleTunnel",
    "ConsoleTunnelPool",
    "Testnet",
    "TestnetError",
    "TestnetRouter",
    "check_host",
    "fetch_i2cp_local_destination",
    "fetch_leasesets",
    "fetch_local_destinations",
    "fetch_router_status",
    "fetch_transit_tunnels",
    "fetch_tunnels",
    "not_ready_reason",
    "parse_console_time",
    "parse_i2cp_local_destination",
    "parse_leasesets",
    "parse_local_destinations",
    "parse_router_status",
    "parse_transit_tunnels",
    "parse_tunnels",
    "router_identity_hash",
]
