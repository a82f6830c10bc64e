"""Peer profiles from what the balancer sees, after I2P's design of peer profiling and
selection: each inbound gateway's tunnels (built, lived to their end, vanished early),
which routers built through it, time-weighted so recent events count more and nothing older
than 48 h counts at all, and the tiers recomputed from them (high capacity, fast, failing).

The balancer never sees a tunnel build or its bandwidth, only each router's leases, so the
design's measures have stand-ins: capacity is tunnels built through the peer as gateway,
failures (a tunnel gone well before its lease ends: a failed test or a dropped peer)
weighing far more; speed is recent builds, since an i2pd router rebuilds a tunnel through the
same peers unless it was slow (more than 250 ms per hop) and a Java router reuses half its
paths. Pure values and functions; the engine feeds them and persists `to_document`."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from i2p_multihome.model.v1alpha1 import MAX_ROUTERS
from i2p_multihome.wire.encoding import b64decode, b64encode
from i2p_multihome.wire.structures import Lease

# Capacity remembers the day (half of its weight is 12 h old), speed the last hour; a peer
# with nothing newer than 48 h is forgotten, as in the design.
CAPACITY_HALF_LIFE_S = 12 * 3600.0
SPEED_HALF_LIFE_S = 3600.0
HORIZON_S = 48 * 3600.0
# A failed tunnel costs the capacity of this many built ones.
FAILURE_WEIGHT = 4.0
# A lease its router stops reporting more than this before its end vanished early: i2pd
# replaces a tunnel 90 s before its expiry (30 s before the lease ends) and keeps the old
# one until then, so a rotation never looks like a failure.
EARLY_END_S = 60
# A peer whose tunnel vanished early is in the failing tier until this long passes without
# another failure.
FAILING_TIMEOUT_S = 600.0
# Tier bounds of the design: high capacity at most 75 peers, fast at most 30, best first.
MAX_HIGH_CAPACITY = 75
MAX_FAST = 30
TIER_INTERVAL_S = 45.0
# Memory bound: beyond this many peers the least recently seen are forgotten.
MAX_PROFILES = 2000
MAX_BUILDERS = MAX_ROUTERS  # routers per destination (spec.routers maxItems)
MAX_ROUTER_NAME = 63
DOCUMENT_VERSION = 1
# A ConfigMap holds at most 1 MiB; MAX_PROFILES profiles take about 600 KB.
MAX_DOCUMENT_BYTES = 1_000_000


@dataclass(frozen=True)
class PeerProfile:
    """One peer's record as an inbound gateway. Counters are decayed to `updated_s`."""

    peer: bytes  # router hash, 32 bytes
    updated_s: float  # wall clock the counters are decayed to
    built: float = 0.0  # tunnels built through it, capacity half-life
    failed: float = 0.0  # tunnels that vanished early, capacity half-life
    lived: float = 0.0  # tunnels that reached their lease's end, capacity half-life
    recent: float = 0.0  # tunnels built through it, speed half-life
    last_seen_s: float = 0.0  # the last time a router reported a lease through it
    last_failed_s: float | None = None
    # Routers that built through it, with when they last did.
    builders: Mapping[str, float] = field(default_factory=dict)

    def decayed(self, now_s: float) -> PeerProfile:
        if now_s <= self.updated_s:
            return self
        long = _decay(now_s - self.updated_s, CAPACITY_HALF_LIFE_S)
        short = _decay(now_s - self.updated_s, SPEED_HALF_LIFE_S)
        return replace(
            self,
            updated_s=now_s,
            built=self.built * long,
            failed=self.failed * long,
            lived=self.lived * long,
            recent=self.recent * short,
        )

    def capacity(self, now_s: float) -> float:
        at = self.decayed(now_s)
        return at.built - FAILURE_WEIGHT * at.failed

    def speed(self, now_s: float) -> float:
        return self.decayed(now_s).recent

    def failing(self, now_s: float) -> bool:
        return self.last_failed_s is not None and now_s - self.last_failed_s < FAILING_TIMEOUT_S


def _decay(elapsed_s: float, half_life_s: float) -> float:
    return math.pow(0.5, elapsed_s / half_life_s)


@dataclass(frozen=True)
class PeerProfiles:
    """Every profiled peer, by router hash. Bounded by MAX_PROFILES."""

    peers: Mapping[bytes, PeerProfile] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.peers)

    def get(self, peer: bytes) -> PeerProfile | None:
        return self.peers.get(peer)


@dataclass(frozen=True)
class Tiers:
    high_capacity: tuple[bytes, ...] = ()  # best first
    fast: tuple[bytes, ...] = ()  # best first, all also high capacity
    failing: frozenset[bytes] = frozenset()
    computed_s: float | None = None

    def rank(self, peer: bytes) -> int:
        """0 for the fast tier, 1 for high capacity, 2 for the rest, 3 for failing."""
        if peer in self.failing:
            return 3
        if peer in self.fast:
            return 0
        return 1 if peer in self.high_capacity else 2


def observe_leases(
    profiles: PeerProfiles,
    router: str,
    before: Sequence[Lease],
    after: Sequence[Lease],
    now_ms: int,
) -> PeerProfiles:
    """`router`'s report changed from `before` to `after` while its session stayed up: a
    tunnel new in it was built through its gateway, one gone from it lived to its end or
    vanished early. (A lost router's leases are not observed going: the router went, not
    the peers.)"""
    now_s = now_ms / 1000
    old = {(x.gateway, x.tunnel_id): x for x in before}
    new = {(x.gateway, x.tunnel_id): x for x in after}
    peers = dict(profiles.peers)

    def touch(gateway: bytes) -> PeerProfile:
        found = peers.get(gateway)
        return PeerProfile(gateway, now_s) if found is None else found.decayed(now_s)

    for key in new.keys() - old.keys():
        at = touch(key[0])
        builders = {**at.builders, router[:MAX_ROUTER_NAME]: now_s}
        if len(builders) > MAX_BUILDERS:
            builders = dict(sorted(builders.items(), key=lambda b: -b[1])[:MAX_BUILDERS])
        peers[key[0]] = replace(
            at,
            built=at.built + 1,
            recent=at.recent + 1,
            last_seen_s=now_s,
            builders=builders,
        )
    for key in old.keys() - new.keys():
        at = touch(key[0])
        if old[key].end_ms - now_ms > EARLY_END_S * 1000:
            peers[key[0]] = replace(at, failed=at.failed + 1, last_failed_s=now_s)
        else:
            peers[key[0]] = replace(at, lived=at.lived + 1)
    for key in new.keys() & old.keys():
        peers[key[0]] = replace(touch(key[0]), last_seen_s=now_s)
    return _bounded(peers, now_s)


def _bounded(peers: Mapping[bytes, PeerProfile], now_s: float) -> PeerProfiles:
    kept = {
        peer: profile
        for peer, profile in peers.items()
        if now_s - _last_event_s(profile) <= HORIZON_S
    }
    if len(kept) > MAX_PROFILES:
        newest = sorted(kept.values(), key=lambda p: (-_last_event_s(p), p.peer))
        kept = {p.peer: p for p in newest[:MAX_PROFILES]}
    return PeerProfiles(kept)


def _last_event_s(profile: PeerProfile) -> float:
    return max(profile.last_seen_s, profile.last_failed_s or 0.0)


def compute_tiers(profiles: PeerProfiles, now_s: float) -> Tiers:
    """The design's tiers: failing (a recent early end), high capacity (capacity at or above
    the median of the others, at most 75), fast (high capacity with speed at or above their
    median, at most 30); each best first, ties by hash so the result is reproducible."""
    live = [p for p in profiles.peers.values() if now_s - _last_event_s(p) <= HORIZON_S]
    failing = frozenset(p.peer for p in live if p.failing(now_s))
    healthy = [p for p in live if p.peer not in failing]
    if not healthy:
        return Tiers(failing=failing, computed_s=now_s)
    capacity = {p.peer: p.capacity(now_s) for p in healthy}
    floor = statistics.median(capacity.values())
    high = sorted(
        (p for p in healthy if capacity[p.peer] >= floor and capacity[p.peer] > 0),
        key=lambda p: (-capacity[p.peer], p.peer),
    )[:MAX_HIGH_CAPACITY]
    if not high:
        return Tiers(failing=failing, computed_s=now_s)
    speed = {p.peer: p.speed(now_s) for p in high}
    fast_floor = statistics.median(speed.values())
    fast = sorted(
        (p for p in high if speed[p.peer] >= fast_floor),
        key=lambda p: (-speed[p.peer], -capacity[p.peer], p.peer),
    )[:MAX_FAST]
    return Tiers(
        high_capacity=tuple(p.peer for p in high),
        fast=tuple(p.peer for p in fast),
        failing=failing,
        computed_s=now_s,
    )


def tiers_due(tiers: Tiers, now_s: float, interval_s: float = TIER_INTERVAL_S) -> bool:
    return tiers.computed_s is None or now_s - tiers.computed_s >= interval_s


# --- persistence ---------------------------------------------------------------------------


class ProfileDocumentError(ValueError):
    """A stored profile document that cannot be read; the balancer starts afresh."""


def to_document(profiles: PeerProfiles) -> dict[str, Any]:
    """A JSON-ready document of the profiles (router hashes and counters; nothing secret)."""
    return {
        "version": DOCUMENT_VERSION,
        "peers": [
            {
                "peer": b64encode(p.peer),
                "updatedS": p.updated_s,
                "built": p.built,
                "failed": p.failed,
                "lived": p.lived,
                "recent": p.recent,
                "lastSeenS": p.last_seen_s,
                "lastFailedS": p.last_failed_s,
                "builders": dict(p.builders),
            }
            for p in sorted(profiles.peers.values(), key=lambda p: p.peer)
        ],
    }


def from_document(document: Any, now_s: float) -> PeerProfiles:
    """The profiles a `to_document` document holds, bounds-checked; entries past the
    horizon are dropped. Raises ProfileDocumentError for anything malformed."""
    if not isinstance(document, dict) or document.get("version") != DOCUMENT_VERSION:
        raise ProfileDocumentError("not a version-1 peer profile document")
    entries = document.get("peers")
    if not isinstance(entries, list) or len(entries) > MAX_PROFILES:
        raise ProfileDocumentError(f"peers must be a list of at most {MAX_PROFILES}")
    peers: dict[bytes, PeerProfile] = {}
    for entry in entries:
        profile = _profile_from(entry)
        peers[profile.peer] = profile
    return _bounded(peers, now_s)


def to_json_text(profiles: PeerProfiles) -> str:
    """`to_document` as compact JSON of at most MAX_DOCUMENT_BYTES: the least recently
    seen peers are left out when all would not fit."""
    kept = sorted(profiles.peers.values(), key=lambda p: (-_last_event_s(p), p.peer))
    while True:
        text = json.dumps(
            to_document(PeerProfiles({p.peer: p for p in kept})), separators=(",", ":")
        )
        if len(text) <= MAX_DOCUMENT_BYTES:
            return text
        kept = kept[: len(kept) * 3 // 4]


def from_json_text(text: str, now_s: float) -> PeerProfiles:
    """`from_document` of stored JSON text, at most MAX_DOCUMENT_BYTES."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ProfileDocumentError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ProfileDocumentError(f"not JSON: {exc}") from None
    return from_document(document, now_s)


def _profile_from(entry: Any) -> PeerProfile:
    if not isinstance(entry, dict):
        raise ProfileDocumentError("a peer entry must be an object")
    try:
        peer = b64decode(entry["peer"]) if isinstance(entry.get("peer"), str) else b""
    except ValueError as exc:
        raise ProfileDocumentError("a peer hash is not I2P base64") from exc
    if len(peer) != 32:
        raise ProfileDocumentError("a peer hash must be 32 bytes")
    builders = entry.get("builders", {})
    if not isinstance(builders, dict) or len(builders) > MAX_BUILDERS:
        raise ProfileDocumentError(f"builders must be an object of at most {MAX_BUILDERS}")
    if not all(isinstance(k, str) and 0 < len(k) <= MAX_ROUTER_NAME for k in builders):
        raise ProfileDocumentError("a builder must be a router name")
    last_failed = entry.get("lastFailedS")
    return PeerProfile(
        peer=peer,
        updated_s=_number(entry, "updatedS"),
        built=_number(entry, "built"),
        failed=_number(entry, "failed"),
        lived=_number(entry, "lived"),
        recent=_number(entry, "recent"),
        last_seen_s=_number(entry, "lastSeenS"),
        last_failed_s=None if last_failed is None else _number(entry, "lastFailedS"),
        builders={name: _number(builders, name) for name in builders},
    )


def _number(entry: Mapping[str, Any], key: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileDocumentError(f"{key} must be a number")
    if not math.isfinite(value) or value < 0 or value > 1e12:
        raise ProfileDocumentError(f"{key} out of range")
    return float(value)
