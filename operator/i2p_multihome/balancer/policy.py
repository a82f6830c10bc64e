"""The balancer's decisions as pure functions of one input value: which leases to publish,
when and to which routers, which options each session gets, how long to back off. No I/O
and no clocks: callers pass the time in."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from i2p_multihome.balancer import gateways
from i2p_multihome.balancer.events import PublishReason
from i2p_multihome.balancer.link import LinkState
from i2p_multihome.model.v1alpha1 import (
    GatewayPolicy,
    MultihomedDestinationSpec,
    RouterImplementation,
    RouterSpec,
    TunnelDirection,
)
from i2p_multihome.wire.encoding import b64decode
from i2p_multihome.wire.structures import Lease, Lease2

# A lease within this many seconds of its end is never published: a client that picks it
# needs time to build a garlic message and send it through the tunnel before it ends ...
MIN_REMAINING_S = 30
# ... and a LeaseSet may be held back this long by coalescing (i2pd publishes a destination
# at most every 20 s anyway), so selection keeps a margin of both: a lease chosen now still
# has > MIN_REMAINING_S left when the next publish can go.
MIN_PUBLISH_INTERVAL_S = 20
SELECTION_MARGIN_S = MIN_REMAINING_S + MIN_PUBLISH_INTERVAL_S
# A published lease this close to its end is replaced once a replacement exists: when a
# router replaces it in its own LeaseSet (i2pd builds a successor 15-30 s before a tunnel's
# lease ends), so the lease count an observer of the floodfills sees dips as a router's
# does. Replacing earlier, from the spare tunnels of the `shared` policy, kept the count
# fuller than any router's and told the LeaseSet apart (`docs/design-notes.md`). When no
# published lease outlasts the selection margin, ending leases are replaced at once.
REPLACE_ENDING_S = MIN_REMAINING_S
# i2pd counts a lease within 51 s of its end as expired (LeaseSet.cpp,
# LEASE_ENDDATE_THRESHOLD): its clients do not pick it, and a floodfill takes a LeaseSet
# whose every lease is that close for expired. A version none of whose leases outlasts that
# by USEFUL_VERSION_S serves no one, and would take the publisher's store slot (i2pd stores
# a destination at most once per 20 s) from the version with the replacements, which are
# seconds away when every lease is that old.
CLIENT_LEASE_CUTOFF_S = 51
USEFUL_VERSION_S = CLIENT_LEASE_CUTOFF_S + 10
# A LeaseSet that took a lost router's leases away is stored once more, unchanged but
# newer, this long after: a floodfill that missed its flood would otherwise serve the dead
# leases until the next version (minutes). Unchanged LeaseSets are not published afresh
# otherwise: the publisher verifies its own store by lookup and stores again when the
# floodfill lacks it (i2pd: 10 s after the store, then every 100 s), as a single-homed
# router does.
FOLLOW_UP_AFTER_FAILOVER_S = 60.0
# Client affinity: a serving router's own LeaseSet is signed afresh when a client opens a
# stream or flow through it, at most this often (later clients wait for the next turn).
# i2pd bundles a LeaseSet to a client whose session began at the router only once the
# router's LeaseSet changes (an incoming session starts "up to date"), and only with a
# message it sends that client afterwards: the renewal must reach the router while the
# client's first exchange still runs, or the client keeps the merged LeaseSet. Each renewal
# costs every client of that router one bundled LeaseSet (about 500 bytes) with its next
# message.
AFFINITY_RENEW_INTERVAL_S = 1.0
# Client affinity: a serving router's own LeaseSet has leases that end at most
# AFFINITY_LEASE_LIFETIME_S after it is signed, and is signed afresh every
# AFFINITY_REFRESH_S. i2pd keeps a remote LeaseSet until its latest lease ends (LeaseSet.cpp
# UpdateLease: a short `expires` cannot shorten it), then asks a floodfill. A client whose
# serving router died, and which no survivor can reach (its own LeaseSet unpublished, as
# browsing clients' are), so learns the merged LeaseSet without that router within about
# this lifetime instead of when the dead router's tunnels would have ended (up to 10
# minutes). A client that hears from its router gets the refreshed one bundled, so its
# leases end at least LIFETIME - REFRESH ahead; i2pd streaming stops picking a lease 51 s
# before its end, asks a floodfill (whose older merged LeaseSet it does not take over a
# newer one) and meanwhile keeps the leases until 51 s past their end. A client that heard
# nothing for 90 s starts a new session with its next message anyway.
AFFINITY_LEASE_LIFETIME_S = 180
AFFINITY_REFRESH_S = 60.0
# A session this young does not take over an urgent store while an older one can: i2pd
# drops a store while the destination has no outbound tunnel yet, though it may already
# have reported inbound ones (seen in the soak: 6 and 9 s after a restart).
PUBLISHER_SETTLE_S = 30.0
# Under the `shared` gateway policy, leases through gateways outside the set fill the
# LeaseSet only up to this share of the leases the spec asks for: each one shows a gateway
# a single router would not.
SHARED_FILL_SHARE = 0.75
# When no router took a new LeaseSet (every send failed), plan again this soon.
PUBLISH_RETRY_S = 1.0

# i2pd builds all of a session's tunnels at once, and replaces each 15-30 s before its lease
# ends; floodfills drop a LeaseSet 51 s before its last lease ends. With every tunnel of
# every router in step, each rotation would leave the floodfills without the LeaseSet for
# a while. So a session starts with one inbound tunnel held back and is given it later:
# soon for the first routers, a minute after creation for the last one, whose late tunnel
# then ends late enough to cover the others' replacements. Holding back only one keeps the
# LeaseSet nearly full from the start.
RAMP_FIRST_S = 10.0
RAMP_SPREAD_S = 50.0

# Reconnection backoff: exponential from the first to the cap, jittered to 50-100 %.
BACKOFF_INITIAL_S = 1.0
# A refused connection costs nothing, and a router back from a restart serves only once
# its session is up again.
BACKOFF_MAX_S = 10.0

# The API version we announce in GetDate. i2pd before 2.58 echoes it back; newer routers
# answer with their own, which is how the dontPublishLeaseSet inversion is detected.
CLIENT_API_VERSION = "0.9.62"


@dataclass(frozen=True, order=True)
class SelectedLease:
    router: str
    lease: Lease

    def to_lease2(self) -> Lease2:
        return Lease2(self.lease.gateway, self.lease.tunnel_id, self.lease.end_ms // 1000)


def select_leases(
    reports: Mapping[str, Sequence[Lease]],
    now_ms: int,
    max_leases: int,
    excluded_gateways: Iterable[bytes] = (),
    margin_s: int = SELECTION_MARGIN_S,
    preferred_gateways: frozenset[bytes] | None = None,
    fill_to: int | None = None,
    kept: frozenset[tuple[bytes, int]] = frozenset(),
) -> tuple[SelectedLease, ...]:
    """Merge every live router's leases into at most `max_leases`: round-robin across routers
    so each is represented, each router's `kept` leases (gateway, tunnel id: those already
    published) first and then its freshest (latest-ending), nothing that ends within
    `margin_s`, no excluded gateway, no duplicate tunnel. With `preferred_gateways` (the
    `shared` gateway policy), leases through them first and the others only to fill what
    they leave, up to `fill_to` leases (default: `max_leases`).

    Kept leases stay until they end, as a router keeps a tunnel's lease until its
    successor comes: a version made for one lease then changes only that lease, and a
    router with spare tunnels (`shared`) does not show each lease for only the first part
    of its life."""
    if preferred_gateways is not None:
        return _members_first(
            reports, now_ms, max_leases, excluded_gateways, margin_s, preferred_gateways,
            max_leases if fill_to is None else min(fill_to, max_leases), kept,
        )  # fmt: skip
    excluded = frozenset(excluded_gateways)
    cutoff = now_ms + margin_s * 1000
    seen: set[tuple[bytes, int]] = set()
    queues: list[list[Lease]] = []
    for router in sorted(reports):
        usable = []
        for lease in sorted(reports[router], key=lambda x: _kept_first(x, kept)):
            key = (lease.gateway, lease.tunnel_id)
            if lease.end_ms > cutoff and lease.gateway not in excluded and key not in seen:
                seen.add(key)
                usable.append(lease)
        queues.append(usable)
    routers = sorted(reports)
    chosen: list[SelectedLease] = []
    depth = 0
    while len(chosen) < max_leases and any(depth < len(q) for q in queues):
        for router, queue in zip(routers, queues, strict=True):
            if depth < len(queue) and len(chosen) < max_leases:
                chosen.append(SelectedLease(router, queue[depth]))
        depth += 1
    # In the order a single router lists them (i2pd: its newest tunnels first), so the
    # LeaseSet does not show the routers it was merged from as groups.
    return tuple(sorted(chosen, key=lambda s: _freshest_first(s.lease)))


def _members_first(
    reports: Mapping[str, Sequence[Lease]],
    now_ms: int,
    max_leases: int,
    excluded_gateways: Iterable[bytes],
    margin_s: int,
    members: frozenset[bytes],
    fill_to: int,
    kept: frozenset[tuple[bytes, int]],
) -> tuple[SelectedLease, ...]:
    """Leases through `members`, round-robin; then, while fewer than `fill_to`, another
    lease (a kept one first, else the freshest) of the router with the fewest chosen so
    far."""
    excluded = frozenset(excluded_gateways)

    def through(inside: bool) -> dict[str, list[Lease]]:
        return {
            name: [x for x in leases if (x.gateway in members) == inside]
            for name, leases in reports.items()
        }

    chosen = list(select_leases(through(True), now_ms, max_leases, excluded, margin_s, kept=kept))
    counts = Counter(s.router for s in chosen)
    rest = {
        name: sorted((s.lease for s in select_leases({name: leases}, now_ms, max_leases,
                                                     excluded, margin_s, kept=kept)),
                     key=lambda x: _kept_first(x, kept))
        for name, leases in through(False).items()
    }  # fmt: skip
    while len(chosen) < fill_to and (left := [name for name in sorted(rest) if rest[name]]):
        name = min(left, key=lambda n: counts[n])
        chosen.append(SelectedLease(name, rest[name].pop(0)))
        counts[name] += 1
    return tuple(sorted(chosen, key=lambda s: _freshest_first(s.lease)))


def _freshest_first(lease: Lease) -> tuple[int, bytes, int]:
    return (-lease.end_ms, lease.gateway, lease.tunnel_id)


def _kept_first(lease: Lease, kept: frozenset[tuple[bytes, int]]) -> tuple[bool, int, bytes, int]:
    return ((lease.gateway, lease.tunnel_id) not in kept, *_freshest_first(lease))


@dataclass(frozen=True)
class PublishTiming:
    min_interval_s: float = MIN_PUBLISH_INTERVAL_S  # coalescing window
    follow_up_s: float = FOLLOW_UP_AFTER_FAILOVER_S
    # An unchanged LeaseSet published afresh this often (None: never; for comparisons).
    refresh_interval_s: float | None = None
    affinity_lease_lifetime_s: int = AFFINITY_LEASE_LIFETIME_S


@dataclass(frozen=True)
class PublishInput:
    """Everything the publish decision looks at, taken at one instant."""

    links: tuple[LinkState, ...]  # every router of the spec
    published: tuple[SelectedLease, ...] | None  # the current LeaseSet's leases, if any
    last_publish_at: float | None  # monotonic
    spec: MultihomedDestinationSpec
    now: float  # monotonic
    now_ms: int  # wall clock, for lease ends
    timing: PublishTiming = PublishTiming()
    # Client affinity: serving routers whose own LeaseSet is due to be signed afresh.
    affinity_renew: frozenset[str] = frozenset()
    # The router that stores the LeaseSet at the floodfills, and when each router's latest
    # store went or will go (monotonic; `next_store_at`).
    publisher: str | None = None
    store_at: Mapping[str, float] = field(default_factory=dict)
    last_publish_reason: PublishReason | None = None
    # The `shared` gateway policy's set (`gateways.choose_shared_gateways`); None: native.
    shared_gateways: frozenset[bytes] | None = None


@dataclass(frozen=True)
class PublishPlan:
    """What the engine does now: sign `leases` into a new LeaseSet and hand it to `targets`
    (when `leases` is set), answer `resend_current_to` with the current LeaseSet, and plan
    again at `wake_at` (or at `retry_at` if no router took the new LeaseSet)."""

    reason: str
    leases: tuple[SelectedLease, ...] | None = None
    publish_reason: PublishReason | None = None
    targets: frozenset[str] = frozenset()
    resend_current_to: frozenset[str] = frozenset()
    lost: tuple[str, ...] = ()  # lost routers whose leases this publish removes
    failover_s: float | None = None  # from the earliest of those losses to now
    wake_at: float | None = None
    retry_at: float | None = None
    # Client affinity: routers to hand a LeaseSet of their own leases (signed after the
    # merged one, flagged unpublished) now, with those leases.
    affinity: Mapping[str, tuple[SelectedLease, ...]] = field(default_factory=dict)
    # ... and, should no router take the new merged LeaseSet, only those that wait for an
    # answer or were asked to renew (not every serving router at every retry).
    affinity_answers: Mapping[str, tuple[SelectedLease, ...]] = field(default_factory=dict)
    # The one router that stores the LeaseSet at the floodfills from now on (None: no
    # router may); every other router holds it unpublished.
    publisher: str | None = None


def plan_publish(given: PublishInput) -> PublishPlan:
    """Publish only what clients need (`publish_need`): a published lease whose tunnel is
    gone, a router the LeaseSet leaves out, published leases near their end once
    replacements exist, fewer usable leases than the spec asks for; not a fresher tunnel
    while the published ones still serve.
    Each floodfill store is visible, and every version costs the network a store and its
    floods. Such changes are coalesced to one publish per `min_interval_s`. A router whose
    leases are in the published LeaseSet and that is gone (lost, or removed from the spec)
    is the exception: its tunnels went with its session, so the LeaseSet without them goes
    at once, and once more `follow_up_s` later.

    Leases that only aged out of the selection margin are not withdrawn by a publish of
    their own: they stay valid on the network until their end, clients skip leases that
    near it, and such a publish would spend the routers' 20-s publish slot just before the
    replacement leases arrive (i2pd builds them 15-30 s before the old ones end), leaving
    the floodfills with no usable lease until the slot comes round again.

    Every router waiting for an answer to its lease request gets one now: i2pd ends a
    session whose request is unanswered for 10 s.

    Under `leaseSet.clientAffinity` the routers with publish: false (the serving routers)
    get, instead of the merged LeaseSet, a LeaseSet of their own usable leases, at every publish
    and whenever they wait for an answer; the merged LeaseSet goes to the others."""
    now, timing = given.now, given.timing
    established = {link.router: link for link in given.links if link.established}
    reported = frozenset(name for name, link in established.items() if link.leases)
    all_waiting = frozenset(name for name, link in established.items() if link.awaiting_answer)
    reports = {name: link.leases for name, link in established.items()}
    max_leases = given.spec.lease_set.max_leases
    excluded = excluded_gateways(given.spec)
    hosts = frozenset(established) & affinity_hosts(given.spec)
    lease_cap_ms = given.now_ms + timing.affinity_lease_lifetime_s * 1000
    affinity = {
        name: tuple(capped(s, lease_cap_ms) for s in leases)
        for name in sorted(hosts)
        if (leases := select_leases({name: reports[name]}, given.now_ms, max_leases, excluded,
                                    MIN_REMAINING_S))
    }  # fmt: skip

    kept = frozenset((s.lease.gateway, s.lease.tunnel_id) for s in given.published or ())

    def merge(
        reports: Mapping[str, Sequence[Lease]], margin_s: int = SELECTION_MARGIN_S
    ) -> tuple[SelectedLease, ...]:
        if given.shared_gateways is None:
            return select_leases(reports, given.now_ms, max_leases, excluded, margin_s,
                                 kept=kept)  # fmt: skip
        # Routers build extra tunnels to choose from under `shared`; the LeaseSet still
        # holds only as many leases as the spec asks for.
        target = lease_target(given.spec, sum(1 for leases in reports.values() if leases))
        return select_leases(
            reports, given.now_ms, target, excluded, margin_s, given.shared_gateways,
            math.ceil(target * SHARED_FILL_SHARE), kept,
        )  # fmt: skip

    # Under affinity the merged LeaseSet holds only the serving routers' leases, so that no
    # client reaches a router that bundles the merged LeaseSet; the publishing routers'
    # leases stand in while no serving router has a usable one.
    merged_reports = {name: reports[name] for name in hosts}
    desired = merge(merged_reports)
    if not desired:
        merged_reports = reports
        desired = merge(reports)
    targets = frozenset(established) - frozenset(affinity)
    waiting = all_waiting - frozenset(affinity)
    renewed = (all_waiting | given.affinity_renew) & frozenset(affinity)
    answered_by_affinity = {name: affinity[name] for name in sorted(renewed)}
    retry_at = now + PUBLISH_RETRY_S
    candidates = publish_candidates(given.spec, established, reported)

    def ending_at(leases: Sequence[SelectedLease]) -> float | None:
        """When the next of `leases` comes within `REPLACE_ENDING_S` of its end (monotonic;
        always ahead: those already within it are no reason to wake)."""
        cutoff_ms = given.now_ms + REPLACE_ENDING_S * 1000
        later = [s.lease.end_ms for s in leases if s.lease.end_ms > cutoff_ms]
        if not later:
            return None
        return now + (min(later) - cutoff_ms) / 1000

    def next_look(leases: Sequence[SelectedLease]) -> float | None:
        """When a lease of `leases` is next due for replacement: it comes within
        `REPLACE_ENDING_S` of its end, or the last one within the selection margin."""
        cutoff_ms = given.now_ms + SELECTION_MARGIN_S * 1000
        last = max((s.lease.end_ms for s in leases), default=0)
        stranding = now + (last - cutoff_ms) / 1000 if last > cutoff_ms else None
        return _earliest(ending_at(leases), stranding)

    def refresh_after(at: float, reason: PublishReason | None) -> float | None:
        """When a LeaseSet published at `at` for `reason` is stored again unchanged: once
        after an urgent publish, and every `refresh_interval_s` if set."""
        return _earliest(
            at + timing.follow_up_s if reason in URGENT_PUBLISH_REASONS else None,
            at + timing.refresh_interval_s if timing.refresh_interval_s else None,
        )

    now_s = given.now_ms / 1000
    settled = frozenset(
        name
        for name, link in established.items()
        if link.since_s is not None and now_s - link.since_s >= PUBLISHER_SETTLE_S
    )

    def publisher(urgent: bool) -> str | None:
        return choose_publisher(
            candidates, given.publisher, given.store_at, now, urgent, timing.min_interval_s,
            settled,
        )  # fmt: skip

    def publish(
        leases: tuple[SelectedLease, ...],
        reason: PublishReason,
        lost: tuple[str, ...] = (),
        failover_s: float | None = None,
        urgent: bool = False,
    ) -> PublishPlan:
        return PublishPlan(
            reason=reason.value,
            leases=leases,
            publish_reason=reason,
            targets=targets,
            lost=lost,
            failover_s=failover_s,
            wake_at=_earliest(refresh_after(now, reason), next_look(leases)),
            retry_at=retry_at,
            affinity=affinity,
            affinity_answers=answered_by_affinity,
            publisher=publisher(urgent or reason in URGENT_PUBLISH_REASONS),
        )

    def hold(reason: str, wake_at: float | None = None) -> PublishPlan:
        return PublishPlan(
            reason=reason,
            resend_current_to=waiting,
            wake_at=wake_at,
            affinity=answered_by_affinity,
            publisher=publisher(urgent=False),
        )

    if given.published is None or given.last_publish_at is None:
        if desired:
            return publish(desired, PublishReason.FIRST)
        # Leases between the hard floor and the selection margin still beat leaving a
        # waiting router unanswered.
        short_lived = merge(merged_reports, MIN_REMAINING_S)
        if short_lived and all_waiting:
            return publish(short_lived, PublishReason.FIRST_SHORT_LIVED)
        return PublishPlan(reason="no usable leases", publisher=publisher(urgent=False))
    if not desired:
        return hold("no usable leases")
    useful_ms = given.now_ms + USEFUL_VERSION_S * 1000
    if all(s.lease.end_ms <= useful_ms for s in desired):
        return hold("no lease would outlast the clients' cutoff")

    gone = sorted({s.router for s in given.published} - set(established))
    if gone:
        by_name = {link.router: link for link in given.links}
        losses = {
            name: lost_at
            for name in gone
            if (link := by_name.get(name)) is not None and (lost_at := link.lost_at) is not None
        }
        if losses:
            return publish(
                desired, PublishReason.ROUTER_LOST, tuple(losses), now - min(losses.values())
            )
        return publish(desired, PublishReason.ROUTER_REMOVED)

    ready_at = given.last_publish_at + timing.min_interval_s
    target = lease_target(given.spec, len(merged_reports))
    need = publish_need(given.published, desired, merged_reports, given.now_ms, target)
    if need is not None:
        # Nothing published lasts beyond the margin: clients already find no lease they
        # would pick, so this one neither waits for the coalescing window nor for the
        # publisher's store slot.
        stranded = _stranded(given.published, given.now_ms)
        if now >= ready_at or stranded:
            return publish(desired, need, urgent=stranded)
        return hold(f"{need.value} (coalesced)", ready_at)
    refresh_at = refresh_after(given.last_publish_at, given.last_publish_reason)
    if refresh_at is not None and now >= refresh_at:
        # The same leases again (those still far enough from their end), not a withdrawal
        # of ending ones before their replacements come.
        floor_ms = given.now_ms + MIN_REMAINING_S * 1000
        same = tuple(s for s in given.published if s.lease.end_ms > floor_ms)
        return publish(same or desired, PublishReason.REFRESH)
    return hold("nothing clients need", _earliest(next_look(given.published), refresh_at))


def _earliest(*times: float | None) -> float | None:
    return min((at for at in times if at is not None), default=None)


# Publishes that take leases clients could no longer reach off the floodfills: they go to
# a router whose store slot is free, not after the publisher's slot (`choose_publisher`).
URGENT_PUBLISH_REASONS = frozenset({PublishReason.ROUTER_LOST, PublishReason.ROUTER_REMOVED})


def publish_candidates(
    spec: MultihomedDestinationSpec, established: Iterable[str], reported: Iterable[str] = ()
) -> tuple[str, ...]:
    """The routers that may store the LeaseSet (`publish: true`, with a session), in the
    standby order: those that `reported` tunnels first, each group in the spec's order.
    A router without tunnels yet cannot store (i2pd drops the store, "Destination is not
    ready", and does not try again until it is handed another LeaseSet)."""
    up, ready = frozenset(established), frozenset(reported)
    named = [r.name for r in spec.routers if r.publish and r.name in up]
    return tuple(sorted(named, key=lambda name: name not in ready))


def choose_publisher(
    candidates: Sequence[str],
    current: str | None,
    store_at: Mapping[str, float],
    now: float,
    urgent: bool,
    slot_s: float = MIN_PUBLISH_INTERVAL_S,
    settled: Iterable[str] | None = None,
) -> str | None:
    """The one router that stores the LeaseSet at the floodfills. It changes rarely: a
    floodfill sees each publisher as another reply tunnel. The current one stays for
    every ordinary version. An urgent one (a failover) must not wait for a store slot
    (i2pd stores a destination at most once per 20 s and holds an earlier store back
    20 s), and a router that has stored may have stored again unseen: i2pd verifies its
    store by lookup 10 s after it and then every 100 s, and stores again when the
    floodfill it asked disagrees; a LeaseSet handed while a store awaits confirmation is
    stored only at that verification. So an urgent LeaseSet goes to a `settled` router
    that has not stored in its session (`store_at` has no entry: its slot is certainly
    free), else to one whose known stores left its slot free (the current one first),
    else stays; whoever takes over stays. A session younger than PUBLISHER_SETTLE_S is
    not settled (None: every candidate is): i2pd drops a store while the destination has
    no outbound tunnel yet ("Destination is not ready") and does not try again, though its
    inbound tunnels may already be reported. A lost publisher's place is taken the same
    way."""
    if not candidates:
        return None
    ready = frozenset(candidates if settled is None else settled)

    def slot_free(name: str) -> bool:
        at = store_at.get(name)
        return at is None or now >= at + slot_s

    staying = current if current in candidates else None
    if staying is not None and not urgent:
        return staying
    never_stored = [name for name in candidates if name not in store_at and name in ready]
    if staying in never_stored:
        return staying
    if never_stored:
        return never_stored[0]
    if staying is not None and slot_free(staying):
        return staying
    free = [name for name in candidates if slot_free(name)]
    return next(
        (name for name in sorted(free, key=lambda n: n not in ready)), staying or candidates[0]
    )


def next_store_at(
    previous: float | None, handed_at: float, slot_s: float = MIN_PUBLISH_INTERVAL_S
) -> float:
    """When a publishing router stores a LeaseSet handed to it at `handed_at`, its
    previous store having gone at `previous`: at once when its slot is free, else i2pd
    holds it back `slot_s` from the hand-over (restarting that wait at every hand-over)."""
    if previous is None or handed_at >= previous + slot_s:
        return handed_at
    return handed_at + slot_s


def lease_target(spec: MultihomedDestinationSpec, routers: int) -> int:
    """The leases the spec asks for from `routers` routers: each one's inbound quantity,
    at most `maxLeases`."""
    return min(spec.lease_set.max_leases, spec.tunnels.inbound.quantity * routers)


def publish_need(
    published: Sequence[SelectedLease],
    desired: Sequence[SelectedLease],
    reports: Mapping[str, Sequence[Lease]],
    now_ms: int,
    target: int,
) -> PublishReason | None:
    """Why clients need a new LeaseSet now, or None.

    A published lease counts as ending once it is within `REPLACE_ENDING_S` of its end, or
    within the selection margin when no published lease outlasts that margin (clients
    would be left with none they pick); a lease its router no longer reports before that
    is gone. A router the selection would represent and the published leases do not is
    news. Ending leases are replaced as soon as a replacement exists (the coalescing window
    gathers a router's rotation, built within seconds): a router's own LeaseSet hides an
    ending lease only between 51 s and 30 s before its end, where its successor comes.
    Hiding it longer (waiting for every router's whole rotation) or shorter (replacing it
    from spare tunnels before then) changes the lease count an observer of the floodfills
    sees, which told a multihomed LeaseSet apart (`docs/design-notes.md`)."""
    margin_s = SELECTION_MARGIN_S if _stranded(published, now_ms) else REPLACE_ENDING_S
    cutoff = now_ms + margin_s * 1000
    alive = {(name, x.gateway, x.tunnel_id) for name, leases in reports.items() for x in leases}
    ending = [s for s in published if s.lease.end_ms <= cutoff]
    lasting = [s for s in published if s.lease.end_ms > cutoff]
    if any((s.router, s.lease.gateway, s.lease.tunnel_id) not in alive for s in lasting):
        return PublishReason.LEASE_GONE
    # A router that (re)joined serves no client until it is in the LeaseSet, even when
    # the others' leases fill it.
    if {s.router for s in desired} - {s.router for s in published}:
        return PublishReason.ROUTER_JOINED
    if ending and _lease_keys(desired) - _lease_keys(published):
        return PublishReason.LEASES_ENDING
    if len(lasting) < target and len(desired) > len(lasting):
        return PublishReason.BELOW_TARGET
    return None


def _stranded(published: Sequence[SelectedLease], now_ms: int) -> bool:
    """No published lease outlasts the selection margin: clients will soon find none they
    pick, whatever the coalescing window or the replacement time says."""
    return all(s.lease.end_ms <= now_ms + SELECTION_MARGIN_S * 1000 for s in published)


def _lease_keys(leases: Sequence[SelectedLease]) -> frozenset[tuple[bytes, int, int]]:
    return frozenset((s.lease.gateway, s.lease.tunnel_id, s.lease.end_ms // 1000) for s in leases)


def next_published_s(previous: int | None, now_s: int) -> int:
    """`published` must strictly increase: floodfills keep only a newer LeaseSet."""
    return now_s if previous is None or now_s > previous else previous + 1


def affinity_published_s(merged: int | None, previous: int | None, now_s: int) -> int:
    """An affinity LeaseSet's `published`: after its own previous one and after the merged
    LeaseSet's, since a client keeps whichever LeaseSet it holds until a newer one comes."""
    published = next_published_s(previous, now_s)
    return published if merged is None else max(published, merged + 1)


def affinity_renew_at(
    last_renewed_at: float | None, now: float, interval_s: float = AFFINITY_RENEW_INTERVAL_S
) -> float:
    """When a serving router's own LeaseSet may be signed afresh for a client that came
    after it was last signed: at once, or `interval_s` after that."""
    if last_renewed_at is None:
        return now
    return max(now, last_renewed_at + interval_s)


def capped(selected: SelectedLease, end_ms: int) -> SelectedLease:
    """The lease, ending at `end_ms` at the latest (its tunnel may live on)."""
    if selected.lease.end_ms <= end_ms:
        return selected
    return SelectedLease(selected.router, replace(selected.lease, end_ms=end_ms))


def affinity_refresh(
    handed_at: Mapping[str, float], now: float, refresh_s: float = AFFINITY_REFRESH_S
) -> tuple[frozenset[str], float | None]:
    """Which serving routers' own LeaseSets are due to be signed afresh (last handed
    `refresh_s` ago or more), and when to look again: the earliest refresh not yet due, or
    `refresh_s` from now if any is due now (one that cannot be handed its LeaseSet now is
    tried again then, not at once)."""
    due = frozenset(name for name, at in handed_at.items() if now - at >= refresh_s)
    ahead = [at + refresh_s for name, at in handed_at.items() if name not in due]
    if due:
        ahead.append(now + refresh_s)
    return due, min(ahead, default=None)


def affinity_hosts(spec: MultihomedDestinationSpec) -> frozenset[str]:
    """The routers that serve clients under `leaseSet.clientAffinity`: those that do not
    publish. None without it."""
    if not spec.lease_set.client_affinity:
        return frozenset()
    return frozenset(r.name for r in spec.routers if not r.publish)


def lease_set_expires_s(leases: Sequence[SelectedLease], published_s: int) -> int:
    """The LeaseSet2 `expires` offset: until its latest lease ends."""
    latest = max(s.lease.end_ms // 1000 for s in leases)
    return max(0, min(0xFFFF, latest - published_s))


def publish_is_inverted(
    implementation: RouterImplementation, sent_version: str, reply_version: str
) -> bool:
    """Whether `i2cp.dontPublishLeaseSet=true` means *publish* on this router.

    i2pd 2.58.0 reads the option inverted. i2pd before 2.58 echoes our GetDate version;
    2.58+ answers with its own API version (0.9.67+). Java never inverts. `auto` takes a
    non-echoed reply of 0.9.67 or later as i2pd 2.58+: set `implementation: java` on Java
    routers that must not publish."""
    if implementation is RouterImplementation.JAVA or reply_version == sent_version:
        return False
    return _version_tuple(reply_version) >= (0, 9, 67)


def public_only_when_storing(
    implementation: RouterImplementation, sent_version: str, reply_version: str
) -> bool:
    """Whether the publisher is made public only for the hand-overs it must store (a new
    version, or the current one when it has just become the publisher), and holds every
    other hand-over unpublished.

    i2pd reads `i2cp.dontPublishLeaseSet` when it is handed a LeaseSet and then stores it,
    unchanged or not; it asks for a LeaseSet whenever its tunnels change, and each answer
    with the current one would be stored again (measured: 22 stores of 7 versions per 10
    minutes), each taking the 20-s store slot a failover needs. Its own verification
    (`Publish()` never checks the flag) still stores again when a floodfill lacks the
    LeaseSet. So for i2pd before 2.58 (it echoes our GetDate version) or `implementation:
    i2pd`. Not for Java (its delayed store checks the flag again when it runs; newer
    versions then drop the local LeaseSet) nor for routers that read the flag inverted
    (never sent it by ReconfigureSession: `options_for`)."""
    if implementation is RouterImplementation.JAVA:
        return False
    if publish_is_inverted(implementation, sent_version, reply_version):
        return False
    return implementation is RouterImplementation.I2PD or reply_version == sent_version


def rotated(items: Sequence[str], start: int) -> list[str]:
    """`items` starting at index `start` (modulo their number), wrapping around."""
    if not items:
        return []
    start %= len(items)
    return [*items[start:], *items[:start]]


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def resolved_implementation(
    implementation: RouterImplementation, sent_version: str, reply_version: str
) -> RouterImplementation:
    """i2pd or java: the spec's, or for `auto` the SetDate reply's (i2pd before 2.58 echoes
    ours; a non-echoed 0.9.67 or later is taken as i2pd 2.58+, as `publish_is_inverted`
    does; an older one is Java's own API version)."""
    if implementation is not RouterImplementation.AUTO:
        return implementation
    if reply_version == sent_version or _version_tuple(reply_version) >= (0, 9, 67):
        return RouterImplementation.I2PD
    return RouterImplementation.JAVA


def session_options(
    spec: MultihomedDestinationSpec,
    router: RouterSpec,
    inverted_publish_flag: bool,
    nickname: str,
    *,
    publishing: bool = False,
    implementation: RouterImplementation = RouterImplementation.I2PD,
    random_key: str | None = None,
) -> dict[str, str]:
    """The I2CP session options a router (of the resolved `implementation`) gets for this
    destination: `publishing` for the one router that stores the LeaseSet at the
    floodfills (`choose_publisher`); `random_key` is the destination's fast-tier slicing
    key for Java routers under the `shared` gateway policy."""
    options = {
        "i2cp.fastReceive": "true",
        "i2cp.leaseSetType": "3",
        "i2cp.leaseSetEncType": "4",
        "inbound.nickname": nickname,
        "outbound.nickname": nickname,
    }
    inbound = spec.tunnels.inbound
    shared = spec.peer_policy.gateways is GatewayPolicy.SHARED
    if shared:
        inbound = inbound.model_copy(
            update={"quantity": gateways.inbound_quantity(inbound.quantity)}
        )
    options |= _tunnel_options("inbound", inbound)
    options |= _tunnel_options("outbound", spec.tunnels.outbound)
    java = implementation is RouterImplementation.JAVA
    if peers := spec.peer_policy.explicit_peers:
        if java:
            # Java reads them per pool (the bare key is router-wide configuration) and
            # picks from them, shuffled, for one build in four.
            options["inbound.explicitPeers"] = ",".join(peers)
            options["outbound.explicitPeers"] = ",".join(peers)
        else:
            # i2pd builds one tunnel each way through the first `length` peers of the list,
            # in order (TunnelPool::SelectExplicitPeers): given one list, every router's
            # tunnels would hang on the same first peer. Each router starts it at its own
            # place in `routers`.
            names = [r.name for r in spec.routers]
            start = names.index(router.name) if router.name in names else 0
            options["explicitPeers"] = ",".join(rotated(peers, start))
    if java and shared and random_key is not None:
        # One key for every router, so each slices its fast tier alike; without it every
        # pool (and every ReconfigureSession) draws its own.
        options["inbound.randomKey"] = random_key
        options["outbound.randomKey"] = random_key
    # Always explicit: ReconfigureSession changes only the options it carries. A router
    # that reads the flag inverted cannot have its role switched (see `options_for`): every
    # such router with publish: true publishes.
    public = router.publish and (publishing or inverted_publish_flag)
    dont_publish = (not public) != inverted_publish_flag
    options["i2cp.dontPublishLeaseSet"] = "true" if dont_publish else "false"
    return options


def options_for(
    spec: MultihomedDestinationSpec,
    router: RouterSpec,
    reply_version: str,
    *,
    ramped: bool,
    nickname: str,
    publishing: bool = False,
    reconfigure: bool = False,
    random_key: str | None = None,
) -> dict[str, str]:
    """The options a router's session should have now: `session_options` for the version
    the router answered in SetDate, one inbound tunnel short until its ramp turn.

    For ReconfigureSession (`reconfigure`), a router that reads `i2cp.dontPublishLeaseSet`
    inverted is not sent the flag at all: i2pd 2.58.0 inverts it only at CreateSession
    (`Reconfigure` reads it the right way), later i2pd in both, and both answer SetDate
    with 0.9.67; it keeps the value it was created with."""
    inverted = publish_is_inverted(router.implementation, CLIENT_API_VERSION, reply_version)
    options = session_options(
        spec,
        router,
        inverted,
        nickname,
        publishing=publishing,
        implementation=resolved_implementation(
            router.implementation, CLIENT_API_VERSION, reply_version
        ),
        random_key=random_key,
    )
    if reconfigure and inverted:
        del options["i2cp.dontPublishLeaseSet"]
    return options if ramped else one_tunnel_held_back(options)


def one_tunnel_held_back(options: Mapping[str, str]) -> dict[str, str]:
    """The options a session is created with: one inbound tunnel fewer than the spec's
    (none held back from a single tunnel); ReconfigureSession brings the spec's quantity
    after `ramp_delay_s`."""
    quantity = int(options.get("inbound.quantity", "1"))
    if quantity <= 1:
        return dict(options)
    return {**options, "inbound.quantity": str(quantity - 1)}


def ramp_delay_s(
    index: int, routers: int, first_s: float = RAMP_FIRST_S, spread_s: float = RAMP_SPREAD_S
) -> float:
    """How long after its session is created router `index` (of `routers`, in spec order)
    gets its held-back inbound tunnel: from about `first_s` for the first routers to
    `first_s + spread_s` for the last (a lone router too, so its own tunnels spread)."""
    turn = (min(index, routers - 1) + 1) / max(routers, 1)
    return first_s + spread_s * turn * turn


def _tunnel_options(direction: str, tunnels: TunnelDirection) -> dict[str, str]:
    return {
        f"{direction}.quantity": str(tunnels.quantity),
        f"{direction}.length": str(tunnels.length),
        f"{direction}.lengthVariance": str(tunnels.length_variance),
    }


def excluded_gateways(spec: MultihomedDestinationSpec) -> frozenset[bytes]:
    return frozenset(b64decode(peer) for peer in spec.peer_policy.excluded_peers)


def backoff_delay_s(
    step: int,
    jitter: float,
    initial_s: float = BACKOFF_INITIAL_S,
    max_s: float = BACKOFF_MAX_S,
) -> float:
    """The wait before reconnection attempt `step` + 1: doubling from `initial_s`, capped
    at `max_s`, scaled by 50-100 % with `jitter` in [0, 1) so that routers lost together do
    not reconnect in step."""
    doubling: float = 2.0 ** min(max(step, 0), 32)
    return min(max_s, initial_s * doubling) * (0.5 + min(max(jitter, 0.0), 1.0) / 2)
