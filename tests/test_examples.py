"""The examples are valid MultihomedDestinations, their Secrets hold what the operator reads,
and the i2pd key-import example really imports an i2pd key file."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from i2p_multihome.k8s import secrets
from i2p_multihome.model.v1alpha1 import MultihomedDestinationManifest, RouterImplementation

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DATA = Path(__file__).resolve().parent / "data"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def example(name: str) -> tuple[MultihomedDestinationManifest, dict[str, dict[str, Any]]]:
    """The example's MultihomedDestination and its Secrets by name."""
    docs = documents(ROOT / "examples" / name)
    (mhd,) = [d for d in docs if d["kind"] == "MultihomedDestination"]
    found = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    return MultihomedDestinationManifest.model_validate(mhd), found


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_valid_manifest(path: Path) -> None:
    docs = documents(path)
    assert {d["kind"] for d in docs} <= {"MultihomedDestination", "Secret"}
    for doc in docs:
        if doc["kind"] == "MultihomedDestination":
            MultihomedDestinationManifest.model_validate(doc)
        else:
            assert doc["apiVersion"] == "v1" and doc["type"] == "Opaque"


def test_examples_cover_java_tls_credentials_and_key_import() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "multihomed-destination.yaml", "java-routers.yaml", "i2pd-key-import.yaml",
        "client-affinity.yaml", "routers-from-service.yaml",
    }  # fmt: skip


def test_routers_from_example_follows_the_charts_router_service() -> None:
    manifest, _ = example("routers-from-service.yaml")
    assert manifest.spec.routers == []
    source = manifest.spec.routers_from
    assert source is not None
    # The chart's headless Service for release `i2p-multihome` and its I2CP port's name.
    assert (source.service.name, source.service.port) == ("i2p-multihome-i2pd", "i2cp")
    assert source.implementation is RouterImplementation.I2PD


def test_affinity_example_has_serving_routers_and_a_publisher() -> None:
    manifest, _ = example("client-affinity.yaml")
    assert manifest.spec.lease_set.client_affinity
    publishing = [r.publish for r in manifest.spec.routers]
    assert True in publishing and False in publishing


def test_java_example_uses_tls_and_the_credentials_secret_it_ships() -> None:
    manifest, found = example("java-routers.yaml")
    for router in manifest.spec.routers:
        assert router.implementation is RouterImplementation.JAVA
        assert router.i2cp.tls is True
        ref = router.i2cp.credentials_secret_ref
        assert ref is not None and ref.name in found
        assert set(found[ref.name]["stringData"]) == {"username", "password"}


def as_v1_secret(doc: dict[str, Any]) -> client.V1Secret:
    data = dict(doc.get("data") or {})
    for key, value in (doc.get("stringData") or {}).items():
        data[key] = base64.b64encode(value.encode()).decode()
    return client.V1Secret(metadata=client.V1ObjectMeta(name=doc["metadata"]["name"]), data=data)


def test_java_example_credentials_are_read_as_the_operator_reads_them() -> None:
    _, found = example("java-routers.yaml")
    (doc,) = found.values()

    class Core:
        def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
            assert name == doc["metadata"]["name"]
            return as_v1_secret(doc)

    username, password = secrets.router_credentials(Core(), "default", doc["metadata"]["name"])  # type: ignore[arg-type]
    assert (username, password) == (doc["stringData"]["username"], doc["stringData"]["password"])


def test_key_import_example_imports_an_i2pd_dat_file() -> None:
    manifest, found = example("i2pd-key-import.yaml")
    assert manifest.spec.keys.secret_ref is not None
    doc = found[manifest.spec.keys.secret_ref.name]
    ((key, placeholder),) = doc["data"].items()
    assert key.endswith(".dat")
    # The placeholder is not base64, so the example can't be applied without a real key.
    with pytest.raises(ValueError):
        base64.b64decode(placeholder, validate=True)
    filled = {
        **doc,
        "data": {key: base64.b64encode((DATA / "i2pd-ed25519.dat").read_bytes()).decode()},
    }

    class Core:
        def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
            return as_v1_secret(filled)

    result = secrets.load_or_create_keys(Core(), "default", doc["metadata"]["name"], owner=None)  # type: ignore[arg-type]
    assert result.created is False
    assert result.keys.destination.b32 == (DATA / "i2pd-ed25519.b32").read_text().strip()
