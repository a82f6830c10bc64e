"""Judging what the floodfills hold as a client would (`serving`), and which router built
each lease by the routers' own consoles (`attribute`), against pages captured from i2pd
2.45.1 in the testnet (tests/data/console_owners_capture.json: every router's console read
within 40 ms, with the balancer's status of the two destinations it hosted then)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from i2p_multihome_dev.observe import (
    LEASE_END_MARGIN_S,
    Attribution,
    LeaseOwnerError,
    RouterConsole,
    attribute,
    check_claim,
    serving,
)
from i2p_multihome_dev.testnet import (
    ConsoleLease,
    ConsoleLeaseSet,
    parse_i2cp_local_destination,
    parse_leasesets,
    parse_transit_tunnels,
)

DATA = Path(__file__).parent / "data"
FLOODFILLS = ("ff1", "ff2", "ff3")


def lease_set_of(page: str, index: int = 0) -> ConsoleLeaseSet:
    return parse_leasesets((DATA / f"console_{page}.html").read_text())[index]


# --------------------------------------------------------------------------- serving


def test_a_floodfill_whose_leases_all_end_within_51_s_does_not_serve() -> None:
    lease_set = lease_set_of("leasesets")
    last_end = max(lease.end for lease in lease_set.leases)
    # The console still lists these leases (it keeps them 51 s past their end); a client
    # would use none of them.
    assert not serving(lease_set, now=last_end - LEASE_END_MARGIN_S)
    assert not serving(lease_set, now=last_end - 30)
    assert not serving(lease_set, now=last_end + 10)


def test_one_lease_with_52_s_left_serves() -> None:
    lease_set = lease_set_of("leasesets")
    ends = sorted(lease.end for lease in lease_set.leases)
    assert ends[-1] > ends[-2]  # the page has one lease that ends last
    assert serving(lease_set, now=ends[-1] - 52)
    assert serving(lease_set, now=ends[0] - 600)


def test_no_leaseset_or_one_the_router_flags_does_not_serve() -> None:
    lease_set = lease_set_of("leasesets")
    early = min(lease.end for lease in lease_set.leases) - 300
    assert not serving(None, early)
    assert not serving(dataclasses.replace(lease_set, expired=True), early)
    assert not serving(dataclasses.replace(lease_set, invalid=True), early)
    assert not serving(dataclasses.replace(lease_set, leases=()), early)


# --------------------------------------------------------------------------- owners


@dataclasses.dataclass(frozen=True)
class Capture:
    """The consoles and statuses of tests/data/console_owners_capture.json."""

    captured_at: float
    raw: dict[str, Any]

    @classmethod
    def load(cls) -> Capture:
        raw = json.loads((DATA / "console_owners_capture.json").read_text())
        return cls(float(raw["captured_at"]), raw)

    def page(self, name: str) -> str:
        text: str = self.raw["pages"][name]
        return text

    def b32(self, destination: str) -> str:
        b32: str = self.raw["destinations"][destination]["b32"]
        return b32.removesuffix(".b32.i2p")

    def claims(self, destination: str) -> dict[tuple[str, int], str]:
        tunnels = self.raw["destinations"][destination]["tunnels"]
        return {(t["gateway"], t["tunnelId"]): t["router"] for t in tunnels}

    def consoles(self, destination: str, started: float = 0.0) -> list[RouterConsole]:
        b32 = self.b32(destination)
        consoles = []
        for name, identity in self.raw["identities"].items():
            pools = [
                pool
                for key in self.raw["pages"]
                if key.startswith(f"{name} i2cp_local_destination ")
                if (pool := parse_i2cp_local_destination(self.page(key))) is not None
                and pool.b32 == b32
            ]
            consoles.append(RouterConsole(name, identity, started, True, tuple(pools)))
        return consoles

    def gateway_tunnels(self, identity: str, built: float) -> frozenset[int] | None:
        for name, known in self.raw["identities"].items():
            if known == identity:
                listed = parse_transit_tunnels(self.page(f"{name} transit_tunnels"))
                return frozenset(t.tunnel_id for t in listed if t.role == "gateway")
        return None

    def leases(self, destination: str, floodfill: str) -> list[ConsoleLease]:
        b32 = self.b32(destination)
        (lease_set,) = [
            ls for ls in parse_leasesets(self.page(f"{floodfill} leasesets")) if ls.b32 == b32
        ]
        assert serving(lease_set, self.captured_at)
        return list(lease_set.leases)


@pytest.fixture
def capture(utc: None) -> Capture:
    return Capture.load()


def test_every_floodfill_lease_of_four_routers_has_the_owner_the_balancer_names(
    capture: Capture,
) -> None:
    """4 routers x 3 one-hop tunnels mid rotation: every lease on every floodfill is found
    in a router's pool (through its gateway's abbreviation) and at its gateway (by id), and
    the router the balancer names is among the owners. With 9 routers, several hosts often
    build through the same gateway: then each of them could own the lease."""
    consoles = capture.consoles("one_hop")
    claims = capture.claims("one_hop")
    for floodfill in FLOODFILLS:
        leases = capture.leases("one_hop", floodfill)
        assert len(leases) == 12
        found = {}
        for lease in leases:
            attribution = attribute(lease, consoles, capture.gateway_tunnels)
            assert attribution.verified and not attribution.zero_hop
            claimed = claims[(lease.gateway, lease.tunnel_id)]
            check_claim(lease, claimed, attribution)
            found[lease.tunnel_id] = attribution.owners
        assert {claims[(x.gateway, x.tunnel_id)] for x in leases} == {"r1", "r2", "r3", "r4"}
        assert set().union(*found.values()) == {"r1", "r2", "r3", "r4"}
        assert sum(len(owners) == 1 for owners in found.values()) == 5
        assert sum(len(owners) == 2 for owners in found.values()) == 7


def test_zero_hop_leases_are_matched_exactly(capture: Capture) -> None:
    """A zero-hop lease names the hosting router itself and the id its pool lists."""
    consoles = capture.consoles("zero_hop")
    claims = capture.claims("zero_hop")
    for floodfill in FLOODFILLS:
        for lease in capture.leases("zero_hop", floodfill):
            attribution = attribute(lease, consoles, capture.gateway_tunnels)
            assert attribution == Attribution(
                frozenset({claims[(lease.gateway, lease.tunnel_id)]}), verified=True, zero_hop=True
            )


def test_a_lease_no_router_built_fails(capture: Capture) -> None:
    consoles = capture.consoles("one_hop")
    real = capture.leases("one_hop", "ff1")[0]
    # A gateway no hosting router builds through: ff1 is a floodfill none of the tunnels use.
    ff1 = capture.raw["identities"]["ff1"]
    assert not any(
        t.hops[:1] == (ff1[:4],) for c in consoles for pool in c.pools for t in pool.inbound
    )
    with pytest.raises(LeaseOwnerError, match="no router's console lists"):
        attribute(dataclasses.replace(real, gateway=ff1), consoles, capture.gateway_tunnels)
    # The right gateway, but an id its transit page does not list as a gateway tunnel.
    forged = dataclasses.replace(real, tunnel_id=real.tunnel_id ^ 1)
    with pytest.raises(LeaseOwnerError, match="gateway lists no transit tunnel"):
        attribute(forged, consoles, capture.gateway_tunnels)


def test_a_claim_the_consoles_rule_out_fails(capture: Capture) -> None:
    consoles = capture.consoles("one_hop")
    claims = capture.claims("one_hop")
    for lease in capture.leases("one_hop", "ff1"):
        attribution = attribute(lease, consoles, capture.gateway_tunnels)
        if len(attribution.owners) == 1:
            (owner,) = attribution.owners
            other = "r4" if owner != "r4" else "r1"
            assert claims[(lease.gateway, lease.tunnel_id)] == owner
            with pytest.raises(LeaseOwnerError, match=f"the balancer says {other} built"):
                check_claim(lease, other, attribution)
            check_claim(lease, None, attribution)  # a lease the balancer never named
            return
    pytest.fail("the capture has no lease with a single owner")


def test_routers_that_cannot_show_a_lease_are_possible_owners_unverified(
    capture: Capture,
) -> None:
    """A router down, or restarted after the tunnel was built, has lost the tunnel from its
    console: it may own any lease, so nothing is verified while it is in that state."""
    consoles = capture.consoles("one_hop")
    lease = capture.leases("one_hop", "ff1")[0]
    claimed = capture.claims("one_hop")[(lease.gateway, lease.tunnel_id)]
    without = [
        dataclasses.replace(c, answered=False, pools=()) if c.name == claimed else c
        for c in consoles
    ]
    attribution = attribute(lease, without, capture.gateway_tunnels)
    assert not attribution.verified and claimed in attribution.owners
    check_claim(lease, claimed, attribution)
    restarted = [
        dataclasses.replace(c, started=lease.end, pools=()) if c.name == claimed else c
        for c in consoles
    ]
    assert claimed in attribute(lease, restarted, capture.gateway_tunnels).owners
    # A gateway that cannot tell leaves the owners found, unverified.
    unknown = attribute(lease, consoles, lambda identity, built: None)
    assert not unknown.verified and claimed in unknown.owners


def test_a_router_without_a_console_owns_only_what_no_console_accounts_for(
    capture: Capture,
) -> None:
    consoles = capture.consoles("one_hop")
    real = capture.leases("one_hop", "ff1")[0]
    java = frozenset({"java"})
    stranger = dataclasses.replace(real, gateway="J" * 43 + "=")
    assert attribute(stranger, consoles, capture.gateway_tunnels, java) == Attribution(
        java, verified=False
    )
    assert "java" not in attribute(real, consoles, capture.gateway_tunnels, java).owners
