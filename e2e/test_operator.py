"""The operator as a real process against a real kube-apiserver and a real private i2pd
testnet: `kubectl apply` to a LeaseSet on every floodfill, router loss and recovery, operator
restarts without a gap, deletion, refusal, metrics, no key material anywhere, peering HA, and
several destinations with one broken.

Each test has its own namespace (left behind: no namespace controller runs here), its own
object names (so its own destinations) and its own operator process.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import functools
import json
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from e2e.fixtures_cluster import KubeCluster
from e2e.operator_run import (
    Destination,
    compare_floodfills,
    find_key_material,
    key_material_forms,
    new_namespace,
    tcp_peers,
)
from i2p_multihome_dev.balancer_process import destination_manifest
from i2p_multihome_dev.kube import Namespace, install_crds
from i2p_multihome_dev.observe import floodfill_views, serving
from i2p_multihome_dev.operator_process import OperatorProcess, operator_running, start_operator
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.processes import free_ports
from i2p_multihome_dev.repo import CRD_FILE, PEERING_CRD_FILE
from i2p_multihome_dev.testnet import Testnet, fetch_local_destinations

pytestmark = [pytest.mark.testnet, pytest.mark.cluster]

# Up to one refresh interval (90 s) plus slack: a floodfill that missed a flood catches up
# at the balancer's next refresh publish.
FLOOD_CONVERGENCE_S = 150
HOSTS4 = ["r1", "r2", "r3", "r4"]


@pytest.fixture(scope="module")
def crds(kube_cluster: KubeCluster) -> KubeCluster:
    install_crds(kube_cluster.kubeconfig, CRD_FILE, PEERING_CRD_FILE)
    return kube_cluster


def peering_status(namespace: Namespace, name: str) -> dict[str, dict[str, Any]]:
    """The KopfPeering's status: one entry per live replica (identity -> priority, ...)."""
    found = json.loads(namespace.kubectl("get", "kopfpeering", name, "-o", "json").stdout)
    status: dict[str, dict[str, Any]] = found.get("status") or {}
    return status


def i2cp_endpoints(testnet: Testnet, routers: list[str]) -> set[tuple[str, int]]:
    return {testnet.router(r).i2cp for r in routers}


def wall_second() -> int:
    return int(time.time())


def since_s(router_status: dict[str, Any]) -> int:
    """A router's `since` (establishment time) as epoch seconds; 0 when absent."""
    since = router_status.get("since")
    if not since:
        return 0
    return calendar.timegm(time.strptime(since, "%Y-%m-%dT%H:%M:%SZ"))


def kubectl_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split()
    return header, [dict(zip(header, line.split(), strict=True)) for line in lines[1:]]


def assert_no_key_material(namespace: Namespace, name: str, secret: str, logs: list[Path]) -> None:
    """The Secret's private keys occur in no operator log, no event and not in the object."""
    forms = key_material_forms(namespace.secret(secret))
    texts = {str(path): path.read_text(errors="replace") for path in logs}
    texts["kubectl get events -o yaml"] = namespace.kubectl("get", "events", "-o", "yaml").stdout
    texts[f"kubectl get mhd {name} -o yaml"] = namespace.kubectl(
        "get", "mhd", name, "-o", "yaml"
    ).stdout
    assert not find_key_material(texts, forms), find_key_material(texts, forms)
    # The search can find what it looks for: the Secret itself, and the decoded keys.json.
    secret_yaml = namespace.kubectl("get", "secret", secret, "-o", "yaml").stdout
    keys_json = base64.b64decode(namespace.secret(secret)["data"]["keys.json"]).decode()
    assert find_key_material({"secret": secret_yaml}, forms)
    assert len(find_key_material({"keys.json": keys_json}, forms)) >= 2


def ready_with_all(
    dest: Destination, routers: list[str], operator: OperatorProcess
) -> dict[str, Any] | NotYet:
    """The status once Ready=True and the published LeaseSet holds leases of every router
    in `routers`; not yet: what is missing."""
    operator.assert_running()
    status = dest.status()
    contributing = {t["router"] for t in status.get("tunnels", []) if t["published"]}
    if dest.condition("Ready", status) == "True" and set(routers) <= contributing:
        return status
    return NotYet({"Ready": dest.condition("Ready", status), "contributing": sorted(contributing)})


def floodfills_hold(dest: Destination, b32: str, routers: list[str]) -> dict[str, Any] | NotYet:
    """Every floodfill serves the destination with leases of every router in `routers`
    (each lease's router checked against the routers' consoles)."""
    now = time.time()
    detail = {
        floodfill: (
            serving(lease_set, now),
            sorted(dest.routers_of(lease_set)) if lease_set is not None else None,
        )
        for floodfill, lease_set in dest.floodfill_views(b32).items()
    }
    ok = all(
        good and owners is not None and set(routers) <= set(owners)
        for good, owners in detail.values()
    )
    return detail if ok else NotYet(detail)


def wait_served(dest: Destination, routers: list[str], operator: OperatorProcess) -> str:
    """Wait until the destination is Ready with leases of every router in `routers` and every
    floodfill serves them; its b32."""
    wait_until(
        f"Ready from all of {routers}",
        120,
        lambda: ready_with_all(dest, routers, operator),
        interval=1.0,
    )
    b32 = dest.b32()
    wait_until(
        f"leases of all of {routers} on every floodfill",
        FLOOD_CONVERGENCE_S,
        lambda: floodfills_hold(dest, b32, routers),
    )
    return b32


# --------------------------------------------------------------------------- 1. apply


def test_apply_becomes_ready_with_one_leaseset_on_every_floodfill(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    ns = new_namespace(crds, "apply")
    name = "apply-four"
    with operator_running(crds.kubeconfig, tmp_path / "operator.log", [ns.name]) as operator:
        started = time.monotonic()
        ns.apply(destination_manifest(name, testnet, HOSTS4, inbound=3, length=1))
        dest = Destination(ns, name, testnet)
        status = wait_until(
            "Ready=True with published leases from r1..r4",
            120,
            lambda: ready_with_all(dest, HOSTS4, operator),
            interval=1.0,
        )
        ready_after = time.monotonic() - started
        b32 = status["destination"]["b32"]
        assert {r["name"]: r["state"] for r in status["routers"]} == dict.fromkeys(
            HOSTS4, "Established"
        )
        assert status["routersConnected"] == "4/4"

        wait_until(
            "every floodfill to hold the LeaseSet the status describes",
            FLOOD_CONVERGENCE_S,
            lambda: compare_floodfills(dest, b32),
        )
        print(
            f"apply -> Ready with leases from 4 routers in {ready_after:.1f}s; "
            f"identical LeaseSet on all floodfills after {time.monotonic() - started:.1f}s"
        )

        header, rows = kubectl_table(ns.kubectl("get", "mhd").stdout)
        assert header == ["NAME", "READY", "ROUTERS", "LEASES", "PUBLISHED", "STREAMS", "AGE"]
        (row,) = rows
        assert row["STREAMS"] == "0"  # no ports, no client
        assert row["NAME"] == name and row["READY"] == "True" and row["ROUTERS"] == "4/4"
        assert 4 <= int(row["LEASES"]) <= 16
        assert re.fullmatch(r"\d+[smhd]\d*[smh]?", row["PUBLISHED"]), row
        header, rows = kubectl_table(ns.kubectl("get", "mhd", "-o", "wide").stdout)
        assert header[-1] == "B32" and rows[0]["B32"] == b32
        publisher = ((ns.mhd(name) or {}).get("status") or {}).get("leaseSet", {}).get("publisher")
        assert header[-2] == "PUBLISHER" and rows[0]["PUBLISHER"] == publisher in HOSTS4

        wait_until(
            "KeysGenerated and SessionEstablished events",
            20,
            lambda: (
                ns.has_event(name, "KeysGenerated", "Normal")
                and sum(e["reason"] == "SessionEstablished" for e in ns.events(name)) == 4
            ),
        )
        assert_no_key_material(ns, name, f"{name}-keys", [operator.log_path])


# ------------------------------------------------------------ 2. router loss, 6. metrics


def test_killed_router_degrades_leaves_and_recovers_with_events_and_metrics(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path, restore_routers: None
) -> None:
    victim = "r2"
    ns = new_namespace(crds, "failover")
    name = "failover-four"
    with operator_running(crds.kubeconfig, tmp_path / "operator.log", [ns.name]) as operator:
        ns.apply(destination_manifest(name, testnet, HOSTS4, inbound=3, length=1))
        dest = Destination(ns, name, testnet)
        b32 = wait_served(dest, HOSTS4, operator)
        labels = {"namespace": ns.name, "destination": name}
        for router in HOSTS4:
            assert (
                operator.metric(
                    "i2p_multihome_sessions", **labels, router=router, state="Established"
                )
                == 1
            )
            assert (operator.metric("i2p_multihome_live_leases", **labels, router=router) or 0) >= 1
        assert (operator.metric("i2p_multihome_publishes_total", **labels) or 0) >= 1
        assert (operator.metric("i2p_multihome_published_leases", **labels) or 0) >= 4
        assert operator.metric("i2p_multihome_failover_seconds_count", **labels) is None

        testnet.stop_router(victim)
        killed = time.monotonic()

        def degraded() -> bool:
            status = dest.status()
            router = dest.routers(status)[victim]
            condition = dest.conditions(status)["Degraded"]
            return (
                condition["status"] == "True"
                and victim in condition["message"]
                and router["state"] != "Established"
                and bool(router.get("lastError"))
                and dest.condition("RoutersConnected", status) == "False"
                and dest.condition("Ready", status) == "True"
            )

        wait_until(f"Degraded=True naming {victim}", 30, degraded, interval=0.5)
        degraded_after = time.monotonic() - killed

        def victim_gone() -> bool:
            operator.assert_running()
            return all(
                serving(ls, time.time()) and victim not in dest.routers_of(ls)
                for ls in dest.floodfill_views(b32).values()
            )

        wait_until(
            f"{victim}'s leases to leave every floodfill",
            30 - degraded_after,
            victim_gone,
            interval=1.0,
        )
        gone_after = time.monotonic() - killed
        wait_until(
            "a RouterLost Warning event",
            10,
            lambda: ns.has_event(name, "RouterLost", "Warning"),
            interval=1.0,
        )

        failover_count = operator.metric("i2p_multihome_failover_seconds_count", **labels)
        failover_sum = operator.metric("i2p_multihome_failover_seconds_sum", **labels)
        assert failover_count == 1 and failover_sum is not None
        assert operator.metric("i2p_multihome_router_failovers_total", **labels, router=victim) == 1
        assert (
            operator.metric("i2p_multihome_sessions", **labels, router=victim, state="Established")
            == 0
        )
        assert operator.metric("i2p_multihome_live_leases", **labels, router=victim) == 0
        print(
            f"{victim} SIGKILLed: Degraded after {degraded_after:.1f}s, its leases gone from all "
            f"floodfills after {gone_after:.1f}s; balancer failover (loss -> LeaseSet without "
            f"it handed to routers) {failover_sum:.2f}s"
        )

        testnet.start_router(victim)
        restarted = time.monotonic()

        def recovered() -> bool:
            status = dest.status()
            return (
                dest.condition("Ready", status) == "True"
                and dest.condition("RoutersConnected", status) == "True"
                and dest.condition("Degraded", status) == "False"
                and dest.routers(status)[victim]["state"] == "Established"
            )

        wait_until(f"{victim} Established, RoutersConnected=True, Degraded=False", 240, recovered)
        wait_until(
            f"{victim}'s leases back on every floodfill",
            240,
            lambda: floodfills_hold(dest, b32, HOSTS4),
        )
        print(
            f"{victim} restarted: its leases back on all floodfills after "
            f"{time.monotonic() - restarted:.0f}s"
        )
        wait_until(
            "a RouterRecovered event",
            10,
            lambda: ns.has_event(name, "RouterRecovered", "Normal"),
            interval=1.0,
        )
        failover_event = [e for e in ns.events(name) if e["reason"] == "Published"]
        assert failover_event and "after the router was lost" in failover_event[0]["message"]
        assert (
            operator.metric("i2p_multihome_sessions", **labels, router=victim, state="Established")
            == 1
        )
        assert_no_key_material(ns, name, f"{name}-keys", [operator.log_path])


# --------------------------------------------------------------------------- 3. restart


@dataclass(frozen=True)
class FloodfillSample:
    """One look at every floodfill: which serve the destination, and what the others held."""

    at: float  # monotonic seconds
    serving: tuple[str, ...]
    not_serving: dict[str, str]  # floodfill -> what it held instead

    @property
    def gap(self) -> bool:
        """A client asking some floodfill would find no usable lease."""
        return bool(self.not_serving)


@dataclass
class GapSampler:
    """Samples every floodfill every ~2 s in a thread; a sample where any floodfill does not
    serve the destination is a gap (a client may ask any of them)."""

    testnet: Testnet
    b32: str
    interval: float = 2.0

    def __post_init__(self) -> None:
        self.samples: list[FloodfillSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> FloodfillSample:
        now = time.time()
        try:
            views = floodfill_views(self.testnet, self.b32)
        except (OSError, ValueError) as exc:  # a console that did not answer serves nothing
            return FloodfillSample(time.monotonic(), (), {"console": repr(exc)})
        return FloodfillSample(
            time.monotonic(),
            tuple(name for name, ls in sorted(views.items()) if serving(ls, now)),
            {
                name: "nothing" if ls is None else f"{len(ls.leases)} leases, none usable"
                for name, ls in sorted(views.items())
                if not serving(ls, now)
            },
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> GapSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def gaps(self) -> list[FloodfillSample]:
        return [s for s in self.samples if s.gap]


def stored_profiles(ns: Namespace, name: str) -> int:
    """How many peers the destination's profile ConfigMap holds; it must be owned by the
    destination (deleted with it) and hold nothing but router hashes and counters."""
    configmap = ns.core.read_namespaced_config_map(f"{name}-peer-profiles", ns.name).to_dict()
    (owner,) = configmap["metadata"]["owner_references"]
    mhd = ns.mhd(name)
    assert mhd is not None and owner["uid"] == mhd["metadata"]["uid"]
    document = json.loads(configmap["data"]["profiles.json"])
    assert document["version"] == 1
    peers = document["peers"]
    # Every router's leases were reported at least once: each named a gateway.
    assert len(peers) >= 1
    assert {name for p in peers for name in p["builders"]} == set(HOSTS4)
    return len(peers)


def test_operator_restart_keeps_keys_sessions_and_leaseset_without_gap(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    ns = new_namespace(crds, "restart")
    name = "restart-four"
    secret = f"{name}-keys"
    dest = Destination(ns, name, testnet)
    operator = start_operator(
        crds.kubeconfig, tmp_path / "operator-1.log", [ns.name], label="operator-1"
    )
    try:
        ns.apply(destination_manifest(name, testnet, HOSTS4, inbound=3, length=1))
        b32 = wait_served(dest, HOSTS4, operator)
        before = ns.secret(secret)
        for number, signum in enumerate((signal.SIGTERM, signal.SIGKILL), start=2):
            with GapSampler(testnet, b32) as sampler:
                time.sleep(4)
                stopped_at = wall_second()
                exit_s = operator.stop(signum)
                if signum is signal.SIGTERM:
                    # What the balancer learned of its routers' gateways went with it.
                    saved = stored_profiles(ns, name)
                # SIGTERM hands the sessions back (routers drop them with the connection).
                label = f"operator-{number}"
                operator = start_operator(
                    crds.kubeconfig, tmp_path / f"{label}.log", [ns.name], label=label
                )
                restarted = time.monotonic()

                def restored(
                    op: OperatorProcess = operator, after: int = stopped_at
                ) -> dict[str, Any] | NotYet:
                    status = ready_with_all(dest, HOSTS4, op)
                    if isinstance(status, NotYet):
                        return status
                    done = all(
                        r["state"] == "Established" and since_s(r) >= after
                        for r in status["routers"]
                    )
                    fresh = {r["name"]: (r["state"], r.get("since")) for r in status["routers"]}
                    return status if done else NotYet(fresh)

                status = wait_until(f"Ready again after {signum.name}", 120, restored, interval=1.0)
                ready_after = time.monotonic() - restarted
                # Both restarts start from the profiles the SIGTERM saved (SIGKILL saves none).
                loaded = re.search(
                    rf"peer profiles loaded namespace={ns.name} name={name} .*peers=(\d+)",
                    operator.log_text(),
                )
                assert loaded is not None, "the new operator did not load the profiles"
                if signum is signal.SIGTERM:
                    assert int(loaded[1]) == saved
                else:  # the SIGKILLed one may have saved a later state on its timer
                    assert int(loaded[1]) >= saved
                assert status["destination"]["b32"] == b32
                for router in HOSTS4:
                    assert dest.sessions_on(router, b32) == 1, router
                assert i2cp_endpoints(testnet, HOSTS4) <= tcp_peers(operator.pid)

                wait_until(
                    "the new operator's LeaseSet on every floodfill",
                    FLOOD_CONVERGENCE_S,
                    lambda: compare_floodfills(dest, b32, exact=False),
                )
                time.sleep(4)
            held = [len(s.serving) for s in sampler.samples]
            print(
                f"{signum.name}: operator exited in {exit_s:.1f}s; new one Ready with 4 fresh "
                f"sessions {ready_after:.1f}s after start; {len(held)} floodfill samples, "
                f"serving floodfills min {min(held)} / max {max(held)} of 3"
            )
            assert len(held) >= 5
            assert not sampler.gaps(), (
                f"a floodfill did not serve the destination: {sampler.gaps()}"
            )
        after = ns.secret(secret)
        assert after["metadata"]["resource_version"] == before["metadata"]["resource_version"]
        assert after["data"] == before["data"]
        assert_no_key_material(ns, name, secret, sorted(tmp_path.glob("operator-*.log")))
    finally:
        operator.stop()


# ------------------------------------------------------------------- spec change in place


def test_spec_change_reconfigures_sessions_in_place(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    """More inbound tunnels: the same sessions (router-side I2CP session ids, `since`) get
    ReconfigureSession, build the extra tunnels, and no key or session is replaced."""
    ns = new_namespace(crds, "reconfigure")
    name = "reconfigure-two"
    hosts = ["r5", "r6"]
    with operator_running(crds.kubeconfig, tmp_path / "operator.log", [ns.name]) as operator:
        ns.apply(destination_manifest(name, testnet, hosts, inbound=1, length=0))
        dest = Destination(ns, name, testnet)
        before = wait_until(
            "Ready=True with leases from r5 and r6",
            120,
            lambda: ready_with_all(dest, hosts, operator),
        )
        b32 = before["destination"]["b32"]
        secret_version = ns.secret(f"{name}-keys")["metadata"]["resource_version"]

        def session_ids() -> dict[str, list[int | None]]:
            label = b32.removesuffix(".b32.i2p")
            return {
                router: [
                    d.i2cp_session
                    for d in fetch_local_destinations(testnet.router(router).console)
                    if d.b32 == label and d.i2cp_session is not None
                ]
                for router in hosts
            }

        sessions = session_ids()
        assert all(len(ids) == 1 for ids in sessions.values()), sessions
        since = {r["name"]: r["since"] for r in before["routers"]}

        manifest = destination_manifest(name, testnet, hosts, inbound=3, length=0)
        ns.apply(manifest)

        def reconfigured() -> dict[str, int] | NotYet:
            status = dest.status()
            live: dict[str, int] = {}
            for tunnel in status.get("tunnels", []):
                live[tunnel["router"]] = live.get(tunnel["router"], 0) + tunnel["live"]
            done = (
                status.get("observedGeneration") == 2
                and all(live.get(router, 0) >= 3 for router in hosts)
                and dest.condition("Ready", status) == "True"
            )
            return live if done else NotYet(live)

        wait_until("3 live tunnels per router at generation 2", 120, reconfigured)
        status = dest.status()
        assert status["destination"]["b32"] == b32
        assert {r["name"]: r["since"] for r in status["routers"]} == since
        assert session_ids() == sessions
        assert ns.secret(f"{name}-keys")["metadata"]["resource_version"] == secret_version
        assert "session reconfigured" in operator.log_text()
        assert not any(e["reason"] == "RouterLost" for e in ns.events(name))


# --------------------------------------------------------------------------- 4. delete


def test_delete_destroys_every_session_and_releases_the_finalizer(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    ns = new_namespace(crds, "delete")
    name = "delete-four"
    with operator_running(crds.kubeconfig, tmp_path / "operator.log", [ns.name]) as operator:
        ns.apply(destination_manifest(name, testnet, HOSTS4, inbound=1, length=0))
        dest = Destination(ns, name, testnet)
        b32 = dest.b32()
        wait_until(
            "every router to host the destination",
            60,
            lambda: all(dest.sessions_on(r, b32) == 1 for r in HOSTS4),
        )
        obj = dest.object()
        assert obj is not None and "multihome.i2p/finalizer" in obj["metadata"]["finalizers"]
        labels = {"namespace": ns.name, "destination": name}
        wait_until(
            "session metrics",
            20,
            lambda: (
                operator.metric(
                    "i2p_multihome_sessions", **labels, router="r1", state="Established"
                )
                == 1
            ),
        )

        ns.kubectl("delete", "mhd", name, "--wait=false")
        deleted = time.monotonic()
        wait_until(
            "the object to be gone (finalizer released)",
            30,
            lambda: dest.object() is None,
            interval=0.5,
        )
        gone_after = time.monotonic() - deleted
        wait_until(
            "every router to drop the destination",
            30 - gone_after,
            lambda: all(dest.sessions_on(r, b32) == 0 for r in HOSTS4),
            interval=1.0,
        )
        print(
            f"delete: object gone {gone_after:.1f}s, "
            f"sessions gone {time.monotonic() - deleted:.1f}s"
        )
        assert not i2cp_endpoints(testnet, HOSTS4) & tcp_peers(operator.pid)
        assert operator.metric("i2p_multihome_sessions", **labels) is None
        assert "destination released" in operator.log_text()


# --------------------------------------------------------------------------- 5. refused


def test_router_refusing_a_duplicate_destination_shows_refused(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    """PROVES: i2pd answers CreateSession for a destination it already hosts with status
    'invalid'; the second object shows Refused with that answer. i2pd gives no reason, so
    lastError names the status, not the cause."""
    routers = ["r5", "r6"]
    first_ns, second_ns = new_namespace(crds, "owner"), new_namespace(crds, "dup")
    with operator_running(
        crds.kubeconfig, tmp_path / "operator.log", [first_ns.name, second_ns.name]
    ):
        first_ns.apply(destination_manifest("owner", testnet, routers, inbound=1, length=0))
        first = Destination(first_ns, "owner", testnet)
        b32 = first.b32()
        wait_until(
            "the first object's sessions",
            60,
            lambda: (
                all(s["state"] == "Established" for s in first.routers().values())
                and all(first.sessions_on(r, b32) == 1 for r in routers)
            ),
        )
        original = first_ns.secret("owner-keys")
        second_ns.core.create_namespaced_secret(
            second_ns.name,
            kubernetes.client.V1Secret(
                metadata=kubernetes.client.V1ObjectMeta(name="copied-keys"),
                type="Opaque",
                data=original["data"],
            ),
        )
        second_ns.apply(
            destination_manifest(
                "dup",
                testnet,
                routers,
                inbound=1,
                length=0,
                keys={"secretRef": {"name": "copied-keys"}},
            )
        )
        second = Destination(second_ns, "dup", testnet)

        def refused() -> Any:
            status = second.status()
            states = second.routers(status)
            if set(states) == set(routers) and all(
                s["state"] == "Refused" for s in states.values()
            ):
                return status
            return None

        status = wait_until("the duplicate's routers to be Refused", 60, refused, interval=1.0)
        assert status["destination"]["b32"] == b32
        for router in status["routers"]:
            assert "invalid" in router["lastError"], router
        assert second.condition("Ready", status) == "False"
        assert second.condition("RoutersConnected", status) == "False"
        wait_until(
            "a RouterRefused Warning",
            20,
            lambda: second_ns.has_event("dup", "RouterRefused", "Warning"),
        )
        # The owner is untouched: still one session per router, all Established.
        assert all(s["state"] == "Established" for s in first.routers().values())
        assert all(first.sessions_on(r, b32) == 1 for r in routers)
        print(f"duplicate refused: {[(r['name'], r['lastError']) for r in status['routers']]}")


# --------------------------------------------------------------------------- 8. HA


def test_peering_standby_takes_over_when_the_active_operator_is_killed(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    ns = new_namespace(crds, "ha")
    name = "ha-four"
    lifetime = 10
    ns.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "ha"}})
    options: dict[str, Any] = {"peering": "ha", "peering_lifetime": lifetime}
    with contextlib.ExitStack() as stack:
        active = start_operator(
            crds.kubeconfig,
            tmp_path / "active.log",
            [ns.name],
            label="active",
            priority=100,
            **options,
        )
        stack.callback(active.stop, signal.SIGKILL)
        standby = start_operator(
            crds.kubeconfig,
            tmp_path / "standby.log",
            [ns.name],
            label="standby",
            priority=50,
            **options,
        )
        stack.callback(standby.stop)
        # Mandatory peering starts paused (kopf logs nothing for that); only the replica
        # that finds no higher priority logs that it resumes.
        wait_until(
            "both replicas' keep-alives in the KopfPeering",
            30,
            lambda: (
                sorted(peer["priority"] for peer in peering_status(ns, "ha").values()) == [50, 100]
            ),
            interval=0.5,
        )
        assert "Resuming operations" in active.log_text()
        ns.apply(destination_manifest(name, testnet, HOSTS4, inbound=1, length=0))
        dest = Destination(ns, name, testnet)
        wait_until(
            "Ready from all 4", 90, lambda: ready_with_all(dest, HOSTS4, active), interval=1.0
        )
        b32 = dest.b32()
        time.sleep(3)
        assert i2cp_endpoints(testnet, HOSTS4) <= tcp_peers(active.pid)
        assert not i2cp_endpoints(testnet, HOSTS4) & tcp_peers(standby.pid)
        for router in HOSTS4:
            assert dest.sessions_on(router, b32) == 1, router
        assert "hosting destination" not in standby.log_text()
        assert "Resuming operations" not in standby.log_text()
        assert standby.metric("i2p_multihome_sessions", namespace=ns.name) is None

        killed_at = wall_second()
        active.stop(signal.SIGKILL)
        killed = time.monotonic()
        resumed: list[float] = []

        first_publish: list[float] = []

        def taken_over() -> dict[str, Any] | NotYet:
            if not resumed and "Resuming operations" in standby.log_text():
                resumed.append(time.monotonic() - killed)
            current = dest.status()
            published = since_s({"since": current.get("leaseSet", {}).get("published")})
            if not first_publish and published >= killed_at:
                first_publish.append(time.monotonic() - killed)
            status = ready_with_all(dest, HOSTS4, standby)
            if isinstance(status, NotYet):
                return status
            since = {r["name"]: r.get("since") for r in status["routers"]}
            fresh = all(since_s(r) >= killed_at for r in status["routers"])
            connected = i2cp_endpoints(testnet, HOSTS4) <= tcp_peers(standby.pid)
            return status if fresh and connected else NotYet((since, connected))

        status = wait_until("the standby to take over", lifetime + 90, taken_over, interval=0.5)
        takeover = time.monotonic() - killed
        assert status["destination"]["b32"] == b32
        for router in HOSTS4:
            assert dest.sessions_on(router, b32) == 1, router
        print(
            f"HA takeover (peering lifetime {lifetime}s): standby resumed "
            f"{resumed[0] if resumed else float('nan'):.1f}s after SIGKILL of the active, "
            f"its first LeaseSet published by {first_publish[0]:.1f}s, Ready with leases of "
            f"all 4 routers' fresh sessions after {takeover:.1f}s"
        )


# --------------------------------------------------------------------------- 9. many


def test_one_broken_destination_does_not_hold_back_the_others(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    """PROVES the Disconnected state: a router address where nothing listens."""
    ns = new_namespace(crds, "many")
    dead = (testnet.router("r4").i2cp[0], free_ports(1)[0])  # nothing listens there
    with operator_running(crds.kubeconfig, tmp_path / "operator.log", [ns.name]) as operator:
        good = ["many-a", "many-b"]
        for name in good:
            ns.apply(destination_manifest(name, testnet, HOSTS4, inbound=1, length=0))
        ns.apply(
            destination_manifest(
                "many-bad", testnet, HOSTS4, inbound=1, length=0, endpoints={"r4": dead}
            )
        )
        dests = {name: Destination(ns, name, testnet) for name in [*good, "many-bad"]}
        for name in good:
            wait_until(
                f"{name} Ready from all 4",
                90,
                functools.partial(ready_with_all, dests[name], HOSTS4, operator),
                interval=1.0,
            )
            status = dests[name].status()
            assert dests[name].condition("Degraded", status) == "False"
        bad = dests["many-bad"]

        def bad_reported() -> Any:
            status = bad.status()
            r4 = bad.routers(status).get("r4", {})
            return r4.get("state") == "Disconnected" and r4.get("lastError") and status

        status = wait_until(
            "many-bad's r4 Disconnected with lastError", 60, bad_reported, interval=1.0
        )
        r4 = bad.routers(status)["r4"]
        assert "refused" in r4["lastError"].lower() or "connect" in r4["lastError"].lower(), r4
        assert bad.condition("Degraded", status) == "True"
        assert bad.condition("RoutersConnected", status) == "False"
        # Its three good routers still serve it.
        assert bad.routers(bad.wait_condition("Ready", "True", 60))["r4"]["state"] != "Established"
        assert len({d.b32() for d in dests.values()}) == 3
        print(f"many: 2 good Ready; bad r4 {r4['state']}: {r4['lastError']}")
