"""The balancer's pure decisions: lease selection, publish timing, version quirks, options."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.balancer.events import PublishReason
from i2p_multihome.balancer.link import LinkState
from i2p_multihome.balancer.policy import (
    AFFINITY_LEASE_LIFETIME_S,
    AFFINITY_REFRESH_S,
    AFFINITY_RENEW_INTERVAL_S,
    BACKOFF_INITIAL_S,
    CLIENT_API_VERSION,
    CLIENT_LEASE_CUTOFF_S,
    FOLLOW_UP_AFTER_FAILOVER_S,
    MIN_PUBLISH_INTERVAL_S,
    MIN_REMAINING_S,
    PUBLISH_RETRY_S,
    PUBLISHER_SETTLE_S,
    RAMP_FIRST_S,
    RAMP_SPREAD_S,
    REPLACE_ENDING_S,
    SELECTION_MARGIN_S,
    USEFUL_VERSION_S,
    PublishInput,
    PublishPlan,
    PublishTiming,
    SelectedLease,
    affinity_hosts,
    affinity_published_s,
    affinity_refresh,
    affinity_renew_at,
    backoff_delay_s,
    choose_publisher,
    excluded_gateways,
    lease_set_expires_s,
    lease_target,
    next_published_s,
    next_store_at,
    one_tunnel_held_back,
    options_for,
    plan_publish,
    public_only_when_storing,
    publish_candidates,
    publish_is_inverted,
    publish_need,
    ramp_delay_s,
    select_leases,
    session_options,
)
from i2p_multihome.model.v1alpha1 import (
    I2CPEndpoint,
    LeaseSetSpec,
    MultihomedDestinationSpec,
    PeerPolicy,
    RouterImplementation,
    RouterSpec,
    RouterState,
    TunnelDirection,
    TunnelsSpec,
)
from i2p_multihome.wire.structures import Lease, Lease2

NOW_MS = 1_700_000_000_000
MARGIN_MS = SELECTION_MARGIN_S * 1000


def gw(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def lease(gateway: str, tunnel_id: int, remaining_s: float) -> Lease:
    return Lease(gw(gateway), tunnel_id, NOW_MS + int(remaining_s * 1000))


def _by_router(selected: Sequence[SelectedLease]) -> Counter[str]:
    return Counter(s.router for s in selected)


# --- select_leases --------------------------------------------------------------------------


def test_margin_constants() -> None:
    assert MIN_REMAINING_S == 30
    assert MIN_PUBLISH_INTERVAL_S == 20
    assert SELECTION_MARGIN_S == 50
    assert REPLACE_ENDING_S == 30  # when i2pd's successor comes at the latest


def test_round_robin_is_fair_across_routers() -> None:
    reports = {router: [lease(f"{router}{i}", i, 100 + i) for i in range(5)] for router in "abc"}
    selected = select_leases(reports, NOW_MS, max_leases=7)
    assert _by_router(selected) == {"a": 3, "b": 2, "c": 2}
    # The freshest of each, in turn: a's third pick is its third freshest.
    assert sorted(s.lease.tunnel_id for s in selected if s.router == "a") == [2, 3, 4]


def test_leases_are_listed_newest_first_as_one_router_lists_them() -> None:
    reports = {
        "a": [lease("a1", 1, 200), lease("a2", 2, 500)],
        "b": [lease("b1", 1, 400), lease("b2", 2, 100)],
    }
    selected = select_leases(reports, NOW_MS, max_leases=16)
    assert [(s.router, s.lease.tunnel_id) for s in selected] == [
        ("a", 2), ("b", 1), ("a", 1), ("b", 2),
    ]  # fmt: skip


def test_each_router_contributes_its_freshest_lease_first() -> None:
    reports = {
        "a": [lease("a1", 1, 200), lease("a2", 2, 500), lease("a3", 3, 300)],
        "b": [lease("b1", 1, 400), lease("b2", 2, 100)],
    }
    selected = select_leases(reports, NOW_MS, max_leases=3)
    assert {(s.router, s.lease.tunnel_id) for s in selected} == {("a", 2), ("b", 1), ("a", 3)}


def test_a_router_that_runs_out_leaves_room_for_the_others() -> None:
    reports = {"a": [lease("a", 1, 300)], "b": [lease(f"b{i}", i, 300) for i in range(6)]}
    selected = select_leases(reports, NOW_MS, max_leases=4)
    assert _by_router(selected) == {"a": 1, "b": 3}


def test_leases_within_the_margin_are_never_selected() -> None:
    reports = {
        "a": [
            Lease(gw("edge"), 1, NOW_MS + MARGIN_MS),  # ends exactly at the margin
            Lease(gw("past"), 2, NOW_MS - 1),
            Lease(gw("soon"), 3, NOW_MS + MIN_REMAINING_S * 1000 + 1),  # > 30 s but < 50 s
            Lease(gw("ok"), 4, NOW_MS + MARGIN_MS + 1),
        ]
    }
    selected = select_leases(reports, NOW_MS, max_leases=16)
    assert [s.lease.tunnel_id for s in selected] == [4]


def test_kept_leases_come_before_fresher_ones_of_their_router() -> None:
    reports = {"a": [lease("a1", 1, 300), lease("a2", 2, 500), lease("a3", 3, 550)],
               "b": [lease("b1", 1, 200), lease("b2", 2, 400)]}  # fmt: skip
    kept = frozenset({(gw("a1"), 1), (gw("b1"), 1), (gw("gone"), 7)})
    picked = select_leases(reports, NOW_MS, max_leases=2, kept=kept)
    assert {s.lease.tunnel_id for s in picked} == {1} and _by_router(picked) == {"a": 1, "b": 1}
    # Then the freshest; a kept lease within the margin is still never selected.
    picked = select_leases(reports, NOW_MS, max_leases=4, kept=kept)
    assert {(s.router, s.lease.tunnel_id) for s in picked} == {("a", 1), ("a", 3), ("b", 1),
                                                               ("b", 2)}  # fmt: skip
    ending = {"a": [lease("a1", 1, 40), lease("a2", 2, 500)]}
    assert [s.lease.tunnel_id for s in select_leases(ending, NOW_MS, 1, kept=kept)] == [2]
    # Under `shared`, kept leases through members first, and kept ones first among the fill.
    members = frozenset({gw("a2"), gw("a1")})
    shared = select_leases(reports, NOW_MS, 4, preferred_gateways=members, fill_to=3, kept=kept)
    assert {(s.router, s.lease.tunnel_id) for s in shared} == {("a", 1), ("a", 2), ("b", 1)}


def test_the_margin_is_a_parameter() -> None:
    reports = {"a": [lease("x", 1, 40)]}
    assert select_leases(reports, NOW_MS, 16) == ()
    assert len(select_leases(reports, NOW_MS, 16, margin_s=30)) == 1


def test_at_most_16_leases_from_many_routers() -> None:
    reports = {r: [lease(f"{r}{i}", i, 300 + i) for i in range(16)] for r in "abcd"}
    selected = select_leases(reports, NOW_MS, max_leases=16)
    assert len(selected) == 16
    assert _by_router(selected) == {"a": 4, "b": 4, "c": 4, "d": 4}
    # Each router's four are its four freshest.
    for router in "abcd":
        ids = sorted(s.lease.tunnel_id for s in selected if s.router == router)
        assert ids == [12, 13, 14, 15]


def test_excluded_gateways_are_skipped() -> None:
    reports = {
        "a": [lease("bad", 1, 300), lease("good", 2, 200)],
        "b": [lease("bad", 7, 300)],
    }
    selected = select_leases(reports, NOW_MS, 16, excluded_gateways=[gw("bad")])
    assert [(s.router, s.lease.gateway) for s in selected] == [("a", gw("good"))]


def test_duplicate_tunnels_are_published_once() -> None:
    shared = lease("shared", 9, 300)
    reports = {"b": [shared, lease("b", 1, 200)], "a": [shared], "c": [lease("shared", 10, 300)]}
    selected = select_leases(reports, NOW_MS, 16)
    keys = [(s.lease.gateway, s.lease.tunnel_id) for s in selected]
    assert len(keys) == len(set(keys)) == 3
    # The first router in name order keeps the shared tunnel; same gateway, other tunnel stays.
    assert SelectedLease("a", shared) in selected
    assert SelectedLease("b", shared) not in selected
    assert SelectedLease("c", lease("shared", 10, 300)) in selected


def test_duplicate_within_one_router_is_published_once() -> None:
    reports = {"a": [lease("g", 1, 300), lease("g", 1, 300), lease("g", 1, 200)]}
    assert len(select_leases(reports, NOW_MS, 16)) == 1


def test_selection_is_deterministic_whatever_the_input_order() -> None:
    reports = {
        "b": [lease("b1", 1, 300), lease("b2", 2, 300), lease("b3", 3, 300)],
        "a": [lease("a1", 1, 300), lease("a2", 2, 250)],
        "c": [lease("a1", 1, 300), lease("c1", 4, 400)],
    }
    reordered = {k: list(reversed(v)) for k, v in reversed(list(reports.items()))}
    first = select_leases(reports, NOW_MS, 5)
    assert first == select_leases(reordered, NOW_MS, 5)
    assert first == select_leases(reports, NOW_MS, 5)


def test_no_reports_no_leases() -> None:
    assert select_leases({}, NOW_MS, 16) == ()
    assert select_leases({"a": []}, NOW_MS, 16) == ()


def test_selected_lease_converts_to_lease2_in_seconds() -> None:
    selected = SelectedLease("a", Lease(gw("g"), 5, 1_700_000_600_999))
    assert selected.to_lease2() == Lease2(gw("g"), 5, 1_700_000_600)


gateways = st.sampled_from([gw(f"g{i}") for i in range(12)])
leases = st.builds(
    Lease,
    gateways,
    st.integers(0, 40),
    st.integers(NOW_MS - 60_000, NOW_MS + 700_000),
)
reports_strategy = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=3),
    st.lists(leases, max_size=20),
    max_size=24,
)


def _usable(
    reports: Mapping[str, Sequence[Lease]], excluded: frozenset[bytes]
) -> dict[str, set[tuple[bytes, int]]]:
    """Each router's usable tunnels, a tunnel belonging to the first router (by name)
    that reports it."""
    seen: set[tuple[bytes, int]] = set()
    usable: dict[str, set[tuple[bytes, int]]] = {}
    for router in sorted(reports):
        mine = {
            (x.gateway, x.tunnel_id)
            for x in reports[router]
            if x.end_ms > NOW_MS + MARGIN_MS and x.gateway not in excluded
        } - seen
        seen |= mine
        usable[router] = mine
    return usable


@settings(max_examples=300)
@given(reports_strategy, st.integers(1, 16), st.sets(gateways, max_size=3))
def test_selection_properties(
    reports: dict[str, list[Lease]], max_leases: int, excluded: set[bytes]
) -> None:
    selected = select_leases(reports, NOW_MS, max_leases, excluded)
    usable = _usable(reports, frozenset(excluded))
    total_usable = sum(len(v) for v in usable.values())

    assert len(selected) == min(max_leases, total_usable)
    keys = [(s.lease.gateway, s.lease.tunnel_id) for s in selected]
    assert len(keys) == len(set(keys))
    for s in selected:
        assert s.lease.end_ms > NOW_MS + MARGIN_MS
        assert s.lease.end_ms // 1000 - NOW_MS // 1000 > MIN_REMAINING_S
        assert s.lease.gateway not in excluded
        assert s.lease in reports[s.router]

    ends = [s.lease.end_ms for s in selected]
    assert ends == sorted(ends, reverse=True)

    counts = _by_router(selected)
    routers_with_leases = [r for r, v in usable.items() if v]
    if len(routers_with_leases) <= max_leases:
        assert set(counts) == set(routers_with_leases)
    # Fairness: a router with fewer selected leases than another (by 2+) had no more to give.
    for r1 in routers_with_leases:
        for r2 in routers_with_leases:
            if counts[r1] + 1 < counts[r2]:
                assert counts[r1] == len(usable[r1])
    # Freshest first: nothing left out of a router ends later than what it contributed.
    for router, n in counts.items():
        mine = [s.lease.end_ms for s in selected if s.router == router]
        left_out = [
            x.end_ms
            for x in reports[router]
            if (x.gateway, x.tunnel_id) in usable[router]
            and (x.gateway, x.tunnel_id) not in set(keys)
        ]
        assert len(mine) == n
        if left_out:
            assert max(left_out) <= min(mine)


# --- plan_publish -----------------------------------------------------------------------------


A1 = SelectedLease("a", lease("a1", 1, 300))
A2 = SelectedLease("a", lease("a2", 2, 300))
B1 = SelectedLease("b", lease("b1", 1, 300))
TWO_ROUTERS = MultihomedDestinationSpec(
    routers=[
        RouterSpec(name="a", i2cp=I2CPEndpoint(host="router-a")),
        RouterSpec(name="b", i2cp=I2CPEndpoint(host="router-b")),
    ]
)


THREE_ROUTERS = MultihomedDestinationSpec(
    routers=[RouterSpec(name=n, i2cp=I2CPEndpoint(host=f"router-{n}")) for n in "abc"]
)

DEFAULT_TIMING = PublishTiming()


def link(
    name: str,
    *leases: SelectedLease,
    state: RouterState = RouterState.ESTABLISHED,
    waiting: bool = False,
    lost_at: float | None = None,
    since_s: float | None = NOW_MS / 1000 - 3600,  # an hour-old session: settled
) -> LinkState:
    return LinkState(
        name,
        state=state,
        leases=tuple(s.lease for s in leases),
        awaiting_answer=waiting,
        lost_at=lost_at,
        since_s=since_s,
    )


def plan(
    links: Sequence[LinkState],
    published: Sequence[SelectedLease] | None,
    last_publish_at: float | None,
    now: float,
    timing: PublishTiming = DEFAULT_TIMING,
    spec: MultihomedDestinationSpec = TWO_ROUTERS,
    now_ms: int = NOW_MS,
    last_publish_reason: PublishReason | None = None,
    publisher: str | None = None,
    store_at: Mapping[str, float] | None = None,
) -> PublishPlan:
    return plan_publish(
        PublishInput(
            links=tuple(links),
            published=None if published is None else tuple(published),
            last_publish_at=last_publish_at,
            spec=spec,
            now=now,
            now_ms=now_ms,
            timing=timing,
            last_publish_reason=last_publish_reason,
            publisher=publisher,
            store_at=store_at or {},
        )
    )


def test_first_publish_is_immediate_to_every_connected_router() -> None:
    down = link("c", state=RouterState.CONNECTING)
    result = plan([link("a", A1), link("b", B1), down], None, None, now=100.0)
    assert set(result.leases or ()) == {A1, B1}
    assert result.publish_reason is PublishReason.FIRST
    assert result.targets == {"a", "b"}
    # Looked at again when its first lease nears its end (300 s away, 50 s margin).
    assert result.wake_at == 100.0 + 300 - SELECTION_MARGIN_S
    assert result.retry_at == 100.0 + PUBLISH_RETRY_S


def test_nothing_to_publish_without_leases() -> None:
    assert plan([link("a"), link("b")], None, None, now=100.0).leases is None
    assert plan([link("a", A1, state=RouterState.REFUSED)], None, None, now=100.0).leases is None
    result = plan([link("a", waiting=True)], [A1], 50.0, now=100.0)
    assert result.leases is None
    assert result.resend_current_to == {"a"}  # answered with what there is


def test_unchanged_set_is_not_republished() -> None:
    result = plan([link("a", A1), link("b", B1, waiting=True)], [B1, A1], 99.0, now=100.0)
    assert result.leases is None
    assert result.reason == "nothing clients need"
    assert result.resend_current_to == {"b"}
    assert result.wake_at == 100.0 + 300 - SELECTION_MARGIN_S
    # Sub-second end changes do not show in a Lease2 (seconds), so they are no change.
    nudged = SelectedLease("a", Lease(A1.lease.gateway, 1, A1.lease.end_ms + 1))
    assert A1.lease.end_ms % 1000 == 0
    assert plan([link("a", nudged), link("b", B1)], [A1, B1], 99.0, now=100.0).leases is None


def test_an_unchanged_set_is_stored_once_more_only_after_a_failover() -> None:
    links = [link("a", A1), link("b", B1)]
    after_loss = {"last_publish_reason": PublishReason.ROUTER_LOST}
    early = plan(links, [A1, B1], 10.0, now=10.0 + FOLLOW_UP_AFTER_FAILOVER_S - 1, **after_loss)
    assert early.leases is None
    assert early.wake_at == 10.0 + FOLLOW_UP_AFTER_FAILOVER_S
    result = plan(links, [A1, B1], 10.0, now=10.0 + FOLLOW_UP_AFTER_FAILOVER_S, **after_loss)
    assert set(result.leases or ()) == {A1, B1}
    assert result.publish_reason is PublishReason.REFRESH
    # Not after any other publish, however long ago.
    for reason in (PublishReason.REFRESH, PublishReason.LEASES_ENDING, None):
        assert plan(links, [A1, B1], 10.0, now=200.0, last_publish_reason=reason).leases is None
    # A periodic refresh only when asked for (comparisons).
    short = PublishTiming(refresh_interval_s=5)
    assert plan([link("a", A1)], [A1], 10.0, now=15.0, timing=short).leases == (A1,)


def test_leases_that_only_aged_out_are_not_withdrawn_by_a_publish() -> None:
    """Dropping leases that near their end spends the routers' publish slot for nothing:
    held until their replacements come."""
    aging = SelectedLease("a", Lease(gw("old"), 9, NOW_MS + 25_000))  # due for replacement
    published = [A1, aging, B1]
    links = [link("a", A1, aging), link("b", B1)]
    assert plan(links, published, 10.0, now=50.0).leases is None
    assert plan(links, published, 10.0, now=500.0).leases is None
    # A replacement is news; so is a lease that left before its time (a failed tunnel).
    ending = plan([link("a", A1, A2, aging), link("b", B1)], published, 10.0, now=50.0)
    assert ending.publish_reason is PublishReason.LEASES_ENDING
    assert set(ending.leases or ()) == {A1, A2, B1}
    gone = plan([link("a", A1), link("b")], [A1, B1], 10.0, now=50.0)
    assert (gone.leases, gone.publish_reason) == ((A1,), PublishReason.LEASE_GONE)
    # A lost router's leases leave at once, aged or not.
    lost = plan([link("a", A1, aging), link("b", lost_at=49.0, state=RouterState.DISCONNECTED)],
                published, 49.5, now=50.0)  # fmt: skip
    assert lost.publish_reason is PublishReason.ROUTER_LOST


def test_a_version_changes_only_the_leases_it_is_for() -> None:
    """A published lease that lasts stays in every version until it nears its end, as a
    router keeps a tunnel's lease: a fresher tunnel of the same router does not take its
    place when another lease's end makes a new version."""
    three = TWO_ROUTERS.model_copy(update={"lease_set": LeaseSetSpec(max_leases=3)})
    aging = SelectedLease("a", Lease(gw("old"), 9, NOW_MS + 25_000))  # due for replacement
    fresh = SelectedLease("a", lease("a8", 8, 580))
    fresher = SelectedLease("a", lease("a9", 9, 590))
    published = [A1, aging, B1]
    links = [link("a", A1, fresh, fresher, aging), link("b", B1)]
    result = plan(links, published, 10.0, now=50.0, spec=three)
    assert result.publish_reason is PublishReason.LEASES_ENDING
    assert set(result.leases or ()) == {A1, fresher, B1}  # A1 stays though `fresh` is newer


ONE_EACH = TWO_ROUTERS.model_copy(
    update={"tunnels": TunnelsSpec(inbound=TunnelDirection(quantity=1, length=1))}
)


def test_a_fresher_tunnel_is_no_news_while_the_published_leases_serve() -> None:
    """One lease per router asked for, and each router's published lease lasts: a newer
    tunnel waits until the published one nears its end, then replaces it."""
    fresher = SelectedLease("a", lease("a9", 9, 500))
    links = [link("a", A1, fresher), link("b", B1)]
    held = plan(links, [A1, B1], 10.0, now=100.0, spec=ONE_EACH)
    assert held.leases is None
    assert held.wake_at == 100.0 + 300 - SELECTION_MARGIN_S  # when A1 and B1 near their end
    # At that time (the wall clock moved as much), the fresher lease goes out.
    later = plan(links, [A1, B1], 10.0, now=100.0 + 250, spec=ONE_EACH, now_ms=NOW_MS + 250_000)
    assert later.publish_reason is PublishReason.LEASES_ENDING
    assert later.leases is not None and fresher in later.leases


def test_fewer_leases_than_the_spec_asks_for_are_filled_up() -> None:
    # Two routers x 3 inbound tunnels: 6 asked for, 2 published.
    assert lease_target(TWO_ROUTERS, 2) == 6
    assert (
        lease_target(TWO_ROUTERS.model_copy(update={"routers": TWO_ROUTERS.routers * 4}), 8) == 16
    )
    result = plan([link("a", A1, A2), link("b", B1)], [A1, B1], 10.0, now=100.0)
    assert result.publish_reason is PublishReason.BELOW_TARGET


def test_changes_within_the_interval_are_coalesced() -> None:
    result = plan([link("a", A1, A2, waiting=True), link("b", B1)], [A1, B1], 90.0, now=100.0)
    assert result.leases is None
    assert result.wake_at == 90.0 + MIN_PUBLISH_INTERVAL_S == 110.0
    assert result.resend_current_to == {"a"}  # answered now with the current LeaseSet


def test_changes_after_the_interval_publish_now() -> None:
    links = [link("a", A1, A2), link("b", B1)]
    result = plan(links, [A1, B1], last_publish_at=80.0, now=100.0)
    assert result.publish_reason is PublishReason.BELOW_TARGET
    assert set(result.leases or ()) == {A1, A2, B1}
    slow = PublishTiming(min_interval_s=30)
    assert plan(links, [A1, B1], 80.0, now=100.0, timing=slow).wake_at == 110.0


def test_a_lost_router_in_the_published_set_publishes_at_once() -> None:
    lost = link("b", state=RouterState.DISCONNECTED, lost_at=97.5)
    result = plan([link("a", A1, A2), lost], [A1, B1], 95.0, now=100.0)
    assert set(result.leases or ()) == {A1, A2}
    assert result.publish_reason is PublishReason.ROUTER_LOST
    assert result.lost == ("b",)
    assert result.failover_s == 2.5
    assert result.targets == {"a"}


def test_a_router_removed_from_the_spec_publishes_at_once_without_a_failover() -> None:
    result = plan([link("a", A1, A2)], [A1, B1], 95.0, now=100.0)
    assert result.publish_reason is PublishReason.ROUTER_REMOVED
    assert result.lost == () and result.failover_s is None


def test_a_lost_router_not_in_the_published_set_is_coalesced() -> None:
    gone = link("c", state=RouterState.DISCONNECTED, lost_at=99.0)
    result = plan([link("a", A1, A2), gone], [A1], 95.0, now=100.0)
    assert result.leases is None
    assert result.wake_at == 115.0


def test_a_waiting_router_gets_short_lived_leases_rather_than_nothing() -> None:
    """Before any LeaseSet exists, leases between the hard floor (30 s) and the selection
    margin (50 s) are published for a router waiting for an answer (i2pd gives it 10 s)."""
    short = SelectedLease("a", lease("s", 1, 40))
    assert plan([link("a", short)], None, None, now=100.0).leases is None
    result = plan([link("a", short, waiting=True)], None, None, now=100.0)
    assert result.leases == (short,)
    assert result.publish_reason is PublishReason.FIRST_SHORT_LIVED
    too_short = SelectedLease("a", lease("t", 1, 20))
    assert plan([link("a", too_short, waiting=True)], None, None, now=100.0).leases is None


# --- client affinity ------------------------------------------------------------------------

# p publishes only; h and k serve clients, each handing them a LeaseSet of its own leases.
AFFINITY = MultihomedDestinationSpec(
    routers=[
        RouterSpec(name="p", i2cp=I2CPEndpoint(host="router-p")),
        RouterSpec(name="h", i2cp=I2CPEndpoint(host="router-h"), publish=False),
        RouterSpec(name="k", i2cp=I2CPEndpoint(host="router-k"), publish=False),
    ],
    lease_set=LeaseSetSpec(client_affinity=True),
)
# Within an affinity LeaseSet's lease lifetime (180 s), so no cap applies (see below).
P1 = SelectedLease("p", lease("p1", 1, 170))
H1 = SelectedLease("h", lease("h1", 1, 170))
H2 = SelectedLease("h", lease("h2", 2, 150))
K1 = SelectedLease("k", lease("k1", 1, 170))


def test_affinity_hosts_are_the_non_publishing_routers_and_only_with_affinity() -> None:
    assert affinity_hosts(AFFINITY) == {"h", "k"}
    plain = AFFINITY.model_copy(update={"lease_set": LeaseSetSpec()})
    assert affinity_hosts(plain) == frozenset()


def test_under_affinity_the_merged_leaseset_holds_only_the_serving_routers_leases() -> None:
    links = [link("p", P1), link("h", H1, H2), link("k", K1)]
    result = plan(links, None, None, now=100.0, spec=AFFINITY)
    assert set(result.leases or ()) == {H1, H2, K1}
    assert result.targets == {"p"}  # only the publisher holds the merged LeaseSet
    assert result.affinity == {"h": (H1, H2), "k": (K1,)}


def test_without_affinity_nothing_changes_for_non_publishing_routers() -> None:
    plain = AFFINITY.model_copy(update={"lease_set": LeaseSetSpec()})
    result = plan([link("p", P1), link("h", H1), link("k", K1)], None, None, 100.0, spec=plain)
    assert set(result.leases or ()) == {P1, H1, K1}
    assert result.targets == {"p", "h", "k"}
    assert result.affinity == {}


def test_the_publishers_leases_stand_in_while_no_serving_router_has_any() -> None:
    result = plan([link("p", P1), link("h"), link("k", waiting=True)], None, None, 100.0,
                  spec=AFFINITY)  # fmt: skip
    assert result.leases == (P1,)
    # A serving router without usable leases of its own holds the merged LeaseSet.
    assert result.targets == {"p", "h", "k"}
    assert result.affinity == {}


def test_a_waiting_serving_router_is_answered_with_its_own_leaseset_between_publishes() -> None:
    links = [link("p", P1), link("h", H1, H2, waiting=True), link("k", K1), link("x")]
    published = [H1, H2, K1]
    unchanged = plan(links, published, 99.0, now=100.0, spec=AFFINITY)
    assert unchanged.leases is None
    assert unchanged.affinity == {"h": (H1, H2)}
    assert unchanged.resend_current_to == frozenset()
    waiting_publisher = [link("p", P1, waiting=True), link("h", H1, H2), link("k", K1)]
    unchanged = plan(waiting_publisher, published, 99.0, now=100.0, spec=AFFINITY)
    assert (unchanged.resend_current_to, unchanged.affinity) == ({"p"}, {})


def test_a_serving_router_a_new_client_came_through_gets_its_own_leaseset_afresh() -> None:
    links = (link("p", P1), link("h", H1, H2), link("k", K1))
    given = PublishInput(links, (H1, H2, K1), 99.0, AFFINITY, 100.0, NOW_MS,
                         affinity_renew=frozenset({"h", "p"}))  # fmt: skip
    result = plan_publish(given)
    assert result.leases is None
    assert result.affinity == {"h": (H1, H2)}  # a publishing router has none to renew


def test_affinity_leasesets_end_soon_though_their_tunnels_live_on() -> None:
    """A client holds a LeaseSet until its latest lease ends: a serving router's own ends
    within the lifetime, so a client of a router that died fetches the merged one soon."""
    long = SelectedLease("h", lease("h9", 9, 590))
    links = [link("p", P1), link("h", long, H1), link("k", K1)]
    result = plan(links, None, None, now=100.0, spec=AFFINITY)
    assert set(result.leases or ()) == {long, H1, K1}  # the merged LeaseSet is not capped
    cap = NOW_MS + AFFINITY_LEASE_LIFETIME_S * 1000
    [capped, h1] = result.affinity["h"]
    assert (capped.lease.gateway, capped.lease.end_ms) == (long.lease.gateway, cap)
    assert h1 == H1  # ends before the cap: unchanged
    shorter = plan(links, None, None, 100.0, PublishTiming(affinity_lease_lifetime_s=60),
                   spec=AFFINITY)  # fmt: skip
    assert max(s.lease.end_ms for s in shorter.affinity["h"]) == NOW_MS + 60_000


def test_affinity_leasesets_are_refreshed_before_their_leases_run_short() -> None:
    assert AFFINITY_REFRESH_S + 51 < AFFINITY_LEASE_LIFETIME_S  # i2pd's lease threshold
    assert affinity_refresh({}, 100.0) == (frozenset(), None)
    handed = {"h": 100.0, "k": 130.0}
    assert affinity_refresh(handed, 150.0, 60.0) == (frozenset(), 160.0)
    assert affinity_refresh(handed, 160.0, 60.0) == ({"h"}, 190.0)
    # Due and not handed (its router down): tried again a refresh later, not in a loop.
    assert affinity_refresh({"h": 100.0}, 400.0, 60.0) == ({"h"}, 460.0)


def test_affinity_renewal_is_rate_limited_not_dropped() -> None:
    assert affinity_renew_at(None, 5.0) == 5.0
    assert affinity_renew_at(100.0, 100.5) == 100.0 + AFFINITY_RENEW_INTERVAL_S
    assert affinity_renew_at(100.0, 100.0 + AFFINITY_RENEW_INTERVAL_S + 1) == (
        100.0 + AFFINITY_RENEW_INTERVAL_S + 1
    )


def test_without_a_publisher_a_failed_publish_answers_only_the_waiting_serving_routers() -> None:
    """No router can take the merged LeaseSet: the retry every second must not re-sign
    every serving router's own LeaseSet each time (each costs its clients a bundle)."""
    links = [link("p", state=RouterState.CONNECTING), link("h", H1, waiting=True), link("k", K1)]
    result = plan(links, None, None, now=100.0, spec=AFFINITY)
    assert result.targets == frozenset()
    assert set(result.affinity) == {"h", "k"}  # were the publish to succeed
    assert result.affinity_answers == {"h": (H1,)}


def test_an_affinity_leaseset_keeps_leases_the_merged_one_would_drop_for_its_margin() -> None:
    """No publish slot delays an affinity LeaseSet: only the hard floor applies."""
    aging = SelectedLease("h", lease("h3", 3, SELECTION_MARGIN_S - 5))
    result = plan([link("p", P1), link("h", H1, aging), link("k", K1)], None, None, 100.0,
                  spec=AFFINITY)  # fmt: skip
    assert aging not in (result.leases or ())
    assert result.affinity["h"] == (H1, aging)


def test_losing_a_serving_router_publishes_at_once_and_reanswers_the_others() -> None:
    lost = link("h", state=RouterState.DISCONNECTED, lost_at=97.0)
    result = plan([link("p", P1), lost, link("k", K1)], [H1, H2, K1], 95.0, 100.0, spec=AFFINITY)
    assert result.publish_reason is PublishReason.ROUTER_LOST
    assert result.leases == (K1,)
    assert result.targets == {"p"}
    assert result.affinity == {"k": (K1,)}


def test_affinity_published_follows_both_the_merged_and_its_own_previous() -> None:
    assert affinity_published_s(None, None, 1000) == 1000
    assert affinity_published_s(1000, None, 1000) == 1001
    assert affinity_published_s(1000, 1001, 1000) == 1002
    assert affinity_published_s(900, 950, 1000) == 1000


@settings(max_examples=200)
@given(
    merged=st.one_of(st.none(), st.integers(0, 2**31)),
    previous=st.one_of(st.none(), st.integers(0, 2**31)),
    now=st.integers(0, 2**31),
)
def test_affinity_published_is_newer_than_what_the_client_may_hold(
    merged: int | None, previous: int | None, now: int
) -> None:
    published = affinity_published_s(merged, previous, now)
    assert merged is None or published > merged
    assert previous is None or published > previous
    assert published >= now


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    assert backoff_delay_s(0, 1.0) == BACKOFF_INITIAL_S
    assert backoff_delay_s(0, 0.0) == BACKOFF_INITIAL_S / 2
    assert [backoff_delay_s(n, 1.0, 1.0, 30.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay_s(10_000, 0.5, 1.0, 30.0) == 22.5  # no overflow
    assert backoff_delay_s(-1, 2.0, 1.0, 30.0) == 1.0  # inputs clamped


# --- timing helpers ---------------------------------------------------------------------------


def test_next_published_s() -> None:
    assert next_published_s(None, 1000) == 1000
    assert next_published_s(999, 1000) == 1000
    assert next_published_s(1000, 1000) == 1001
    assert next_published_s(1005, 1000) == 1006


@given(st.lists(st.integers(0, 2_000_000_000), min_size=1, max_size=50))
def test_next_published_s_strictly_increases(clock: list[int]) -> None:
    previous: int | None = None
    for now_s in clock:
        published = next_published_s(previous, now_s)
        assert published >= now_s
        if previous is not None:
            assert published > previous
        previous = published


def test_lease_set_expires_s() -> None:
    leases = [SelectedLease("a", Lease(gw("g"), 1, 1_000_600_999)), A1]
    published = 1_000_000
    assert lease_set_expires_s([leases[0]], published) == 600
    assert lease_set_expires_s(leases, NOW_MS // 1000) == 300
    assert lease_set_expires_s([leases[0]], 2_000_000) == 0  # never negative
    far = SelectedLease("a", Lease(gw("g"), 1, (published + 100_000) * 1000))
    assert lease_set_expires_s([far], published) == 0xFFFF  # fits the u16 field


def test_sessions_are_created_with_one_inbound_tunnel_held_back() -> None:
    options = {"inbound.quantity": "4", "outbound.quantity": "3", "inbound.length": "2"}
    assert one_tunnel_held_back(options) == {**options, "inbound.quantity": "3"}
    assert options["inbound.quantity"] == "4"  # not modified in place
    single = {"inbound.quantity": "1", "outbound.quantity": "3"}
    assert one_tunnel_held_back(single) == single


def test_ramp_turns_spread_across_the_routers() -> None:
    last = RAMP_FIRST_S + RAMP_SPREAD_S
    assert ramp_delay_s(0, 1) == last  # a lone router's own tunnels spread
    delays = [ramp_delay_s(i, 4) for i in range(4)]
    assert delays == sorted(delays) and len(set(delays)) == 4
    assert delays[-1] == last
    # Most routers fill up early; the last one's held-back tunnel ends late enough to cover
    # the rest.
    assert delays[2] - RAMP_FIRST_S < RAMP_SPREAD_S * 0.6
    assert ramp_delay_s(9, 4) == last  # an index past the end takes the last turn
    assert ramp_delay_s(0, 2, first_s=1.0, spread_s=4.0) == 2.0


# --- publish_is_inverted ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("implementation", "reply", "inverted"),
    [
        (RouterImplementation.AUTO, CLIENT_API_VERSION, False),  # i2pd < 2.58 echoes
        (RouterImplementation.I2PD, CLIENT_API_VERSION, False),
        (RouterImplementation.AUTO, "0.9.67", True),  # i2pd 2.58.0
        (RouterImplementation.I2PD, "0.9.67", True),
        (RouterImplementation.AUTO, "0.9.68", True),
        (RouterImplementation.AUTO, "0.10.0", True),
        (RouterImplementation.AUTO, "0.9.66", False),
        (RouterImplementation.AUTO, "0.9.57", False),  # Debian's i2pd 2.45.1 API version
        (RouterImplementation.JAVA, "0.9.67", False),
        (RouterImplementation.JAVA, "0.9.68", False),
    ],
)
def test_publish_is_inverted(
    implementation: RouterImplementation, reply: str, inverted: bool
) -> None:
    assert publish_is_inverted(implementation, CLIENT_API_VERSION, reply) is inverted


@pytest.mark.parametrize(
    ("implementation", "reply", "only_when_storing"),
    [
        (RouterImplementation.AUTO, CLIENT_API_VERSION, True),  # i2pd < 2.58 echoes
        (RouterImplementation.I2PD, CLIENT_API_VERSION, True),
        (RouterImplementation.I2PD, "0.9.57", True),
        (RouterImplementation.AUTO, "0.9.64", False),  # not an echo: Java 2.7.0, say
        (RouterImplementation.AUTO, "0.9.67", False),  # inverted: never sent the flag again
        (RouterImplementation.I2PD, "0.9.67", False),
        (RouterImplementation.JAVA, CLIENT_API_VERSION, False),
        (RouterImplementation.JAVA, "0.9.64", False),
    ],
)
def test_which_publishers_are_public_only_while_storing(
    implementation: RouterImplementation, reply: str, only_when_storing: bool
) -> None:
    assert public_only_when_storing(implementation, CLIENT_API_VERSION, reply) is only_when_storing


def test_an_echo_is_never_inverted_whatever_we_sent() -> None:
    assert publish_is_inverted(RouterImplementation.AUTO, "0.9.70", "0.9.70") is False


def test_client_api_version_predates_the_inversion() -> None:
    """Were we to announce 0.9.67+, an echoing old i2pd would be indistinguishable."""
    major, minor, patch = (int(x) for x in CLIENT_API_VERSION.split("."))
    assert (major, minor, patch) < (0, 9, 67)


# --- session_options --------------------------------------------------------------------------

PEER_1 = base64.b64encode(gw("peer1")).decode().replace("+", "-").replace("/", "~")
PEER_2 = base64.b64encode(gw("peer2")).decode().replace("+", "-").replace("/", "~")


def _spec(publish: bool = True, **kwargs: object) -> tuple[MultihomedDestinationSpec, RouterSpec]:
    router = RouterSpec(name="r1", i2cp=I2CPEndpoint(host="router-1"), publish=publish)
    other = RouterSpec(name="r2", i2cp=I2CPEndpoint(host="router-2"), publish=True)
    spec = MultihomedDestinationSpec(routers=[router, other], **kwargs)
    return spec, router


def test_session_options_full() -> None:
    spec, router = _spec(
        tunnels=TunnelsSpec(
            inbound=TunnelDirection(quantity=4, length=2, length_variance=1),
            outbound=TunnelDirection(quantity=2, length=0, length_variance=-1),
        ),
        peer_policy=PeerPolicy(explicit_peers=[PEER_1, PEER_2]),
    )
    assert session_options(spec, router, False, "mh-web") == {
        "i2cp.fastReceive": "true",
        "i2cp.leaseSetType": "3",
        "i2cp.leaseSetEncType": "4",
        "inbound.nickname": "mh-web",
        "outbound.nickname": "mh-web",
        "inbound.quantity": "4",
        "inbound.length": "2",
        "inbound.lengthVariance": "1",
        "outbound.quantity": "2",
        "outbound.length": "0",
        "outbound.lengthVariance": "-1",
        "explicitPeers": f"{PEER_1},{PEER_2}",
        "i2cp.dontPublishLeaseSet": "true",  # not the publisher
    }


def test_each_router_starts_the_explicit_peers_at_its_own_place() -> None:
    """i2pd builds through the list's first peers in order: not all routers through one."""
    spec, first = _spec(peer_policy=PeerPolicy(explicit_peers=[PEER_1, PEER_2]))
    second = spec.routers[1]
    assert session_options(spec, first, False, "n")["explicitPeers"] == f"{PEER_1},{PEER_2}"
    assert session_options(spec, second, False, "n")["explicitPeers"] == f"{PEER_2},{PEER_1}"
    third = RouterSpec(name="r3", i2cp=I2CPEndpoint(host="router-3"))
    three = spec.model_copy(update={"routers": [*spec.routers, third]})
    assert session_options(three, third, False, "n")["explicitPeers"] == f"{PEER_1},{PEER_2}"


def test_session_options_defaults_have_no_explicit_peers() -> None:
    spec, router = _spec()
    options = session_options(spec, router, False, "n")
    assert "explicitPeers" not in options
    assert options["inbound.quantity"] == options["outbound.quantity"] == "3"
    assert options["inbound.length"] == "3"
    assert options["inbound.lengthVariance"] == "0"


@pytest.mark.parametrize(
    ("publish", "publishing", "inverted", "value"),
    [
        (True, True, False, "false"),  # the publisher
        (True, True, True, "true"),  # the publisher on i2pd 2.58
        (True, False, False, "true"),  # a standby
        (True, False, True, "true"),  # i2pd 2.58: cannot be switched, so it publishes
        (False, True, False, "true"),  # publish: false is never the publisher
        (False, False, True, "false"),
    ],
)
def test_the_dont_publish_option_is_always_explicit_and_follows_the_inversion(
    publish: bool, publishing: bool, inverted: bool, value: str
) -> None:
    spec, router = _spec(publish=publish)
    options = session_options(spec, router, inverted, "n", publishing=publishing)
    assert options["i2cp.dontPublishLeaseSet"] == value


@pytest.mark.parametrize(
    ("reply", "flag_in_reconfigure"), [(CLIENT_API_VERSION, True), ("0.9.67", False)]
)
def test_a_router_that_reads_the_flag_inverted_is_never_reconfigured_with_it(
    reply: str, flag_in_reconfigure: bool
) -> None:
    """i2pd 2.58.0 inverts the flag only at CreateSession, later i2pd in ReconfigureSession
    too, with the same SetDate version: such a router keeps the value it was created with."""
    spec, router = _spec(publish=True)
    created = options_for(spec, router, reply, ramped=False, nickname="n", publishing=False)
    assert "i2cp.dontPublishLeaseSet" in created
    later = options_for(spec, router, reply, ramped=True, nickname="n", reconfigure=True)
    assert ("i2cp.dontPublishLeaseSet" in later) is flag_in_reconfigure
    assert later["inbound.quantity"] == "3"


def test_excluded_gateways_decode_base64_hashes() -> None:
    spec, _ = _spec(peer_policy=PeerPolicy(excluded_peers=[PEER_1, PEER_2]))
    assert excluded_gateways(spec) == frozenset({gw("peer1"), gw("peer2")})
    assert excluded_gateways(_spec()[0]) == frozenset()


@pytest.mark.parametrize(
    ("reply", "publish_value"), [(CLIENT_API_VERSION, "true"), ("0.9.67", "false")]
)
def test_options_for_a_session_follow_its_version_and_ramp(reply: str, publish_value: str) -> None:
    spec, router = _spec(publish=False)
    before = options_for(spec, router, reply, ramped=False, nickname="n")
    after = options_for(spec, router, reply, ramped=True, nickname="n")
    assert before["i2cp.dontPublishLeaseSet"] == after["i2cp.dontPublishLeaseSet"] == publish_value
    assert (before["inbound.quantity"], after["inbound.quantity"]) == ("2", "3")
    assert after == session_options(spec, router, publish_value == "false", "n")


# --- the publisher ------------------------------------------------------------------------


def test_publish_candidates_are_established_publish_true_routers_in_spec_order() -> None:
    spec = MultihomedDestinationSpec(
        routers=[RouterSpec(name=n, i2cp=I2CPEndpoint(host=n), publish=n != "c") for n in "dcba"]
    )
    assert publish_candidates(spec, {"a", "b", "c"}) == ("b", "a")
    assert publish_candidates(spec, ()) == ()
    # Routers that reported tunnels come first: one without cannot store yet.
    assert publish_candidates(spec, {"a", "b", "c"}, {"a", "c"}) == ("a", "b")
    assert publish_candidates(spec, {"a", "b", "c"}, {"a", "b"}) == ("b", "a")


def test_an_urgent_publish_moves_to_a_router_that_has_not_stored() -> None:
    lost = link("c", state=RouterState.DISCONNECTED, lost_at=99.0)
    c1 = SelectedLease("c", lease("c1", 1, 300))
    links = [link("a", A1, A2), link("b", B1), lost]
    stored = {"a": 10.0}  # long ago, as far as the balancer knows
    result = plan(links, [A1, B1, c1], 95.0, 100.0, spec=THREE_ROUTERS, publisher="a",
                  store_at=stored)  # fmt: skip
    assert result.publish_reason is PublishReason.ROUTER_LOST
    assert result.publisher == "b"
    calm = plan([link("a", A1, A2), link("b", B1)], [A1, B1], 80.0, 100.0, publisher="a",
                store_at=stored)  # fmt: skip
    assert calm.publish_reason is PublishReason.BELOW_TARGET and calm.publisher == "a"


def test_a_just_restarted_router_takes_an_urgent_store_only_when_no_settled_one_can() -> None:
    """i2pd drops a store while the destination has no outbound tunnel ("Destination is
    not ready"), though it may have reported inbound ones: a 9-s old session is not
    settled."""
    lost = link("c", state=RouterState.DISCONNECTED, lost_at=99.0)
    c1 = SelectedLease("c", lease("c1", 1, 300))
    fresh_b = link("b", B1, since_s=NOW_MS / 1000 - 9)
    result = plan([link("a", A1, A2), fresh_b, lost], [A1, B1, c1], 95.0, 100.0,
                  spec=THREE_ROUTERS, publisher="a", store_at={"a": 10.0})  # fmt: skip
    assert result.publish_reason is PublishReason.ROUTER_LOST
    assert result.publisher == "a"  # its known slot is free
    busy = plan([link("a", A1, A2), fresh_b, lost], [A1, B1, c1], 95.0, 100.0,
                spec=THREE_ROUTERS, publisher="a", store_at={"a": 95.0})  # fmt: skip
    assert busy.publisher == "b"  # the only free slot, settled or not
    settled_b = link("b", B1, since_s=NOW_MS / 1000 - PUBLISHER_SETTLE_S)
    moved = plan([link("a", A1, A2), settled_b, lost], [A1, B1, c1], 95.0, 100.0,
                 spec=THREE_ROUTERS, publisher="a", store_at={"a": 10.0})  # fmt: skip
    assert moved.publisher == "b"


def test_a_needed_publish_is_not_coalesced_when_nothing_published_lasts() -> None:
    """Every published lease within the selection margin: clients find none they would
    pick, so the replacement goes at once, urgently, not after the coalescing window."""
    ending = [SelectedLease("a", lease("o", 1, 25)), SelectedLease("b", lease("p", 2, 28))]
    fresh = SelectedLease("a", lease("n", 3, 600))
    links = [link("a", fresh, ending[0]), link("b", ending[1])]
    result = plan(links, ending, last_publish_at=95.0, now=100.0)
    assert result.publish_reason is PublishReason.LEASES_ENDING
    assert result.leases == (fresh,)
    assert plan(links, ending, 95.0, 100.0, publisher="a", store_at={"a": 95.0}).publisher == "b"
    # One published lease still lasting: the window holds as before.
    lasting = SelectedLease("b", lease("q", 4, 300))
    links = [link("a", fresh, ending[0]), link("b", ending[1], lasting)]
    held = plan(links, [*ending, lasting], last_publish_at=95.0, now=100.0)
    assert held.leases is None and held.wake_at == 115.0


def test_the_publisher_stays_for_ordinary_versions_and_an_urgent_one_finds_a_free_slot() -> None:
    assert choose_publisher(("a", "b"), None, {}, 100.0, urgent=False) == "a"
    assert choose_publisher(("a", "b"), "a", {"a": 95.0}, 100.0, urgent=False) == "a"
    # Urgent: a may have stored since, unseen; b has not stored in its session at all.
    assert choose_publisher(("a", "b"), "a", {"a": 10.0}, 100.0, urgent=True) == "b"
    assert choose_publisher(("a", "b"), "a", {}, 100.0, urgent=True) == "a"
    # Every candidate has stored: the publisher stays while its known slot is free, else
    # the first whose slot is.
    assert choose_publisher(("a", "b"), "a", {"a": 10.0, "b": 50.0}, 100.0, urgent=True) == "a"
    assert choose_publisher(("a", "b"), "a", {"a": 95.0, "b": 50.0}, 100.0, urgent=True) == "b"
    assert choose_publisher(("a", "b"), "a", {"a": 95.0, "b": 99.0}, 100.0, urgent=True) == "a"
    # A lost publisher's place.
    assert choose_publisher(("b", "c"), "a", {"b": 10.0}, 100.0, urgent=True) == "c"
    assert choose_publisher(("b", "c"), "a", {}, 100.0, urgent=False) == "b"
    assert choose_publisher(("a", "b"), "x", {"a": 95.0, "b": 99.0}, 100.0, urgent=True) == "a"
    assert choose_publisher((), "a", {}, 100.0, urgent=True) is None
    # Unsettled sessions come after the current publisher's free slot and after settled
    # free slots; at start (nobody settled) the first candidate publishes.
    assert choose_publisher(("a", "b"), "a", {"a": 10.0}, 100.0, True, 20.0, {"a"}) == "a"
    assert choose_publisher(("a", "b", "c"), "a", {"a": 95.0, "c": 10.0}, 100.0, True, 20.0,
                            {"a", "c"}) == "c"  # fmt: skip
    assert choose_publisher(("a", "b"), "a", {"a": 95.0}, 100.0, True, 20.0, {"a"}) == "b"
    assert choose_publisher(("a", "b"), None, {}, 100.0, False, 20.0, ()) == "a"


@given(
    st.lists(st.sampled_from("abcdef"), unique=True, max_size=6),
    st.one_of(st.none(), st.sampled_from("abcdefg")),
    st.dictionaries(st.sampled_from("abcdefg"), st.floats(0, 200)),
    st.floats(0, 200),
    st.booleans(),
)
def test_choose_publisher_properties(
    candidates: list[str], current: str | None, store_at: dict[str, float], now: float, urgent: bool
) -> None:
    chosen = choose_publisher(candidates, current, store_at, now, urgent, 20.0)
    if not candidates:
        assert chosen is None
        return
    assert chosen in candidates

    def free(name: str) -> bool:
        return name not in store_at or now >= store_at[name] + 20.0

    if current in candidates and not urgent:
        assert chosen == current  # it changes rarely
    if current is not None and current in candidates and chosen != current:
        # Moved only for an urgent publish: to a router that has not stored, or, when
        # every candidate has, from a busy slot to a free one.
        assert urgent
        assert chosen not in store_at or (
            all(c in store_at for c in candidates) and not free(current) and free(chosen)
        )
    if urgent and any(c not in store_at for c in candidates):
        assert chosen not in store_at


@given(
    st.lists(st.sampled_from("abcdef"), unique=True, min_size=1, max_size=6),
    st.one_of(st.none(), st.sampled_from("abcdefg")),
    st.dictionaries(st.sampled_from("abcdefg"), st.floats(0, 200)),
    st.floats(0, 200),
    st.frozensets(st.sampled_from("abcdefg")),
)
def test_an_urgent_store_goes_to_an_unsettled_router_only_when_nothing_else_can(
    candidates: list[str],
    current: str | None,
    store_at: dict[str, float],
    now: float,
    settled: frozenset[str],
) -> None:
    chosen = choose_publisher(candidates, current, store_at, now, True, 20.0, settled)
    assert chosen in candidates

    def free(name: str) -> bool:
        return name not in store_at or now >= store_at[name] + 20.0

    if chosen not in settled and chosen != current:
        assert not any(free(c) and c in settled for c in candidates)
        assert current not in candidates or not free(current)


def test_a_store_asked_for_within_the_slot_is_held_back_a_whole_slot() -> None:
    assert next_store_at(None, 100.0, 20.0) == 100.0
    assert next_store_at(80.0, 100.0, 20.0) == 100.0
    assert next_store_at(90.0, 100.0, 20.0) == 120.0  # i2pd restarts its 20-s wait


def test_what_was_just_published_needs_nothing_more() -> None:
    reports = {r: [lease(f"{r}{i}", i, 200 + 50 * i) for i in range(3)] for r in "ab"}
    desired = select_leases(reports, NOW_MS, 16)
    assert publish_need(desired, desired, reports, NOW_MS, 6) is None
    assert publish_need(desired, desired, reports, NOW_MS, 7) is None  # nothing more to give


def test_an_ending_lease_is_replaced_as_soon_as_a_replacement_exists() -> None:
    """As a router's own LeaseSet does: the first replacement goes out (the coalescing
    window gathers the rest of a rotation), not only once every router has replaced all of
    its ending leases; without a replacement nothing is published."""
    ending = [SelectedLease("a", lease(f"a{i}", i, 25)) for i in range(3)]  # due
    lasting = [SelectedLease("b", lease(f"b{i}", i, 300)) for i in range(3)]
    new = [lease(f"a-new{i}", 10 + i, 600) for i in range(3)]

    def need(a_reports: list[Lease], published: list[SelectedLease]) -> PublishReason | None:
        reports = {"a": [s.lease for s in ending] + a_reports, "b": [s.lease for s in lasting]}
        desired = select_leases(reports, NOW_MS, 16)
        return publish_need(published, desired, reports, NOW_MS, target=6)

    assert need([], ending + lasting) is None  # nothing to replace them with yet
    assert need(new[:1], ending + lasting) is PublishReason.LEASES_ENDING
    assert need(new, ending + lasting) is PublishReason.LEASES_ENDING
    # Once published with its replacements, nothing more is needed.
    reports = {"a": [s.lease for s in ending] + new, "b": [s.lease for s in lasting]}
    desired = select_leases(reports, NOW_MS, 16)
    assert publish_need(desired, desired, reports, NOW_MS, 6) is None


def test_an_ending_lease_is_replaced_when_a_router_would_replace_it() -> None:
    """Not from the moment a spare tunnel could take its place (the selection margin): 30 s
    before its end, when i2pd's successor comes at the latest, so the lease count dips as
    a router's does. Unless every published lease is within the margin."""
    lasting = SelectedLease("b", lease("b1", 1, 300))
    spare = lease("a-spare", 7, 500)

    def need(remaining_s: float, others: list[SelectedLease]) -> PublishReason | None:
        old = SelectedLease("a", lease("a1", 1, remaining_s))
        reports = {"a": [old.lease, spare], "b": [s.lease for s in others]}
        desired = select_leases(reports, NOW_MS, 16)
        return publish_need([old, *others], desired, reports, NOW_MS, target=2)

    assert need(45, [lasting]) is None
    assert need(REPLACE_ENDING_S + 0.5, [lasting]) is None
    assert need(REPLACE_ENDING_S, [lasting]) is PublishReason.LEASES_ENDING
    stranded = SelectedLease("b", lease("b2", 2, SELECTION_MARGIN_S))
    assert need(45, [stranded]) is PublishReason.LEASES_ENDING


def test_a_version_whose_leases_all_end_within_the_clients_cutoff_is_not_published() -> None:
    """The soak's 22-s gap: a lone router with both tunnels ending together. A version with
    only a lease 55 s from its end serves no i2pd client (51 s) and would take the store
    slot from the replacement's version, which came 4 s later."""
    old = [SelectedLease("a", lease(f"a{i}", i, 45)) for i in range(2)]  # inside the margin
    nearly = SelectedLease("a", lease("a-late", 7, 55))  # past the margin, not the cutoff
    lost = link("b", state=RouterState.DISCONNECTED, lost_at=99.0)
    held = plan([link("a", *old, nearly), lost], [*old], 80.0, now=100.0)
    assert held.leases is None
    assert held.reason == "no lease would outlast the clients' cutoff"
    # Also when the version would take a lost router's leases away: it serves no one.
    gone = SelectedLease("b", lease("b0", 1, 300))
    assert plan([link("a", *old, nearly), lost], [*old, gone], 80.0, now=100.0).leases is None
    # The replacement goes out at once (nothing published lasts), past the coalescing.
    fresh = SelectedLease("a", lease("a-new", 8, 600))
    result = plan([link("a", *old, nearly, fresh), lost], [*old], 99.0, now=100.0)
    assert result.leases is not None and fresh in result.leases
    assert USEFUL_VERSION_S == CLIENT_LEASE_CUTOFF_S + 10 == 61
    edge = SelectedLease("a", lease("a-edge", 9, USEFUL_VERSION_S + 1))
    assert plan([link("a", *old, edge), lost], [*old], 80.0, now=100.0).leases == (edge,)


def test_the_next_look_is_when_a_lasting_published_lease_nears_its_end() -> None:
    aging = SelectedLease("a", Lease(gw("old"), 9, NOW_MS + 25_000))  # already due
    result = plan([link("a", A1, aging), link("b", B1)], [A1, aging, B1], 10.0, now=50.0)
    assert result.leases is None
    # A1 and B1, not `aging`: both end at 300 s, so the last of them reaches the selection
    # margin before either is due for replacement.
    assert result.wake_at == 50.0 + 300 - SELECTION_MARGIN_S
    later = SelectedLease("b", lease("b-later", 5, 400))
    result = plan([link("a", A1), link("b", later)], [A1, later], 10.0, now=50.0)
    assert result.wake_at == 50.0 + 300 - REPLACE_ENDING_S  # A1 is due first
    only_aging = plan([link("a", aging), link("b")], [aging], 10.0, now=50.0)
    assert only_aging.wake_at is None or only_aging.wake_at > 50.0


@settings(max_examples=400)
@given(
    st.sampled_from(["plain", "affinity"]),
    st.dictionaries(st.sampled_from("abc"), st.lists(leases, max_size=6), min_size=1),
    st.sets(st.sampled_from("abc")),
    st.lists(st.sampled_from("abc"), max_size=6),
    st.floats(0, 500),
    st.sampled_from([None, *PublishReason]),
    st.integers(-700_000, 700_000),
)
def test_plan_publish_never_asks_to_wake_now_or_in_the_past(
    kind: str,
    reports: dict[str, list[Lease]],
    lost: set[str],
    published_from: list[str],
    since_last: float,
    last_reason: PublishReason | None,
    clock_offset_ms: int,
) -> None:
    """A wake-up at or before `now` would have the engine plan again at once, forever:
    with routers lost, under client affinity, at any wall-clock time."""
    names = dict(zip("abc", ("p", "h", "k") if kind == "affinity" else "abc", strict=True))
    spec = AFFINITY if kind == "affinity" else THREE_ROUTERS
    links = [
        link(names[r], state=RouterState.DISCONNECTED, lost_at=990.0)
        if r in lost
        else link(names[r], *(SelectedLease(names[r], x) for x in xs))
        for r, xs in reports.items()
    ]
    published = [SelectedLease(names[r], x) for r in published_from for x in reports.get(r, [])[:1]]
    now = 1000.0
    result = plan(
        links, published or None, now - since_last if published else None, now, spec=spec,
        now_ms=NOW_MS + clock_offset_ms, last_publish_reason=last_reason,
    )  # fmt: skip
    assert result.wake_at is None or result.wake_at > now
    assert result.retry_at is None or result.retry_at > now


def test_a_router_that_joins_a_full_lease_set_is_represented() -> None:
    """16 leases from other routers fill the LeaseSet; a router that comes back still gets
    its share at once, not at the next rotation."""
    reports = {r: [lease(f"{r}{i}", i, 300 + i) for i in range(3)] for r in "abcdefg"}
    published = select_leases(reports, NOW_MS, 16)
    assert publish_need(published, published, reports, NOW_MS, 16) is None
    reports["h"] = [lease(f"h{i}", i, 500) for i in range(3)]
    desired = select_leases(reports, NOW_MS, 16)
    assert "h" in {s.router for s in desired}
    assert publish_need(published, desired, reports, NOW_MS, 16) is PublishReason.ROUTER_JOINED
