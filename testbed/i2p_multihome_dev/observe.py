"""A destination as the I2P network sees it: what the testnet's floodfills hold, whether a
client could use it, and which router built each lease, judged as strictly as a client would
and checked against the routers' own consoles rather than taken from the balancer's word.

Serving: i2pd clients pick a lease with more than 51 s left (LEASE_ENDDATE_THRESHOLD in
i2pd's LeaseSet.h; I2CP.cpp and Streaming.cpp ask for leases "without threshold" first),
while a floodfill's console lists leases until 51 s after their end. So a floodfill serves
the destination only while its LeaseSet holds a lease with more than 51 s left.

Owners: the balancer's status says which router each lease (gateway, tunnel id) came from.
The routers' consoles say it independently. A router's page of an I2CP destination lists
its inbound tunnels, each with its hops abbreviated to 4 base64 characters, the gateway
first; a zero-hop tunnel lists none, and its lease names the router itself and the tunnel's
own id. The gateway's transit page lists the ids of the tunnels it is the gateway of, which
is the id a lease names. So a lease (G, T) is owned by each hosting router with an inbound
tunnel whose first hop is G's abbreviation (zero-hop: G is the router and T the tunnel's
id), and it is real when G lists a gateway transit tunnel T. Abbreviations can match
several hosting routers' tunnels through the same gateway: then all of them are owners.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard, TypeVar

from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.processes import started_at
from i2p_multihome_dev.testnet import (
    ConsoleLease,
    ConsoleLeaseSet,
    ConsoleTunnelPool,
    Testnet,
    TestnetError,
    fetch_i2cp_local_destination,
    fetch_leasesets,
    fetch_local_destinations,
    fetch_transit_tunnels,
)
from i2p_multihome_dev.testnet.i2pd import i2pd_pid


class _Session(Protocol):
    @property
    def b32(self) -> str: ...

    async def close(self) -> None: ...


SessionT = TypeVar("SessionT", bound=_Session)

LeaseKey = tuple[str, int]  # (gateway identity hash in I2P base64, tunnel id at the gateway)

# A client does not use a lease this close to its end (i2pd's LEASE_ENDDATE_THRESHOLD).
LEASE_END_MARGIN_S = 51.0
# An i2pd lease ends 600 s after its tunnel was built (TUNNEL_EXPIRATION_TIMEOUT 660 s less
# TUNNEL_EXPIRATION_THRESHOLD 60 s) and up to 2 s later, so leases of one LeaseSet differ.
LEASE_LIFETIME_S = 600.0
_BUILD_SLACK_S = 5.0
# Owners are judged only for leases with more than this left: the router drops the tunnel
# from its pool 60 s after the lease's end, or earlier once two tunnel tests fail, while
# floodfills list a lease until 51 s after its end. A lease near its end may have lost its
# tunnel while a floodfill still holds it.
JUDGE_MARGIN_S = 60.0
_ABBREVIATION = 4  # characters of an identity hash the console shows for a hop


class LeaseOwnerError(RuntimeError):
    """A floodfill holds a lease no router's console accounts for, or one whose owner by the
    consoles is not the router the balancer names."""


def serving(lease_set: ConsoleLeaseSet | None, now: float) -> TypeGuard[ConsoleLeaseSet]:
    """Whether a floodfill holding `lease_set` serves the destination at `now` (epoch s): a
    LeaseSet the router accepts, with a lease a client would still use."""
    return (
        lease_set is not None
        and not lease_set.expired
        and not lease_set.invalid
        and any(usable(lease, now) for lease in lease_set.leases)
    )


def usable(lease: ConsoleLease, now: float) -> bool:
    return lease.end - now > LEASE_END_MARGIN_S


def floodfill_views(testnet: Testnet, b32: str) -> dict[str, ConsoleLeaseSet | None]:
    """Each floodfill's stored LeaseSet for destination `b32` (None: it holds none)."""
    label = b32.removesuffix(".b32.i2p")
    views: dict[str, ConsoleLeaseSet | None] = {}
    for router in testnet.routers:
        if router.floodfill:
            found = [ls for ls in fetch_leasesets(router.console) if ls.b32 == label]
            views[router.name] = found[0] if found else None
    return views


def lease_keys(lease_set: ConsoleLeaseSet | None) -> set[LeaseKey]:
    return set() if lease_set is None else {(x.gateway, x.tunnel_id) for x in lease_set.leases}


@dataclasses.dataclass(frozen=True)
class RouterConsole:
    """One router's side of a destination, read from its console at one look."""

    name: str
    identity: str  # identity hash in I2P base64
    started: float | None  # when its i2pd started (epoch s); None: not running
    answered: bool
    pools: tuple[ConsoleTunnelPool, ...]  # the destination's I2CP sessions there

    def could_show(self, built: float) -> bool:
        """Whether this router's console could list a tunnel built at `built`: it answers,
        and its i2pd already ran then (a restarted router has lost its old tunnels)."""
        return self.answered and self.started is not None and self.started < built


@dataclasses.dataclass(frozen=True)
class Attribution:
    """Which routers can have built one lease, by the routers' consoles."""

    owners: frozenset[str]
    # The consoles accounted for the lease completely: every router that could show it did,
    # the owners list it, and its gateway carries it (or it is zero-hop, matched exactly).
    verified: bool
    zero_hop: bool = False


def attribute(
    lease: ConsoleLease,
    consoles: Sequence[RouterConsole],
    gateway_tunnels: Callable[[str, float], frozenset[int] | None],
    without_console: frozenset[str] = frozenset(),
) -> Attribution:
    """The routers owning `lease`, judged from `consoles`.

    `gateway_tunnels(identity, built)` is the set of tunnel ids the router with that identity
    is the gateway of, or None when it cannot tell for a tunnel built at `built` (down, or
    restarted since). `without_console` are routers of the destination no console can speak
    for (a Java router): a lease no console accounts for is theirs, unchecked.

    Raises LeaseOwnerError when no router can own the lease, or its gateway lists no such
    tunnel: a lease no router built.
    """
    key = (lease.gateway, lease.tunnel_id)
    built = lease.end - LEASE_LIFETIME_S - _BUILD_SLACK_S
    owners = set()
    zero_hop = False
    for console in consoles:
        for pool in console.pools:
            for tunnel in pool.inbound:
                if tunnel.hops and tunnel.hops[0] == lease.gateway[:_ABBREVIATION]:
                    owners.add(console.name)
                elif (
                    not tunnel.hops
                    and lease.gateway == console.identity
                    and lease.tunnel_id == tunnel.tunnel_id
                ):
                    owners.add(console.name)
                    zero_hop = True
    # Down, or restarted since the tunnel was built: any of these may have built it.
    blind = {c.name for c in consoles if not c.could_show(built)}
    if not owners:
        if not blind and not without_console:
            raise LeaseOwnerError(
                f"a floodfill holds lease {_show(key)} (ends {lease.end_date}) and no "
                "router's console lists an inbound tunnel of this destination through "
                "that gateway"
            )
        return Attribution(frozenset(blind | without_console), verified=False)
    if blind:
        return Attribution(frozenset(owners | blind), verified=False)
    if zero_hop:
        return Attribution(frozenset(owners), verified=True, zero_hop=True)
    carried = gateway_tunnels(lease.gateway, built)
    if carried is None:
        return Attribution(frozenset(owners), verified=False)
    if lease.tunnel_id not in carried:
        raise LeaseOwnerError(
            f"a floodfill holds lease {_show(key)} (ends {lease.end_date}), but its gateway "
            "lists no transit tunnel it is the gateway of with that id"
        )
    return Attribution(frozenset(owners), verified=True)


def check_claim(lease: ConsoleLease, claimed: str | None, attribution: Attribution) -> None:
    """LeaseOwnerError when the balancer names a router the consoles rule out."""
    if claimed is not None and claimed not in attribution.owners:
        raise LeaseOwnerError(
            f"the balancer says {claimed} built lease {_show((lease.gateway, lease.tunnel_id))}, "
            f"the routers' consoles say {', '.join(sorted(attribution.owners))}"
        )


@dataclasses.dataclass
class AttributionCounts:
    """How the leases judged so far were attributed, for a test's or benchmark's report."""

    verified: int = 0  # leases the consoles accounted for completely (each counted once)
    ambiguous: int = 0  # of them, leases more than one hosting router could own
    zero_hop: int = 0  # of them, leases of zero-hop tunnels (matched by id and router)
    unverified: int = 0  # looks at a lease some possible owner or its gateway could not show


class FloodfillWatch:
    """One destination seen from the floodfills, each lease's owner cross-checked.

    `views()` looks at the floodfills; `routers_of()` then names the routers owning a
    LeaseSet's leases, looking at the routers' consoles right after the floodfills (once per
    `views()`, and only while some lease is not yet accounted for). A lease once accounted
    for stays so, as the balancer's status keeps naming routers that died since.
    """

    def __init__(self, testnet: Testnet) -> None:
        self.testnet = testnet
        # Routers of the destination that are no testnet router and have no i2pd console
        # (a Java router): leases no console accounts for are taken to be theirs.
        self.without_console: set[str] = set()
        self.claimed: dict[LeaseKey, str] = {}
        self.last_views: dict[str, ConsoleLeaseSet | None] = {}
        self.counts = AttributionCounts()
        self._b32 = ""
        self._verified: dict[LeaseKey, Attribution] = {}
        self._identities: dict[str, str] = {}  # router name -> identity hash
        self._consoles: list[RouterConsole] | None = None
        self._transit: dict[str, tuple[float | None, frozenset[int] | None]] = {}

    def claim(self, status: Mapping[str, Any]) -> None:
        """Record which router the balancer's status says each lease came from."""
        for tunnel in status.get("tunnels", []):
            self.claimed[(tunnel["gateway"], tunnel["tunnelId"])] = tunnel["router"]

    def views(self, b32: str) -> dict[str, ConsoleLeaseSet | None]:
        """Each floodfill's LeaseSet for `b32`; the next owner check looks at the routers
        afresh."""
        self._b32 = b32.removesuffix(".b32.i2p")
        self._consoles = None
        self._transit = {}
        self.last_views = floodfill_views(self.testnet, b32)
        return self.last_views

    def routers_of(self, lease_set: ConsoleLeaseSet, now: float | None = None) -> set[str]:
        """The router the balancer names for each of `lease_set`'s leases ("?" for one it
        never named), after checking every lease with more than a minute left against the
        routers' consoles (LeaseOwnerError: see `attribute` and `check_claim`)."""
        if lease_set.b32 != self._b32:
            raise ValueError(
                f"routers_of a LeaseSet of {lease_set.b32}, but the last views() looked at "
                f"{self._b32 or 'nothing'}: take the LeaseSet from views()"
            )
        now = time.time() if now is None else now
        routers = set()
        for lease in lease_set.leases:
            claimed = self.claimed.get((lease.gateway, lease.tunnel_id))
            if lease.end - now > JUDGE_MARGIN_S:
                check_claim(lease, claimed, self._attribution(lease))
            routers.add(claimed or "?")
        return routers

    def explain(self) -> str:
        """What each floodfill held at the last look, for a timeout's message: tells a lost
        flood (a floodfill holds nothing) from a LeaseSet that lacks a router's leases."""
        now = time.time()
        parts = []
        for floodfill, lease_set in sorted(self.last_views.items()):
            if lease_set is None:
                parts.append(f"{floodfill}: nothing")
                continue
            routers = ",".join(sorted({self.claimed.get(k, "?") for k in lease_keys(lease_set)}))
            state = "serving" if serving(lease_set, now) else "NOT serving"
            left = max((lease.end - now for lease in lease_set.leases), default=0.0)
            parts.append(
                f"{floodfill}: {state}, {len(lease_set.leases)} leases from {routers}, "
                f"the last ending in {left:.0f}s, LeaseSet expires {lease_set.expires}"
            )
        return "; ".join(parts) or "no floodfill looked at yet"

    # ---- the consoles' side

    def _attribution(self, lease: ConsoleLease) -> Attribution:
        key = (lease.gateway, lease.tunnel_id)
        if key in self._verified:
            return self._verified[key]
        found = attribute(
            lease, self._look(), self._gateway_tunnels, frozenset(self.without_console)
        )
        if not found.verified:
            self.counts.unverified += 1
            return found
        self._verified[key] = found
        self.counts.verified += 1
        self.counts.ambiguous += len(found.owners) > 1
        self.counts.zero_hop += found.zero_hop
        return found

    def _gateway_tunnels(self, identity: str, built: float) -> frozenset[int] | None:
        names = [name for name, ident in self._identity_map().items() if ident == identity]
        if not names:
            if self.without_console:
                return None
            raise LeaseOwnerError(f"a lease names gateway {identity}, which no router has")
        if names[0] not in self._transit:
            self._transit[names[0]] = self._read_transit(names[0])
        started, carried = self._transit[names[0]]
        # A gateway restarted since the tunnel was built has lost its transit tunnels.
        return carried if started is not None and started < built else None

    def _read_transit(self, name: str) -> tuple[float | None, frozenset[int] | None]:
        """When the router's i2pd started, and the ids of the tunnels it is the gateway of
        (None for both while it is down, the ids None when its console did not answer)."""
        router = self.testnet.router(name)
        pid = i2pd_pid(router)
        if pid is None:
            return None, None
        try:
            listed = fetch_transit_tunnels(router.console, timeout=5.0)
        except OSError:
            return started_at(pid), None
        return started_at(pid), frozenset(t.tunnel_id for t in listed if t.role == "gateway")

    def _look(self) -> list[RouterConsole]:
        """Every router's pools of this destination, read once per look at the floodfills."""
        if self._consoles is None:
            self._consoles = [self._read(name) for name in self._identity_map()]
        return self._consoles

    def _read(self, name: str) -> RouterConsole:
        router = self.testnet.router(name)
        identity = self._identity_map()[name]
        pid = i2pd_pid(router)
        if pid is None:
            return RouterConsole(name, identity, None, answered=False, pools=())
        started = started_at(pid)
        pools = []
        try:
            for destination in fetch_local_destinations(router.console, timeout=5.0):
                if destination.b32 != self._b32 or destination.i2cp_session is None:
                    continue
                pool = fetch_i2cp_local_destination(
                    router.console, destination.i2cp_session, timeout=5.0
                )
                # A session ended between the two pages, or the id went to another client.
                if pool is not None and pool.b32 == self._b32:
                    pools.append(pool)
        except OSError:
            return RouterConsole(name, identity, started, answered=False, pools=())
        return RouterConsole(name, identity, started, answered=True, pools=tuple(pools))

    def _identity_map(self) -> dict[str, str]:
        if not self._identities:
            try:
                self._identities = {
                    r.name: self.testnet.identity_hash(r.name) for r in self.testnet.routers
                }
            except (OSError, TestnetError) as exc:
                raise LeaseOwnerError(f"cannot read the routers' identities: {exc}") from exc
        return self._identities


def _show(key: LeaseKey) -> str:
    return f"(gateway {key[0][:_ABBREVIATION]}…, tunnel {key[1]})"


def client_published(testnet: Testnet, b32: str) -> bool | NotYet:
    """Whether a floodfill serves the LeaseSet of client destination `b32`."""
    views = floodfill_views(testnet, b32).values()
    return any(serving(ls, time.time()) for ls in views if ls is not None) or NotYet(
        f"no floodfill serves {b32}"
    )


async def wait_client_published(
    testnet: Testnet, b32: str, timeout_s: float, interval: float = 2.0
) -> None:
    """Wait until a floodfill serves client `b32`'s LeaseSet; AssertionError if none does."""
    await asyncio.to_thread(
        wait_until,
        f"the client's LeaseSet ({b32}) on a floodfill",
        timeout_s,
        lambda: client_published(testnet, b32),
        interval=interval,
    )


async def published_session(
    testnet: Testnet,
    open_session: Callable[[], Awaitable[SessionT]],
    attempts: int = 5,
    wait_s: float = 60.0,
) -> SessionT:
    """A SAM session whose LeaseSet a floodfill serves, for tests in which a router other
    than the client's first must reach it. i2pd 2.45.1 tries to publish a new destination
    when its inbound tunnels change and, when it has no outbound tunnel yet ("Can't publish
    LeaseSet. Destination is not ready", LeaseSetDestination::Publish), not again until
    they change, up to 10 minutes later: such a session is closed and another opened. One
    that publishes does so within seconds of its tunnels; 3 tries in a row failed so on a
    CI run (and on this machine after test_demo), hence 5. A session whose SAM bridge does
    not answer SESSION CREATE (it answers once the destination's tunnels are built, which on
    a testnet whose routers were just restarted can take longer than the bridge's wait)
    counts as a failed try."""
    failures: list[str] = []
    for _ in range(attempts):
        try:
            session = await open_session()
        except TimeoutError as exc:
            failures.append(str(exc))
            continue
        try:
            await wait_client_published(testnet, session.b32, wait_s, interval=3.0)
        except AssertionError:
            failures.append(f"no floodfill served {session.b32} within {wait_s:.0f}s")
            await session.close()
            continue
        return session
    raise AssertionError(f"no published client session in {attempts} tries: {failures}")
