"""i2pd client and server tunnels on testnet routers, added and removed while they run.

Each tunnel is one file, ``tunnels.d/<name>.conf`` in the router's datadir, holding one
section. The router re-reads them on the console's reload_tunnels_config command, which it
carries out before answering (ClientContext::ReloadConfig), and stops the tunnels whose
section is gone. What i2pd 2.45.1 does besides, and what this module does about it:

- Every tunnel gets a keys file of its own (``tunnel-<name>.dat`` in the datadir, Ed25519,
  written by i2pd when missing). With transient keys a reload gives every client tunnel a
  new destination and restarts it (LoadPrivateKeys makes new keys for "transient",
  ClientContext.cpp 261-267, 690-700), so adding one tunnel would re-key all the others.
- A reload never starts a udpserver tunnel: its isUpdated flag is not initialised
  (UDPTunnel.h 122, UDPTunnel.cpp 146-151) and the reload's cleanup drops it at once
  (VisitTunnels, ClientContext.cpp 1004-1013). One present at start stays listed over later
  reloads, but each reload stops its destination, which the tunnel never Acquire()s
  (ReloadConfig's "delete unused destinations", ClientContext.cpp 244-255). So every change
  to a router that has, or gets, a udpserver tunnel is applied by restarting the router: its
  identity and keys files stay, so each tunnel comes back with its address, but every SAM
  and I2CP session on that router ends.
- A udpserver sends to its backend from a socket bound to ``address``, by default 127.0.0.1
  mapped to a loopback address per peer, which cannot reach a backend in the root namespace;
  it is set to the router's own address (ClientContext.cpp 756-766, UDPTunnel.cpp 78-86).
- A client tunnel whose destination has no tunnels yet fails its connections at once (a
  LeaseSet request needs a ready destination): adding one waits until it has tunnels, and
  ``connecttimeout`` makes i2pd itself wait for readiness later (I2PService::CreateStream).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.encoding import hash_from_b32
from i2p_multihome.wire.structures import SIG_TYPE_ED25519, Destination
from i2p_multihome_dev.polling import NotYet
from i2p_multihome_dev.testnet.console import (
    ConsoleI2PTunnel,
    ConsoleParseError,
    fetch_i2p_tunnels,
    fetch_local_destination,
)
from i2p_multihome_dev.testnet.network import TestnetError, TestnetRouter

TunnelType = Literal["client", "server", "udpserver"]
TUNNEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
TUNNELS_DIR = "tunnels.d"
# Seconds i2pd waits for a client tunnel's destination to be ready before giving up on a
# connection made to it.
CLIENT_CONNECT_TIMEOUT_S = 60
_CONSOLE_KIND: dict[TunnelType, str] = {
    "client": "client",
    "server": "server",
    "udpserver": "server_forward",
}


def check_name(name: str) -> str:
    """Tunnel names become ini section and file names: lowercase letters, digits, '-'."""
    if not TUNNEL_NAME.fullmatch(name):
        raise TestnetError(f"tunnel name {name!r} must match {TUNNEL_NAME.pattern}")
    return name


def keys_file(name: str) -> str:
    return f"tunnel-{check_name(name)}.dat"


def tunnel_section(name: str, settings: Mapping[str, str]) -> str:
    """One tunnels.conf section. i2pd reads it with boost's ini parser: one ``key = value``
    a line, no quoting, so a value with a line break or a leading '[' cannot be written."""
    lines = [f"[{check_name(name)}]"]
    for key, value in settings.items():
        if not re.fullmatch(r"[A-Za-z0-9._]{1,64}", key):  # i2pd reads explicitPeers
            raise TestnetError(f"tunnel setting name {key!r} is not one i2pd reads")
        if any(c in value for c in "\r\n[];#") or value != value.strip():
            raise TestnetError(f"tunnel setting {key} = {value!r} cannot be written")
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def client_tunnel_settings(
    name: str, address: str, port: int, target_b32: str, options: Mapping[str, str]
) -> dict[str, str]:
    """A TCP client tunnel: connections to address:port become streams to the target."""
    label = target_b32.removesuffix(".b32.i2p")
    try:
        hash_from_b32(label)
    except WireError as exc:
        raise TestnetError(str(exc)) from None
    return {
        "type": "client",
        "address": address,
        "port": str(port),
        "destination": f"{label}.b32.i2p",
        "keys": keys_file(name),
        "signaturetype": str(SIG_TYPE_ED25519),
        "connecttimeout": str(CLIENT_CONNECT_TIMEOUT_S),
        **options,
    }


def server_tunnel_settings(
    name: str,
    tunnel_type: Literal["server", "udpserver"],
    router_address: str,
    backend: tuple[str, int],
    options: Mapping[str, str],
) -> dict[str, str]:
    """A destination the router hosts itself (single-homed), forwarding to the backend."""
    settings = {
        "type": tunnel_type,
        "host": backend[0],
        "port": str(backend[1]),
        "keys": keys_file(name),
        "signaturetype": str(SIG_TYPE_ED25519),
    }
    if tunnel_type == "udpserver":
        settings["address"] = router_address
    return {**settings, **options}


def read_keys_b32(path: Path) -> str:
    """The b32 address of an i2pd keys file (it starts with the destination)."""
    try:
        return Destination.read(Reader(path.read_bytes())).b32
    except (OSError, WireError) as exc:
        raise TestnetError(f"cannot read the destination in {path}: {exc}") from None


def conf_path(router: TestnetRouter, name: str) -> Path:
    return router.datadir / TUNNELS_DIR / f"{check_name(name)}.conf"


def tunnel_names(router: TestnetRouter) -> list[str]:
    """The tunnels added to this router (their files in tunnels.d)."""
    return sorted(p.stem for p in (router.datadir / TUNNELS_DIR).glob("*.conf"))


def tunnel_type(router: TestnetRouter, name: str) -> TunnelType:
    text = conf_path(router, name).read_text()
    match = re.search(r"^type = (client|server|udpserver)$", text, re.MULTILINE)
    if match is None:
        raise TestnetError(f"{conf_path(router, name)} names no tunnel type")
    found: TunnelType = match.group(1)  # type: ignore[assignment]
    return found


def has_udp_server(router: TestnetRouter) -> bool:
    """Whether a change to this router's tunnels must restart it (see the module notes)."""
    return any(tunnel_type(router, name) == "udpserver" for name in tunnel_names(router))


def running_tunnel(router: TestnetRouter, name: str, kind: TunnelType) -> ConsoleI2PTunnel | None:
    """The tunnel as the router's console lists it, or None."""
    wanted = _CONSOLE_KIND[kind]
    for tunnel in fetch_i2p_tunnels(router.console, timeout=5.0):
        if tunnel.name == name and tunnel.kind == wanted:
            return tunnel
    return None


def tunnel_listed(router: TestnetRouter, name: str, kind: TunnelType) -> bool | NotYet:
    try:
        return running_tunnel(router, name, kind) is not None or NotYet("not listed")
    except (OSError, ConsoleParseError) as exc:
        return NotYet(f"console: {exc}")


def tunnel_gone(router: TestnetRouter, name: str, kind: TunnelType) -> bool | NotYet:
    try:
        return running_tunnel(router, name, kind) is None or NotYet("still listed")
    except (OSError, ConsoleParseError) as exc:
        return NotYet(f"console: {exc}")


def destination_ready(router: TestnetRouter, b32: str) -> bool | NotYet:
    """Whether the router hosts `b32` with an established inbound and outbound tunnel."""
    try:
        pool = fetch_local_destination(router.console, b32, timeout=5.0)
    except (OSError, ConsoleParseError) as exc:
        return NotYet(f"console: {exc}")
    if pool is None:
        return NotYet(f"{router.name} does not host {b32}")
    inbound = sum(t.state == "established" for t in pool.inbound)
    outbound = sum(t.state == "established" for t in pool.outbound)
    if inbound and outbound:
        return True
    return NotYet(f"{inbound} inbound and {outbound} outbound tunnels established")
