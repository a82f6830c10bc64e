"""One router link's lifecycle as a state machine: events in, the new state and effects out.

Every change to a link's state goes through `step`; the engine only performs the I/O the
effects ask for (back off, re-plan the LeaseSet, reconfigure the session, tell the world).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from i2p_multihome.balancer.events import (
    BalancerEvent,
    RouterLost,
    RouterRecovered,
    RouterRefused,
    SessionEstablished,
)
from i2p_multihome.model.v1alpha1 import RouterState
from i2p_multihome.wire.structures import Lease

RETIRED_REASON = "session closed by the balancer"


@dataclass(frozen=True)
class LinkState:
    router: str
    state: RouterState = RouterState.CONNECTING
    version: str | None = None  # as shown in status
    leases: tuple[Lease, ...] = ()  # the router's last RequestVariableLeaseSet
    # The router asked for a LeaseSet and has not been handed one since: i2pd ends a session
    # whose request stays unanswered for 10 s.
    awaiting_answer: bool = False
    last_error: str | None = None
    since_s: float | None = None  # wall clock: when the current session was established
    failures: int = 0  # attempts that failed since the last session: the backoff step
    lost_at: float | None = None  # monotonic: when the last established session ended
    ramped: bool = False  # the session has been given its held-back inbound tunnel
    retired: bool = False  # removed from the spec, or the balancer is stopping: no reconnect

    @property
    def established(self) -> bool:
        return self.state is RouterState.ESTABLISHED


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptStarted:
    """A connection attempt begins (at start, or once a backoff has passed)."""


@dataclass(frozen=True)
class EndpointUnavailable:
    """The router's connection details cannot be had (say, its credentials Secret)."""

    reason: str


@dataclass(frozen=True)
class CreateRefused:
    """The router answered CreateSession with something other than `created`, or ended the
    handshake with a reason (Java's failed authorization)."""

    reason: str


@dataclass(frozen=True)
class SessionCreated:
    version: str
    wall_s: float
    now: float  # monotonic


@dataclass(frozen=True)
class SessionEnded:
    """The connection ended: before the session existed (a failed attempt) or after (a loss)."""

    reason: str
    now: float  # monotonic


@dataclass(frozen=True)
class LeasesReported:
    """RequestVariableLeaseSet: the router's current inbound tunnels, waiting for an answer."""

    leases: tuple[Lease, ...]


@dataclass(frozen=True)
class LeaseSetHandedOver:
    """The router was sent a LeaseSet: its request is answered."""


@dataclass(frozen=True)
class RampTurn:
    """The router's turn to get its held-back inbound tunnel."""


@dataclass(frozen=True)
class Retired:
    pass


LinkEvent = (
    AttemptStarted
    | EndpointUnavailable
    | CreateRefused
    | SessionCreated
    | SessionEnded
    | LeasesReported
    | LeaseSetHandedOver
    | RampTurn
    | Retired
)


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notify:
    event: BalancerEvent


@dataclass(frozen=True)
class PlanPublish:
    """The merged LeaseSet may have to change: plan it now."""


@dataclass(frozen=True)
class Reconfigure:
    """Send the session the options it should have now."""


@dataclass(frozen=True)
class BackOff:
    """Wait before the next attempt; `step` counts the failures before this one."""

    step: int


Effect = Notify | PlanPublish | Reconfigure | BackOff


@dataclass(frozen=True)
class Transition:
    state: LinkState
    effects: tuple[Effect, ...] = ()


def step(link: LinkState, event: LinkEvent) -> Transition:
    """The link after `event`, and what the engine must do about it."""
    if link.retired:
        # Stopping or removed: the session is being torn down on purpose; nothing to tell.
        return Transition(_without_session(link))
    match event:
        case AttemptStarted():
            return Transition(_without_session(link, state=RouterState.CONNECTING))
        case EndpointUnavailable(reason=reason) | CreateRefused(reason=reason):
            return _refused(link, reason)
        case SessionCreated():
            return _established(link, event)
        case SessionEnded():
            return _ended(link, event)
        case LeasesReported(leases=leases):
            if not link.established:
                return Transition(link)
            return Transition(
                dataclasses.replace(link, leases=leases, awaiting_answer=True), (PlanPublish(),)
            )
        case LeaseSetHandedOver():
            return Transition(dataclasses.replace(link, awaiting_answer=False))
        case RampTurn():
            if not link.established or link.ramped:
                return Transition(link)
            return Transition(dataclasses.replace(link, ramped=True), (Reconfigure(),))
        case Retired():
            # What status shows after a stop: the routers no longer host the destination.
            return Transition(
                _without_session(
                    link, retired=True, state=RouterState.DISCONNECTED, last_error=RETIRED_REASON
                )
            )


def _refused(link: LinkState, reason: str) -> Transition:
    # A refusal is news once (an event); after that it stays in the router's status.
    effects: list[Effect] = []
    if link.last_error != reason:
        effects.append(Notify(RouterRefused(link.router, reason)))
    effects.append(BackOff(link.failures))
    state = _without_session(
        link, state=RouterState.REFUSED, last_error=reason, failures=link.failures + 1
    )
    return Transition(state, tuple(effects))


def _established(link: LinkState, event: SessionCreated) -> Transition:
    if link.lost_at is not None:
        news: BalancerEvent = RouterRecovered(link.router, max(0.0, event.now - link.lost_at))
    else:
        news = SessionEstablished(link.router, event.version)
    state = dataclasses.replace(
        link,
        state=RouterState.ESTABLISHED,
        version=event.version,
        since_s=event.wall_s,
        last_error=None,
        failures=0,
        lost_at=None,
        leases=(),
        awaiting_answer=False,
        ramped=False,
    )
    return Transition(state, (Notify(news),))


def _ended(link: LinkState, event: SessionEnded) -> Transition:
    state = _without_session(
        link, state=RouterState.DISCONNECTED, last_error=event.reason, failures=link.failures + 1
    )
    if not link.established:
        return Transition(state, (BackOff(link.failures),))
    # Its tunnels went with the session: the published LeaseSet must lose them now.
    return Transition(
        dataclasses.replace(state, lost_at=event.now),
        (Notify(RouterLost(link.router, event.reason)), PlanPublish(), BackOff(link.failures)),
    )


def _without_session(link: LinkState, **changes: object) -> LinkState:
    """`link` with `changes` and nothing that only an established session has."""
    replaced = dataclasses.replace(link, **changes)  # type: ignore[arg-type]
    if replaced.established:
        return replaced
    return dataclasses.replace(
        replaced, leases=(), awaiting_answer=False, since_s=None, ramped=False
    )
