"""The standalone balancer: manifest loading, and whole runs against fake routers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakerouter import FakeRouter, eventually, make_leases
from i2p_multihome.dataplane import remembered
from i2p_multihome.standalone import ManifestError, load_manifest, run_standalone
from i2p_multihome.streaming.routes import RememberedClient
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys


def manifest_document(routers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"routers": routers, **spec},
    }


def router_entry(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "i2cp": {"host": "127.0.0.1", "port": port}, **extra}


def write_yaml(path: Path, *documents: Any) -> str:
    path.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    return str(path)


TWO_ROUTERS = [router_entry("a", 7654), router_entry("b", 7655)]


# --- load_manifest -------------------------------------------------------------------------


def test_load_manifest_skips_other_documents(tmp_path: Path) -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    path = write_yaml(
        tmp_path / "m.yaml",
        other,
        manifest_document(
            TWO_ROUTERS, leaseSet={"maxLeases": 8}, tunnels={"inbound": {"quantity": 4}}
        ),
    )
    manifest = load_manifest(path)
    assert manifest.metadata.name == "web"
    assert [r.name for r in manifest.spec.routers] == ["a", "b"]
    assert manifest.spec.lease_set.max_leases == 8
    assert manifest.spec.tunnels.inbound.quantity == 4


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            manifest_document([router_entry("a", 1), router_entry("a", 2)]),
            ["spec", "duplicate router names", "'a'"],
            id="duplicate-router-names",
        ),
        pytest.param(
            manifest_document(TWO_ROUTERS, tunnels={"inbound": {"quantity": 0}}),
            ["spec.tunnels.inbound.quantity", "greater than or equal to 1"],
            id="quantity-0",
        ),
        pytest.param(
            manifest_document(TWO_ROUTERS, tunnels={"outbound": {"quantity": 17}}),
            ["spec.tunnels.outbound.quantity", "less than or equal to 16"],
            id="quantity-17",
        ),
        pytest.param(
            manifest_document(TWO_ROUTERS, leaseSet={"maxLeases": 17}),
            ["spec.leaseSet.maxLeases", "less than or equal to 16"],
            id="17-max-leases",
        ),
        pytest.param(
            manifest_document([]),
            ["spec.routers", "at least 1"],
            id="no-routers",
        ),
        pytest.param(
            {**manifest_document([]), "spec": {}},
            ["exactly one of spec.routers", "spec.routersFrom"],
            id="routers-missing",
        ),
        pytest.param(
            {
                **manifest_document([]),
                "spec": {"routersFrom": {"service": {"name": "i2pd", "port": "i2cp"}}},
            },
            ["spec.routersFrom", "only the operator", "list them in spec.routers"],
            id="routers-from-a-service",
        ),
        pytest.param(
            manifest_document([router_entry("a", 1, publish=False)]),
            ["spec.routers", "publish: true"],
            id="no-publishing-router",
        ),
        pytest.param(
            manifest_document([router_entry("A_b", 1)]),
            ["spec.routers.0.name"],
            id="bad-router-name",
        ),
        pytest.param(
            manifest_document([router_entry("a", 70000)]),
            ["spec.routers.0.i2cp.port"],
            id="bad-port",
        ),
        pytest.param(
            {**manifest_document(TWO_ROUTERS), "spec": {"routers": TWO_ROUTERS, "tunels": {}}},
            ["spec.tunels", "Extra inputs"],
            id="misspelt-field",
        ),
        pytest.param(
            {**manifest_document(TWO_ROUTERS), "apiVersion": "multihome.i2p/v1"},
            ["apiVersion", "multihome.i2p/v1alpha1"],
            id="wrong-api-version",
        ),
        pytest.param(
            {**manifest_document(TWO_ROUTERS), "kind": "MultihomedDestinations"},
            ["kind", "MultihomedDestination", "found kind: MultihomedDestinations"],
            id="wrong-kind",
        ),
    ],
)
def test_load_manifest_errors_name_the_field(
    tmp_path: Path, document: dict[str, Any], expected: list[str]
) -> None:
    path = write_yaml(tmp_path / "bad.yaml", document)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = str(caught.value)
    assert message.startswith(path)
    for part in expected:
        assert part in message, message


def test_load_manifest_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing\.yaml"):
        load_manifest(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"broken\.yaml"):
        load_manifest(str(broken))


# --- run_standalone ------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def routers() -> AsyncIterator[list[FakeRouter]]:
    started = [await FakeRouter(name, leases=make_leases(name, 3)).start() for name in ("r1", "r2")]
    yield started
    for router in started:
        await router.close()


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return document


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    [found] = [c for c in status["conditions"] if c["type"] == kind]
    return found


def ready(path: Path, routers_with_leases: int) -> bool:
    status = read_status(path)
    return (
        status is not None
        and condition(status, "Ready")["status"] == "True"
        and sum(1 for r in status["routers"] if r["leases"]) == routers_with_leases
    )


async def test_run_standalone_writes_status_and_stops_on_sigterm(
    tmp_path: Path, routers: list[FakeRouter]
) -> None:
    manifest_path = write_yaml(
        tmp_path / "m.yaml",
        manifest_document(
            [router_entry(r.name, r.port) for r in routers] + [router_entry("down", closed_port())]
        ),
    )
    manifest = load_manifest(manifest_path)
    keys_path, status_path = tmp_path / "keys.json", tmp_path / "status.json"

    task = asyncio.create_task(run_standalone(manifest, str(keys_path), status_path))
    await eventually(lambda: ready(status_path, 2), 5.0, "Ready=True with two routers' leases")
    status = read_status(status_path)
    assert status is not None

    keys = DestinationKeys.from_json(keys_path.read_text(encoding="utf-8"))
    assert stat.S_IMODE(os.stat(keys_path).st_mode) == 0o600
    assert status["destination"] == {
        "b32": keys.destination.b32,
        "hash": b64encode(keys.destination.hash),
    }
    lease_set = status["leaseSet"]
    assert lease_set["leases"] >= 3
    assert lease_set["routers"]
    assert set(lease_set["routers"]) <= {"r1", "r2"}
    assert lease_set["publishes"] >= 1
    for stamp in (lease_set["published"], lease_set["expires"]):
        assert stamp.endswith("Z") and "T" in stamp
    assert lease_set["expires"] > lease_set["published"]

    by_name = {r["name"]: r for r in status["routers"]}
    assert list(by_name) == ["r1", "r2", "down"]
    for name in ("r1", "r2"):
        assert by_name[name]["state"] == "Established"
        assert by_name[name]["version"].startswith("unknown (echoed")
        assert by_name[name]["leases"] == 3
        assert "lastError" not in by_name[name]
    assert by_name["down"]["state"] in ("Disconnected", "Connecting")
    assert by_name["down"]["leases"] == 0
    assert by_name["down"]["lastError"]

    tunnels = status["tunnels"]
    assert len(tunnels) == 6
    assert {t["router"] for t in tunnels} == {"r1", "r2"}
    for tunnel in tunnels:
        assert set(tunnel) == {"router", "gateway", "tunnelId", "expires", "live", "published"}
        assert tunnel["live"] is True
        assert len(tunnel["gateway"]) == 44
        assert tunnel["tunnelId"] in (1000, 1001, 1002)
    assert sum(t["published"] for t in tunnels) == lease_set["leases"]

    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["LeaseSetPublished"]["status"] == "True"
    assert conditions["RoutersConnected"]["status"] == "False"
    assert "down" in conditions["RoutersConnected"]["message"]
    assert conditions["Degraded"]["status"] == "True"
    for cond in conditions.values():
        assert cond["lastTransitionTime"].endswith("Z")
        assert cond["reason"]

    # SIGTERM: sessions destroyed, final status written, the coroutine returns.
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 8.0)

    for router in routers:
        assert [m.session_id for m in router.destroys] == router.session_ids
    final = read_status(status_path)
    assert final is not None
    assert {r["name"]: r["state"] for r in final["routers"]}["r1"] != "Established"
    assert condition(final, "Ready")["status"] == "False"


async def test_run_standalone_reuses_key_file(tmp_path: Path, routers: list[FakeRouter]) -> None:
    manifest = load_manifest(
        write_yaml(
            tmp_path / "m.yaml", manifest_document([router_entry(r.name, r.port) for r in routers])
        )
    )
    keys_path, status_path = tmp_path / "keys.json", tmp_path / "status.json"
    seen: list[str] = []

    for _ in range(2):
        status_path.unlink(missing_ok=True)
        task = asyncio.create_task(run_standalone(manifest, str(keys_path), status_path))
        await eventually(lambda: ready(status_path, 2), 5.0, "Ready=True")
        status = read_status(status_path)
        assert status is not None
        seen.append(status["destination"]["b32"])
        content = keys_path.read_bytes()
        task.cancel()  # the other way out: cancellation still writes a final status
        with pytest.raises(asyncio.CancelledError):
            await task
        assert read_status(status_path) is not None
        assert keys_path.read_bytes() == content
        # Cancelled without DestroySession: a fresh run must wait for the routers to drop
        # the old sessions, as i2pd refuses a destination it still hosts.
        for router in routers:
            await eventually(lambda r=router: not r.sessions, 2.0, "old session gone")

    assert seen[0] == seen[1]
    keys = DestinationKeys.from_json(keys_path.read_text(encoding="utf-8"))
    assert keys.destination.b32 == seen[0]
    assert stat.S_IMODE(os.stat(keys_path).st_mode) == 0o600


async def test_run_standalone_keeps_peer_profiles_in_its_file(
    tmp_path: Path, routers: list[FakeRouter], caplog: pytest.LogCaptureFixture
) -> None:
    manifest = load_manifest(
        write_yaml(
            tmp_path / "m.yaml", manifest_document([router_entry(r.name, r.port) for r in routers])
        )
    )
    keys_path, status_path = tmp_path / "keys.json", tmp_path / "status.json"
    profiles_path = tmp_path / "profiles.json"
    gateways = {b64encode(lease.gateway) for r in routers for lease in r.leases}

    profiles_path.write_text("{not json", encoding="utf-8")  # a damaged file: start afresh
    task = asyncio.create_task(run_standalone(manifest, str(keys_path), status_path, profiles_path))
    await eventually(lambda: ready(status_path, 2), 5.0, "Ready=True")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 8.0)
    warned = [r.getMessage() for r in caplog.records]
    assert "peer profiles unreadable, starting afresh" in warned
    saved = json.loads(profiles_path.read_text(encoding="utf-8"))
    assert {p["peer"] for p in saved["peers"]} == gateways
    assert {b for p in saved["peers"] for b in p["builders"]} == {"r1", "r2"}

    # The next run starts from them, and counts the new sessions' tunnels on top.
    for router in routers:
        await eventually(lambda r=router: not r.sessions, 2.0, "old session gone")
    caplog.clear()
    status_path.unlink()
    task = asyncio.create_task(run_standalone(manifest, str(keys_path), status_path, profiles_path))
    await eventually(lambda: ready(status_path, 2), 5.0, "Ready=True again")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 8.0)
    assert not any("peer profiles" in r.getMessage() for r in caplog.records)
    again = json.loads(profiles_path.read_text(encoding="utf-8"))
    assert {p["peer"]: p["built"] for p in again["peers"]} == {
        p["peer"]: pytest.approx(p["built"] + 1, rel=1e-3) for p in saved["peers"]
    }


async def test_run_standalone_keeps_its_recent_clients_in_a_file_only_it_reads(
    tmp_path: Path, routers: list[FakeRouter], caplog: pytest.LogCaptureFixture
) -> None:
    manifest = load_manifest(
        write_yaml(
            tmp_path / "m.yaml", manifest_document([router_entry(r.name, r.port) for r in routers])
        )
    )
    keys_path, status_path = tmp_path / "keys.json", tmp_path / "status.json"
    clients_path = tmp_path / "clients.json"
    client = DestinationKeys.generate().destination
    now = time.time()
    clients_path.write_text("[damaged", encoding="utf-8")
    task = asyncio.create_task(
        run_standalone(manifest, str(keys_path), status_path, None, clients_path)
    )
    await eventually(lambda: ready(status_path, 2), 5.0, "Ready=True")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 8.0)
    assert "recent clients unreadable, starting without them" in caplog.text
    assert remembered.from_json_text(clients_path.read_text(encoding="utf-8")) == []
    assert stat.S_IMODE(os.stat(clients_path).st_mode) == 0o600

    # A client of the previous run, heard 10 s before this one started: pinged, and kept.
    kept = RememberedClient(client, now - 300, now - 10)
    clients_path.write_text(remembered.to_json_text([kept]), encoding="utf-8")
    os.chmod(clients_path, 0o644)
    for router in routers:
        await eventually(lambda r=router: not r.sessions, 2.0, "old session gone")
    pinged: list[str] = []
    for router in routers:
        router.send_listeners.append(lambda m, r=router: pinged.append(r.name))
    task = asyncio.create_task(
        run_standalone(manifest, str(keys_path), status_path, None, clients_path)
    )
    await eventually(lambda: len(pinged) == 1, 5.0, "the client pinged through one router")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 8.0)
    [again] = remembered.from_json_text(clients_path.read_text(encoding="utf-8"))
    assert again.address == client
    assert again.last_heard_s == pytest.approx(kept.last_heard_s, abs=0.01)
    assert stat.S_IMODE(os.stat(clients_path).st_mode) == 0o600
