"""The balancer's I/O: one I2CP session per router, lease reports in, one merged LeaseSet out.

Decisions are made elsewhere, on values: each router link's lifecycle by `link.step`, what to
publish, when and to which routers by `policy.plan_publish`, the options of each session by
`policy.options_for`, backoff by `policy.backoff_delay_s`. This module gathers their inputs,
performs their effects, and keeps each router's session going. All waiting goes through the
injected `Clock`, so tests drive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from i2p_multihome.balancer import gateways, policy, profiles
from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    PublisherChanged,
    PublishReason,
)
from i2p_multihome.balancer.link import (
    AttemptStarted,
    BackOff,
    CreateRefused,
    EndpointUnavailable,
    LeaseSetHandedOver,
    LeasesReported,
    LinkEvent,
    LinkState,
    Notify,
    PlanPublish,
    RampTurn,
    Reconfigure,
    Retired,
    SessionCreated,
    SessionEnded,
    step,
)
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.clock import SYSTEM_CLOCK, Clock, wait_event
from i2p_multihome.i2cp.connection import ConnectionClosed
from i2p_multihome.i2cp.session import Endpoint, RouterSession, SessionLost, SessionRefused
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import GatewayPolicy, MultihomedDestinationSpec, RouterSpec
from i2p_multihome.wire import messages
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import (
    LEASESET2_FLAG_UNPUBLISHED,
    Destination,
    Lease,
    LeaseSet2,
)

log = logging.getLogger(__name__)


class EndpointError(Exception):
    """A router's connection details cannot be had (say, its credentials Secret): that
    router is refused and retried with backoff; the others are untouched."""


# Payloads clients sent the destination, with the name of the router they came through.
PayloadReceiver = Callable[[str, messages.MessagePayload], None]

# Called before every connection attempt, so a rotated credentials Secret is used at the
# next reconnect and a router added by a spec update gets its own.
EndpointResolver = Callable[[RouterSpec], Awaitable[Endpoint]]


async def plain_endpoint(router: RouterSpec) -> Endpoint:
    """Endpoint without credentials (the standalone balancer; the operator reads Secrets)."""
    return Endpoint(router.i2cp.host, router.i2cp.port, router.i2cp.tls)


@dataclass(frozen=True)
class Timing:
    """Knobs with production defaults; tests shrink them."""

    backoff_initial_s: float = policy.BACKOFF_INITIAL_S
    backoff_max_s: float = policy.BACKOFF_MAX_S
    heartbeat_s: float = 10.0  # GetDate after this much silence; dropped after twice that
    handshake_timeout_s: float = 15.0
    min_publish_interval_s: float = policy.MIN_PUBLISH_INTERVAL_S
    follow_up_s: float = policy.FOLLOW_UP_AFTER_FAILOVER_S
    refresh_interval_s: float | None = None
    ramp_first_s: float = policy.RAMP_FIRST_S
    ramp_spread_s: float = policy.RAMP_SPREAD_S
    affinity_renew_s: float = policy.AFFINITY_RENEW_INTERVAL_S
    affinity_refresh_s: float = policy.AFFINITY_REFRESH_S
    affinity_lease_lifetime_s: int = policy.AFFINITY_LEASE_LIFETIME_S

    @property
    def publish(self) -> policy.PublishTiming:
        return policy.PublishTiming(
            min_interval_s=self.min_publish_interval_s,
            follow_up_s=self.follow_up_s,
            refresh_interval_s=self.refresh_interval_s,
            affinity_lease_lifetime_s=self.affinity_lease_lifetime_s,
        )


@dataclass
class _Link:
    """A router's link state, plus the I/O that carries it."""

    spec: RouterSpec
    state: LinkState
    session: RouterSession | None = None
    options: dict[str, str] = field(default_factory=dict)  # what the session was last given
    task: asyncio.Task[None] | None = None


class Balancer:
    def __init__(
        self,
        name: str,
        spec: MultihomedDestinationSpec,
        keys: DestinationKeys,
        *,
        on_change: Callable[[], None] = lambda: None,
        on_event: Callable[[BalancerEvent], None] = lambda event: None,
        on_payload: PayloadReceiver = lambda router, message: None,
        resolve_endpoint: EndpointResolver = plain_endpoint,
        timing: Timing | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        peer_profiles: profiles.PeerProfiles | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._keys = keys
        self._on_change = on_change
        self._on_event = on_event
        self._on_payload_received = on_payload
        self._resolve_endpoint = resolve_endpoint
        self._timing = timing or Timing()
        self._clock = clock
        self._rng = rng or random.Random()
        self._links: dict[str, _Link] = {}
        self._plan_lock = asyncio.Lock()
        self._current: LeaseSet2 | None = None
        self._published: tuple[policy.SelectedLease, ...] = ()
        self._last_publish_at: float | None = None
        self._last_publish_reason: PublishReason | None = None
        self._affinity_published: dict[str, int] = {}  # router -> its last affinity LeaseSet's
        self._affinity_handed_at: dict[str, float] = {}  # router -> monotonic
        self._affinity_renew: set[str] = set()  # serving routers a new client came through
        self._publisher: str | None = None  # the one router that stores the LeaseSet
        # The publisher while it is handed a LeaseSet it must store, when it is public
        # only then (`policy.public_only_when_storing`).
        self._storing: str | None = None
        self._store_at: dict[str, float] = {}  # router -> monotonic: its latest store
        # What the routers' leases tell of their inbound gateways, and under the `shared`
        # gateway policy the set the published leases go through.
        self.peer_profiles = peer_profiles or profiles.PeerProfiles()
        self._tiers = profiles.Tiers()
        self._shared_gateways: frozenset[bytes] = frozenset()
        self.publishes = 0
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._stopping = False
        self._log_fields = {"destination": keys.destination.b32}

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled or `stop()`; router failures never end this. The LeaseSet is
        planned here only, whenever something asked for it (`_schedule`)."""
        for router in self.spec.routers:
            self._start_link(router)
        log.info(
            "balancer started",
            extra=fields(**self._log_fields, routers=",".join(r.name for r in self.spec.routers)),
        )
        try:
            while not self._stopping:
                now = self._clock.monotonic()
                if self._wake_at is not None and self._wake_at <= now:
                    self._wake_at = None
                    await self._plan()
                    continue
                timeout = None if self._wake_at is None else self._wake_at - now
                await wait_event(self._wake, self._clock, timeout)
                self._wake.clear()
        finally:
            if not self._stopping:  # cancelled; a stop() in progress owns the links
                await self._stop_links(destroy=False)

    async def stop(self, destroy_sessions: bool = True) -> None:
        """Destroy every session (so routers drop the destination) and end `run()`."""
        self._stopping = True
        await self._stop_links(destroy=destroy_sessions)
        self._wake.set()

    async def apply_spec(self, spec: MultihomedDestinationSpec) -> None:
        """Move to a new spec in place: unchanged sessions are kept, changed options are
        sent with ReconfigureSession, changed endpoints reconnect."""
        self.spec = spec
        wanted = {r.name: r for r in spec.routers}
        for name, link in list(self._links.items()):
            router = wanted.get(name)
            if router is None or router.i2cp != link.spec.i2cp:
                await self._stop_link(self._links.pop(name), destroy=True)
        for name, router in wanted.items():
            existing = self._links.get(name)
            if existing is None:
                self._start_link(router)
            else:
                existing.spec = router
                await self._reconfigure(existing)
        # Removed routers' tunnels went with their sessions; lease-set settings may differ.
        self._schedule(self._clock.monotonic())
        self._on_change()

    # --- snapshot -------------------------------------------------------------------

    def snapshot(self) -> BalancerSnapshot:
        current = self._current
        return BalancerSnapshot(
            b32=self._keys.destination.b32,
            hash_b64=b64encode(self._keys.destination.hash),
            routers=tuple(
                RouterSnapshot(
                    link.state.router,
                    link.state.state,
                    link.state.version,
                    link.state.leases,
                    link.state.last_error,
                    link.state.since_s,
                )
                for link in (
                    self._links[r.name] for r in self.spec.routers if r.name in self._links
                )
            ),
            published=self._published,
            published_s=current.published if current else None,
            expires_s=current.published + current.expires if current else None,
            publishes=self.publishes,
            publisher=self._publisher,
        )

    # --- router links ---------------------------------------------------------------

    def _start_link(self, router: RouterSpec) -> None:
        link = _Link(router, LinkState(router.name))
        self._links[router.name] = link
        link.task = asyncio.create_task(self._run_link(link), name=f"i2cp-{router.name}")

    async def _stop_links(self, destroy: bool) -> None:
        await asyncio.gather(*(self._stop_link(link, destroy) for link in self._links.values()))

    async def _stop_link(self, link: _Link, destroy: bool) -> None:
        await self._apply(link, Retired())
        session = link.session
        if destroy and session is not None:
            await session.destroy()
            log.info("session destroyed", extra=fields(**self._log_fields, router=link.spec.name))
        if link.task is not None:
            link.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link.task

    async def _run_link(self, link: _Link) -> None:
        """Connection attempts, one after another, each followed by the backoff its ending
        asks for, until the link is retired."""
        while not (self._stopping or link.state.retired):
            await self._apply(link, AttemptStarted())
            try:
                backoff = await self._attempt(link)
            except Exception as exc:  # a bug or an unforeseen input: this router only
                log.error(
                    "router link failed unexpectedly",
                    exc_info=exc,
                    extra=fields(**self._log_fields, router=link.spec.name, error=repr(exc)),
                )
                backoff = await self._apply(link, CreateRefused(f"unexpected error: {exc}"))
            if backoff is None or self._stopping or link.state.retired:
                return
            await self._clock.sleep(
                policy.backoff_delay_s(
                    backoff.step,
                    self._rng.random(),
                    self._timing.backoff_initial_s,
                    self._timing.backoff_max_s,
                )
            )

    async def _attempt(self, link: _Link) -> BackOff | None:
        """One connection: resolve the endpoint, handshake, create the session and serve
        it until it ends. Returns the backoff the ending asks for."""
        name = link.spec.name
        try:
            endpoint = await self._resolve_endpoint(link.spec)
        except EndpointError as exc:
            log.warning(
                "router unavailable", extra=fields(**self._log_fields, router=name, error=exc)
            )
            return await self._apply(link, EndpointUnavailable(str(exc)))
        session = RouterSession(
            name,
            endpoint,
            self._keys,
            clock=self._clock,
            heartbeat_s=self._timing.heartbeat_s,
            handshake_timeout_s=self._timing.handshake_timeout_s,
        )
        ramp: asyncio.Task[None] | None = None
        ending: LinkEvent
        try:
            reply = await session.connect(policy.CLIENT_API_VERSION)
            await session.create(self._options(link, reply, ramped=False))
            # What a ReconfigureSession would carry: the baseline `_reconfigure` compares.
            link.options = self._options(link, reply, ramped=False, reconfigure=True)
            link.session = session
            self._store_at.pop(name, None)  # a new session has stored nothing yet
            # The publisher may have changed while the session was being created.
            await self._reconfigure(link)
            version = describe_version(reply)
            await self._apply(
                link, SessionCreated(version, self._clock.wall(), self._clock.monotonic())
            )
            log.info(
                "session established",
                extra=fields(
                    **self._log_fields, router=name, router_version=version,
                    session_id=session.session_id,
                ),
            )  # fmt: skip
            ramp = asyncio.create_task(self._ramp_up(link, session), name=f"ramp-{name}")
            await session.run(self._on_lease_request, self._on_payload)
            ending = SessionEnded("the session ended", self._clock.monotonic())
        except SessionRefused as exc:
            ending = CreateRefused(str(exc))
        except (SessionLost, ConnectionClosed, OSError, TimeoutError) as exc:
            ending = SessionEnded(str(exc) or type(exc).__name__, self._clock.monotonic())
        finally:
            if ramp is not None:
                ramp.cancel()
            link.session = None
            await session.close()
        if link.state.retired:
            return None
        if isinstance(ending, CreateRefused):
            what = "router refused the session"
        else:
            what = "router lost" if link.state.established else "router unavailable"
        backoff = await self._apply(link, ending)
        log.warning(
            what, extra=fields(**self._log_fields, router=name, error=link.state.last_error)
        )
        return backoff

    async def _apply(self, link: _Link, event: LinkEvent) -> BackOff | None:
        """Step the link's state machine and carry out the effects; returns the backoff
        the transition asks for, if any."""
        before = link.state
        transition = step(before, event)
        link.state = transition.state
        if isinstance(event, LeasesReported) and before.established and link.state.established:
            self.peer_profiles = profiles.observe_leases(
                self.peer_profiles,
                link.spec.name,
                before.leases,
                link.state.leases,
                int(self._clock.wall() * 1000),
            )
        backoff = None
        for effect in transition.effects:
            match effect:
                case Notify(event=news):
                    self._tell(news)
                case PlanPublish():
                    self._schedule(self._clock.monotonic())
                case Reconfigure():
                    await self._reconfigure(link)
                case BackOff():
                    backoff = effect
        if link.state != before:
            self._on_change()
        return backoff

    def _tell(self, event: BalancerEvent) -> None:
        self._on_event(event)

    async def _ramp_up(self, link: _Link, session: RouterSession) -> None:
        """Give a new session its held-back inbound tunnel, at this router's turn."""
        names = [r.name for r in self.spec.routers]
        index = names.index(link.spec.name) if link.spec.name in names else 0
        await self._clock.sleep(
            policy.ramp_delay_s(
                index, len(names), self._timing.ramp_first_s, self._timing.ramp_spread_s
            )
        )
        if link.session is session:
            await self._apply(link, RampTurn())

    def _options(
        self, link: _Link, reply_version: str, *, ramped: bool, reconfigure: bool = False
    ) -> dict[str, str]:
        name = link.spec.name
        storing_only = policy.public_only_when_storing(
            link.spec.implementation, policy.CLIENT_API_VERSION, reply_version
        )
        return policy.options_for(
            self.spec,
            link.spec,
            reply_version,
            ramped=ramped,
            nickname=f"{self.name}-{name}",
            publishing=name == self._publisher and (not storing_only or name == self._storing),
            reconfigure=reconfigure,
            random_key=b64encode(self._keys.tier_slicing_key),
        )

    async def _reconfigure(self, link: _Link) -> None:
        """Send ReconfigureSession when the options the session should have changed."""
        session = link.session
        if session is None or session.router_version is None:
            return
        options = self._options(
            link, session.router_version, ramped=link.state.ramped, reconfigure=True
        )
        if options == link.options:
            return
        link.options = options
        try:
            # Bounded: a router that stopped reading must not hold up the plan (and with it
            # the answers other routers' lease requests wait for).
            await asyncio.wait_for(session.reconfigure(options), self._timing.handshake_timeout_s)
            log.info(
                "session reconfigured", extra=fields(**self._log_fields, router=link.spec.name)
            )
        except (ConnectionClosed, TimeoutError) as exc:
            log.warning(
                "reconfigure failed",
                extra=fields(**self._log_fields, router=link.spec.name, error=str(exc)),
            )

    # --- lease requests and publishing ----------------------------------------------

    async def _on_lease_request(self, session: RouterSession, leases: tuple[Lease, ...]) -> None:
        """A router built or lost tunnels; the plan answers it (i2pd waits at most 10 s)."""
        link = self._links.get(session.name)
        if link is None or link.session is not session:
            return
        log.debug(
            "lease request",
            extra=fields(**self._log_fields, router=session.name, leases=len(leases)),
        )
        await self._apply(link, LeasesReported(leases))

    async def _on_payload(self, session: RouterSession, message: messages.MessagePayload) -> None:
        """What a client sent the destination, through this router: the data plane's."""
        if session.session_id is not None and message.session_id == session.session_id:
            self._on_payload_received(session.name, message)

    def renew_affinity(self, router: str) -> None:
        """A client opened a stream or flow through `router`: under client affinity, sign
        that router's own LeaseSet afresh (rate-limited), so its next message to the new
        client carries it (docs/conversations.md)."""
        if router not in policy.affinity_hosts(self.spec) or router in self._affinity_renew:
            return
        self._affinity_renew.add(router)
        self._schedule(self._affinity_renew_at(router, self._clock.monotonic()))

    def _affinity_renew_at(self, router: str, now: float) -> float:
        return policy.affinity_renew_at(
            self._affinity_handed_at.get(router), now, self._timing.affinity_renew_s
        )

    async def send_payload(self, router: str, to: Destination, payload: bytes) -> bool:
        """Send an I2CP payload (an encoded `messages.Payload`) to `to` through `router`'s
        session; False when that router has no established session now."""
        link = self._links.get(router)
        session = link.session if link is not None else None
        if session is None or not session.established:
            return False
        try:
            await session.send(to, payload)
        except ConnectionClosed:
            return False
        return True

    def _gateway_set(self) -> frozenset[bytes] | None:
        """Under the `shared` gateway policy, the set the published leases go through:
        tiers and set recomputed every 45 s (and while the set is empty). None: native."""
        if self.spec.peer_policy.gateways is not GatewayPolicy.SHARED:
            return None
        reports = [link.state.leases for link in self._links.values() if link.state.established]
        previous = self._shared_gateways
        self._tiers, chosen = gateways.shared_gateways_at(
            previous,
            self._tiers,
            self.peer_profiles,
            reports,
            policy.lease_target(self.spec, sum(1 for leases in reports if leases)),
            self.spec.tunnels.inbound.length,
            self._clock.wall(),
        )
        if chosen != previous:
            log.info(
                "shared gateways chosen",
                extra=fields(
                    **self._log_fields,
                    gateways=len(chosen),
                    kept=len(chosen & previous),
                    fast=len(self._tiers.fast),
                    high_capacity=len(self._tiers.high_capacity),
                    failing=len(self._tiers.failing),
                ),
            )
        self._shared_gateways = chosen
        return chosen

    async def _plan(self) -> None:
        """Decide (policy) and carry out: publish, answer waiting routers, plan the next
        look."""
        async with self._plan_lock:
            now = self._clock.monotonic()
            renew = frozenset(
                r for r in self._affinity_renew if self._affinity_renew_at(r, now) <= now
            )
            hosts = policy.affinity_hosts(self.spec)
            stale, _ = policy.affinity_refresh(
                self._affinity_handed_at, now, self._timing.affinity_refresh_s
            )
            renew |= stale & hosts
            plan = policy.plan_publish(
                policy.PublishInput(
                    links=tuple(link.state for link in self._links.values()),
                    published=self._published if self._current is not None else None,
                    last_publish_at=self._last_publish_at,
                    spec=self.spec,
                    now=now,
                    now_ms=int(self._clock.wall() * 1000),
                    timing=self._timing.publish,
                    affinity_renew=renew,
                    publisher=self._publisher,
                    store_at=dict(self._store_at),
                    last_publish_reason=self._last_publish_reason,
                    shared_gateways=self._gateway_set(),
                )
            )
            self._affinity_renew -= renew
            changed = await self._set_publisher(plan.publisher)
            wake_at = plan.wake_at
            try:
                if plan.leases is not None:
                    if not await self._publish(plan, plan.leases):
                        wake_at = plan.retry_at
                        await self._hand_affinity(plan.affinity_answers)
                else:
                    if self._current is not None:
                        # A new publisher stores only what it is handed (i2pd reads the
                        # flag then): it gets the current LeaseSet now, not at the next
                        # version. Answers to lease requests are not stored again.
                        new = {plan.publisher} if changed and plan.publisher else set()
                        await self._hand_to_store(self._current, frozenset(new))
                        await self._hand_over(self._current, plan.resend_current_to - new)
                    await self._hand_affinity(plan.affinity)
            finally:
                await self._publisher_at_rest()
            if wake_at is not None:
                self._schedule(wake_at)
            # After this plan's hand-overs: each serving router's next refresh (routers that
            # left the spec, or the serving role, are forgotten).
            for router in set(self._affinity_handed_at) - hosts:
                del self._affinity_handed_at[router]
            _, refresh_at = policy.affinity_refresh(
                self._affinity_handed_at, now, self._timing.affinity_refresh_s
            )
            if refresh_at is not None:
                self._schedule(refresh_at)
            for router in self._affinity_renew:  # not due yet
                self._schedule(self._affinity_renew_at(router, now))

    async def _set_publisher(self, publisher: str | None) -> bool:
        """Make `publisher` the one router that stores the LeaseSet: the previous one is
        told not to publish before the new one is told to, and both before any LeaseSet is
        handed over (a router reads the flag when it is handed one). Whether it changed."""
        previous = self._publisher
        if publisher == previous:
            return False
        self._publisher = publisher
        for name in (previous, publisher):
            link = self._links.get(name) if name is not None else None
            if link is not None:
                await self._reconfigure(link)
        self._tell(PublisherChanged(publisher, previous))
        log.info(
            "publisher changed",
            extra=fields(**self._log_fields, publisher=publisher or "", previous=previous or ""),
        )
        self._on_change()
        return True

    def _schedule(self, at: float) -> None:
        """Have `run()` plan again at monotonic time `at` (the earliest request wins)."""
        # A due wake-up that `run()` has not taken yet must not give way to a later one: a
        # router that asked for leases while a plan was running waits on it (i2pd gives 10 s).
        if self._wake_at is None or at < self._wake_at:
            self._wake_at = at
        self._wake.set()

    async def _publish(
        self, plan: policy.PublishPlan, selected: tuple[policy.SelectedLease, ...]
    ) -> bool:
        """Sign one LeaseSet2 and hand the identical bytes to the plan's targets. Recorded
        as published only when at least one router took it."""
        # After every LeaseSet any router holds: a serving router handed the merged one
        # (out of leases of its own, or affinity turned off) must see it as newer.
        held = [self._current.published] if self._current else []
        held += self._affinity_published.values()
        published_s = policy.next_published_s(max(held, default=None), int(self._clock.wall()))
        lease_set = self._sign(selected, published_s)
        reached = await self._hand_to_store(lease_set, plan.targets)
        if not reached:
            log.warning(
                "LeaseSet not published: no router took it",
                extra=fields(**self._log_fields, reason=plan.reason),
            )
            return False
        self._current = lease_set
        self._published = selected
        self._last_publish_at = self._clock.monotonic()
        self._last_publish_reason = plan.publish_reason
        if self._publisher in reached:
            self._store_at[self._publisher] = policy.next_store_at(
                self._store_at.get(self._publisher),
                self._last_publish_at,
                self._timing.min_publish_interval_s,
            )
        self.publishes += 1
        # The serving routers' own LeaseSets follow the merged one, which they must be newer
        # than, and before any client is moved to them.
        serving = await self._hand_affinity(plan.affinity)
        routers = tuple(sorted({s.router for s in selected}))
        handed_to = tuple(sorted(reached))
        move_to = tuple(sorted(serving)) if plan.affinity else handed_to
        if plan.lost and plan.failover_s is not None:
            self._tell(
                FailoverPublished(
                    plan.lost, plan.failover_s, len(selected), routers, handed_to, move_to
                )
            )
        elif plan.publish_reason is not None:
            self._tell(
                LeaseSetPublished(plan.publish_reason, len(selected), routers, handed_to, move_to)
            )
        log.info(
            "LeaseSet published",
            extra=fields(
                **self._log_fields, reason=plan.reason, leases=len(selected),
                routers=",".join(routers), handed_to=",".join(handed_to), published=published_s,
                publisher=self._publisher or "",
            ),
        )  # fmt: skip
        self._on_change()
        return True

    def _sign(
        self, selected: tuple[policy.SelectedLease, ...], published_s: int, flags: int = 0
    ) -> LeaseSet2:
        return LeaseSet2.build(
            self._keys.destination,
            published_s,
            policy.lease_set_expires_s(selected, published_s),
            self._keys.encryption_keys,
            tuple(s.to_lease2() for s in selected),
            self._keys.sign,
            flags=flags,
        )

    async def _hand_to_store(self, lease_set: LeaseSet2, names: frozenset[str]) -> set[str]:
        """`_hand_over`, the publisher among `names` told to publish first when it is
        public only for such hand-overs; `_plan` tells it not to once the plan is carried
        out (the router reads the flag as it takes the LeaseSet, and the messages of a
        session in order)."""
        publisher = self._links.get(self._publisher) if self._publisher in names else None
        if publisher is not None:
            self._storing = publisher.spec.name
            await self._reconfigure(publisher)
        return await self._hand_over(lease_set, names)

    async def _publisher_at_rest(self) -> None:
        """Undo `_hand_to_store`'s switch: later hand-overs are not stored."""
        link = self._links.get(self._storing) if self._storing is not None else None
        self._storing = None
        if link is not None:
            await self._reconfigure(link)

    async def _hand_over(self, lease_set: LeaseSet2, names: frozenset[str]) -> set[str]:
        """Send `lease_set` to the named routers' sessions; the names of those that took it."""
        return await self._hand_each({name: lease_set for name in names})

    async def _hand_affinity(
        self, affinity: Mapping[str, tuple[policy.SelectedLease, ...]]
    ) -> set[str]:
        """Sign and hand each serving router a LeaseSet of its own leases (client affinity):
        flagged unpublished, published after the merged one. The names that took theirs."""
        if not affinity:
            return set()
        merged = self._current.published if self._current is not None else None
        now_s = int(self._clock.wall())
        lease_sets = {}
        for name, selected in affinity.items():
            published_s = policy.affinity_published_s(
                merged, self._affinity_published.get(name), now_s
            )
            lease_sets[name] = self._sign(selected, published_s, LEASESET2_FLAG_UNPUBLISHED)
        reached = await self._hand_each(lease_sets)
        for name in sorted(reached):
            self._affinity_published[name] = lease_sets[name].published
            self._affinity_handed_at[name] = self._clock.monotonic()
            log.debug(
                "affinity LeaseSet handed over",
                extra=fields(
                    **self._log_fields, router=name, leases=len(lease_sets[name].leases),
                    published=lease_sets[name].published,
                ),
            )  # fmt: skip
        return reached

    async def _hand_each(self, lease_sets: Mapping[str, LeaseSet2]) -> set[str]:
        """Send each router's session its LeaseSet; the names of those that took it."""
        links = [self._links[name] for name in sorted(lease_sets) if name in self._links]
        results = await asyncio.gather(
            *(_send(link.session, lease_sets[link.spec.name]) for link in links)
        )
        reached = set()
        for link, sent in zip(links, results, strict=True):
            if sent:
                reached.add(link.spec.name)
                await self._apply(link, LeaseSetHandedOver())
        return reached


async def _send(session: RouterSession | None, lease_set: LeaseSet2) -> bool:
    if session is None:
        return False
    try:
        await session.send_lease_set(lease_set)
    except ConnectionClosed:
        return False
    return True


def describe_version(reply: str) -> str:
    """How a router's SetDate version is shown: i2pd before 2.58 echoes ours."""
    if reply == policy.CLIENT_API_VERSION:
        return f"unknown (echoed {reply}: i2pd < 2.58)"
    return reply
