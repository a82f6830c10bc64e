"""The Balancer against 2-6 fake routers over loopback. Time is a ManualClock the tests move:
timers (coalescing, refresh, ramp, backoff, heartbeat) fire when the test says, and the fake
routers stamp what they receive with that clock, so timings are asserted exactly. Only the
I2CP bytes travel in real time (the tests wait for them with `eventually`)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import pytest

from fakerouter import (
    I2PD_258_API_VERSION,
    MALFORMED_KINDS,
    FakeRouter,
    ReceivedLeaseSet,
    eventually,
    make_leases,
    options_of,
)
from i2p_multihome.balancer import policy
from i2p_multihome.balancer.engine import (
    Balancer,
    EndpointError,
    EndpointResolver,
    Timing,
    plain_endpoint,
)
from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    PublisherChanged,
    PublishReason,
    RouterLost,
    RouterRecovered,
    RouterRefused,
    SessionEstablished,
)
from i2p_multihome.i2cp.session import Endpoint
from i2p_multihome.logs import KeyValueFormatter
from i2p_multihome.model.v1alpha1 import (
    GatewayPolicy,
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
from i2p_multihome.wire import messages
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import LEASESET2_FLAG_UNPUBLISHED, LeaseSet2
from virtualclock import ManualClock

LEASES_PER_ROUTER = 3
# i2pd rejects a LeaseSet published more than 12 min away from now, or with a later lease.
I2PD_WINDOW_S = 12 * 60


def timing(
    min_publish_interval_s: float = 0.3,
    refresh_interval_s: float | None = None,
    ramp_first_s: float = 60.0,
    ramp_spread_s: float = 0.0,
    follow_up_s: float = 60.0,
) -> Timing:
    """Short timings, so that the test's clock moves little; the follow-up after a
    failover and the tunnel ramp only come in the tests about them."""
    return Timing(
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        heartbeat_s=0.5,
        handshake_timeout_s=2,
        min_publish_interval_s=min_publish_interval_s,
        refresh_interval_s=refresh_interval_s,
        follow_up_s=follow_up_s,
        ramp_first_s=ramp_first_s,
        ramp_spread_s=ramp_spread_s,
    )


def router_spec(router: FakeRouter, publish: bool = True) -> RouterSpec:
    return RouterSpec(
        name=router.name, i2cp=I2CPEndpoint(host="127.0.0.1", port=router.port), publish=publish
    )


def make_spec(
    routers: Iterable[FakeRouter],
    *,
    quantity: int = LEASES_PER_ROUTER,
    max_leases: int = 16,
    no_publish: Iterable[str] = (),
    client_affinity: bool = False,
) -> MultihomedDestinationSpec:
    silent = set(no_publish)
    direction = TunnelDirection(quantity=quantity, length=1)
    return MultihomedDestinationSpec(
        routers=[router_spec(r, r.name not in silent) for r in routers],
        tunnels=TunnelsSpec(inbound=direction, outbound=direction),
        lease_set=LeaseSetSpec(max_leases=max_leases, client_affinity=client_affinity),
    )


class Setup:
    """Fake routers (each reporting its own leases on session creation) and a running
    Balancer over them."""

    def __init__(self, keys: DestinationKeys) -> None:
        self.keys = keys
        self.clock = ManualClock()
        self.routers: dict[str, FakeRouter] = {}
        self.balancer: Balancer | None = None
        self.task: asyncio.Task[None] | None = None
        self.events: list[BalancerEvent] = []

    async def add_router(self, name: str, leases: int = LEASES_PER_ROUTER, **kw: Any) -> FakeRouter:
        router = await FakeRouter(
            name, leases=make_leases(name, leases), clock=self.clock.monotonic, **kw
        ).start()
        self.routers[name] = router
        return router

    async def start(
        self,
        spec: MultihomedDestinationSpec | None = None,
        resolve_endpoint: EndpointResolver = plain_endpoint,
        **timing_kw: float,
    ) -> Balancer:
        self.balancer = Balancer(
            "dest",
            spec or make_spec(self.routers.values()),
            self.keys,
            on_event=self.events.append,
            resolve_endpoint=resolve_endpoint,
            timing=timing(**timing_kw),
            clock=self.clock,
            rng=random.Random(7),
        )
        self.task = asyncio.create_task(self.balancer.run())
        return self.balancer

    def owners(self, lease_set: ReceivedLeaseSet) -> list[str]:
        """Which router each lease of a LeaseSet came from, in order."""
        by_gateway = {
            lease.gateway: name
            for name, router in self.routers.items()
            for request in router.requests
            for lease in request.leases
        }
        return [by_gateway[lease.gateway] for lease in lease_set.lease_set.leases]

    def has_all(self, router: FakeRouter, names: Iterable[str]) -> bool:
        last = router.last_lease_set
        return last is not None and set(self.owners(last)) == set(names)

    def merged(self, names: Sequence[str] | None = None) -> bool:
        """Every router in `names` holds the same LeaseSet, with leases from all of them."""
        chosen = [self.routers[n] for n in (names if names is not None else self.routers)]
        lasts = {r.last_lease_set.raw if r.last_lease_set else None for r in chosen}
        return len(lasts) == 1 and all(self.has_all(r, [c.name for c in chosen]) for r in chosen)

    async def converged(self, names: Sequence[str] | None = None, within_s: float = 3.0) -> None:
        """`merged(names)` without moving the clock: what happens at once."""
        await eventually(lambda: self.merged(names), within_s, f"LeaseSet from {names} on all")

    async def converges(self, names: Sequence[str] | None = None) -> None:
        """`merged(names)`, moving the clock (a coalesced publish may be due first)."""
        await self.advance_until(lambda: self.merged(names), f"LeaseSet from {names} on all")

    async def advance_until(
        self, predicate: Callable[[], object], what: str, step_s: float = 0.05, limit_s: float = 5.0
    ) -> float:
        """Move the clock in steps until `predicate()` holds; the virtual seconds it took.
        Between steps the loopback I/O that the wake-ups started gets a moment to finish."""
        started = self.clock.monotonic()
        while not predicate():
            if self.clock.monotonic() - started > limit_s:
                raise AssertionError(f"{what}: not within {limit_s} virtual seconds")
            await self.clock.advance(step_s)
            await asyncio.sleep(0.002)
        return self.clock.monotonic() - started

    def events_of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def close(self) -> None:
        if self.balancer is not None:
            await self.balancer.stop(destroy_sessions=False)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for router in self.routers.values():
            await router.close()


@pytest.fixture
def keys() -> DestinationKeys:
    return DestinationKeys.generate()


@pytest.fixture
async def setup(keys: DestinationKeys) -> AsyncIterator[Setup]:
    harness = Setup(keys)
    yield harness
    await harness.close()


def distinct(lease_sets: Iterable[ReceivedLeaseSet]) -> list[ReceivedLeaseSet]:
    """First arrival of each distinct LeaseSet, in arrival order."""
    seen: set[bytes] = set()
    result = []
    for record in lease_sets:
        if record.raw not in seen:
            seen.add(record.raw)
            result.append(record)
    return result


def assert_all_requests_answered_fast(routers: Iterable[FakeRouter], limit_s: float = 0.5) -> None:
    for router in routers:
        assert router.missed_deadlines == []
        assert router.errors == []
        for request in router.requests:
            assert request.answered.done(), f"{router.name}: request not answered"
            answered_after = request.answered.result().answered_after_s
            assert answered_after is not None and answered_after < limit_s, answered_after


# --- merging and publishing --------------------------------------------------------------


async def test_merged_lease_set_reaches_every_router(setup: Setup, keys: DestinationKeys) -> None:
    for name in ("r1", "r2", "r3"):
        await setup.add_router(name)
    balancer = await setup.start()

    await setup.converged()

    routers = list(setup.routers.values())
    assert_all_requests_answered_fast(routers)
    final = [r.last_lease_set for r in routers]
    assert all(f is not None for f in final)
    raw = {f.raw for f in final if f is not None}
    assert len(raw) == 1  # identical bytes on every router
    merged = final[0]
    assert merged is not None
    assert merged.signature_ok
    assert merged.lease_set.destination == keys.destination
    assert len(merged.lease_set.leases) == 3 * LEASES_PER_ROUTER
    assert sorted(setup.owners(merged)) == sorted(["r1", "r2", "r3"] * LEASES_PER_ROUTER)
    # X25519 first (preferred), then ElGamal for clients that speak nothing else.
    assert merged.lease_set.encryption_keys == (keys.encryption_key, keys.elgamal_key)
    assert [(k.crypto_type, k.key) for k in merged.private_keys] == [
        (4, keys.encryption_private),
        (0, keys.elgamal_private),
    ]
    now = time.time()
    ls = merged.lease_set
    assert abs(ls.published - now) < I2PD_WINDOW_S
    assert all(lease.end_s <= now + I2PD_WINDOW_S for lease in ls.leases)
    assert ls.published + ls.expires == max(lease.end_s for lease in ls.leases)

    # Every LeaseSet any router saw was one of the balancer's publishes (no per-router
    # variants), and `published` strictly increases across them.
    everything = distinct(
        sorted((rec for r in routers for rec in r.lease_sets), key=lambda rec: rec.at)
    )
    assert len(everything) == balancer.publishes
    published = [rec.lease_set.published for rec in everything]
    assert published == sorted(set(published)), published
    for router in routers:
        own = [rec.lease_set.published for rec in distinct(router.lease_sets)]
        assert own == sorted(set(own))

    snapshot = balancer.snapshot()
    assert {r.name: r.state for r in snapshot.routers} == dict.fromkeys(
        ("r1", "r2", "r3"), RouterState.ESTABLISHED
    )
    assert snapshot.published_s == ls.published
    assert len(snapshot.published) == len(ls.leases)


async def test_merged_lease_set_is_capped_and_fair(setup: Setup) -> None:
    names = [f"r{i}" for i in range(1, 7)]
    for name in names:
        await setup.add_router(name, leases=4)  # 24 leases on offer
    await setup.start()

    await setup.converged(within_s=5.0)

    merged = setup.routers["r1"].last_lease_set
    assert merged is not None and merged.signature_ok
    assert len(merged.lease_set.leases) == 16
    counts = {name: setup.owners(merged).count(name) for name in names}
    assert set(counts.values()) <= {2, 3}, counts  # round-robin: nobody starved
    assert_all_requests_answered_fast(setup.routers.values())


async def test_max_leases_from_spec(setup: Setup) -> None:
    for name in ("r1", "r2", "r3"):
        await setup.add_router(name)
    await setup.start(make_spec(setup.routers.values(), max_leases=4))

    def four_from_all() -> bool:
        last = setup.routers["r1"].last_lease_set
        return last is not None and set(setup.owners(last)) == {"r1", "r2", "r3"}

    await eventually(four_from_all, 3.0, "a LeaseSet with leases from every router")
    last = setup.routers["r1"].last_lease_set
    assert last is not None
    assert len(last.lease_set.leases) == 4


async def test_changes_are_coalesced_but_requests_answered_at_once(setup: Setup) -> None:
    interval = 1.0
    r1 = await setup.add_router("r1")
    r2 = await setup.add_router("r2")
    balancer = await setup.start(min_publish_interval_s=interval)
    await setup.converged()
    await setup.clock.advance(interval)  # nothing pending, the interval has passed

    # A change after a quiet interval goes out at once ...
    publishes = balancer.publishes
    [request] = await r2.request_leases(make_leases("r2", 3, first_tunnel_id=2000))
    current = await asyncio.wait_for(request.answered, 0.5)
    # Counted once every hand-over of it has been written.
    await eventually(lambda: balancer.publishes == publishes + 1, 0.5, "the publish counted")
    assert {lease.tunnel_id for lease in current.lease_set.leases} >= {2000, 2001, 2002}
    await eventually(lambda: r1.last_lease_set and r1.last_lease_set.raw == current.raw, 0.5)

    # ... two more inside the next interval are answered at once with that LeaseSet, and
    # go out together in ONE publish, exactly an interval after it.
    await setup.clock.advance(0.1)
    [first] = await r1.request_leases(make_leases("r1", 3, first_tunnel_id=3000))
    first_answer = await asyncio.wait_for(first.answered, 0.5)
    await setup.clock.advance(0.1)
    [second] = await r2.request_leases(make_leases("r2", 3, first_tunnel_id=4000))
    second_answer = await asyncio.wait_for(second.answered, 0.5)
    assert first_answer.raw == current.raw
    assert second_answer.raw == current.raw
    assert balancer.publishes == publishes + 1

    await setup.clock.advance(interval - 0.2 - 0.01)
    await asyncio.sleep(0.05)
    assert balancer.publishes == publishes + 1, "published before the interval was over"
    await setup.clock.advance(0.01)
    await eventually(
        lambda: r1.last_lease_set is not None and r1.last_lease_set.raw != current.raw,
        1.0,
        "the coalesced LeaseSet on r1",
    )
    fresh = r1.last_lease_set
    assert fresh is not None
    assert fresh.at - current.at == pytest.approx(interval)
    tunnels = {lease.tunnel_id for lease in fresh.lease_set.leases}
    assert tunnels == {3000, 3001, 3002, 4000, 4001, 4002}
    assert fresh.lease_set.published > current.lease_set.published
    await eventually(lambda: r2.last_lease_set and r2.last_lease_set.raw == fresh.raw, 0.5)
    assert balancer.publishes == publishes + 2
    assert_all_requests_answered_fast([r1, r2])


async def test_unchanged_leases_are_not_republished(setup: Setup) -> None:
    r1 = await setup.add_router("r1")
    balancer = await setup.start(min_publish_interval_s=0.1)
    await setup.converged(["r1"])
    # The router may record the LeaseSet before the balancer counts it as published.
    await eventually(lambda: balancer.publishes == 1, 0.5, "the first publish counted")
    publishes = balancer.publishes

    [request] = await r1.request_leases()  # the same leases again
    answer = await asyncio.wait_for(request.answered, 0.5)

    await setup.clock.advance(0.3)
    await asyncio.sleep(0.05)
    assert balancer.publishes == publishes
    assert answer.raw == r1.lease_sets[0].raw


async def test_unchanged_lease_set_is_published_afresh_after_the_refresh_interval(
    setup: Setup,
) -> None:
    """Without any change, the same leases go out again with a newer `published`, so a
    floodfill that missed the last store or flood catches up."""
    refresh = 5.0
    r1 = await setup.add_router("r1")
    r2 = await setup.add_router("r2")
    balancer = await setup.start(min_publish_interval_s=0.1, refresh_interval_s=refresh)
    await setup.converged()
    first = r1.last_lease_set
    assert first is not None
    publishes = balancer.publishes

    await setup.clock.advance(refresh - 0.01)
    await asyncio.sleep(0.05)
    assert balancer.publishes == publishes
    await setup.clock.advance(0.01)
    await eventually(lambda: balancer.publishes == publishes + 1, 1.0, "a refresh publish")
    await eventually(lambda: r1.last_lease_set is not first, 1.0, "the refresh on r1")
    fresh = r1.last_lease_set
    assert fresh is not None and fresh.raw != first.raw
    assert fresh.at - first.at == pytest.approx(refresh)
    assert fresh.lease_set.published > first.lease_set.published
    assert fresh.lease_set.leases == first.lease_set.leases
    await eventually(
        lambda: r2.last_lease_set is not None and r2.last_lease_set.raw == fresh.raw,
        0.5,
        "the refreshed LeaseSet on r2",
    )
    [refreshed] = [
        e for e in setup.events_of(LeaseSetPublished) if e.reason is PublishReason.REFRESH
    ]
    assert refreshed.handed_to == ("r1", "r2")


async def test_sessions_start_one_tunnel_short_and_ramp_up_in_turn(setup: Setup) -> None:
    """Tunnels built together end together: each session gets its last inbound tunnel
    later, routers in spec order, so the merged LeaseSet's leases end at spread times."""
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    await setup.start(ramp_first_s=0.2, ramp_spread_s=0.9)
    started = setup.clock.monotonic()
    for router in (r1, r2, r3):
        await eventually(lambda r=router: r.creates, 2.0, f"{router.name}'s CreateSession")
        created = router.creates[0].config.options
        assert created["inbound.quantity"] == str(LEASES_PER_ROUTER - 1)
        assert created["outbound.quantity"] == str(LEASES_PER_ROUTER)
    # Turns by policy.ramp_delay_s: r1 at 0.3 s, r2 at 0.6 s, r3 at 1.1 s after the sessions.
    expected = {
        name: policy.ramp_delay_s(i, 3, 0.2, 0.9) for i, name in enumerate(("r1", "r2", "r3"))
    }
    assert expected["r1"] < expected["r2"] < expected["r3"]

    def ramped(router: FakeRouter) -> list[float]:
        return [
            m.at
            for m in router.received
            if isinstance(m.message, messages.ReconfigureSession)
            and m.message.config.options["inbound.quantity"] == str(LEASES_PER_ROUTER)
        ]

    for router in (r1, r2, r3):
        await setup.advance_until(lambda r=router: ramped(r), f"{router.name}'s ramp", 0.01)
        [turn] = ramped(router)
        assert turn - started == pytest.approx(expected[router.name], abs=0.011)
        assert options_of(router)["inbound.quantity"] == str(LEASES_PER_ROUTER)
        assert len(router.creates) == 1
    assert r1.errors == r2.errors == r3.errors == []


async def test_short_lived_leases_are_still_answered(setup: Setup) -> None:
    """Leases too close to their end to publish normally must not leave a router waiting
    into i2pd's 10 s timeout."""
    # 40 s left: inside the selection margin (50 s), outside the hard floor (30 s).
    r1 = await setup.add_router("r1", leases=0)
    r1.leases = make_leases("r1", 2, lifetime_s=40)
    await setup.start()
    await eventually(lambda: r1.lease_sets, 2.0, "an answer to r1")
    first = r1.lease_sets[0]
    assert first.signature_ok
    assert len(first.lease_set.leases) == 2

    # 20 s left: never published; r2 is answered with the current LeaseSet (r1's).
    r2 = await setup.add_router("r2", leases=0)
    r2.leases = make_leases("r2", 2, lifetime_s=20)
    assert setup.balancer is not None
    await setup.balancer.apply_spec(make_spec([r1, r2]))
    await eventually(lambda: r2.lease_sets, 2.0, "an answer to r2")
    assert setup.owners(r2.lease_sets[0]) == ["r1", "r1"]
    assert_all_requests_answered_fast([r1, r2])


# --- failures ----------------------------------------------------------------------------


async def test_dead_router_dropped_at_once_then_rejoins(setup: Setup) -> None:
    interval = 1.5
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(min_publish_interval_s=interval)
    await setup.converged()
    survivors_ids = (r1.session_ids, r2.session_ids)
    before = r1.last_lease_set
    assert before is not None
    await setup.clock.advance(0.5)  # well inside the coalescing interval

    await r3.die()
    died_at = setup.clock.monotonic()

    # Published at once: without moving the clock, not held back by the coalescing.
    await setup.converged(["r1", "r2"], within_s=1.0)
    after = r1.last_lease_set
    assert after is not None and after.raw != before.raw
    assert after.at == died_at
    assert "r3" not in setup.owners(after)
    assert after.lease_set.published > before.lease_set.published
    state = {r.name: r for r in balancer.snapshot().routers}["r3"]
    assert state.state is not RouterState.ESTABLISHED
    assert state.last_error
    [lost] = setup.events_of(RouterLost)
    assert lost.router == "r3" and lost.reason == state.last_error
    [failover] = setup.events_of(FailoverPublished)
    assert failover.lost == ("r3",) and failover.failover_s == 0.0
    assert failover.routers == ("r1", "r2") and failover.handed_to == ("r1", "r2")
    assert failover.move_to == ("r1", "r2")

    await setup.clock.advance(1.0)  # a few reconnect attempts against a closed port
    await asyncio.sleep(0.05)
    state = {r.name: r for r in balancer.snapshot().routers}["r3"]
    assert state.state is not RouterState.ESTABLISHED
    assert state.leases == ()
    await r3.revive()
    await setup.advance_until(lambda: len(r3.session_ids) == 2, "r3 to reconnect")
    await setup.converges()

    assert (r1.session_ids, r2.session_ids) == survivors_ids  # never restarted
    assert len(r1.creates) == len(r2.creates) == 1
    [recovered] = setup.events_of(RouterRecovered)
    assert recovered.router == "r3" and recovered.downtime_s > 1.0
    assert [e.router for e in setup.events_of(SessionEstablished)] == ["r1", "r2", "r3"]
    assert_all_requests_answered_fast([r1, r2, r3])


# --- one publisher at a time ----------------------------------------------------------------


def publishing(router: FakeRouter) -> bool:
    """The router's session options, as last set, make it publish."""
    return options_of(router).get("i2cp.dontPublishLeaseSet") == "false"


def stores_latest(router: FakeRouter) -> bool:
    """The router was public when it was handed its latest LeaseSet (i2pd stores it then)."""
    latest = router.last_lease_set
    return latest is not None and told_to_publish_before(router, latest)


def told_to_publish_before(router: FakeRouter, lease_set: ReceivedLeaseSet) -> bool:
    """The router's last ReconfigureSession before `lease_set` arrived made it publish (in
    the order the router read them: the test clock may not move between them)."""
    wanted = next(i for i, x in enumerate(router.lease_sets) if x is lease_set)
    handed, public = -1, False
    for record in router.received:
        message = record.message
        if isinstance(message, messages.ReconfigureSession):
            public = message.config.options.get("i2cp.dontPublishLeaseSet") == "false"
        elif isinstance(message, messages.CreateLeaseSet2):
            handed += 1
            if handed == wanted:
                return public
    raise AssertionError("the LeaseSet is not among the messages the router read")


async def test_one_router_publishes_and_the_next_takes_over_when_it_is_lost(
    setup: Setup,
) -> None:
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(min_publish_interval_s=5.0)
    await setup.converged()
    await eventually(lambda: stores_latest(r1), 1.0, "r1 told to publish")
    assert not stores_latest(r2) and not stores_latest(r3)
    # Created unpublished, then made the publisher before its first LeaseSet arrived.
    assert r1.creates[0].config.options["i2cp.dontPublishLeaseSet"] == "true"
    first = r1.lease_sets[0]
    assert told_to_publish_before(r1, first)
    assert balancer.snapshot().publisher == "r1"
    [changed] = setup.events_of(PublisherChanged)
    assert (changed.publisher, changed.previous) == ("r1", None)

    await setup.clock.advance(10.0)  # r2's slot is free (it never published)
    await r1.die()
    await setup.converged(["r2", "r3"], within_s=1.0)
    failover = r2.last_lease_set
    assert failover is not None and "r1" not in setup.owners(failover)
    assert told_to_publish_before(r2, failover)
    assert not stores_latest(r3)
    assert balancer.snapshot().publisher == "r2"
    assert [(e.publisher, e.previous) for e in setup.events_of(PublisherChanged)] == [
        ("r1", None), ("r2", "r1"),
    ]  # fmt: skip

    # r1 comes back as a standby: the publisher does not move back.
    await r1.revive()
    await setup.advance_until(lambda: len(r1.session_ids) == 2, "r1 to reconnect", 0.5, 60.0)
    await setup.converges()
    assert r1.creates[-1].config.options["i2cp.dontPublishLeaseSet"] == "true"
    assert not stores_latest(r1) and stores_latest(r2) and not stores_latest(r3)
    assert balancer.snapshot().publisher == "r2"


async def test_a_failover_goes_to_a_router_whose_store_slot_is_free(setup: Setup) -> None:
    """i2pd stores a destination at most once per 20 s and holds an earlier store back 20
    s: a LeaseSet without a lost router's leases goes through a standby that has not just
    published, and the old publisher is told not to publish before it is handed it."""
    interval = 5.0
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(min_publish_interval_s=interval)
    await setup.converged()
    await eventually(lambda: stores_latest(r1), 1.0, "r1 told to publish")
    await setup.clock.advance(1.0)  # r1 stored 1 s ago: its slot is busy for 4 s more

    await r3.die()
    await setup.converged(["r1", "r2"], within_s=1.0)
    failover = r2.last_lease_set
    assert failover is not None and "r3" not in setup.owners(failover)
    assert told_to_publish_before(r2, failover)
    assert not stores_latest(r1)
    last_to_r1 = [m for m in r1.received if isinstance(m.message, messages.ReconfigureSession)]
    assert last_to_r1[-1].at <= r1.lease_sets[-1].at  # stopped before it was handed the LeaseSet
    assert balancer.snapshot().publisher == "r2"


async def test_a_failover_is_stored_once_more_a_minute_later_and_then_left_alone(
    setup: Setup,
) -> None:
    """A floodfill that missed the failover's flood would serve the dead leases until the
    next version: the same leases go out once more, newer, `follow_up_s` later."""
    r1, _r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(min_publish_interval_s=5.0, follow_up_s=30.0)
    await setup.converged()
    await r3.die()
    await setup.converged(["r1", "r2"], within_s=1.0)
    failover = r1.last_lease_set
    assert failover is not None
    publishes = balancer.publishes

    await setup.advance_until(lambda: r1.last_lease_set is not failover, "the follow-up", 1.0, 40)
    again = r1.last_lease_set
    assert again is not None and again.at - failover.at == pytest.approx(30.0, abs=1.0)
    assert again.lease_set.leases == failover.lease_set.leases
    assert again.lease_set.published > failover.lease_set.published
    [refresh] = [e for e in setup.events_of(LeaseSetPublished) if e.reason is PublishReason.REFRESH]
    assert refresh.handed_to == ("r1", "r2")
    await setup.clock.advance(100.0)
    await asyncio.sleep(0.05)
    assert balancer.publishes == publishes + 1


async def test_a_failover_moves_to_a_router_that_has_not_stored_and_then_stays(
    setup: Setup,
) -> None:
    """A router that has stored may have stored again unseen (i2pd's verification), so a
    failover goes to one that has not, whatever the known slots say. Once every candidate
    has stored, it stays with a publisher whose known slot is free."""
    interval = 5.0
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(
        make_spec([r1, r2, r3], no_publish=("r3",)), min_publish_interval_s=interval
    )
    await setup.converged()
    await eventually(lambda: stores_latest(r1), 1.0, "r1 told to publish")
    await setup.clock.advance(10 * interval)  # r1's known slot is long free

    await r3.die()
    await setup.converged(["r1", "r2"], within_s=1.0)
    failover = r2.last_lease_set
    assert failover is not None and told_to_publish_before(r2, failover)
    assert stores_latest(r2) and not stores_latest(r1)
    assert balancer.snapshot().publisher == "r2"

    await r3.revive()
    await setup.advance_until(lambda: len(r3.session_ids) == 2, "r3 to reconnect", 0.5, 60.0)
    await setup.converges()
    await setup.clock.advance(10 * interval)
    await r3.die()
    await setup.converged(["r1", "r2"], within_s=1.0)
    assert stores_latest(r2) and not stores_latest(r1)
    assert balancer.snapshot().publisher == "r2"
    assert [(e.publisher, e.previous) for e in setup.events_of(PublisherChanged)] == [
        ("r1", None), ("r2", "r1"),
    ]  # fmt: skip


async def test_the_publisher_is_public_only_while_handed_a_leaseset_it_must_store(
    setup: Setup,
) -> None:
    """i2pd stores every LeaseSet it is handed while public, and asks for one whenever its
    tunnels change: the answer with the current LeaseSet is handed unpublished."""
    r1, r2 = [await setup.add_router(n) for n in ("r1", "r2")]
    balancer = await setup.start()
    await setup.converged()
    await eventually(lambda: stores_latest(r1), 1.0, "r1 stores the first LeaseSet")
    assert balancer.snapshot().publisher == "r1"
    assert not publishing(r1) and not publishing(r2)  # between hand-overs
    first = r1.last_lease_set
    assert first is not None

    [request] = await r1.request_leases()  # the same leases: the current LeaseSet answers
    again = await asyncio.wait_for(request.answered, 1.0)
    assert again.lease_set.published == first.lease_set.published
    assert not told_to_publish_before(r1, again) and not publishing(r1)

    # A new version is stored again.
    await r2.request_leases(make_leases("r2", LEASES_PER_ROUTER - 1))  # one tunnel gone
    await setup.advance_until(lambda: r1.last_lease_set is not again, "the next version")
    assert stores_latest(r1) and not publishing(r1)


async def test_a_java_publisher_stays_public_between_versions(setup: Setup) -> None:
    """Java checks the flag again when its delayed store runs: it is not switched off."""
    r1, r2 = [await setup.add_router(n, version="0.9.64") for n in ("r1", "r2")]
    java = [
        r.model_copy(update={"implementation": RouterImplementation.JAVA})
        for r in make_spec([r1, r2]).routers
    ]
    await setup.start(make_spec([r1, r2]).model_copy(update={"routers": java}))
    await setup.converged()
    await eventually(lambda: stores_latest(r1), 1.0, "r1 stores the first LeaseSet")
    assert publishing(r1) and not publishing(r2)
    [request] = await r1.request_leases()
    again = await asyncio.wait_for(request.answered, 1.0)
    assert told_to_publish_before(r1, again) and publishing(r1)


async def test_a_router_that_reported_no_tunnels_is_not_made_the_publisher(setup: Setup) -> None:
    """i2pd drops the store of a destination without tunnels ("Destination is not ready")
    and does not try again until it is handed another LeaseSet: the first router of the
    spec waits its turn while it has reported no leases."""
    r1 = await setup.add_router("r1", auto_request=False)
    r2 = await setup.add_router("r2")
    balancer = await setup.start()
    await setup.converged(["r2"])
    await eventually(lambda: stores_latest(r2), 1.0, "r2 told to publish")
    assert not stores_latest(r1) and balancer.snapshot().publisher == "r2"

    await r1.request_leases()
    await setup.converges(["r1", "r2"])
    assert balancer.snapshot().publisher == "r2"  # and it stays
    assert not stores_latest(r1)


async def test_no_router_may_publish_when_every_publish_true_router_is_down(setup: Setup) -> None:
    r1, r2 = [await setup.add_router(n) for n in ("r1", "r2")]
    balancer = await setup.start(make_spec([r1, r2], no_publish=("r2",)))
    await setup.converged()
    await eventually(lambda: balancer.snapshot().publisher == "r1", 1.0, "r1 publishes")
    assert not stores_latest(r2)

    await r1.die()
    await eventually(lambda: balancer.snapshot().publisher is None, 1.0, "no publisher")
    assert not stores_latest(r2)  # publish: false means never
    assert setup.events_of(PublisherChanged)[-1] == PublisherChanged(None, "r1")


async def test_client_affinity_serving_routers_hold_their_own_leases_only(setup: Setup) -> None:
    """Under clientAffinity the publisher holds the merged LeaseSet of the serving routers'
    leases; each serving router holds one of its own leases, flagged unpublished and newer,
    and re-signed after every merged one. A lost serving router's clients move to the
    serving survivors, never to the publish-only router."""
    p, h1, h2 = [await setup.add_router(n) for n in ("p", "h1", "h2")]
    spec = make_spec(setup.routers.values(), no_publish=("h1", "h2"), client_affinity=True)
    await setup.start(spec, min_publish_interval_s=1.5)

    def settled(serving: Sequence[FakeRouter]) -> bool:
        merged = p.last_lease_set
        if merged is None or set(setup.owners(merged)) != {r.name for r in serving}:
            return False
        for router in serving:
            own = router.last_lease_set
            if own is None or set(setup.owners(own)) != {router.name}:
                return False
            if own.lease_set.published <= merged.lease_set.published:
                return False
        return True

    await setup.advance_until(lambda: settled([h1, h2]), "affinity LeaseSets on h1 and h2")
    merged = p.last_lease_set
    assert merged is not None and merged.lease_set.flags == 0
    for router in (h1, h2):
        own = router.last_lease_set
        assert own is not None
        assert own.lease_set.flags == LEASESET2_FLAG_UNPUBLISHED
        assert len(own.lease_set.leases) == LEASES_PER_ROUTER
        assert own.lease_set.verify()
    assert all(request.answered.done() for r in (p, h1, h2) for request in r.requests)

    # A new client through h1: h1's own LeaseSet is signed afresh, at most every 10 s.
    balancer = setup.balancer
    assert balancer is not None
    handed = len(h1.lease_sets)
    await setup.clock.advance(policy.AFFINITY_RENEW_INTERVAL_S)
    balancer.renew_affinity("h1")
    await setup.advance_until(lambda: len(h1.lease_sets) > handed, "h1's renewed LeaseSet")
    renewed = h1.lease_sets[-1].lease_set
    assert renewed.flags == LEASESET2_FLAG_UNPUBLISHED
    assert renewed.published > h1.lease_sets[handed - 1].lease_set.published
    handed = len(h1.lease_sets)
    balancer.renew_affinity("h1")  # too soon: waits for its turn
    balancer.renew_affinity("p")  # publishes only: nothing of its own to renew
    await setup.clock.advance(0.5)
    await asyncio.sleep(0.05)
    assert len(h1.lease_sets) == handed
    waited = await setup.advance_until(
        lambda: len(h1.lease_sets) > handed, "h1's deferred renewal", step_s=0.5, limit_s=15
    )
    assert (
        policy.AFFINITY_RENEW_INTERVAL_S - 1.5
        <= waited + 0.5
        <= policy.AFFINITY_RENEW_INTERVAL_S + 1
    )

    await h1.die()
    await setup.advance_until(lambda: settled([h2]), "the LeaseSets without h1")
    [failover] = setup.events_of(FailoverPublished)
    assert failover.lost == ("h1",)
    assert failover.routers == ("h2",) and failover.handed_to == ("p",)
    assert failover.move_to == ("h2",)
    assert_all_requests_answered_fast([p, h2])

    # Affinity off: h2 holds the merged LeaseSet again, newer than its own last one (which
    # was newer than every merged one so far), or its clients would keep the old.
    own = h2.last_lease_set
    assert own is not None
    plain = make_spec(setup.routers.values(), no_publish=("h1", "h2"))
    await balancer.apply_spec(plain)
    await setup.advance_until(
        lambda: h2.last_lease_set is not None and h2.last_lease_set.lease_set.flags == 0,
        "the merged LeaseSet on h2",
    )
    merged = h2.last_lease_set
    assert merged is not None and merged.lease_set.published > own.lease_set.published


async def test_client_affinity_leasesets_end_soon_and_are_refreshed_without_clients(
    setup: Setup,
) -> None:
    """A serving router's own LeaseSet ends within its lifetime and is signed afresh every
    refresh, clients or not: a client of a router that dies holds its LeaseSet that long
    at most, then asks a floodfill for the merged one."""
    await setup.add_router("p")
    h1 = await setup.add_router("h1")
    spec = make_spec(setup.routers.values(), no_publish=("h1",), client_affinity=True)
    await setup.start(spec, refresh_interval_s=3600.0)

    def own() -> LeaseSet2 | None:
        handed = h1.last_lease_set
        unpublished = handed is not None and handed.lease_set.flags == LEASESET2_FLAG_UNPUBLISHED
        return handed.lease_set if handed is not None and unpublished else None

    await setup.advance_until(own, "h1's own LeaseSet")
    first = own()
    assert first is not None
    assert max(lease.end_s for lease in first.leases) <= (
        first.published + policy.AFFINITY_LEASE_LIFETIME_S
    )
    handed = len(h1.lease_sets)
    waited = await setup.advance_until(
        lambda: len(h1.lease_sets) > handed, "the refresh", step_s=1.0, limit_s=120
    )
    assert policy.AFFINITY_REFRESH_S - 2 <= waited <= policy.AFFINITY_REFRESH_S + 2
    refreshed = own()
    assert refreshed is not None and refreshed.published > first.published
    assert refreshed.verify()


async def test_refused_router_is_retried_with_capped_backoff(setup: Setup) -> None:
    r1 = await setup.add_router("r1")
    await setup.add_router("r2", create_status=messages.STATUS_REFUSED)
    attempts: list[float] = []

    async def resolve(router: RouterSpec) -> Endpoint:
        if router.name == "r2":
            attempts.append(setup.clock.monotonic())
        return await plain_endpoint(router)

    balancer = await setup.start(resolve_endpoint=resolve)
    await setup.converged(["r1"])

    step_s = 0.005
    await setup.advance_until(lambda: len(attempts) >= 8, "8 attempts on r2", step_s)

    # The waits are exactly policy's backoff: doubling from 0.05 s to the 0.2 s cap, each
    # scaled by the balancer's jitter (its random source is seeded with 7).
    jitters = random.Random(7)
    expected = [
        policy.backoff_delay_s(n, jitters.random(), 0.05, 0.2) for n in range(len(attempts) - 1)
    ]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for gap, want in zip(gaps, expected, strict=True):
        assert want - 1e-9 <= gap <= want + step_s + 1e-9, (gaps, expected)
    assert max(expected) <= 0.2 and expected[-1] > 0.1  # grown to the cap's range
    state = {r.name: r for r in balancer.snapshot().routers}["r2"]
    assert state.state in (RouterState.REFUSED, RouterState.CONNECTING)
    assert [e.router for e in setup.events_of(RouterRefused)] == ["r2"]  # news once
    assert len(r1.session_ids) == 1


async def test_a_session_given_the_no_session_id_is_replaced_and_its_router_joins(
    setup: Setup,
) -> None:
    """An i2pd session numbered 0xFFFF is never asked for leases: kept, its router's tunnels
    would stay out of the LeaseSet for good."""
    await setup.add_router("r1")
    r2 = await setup.add_router("r2", session_ids=[messages.NO_SESSION])
    balancer = await setup.start()

    await setup.converges(["r1", "r2"])

    assert [d.session_id for d in r2.destroys] == [messages.NO_SESSION]
    assert len(r2.creates) == 2
    [live] = r2.sessions
    assert live.session_id != messages.NO_SESSION
    state = {r.name: r for r in balancer.snapshot().routers}["r2"]
    assert state.state is RouterState.ESTABLISHED


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
async def test_garbage_from_one_router_never_disturbs_the_others(setup: Setup, kind: str) -> None:
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    await setup.start(min_publish_interval_s=0.2)
    await setup.converged()
    others_ids = (r1.session_ids, r3.session_ids)

    await r2.send_malformed(kind)

    await setup.converged(["r1", "r3"], within_s=2.0)
    # ... and r2 is back after a reconnect, with a new session.
    await setup.advance_until(lambda: len(r2.session_ids) == 2, "r2 to reconnect")
    await setup.converges()
    assert (r1.session_ids, r3.session_ids) == others_ids
    for router in (r1, r3):
        assert len(router.connections) == 1
        [request] = await router.request_leases()
        await asyncio.wait_for(request.answered, 0.5)
    assert_all_requests_answered_fast([r1, r2, r3])


async def test_router_without_an_endpoint_is_refused_alone_then_joins(setup: Setup) -> None:
    """A router whose endpoint cannot be resolved (its credentials Secret is missing) is
    Refused with the reason, once as an event; the others publish; once the endpoint can be
    had, the next attempt connects."""
    await setup.add_router("r1")
    await setup.add_router("r2")
    secret_exists = False
    attempts: list[str] = []

    async def resolve(router: RouterSpec) -> Endpoint:
        attempts.append(router.name)
        if router.name == "r2" and not secret_exists:
            raise EndpointError("I2CP credentials: reading Secret ns/r2-auth: Not Found")
        return await plain_endpoint(router)

    balancer = await setup.start(resolve_endpoint=resolve)
    await setup.converged(["r1"])
    await setup.advance_until(lambda: attempts.count("r2") >= 3, "r2 retried with backoff")
    r2 = next(r for r in balancer.snapshot().routers if r.name == "r2")
    assert r2.state is RouterState.REFUSED
    assert r2.last_error == "I2CP credentials: reading Secret ns/r2-auth: Not Found"
    assert [e.router for e in setup.events_of(RouterRefused)] == ["r2"]

    secret_exists = True
    await setup.converges(["r1", "r2"])
    assert attempts.count("r1") == 1


async def test_an_unexpected_error_on_one_link_is_reported_and_retried_not_silent(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await setup.add_router("r1")
    await setup.add_router("r2")
    failing = True
    attempts: list[str] = []

    async def resolve(router: RouterSpec) -> Endpoint:
        attempts.append(router.name)
        if router.name == "r2" and failing:
            raise RuntimeError("a bug on one router's path")
        return await plain_endpoint(router)

    balancer = await setup.start(resolve_endpoint=resolve)
    await setup.converged(["r1"])
    await setup.advance_until(lambda: attempts.count("r2") >= 2, "r2 retried with backoff")
    r2 = next(r for r in balancer.snapshot().routers if r.name == "r2")
    assert r2.state is RouterState.REFUSED
    assert r2.last_error == "unexpected error: a bug on one router's path"
    assert "router link failed unexpectedly" in caplog.text
    failing = False
    await setup.converges(["r1", "r2"])


async def test_hung_router_dropped_by_heartbeat(setup: Setup) -> None:
    r1, r2 = [await setup.add_router(n) for n in ("r1", "r2")]
    await setup.start(min_publish_interval_s=0.2)
    await setup.converged()

    r2.hang()
    hung_at = setup.clock.monotonic()
    await setup.advance_until(lambda: setup.events_of(RouterLost), "r2 dropped", 0.05)
    silent_for = setup.clock.monotonic() - hung_at
    # Dropped after 2 x heartbeat_s (0.5 s) of silence, found by a check every 0.25 s.
    assert 1.0 <= silent_for <= 1.0 + 0.25 + 0.05, silent_for
    await setup.converged(["r1"], within_s=3.0)
    r2.resume()
    await setup.advance_until(lambda: len(r2.session_ids) == 2, "r2 to reconnect")
    await setup.converges()
    assert len(r1.session_ids) == 1


# --- spec changes and shutdown ------------------------------------------------------------


async def test_apply_spec_reconfigures_adds_and_removes(setup: Setup) -> None:
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(make_spec([r1, r2]), min_publish_interval_s=0.2)
    await setup.converged(["r1", "r2"])
    ids = (r1.session_ids, r2.session_ids)
    before = {r.name: len(r.reconfigures) for r in (r1, r2)}  # r1 was made the publisher

    # More tunnels: ReconfigureSession in place, no new sessions; still one inbound tunnel
    # short until the session's ramp turn, which then brings the spec's quantity.
    await balancer.apply_spec(make_spec([r1, r2], quantity=5))
    for router in (r1, r2):
        await eventually(
            lambda r=router: len(r.reconfigures) > before[r.name],
            2.0,
            f"{router.name} reconfigured",
        )
        [reconfigure] = router.reconfigures[before[router.name] :]
        assert reconfigure.session_id == router.session_ids[0]
        assert options_of(router)["inbound.quantity"] == "4"
        assert options_of(router)["outbound.quantity"] == "5"
    await setup.advance_until(
        lambda: all(len(r.reconfigures) == before[r.name] + 2 for r in (r1, r2)),
        "the ramp turns", 1.0, 70.0,
    )  # fmt: skip
    for router in (r1, r2):
        assert options_of(router)["inbound.quantity"] == "5"
        assert router.reconfigures[-1].session_id == router.session_ids[0]
    assert (r1.session_ids, r2.session_ids) == ids
    assert len(r1.creates) == len(r2.creates) == 1
    assert r1.errors == r2.errors == []  # the fake checked and answered `updated`

    # Add r3, drop r1: r3 gets a session, r1 a DestroySession; r1's leases leave the set.
    await balancer.apply_spec(make_spec([r2, r3], quantity=5))
    await eventually(lambda: r1.destroys, 2.0, "DestroySession on r1")
    assert [m.session_id for m in r1.destroys] == r1.session_ids
    await eventually(lambda: r1.connections[0].closed, 2.0, "r1 connection closed")
    await setup.converges(["r2", "r3"])
    # Created one inbound tunnel short; the last comes at its ramp turn.
    assert r3.connections[0].options["inbound.quantity"] == "4"
    assert r3.connections[0].options["outbound.quantity"] == "5"
    assert r2.session_ids == ids[1]
    assert [r.name for r in balancer.snapshot().routers] == ["r2", "r3"]
    await setup.clock.advance(1.0)
    await asyncio.sleep(0.05)
    assert len(r1.connections) == 1  # no reconnect to a removed router


async def test_removed_router_leases_leave_at_once(setup: Setup) -> None:
    interval = 1.5
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    balancer = await setup.start(min_publish_interval_s=interval)
    await setup.converged(within_s=interval + 2)
    before = r2.last_lease_set
    assert before is not None

    removed_at = setup.clock.monotonic()
    await balancer.apply_spec(make_spec([r2, r3]))

    assert [m.session_id for m in r1.destroys] == r1.session_ids
    # r1 no longer hosts the destination: its tunnels must leave the LeaseSet now, not
    # after the coalescing interval (the clock does not move).
    await setup.converged(["r2", "r3"], within_s=1.0)
    after = r2.last_lease_set
    assert after is not None
    assert after.at == removed_at
    assert "r1" not in setup.owners(after)
    published = setup.events_of(LeaseSetPublished)[-1]
    assert published.reason is PublishReason.ROUTER_REMOVED
    assert not setup.events_of(FailoverPublished)  # a removal is not a failover


async def test_stop_destroys_every_session(setup: Setup) -> None:
    routers = [await setup.add_router(n) for n in ("r1", "r2", "r3", "r4")]
    balancer = await setup.start()
    await setup.converged()

    started = time.monotonic()
    await balancer.stop(destroy_sessions=True)
    assert setup.task is not None
    await asyncio.wait_for(setup.task, 2.0)

    assert time.monotonic() - started < 2.0
    for router in routers:
        assert [m.session_id for m in router.destroys] == router.session_ids
        assert all(c.closed for c in router.connections)
    await setup.clock.advance(1.0)
    await asyncio.sleep(0.05)
    assert all(len(r.connections) == 1 for r in routers)  # nobody reconnected
    assert not setup.events_of(RouterLost)  # stopping is not losing


async def test_dont_publish_flag_follows_router_version(setup: Setup) -> None:
    await setup.add_router("r1")
    await setup.add_router("old")  # echoes our version: i2pd < 2.58
    await setup.add_router("new", version=I2PD_258_API_VERSION)
    balancer = await setup.start(make_spec(setup.routers.values(), no_publish=("old", "new")))

    await eventually(lambda: all(r.sessions for r in setup.routers.values()), 3.0, "three sessions")

    await eventually(lambda: stores_latest(setup.routers["r1"]), 3.0, "r1 made the publisher")
    assert options_of(setup.routers["old"])["i2cp.dontPublishLeaseSet"] == "true"
    assert not stores_latest(setup.routers["old"])
    # 2.58 is created with the inverted value and never sent the flag again.
    new = setup.routers["new"]
    assert new.creates[0].config.options["i2cp.dontPublishLeaseSet"] == "false"
    assert all("i2cp.dontPublishLeaseSet" not in m.config.options for m in new.reconfigures)
    assert options_of(setup.routers["new"])["i2cp.dontPublishLeaseSet"] == "false"
    versions = {r.name: r.version for r in balancer.snapshot().routers}
    assert versions["new"] == I2PD_258_API_VERSION
    assert versions["old"] is not None and "echoed" in versions["old"]
    # Non-publishing routers still hold the merged LeaseSet (they serve the destination).
    await eventually(
        lambda: all(r.last_lease_set for r in setup.routers.values()), 3.0, "LeaseSet everywhere"
    )


async def test_key_material_never_logged(
    setup: Setup, keys: DestinationKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r1, r2, r3 = [await setup.add_router(n) for n in ("r1", "r2", "r3")]
    await setup.add_router("refuses", create_status=messages.STATUS_REFUSED)
    balancer = await setup.start(min_publish_interval_s=0.1)
    await setup.converged(["r1", "r2", "r3"])
    await r2.send_malformed("lying_lease_count")
    await r3.die()
    await setup.converged(["r1"], within_s=3.0)
    await balancer.apply_spec(make_spec([r1], quantity=4))
    await balancer.stop(destroy_sessions=True)

    formatter = KeyValueFormatter()
    text = "\n".join(formatter.format(record) + repr(vars(record)) for record in caplog.records)
    assert "LeaseSet published" in text and "router lost" in text  # the run did log
    for secret in (keys.signing_seed, keys.encryption_private, keys.elgamal_private):
        for form in (
            secret.hex(),
            secret.hex().upper(),
            b64encode(secret),
            base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode(),
            base64.b32encode(secret).decode(),
            repr(secret),
            str(list(secret)),
        ):
            assert form.rstrip("=") not in text, "key material in the logs"
    assert keys.destination.b32 in text  # the public address is what identifies us


# --- gateway policy --------------------------------------------------------------------------


async def test_shared_gateways_publish_the_leases_asked_for_and_profile_every_tunnel(
    setup: Setup,
) -> None:
    for name in ("r1", "r2"):
        await setup.add_router(name, leases=4)  # each built twice the spec's 2
    spec = make_spec(setup.routers.values(), quantity=2)
    spec = spec.model_copy(update={"peer_policy": PeerPolicy(gateways=GatewayPolicy.SHARED)})
    balancer = await setup.start(spec)
    await setup.converged()

    r1, r2 = setup.routers["r1"], setup.routers["r2"]
    # Twice the spec's inbound tunnels, one held back until the ramp.
    assert options_of(r1)["inbound.quantity"] == "3"
    last = r1.last_lease_set
    assert last is not None and len(last.lease_set.leases) == 4
    assert sorted(setup.owners(last)) == ["r1", "r1", "r2", "r2"]
    profiles = balancer.peer_profiles
    assert len(profiles) == 8
    assert {p.built for p in profiles.peers.values()} == {1}
    assert {name for p in profiles.peers.values() for name in p.builders} == {"r1", "r2"}

    # r1's tunnel through a published gateway fails long before its end.
    gone = next(x for x in r1.leases if x.gateway in last.gateways)
    await r1.request_leases([x for x in r1.leases if x != gone])
    await setup.advance_until(
        lambda: (p := balancer.peer_profiles.get(gone.gateway)) is not None and p.failed == 1,
        "the early end profiled",
    )
    await setup.advance_until(
        lambda: (x := r2.last_lease_set) is not None and gone.gateway not in x.gateways,
        "a LeaseSet without it",
    )
    latest = r2.last_lease_set
    # The failed member's place is not refilled before the next tier round (45 s); leases
    # from outside the set fill only to three quarters of the four asked for.
    assert latest is not None and len(latest.lease_set.leases) == 3
    assert_all_requests_answered_fast(setup.routers.values())
