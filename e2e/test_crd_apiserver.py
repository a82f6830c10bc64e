"""The generated CRD in a real kube-apiserver: accepted, defaults filled, bad manifests
refused with a message naming the field, status subresource and printer columns working.

Unknown fields: kubectl's default (`--validate=strict`, the API's fieldValidation=Strict)
REJECTS them; with fieldValidation=Warn they are PRUNED and the server answers with a warning.
The tests pin both. The CRD is left installed after the module (other modules may use it);
the objects are deleted.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from e2e.fixtures_cluster import KubeCluster
from i2p_multihome.balancer.policy import SelectedLease
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.balancer.status import build_status
from i2p_multihome.model import crd
from i2p_multihome.model.v1alpha1 import (
    ROUTERS_FROM_AFFINITY_MESSAGE,
    ROUTERS_SOURCE_MESSAGE,
    MultihomedDestinationManifest,
    MultihomedDestinationStatus,
    RouterState,
)
from i2p_multihome.wire.structures import Lease
from i2p_multihome_dev.kube import Namespace, install_crds, without_empty
from i2p_multihome_dev.kube import kubectl as kubectl_with
from i2p_multihome_dev.repo import CRD_FILE, EXAMPLES_DIR

pytestmark = pytest.mark.cluster

EXAMPLE = EXAMPLES_DIR / "multihomed-destination.yaml"
B32 = "e" * 52 + ".b32.i2p"


def kubectl(
    kube: KubeCluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return kubectl_with(kube.kubeconfig, *args, stdin=stdin, check=check)


@dataclass(frozen=True)
class Cluster:
    kube: KubeCluster
    namespace: str

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kube, f"--namespace={self.namespace}", *args, stdin=stdin, check=check)

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.kubectl("get", "mhd", name, "-o", "json").stdout)
        return obj

    def patch_status(self, name: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "patch",
            "mhd",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(body),
            check=False,
        )


@pytest.fixture(scope="module")
def mhd(kube_cluster: KubeCluster) -> Iterator[Cluster]:
    """The CRD applied and Established, and a namespace of this module's own."""
    install_crds(kube_cluster.kubeconfig, CRD_FILE)
    namespace = Namespace(kube_cluster.kubeconfig, f"crd-{uuid.uuid4().hex[:8]}").create()
    cluster = Cluster(kube_cluster, namespace.name)
    yield cluster
    cluster.kubectl("delete", "mhd", "--all", "--wait=false")
    # Without a namespace controller the local cluster leaves it Terminating; harmless.
    kubectl(kube_cluster, "delete", "namespace", namespace.name, "--wait=false")
    namespace.close()


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": name},
        "spec": spec,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_crd_is_structural_and_established(mhd: Cluster) -> None:
    stored = json.loads(kubectl(mhd.kube, "get", "crd", crd.CRD_NAME, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert "NonStructuralSchema" not in conditions
    assert stored["status"]["acceptedNames"]["shortNames"] == ["mhd"]


def test_example_is_accepted_and_defaulted_like_the_model(mhd: Cluster) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(example))
    stored = mhd.get(example["metadata"]["name"])
    model = MultihomedDestinationManifest.model_validate(example).spec
    assert stored["spec"] == without_empty(model.model_dump(by_alias=True, mode="json"))
    # Spelled out, so a default lost on both sides still fails here.
    router = stored["spec"]["routers"][0]
    assert router["publish"] is True
    assert router["implementation"] == "auto"
    assert router["i2cp"]["tls"] is False
    assert stored["spec"]["routers"][2]["publish"] is False
    assert stored["spec"]["tunnels"]["inbound"] == {"quantity": 3, "length": 2, "lengthVariance": 0}
    assert stored["spec"]["leaseSet"] == {
        "maxLeases": 16,
        "strategy": "FairFreshest",
        "clientAffinity": False,
    }
    assert stored["spec"]["peerPolicy"] == {"gateways": "native"}


def test_minimal_spec_gets_every_default(mhd: Cluster) -> None:
    name = unique("minimal")
    spec = {"routers": [{"name": "r0", "i2cp": {"host": "r0.example"}}]}
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(manifest(name, spec)))
    stored = mhd.get(name)["spec"]
    assert stored == {
        "keys": {},
        "routers": [
            {
                "name": "r0",
                "i2cp": {"host": "r0.example", "port": 7654, "tls": False},
                "publish": True,
                "implementation": "auto",
            }
        ],
        "tunnels": {
            "inbound": {"quantity": 3, "length": 3, "lengthVariance": 0},
            "outbound": {"quantity": 3, "length": 3, "lengthVariance": 0},
        },
        "leaseSet": {"maxLeases": 16, "strategy": "FairFreshest", "clientAffinity": False},
        "peerPolicy": {"gateways": "native"},
    }
    model = MultihomedDestinationManifest.model_validate(manifest(name, spec)).spec
    assert stored == without_empty(model.model_dump(by_alias=True, mode="json"))


ROUTERS_FROM: dict[str, Any] = {"service": {"name": "i2pd", "port": "i2cp"}}
VALID_SPEC: dict[str, Any] = {
    "routers": [
        {"name": "i2pd-0", "i2cp": {"host": "i2pd-0.i2pd"}},
        {"name": "i2pd-1", "i2cp": {"host": "i2pd-1.i2pd"}, "publish": False},
    ]
}


@dataclass(frozen=True)
class Invalid:
    """A manifest the API server must refuse, and the lines its answer must contain."""

    id: str
    spec: dict[str, Any]
    errors: tuple[str, ...]
    name: str = "bad"
    # The standalone balancer reads manifests through the model: it must refuse them too.
    model_rejects: bool = True
    flags: tuple[str, ...] = field(default=())


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_SPEC)
    spec.update(changes)
    return spec


INVALID = [
    Invalid(
        "duplicate-router-names",
        _spec(
            routers=[
                {"name": "i2pd-0", "i2cp": {"host": "a"}},
                {"name": "i2pd-0", "i2cp": {"host": "b"}},
            ]
        ),
        (
            'spec.routers[1]: Duplicate value: map[string]interface {}{"name":"i2pd-0"}',
            f'spec.routers: Invalid value: "array": {crd.UNIQUE_ROUTER_NAMES_MESSAGE}',
        ),
    ),
    Invalid(
        "max-leases-17",
        _spec(leaseSet={"maxLeases": 17}),
        (
            "spec.leaseSet.maxLeases: Invalid value: 17: spec.leaseSet.maxLeases in body "
            "should be less than or equal to 16",
        ),
    ),
    Invalid(
        "tunnel-quantity-0",
        _spec(tunnels={"inbound": {"quantity": 0}}),
        (
            "spec.tunnels.inbound.quantity: Invalid value: 0: spec.tunnels.inbound.quantity "
            "in body should be greater than or equal to 1",
        ),
    ),
    Invalid(
        "tunnel-length-8",
        _spec(tunnels={"outbound": {"length": 8}}),
        (
            "spec.tunnels.outbound.length: Invalid value: 8: spec.tunnels.outbound.length "
            "in body should be less than or equal to 7",
        ),
    ),
    Invalid(
        "missing-routers",
        {"leaseSet": {"maxLeases": 4}},
        (f'spec: Invalid value: "object": {ROUTERS_SOURCE_MESSAGE}',),
    ),
    Invalid(
        "routers-and-routers-from",
        _spec(routersFrom=ROUTERS_FROM),
        (f'spec: Invalid value: "object": {ROUTERS_SOURCE_MESSAGE}',),
    ),
    Invalid(
        "routers-from-with-client-affinity",
        {"routersFrom": ROUTERS_FROM, "leaseSet": {"clientAffinity": True}},
        (f'spec: Invalid value: "object": {ROUTERS_FROM_AFFINITY_MESSAGE}',),
    ),
    Invalid(
        "routers-from-shared-zero-hop",
        {
            "routersFrom": ROUTERS_FROM,
            "peerPolicy": {"gateways": "shared"},
            "tunnels": {"inbound": {"length": 0}},
        },
        (f'spec: Invalid value: "object": {crd.SHARED_ZERO_HOP_MESSAGE}',),
    ),
    Invalid(
        "routers-from-port-number",
        {"routersFrom": {"service": {"name": "i2pd", "port": 7654}}},
        (
            'spec.routersFrom.service.port: Invalid value: "integer": '
            'spec.routersFrom.service.port in body must be of type string: "integer"',
        ),
    ),
    Invalid(
        "routers-from-without-service",
        {"routersFrom": {"implementation": "i2pd"}},
        ("spec.routersFrom.service: Required value",),
    ),
    Invalid(
        "empty-routers",
        _spec(routers=[]),
        (
            "spec.routers: Invalid value: 0: spec.routers in body should have at least 1 items",
            f'spec.routers: Invalid value: "array": {crd.PUBLISHING_ROUTER_MESSAGE}',
        ),
    ),
    Invalid(
        "no-publishing-router",
        _spec(
            routers=[
                {"name": "i2pd-0", "i2cp": {"host": "a"}, "publish": False},
                {"name": "i2pd-1", "i2cp": {"host": "b"}, "publish": False},
            ]
        ),
        (f'spec.routers: Invalid value: "array": {crd.PUBLISHING_ROUTER_MESSAGE}',),
    ),
    Invalid(
        "client-affinity-without-a-serving-router",
        _spec(
            leaseSet={"clientAffinity": True},
            routers=[
                {"name": "i2pd-0", "i2cp": {"host": "a"}},
                {"name": "i2pd-1", "i2cp": {"host": "b"}},
            ],
        ),
        (f'spec: Invalid value: "object": {crd.CLIENT_AFFINITY_MESSAGE}',),
    ),
    Invalid(
        "shared-gateways-on-mixed-implementations",
        _spec(
            peerPolicy={"gateways": "shared"},
            routers=[
                {"name": "i2pd-0", "i2cp": {"host": "a"}, "implementation": "i2pd"},
                {"name": "java-0", "i2cp": {"host": "b"}, "implementation": "java"},
            ],
        ),
        (f'spec: Invalid value: "object": {crd.SHARED_MIXED_MESSAGE}',),
    ),
    Invalid(
        "shared-gateways-with-zero-hop-leases",
        _spec(
            peerPolicy={"gateways": "shared"},
            tunnels={"inbound": {"length": 1, "lengthVariance": -1}},
        ),
        (f'spec: Invalid value: "object": {crd.SHARED_ZERO_HOP_MESSAGE}',),
    ),
    Invalid(
        "unknown-gateway-policy",
        _spec(peerPolicy={"gateways": "random"}),
        (
            'spec.peerPolicy.gateways: Unsupported value: "random": '
            'supported values: "native", "shared"',
        ),
    ),
    Invalid(
        "router-name-not-dns-label",
        _spec(routers=[{"name": "I2PD_0", "i2cp": {"host": "a"}}]),
        (
            'spec.routers[0].name: Invalid value: "I2PD_0": '
            "spec.routers[0].name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
    ),
    Invalid(
        "unknown-field-strict",
        _spec(bogus=1),
        ('strict decoding error: unknown field "spec.bogus"',),
        flags=("--validate=strict",),
    ),
    Invalid(
        "unknown-nested-field-kubectl-default",
        _spec(routers=[{"name": "i2pd-0", "i2cp": {"host": "a", "bogus": 1}}]),
        ('strict decoding error: unknown field "spec.routers[0].i2cp.bogus"',),
    ),
    Invalid(
        "name-longer-than-63",
        _spec(),
        ("metadata.name: Too long: may not be more than 63 bytes",),
        name="n" * 64,
        # ObjectMeta in the model does not bound the name; the nickname limit is the CRD's.
        model_rejects=False,
    ),
]


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(mhd: Cluster, case: Invalid) -> None:
    body = manifest(case.name, case.spec)
    result = mhd.kubectl("create", *case.flags, "-f", "-", stdin=json.dumps(body), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for error in case.errors:
        assert error in result.stderr, f"{error!r} not in:\n{result.stderr}"
    assert mhd.kubectl("get", "mhd", case.name, check=False).returncode != 0
    if case.model_rejects:
        with pytest.raises(ValidationError):
            MultihomedDestinationManifest.model_validate(body)


@pytest.mark.parametrize(
    "spec",
    [
        # One router: its zero-hop lease names only itself, as a single router's would.
        {
            "peerPolicy": {"gateways": "shared"},
            "tunnels": {"inbound": {"length": 0}},
            "routers": [{"name": "r0", "i2cp": {"host": "a"}}],
        },
        # auto beside java: what auto resolves to is the operator's concern, not the schema's.
        _spec(
            peerPolicy={"gateways": "shared"},
            routers=[
                {"name": "r0", "i2cp": {"host": "a"}},
                {"name": "r1", "i2cp": {"host": "b"}, "implementation": "java"},
            ],
        ),
        # Mixed implementations and zero hops are fine without `shared`.
        _spec(
            tunnels={"inbound": {"length": 0}},
            routers=[
                {"name": "r0", "i2cp": {"host": "a"}, "implementation": "i2pd"},
                {"name": "r1", "i2cp": {"host": "b"}, "implementation": "java"},
            ],
        ),
    ],
    ids=["shared-one-router-zero-hop", "shared-auto-beside-java", "native-mixed-zero-hop"],
)
def test_gateway_policy_specs_the_rules_allow(mhd: Cluster, spec: dict[str, Any]) -> None:
    name = unique("gateways")
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(manifest(name, spec)))
    assert mhd.get(name)["spec"]["peerPolicy"]["gateways"] == spec.get("peerPolicy", {}).get(
        "gateways", "native"
    )
    MultihomedDestinationManifest.model_validate(manifest(name, spec))


def test_routers_from_is_accepted_and_defaulted_like_the_model(mhd: Cluster) -> None:
    name = unique("routers-from")
    body = manifest(name, {"routersFrom": ROUTERS_FROM})
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(body))
    stored = mhd.get(name)["spec"]
    assert "routers" not in stored
    assert stored["routersFrom"] == {**ROUTERS_FROM, "implementation": "auto", "tls": False}
    model = MultihomedDestinationManifest.model_validate(body).spec
    assert stored == without_empty(model.model_dump(by_alias=True, mode="json"))


def test_keys_cannot_be_changed_after_creation(mhd: Cluster) -> None:
    name = unique("keys")
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(manifest(name, _spec())))
    patch = {"spec": {"keys": {"secretRef": {"name": "other-keys"}}}}
    result = mhd.kubectl("patch", "mhd", name, "--type=merge", "-p", json.dumps(patch), check=False)
    assert result.returncode != 0, result.stdout
    assert f'spec.keys: Invalid value: "object": {crd.IMMUTABLE_KEYS_MESSAGE}' in result.stderr
    # Everything else stays editable.
    editable = {"spec": {"leaseSet": {"maxLeases": 8}}}
    mhd.kubectl("patch", "mhd", name, "--type=merge", "-p", json.dumps(editable))
    assert mhd.get(name)["spec"]["leaseSet"]["maxLeases"] == 8


def test_unknown_field_is_pruned_with_a_warning_when_not_strict(mhd: Cluster) -> None:
    name = unique("pruned")
    spec = _spec(bogus=1)
    spec["routers"][0]["i2cp"]["alsoBogus"] = "x"
    result = mhd.kubectl(
        "create", "--validate=warn", "-f", "-", stdin=json.dumps(manifest(name, spec))
    )
    assert 'unknown field "spec.bogus"' in result.stderr
    assert 'unknown field "spec.routers[0].i2cp.alsoBogus"' in result.stderr
    stored = mhd.get(name)["spec"]
    assert "bogus" not in stored
    assert "alsoBogus" not in stored["routers"][0]["i2cp"]
    assert stored["routers"][0]["i2cp"]["host"] == "i2pd-0.i2pd"


def snapshot_status(now_s: float) -> MultihomedDestinationStatus:
    """What the operator would write for 3 of 4 routers up and 5 leases published."""
    lease_end_ms = int((now_s + 540) * 1000)

    def leases(router: int, count: int) -> tuple[Lease, ...]:
        return tuple(
            Lease(bytes([router]) * 32, 1000 * router + i, lease_end_ms - i) for i in range(count)
        )

    routers = (
        RouterSnapshot("i2pd-0", RouterState.ESTABLISHED, "0.9.66", leases(0, 3), None, now_s),
        RouterSnapshot("i2pd-1", RouterState.ESTABLISHED, "0.9.66", leases(1, 2), None, now_s),
        RouterSnapshot("i2pd-2", RouterState.ESTABLISHED, "0.9.66", (), None, now_s),
        RouterSnapshot("i2pd-3", RouterState.DISCONNECTED, None, (), "connection refused", now_s),
    )
    published = tuple(SelectedLease(r.name, lease) for r in routers for lease in r.leases)
    snapshot = BalancerSnapshot(
        b32=B32,
        hash_b64="A" * 44,
        routers=routers,
        published=published,
        published_s=int(now_s) - 90,
        expires_s=int(now_s) + 540,
        publishes=2,
        publisher="i2pd-1",
    )
    return build_status(snapshot, now_s, generation=1)


@pytest.fixture(scope="module")
def with_status(mhd: Cluster) -> tuple[str, dict[str, Any]]:
    """An object whose status the operator's own status builder wrote through /status."""
    name = unique("status")
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(manifest(name, _spec())))
    status = snapshot_status(time.time()).to_json_dict()
    result = mhd.patch_status(name, {"status": status})
    assert result.returncode == 0, result.stderr
    return name, status


def test_status_written_through_subresource_round_trips(
    mhd: Cluster, with_status: tuple[str, dict[str, Any]]
) -> None:
    name, status = with_status
    stored = mhd.get(name)
    assert stored["status"] == status, "the status schema pruned or changed a model field"
    assert stored["status"]["routersConnected"] == "3/4"
    assert MultihomedDestinationStatus.model_validate(stored["status"]).to_json_dict() == status


def test_unknown_status_field_is_pruned(
    mhd: Cluster, with_status: tuple[str, dict[str, Any]]
) -> None:
    name, status = with_status
    result = mhd.patch_status(name, {"status": {"bogus": 1, "leaseSet": {"extra": True}}})
    assert result.returncode == 0, result.stderr
    assert 'unknown field "status.bogus"' in result.stderr
    assert mhd.get(name)["status"] == status


def test_invalid_status_is_rejected(mhd: Cluster, with_status: tuple[str, dict[str, Any]]) -> None:
    name, _ = with_status
    result = mhd.patch_status(name, {"status": {"routersConnected": "three of four"}})
    assert result.returncode != 0
    assert 'status.routersConnected: Invalid value: "three of four"' in result.stderr
    duplicate = {"type": "Ready", "status": "True", "reason": "R", "lastTransitionTime": "x"}
    result = mhd.patch_status(name, {"status": {"conditions": [duplicate, duplicate]}})
    assert result.returncode != 0
    assert "status.conditions[1]: Duplicate value" in result.stderr


def test_status_and_spec_are_separate(
    mhd: Cluster, with_status: tuple[str, dict[str, Any]]
) -> None:
    name, status = with_status
    before = mhd.get(name)
    assert mhd.patch_status(name, {"spec": {"leaseSet": {"maxLeases": 2}}}).returncode == 0
    main_resource_status = json.dumps({"status": {"routersConnected": "0/4"}})
    mhd.kubectl("patch", "mhd", name, "--type=merge", "-p", main_resource_status)
    after = mhd.get(name)
    assert after["spec"] == before["spec"]
    assert after["status"] == status
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def table(mhd: Cluster, *args: str) -> dict[str, str]:
    """`kubectl get` as {column: value} for a one-object listing."""
    header, row = mhd.kubectl("get", "mhd", *args).stdout.splitlines()
    columns, values = header.split(), row.split()
    assert len(columns) == len(values), (header, row)
    return dict(zip(columns, values, strict=True))


def test_kubectl_get_prints_the_printer_columns(
    mhd: Cluster, with_status: tuple[str, dict[str, Any]]
) -> None:
    name, status = with_status
    shown = table(mhd, name)
    assert list(shown) == ["NAME", "READY", "ROUTERS", "LEASES", "PUBLISHED", "STREAMS", "AGE"]
    assert shown["NAME"] == name
    assert shown["STREAMS"] == str(status["streams"])
    assert shown["READY"] == "True"
    assert shown["ROUTERS"] == "3/4"
    assert shown["LEASES"] == "5" == str(status["leaseSet"]["leases"])
    # A date column shows the age of the timestamp: published 90 s before the status was made.
    assert re.fullmatch(r"(9\d|1\d\d)s|\dm\d+s", shown["PUBLISHED"]), shown["PUBLISHED"]
    assert re.fullmatch(r"\d+(s|m\d*s?)", shown["AGE"]), shown["AGE"]
    wide = table(mhd, name, "--output=wide")
    assert list(wide) == [*shown, "PUBLISHER", "B32"]
    assert wide["PUBLISHER"] == "i2pd-1" == status["leaseSet"]["publisher"]
    assert wide["B32"] == B32


def test_kubectl_get_before_any_status_shows_empty_columns(mhd: Cluster) -> None:
    name = unique("fresh")
    mhd.kubectl("create", "-f", "-", stdin=json.dumps(manifest(name, _spec())))
    header, row = mhd.kubectl("get", "mhd", name).stdout.splitlines()
    assert header.split() == [
        "NAME", "READY", "ROUTERS", "LEASES", "PUBLISHED", "STREAMS", "AGE"
    ]  # fmt: skip
    # kubectl prints absent values as blanks: only NAME and AGE have text.
    assert len(row.split()) == 2, row
