"""The Helm chart without a cluster: lint, render, the security context, the exact RBAC rules,
the values schema refusing what it should, and the chart's CRD copy matching the generated one.

`helm install` into a real API server, with the operator running on the chart's RBAC, is in
e2e/test_chart_install.py.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from i2p_multihome.model.v1alpha1 import MultihomedDestinationManifest
from i2p_multihome_dev import toolchain

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "i2p-multihome"
TOP_CRDS = ROOT / "crds"
Manifest = dict[str, Any]

# Exactly what the operator uses (found by running it without each rule, see the e2e test).
CORE_RULES = [
    {
        "apiGroups": ["multihome.i2p"],
        "resources": ["multihomeddestinations"],
        "verbs": ["list", "watch", "patch"],
    },
    {
        "apiGroups": ["multihome.i2p"],
        "resources": ["multihomeddestinations/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # spec.routersFrom: the operator indexes EndpointSlices (kopf lists, then watches).
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
]
PEERING_VERBS = ["list", "watch", "patch"]


@pytest.fixture(scope="module")
def helm() -> Path:
    return toolchain.ensure_helm()


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {done.stderr}")
    return done


def render(helm: Path, *sets: str, namespace: str = "ops", check: bool = True) -> list[Manifest]:
    """`helm template` with `--set` values; the rendered documents (crds/ not included)."""
    args = ["template", "rel", str(CHART), f"--namespace={namespace}"]
    # helm built from source defaults Capabilities.KubeVersion to v1.20; say what we target.
    args.append(f"--kube-version={toolchain.KUBE_VERSION}")
    for value in sets:
        args += ["--set", value]
    out = run_helm(helm, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refused(helm: Path, *sets: str) -> str:
    args = ["template", "rel", str(CHART), f"--kube-version={toolchain.KUBE_VERSION}"]
    for value in sets:
        args += ["--set", value]
    done = run_helm(helm, *args, check=False)
    assert done.returncode != 0, f"helm accepted {sets}"
    return done.stderr


def kinds(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = kinds(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s rendered"
    return found[0]


def test_helm_lint_strict_passes(helm: Path) -> None:
    for values in ([], ["--set", "i2pd.enabled=true,peering.enabled=true"]):
        done = run_helm(
            helm, "lint", "--strict", str(CHART), f"--kube-version={toolchain.KUBE_VERSION}",
            *values,
        )  # fmt: skip
        assert "0 chart(s) failed" in done.stdout


def test_default_render_has_the_operator_and_nothing_optional(helm: Path) -> None:
    docs = render(helm)
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy", "Service",
        "ServiceAccount",
    ]  # fmt: skip
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"]["namespace"] == "ops"


def test_deployment_runs_the_operator_cluster_wide_with_liveness(helm: Path) -> None:
    deployment = one(render(helm), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["i2p-multihome"]
    assert container["args"] == [
        "--log-level=INFO",
        "operator",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
    ]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"] == probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    assert ports[probe["port"]] == 8080
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["serviceAccountName"] == "rel-i2p-multihome"
    assert container["image"] == "i2p-multihome-operator:0.1.0"


def assert_hardened(pod: Manifest, container: Manifest) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 65532
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in context["capabilities"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_operator_pod_is_hardened_with_a_writable_tmp(helm: Path) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert_hardened(pod, pod["containers"][0])


def test_i2pd_routers_are_hardened_and_only_the_operator_reaches_i2cp(helm: Path) -> None:
    docs = render(helm, "i2pd.enabled=true", "i2pd.replicas=3")
    statefulset = one(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert_hardened(pod, container)
    assert pod["automountServiceAccountToken"] is False
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["i2cp"] == 7654
    service = next(
        s for s in kinds(docs, "Service") if s["metadata"]["name"] == "rel-i2p-multihome-i2pd"
    )
    assert service["spec"]["clusterIP"] == "None"
    # spec.routersFrom follows readiness: a not-ready router must not be published as ready.
    assert service["spec"]["publishNotReadyAddresses"] is False
    assert service["spec"]["ports"] == [
        {"name": "i2cp", "port": 7654, "targetPort": "i2cp", "protocol": "TCP"}
    ]
    assert statefulset["spec"]["serviceName"] == "rel-i2p-multihome-i2pd"

    policy = router_policy(docs)["spec"]
    assert policy["podSelector"]["matchLabels"] == statefulset["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    operator_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    i2cp_rules = [r for r in policy["ingress"] if {"port": 7654, "protocol": "TCP"} in r["ports"]]
    assert len(i2cp_rules) == 1
    (source,) = i2cp_rules[0]["from"]
    assert set(source) == {"podSelector"}
    selector = source["podSelector"]["matchLabels"]
    assert selector.items() <= operator_labels.items()
    i2pd_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= i2pd_labels.items()
    # No other rule opens 7654, and no rule is open to every port.
    for rule in policy["ingress"]:
        assert rule.get("ports"), "a rule without ports opens every port"
        if rule is not i2cp_rules[0]:
            assert all(p["port"] != 7654 for p in rule["ports"])


def router_policy(docs: list[Manifest]) -> Manifest:
    (policy,) = [p for p in kinds(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-i2pd")]
    return policy


def test_i2pd_network_policy_can_be_turned_off_but_is_on_by_default(helm: Path) -> None:
    off = render(helm, "i2pd.enabled=true", "i2pd.networkPolicy.enabled=false")
    assert [p["metadata"]["name"] for p in kinds(off, "NetworkPolicy")] == ["rel-i2p-multihome"]
    assert router_policy(render(helm, "i2pd.enabled=true"))


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(helm: Path) -> None:
    docs = render(helm)
    role = one(docs, "ClusterRole")
    assert role["rules"] == CORE_RULES
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-i2p-multihome", "namespace": "ops"}
    ]
    assert kinds(docs, "Role") == kinds(docs, "RoleBinding") == []


def test_namespaced_rbac_is_a_role_per_namespace_and_nothing_cluster_wide(helm: Path) -> None:
    docs = render(helm, "watch.allNamespaces=false", "watch.namespaces={a,b}")
    assert kinds(docs, "ClusterRole") == kinds(docs, "ClusterRoleBinding") == []
    roles = kinds(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    for role in roles:
        assert role["rules"] == CORE_RULES
    bindings = kinds(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "ops"
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args
    assert "--all-namespaces" not in args


def test_namespaced_without_a_list_serves_the_release_namespace(helm: Path) -> None:
    docs = render(helm, "watch.allNamespaces=false")
    assert [r["metadata"]["namespace"] for r in kinds(docs, "Role")] == ["ops"]
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ops" in args


def test_peering_adds_only_the_peering_resources_and_rolls_updates(helm: Path) -> None:
    docs = render(helm, "peering.enabled=true", "peering.name=mh", "peering.priority=5")
    assert one(docs, "ClusterRole")["rules"] == [
        *CORE_RULES,
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": PEERING_VERBS},
    ]
    peering = one(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "mh"
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=mh" in args and "--priority=5" in args

    docs = render(helm, "peering.enabled=true", "watch.allNamespaces=false")
    assert one(docs, "Role")["rules"] == [
        *CORE_RULES,
        {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": PEERING_VERBS},
    ]
    assert one(docs, "KopfPeering")["metadata"]["namespace"] == "ops"


def test_no_rule_grants_more_than_listed(helm: Path) -> None:
    """Across every optional feature: no wildcard, no delete, no secret listing."""
    docs = render(
        helm, "peering.enabled=true", "i2pd.enabled=true", "metrics.serviceMonitor.enabled=true"
    )
    docs += render(helm, "peering.enabled=true", "watch.allNamespaces=false")
    for role in kinds(docs, "ClusterRole") + kinds(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"delete", "deletecollection", "update", "escalate", "bind"} & set(
                rule["verbs"]
            )
            if "secrets" in rule["resources"]:
                assert set(rule["verbs"]) == {"get", "create"}


DIGEST = "sha256:" + "ab" * 32


def test_images_are_pinned_by_digest_when_given(helm: Path) -> None:
    docs = render(
        helm, "i2pd.enabled=true", f"image.digest={DIGEST}", f"i2pd.image.digest={DIGEST}"
    )
    operator = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    router = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert operator["image"] == f"i2p-multihome-operator:0.1.0@{DIGEST}"
    assert router["image"] == f"i2p-multihome-i2pd:2.45.1@{DIGEST}"
    assert "/image/digest" in refused(helm, "image.digest=latest")


def test_operator_network_policy_admits_only_probes_and_metrics(helm: Path) -> None:
    policy = one(render(helm), "NetworkPolicy")
    pod_labels = one(render(helm), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}]},
        {"ports": [{"port": 9090, "protocol": "TCP"}]},
    ]
    scraper = "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"
    limited = one(render(helm, scraper), "NetworkPolicy")
    assert limited["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    ]
    no_metrics = one(render(helm, "metrics.enabled=false"), "NetworkPolicy")
    assert no_metrics["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    assert kinds(render(helm, "networkPolicy.enabled=false"), "NetworkPolicy") == []


def test_router_pool_spreads_over_nodes_and_zones_and_limits_disruption(helm: Path) -> None:
    docs = render(helm, "i2pd.enabled=true", "i2pd.replicas=4")
    pod = one(docs, "StatefulSet")["spec"]["template"]
    selector = one(docs, "StatefulSet")["spec"]["selector"]["matchLabels"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for constraint in spread:
        assert constraint["maxSkew"] == 1
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"] == selector
    budget = one(docs, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    # A restarted router keeps its identity: one PersistentVolumeClaim per router.
    (claim,) = one(docs, "StatefulSet")["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["data"] == "/var/lib/i2pd"
    required = render(
        helm, "i2pd.enabled=true", "i2pd.topologySpread.whenUnsatisfiable=DoNotSchedule"
    )
    spec = one(required, "StatefulSet")["spec"]["template"]["spec"]
    assert {c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]} == {"DoNotSchedule"}
    off = render(
        helm,
        "i2pd.enabled=true",
        "i2pd.topologySpread.enabled=false",
        "i2pd.podDisruptionBudget.enabled=false",
    )
    assert "topologySpreadConstraints" not in one(off, "StatefulSet")["spec"]["template"]["spec"]
    assert kinds(off, "PodDisruptionBudget") == []


EVERYTHING = (
    "i2pd.enabled=true",
    "peering.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    f"image.digest={DIGEST}",
    f"i2pd.image.digest={DIGEST}",
)


def checkov_report(helm: Path, tmp_path: Path, *sets: str) -> dict[str, Any]:
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(yaml.safe_dump_all(render(helm, *sets)))
    done = subprocess.run(
        [str(toolchain.ensure_checkov()), "--file", str(rendered), "--framework", "kubernetes",
         "--output", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_checkov_finds_no_failure_and_every_skip_has_a_reason(helm: Path, tmp_path: Path) -> None:
    """The outside scanner over the chart with every optional part on: no failed check, and
    each check the chart skips names its reason (checkov.io/skipN annotations)."""
    report = checkov_report(helm, tmp_path, *EVERYTHING)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    skipped = report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == {"CKV_K8S_38", "CKV_K8S_15"}
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "")) > 40, check
    assert report["summary"]["passed"] > 150


def test_checkov_would_catch_what_the_chart_fixed(helm: Path, tmp_path: Path) -> None:
    """The scan has teeth: without the operator's NetworkPolicy, or without digests, it fails."""
    report = checkov_report(helm, tmp_path, *EVERYTHING[:3], "networkPolicy.enabled=false")
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert failed == {"CKV2_K8S_6", "CKV_K8S_43"}


def test_metrics_service_and_optional_service_monitor(helm: Path) -> None:
    docs = render(helm)
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert kinds(docs, "ServiceMonitor") == []
    monitor = one(render(helm, "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    disabled = render(helm, "metrics.enabled=false")
    assert kinds(disabled, "Service") == []
    args = one(disabled, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-port=0" in args


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicas=2"], "additional properties 'replicas' not allowed"),
        (["watch.namespace=a"], "additional properties 'namespace' not allowed"),
        (["i2pd.persistence.storageclass=x"], "additional properties 'storageclass' not allowed"),
        (["metrics.serviceMonitor.enable=true"], "additional properties 'enable' not allowed"),
    ],
)
def test_schema_refuses_unknown_values(helm: Path, sets: list[str], message: str) -> None:
    assert message in refused(helm, *sets)


@pytest.mark.parametrize(
    ("sets", "where"),
    [
        (["i2pd.replicas=two"], "/i2pd/replicas"),
        (["watch.allNamespaces=yes"], "/watch/allNamespaces"),
        (["metrics.port=70000"], "/metrics/port"),
        (["logLevel=LOUD"], "/logLevel"),
        (["i2pd.antiAffinity=sometimes"], "/i2pd/antiAffinity"),
        (["watch.allNamespaces=false", "watch.namespaces={Not_A_Namespace}"], "/watch/namespaces"),
        (["resources.limits.memory=lots"], "/resources/limits/memory"),
    ],
)
def test_schema_refuses_mistyped_values(helm: Path, sets: list[str], where: str) -> None:
    assert where in refused(helm, *sets)


def test_inconsistent_values_are_refused_with_a_reason(helm: Path) -> None:
    assert "watch.namespaces is only used with watch.allNamespaces=false" in refused(
        helm, "watch.namespaces={a}"
    )
    assert "must differ" in refused(helm, "metrics.port=8080")


def schema_objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path or "<root>", node
        for key, sub in node.items():
            yield from schema_objects(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from schema_objects(sub, f"{path}/{index}")


def test_every_schema_object_refuses_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = list(schema_objects(schema))
    assert len(objects) > 20
    for path, node in objects:
        extra = node.get("additionalProperties")
        if "properties" in node:
            assert extra is False, f"{path} accepts unknown keys"
        else:  # a map: its values must still have a type
            assert isinstance(extra, dict) and "type" in extra, f"{path} is an untyped map"


def test_values_yaml_satisfies_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values, schema, cls=jsonschema.Draft7Validator)


def test_chart_crds_are_exact_copies_of_the_top_level_ones() -> None:
    """The chart ships every CRD of the top-level crds/ (kopf's peering CRDs too), byte for
    byte. After regenerating one: `cp crds/*.yaml charts/i2p-multihome/crds/`."""
    top = {p.name: p.read_bytes() for p in TOP_CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert "multihomeddestinations.multihome.i2p.yaml" in chart
    assert sorted(chart) == sorted(top), "chart crds/ and crds/ hold different files"
    for name, content in top.items():
        assert chart[name] == content, f"charts/i2p-multihome/crds/{name} differs from crds/{name}"


def test_artifact_hub_annotations() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/license"] == "MIT"
    assert annotations["artifacthub.io/operator"] == "true"
    assert annotations["artifacthub.io/category"] == "networking"
    links = yaml.safe_load(annotations["artifacthub.io/links"])
    assert links and all(link["url"].startswith("https://") for link in links)
    crds = yaml.safe_load(annotations["artifacthub.io/crds"])
    documents = [
        doc
        for path in (CHART / "crds").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    shipped = {(d["spec"]["names"]["kind"], d["metadata"]["name"]) for d in documents}
    assert {(c["kind"], c["name"]) for c in crds} == shipped
    for example in yaml.safe_load(annotations["artifacthub.io/crdsExamples"]):
        MultihomedDestinationManifest.model_validate(example)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "appVersion must be the package version"


def test_chart_readme_tells_the_crd_upgrade_story() -> None:
    readme = (CHART / "README.md").read_text()
    assert "kubectl apply --server-side -f crds/" in readme
    assert "never" in readme.lower()
