"""Status from a balancer snapshot: pure, so the standalone status file and the CRD status
are the same function of the same facts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from i2p_multihome.balancer.snapshot import BalancerSnapshot
from i2p_multihome.model.v1alpha1 import (
    Condition,
    ConditionStatus,
    DestinationStatus,
    LeaseSetStatus,
    MultihomedDestinationStatus,
    RouterState,
    RouterStatus,
    TunnelStatus,
)
from i2p_multihome.wire.encoding import b64encode


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_status(
    snapshot: BalancerSnapshot,
    now_s: float,
    previous: Sequence[Condition] = (),
    generation: int | None = None,
) -> MultihomedDestinationStatus:
    now_ms = int(now_s * 1000)
    in_lease_set = {(s.lease.gateway, s.lease.tunnel_id) for s in snapshot.published}
    contributing = sorted({s.router for s in snapshot.published})
    routers = [
        RouterStatus(
            name=r.name,
            state=r.state,
            version=r.version,
            leases=sum(1 for lease in r.leases if lease.end_ms > now_ms),
            streams=snapshot.streams.get(r.name, 0),
            last_error=r.last_error,
            since=timestamp(r.since_s) if r.since_s is not None else None,
        )
        for r in snapshot.routers
    ]
    tunnels = [
        TunnelStatus(
            router=r.name,
            gateway=b64encode(lease.gateway),
            tunnel_id=lease.tunnel_id,
            expires=timestamp(lease.end_ms / 1000),
            live=r.state is RouterState.ESTABLISHED and lease.end_ms > now_ms,
            published=(lease.gateway, lease.tunnel_id) in in_lease_set,
        )
        for r in snapshot.routers
        for lease in sorted(r.leases, key=lambda x: (-x.end_ms, x.tunnel_id))
    ]
    lease_set = LeaseSetStatus(
        leases=len(snapshot.published),
        published=timestamp(snapshot.published_s) if snapshot.published_s is not None else None,
        expires=timestamp(snapshot.expires_s) if snapshot.expires_s is not None else None,
        routers=contributing,
        publishes=snapshot.publishes,
        publisher=snapshot.publisher,
    )
    established = sum(1 for r in snapshot.routers if r.state is RouterState.ESTABLISHED)
    return MultihomedDestinationStatus(
        observed_generation=generation,
        routers_connected=f"{established}/{len(snapshot.routers)}",
        streams=sum(snapshot.streams.values()),
        destination=DestinationStatus(b32=snapshot.b32, hash=snapshot.hash_b64),
        lease_set=lease_set,
        routers=routers,
        tunnels=tunnels,
        conditions=build_conditions(snapshot, now_s, previous, generation),
    )


def build_conditions(
    snapshot: BalancerSnapshot,
    now_s: float,
    previous: Sequence[Condition] = (),
    generation: int | None = None,
) -> list[Condition]:
    down = [r.name for r in snapshot.routers if r.state is not RouterState.ESTABLISHED]
    contributing = {s.router for s in snapshot.published}
    total = len(snapshot.routers)
    idle = [
        r.name
        for r in snapshot.routers
        if r.state is RouterState.ESTABLISHED
        and not any(s.router == r.name for s in snapshot.published)
    ]
    live = snapshot.expires_s is not None and snapshot.expires_s > now_s and snapshot.published
    facts: list[tuple[str, bool, str, str]] = [
        (
            "RoutersConnected",
            not down,
            "AllConnected" if not down else "RoutersDown",
            f"{total - len(down)}/{total} routers have a session"
            + (f"; down: {', '.join(down)}" if down else ""),
        )
        if total
        else (
            # Only spec.routersFrom can give no routers: spec.routers has at least one.
            "RoutersConnected",
            False,
            "NoRouters",
            "no router to host on: the Service in spec.routersFrom has no ready endpoint "
            "with the named port",
        ),
        (
            "LeaseSetPublished",
            bool(live),
            "Published" if live else ("Expired" if snapshot.published else "NotPublished"),
            f"{len(snapshot.published)} leases from {len(contributing)} routers"
            if live
            else "no current LeaseSet has been handed to a router",
        ),
        (
            "Degraded",
            bool(down or idle or not total),
            "RoutersDown"
            if down
            else (
                "RoutersWithoutLeases"
                if idle
                else ("AllRoutersContributing" if total else "NoRouters")
            ),
            "; ".join(
                part
                for part in (
                    f"down: {', '.join(down)}" if down else "",
                    f"no leases published: {', '.join(idle)}" if idle else "",
                )
                if part
            )
            or ("every router contributes leases" if total else "no router to host on"),
        ),
    ]
    ready = bool(live) and total > len(down)
    facts.insert(
        0,
        (
            "Ready",
            ready,
            "LeaseSetPublished" if ready else ("NotPublished" if total else "NoRouters"),
            "the merged LeaseSet is published and at least one router hosts the destination"
            if ready
            else (
                "waiting for a published LeaseSet"
                if total
                else "no router to host on (spec.routersFrom finds no ready endpoint)"
            ),
        ),
    )
    by_type = {c.type: c for c in previous}
    conditions = []
    for kind, ok, reason, message in facts:
        status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
        prior = by_type.get(kind)
        since = (
            prior.last_transition_time
            if prior is not None and prior.status == status
            else timestamp(now_s)
        )
        conditions.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return conditions
