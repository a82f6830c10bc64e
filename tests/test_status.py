"""Status and conditions as a pure function of a balancer snapshot."""

from __future__ import annotations

import base64
import hashlib
import json

from i2p_multihome.balancer.policy import SelectedLease
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.balancer.status import build_conditions, build_status, timestamp
from i2p_multihome.model.v1alpha1 import Condition, ConditionStatus, RouterState
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)
_DRAWS = iter(range(1 << 20))
KEYS = DestinationKeys.generate(  # deterministic randomness: three distinct 32-byte draws
    lambda n: hashlib.sha256(b"status-test %d" % next(_DRAWS)).digest()[:n]
)


def gw(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def lease(name: str, tunnel_id: int, remaining_s: int) -> Lease:
    return Lease(gw(name), tunnel_id, NOW_MS + remaining_s * 1000)


def router(
    name: str,
    leases: tuple[Lease, ...] = (),
    state: RouterState = RouterState.ESTABLISHED,
    error: str | None = None,
) -> RouterSnapshot:
    return RouterSnapshot(name, state, "0.9.57", leases, error, NOW_S - 3600)


def snapshot(
    routers: tuple[RouterSnapshot, ...],
    published: tuple[SelectedLease, ...],
    expires_in_s: int | None = 300,
    publishes: int = 1,
) -> BalancerSnapshot:
    return BalancerSnapshot(
        b32=KEYS.destination.b32,
        hash_b64=b64encode(KEYS.destination.hash),
        routers=routers,
        published=published,
        published_s=int(NOW_S) - 10 if published else None,
        expires_s=int(NOW_S) + expires_in_s if expires_in_s is not None else None,
        publishes=publishes,
    )


LA = (lease("a1", 1, 300), lease("a2", 2, 200))
LB = (lease("b1", 1, 250),)
HEALTHY = snapshot(
    (router("a", LA), router("b", LB)),
    (SelectedLease("a", LA[0]), SelectedLease("b", LB[0]), SelectedLease("a", LA[1])),
)


def conditions_by_type(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


def summary(s: BalancerSnapshot, now_s: float = NOW_S) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in build_conditions(s, now_s)}


# --- conditions ---------------------------------------------------------------------------------


def test_healthy() -> None:
    assert summary(HEALTHY) == {
        "Ready": ("True", "LeaseSetPublished"),
        "RoutersConnected": ("True", "AllConnected"),
        "LeaseSetPublished": ("True", "Published"),
        "Degraded": ("False", "AllRoutersContributing"),
    }
    by_type = conditions_by_type(build_conditions(HEALTHY, NOW_S))
    assert by_type["LeaseSetPublished"].message == "3 leases from 2 routers"
    assert by_type["RoutersConnected"].message == "2/2 routers have a session"
    assert build_conditions(HEALTHY, NOW_S)[0].type == "Ready"


def test_one_router_down_is_degraded_but_ready() -> None:
    s = snapshot(
        (router("a", LA), router("b", (), RouterState.DISCONNECTED, "connection reset")),
        (SelectedLease("a", LA[0]), SelectedLease("a", LA[1])),
    )
    assert summary(s) == {
        "Ready": ("True", "LeaseSetPublished"),
        "RoutersConnected": ("False", "RoutersDown"),
        "LeaseSetPublished": ("True", "Published"),
        "Degraded": ("True", "RoutersDown"),
    }
    by_type = conditions_by_type(build_conditions(s, NOW_S))
    assert "down: b" in by_type["RoutersConnected"].message
    assert by_type["RoutersConnected"].message.startswith("1/2")


def test_every_router_down_is_not_ready_even_with_an_unexpired_lease_set() -> None:
    s = snapshot(
        (router("a", (), RouterState.DISCONNECTED), router("b", (), RouterState.REFUSED)),
        (SelectedLease("a", LA[0]),),
    )
    result = summary(s)
    assert result["Ready"] == ("False", "NotPublished")
    assert result["RoutersConnected"] == ("False", "RoutersDown")
    assert result["Degraded"] == ("True", "RoutersDown")


def test_connected_router_without_published_leases_is_degraded() -> None:
    s = snapshot(
        (router("a", LA), router("b", ()), router("c", (), RouterState.CONNECTING)),
        (SelectedLease("a", LA[0]),),
    )
    result = summary(s)
    assert result["Ready"] == ("True", "LeaseSetPublished")
    assert result["Degraded"] == ("True", "RoutersDown")  # down outranks idle in the reason
    message = conditions_by_type(build_conditions(s, NOW_S))["Degraded"].message
    assert "down: c" in message
    assert "no leases published: b" in message

    idle_only = snapshot((router("a", LA), router("b", LB)), (SelectedLease("a", LA[0]),))
    assert summary(idle_only)["Degraded"] == ("True", "RoutersWithoutLeases")
    assert summary(idle_only)["RoutersConnected"] == ("True", "AllConnected")


def test_expired_lease_set_is_not_published() -> None:
    s = snapshot(HEALTHY.routers, HEALTHY.published, expires_in_s=0)
    result = summary(s)
    assert result["LeaseSetPublished"] == ("False", "Expired")
    assert result["Ready"] == ("False", "NotPublished")
    assert summary(HEALTHY, NOW_S + 301)["LeaseSetPublished"] == ("False", "Expired")
    assert summary(HEALTHY, NOW_S + 299)["LeaseSetPublished"] == ("True", "Published")


def test_nothing_published_yet() -> None:
    s = snapshot((router("a", LA),), (), expires_in_s=None, publishes=0)
    result = summary(s)
    assert result["LeaseSetPublished"] == ("False", "NotPublished")
    assert result["Ready"] == ("False", "NotPublished")
    assert result["Degraded"] == ("True", "RoutersWithoutLeases")


def test_no_routers_is_not_ready() -> None:
    """Only spec.routersFrom gives no routers (a Service without ready endpoints): every
    condition says so, even while the last LeaseSet has not expired."""
    s = snapshot((), HEALTHY.published)
    assert summary(s) == {
        "Ready": ("False", "NoRouters"),
        "RoutersConnected": ("False", "NoRouters"),
        "LeaseSetPublished": ("True", "Published"),
        "Degraded": ("True", "NoRouters"),
    }
    messages = {c.type: c.message for c in build_conditions(s, NOW_S)}
    assert "spec.routersFrom" in messages["RoutersConnected"]
    assert "ready endpoint" in messages["Ready"]


def test_last_transition_time_kept_while_status_unchanged() -> None:
    first = build_conditions(HEALTHY, NOW_S, generation=3)
    assert {c.last_transition_time for c in first} == {timestamp(NOW_S)}
    assert {c.observed_generation for c in first} == {3}

    later = build_conditions(HEALTHY, NOW_S + 60, previous=first, generation=4)
    assert [c.last_transition_time for c in later] == [timestamp(NOW_S)] * 4
    assert {c.observed_generation for c in later} == {4}


def test_last_transition_time_updated_when_status_changes() -> None:
    first = build_conditions(HEALTHY, NOW_S)
    down = snapshot(
        (router("a", LA), router("b", (), RouterState.DISCONNECTED)),
        (SelectedLease("a", LA[0]),),
    )
    later = conditions_by_type(build_conditions(down, NOW_S + 60, previous=first))
    assert later["RoutersConnected"].last_transition_time == timestamp(NOW_S + 60)
    assert later["Degraded"].last_transition_time == timestamp(NOW_S + 60)
    # Still True: kept, even though the message changed.
    assert later["Ready"].last_transition_time == timestamp(NOW_S)
    assert later["LeaseSetPublished"].last_transition_time == timestamp(NOW_S)
    assert later["LeaseSetPublished"].message == "1 leases from 1 routers"


def test_a_new_condition_type_gets_now() -> None:
    only_ready = [c for c in build_conditions(HEALTHY, NOW_S) if c.type == "Ready"]
    later = conditions_by_type(build_conditions(HEALTHY, NOW_S + 5, previous=only_ready))
    assert later["Ready"].last_transition_time == timestamp(NOW_S)
    assert later["Degraded"].last_transition_time == timestamp(NOW_S + 5)


def test_an_unknown_prior_status_counts_as_a_change() -> None:
    prior = Condition(
        type="Ready",
        status=ConditionStatus.UNKNOWN,
        reason="Starting",
        last_transition_time="2020-01-01T00:00:00Z",
    )
    ready = conditions_by_type(build_conditions(HEALTHY, NOW_S, previous=[prior]))["Ready"]
    assert ready.last_transition_time == timestamp(NOW_S)


# --- full status ----------------------------------------------------------------------------------


def test_timestamp_format() -> None:
    assert timestamp(0) == "1970-01-01T00:00:00Z"
    assert timestamp(1_700_000_000.9) == "2023-11-14T22:13:20Z"


def test_status_lease_set_and_destination() -> None:
    status = build_status(HEALTHY, NOW_S, generation=7)
    assert status.observed_generation == 7
    assert status.destination is not None
    assert status.destination.b32 == KEYS.destination.b32
    assert (
        base64.b64decode(status.destination.hash.replace("-", "+").replace("~", "/"))
        == hashlib.sha256(KEYS.destination.raw).digest()
    )
    assert status.lease_set is not None
    assert status.lease_set.leases == 3
    assert status.lease_set.routers == ["a", "b"]
    assert status.lease_set.publishes == 1
    assert status.lease_set.published == timestamp(NOW_S - 10)
    assert status.lease_set.expires == timestamp(NOW_S + 300)


def test_status_routers() -> None:
    expired = lease("old", 9, -5)
    s = snapshot(
        (router("a", (*LA, expired)), router("b", (), RouterState.REFUSED, "status 3")),
        (SelectedLease("a", LA[0]),),
    )
    routers = {r.name: r for r in build_status(s, NOW_S).routers}
    assert routers["a"].leases == 2  # the expired lease is not counted
    assert routers["a"].state is RouterState.ESTABLISHED
    assert routers["a"].version == "0.9.57"
    assert routers["a"].since == timestamp(NOW_S - 3600)
    assert routers["b"].last_error == "status 3"
    assert routers["b"].leases == 0


def test_status_tunnels_live_and_published_flags() -> None:
    expired = lease("old", 9, -5)
    stale_b = lease("b2", 4, 100)
    s = snapshot(
        (router("a", (LA[1], expired, LA[0])), router("b", (stale_b,), RouterState.DISCONNECTED)),
        (SelectedLease("a", LA[0]),),
    )
    tunnels = build_status(s, NOW_S).tunnels
    rows = [(t.router, t.tunnel_id, t.live, t.published) for t in tunnels]
    assert rows == [
        ("a", 1, True, True),  # freshest first within a router
        ("a", 2, True, False),
        ("a", 9, False, False),  # expired
        ("b", 4, False, False),  # unexpired, but its router is down
    ]
    assert tunnels[0].gateway == b64encode(gw("a1"))
    assert tunnels[0].expires == timestamp(NOW_S + 300)


def test_published_flag_matches_gateway_and_tunnel_id() -> None:
    same_id_other_gateway = lease("zz", 1, 300)
    s = snapshot(
        (router("a", (LA[0], same_id_other_gateway)),),
        (SelectedLease("a", LA[0]),),
    )
    published = {(t.gateway, t.tunnel_id): t.published for t in build_status(s, NOW_S).tunnels}
    assert published == {(b64encode(gw("a1")), 1): True, (b64encode(gw("zz")), 1): False}


def test_status_json_is_camel_case_and_holds_no_key_material() -> None:
    doc = build_status(HEALTHY, NOW_S, generation=2).to_json_dict()
    text = json.dumps(doc)
    assert doc["observedGeneration"] == 2
    assert doc["leaseSet"]["routers"] == ["a", "b"]
    assert "lastTransitionTime" in doc["conditions"][0]
    assert {"tunnelId", "live", "published"} <= set(doc["tunnels"][0])
    assert KEYS.destination.b32 in text
    for secret in (KEYS.signing_seed, KEYS.encryption_private):
        for encoded in (
            secret.hex(),
            base64.b64encode(secret).decode().rstrip("="),
            b64encode(secret).rstrip("="),
            base64.b32encode(secret).decode().rstrip("=").lower(),
        ):
            assert encoded not in text
    # Nor the destination's full public bytes: the status names it by address and hash.
    assert KEYS.destination.b64 not in text


def test_status_is_a_pure_function_of_its_inputs() -> None:
    first = build_status(HEALTHY, NOW_S, generation=1)
    assert build_status(HEALTHY, NOW_S, generation=1) == first
    assert first.conditions == build_conditions(HEALTHY, NOW_S, generation=1)
