"""The testnet's network: which routers exist, their addresses and names, and the namespaces,
veths and bridge that connect them, made and removed with `ip`.

Each router runs in its own namespace with a veth onto one bridge in the root namespace;
addresses come from 198.18.0.0/15 (the only non-public range i2pd 2.45.1 accepts NTCP2 peers
from). The bridge has an address too, so the balancer under test, running in the root
namespace, reaches every router's I2CP port and web console. Nothing is routed anywhere else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from i2p_multihome.logs import fields

log = logging.getLogger(__name__)

# Where every router listens, on its own address.
I2CP_PORT = 7654
CONSOLE_PORT = 7070
NTCP2_PORT = 20000
SAM_PORT = 7656
# i2pd 2.45.1 has no setting for the SAM UDP port: it is always the TCP port less one
# (SAMBridge's constructor, SAM.cpp: `m_DatagramEndpoint (address, port-1)`).
SAM_UDP_PORT = SAM_PORT - 1

NAME_PREFIX = "i2pmh"
TESTNET_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
STATE_VERSION = 1


class TestnetError(Exception):
    """A testnet operation failed; the message says what to do about it."""

    __test__ = False  # a name pytest would otherwise try to collect


@dataclasses.dataclass(frozen=True)
class TestnetRouter:
    """One router of the testnet, as the balancer under test and the tests see it."""

    __test__ = False

    name: str
    address: str
    floodfill: bool
    namespace: str
    datadir: Path

    @property
    def i2cp(self) -> tuple[str, int]:
        return (self.address, I2CP_PORT)

    @property
    def sam(self) -> tuple[str, int]:
        """The SAM bridge's TCP port (commands and streams)."""
        return (self.address, SAM_PORT)

    @property
    def sam_udp(self) -> tuple[str, int]:
        """The SAM bridge's UDP port (datagrams to send)."""
        return (self.address, SAM_UDP_PORT)

    @property
    def console(self) -> str:
        return f"http://{self.address}:{CONSOLE_PORT}/"

    def to_json(self) -> dict[str, Any]:
        """The shape the CLI prints: i2cp and sam as ``host:port``, console as a URL."""
        return {
            "name": self.name,
            "address": self.address,
            "i2cp": f"{self.address}:{I2CP_PORT}",
            "sam": f"{self.address}:{SAM_PORT}",
            "console": self.console,
            "floodfill": self.floodfill,
        }


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``up`` made, persisted so any later process can stop, start or remove it."""

    testnet_id: str
    subnet: ipaddress.IPv4Network
    directory: Path
    routers: tuple[TestnetRouter, ...]

    @property
    def bridge(self) -> str:
        return f"{self.link_prefix}br"

    @property
    def link_prefix(self) -> str:
        return f"{NAME_PREFIX}{self.testnet_id}-"

    @property
    def namespace_prefix(self) -> str:
        return f"{NAME_PREFIX}-{self.testnet_id}-"

    @property
    def bridge_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def veth(self, router: TestnetRouter) -> str:
        return f"{self.link_prefix}{router.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "id": self.testnet_id,
            "subnet": str(self.subnet),
            "routers": [
                {"name": r.name, "address": r.address, "floodfill": r.floodfill}
                for r in self.routers
            ],
        }

    @classmethod
    def from_json(cls, directory: Path, state_file: Path, data: dict[str, Any]) -> Plan:
        if data.get("version") != STATE_VERSION:
            raise TestnetError(
                f"{state_file} has an unknown format; remove it and any "
                f"leftover '{NAME_PREFIX}-*' namespaces by hand"
            )
        try:
            testnet_id = str(data["id"])
            return cls(
                testnet_id=testnet_id,
                subnet=ipaddress.IPv4Network(data["subnet"]),
                directory=directory,
                routers=tuple(
                    _router(directory, testnet_id, r["name"], r["address"], bool(r["floodfill"]))
                    for r in data["routers"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TestnetError(f"{state_file} is damaged ({exc!r})") from exc


def _router(directory: Path, testnet_id: str, name: str, address: str, ff: bool) -> TestnetRouter:
    return TestnetRouter(
        name=name,
        address=address,
        floodfill=ff,
        namespace=f"{NAME_PREFIX}-{testnet_id}-{name}",
        datadir=directory / "routers" / name,
    )


def plan(directory: Path, routers: int, floodfills: int) -> Plan:
    """Pick an id and a /24 no other testnet on this host uses, and name every router."""
    existing = existing_namespaces()
    while True:
        testnet_id = secrets.token_hex(2)
        if not any(ns.startswith(f"{NAME_PREFIX}-{testnet_id}-") for ns in existing):
            break
    used = _used_subnets()
    free = [s for s in TESTNET_RANGE.subnets(new_prefix=24) if str(s) not in used]
    if not free:
        raise TestnetError("every /24 of 198.18.0.0/15 is in use; run `testnet down` on old ones")
    subnet = free[secrets.randbelow(len(free))]
    names = [f"ff{i + 1}" for i in range(floodfills)]
    names += [f"r{i + 1}" for i in range(routers - floodfills)]
    return Plan(
        testnet_id=testnet_id,
        subnet=subnet,
        directory=directory,
        routers=tuple(
            _router(
                directory, testnet_id, name, str(subnet.network_address + 2 + i), i < floodfills
            )
            for i, name in enumerate(names)
        ),
    )


# --------------------------------------------------------------------------- host commands


def check_host() -> Path:
    """Fail early, with the fix, when this host cannot run a testnet; return i2pd's path.

    Both commands are looked up on PATH only: a testnet that finds them elsewhere would run
    where the user's own shell cannot.
    """
    if os.geteuid() != 0:
        raise TestnetError("the testnet needs root for network namespaces; run it as root")
    if shutil.which("ip") is None:
        raise TestnetError(
            "`ip` not found on PATH; install iproute2 (apt-get install iproute2) "
            "or add its directory to PATH"
        )
    i2pd = shutil.which("i2pd")
    if i2pd is None:
        raise TestnetError(
            "i2pd not found on PATH; install Debian's i2pd (apt-get install i2pd) "
            "or add its directory to PATH"
        )
    return Path(i2pd)


def run(*args: str) -> str:
    """Run a host command; its stdout, or TestnetError quoting its stderr."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TestnetError(f"`{' '.join(args)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise TestnetError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def existing_namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def namespace_pids(namespace: str) -> set[int]:
    return {int(p) for p in run("ip", "netns", "pids", namespace).split()}


def _existing_links() -> list[str]:
    """Link names in the root namespace (without the ``@peer`` suffix of veths)."""
    return [entry["ifname"] for entry in json.loads(run("ip", "-j", "link", "show") or "[]")]


def _used_subnets() -> set[str]:
    """The /24s of 198.18.0.0/15 that already carry an address in the root namespace."""
    used: set[str] = set()
    for entry in json.loads(run("ip", "-j", "-4", "addr", "show") or "[]"):
        for info in entry.get("addr_info", []):
            net = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if not net.overlaps(TESTNET_RANGE):
                continue
            if net.prefixlen >= 24:
                used.add(str(net.supernet(new_prefix=24)))
            else:
                used.update(str(s) for s in net.subnets(new_prefix=24))
    return used


def _disable_ipv6(link: str, namespace: str | None = None) -> None:
    """Keep IPv6 link-local chatter off our links: the testnet is IPv4 only."""
    if not Path("/proc/sys/net/ipv6").is_dir():
        return  # a kernel without IPv6 sends none
    setting = f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6"
    if namespace is None:
        Path(setting).write_text("1")
    else:
        run("ip", "netns", "exec", namespace, "sh", "-c", f"echo 1 > {setting}")


def fence_testnet_range() -> None:
    """Make 198.18.0.0/15 unreachable from the root namespace except through a testnet's
    own bridge (whose /24 route is more specific): a client left running after its testnet
    is gone must fail at once, not follow the default route off this machine. The route is
    left in place on `down`, so the fence never has a gap."""
    if run("ip", "-4", "route", "show", "exact", str(TESTNET_RANGE)).strip():
        return
    run("ip", "-4", "route", "add", "unreachable", str(TESTNET_RANGE))
    log.info("testnet range fenced", extra=fields(route=f"unreachable {TESTNET_RANGE}"))


def create_network(plan: Plan) -> None:
    """The bridge, and for each router a namespace whose eth0 is a veth onto the bridge."""
    fence_testnet_range()
    run("ip", "link", "add", plan.bridge, "type", "bridge")
    _disable_ipv6(plan.bridge)
    run("ip", "addr", "add", f"{plan.bridge_address}/24", "dev", plan.bridge)
    run("ip", "link", "set", plan.bridge, "up")
    for router in plan.routers:
        ns, veth = router.namespace, plan.veth(router)
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _disable_ipv6(veth)
        _disable_ipv6("eth0", ns)
        run("ip", "link", "set", veth, "master", plan.bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{router.address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
    log.info(
        "testnet network created",
        extra=fields(bridge=plan.bridge, subnet=plan.subnet, routers=len(plan.routers)),
    )


def remove_network(plan: Plan, namespaces: list[str]) -> None:
    """Remove the plan's links and the given namespaces (their processes already ended)."""
    # Links first: deleting a veth end removes its peer at once, whereas a deleted
    # namespace releases its veths later, in the kernel's own time.
    for link in _existing_links():
        if link.startswith(plan.link_prefix):
            run("ip", "link", "del", link)
    for ns in namespaces:
        run("ip", "netns", "del", ns)
