"""The balancer's I/O: one session per router, lease reports in, one merged LeaseSet out.

Every decision is delegated to `policy`; this module gathers the snapshot those functions
need, applies their result, and keeps each router's session alive with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from i2p_multihome.balancer import policy
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.i2cp.connection import ConnectionClosed
from i2p_multihome.i2cp.session import Endpoint, RouterSession, SessionLost, SessionRefused
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import MultihomedDestinationSpec, RouterSpec, RouterState
from i2p_multihome.wire import messages
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease, LeaseSet2

log = logging.getLogger(__name__)


class EndpointError(Exception):
    """A router's connection details cannot be had (say, its credentials Secret): that
    router is refused and retried with backoff; the others are untouched."""


# Called before every connection attempt, so a rotated credentials Secret is used at the
# next reconnect and a router added by a spec update gets its own.
EndpointResolver = Callable[[RouterSpec], Awaitable[Endpoint]]


async def plain_endpoint(router: RouterSpec) -> Endpoint:
    """Endpoint without credentials (the standalone balancer; the operator reads Secrets)."""
    return Endpoint(router.i2cp.host, router.i2cp.port, router.i2cp.tls)


@dataclass
class Timing:
    """Knobs with production defaults; tests shrink them."""

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    heartbeat_s: float = 10.0
    handshake_timeout_s: float = 15.0
    min_publish_interval_s: float = policy.MIN_PUBLISH_INTERVAL_S  # coalescing window
    refresh_interval_s: float = policy.REFRESH_INTERVAL_S  # unchanged LeaseSet published afresh
    ramp_first_s: float = policy.RAMP_FIRST_S  # then a new session's held-back tunnel ...
    ramp_spread_s: float = policy.RAMP_SPREAD_S  # ... the routers taking turns across this


@dataclass(frozen=True)
class BalancerEvent:
    """Something an operator wants told (Kubernetes Events, metrics): never key material."""

    kind: str  # Published, RouterLost, RouterRecovered, RouterRefused, SessionEstablished
    message: str
    router: str | None = None
    seconds: float | None = None  # RouterRecovered: downtime; Published after a loss: failover


@dataclass
class _RouterLink:
    spec: RouterSpec
    state: RouterState = RouterState.CONNECTING
    session: RouterSession | None = None
    version: str | None = None
    leases: tuple[Lease, ...] = ()
    last_error: str | None = None
    since_s: float | None = None
    options: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    retired: bool = False  # removed from the spec or balancer stopping: no reconnect
    lost_at: float | None = None  # monotonic time the last established session ended


class Balancer:
    def __init__(
        self,
        name: str,
        spec: MultihomedDestinationSpec,
        keys: DestinationKeys,
        *,
        on_change: Callable[[], None] = lambda: None,
        on_event: Callable[[BalancerEvent], None] = lambda event: None,
        resolve_endpoint: EndpointResolver = plain_endpoint,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._keys = keys
        self._on_change = on_change
        self._on_event = on_event
        self._loss_pending_since: float | None = None  # a published router was lost
        self._resolve_endpoint = resolve_endpoint
        self._timing = timing or Timing()
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._links: dict[str, _RouterLink] = {}
        self._publish_lock = asyncio.Lock()
        self._current: LeaseSet2 | None = None
        self._published: tuple[policy.SelectedLease, ...] = ()
        self._last_publish_at: float | None = None
        self.publishes = 0
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._stopping = False
        self._log_fields = {"destination": keys.destination.b32}

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled or `stop()`; router failures never end this."""
        for router in self.spec.routers:
            self._start_link(router)
        log.info(
            "balancer started",
            extra=fields(**self._log_fields, routers=",".join(r.name for r in self.spec.routers)),
        )
        try:
            while not self._stopping:
                if self._wake_at is not None and self._wake_at <= self._clock():
                    self._wake_at = None
                    await self._evaluate()
                    continue
                timeout = None if self._wake_at is None else self._wake_at - self._clock()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
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
        old = self.spec
        self.spec = spec
        wanted = {r.name: r for r in spec.routers}
        dropped: list[str] = []
        for name in list(self._links):
            if name not in wanted:
                await self._stop_link(self._links.pop(name), destroy=True)
                dropped.append(name)
        for name, router in wanted.items():
            link = self._links.get(name)
            if link is None:
                self._start_link(router)
            elif link.spec.i2cp != router.i2cp:
                await self._stop_link(self._links.pop(name), destroy=True)
                dropped.append(name)
                self._start_link(router)
            else:
                link.spec = router
                await self._reconfigure(link)
        if dropped:
            # Their sessions, and with them their tunnels, are gone: publish without them now.
            await self._evaluate(lost=dropped)
        if old.lease_set != spec.lease_set or old.peer_policy != spec.peer_policy:
            self._schedule(self._clock())
        self._on_change()

    # --- snapshot -------------------------------------------------------------------

    def snapshot(self) -> BalancerSnapshot:
        current = self._current
        return BalancerSnapshot(
            b32=self._keys.destination.b32,
            hash_b64=b64encode(self._keys.destination.hash),
            routers=tuple(
                RouterSnapshot(
                    link.spec.name,
                    link.state,
                    link.version,
                    link.leases,
                    link.last_error,
                    link.since_s,
                )
                for link in (
                    self._links[r.name] for r in self.spec.routers if r.name in self._links
                )
            ),
            published=self._published,
            published_s=current.published if current else None,
            expires_s=current.published + current.expires if current else None,
            publishes=self.publishes,
        )

    # --- router links ---------------------------------------------------------------

    def _start_link(self, router: RouterSpec) -> None:
        link = _RouterLink(router)
        self._links[router.name] = link
        link.task = asyncio.create_task(self._run_link(link), name=f"i2cp-{router.name}")

    async def _stop_links(self, destroy: bool) -> None:
        await asyncio.gather(*(self._stop_link(link, destroy) for link in self._links.values()))

    async def _stop_link(self, link: _RouterLink, destroy: bool) -> None:
        link.retired = True
        session = link.session
        if destroy and session is not None:
            await session.destroy()
            log.info("session destroyed", extra=fields(**self._log_fields, router=link.spec.name))
        if link.task is not None:
            link.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link.task

    async def _run_link(self, link: _RouterLink) -> None:
        attempt = 0
        name = link.spec.name
        while not (self._stopping or link.retired):
            try:
                endpoint = await self._resolve_endpoint(link.spec)
            except EndpointError as exc:
                self._refused(link, str(exc))
                log.warning(
                    "router unavailable", extra=fields(**self._log_fields, router=name, error=exc)
                )
                self._on_change()
                await self._back_off(link, attempt)
                attempt += 1
                continue
            session = RouterSession(
                name,
                endpoint,
                self._keys,
                clock=self._clock,
                wall_clock_ms=lambda: int(self._wall_clock() * 1000),
                heartbeat_s=self._timing.heartbeat_s,
                handshake_timeout_s=self._timing.handshake_timeout_s,
            )
            established = False
            ramp: asyncio.Task[None] | None = None
            try:
                reply = await session.connect(policy.CLIENT_API_VERSION)
                link.version = describe_version(reply)
                link.options = policy.one_tunnel_held_back(self._options_for(link, reply))
                await session.create(link.options)
                link.session, established = session, True
                link.state, link.since_s, link.last_error = (
                    RouterState.ESTABLISHED, self._wall_clock(), None,
                )  # fmt: skip
                attempt = 0
                log.info(
                    "session established",
                    extra=fields(
                        **self._log_fields, router=name, router_version=link.version,
                        session_id=session.session_id,
                    ),
                )  # fmt: skip
                if link.lost_at is not None:
                    downtime = self._clock() - link.lost_at
                    link.lost_at = None
                    self._on_event(
                        BalancerEvent(
                            "RouterRecovered",
                            f"router {name} is back after {downtime:.0f}s",
                            name,
                            downtime,
                        )
                    )
                else:
                    self._on_event(
                        BalancerEvent("SessionEstablished", f"session on router {name}", name)
                    )
                self._on_change()
                ramp = asyncio.create_task(self._ramp_up(link, session), name=f"ramp-{name}")
                await session.run(self._on_lease_request, self._on_payload)
            except SessionRefused as exc:
                self._refused(link, str(exc))
            except (SessionLost, ConnectionClosed, OSError, TimeoutError) as exc:
                link.state = RouterState.DISCONNECTED
                link.last_error = str(exc) or type(exc).__name__
            finally:
                if ramp is not None:
                    ramp.cancel()
                link.session, link.leases, link.since_s = None, (), None
                await session.close()
            if self._stopping or link.retired:
                return
            log.warning(
                "router lost" if established else "router unavailable",
                extra=fields(**self._log_fields, router=name, error=link.last_error),
            )
            if established:
                link.lost_at = self._clock()
                if any(s.router == name for s in self._published):
                    self._loss_pending_since = self._loss_pending_since or link.lost_at
                self._on_event(
                    BalancerEvent("RouterLost", f"router {name} lost: {link.last_error}", name)
                )
                await self._evaluate(lost=(name,))
            self._on_change()
            await self._back_off(link, attempt)
            attempt += 1

    def _refused(self, link: _RouterLink, reason: str) -> None:
        """A refusal is news once (an event), then stays in the router's status."""
        if link.last_error != reason:
            name = link.spec.name
            self._on_event(BalancerEvent("RouterRefused", f"router {name}: {reason}", name))
        link.state, link.last_error = RouterState.REFUSED, reason

    async def _back_off(self, link: _RouterLink, attempt: int) -> None:
        """Exponential, capped, jittered wait before the next connection attempt."""
        delay = min(self._timing.backoff_max_s, self._timing.backoff_initial_s * 2**attempt)
        await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
        link.state = RouterState.CONNECTING

    async def _ramp_up(self, link: _RouterLink, session: RouterSession) -> None:
        """Give a new session its held-back inbound tunnel, at this router's turn."""
        names = [r.name for r in self.spec.routers]
        index = names.index(link.spec.name) if link.spec.name in names else 0
        await asyncio.sleep(
            policy.ramp_delay_s(
                index, len(names), self._timing.ramp_first_s, self._timing.ramp_spread_s
            )
        )
        if link.session is session:
            await self._reconfigure(link)

    def _options_for(self, link: _RouterLink, reply_version: str) -> dict[str, str]:
        inverted = policy.publish_is_inverted(
            link.spec.implementation, policy.CLIENT_API_VERSION, reply_version
        )
        return policy.session_options(
            self.spec, link.spec, inverted, f"{self.name}-{link.spec.name}"
        )

    async def _reconfigure(self, link: _RouterLink) -> None:
        session = link.session
        if session is None or session.router_version is None:
            return
        options = self._options_for(link, session.router_version)
        if options != link.options:
            link.options = options
            try:
                await session.reconfigure(options)
                log.info(
                    "session reconfigured", extra=fields(**self._log_fields, router=link.spec.name)
                )
            except ConnectionClosed as exc:
                log.warning(
                    "reconfigure failed",
                    extra=fields(**self._log_fields, router=link.spec.name, error=str(exc)),
                )

    # --- lease requests and publishing ----------------------------------------------

    async def _on_lease_request(self, session: RouterSession, leases: tuple[Lease, ...]) -> None:
        """A router built or lost tunnels. It must get a LeaseSet back within i2pd's 10 s,
        even when coalescing holds back the merged publish."""
        link = self._links.get(session.name)
        if link is None:
            return
        link.leases = leases
        log.debug(
            "lease request",
            extra=fields(**self._log_fields, router=session.name, leases=len(leases)),
        )
        reached = await self._evaluate()
        if session.name not in reached:
            async with self._publish_lock:
                if self._current is None:
                    now_ms = int(self._wall_clock() * 1000)
                    fallback = policy.select_leases(
                        {session.name: leases}, now_ms, self.spec.lease_set.max_leases,
                        policy.excluded_gateways(self.spec), margin_s=policy.MIN_REMAINING_S,
                    )  # fmt: skip
                    if fallback:
                        await self._publish(fallback, reason="first LeaseSet (fallback)")
                        return
                if self._current is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await session.send_lease_set(self._current)
        self._on_change()

    async def _on_payload(self, session: RouterSession, message: messages.MessagePayload) -> None:
        log.debug(
            "payload received",
            extra=fields(**self._log_fields, router=session.name, bytes=len(message.payload)),
        )

    async def _evaluate(self, lost: Iterable[str] = ()) -> set[str]:
        """Decide (policy) and apply: publish now, later, or not at all. Returns the routers
        that were handed a new LeaseSet."""
        async with self._publish_lock:
            now = self._clock()
            now_ms = int(self._wall_clock() * 1000)
            reports = {
                name: link.leases
                for name, link in self._links.items()
                if link.state is RouterState.ESTABLISHED
            }
            desired = policy.select_leases(
                reports, now_ms, self.spec.lease_set.max_leases, policy.excluded_gateways(self.spec)
            )
            decision = policy.decide_publish(
                desired,
                self._published if self._current else None,
                self._last_publish_at,
                now,
                lost,
                min_interval_s=self._timing.min_publish_interval_s,
                refresh_interval_s=self._timing.refresh_interval_s,
                now_ms=now_ms,
            )
            reached: set[str] = set()
            if decision.action is policy.PublishAction.NOW:
                reached = await self._publish(desired, decision.reason)
            wake = [decision.at] if decision.at is not None else []
            refresh_at = policy.next_refresh_at(
                self._last_publish_at, self._timing.refresh_interval_s
            )
            if refresh_at is not None:
                wake.append(max(refresh_at, now + 1.0))
            if wake:
                self._schedule(min(wake))
            return reached

    def _schedule(self, at: float) -> None:
        """Have `run()` evaluate again at monotonic time `at` (earliest request wins)."""
        if self._wake_at is None or at < self._wake_at or self._wake_at <= self._clock():
            self._wake_at = at
        self._wake.set()

    async def _publish(self, selected: tuple[policy.SelectedLease, ...], reason: str) -> set[str]:
        """Sign one LeaseSet2 and hand the identical bytes to every connected router.
        Recorded as published only when at least one router took it."""
        published_s = policy.next_published_s(
            self._current.published if self._current else None, int(self._wall_clock())
        )
        lease_set = LeaseSet2.build(
            self._keys.destination,
            published_s,
            policy.lease_set_expires_s(selected, published_s),
            (self._keys.encryption_key,),
            tuple(s.to_lease2() for s in selected),
            self._keys.sign,
        )
        targets = [
            link
            for link in self._links.values()
            if link.session is not None and link.session.established
        ]
        results = await asyncio.gather(
            *(self._send(link, lease_set) for link in targets), return_exceptions=True
        )
        reached = {
            link.spec.name for link, result in zip(targets, results, strict=True) if result is True
        }
        if not reached:
            log.warning(
                "LeaseSet not published: no router took it",
                extra=fields(**self._log_fields, reason=reason),
            )
            return reached
        self._current = lease_set
        self._published = selected
        self._last_publish_at = self._clock()
        self.publishes += 1
        failover_s = None
        if self._loss_pending_since is not None:
            failover_s = self._last_publish_at - self._loss_pending_since
            self._loss_pending_since = None
        self._on_event(
            BalancerEvent(
                "Published",
                f"LeaseSet with {len(selected)} leases from "
                f"{len({s.router for s in selected})} routers ({reason})",
                seconds=failover_s,
            )
        )
        log.info(
            "LeaseSet published",
            extra=fields(
                **self._log_fields, reason=reason, leases=len(selected),
                routers=",".join(sorted({s.router for s in selected})),
                handed_to=",".join(sorted(reached)), published=published_s,
            ),
        )  # fmt: skip
        self._on_change()
        return reached

    @staticmethod
    async def _send(link: _RouterLink, lease_set: LeaseSet2) -> bool:
        session = link.session
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
