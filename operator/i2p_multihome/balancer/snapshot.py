"""What the balancer knows at one instant: the input of the status builder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from i2p_multihome.balancer.policy import SelectedLease
from i2p_multihome.model.v1alpha1 import RouterState
from i2p_multihome.wire.structures import Lease


@dataclass(frozen=True)
class RouterSnapshot:
    name: str
    state: RouterState
    version: str | None
    leases: tuple[Lease, ...]
    last_error: str | None
    since_s: float | None  # wall clock, seconds


@dataclass(frozen=True)
class BalancerSnapshot:
    b32: str
    hash_b64: str
    routers: tuple[RouterSnapshot, ...]
    published: tuple[SelectedLease, ...]
    published_s: int | None
    expires_s: int | None
    publishes: int
    publisher: str | None = None  # the router that stores the LeaseSet at the floodfills
    # Active streams by the router their latest packet came through (the data plane's).
    streams: Mapping[str, int] = field(default_factory=dict)
