"""What the balancer tells the world (Kubernetes Events, metrics, logs): one type per thing
that happens, each field meaning one thing. Events never carry key material: routers are
named by their spec name, the destination by nothing (the consumer knows which it is)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PublishReason(StrEnum):
    """Why a new merged LeaseSet was signed and handed to the routers."""

    FIRST = "first LeaseSet"
    FIRST_SHORT_LIVED = "first LeaseSet, from leases near their end"
    ROUTER_LOST = "router lost"
    ROUTER_REMOVED = "router removed from the spec"
    LEASE_GONE = "a published lease's tunnel is gone"
    LEASES_ENDING = "published leases near their end"
    BELOW_TARGET = "fewer leases than the spec asks for"
    ROUTER_JOINED = "a router without leases in the LeaseSet"
    REFRESH = "refresh"


@dataclass(frozen=True)
class SessionEstablished:
    """A router accepted the destination's session for the first time since start."""

    router: str
    version: str  # as shown in status (see engine.describe_version)

    @property
    def message(self) -> str:
        return f"session on router {self.router} ({self.version})"


@dataclass(frozen=True)
class RouterLost:
    """An established session ended: the router died, hung, disconnected or misbehaved."""

    router: str
    reason: str

    @property
    def message(self) -> str:
        return f"router {self.router} lost: {self.reason}"


@dataclass(frozen=True)
class RouterRecovered:
    """A router whose session was lost hosts the destination again."""

    router: str
    downtime_s: float  # from the loss to the new session

    @property
    def message(self) -> str:
        return f"router {self.router} is back after {self.downtime_s:.0f}s"


@dataclass(frozen=True)
class RouterRefused:
    """A router cannot be used: it refused the session, or its endpoint (credentials) is
    unavailable. Told once per distinct reason; the reason stays in the router's status."""

    router: str
    reason: str

    @property
    def message(self) -> str:
        return f"router {self.router}: {self.reason}"


@dataclass(frozen=True)
class LeaseSetPublished:
    """A merged LeaseSet was handed to at least one router (not after a router loss)."""

    reason: PublishReason
    leases: int
    routers: tuple[str, ...]  # routers whose leases it holds
    handed_to: tuple[str, ...]  # routers that took it
    # The routers that hold a LeaseSet sending clients back to themselves: where clients
    # without a working session can be sent (as FailoverPublished.move_to).
    move_to: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return (
            f"LeaseSet with {self.leases} leases from {len(self.routers)} routers ({self.reason})"
        )


@dataclass(frozen=True)
class FailoverPublished:
    """A merged LeaseSet without the leases of lost routers was handed to the routers."""

    lost: tuple[str, ...]  # routers whose leases it removed
    failover_s: float  # from the earliest of those losses to this publish
    leases: int
    routers: tuple[str, ...]
    handed_to: tuple[str, ...]
    # The survivors that hold a LeaseSet sending clients back to themselves: where the
    # lost routers' clients move (the serving routers under client affinity).
    move_to: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return (
            f"LeaseSet with {self.leases} leases from {len(self.routers)} routers, without "
            f"{', '.join(self.lost)}; {self.failover_s:.1f}s after the router was lost"
        )


@dataclass(frozen=True)
class PublisherChanged:
    """Another router (or none) stores the LeaseSet at the floodfills; the others hold it
    unpublished."""

    publisher: str | None  # None: no router with publish: true has a session
    previous: str | None

    @property
    def message(self) -> str:
        if self.publisher is None:
            return "no router publishes the LeaseSet: none with publish: true has a session"
        instead = f" in place of {self.previous}" if self.previous else ""
        return f"router {self.publisher} publishes the LeaseSet{instead}"


BalancerEvent = (
    SessionEstablished
    | RouterLost
    | RouterRecovered
    | RouterRefused
    | LeaseSetPublished
    | FailoverPublished
    | PublisherChanged
)
