"""Peer profiles from lease reports: events, time weighting, bounds, tiers, persistence."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.balancer.profiles import (
    CAPACITY_HALF_LIFE_S,
    EARLY_END_S,
    FAILING_TIMEOUT_S,
    FAILURE_WEIGHT,
    HORIZON_S,
    MAX_BUILDERS,
    MAX_DOCUMENT_BYTES,
    MAX_FAST,
    MAX_PROFILES,
    SPEED_HALF_LIFE_S,
    PeerProfile,
    PeerProfiles,
    ProfileDocumentError,
    Tiers,
    compute_tiers,
    from_document,
    from_json_text,
    observe_leases,
    tiers_due,
    to_document,
    to_json_text,
)
from i2p_multihome.wire.structures import Lease

NOW_MS = 1_700_000_000_000
NOW_S = NOW_MS / 1000


def gw(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def lease(gateway: str, tunnel_id: int, end_in_s: float, now_ms: int = NOW_MS) -> Lease:
    return Lease(gw(gateway), tunnel_id, now_ms + int(end_in_s * 1000))


def test_a_new_lease_counts_a_build_through_its_gateway_and_its_router() -> None:
    profiles = observe_leases(PeerProfiles(), "r1", (), (lease("a", 1, 600),), NOW_MS)
    profile = profiles.get(gw("a"))
    assert profile is not None
    assert (profile.built, profile.recent, profile.failed, profile.lived) == (1, 1, 0, 0)
    assert profile.builders == {"r1": NOW_S}
    assert profile.last_seen_s == NOW_S
    # Reported again unchanged: no second build, still seen.
    later = observe_leases(profiles, "r1", (lease("a", 1, 600),), (lease("a", 1, 600),), NOW_MS)
    assert later.get(gw("a")).built == 1  # type: ignore[union-attr]


def test_a_lease_gone_well_before_its_end_is_a_failure_and_makes_the_peer_failing() -> None:
    before = (lease("a", 1, EARLY_END_S + 1), lease("b", 2, EARLY_END_S))
    profiles = observe_leases(PeerProfiles(), "r1", (), before, NOW_MS)
    profiles = observe_leases(profiles, "r1", before, (), NOW_MS)
    a, b = profiles.get(gw("a")), profiles.get(gw("b"))
    assert a is not None and b is not None
    assert (a.failed, a.lived, a.last_failed_s) == (1, 0, NOW_S)
    assert (b.failed, b.lived, b.last_failed_s) == (0, 1, None)  # a rotation, not a failure
    assert a.failing(NOW_S) and not b.failing(NOW_S)
    assert not a.failing(NOW_S + FAILING_TIMEOUT_S)
    assert a.capacity(NOW_S) == 1 - FAILURE_WEIGHT


def test_counters_decay_with_their_half_lives() -> None:
    profile = PeerProfile(gw("a"), NOW_S, built=8, recent=8, last_seen_s=NOW_S)
    assert profile.capacity(NOW_S + CAPACITY_HALF_LIFE_S) == pytest.approx(4)
    assert profile.speed(NOW_S + SPEED_HALF_LIFE_S) == pytest.approx(4)
    assert profile.decayed(NOW_S - 10) is profile  # a clock that steps back changes nothing


def test_a_peer_silent_for_48_hours_is_forgotten() -> None:
    profiles = observe_leases(PeerProfiles(), "r1", (), (lease("a", 1, 600),), NOW_MS)
    later_ms = NOW_MS + int((HORIZON_S + 1) * 1000)
    profiles = observe_leases(profiles, "r1", (), (lease("b", 2, 600, later_ms),), later_ms)
    assert profiles.get(gw("a")) is None and profiles.get(gw("b")) is not None


def test_profiles_are_bounded_keeping_the_most_recently_seen() -> None:
    leases = tuple(lease(f"p{i}", i, 600) for i in range(MAX_PROFILES + 5))
    profiles = observe_leases(PeerProfiles(), "r1", (), leases[:5], NOW_MS - 1000)
    profiles = observe_leases(profiles, "r1", (), leases[5:], NOW_MS)
    assert len(profiles) == MAX_PROFILES
    assert all(profiles.get(gw(f"p{i}")) is None for i in range(5))


def _profile(name: str, built: float, recent: float, failed_at: float | None = None) -> PeerProfile:
    return PeerProfile(
        gw(name), NOW_S, built=built, recent=recent, last_seen_s=NOW_S, last_failed_s=failed_at
    )


def _profiles(*items: PeerProfile) -> PeerProfiles:
    return PeerProfiles({p.peer: p for p in items})


def test_tiers_high_capacity_at_or_above_the_median_and_fast_among_them() -> None:
    profiles = _profiles(
        _profile("low", 1, 1),
        _profile("mid", 3, 0.5),
        _profile("high", 5, 4),
        _profile("top", 9, 1),
        _profile("bad", 20, 20, failed_at=NOW_S - 1),
    )
    tiers = compute_tiers(profiles, NOW_S)
    assert tiers.failing == {gw("bad")}
    # Capacities 1, 3, 5, 9: median 4.
    assert tiers.high_capacity == (gw("top"), gw("high"))
    # Their speeds 1 and 4: median 2.5.
    assert tiers.fast == (gw("high"),)
    assert [tiers.rank(gw(n)) for n in ("high", "top", "low", "bad")] == [0, 1, 2, 3]
    assert tiers_due(tiers, NOW_S + 45) and not tiers_due(tiers, NOW_S + 44)
    assert tiers_due(Tiers(), NOW_S)


def test_tiers_are_bounded_and_peers_without_capacity_are_never_high() -> None:
    many = _profiles(*(_profile(f"p{i}", 10, 10) for i in range(100)))
    tiers = compute_tiers(many, NOW_S)
    assert len(tiers.high_capacity) == 75 and len(tiers.fast) == MAX_FAST
    failed = _profiles(_profile("x", 1, 1), PeerProfile(gw("y"), NOW_S, built=1, failed=1))
    assert compute_tiers(failed, NOW_S).high_capacity == (gw("x"),)
    assert compute_tiers(PeerProfiles(), NOW_S) == Tiers(computed_s=NOW_S)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),  # gateway
            st.integers(1, 5),  # tunnel id
            st.integers(-100, 700),  # end, seconds from the report
        ),
        max_size=12,
    ).map(tuple),
    st.integers(0, 10),
)
@settings(max_examples=200, deadline=None)
def test_observation_never_goes_negative_and_round_trips(
    reports: tuple[tuple[int, int, int], ...], steps: int
) -> None:
    profiles, before = PeerProfiles(), ()
    for n in range(steps + 1):
        now_ms = NOW_MS + n * 30_000
        after = tuple(
            lease(str(g), t, e, now_ms) for g, t, e in reports[n % 3 :: 2]
        )  # fmt: skip
        profiles = observe_leases(profiles, "r1", before, after, now_ms)
        before = after
    for profile in profiles.peers.values():
        assert min(profile.built, profile.failed, profile.lived, profile.recent) >= 0
    document = json.loads(json.dumps(to_document(profiles)))
    assert from_document(document, NOW_S) == profiles


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)


@given(
    JSON,
    st.dictionaries(
        st.sampled_from(
            list(to_document(PeerProfiles({gw("a"): PeerProfile(gw("a"), NOW_S)}))["peers"][0])
        ),
        JSON,
        max_size=4,
    ),
)
@settings(max_examples=300, deadline=None)
def test_any_stored_document_loads_or_is_refused_cleanly(
    document: Any, entry_changes: dict[str, Any]
) -> None:
    with contextlib.suppress(ProfileDocumentError):
        from_document(document, NOW_S)
    valid = to_document(PeerProfiles({gw("a"): PeerProfile(gw("a"), NOW_S, last_seen_s=NOW_S)}))
    valid["peers"][0].update(entry_changes)
    with contextlib.suppress(ProfileDocumentError):
        from_document(valid, NOW_S)


@given(
    st.sampled_from(["updatedS", "built", "failed", "lived", "recent", "lastSeenS"]),
    st.one_of(
        st.just(math.nan), st.just(-1.0), st.just(1e13), st.just(True), st.just("1"), st.none()
    ),
)
def test_a_bad_counter_is_refused(key: str, value: Any) -> None:
    profiles = observe_leases(PeerProfiles(), "r1", (), (lease("a", 1, 600),), NOW_MS)
    document = to_document(profiles)
    document["peers"][0][key] = value
    with pytest.raises(ProfileDocumentError):
        from_document(document, NOW_S)


@pytest.mark.parametrize(
    "change",
    [
        {"peer": "AAAA"},
        {"peer": "not base64!"},
        {"builders": {"": 1.0}},
        {"builders": {f"r{i}": 1.0 for i in range(65)}},
        {"builders": [1]},
    ],
)
def test_a_bad_peer_entry_is_refused(change: dict[str, Any]) -> None:
    profiles = observe_leases(PeerProfiles(), "r1", (), (lease("a", 1, 600),), NOW_MS)
    document = to_document(profiles)
    document["peers"][0].update(change)
    with pytest.raises(ProfileDocumentError):
        from_document(document, NOW_S)
    with pytest.raises(ProfileDocumentError):
        from_document({"version": 2, "peers": []}, NOW_S)


def test_stored_text_that_is_not_json_or_too_big_is_refused() -> None:
    with pytest.raises(ProfileDocumentError, match="not JSON"):
        from_json_text("{", NOW_S)
    with pytest.raises(ProfileDocumentError, match="larger than"):
        from_json_text(" " * (MAX_DOCUMENT_BYTES + 1), NOW_S)
    full = PeerProfiles(
        {
            gw(str(i)): PeerProfile(
                gw(str(i)), NOW_S, 1e6 / 3, 1e6 / 7, 1e6 / 9, 1e6 / 11, NOW_S, NOW_S,
                {f"router-{j:02}-with-a-long-name": NOW_S for j in range(4)},
            )
            for i in range(MAX_PROFILES)
        }
    )  # fmt: skip
    # The most a balancer keeps fits a ConfigMap (1 MiB) with room to spare.
    text = json.dumps(to_document(full), separators=(",", ":"))
    assert from_json_text(text, NOW_S) == full


def test_what_would_not_fit_a_configmap_is_trimmed_to_the_most_recent() -> None:
    builders = {f"router-{j:02}-with-a-long-name-for-this-test": NOW_S for j in range(MAX_BUILDERS)}
    big = PeerProfiles(
        {
            gw(str(i)): PeerProfile(gw(str(i)), NOW_S, 1.0, last_seen_s=NOW_S - i,
                                    builders=builders)
            for i in range(MAX_PROFILES)
        }
    )  # fmt: skip
    text = to_json_text(big)
    assert len(text) <= MAX_DOCUMENT_BYTES
    kept = from_json_text(text, NOW_S)
    assert 0 < len(kept) < MAX_PROFILES
    assert set(kept.peers) == {gw(str(i)) for i in range(len(kept))}  # the newest
    small = PeerProfiles({gw("a"): PeerProfile(gw("a"), NOW_S, last_seen_s=NOW_S)})
    assert from_json_text(to_json_text(small), NOW_S) == small
