"""The `shared` gateway policy: the set, the selection through it, the options routers get,
and the spec rules that keep it from showing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from i2p_multihome.balancer.gateways import (
    MEMBER_GRACE_S,
    choose_shared_gateways,
    inbound_quantity,
    set_size_per_router,
)
from i2p_multihome.balancer.link import LinkState
from i2p_multihome.balancer.policy import (
    CLIENT_API_VERSION,
    PublishInput,
    SelectedLease,
    options_for,
    plan_publish,
    resolved_implementation,
    select_leases,
    session_options,
)
from i2p_multihome.balancer.profiles import PeerProfile, PeerProfiles, Tiers
from i2p_multihome.model.v1alpha1 import (
    SHARED_MIXED_MESSAGE,
    SHARED_ZERO_HOP_MESSAGE,
    GatewayPolicy,
    I2CPEndpoint,
    MultihomedDestinationSpec,
    PeerPolicy,
    RouterImplementation,
    RouterSpec,
    RouterState,
    TunnelDirection,
    TunnelsSpec,
)
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease

NOW_MS = 1_700_000_000_000
NOW_S = NOW_MS / 1000


def gw(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def lease(gateway: str, tunnel_id: int, remaining_s: float = 400) -> Lease:
    return Lease(gw(gateway), tunnel_id, NOW_MS + int(remaining_s * 1000))


def seen(name: str, ago_s: float = 0.0, built: float = 1.0) -> PeerProfile:
    return PeerProfile(gw(name), NOW_S, built=built, recent=built, last_seen_s=NOW_S - ago_s)


def profiles(*items: PeerProfile) -> PeerProfiles:
    return PeerProfiles({p.peer: p for p in items})


# --- the set --------------------------------------------------------------------------------


def test_the_set_is_sized_like_the_median_routers_builds_of_the_last_hour() -> None:
    def built(name: str, routers: dict[str, float]) -> PeerProfile:
        return PeerProfile(gw(name), NOW_S, built=1.0, last_seen_s=NOW_S, builders=routers)

    recent, old = NOW_S - 60, NOW_S - 3601
    known = profiles(
        *(built(f"a{i}", {"r0": recent}) for i in range(9)),  # r0 built through 9
        *(built(f"b{i}", {"r1": recent, "r2": recent}) for i in range(6)),  # r1, r2: 6
        *(built(f"c{i}", {"r2": recent, "r0": old}) for i in range(2)),  # r2: 8
    )
    assert set_size_per_router(12, Tiers(), known, 3, NOW_S) == 8  # of 6, 8, 9
    # At least a quarter of the leases asked for; all of them before any build.
    assert set_size_per_router(40, Tiers(), known, 3, NOW_S) == 10
    assert set_size_per_router(12, Tiers(), PeerProfiles(), 3, NOW_S) == 12


def test_members_stay_while_they_carry_leases_or_did_lately() -> None:
    previous = frozenset({gw("a"), gw("b"), gw("c")})
    known = profiles(
        seen("a"), seen("b", ago_s=MEMBER_GRACE_S - 1), seen("c", ago_s=MEMBER_GRACE_S + 1)
    )
    available = dict.fromkeys([gw("a"), gw("x"), gw("y")], 1)
    tiers = Tiers(fast=(gw("y"),), high_capacity=(gw("y"),))
    chosen = choose_shared_gateways(previous, known, tiers, available, 3, NOW_S)
    # a carries a lease, b had one within the grace; c's place goes to the fast y, not x.
    assert chosen == {gw("a"), gw("b"), gw("y")}


def test_a_failing_member_stays_but_no_failing_gateway_joins() -> None:
    previous = frozenset({gw("a"), gw("b")})
    tiers = Tiers(failing=frozenset({gw("a"), gw("c")}))
    known = profiles(seen("a"), seen("b"), seen("c"), seen("d"))
    carrying = {gw("a"): 1, gw("b"): 1, gw("c"): 5, gw("d"): 1}
    assert choose_shared_gateways(previous, known, tiers, carrying, 3, NOW_S) == {
        gw("a"), gw("b"), gw("d"),
    }  # fmt: skip
    # Out of the grace and carrying nothing, it leaves like any member.
    stale = profiles(seen("a", ago_s=MEMBER_GRACE_S + 1), seen("b"), seen("d"))
    chosen = choose_shared_gateways(previous, stale, tiers, {gw("b"): 1, gw("d"): 1}, 3, NOW_S)
    assert chosen == {gw("b"), gw("d")}


def test_a_shrunk_set_keeps_its_best_members() -> None:
    previous = frozenset({gw("a"), gw("b"), gw("c")})
    known = profiles(seen("a", built=1), seen("b", built=5), seen("c", built=3))
    tiers = Tiers(high_capacity=(gw("b"), gw("c")), fast=(gw("b"),))
    chosen = choose_shared_gateways(previous, known, tiers, dict.fromkeys(previous, 1), 2, NOW_S)
    assert chosen == {gw("b"), gw("c")}


def test_free_places_go_to_the_gateways_carrying_most_tunnels() -> None:
    """Two routers rarely build through one gateway; one that carries several tunnels
    fills several leases from inside the set."""
    carrying = {gw("x"): 1, gw("y"): 3, gw("z"): 2}
    tiers = Tiers(fast=(gw("x"),), high_capacity=(gw("x"),))
    known = profiles(seen("x"), seen("y"), seen("z"))
    assert choose_shared_gateways(frozenset(), known, tiers, carrying, 2, NOW_S) == {
        gw("y"),
        gw("z"),
    }


@given(
    st.frozensets(st.integers(0, 20), max_size=12),
    st.frozensets(st.integers(0, 20), max_size=12),
    st.frozensets(st.integers(0, 20), max_size=5),
    st.integers(0, 10),
)
@settings(max_examples=200, deadline=None)
def test_the_set_is_bounded_admits_no_failing_peer_and_is_stable_when_nothing_changes(
    previous: frozenset[int], available: frozenset[int], failing: frozenset[int], size: int
) -> None:
    def hashes(names: frozenset[int]) -> frozenset[bytes]:
        return frozenset(gw(str(n)) for n in names)

    carrying = dict.fromkeys(hashes(available), 1)

    known = profiles(*(seen(str(n)) for n in previous | available))
    tiers = Tiers(failing=hashes(failing))
    chosen = choose_shared_gateways(hashes(previous), known, tiers, carrying, size, NOW_S)
    assert len(chosen) <= size
    assert chosen & hashes(failing) <= hashes(previous)  # failing members may stay, not join
    assert choose_shared_gateways(chosen, known, tiers, carrying, size, NOW_S) == chosen
    eligible = previous | (available - failing)  # every member was seen just now
    assert len(chosen) == min(size, len(eligible))


# --- selection through the set ----------------------------------------------------------


def test_leases_through_members_first_then_the_freshest_others_fill() -> None:
    reports = {
        "a": [lease("m1", 1, 300), lease("x1", 2, 500)],
        "b": [lease("m2", 3, 200), lease("x2", 4, 400), lease("x3", 5, 100)],
    }
    members = frozenset({gw("m1"), gw("m2")})
    chosen = select_leases(reports, NOW_MS, 3, preferred_gateways=members)
    assert [s.lease.tunnel_id for s in chosen] == [2, 1, 3]  # freshest first
    assert {s.lease.gateway for s in chosen} >= members
    only = select_leases(reports, NOW_MS, 2, preferred_gateways=members)
    assert {s.lease.gateway for s in only} == members
    # An empty set (no profiles yet) selects as native does.
    assert select_leases(reports, NOW_MS, 5, preferred_gateways=frozenset()) == select_leases(
        reports, NOW_MS, 5
    )


def _spec(
    gateways: GatewayPolicy = GatewayPolicy.SHARED,
    implementations: tuple[RouterImplementation, ...] = (RouterImplementation.AUTO,) * 2,
    inbound: TunnelDirection | None = None,
    explicit: list[str] | None = None,
) -> MultihomedDestinationSpec:
    return MultihomedDestinationSpec(
        routers=[
            RouterSpec(name=f"r{i}", i2cp=I2CPEndpoint(host=f"r{i}"), implementation=impl)
            for i, impl in enumerate(implementations)
        ],
        tunnels=TunnelsSpec(inbound=inbound or TunnelDirection(quantity=2, length=2)),
        peer_policy=PeerPolicy(gateways=gateways, explicit_peers=explicit or []),
    )


def _first_leases(
    reports: dict[str, tuple[Lease, ...]],
    spec: MultihomedDestinationSpec,
    members: frozenset[bytes] | None,
) -> tuple[SelectedLease, ...]:
    plan = plan_publish(
        PublishInput(
            links=tuple(
                LinkState(name, state=RouterState.ESTABLISHED, leases=leases)
                for name, leases in reports.items()
            ),
            published=None,
            last_publish_at=None,
            spec=spec,
            now=100.0,
            now_ms=NOW_MS,
            shared_gateways=members,
        )
    )
    assert plan.leases is not None
    return plan.leases


def test_plan_publishes_the_leases_asked_for_through_the_set() -> None:
    # Each router built twice the spec's 2 inbound tunnels; the LeaseSet holds 2 x 2.
    reports = {
        "r0": tuple(lease(f"g0{i}", i, 300 + i) for i in range(4)),
        "r1": tuple(lease(f"g1{i}", 10 + i, 300 + i) for i in range(4)),
    }
    members = frozenset({gw("g00"), gw("g01"), gw("g10")})
    leases = _first_leases(reports, _spec(), members)
    # Members carry 3 of the 4 asked for: leases from outside fill only to three quarters.
    assert {s.lease.gateway for s in leases} == members
    fewer = _first_leases(reports, _spec(), frozenset({gw("g00"), gw("g10")}))
    gateways = {s.lease.gateway for s in fewer}
    # The third is the freshest of the rest, from the first router with the fewest.
    assert len(fewer) == 3 and gateways - {gw("g00"), gw("g10")} == {gw("g03")}
    # native publishes every usable lease.
    assert len(_first_leases(reports, _spec(GatewayPolicy.NATIVE), None)) == 8


# --- what routers are told ----------------------------------------------------------------

PEERS = [b64encode(gw(f"peer{i}")) for i in range(3)]
KEY = b64encode(gw("slicing key"))


@pytest.mark.parametrize(("quantity", "built"), [(1, 2), (3, 6), (8, 16), (16, 16)])
def test_under_shared_routers_build_twice_the_inbound_tunnels(quantity: int, built: int) -> None:
    spec = _spec(inbound=TunnelDirection(quantity=quantity, length=2))
    options = session_options(spec, spec.routers[0], False, "n")
    assert options["inbound.quantity"] == str(built) == str(inbound_quantity(quantity))
    assert options["outbound.quantity"] == "3"
    native = _spec(GatewayPolicy.NATIVE, inbound=TunnelDirection(quantity=quantity, length=2))
    assert session_options(native, native.routers[0], False, "n")["inbound.quantity"] == str(
        quantity
    )


def test_java_routers_get_explicit_peers_per_pool_and_i2pd_the_rotated_path() -> None:
    spec = _spec(GatewayPolicy.NATIVE, explicit=PEERS)
    java = session_options(
        spec, spec.routers[1], False, "n", implementation=RouterImplementation.JAVA
    )
    assert java["inbound.explicitPeers"] == java["outbound.explicitPeers"] == ",".join(PEERS)
    assert "explicitPeers" not in java
    i2pd = session_options(spec, spec.routers[1], False, "n")
    assert i2pd["explicitPeers"] == ",".join([*PEERS[1:], PEERS[0]])
    assert "inbound.explicitPeers" not in i2pd


def test_only_java_routers_under_shared_get_the_slicing_key() -> None:
    shared, native = _spec(), _spec(GatewayPolicy.NATIVE)
    java = RouterImplementation.JAVA
    options = session_options(
        shared, shared.routers[0], False, "n", implementation=java, random_key=KEY
    )
    assert options["inbound.randomKey"] == options["outbound.randomKey"] == KEY
    for spec, implementation in ((shared, RouterImplementation.I2PD), (native, java)):
        other = session_options(
            spec, spec.routers[0], False, "n", implementation=implementation, random_key=KEY
        )
        assert "inbound.randomKey" not in other and "outbound.randomKey" not in other


@pytest.mark.parametrize(
    ("implementation", "reply", "resolved"),
    [
        (RouterImplementation.AUTO, CLIENT_API_VERSION, RouterImplementation.I2PD),
        (RouterImplementation.AUTO, "0.9.65", RouterImplementation.JAVA),
        (RouterImplementation.AUTO, "0.9.67", RouterImplementation.I2PD),
        (RouterImplementation.JAVA, CLIENT_API_VERSION, RouterImplementation.JAVA),
        (RouterImplementation.I2PD, "0.9.65", RouterImplementation.I2PD),
    ],
)
def test_auto_resolves_from_the_setdate_reply(
    implementation: RouterImplementation, reply: str, resolved: RouterImplementation
) -> None:
    assert resolved_implementation(implementation, CLIENT_API_VERSION, reply) is resolved


def test_options_for_a_java_reply_carry_javas_options() -> None:
    spec = _spec(explicit=PEERS)
    options = options_for(
        spec, spec.routers[0], "0.9.65", ramped=True, nickname="n", random_key=KEY
    )
    assert options["inbound.explicitPeers"] == ",".join(PEERS)
    assert options["inbound.randomKey"] == KEY


def test_the_slicing_key_is_derived_from_the_keys_alone() -> None:
    keys = DestinationKeys.generate()
    again = DestinationKeys.from_json(keys.to_json())
    assert len(keys.tier_slicing_key) == 32
    assert again.tier_slicing_key == keys.tier_slicing_key
    assert DestinationKeys.generate().tier_slicing_key != keys.tier_slicing_key
    assert keys.tier_slicing_key != keys.signing_seed


# --- the spec rules ------------------------------------------------------------------------


def test_shared_refuses_mixed_implementations() -> None:
    with pytest.raises(ValidationError, match="give every router the same implementation"):
        _spec(implementations=(RouterImplementation.I2PD, RouterImplementation.JAVA))
    assert SHARED_MIXED_MESSAGE.startswith("spec.peerPolicy.gateways: shared")
    _spec(implementations=(RouterImplementation.AUTO, RouterImplementation.JAVA))
    _spec(GatewayPolicy.NATIVE, (RouterImplementation.I2PD, RouterImplementation.JAVA))


@pytest.mark.parametrize(
    ("length", "variance", "routers", "refused"),
    [(0, 0, 2, True), (1, -1, 2, True), (1, 0, 2, False), (0, 2, 2, True), (0, 0, 1, False)],
)
def test_shared_refuses_zero_hop_leases_from_several_routers(
    length: int, variance: int, routers: int, refused: bool
) -> None:
    def build() -> MultihomedDestinationSpec:
        return _spec(
            implementations=(RouterImplementation.AUTO,) * routers,
            inbound=TunnelDirection(quantity=2, length=length, length_variance=variance),
        )

    if refused:
        with pytest.raises(ValidationError, match="zero-hop lease names its router"):
            build()
        assert "zero-hop" in SHARED_ZERO_HOP_MESSAGE
    else:
        build()
