"""The demo's pieces that need neither root nor a cluster (e2e/test_demo.py runs it whole)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i2p_multihome.model.v1alpha1 import MultihomedDestinationManifest
from i2p_multihome_dev import demo
from i2p_multihome_dev.operator_process import OperatorProcess
from i2p_multihome_dev.repo import CHART_DIR


def test_example_manifest_points_the_example_at_testnet_routers() -> None:
    hosts = {"r1": "198.18.7.2", "r2": "198.18.7.3", "r3": "198.18.7.4", "r4": "198.18.7.5"}
    manifest = MultihomedDestinationManifest.model_validate(demo.example_manifest(hosts))
    assert [(r.name, r.i2cp.host, r.i2cp.port) for r in manifest.spec.routers] == [
        (name, host, 7654) for name, host in hosts.items()
    ]
    # The example's own settings are kept: two of its four routers don't publish.
    assert [r.publish for r in manifest.spec.routers] == [True, True, False, False]
    assert manifest.spec.keys.secret_ref is not None
    assert manifest.spec.keys.secret_ref.name == "demo-keys"


def test_example_manifest_serves_its_ports_from_the_demo_backends() -> None:
    backends = demo.DemoBackends(1, 2, "198.18.0.1", 8080, 7007)
    manifest = demo.example_manifest({"r1": "198.18.7.2"}, backends=backends)
    ports = MultihomedDestinationManifest.model_validate(manifest).spec.ports
    served = {(p.name, p.protocol.value, p.backend.host, p.backend.port) for p in ports}
    assert served == {
        ("http", "Stream", "198.18.0.1", 8080),
        ("echo", "Datagram", "198.18.0.1", 7007),
    }


def test_example_manifest_with_fewer_routers_keeps_the_first_ones() -> None:
    manifest = demo.example_manifest({"r5": "198.18.7.7", "r6": "198.18.7.8"}, name="x")
    parsed = MultihomedDestinationManifest.model_validate(manifest)
    assert [r.name for r in parsed.spec.routers] == ["r5", "r6"]
    assert all(r.publish for r in parsed.spec.routers)
    assert parsed.metadata.name == "x"
    with pytest.raises(demo.DemoError):
        demo.example_manifest({f"r{i}": "198.18.7.9" for i in range(9)})


def test_the_chart_and_example_are_found_from_the_test_bed() -> None:
    assert (CHART_DIR / "Chart.yaml").is_file()
    assert demo.EXAMPLE.is_file()


def operator_record(pid: int = 123) -> OperatorProcess:
    return OperatorProcess("operator", pid, 456, 8080, 9090, "/k", "/log")


def test_demo_state_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    assert demo.DemoState.load(tmp_path) is None
    state = demo.DemoState(operator_record())
    state.save(tmp_path)
    assert demo.DemoState.load(tmp_path) == state
    with_backends = demo.DemoState(operator_record(), demo.DemoBackends(7, 8, "h", 1, 2))
    with_backends.save(tmp_path)
    assert demo.DemoState.load(tmp_path) == with_backends
    (tmp_path / "demo.json").write_text(json.dumps({"operator": {"pid": 1}}))
    with pytest.raises(demo.DemoError, match="unreadable"):
        demo.DemoState.load(tmp_path)
    (tmp_path / "demo.json").write_text("[]")
    with pytest.raises(demo.DemoError, match="unreadable"):
        demo.DemoState.load(tmp_path)


def test_down_of_nothing_is_a_no_op(tmp_path: Path) -> None:
    demo.demo_down(tmp_path / "never-up")
    assert not (tmp_path / "never-up").exists()


def test_a_dead_operator_is_not_running_or_healthy() -> None:
    ghost = operator_record(pid=2**22 + 7)
    assert not ghost.running()
    assert not ghost.healthy()
    assert ghost.stop() < 1.0  # nothing to stop: returns at once
