"""The operator's Kubernetes layer without a cluster: spec errors, keys from Secrets, how
balancer events become Kubernetes events and metrics, and the metrics' life cycle."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from fakerouter import FakeRouter, eventually, make_leases
from i2p_multihome.balancer.engine import EndpointError, Timing, plain_endpoint
from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    PublishReason,
    RouterLost,
    RouterRecovered,
    RouterRefused,
    SessionEstablished,
)
from i2p_multihome.balancer.policy import SelectedLease
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.dataplane.stats import DataPlaneStats
from i2p_multihome.i2cp.session import Endpoint
from i2p_multihome.k8s import handlers, metrics, secrets
from i2p_multihome.k8s.endpoints import SliceEndpoint, SliceView
from i2p_multihome.k8s.runtime import DestinationRuntime, kubernetes_event
from i2p_multihome.model.v1alpha1 import (
    ROUTERS_SOURCE_MESSAGE,
    MultihomedDestinationSpec,
    RouterState,
)
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease

DATA = Path(__file__).parent / "data"
I2PD_DAT = (DATA / "i2pd-ed25519.dat").read_bytes()
I2PD_B32 = (DATA / "i2pd-ed25519.b32").read_text().strip()
_DRAWS = iter(range(1 << 20))
KEYS = DestinationKeys.generate(
    lambda n: hashlib.sha256(b"k8s-runtime-test %d" % next(_DRAWS)).digest()[:n]
)
SPEC = MultihomedDestinationSpec.model_validate(
    {"routers": [{"name": "r1", "i2cp": {"host": "r1.example"}}]}
)
NOW_S = 1_700_000_000.0


# --------------------------------------------------------------------------- spec errors


def spec_error(spec: dict[str, Any]) -> str:
    with pytest.raises(kopf.PermanentError) as caught:
        handlers._parse_spec(spec)
    return str(caught.value)


def test_valid_spec_parses() -> None:
    parsed = handlers._parse_spec({"routers": [{"name": "r1", "i2cp": {"host": "h"}}]})
    assert parsed.routers[0].i2cp.port == 7654


def test_spec_errors_name_every_bad_field() -> None:
    message = spec_error(
        {
            "routers": [{"name": "Bad_Name", "i2cp": {"host": "h", "port": 70000}}],
            "tunnels": {"inbound": {"quantity": 17}},
            "bogus": 1,
        }
    )
    assert message.startswith("invalid spec: ")
    for field in (
        "spec.routers.0.name",
        "spec.routers.0.i2cp.port",
        "spec.tunnels.inbound.quantity",
        "spec.bogus",
    ):
        assert field in message, field
    assert "65535" in message and "16" in message


def test_missing_routers_is_named() -> None:
    assert spec_error({}) == f"invalid spec: {ROUTERS_SOURCE_MESSAGE}"
    both = {
        "routers": [{"name": "r1", "i2cp": {"host": "h"}}],
        "routersFrom": {"service": {"name": "i2pd", "port": "i2cp"}},
    }
    assert spec_error(both) == f"invalid spec: {ROUTERS_SOURCE_MESSAGE}"


def test_spec_wide_rules_read_cleanly() -> None:
    routers = [{"name": "a", "i2cp": {"host": "x"}}, {"name": "a", "i2cp": {"host": "y"}}]
    assert spec_error({"routers": routers}) == (
        "invalid spec: spec.routers: duplicate router names ['a']"
    )
    message = spec_error({"routers": [{"name": "a", "i2cp": {"host": "x"}, "publish": False}]})
    assert message == "invalid spec: spec.routers: at least one router must have publish: true"


# --------------------------------------------------------------------------- keys from Secrets


def secret(data: dict[str, bytes]) -> client.V1Secret:
    return client.V1Secret(data={k: base64.b64encode(v).decode() for k, v in data.items()})


def test_keys_from_keys_json() -> None:
    keys = secrets._keys_from(secret({"keys.json": KEYS.to_json().encode()}), "ns", "s")
    assert keys.destination.b32 == KEYS.destination.b32
    assert keys.to_json() == KEYS.to_json()


def test_keys_from_i2pd_dat() -> None:
    keys = secrets._keys_from(secret({"web.dat": I2PD_DAT, "notes.txt": b"x"}), "ns", "s")
    assert keys.destination.b32 == I2PD_B32


def test_keys_json_wins_over_dat() -> None:
    found = secret({"a.dat": I2PD_DAT, "keys.json": KEYS.to_json().encode()})
    assert secrets._keys_from(found, "ns", "s").destination.b32 == KEYS.destination.b32


@pytest.mark.parametrize("data", [{}, {"username": b"u"}])
def test_neither_keys_json_nor_dat_says_what_to_do(data: dict[str, bytes]) -> None:
    with pytest.raises(secrets.SecretError) as caught:
        secrets._keys_from(secret(data), "team", "web-keys")
    message = str(caught.value)
    assert "team/web-keys" in message
    assert "'keys.json'" in message and "*.dat" in message
    assert "delete it to have keys generated" in message


def test_empty_secret_data_is_an_error_not_a_crash() -> None:
    with pytest.raises(secrets.SecretError, match="team/web-keys has no"):
        secrets._keys_from(client.V1Secret(data=None), "team", "web-keys")


@pytest.mark.parametrize(
    "data",
    [{"keys.json": b"{not json"}, {"keys.json": b'{"version": 1}'}, {"x.dat": b"short"}],
)
def test_unusable_keys_name_the_secret(data: dict[str, bytes]) -> None:
    with pytest.raises(secrets.SecretError) as caught:
        secrets._keys_from(secret(data), "team", "web-keys")
    assert str(caught.value).startswith("Secret team/web-keys: ")


def test_undecodable_base64_names_the_secret() -> None:
    with pytest.raises(secrets.SecretError, match=r"^Secret team/web-keys: "):
        secrets._keys_from(client.V1Secret(data={"keys.json": "%%%"}), "team", "web-keys")


class FakeCore:
    """The two CoreV1Api calls load_or_create_keys makes, over an in-memory Secret store."""

    def __init__(self, stored: client.V1Secret | None = None, race: bool = False) -> None:
        self.stored = stored
        self.race = race  # another writer creates the Secret just before we do
        self.created: list[client.V1Secret] = []

    def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
        if self.stored is None:
            raise ApiException(status=404, reason="Not Found")
        return self.stored

    def create_namespaced_secret(self, namespace: str, body: client.V1Secret) -> None:
        if self.race:
            self.race = False
            self.stored = secret({"keys.json": KEYS.to_json().encode()})
            raise ApiException(status=409, reason="Conflict")
        self.created.append(body)
        self.stored = body


def test_missing_secret_is_created_with_owner_and_label() -> None:
    core = FakeCore()
    owner = handlers._owner_reference(kopf.Body({"metadata": {"name": "web", "uid": "u-1"}}))
    result = secrets.load_or_create_keys(core, "team", "web-keys", owner)  # type: ignore[arg-type]
    assert result.created
    assert result.secret == "web-keys"  # noqa: S105 (a Secret's name)
    (body,) = core.created
    # As it goes on the wire; the kubernetes package ships no annotations for this.
    sent = client.ApiClient().sanitize_for_serialization(body)  # type: ignore[no-untyped-call]
    assert sent["metadata"]["ownerReferences"] == [owner]
    assert sent["metadata"]["labels"] == secrets.MANAGED_BY
    assert sent["metadata"]["annotations"] == {"multihome.i2p/b32": result.keys.destination.b32}
    stored = json.loads(base64.b64decode(sent["data"]["keys.json"]))
    assert stored["b32"] == result.keys.destination.b32
    again = secrets.load_or_create_keys(core, "team", "web-keys", owner)  # type: ignore[arg-type]
    assert not again.created and again.keys.destination.b32 == result.keys.destination.b32


def test_create_race_uses_the_winners_keys() -> None:
    core = FakeCore(race=True)
    result = secrets.load_or_create_keys(core, "team", "web-keys", None)  # type: ignore[arg-type]
    assert not result.created and result.keys.destination.b32 == KEYS.destination.b32


def test_unreadable_secret_is_a_secret_error() -> None:
    class Forbidden(FakeCore):
        def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(secrets.SecretError, match="reading Secret team/web-keys: Forbidden"):
        secrets.load_or_create_keys(Forbidden(), "team", "web-keys", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- router credentials


async def test_credentials_are_read_at_every_connection_attempt() -> None:
    """A missing Secret refuses only that router (EndpointError); a rotated one counts from
    the next attempt; a router without a credentials reference reads no Secret."""
    core = FakeCore()
    resolve = handlers.endpoint_resolver(core, "team")  # type: ignore[arg-type]
    spec = MultihomedDestinationSpec.model_validate(
        {
            "routers": [
                {"name": "java", "i2cp": {"host": "j", "port": 7650, "tls": True,
                                          "credentialsSecretRef": {"name": "java-auth"}}},
                {"name": "plain", "i2cp": {"host": "p"}},
            ]
        }
    )  # fmt: skip
    java, plain = spec.routers

    with pytest.raises(EndpointError, match="I2CP credentials: reading Secret team/java-auth"):
        await resolve(java)
    assert await resolve(plain) == Endpoint("p", 7654, False)

    core.stored = secret({"username": b"alice", "password": b"one"})
    first = await resolve(java)
    assert (first.host, first.port, first.tls) == ("j", 7650, True)
    assert (first.username, first.password) == ("alice", "one")
    assert "one" not in repr(first)

    core.stored = secret({"username": b"alice", "password": b"two"})
    rotated = await resolve(java)
    assert (rotated.username, rotated.password) == ("alice", "two")

    core.stored = secret({"username": b"alice"})
    with pytest.raises(EndpointError, match="needs 'username' and 'password'"):
        await resolve(java)


# --------------------------------------------------------------------------- events


def runtime(namespace: str, name: str, posted: list[tuple[str, str, str]]) -> DestinationRuntime:
    return DestinationRuntime(
        namespace, name, SPEC, KEYS, 1, [], None,  # type: ignore[arg-type]
        post_event=lambda kind, reason, message: posted.append((kind, reason, message)),
        resolve_endpoint=plain_endpoint,
    )  # fmt: skip


def value(name: str, **labels: str) -> float | None:
    sample: float | None = metrics.REGISTRY.get_sample_value(name, labels)
    return sample


PUBLISHED = LeaseSetPublished(PublishReason.LEASES_ENDING, 3, ("r1",), ("r1",))
FAILOVER = FailoverPublished(("r2",), 0.42, 6, ("r1", "r3"), ("r1", "r3"))


@pytest.mark.parametrize(
    ("event", "event_type", "reason"),
    [
        (RouterLost("r1", "router disconnected: bye"), "Warning", "RouterLost"),
        (RouterRefused("r1", "router answered 'refused'"), "Warning", "RouterRefused"),
        (RouterRecovered("r1", 42.0), "Normal", "RouterRecovered"),
        (SessionEstablished("r1", "0.9.67"), "Normal", "SessionEstablished"),
        (FAILOVER, "Normal", "Published"),
    ],
)
def test_balancer_events_map_to_kubernetes_events(
    event: BalancerEvent, event_type: str, reason: str
) -> None:
    posted: list[tuple[str, str, str]] = []
    runtime("ev-types", reason.lower(), posted)._on_event(event)
    assert posted == [(event_type, reason, event.message)]
    assert kubernetes_event(event) == (event_type, reason)


def test_event_messages_say_what_happened() -> None:
    assert RouterLost("r1", "closed").message == "router r1 lost: closed"
    assert RouterRecovered("r1", 42.4).message == "router r1 is back after 42s"
    assert RouterRefused("r1", "auth failed").message == "router r1: auth failed"
    assert FAILOVER.message == (
        "LeaseSet with 6 leases from 2 routers, without r2; 0.4s after the router was lost"
    )
    assert (
        PUBLISHED.message
        == "LeaseSet with 3 leases from 1 routers (published leases near their end)"
    )


def test_routine_publish_is_metrics_only() -> None:
    posted: list[tuple[str, str, str]] = []
    rt = runtime("ev-publish", "routine", posted)
    labels = {"namespace": "ev-publish", "destination": "routine"}
    rt._on_event(PUBLISHED)
    rt._on_event(LeaseSetPublished(PublishReason.REFRESH, 3, ("r1",), ("r1",)))
    assert posted == []
    assert value("i2p_multihome_publishes_total", **labels) == 2
    assert value("i2p_multihome_failover_seconds_count", **labels) is None


def test_failover_publish_posts_event_and_observes_histogram() -> None:
    posted: list[tuple[str, str, str]] = []
    rt = runtime("ev-failover", "web", posted)
    labels = {"namespace": "ev-failover", "destination": "web"}
    rt._on_event(RouterLost("r2", "closed"))
    rt._on_event(FAILOVER)
    assert posted == [
        ("Warning", "RouterLost", "router r2 lost: closed"),
        ("Normal", "Published", FAILOVER.message),
    ]
    assert value("i2p_multihome_router_failovers_total", **labels, router="r2") == 1
    assert value("i2p_multihome_publishes_total", **labels) == 1
    assert value("i2p_multihome_failover_seconds_count", **labels) == 1
    assert value("i2p_multihome_failover_seconds_sum", **labels) == pytest.approx(0.42)
    assert value("i2p_multihome_failover_seconds_bucket", **labels, le="0.5") == 1
    assert value("i2p_multihome_failover_seconds_bucket", **labels, le="0.25") == 0


def test_events_never_carry_key_material() -> None:
    posted: list[tuple[str, str, str]] = []
    rt = runtime("ev-keys", "web", posted)
    for event in (
        RouterLost("r1", "x"), RouterRefused("r1", "x"), RouterRecovered("r1", 1.0),
        SessionEstablished("r1", "0.9.67"), FAILOVER, PUBLISHED,
    ):  # fmt: skip
        rt._on_event(event)
    secrets_doc = json.loads(KEYS.to_json())
    text = repr(posted)
    assert secrets_doc["signingPrivateKey"] not in text
    assert secrets_doc["encryptionPrivateKey"] not in text


# --------------------------------------------------------------------------- metrics


def lease(name: str, tunnel_id: int, remaining_s: float) -> Lease:
    return Lease(
        hashlib.sha256(name.encode()).digest(), tunnel_id, int((NOW_S + remaining_s) * 1000)
    )


def snapshot() -> BalancerSnapshot:
    live = (lease("a", 1, 300), lease("a", 2, 100), lease("a", 3, -5))  # one expired
    return BalancerSnapshot(
        b32=KEYS.destination.b32,
        hash_b64=b64encode(KEYS.destination.hash),
        routers=(
            RouterSnapshot("r1", RouterState.ESTABLISHED, "0.9.62", live, None, NOW_S - 60),
            RouterSnapshot("r2", RouterState.REFUSED, None, (), "invalid", None),
        ),
        published=(SelectedLease("r1", live[0]), SelectedLease("r1", live[1])),
        published_s=int(NOW_S) - 10,
        expires_s=int(NOW_S) + 100,
        publishes=4,
        publisher="r1",
    )


def test_observe_snapshot_sets_one_state_per_router_and_live_leases() -> None:
    metrics.observe_snapshot("m-snap", "web", snapshot(), NOW_S)
    labels = {"namespace": "m-snap", "destination": "web"}
    for router, state in (("r1", RouterState.ESTABLISHED), ("r2", RouterState.REFUSED)):
        for candidate in RouterState:
            expected = 1 if candidate is state else 0
            assert (
                value("i2p_multihome_sessions", **labels, router=router, state=candidate.value)
                == expected
            ), (router, candidate)
    assert value("i2p_multihome_live_leases", **labels, router="r1") == 2
    assert value("i2p_multihome_live_leases", **labels, router="r2") == 0
    assert value("i2p_multihome_published_leases", **labels) == 2
    assert value("i2p_multihome_leaseset_published_timestamp_seconds", **labels) == NOW_S - 10
    assert value("i2p_multihome_publisher", **labels, router="r1") == 1
    assert value("i2p_multihome_publisher", **labels, router="r2") == 0


def test_observe_snapshot_follows_state_changes() -> None:
    metrics.observe_snapshot("m-change", "web", snapshot(), NOW_S)
    recovered = snapshot()
    recovered = BalancerSnapshot(
        **{
            **recovered.__dict__,
            "routers": (
                recovered.routers[0],
                RouterSnapshot("r2", RouterState.ESTABLISHED, "0.9.62", (), None, NOW_S),
            ),
        }
    )
    metrics.observe_snapshot("m-change", "web", recovered, NOW_S)
    labels = {"namespace": "m-change", "destination": "web", "router": "r2"}
    assert value("i2p_multihome_sessions", **labels, state="Established") == 1
    assert value("i2p_multihome_sessions", **labels, state="Refused") == 0


def test_forget_removes_every_series_of_the_destination_only() -> None:
    for name in ("gone", "kept"):
        metrics.observe_snapshot("m-forget", name, snapshot(), NOW_S)
        metrics.observe_event("m-forget", name, RouterLost("r2", "lost"))
        metrics.observe_event("m-forget", name, FAILOVER)
    metrics.forget("m-forget", "gone", ["r1", "r2"])
    metrics.forget("m-forget", "gone", ["r1", "r2"])  # twice: no error
    exposed = [
        sample
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("namespace") == "m-forget"
    ]
    assert exposed and {s.labels["destination"] for s in exposed} == {"kept"}
    kept = {"namespace": "m-forget", "destination": "kept"}
    assert value("i2p_multihome_sessions", **kept, router="r1", state="Established") == 1
    assert value("i2p_multihome_failover_seconds_count", **kept) == 1


def test_dataplane_counts_grow_the_counters_by_their_difference_nudges_included() -> None:
    stats = DataPlaneStats()
    stats.drops["no_port"] = 2
    labels = {"namespace": "m-dp", "destination": "web"}
    metrics.observe_dataplane("m-dp", "web", stats, stats.drops, {"sent": 3, "answered": 1})
    metrics.observe_dataplane("m-dp", "web", stats, stats.drops, {"sent": 5, "answered": 1})
    assert value("i2p_multihome_client_nudges_total", **labels, result="sent") == 5
    assert value("i2p_multihome_client_nudges_total", **labels, result="answered") == 1
    assert value("i2p_multihome_dropped_packets_total", **labels, reason="no_port") == 2
    metrics.forget("m-dp", "web", [])
    assert value("i2p_multihome_client_nudges_total", **labels, result="sent") is None


# --------------------------------------------------------------------------- routersFrom


class RecordingStatusApi:
    """What DestinationRuntime's status sink calls on the API (CustomObjectsApi)."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        self.statuses.append(args[-1]["status"])


def fake_router_slice(*routers: tuple[FakeRouter, bool]) -> SliceView:
    """One EndpointSlice per router (each listens on its own port), as the endpoint
    controller writes them for pods named after the routers."""
    return SliceView(
        ports=(("i2cp", routers[0][0].port),),
        endpoints=tuple(SliceEndpoint(r.name, "127.0.0.1", ready) for r, ready in routers),
    )


def gateways_of(name: str) -> set[bytes]:
    return {lease.gateway for lease in make_leases(name, 2)}


def holds(router: FakeRouter, gateways: set[bytes]) -> bool:
    """Whether the last LeaseSet `router` was handed has a lease through `gateways`."""
    last = router.last_lease_set
    return last is not None and bool(last.gateways & gateways)


async def test_routers_from_follows_the_ready_endpoints() -> None:
    """spec.routersFrom: the balancer runs on the ready endpoints; one that turns ready
    joins (a session, its leases published), one that turns not ready leaves (its session
    destroyed, its leases out of the next LeaseSet at once), and none leaves a destination
    that says why it is not ready."""
    declared = MultihomedDestinationSpec.model_validate(
        {
            "routersFrom": {"service": {"name": "i2pd", "port": "i2cp"}},
            "tunnels": {"inbound": {"quantity": 2, "length": 1}},
        }
    )
    posted: list[tuple[str, str, str]] = []
    api = RecordingStatusApi()
    async with (
        FakeRouter("ep-a", leases=make_leases("ep-a", 2)) as a,
        FakeRouter("ep-b", leases=make_leases("ep-b", 2)) as b,
    ):

        def slices(*ready: tuple[FakeRouter, bool]) -> list[SliceView]:
            return [fake_router_slice(entry) for entry in ready]

        hosted = DestinationRuntime(
            "ns", "web", declared, KEYS, 1, [], api,  # type: ignore[arg-type]
            post_event=lambda kind, reason, message: posted.append((kind, reason, message)),
            resolve_endpoint=plain_endpoint,
            # Publish within 0.3 s of a change, on the real clock the fake routers run on.
            timing=Timing(min_publish_interval_s=0.3, heartbeat_s=3600, ramp_spread_s=0.0),
            slices=slices((a, True), (b, False)),
        )  # fmt: skip
        assert [r.name for r in hosted.balancer.spec.routers] == ["ep-a"]
        assert hosted.follows("i2pd") and not hosted.follows("other")
        hosted.start()
        try:
            await eventually(lambda: a.last_lease_set is not None, what="ep-a's LeaseSet")
            assert not b.connections

            await hosted.endpoints_changed(slices((a, True), (b, True)))
            await eventually(lambda: holds(a, gateways_of("ep-b")), what="ep-b's leases")
            joined = ("Normal", "RoutersChanged", "2 ready endpoints of Service i2pd; joined: ep-b")
            assert joined in posted

            assert await hosted.report()
            sessions = "i2p_multihome_sessions"
            labels = {"namespace": "ns", "destination": "web", "state": "Established"}
            assert value(sessions, **labels, router="ep-a") == 1

            await hosted.endpoints_changed(slices((a, False), (b, True)))
            assert [m.session_id for m in a.destroys] == a.session_ids
            assert value(sessions, **labels, router="ep-a") is None  # no ghost of a router
            await eventually(
                lambda: holds(b, gateways_of("ep-b")) and not holds(b, gateways_of("ep-a")),
                what="ep-a's leases gone",
            )
            left = ("Normal", "RoutersChanged", "1 ready endpoint of Service i2pd; left: ep-a")
            assert left in posted

            unchanged = len(posted)
            await hosted.endpoints_changed(slices((a, False), (b, True)))
            assert len(posted) == unchanged  # the same routers: nothing to do, nothing said

            await hosted.endpoints_changed([])
            assert [m.session_id for m in b.destroys] == b.session_ids
            assert await hosted.report()
            conditions = {c["type"]: c for c in api.statuses[-1]["conditions"]}
            assert conditions["Ready"]["reason"] == "NoRouters"
            assert api.statuses[-1]["routersConnected"] == "0/0"
        finally:
            await hosted.stop(destroy_sessions=False)
