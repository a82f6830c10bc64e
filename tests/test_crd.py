"""The generated CRD: committed copy up to date, schema structural, defaults those of the models.

The API server's own verdicts (CEL rules, list-maps, pruning) are in e2e/test_crd_apiserver.py.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.balancer.status import build_status
from i2p_multihome.model import crd
from i2p_multihome.model.v1alpha1 import (
    KIND,
    MAX_LEASES,
    Model,
    MultihomedDestinationSpec,
    MultihomedDestinationStatus,
    RouterState,
)
from i2p_multihome_dev.kube import without_empty

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "multihomeddestinations.multihome.i2p.yaml"
Schema = dict[str, Any]

# What a structural schema node may carry (apiextensions v1 JSONSchemaProps, minus what
# structural schemas forbid: $ref, definitions, uniqueItems, additionalProperties beside
# properties; and minus `title`, which the generator drops on purpose).
ALLOWED_KEYS = {
    "type",
    "format",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def walk(node: Schema, path: str = "") -> list[tuple[str, Schema]]:
    nodes = [(path or "<root>", node)]
    for name, sub in node.get("properties", {}).items():
        nodes += walk(sub, f"{path}.{name}")
    if "items" in node:
        nodes += walk(node["items"], f"{path}[]")
    return nodes


def conforms(schema: Schema, value: Any, path: str = "") -> list[str]:
    """Where `value` breaks `schema` (types, bounds, patterns, required, unknown fields)."""
    kind = schema["type"]
    if not _has_type(kind, value):
        return [f"{path}: {value!r} is not {kind}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value} > {schema['maximum']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    if kind == "object":
        properties = schema.get("properties", {})
        errors += [f"{path}.{k}: unknown field" for k in value if k not in properties]
        errors += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, sub in value.items():
            if key in properties:
                errors += conforms(properties[key], sub, f"{path}.{key}")
    if kind == "array":
        for i, item in enumerate(value):
            errors += conforms(schema["items"], item, f"{path}[{i}]")
    return errors


def _has_type(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    python_types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
    }
    return isinstance(value, python_types[kind])


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return crd.crd_manifest()


@pytest.fixture(scope="module")
def root(manifest: dict[str, Any]) -> Schema:
    schema: Schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="module")
def spec_schema(root: Schema) -> Schema:
    schema: Schema = root["properties"]["spec"]
    return schema


def test_committed_crd_is_generated_from_the_models(manifest: dict[str, Any]) -> None:
    assert CRD_FILE.exists(), f"{CRD_FILE} is missing; generate it with: {crd.REGENERATE}"
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == manifest, (
        f"{CRD_FILE.relative_to(ROOT)} differs from the models; regenerate it from the "
        f"repository root with: {crd.REGENERATE}"
    )
    assert crd.REGENERATE in CRD_FILE.read_text().splitlines()[1]


def test_main_writes_the_rendered_manifest() -> None:
    out = io.StringIO()
    crd.main(out)
    assert yaml.safe_load(out.getvalue()) == crd.crd_manifest()
    assert out.getvalue().startswith("# Generated")


def test_names_and_version(manifest: dict[str, Any]) -> None:
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "multihomeddestinations.multihome.i2p"
    assert spec["group"] == "multihome.i2p"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["plural"] == "multihomeddestinations"
    assert spec["names"]["singular"] == "multihomeddestination"
    assert spec["names"]["shortNames"] == ["mhd"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural(root: Schema) -> None:
    problems = []
    for path, node in walk(root):
        extra = set(node) - ALLOWED_KEYS
        if extra:
            problems.append(f"{path}: keys not allowed in a structural schema: {sorted(extra)}")
        if node.get("type") not in TYPES:
            problems.append(f"{path}: type {node.get('type')!r}")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if "properties" in node and node.get("type") != "object":
            problems.append(f"{path}: properties on a non-object")
        missing = set(node.get("required", [])) - set(node.get("properties", {}))
        if missing:
            problems.append(f"{path}: required but not declared: {sorted(missing)}")
        if node.get("x-kubernetes-list-type") == "map":
            items = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                if (
                    key not in items.get("required", [])
                    and "default" not in items["properties"][key]
                ):
                    problems.append(f"{path}: list-map key {key} neither required nor defaulted")
                if items["properties"][key]["type"] not in ("string", "integer", "boolean"):
                    problems.append(f"{path}: list-map key {key} is not a scalar")
        if "default" in node:
            problems += conforms(node, crd.apply_defaults(node, node["default"]), path)
    assert not problems, "\n".join(problems)
    # Beside spec and status, a CRD may only restrict metadata.name and generateName.
    assert set(root["properties"]["metadata"]["properties"]) <= {"name", "generateName"}
    assert root["properties"]["metadata"]["properties"]["name"]["maxLength"] == 63


def test_cel_rules_are_cost_bounded(root: Schema) -> None:
    """The API server estimates a rule's worst case from maxItems/maxLength; unbounded lists or
    strings under a rule make it refuse the CRD."""
    for path, node in walk(root):
        if "x-kubernetes-validations" not in node:
            continue
        for sub_path, sub in walk(node, path):
            if sub["type"] == "array":
                assert "maxItems" in sub, f"{sub_path}: list under a CEL rule without maxItems"
            if sub["type"] == "string" and "enum" not in sub:
                assert "maxLength" in sub, f"{sub_path}: string under a CEL rule without maxLength"
        field = path.lstrip(".")
        for rule in node["x-kubernetes-validations"]:
            assert field in rule["message"], f"{rule}: the message must name {field}"
            assert "reason" not in rule, "a reason replaces the message with 'Duplicate value'"


def test_keys_are_immutable(root: Schema) -> None:
    keys = root["properties"]["spec"]["properties"]["keys"]
    assert keys["x-kubernetes-validations"] == [
        {"rule": crd.IMMUTABLE_KEYS_RULE, "message": crd.IMMUTABLE_KEYS_MESSAGE}
    ]


def test_routers_and_conditions_are_list_maps(root: Schema) -> None:
    routers = root["properties"]["spec"]["properties"]["routers"]
    assert routers["x-kubernetes-list-type"] == "map"
    assert routers["x-kubernetes-list-map-keys"] == ["name"]
    rules = {r["rule"] for r in routers["x-kubernetes-validations"]}
    assert rules == {crd.UNIQUE_ROUTER_NAMES_RULE, crd.PUBLISHING_ROUTER_RULE}
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_bounds_come_from_the_models(spec_schema: Schema) -> None:
    lease_set = spec_schema["properties"]["leaseSet"]["properties"]
    assert lease_set["maxLeases"]["maximum"] == MAX_LEASES == 16
    for direction in ("inbound", "outbound"):
        tunnel = spec_schema["properties"]["tunnels"]["properties"][direction]["properties"]
        assert (tunnel["quantity"]["minimum"], tunnel["quantity"]["maximum"]) == (1, 16)
        assert (tunnel["length"]["minimum"], tunnel["length"]["maximum"]) == (0, 7)
    peers = spec_schema["properties"]["peerPolicy"]["properties"]["explicitPeers"]
    # Joined with commas they must fit one I2CP option value (an I2P String, 255 bytes).
    assert peers["maxItems"] == 5 and 5 * 45 - 1 <= 255 < 6 * 45 - 1
    routers = spec_schema["properties"]["routers"]
    assert routers["minItems"] == 1
    # spec.routers or spec.routersFrom: a CEL rule wants exactly one, so neither is required.
    assert "required" not in spec_schema
    assert "default" not in routers and "default" not in spec_schema["properties"]["routersFrom"]
    assert routers["maxItems"] == 64
    assert routers["items"]["required"] == ["name", "i2cp"]


def test_optional_fields_are_plain_types_not_nullable(root: Schema) -> None:
    status = root["properties"]["status"]["properties"]
    assert status["destination"]["type"] == "object"
    assert status["leaseSet"]["properties"]["published"] == {"type": "string"}
    assert "default" not in status["destination"]
    assert "secretRef" not in root["properties"]["spec"]["properties"]["keys"].get("required", [])


def test_nested_objects_default_to_empty_so_inner_defaults_apply(spec_schema: Schema) -> None:
    properties = spec_schema["properties"]
    for name in ("keys", "tunnels", "leaseSet", "peerPolicy"):
        assert properties[name]["default"] == {}, name
    tunnels = properties["tunnels"]["properties"]
    assert tunnels["inbound"]["default"] == tunnels["outbound"]["default"] == {}
    router = properties["routers"]["items"]["properties"]
    assert router["publish"]["default"] is True
    assert router["implementation"]["default"] == "auto"
    assert router["i2cp"]["properties"]["port"]["default"] == 7654


@pytest.mark.parametrize(
    "spec",
    [
        {"routers": [{"name": "a", "i2cp": {"host": "h"}}]},
        {
            "routers": [
                {"name": "a", "i2cp": {"host": "h", "tls": True}, "publish": False},
                {"name": "b", "i2cp": {"host": "h"}, "implementation": "java"},
            ],
            "tunnels": {"inbound": {"quantity": 5}},
            "leaseSet": {"maxLeases": 8},
            "peerPolicy": {"excludedPeers": ["A" * 44]},
        },
        {"routersFrom": {"service": {"name": "i2pd", "port": "i2cp"}}},
        {
            "routersFrom": {
                "service": {"name": "i2p-java", "port": "i2cp"},
                "implementation": "java",
                "tls": True,
                "credentialsSecretRef": {"name": "i2cp-auth"},
            }
        },
    ],
)
def test_schema_defaults_equal_model_defaults(spec_schema: Schema, spec: dict[str, Any]) -> None:
    defaulted = crd.apply_defaults(spec_schema, spec)
    model = MultihomedDestinationSpec.model_validate(spec)
    assert defaulted == without_empty(model.model_dump(by_alias=True, mode="json"))
    assert conforms(spec_schema, defaulted) == []


def test_every_model_field_is_in_the_schema(spec_schema: Schema, root: Schema) -> None:
    """A model round-trip through the schema loses nothing: dumps conform, no field pruned."""
    spec = MultihomedDestinationSpec.model_validate(
        {
            "keys": {"secretRef": {"name": "k"}},
            "routers": [
                {
                    "name": "a",
                    "i2cp": {"host": "h", "credentialsSecretRef": {"name": "c"}},
                }
            ],
        }
    )
    assert (
        conforms(spec_schema, spec.model_dump(by_alias=True, exclude_none=True, mode="json")) == []
    )
    assert "i2cp" in spec.model_dump(by_alias=True)["routers"][0], "alias must not be i2Cp"


def test_build_status_output_conforms_to_the_status_schema(root: Schema) -> None:
    snapshot = BalancerSnapshot(
        b32="x" * 52 + ".b32.i2p",
        hash_b64="A" * 44,
        routers=(
            RouterSnapshot("r1", RouterState.ESTABLISHED, "0.9.66", (), None, 1000.0),
            RouterSnapshot("r2", RouterState.ESTABLISHED, None, (), None, None),
            RouterSnapshot("r3", RouterState.DISCONNECTED, None, (), "refused", 900.0),
        ),
        published=(),
        published_s=None,
        expires_s=None,
        publishes=0,
    )
    status = build_status(snapshot, now_s=2000.0, generation=4)
    assert status.routers_connected == "2/3"
    body = status.to_json_dict()
    assert conforms(root["properties"]["status"], body) == []
    assert body["routersConnected"] == "2/3"


def test_printer_columns_point_at_schema_fields(manifest: dict[str, Any], root: Schema) -> None:
    columns = {c["name"]: c for c in manifest["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == [
        "Ready", "Routers", "Leases", "Published", "Streams", "Age", "Publisher", "B32"
    ]  # fmt: skip
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Published"]["type"] == columns["Age"]["type"] == "date"
    assert columns["Leases"]["type"] == columns["Streams"]["type"] == "integer"
    wide = {"Publisher", "B32"}  # kubectl get -o wide
    assert all(columns[name]["priority"] == 1 for name in wide)
    assert all("priority" not in c for name, c in columns.items() if name not in wide)
    for column in columns.values():
        path = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"])
        if path.startswith(".metadata."):
            continue
        node = root
        for step in path.lstrip(".").split("."):
            name = step.removesuffix("[]")
            assert name in node.get("properties", {}), f"{column['name']}: {path} not in schema"
            node = node["properties"][name]
            if step.endswith("[]"):
                node = node["items"]
        expected = {"string": "string", "integer": "integer", "date": "string"}[column["type"]]
        assert node["type"] == expected, column


class _Map(Model):
    labels: dict[str, str] = Field(default_factory=dict)


class _Union(Model):
    value: int | str


class _Nested(Model):
    inner: _Map | None = None


@pytest.mark.parametrize("model", [_Map, _Union, _Nested])
def test_unrepresentable_schemas_fail_loudly(model: type[Model]) -> None:
    with pytest.raises(crd.SchemaConversionError):
        crd.structural_schema(model)


def test_status_model_round_trips_through_schema(root: Schema) -> None:
    status = MultihomedDestinationStatus(routers_connected="0/0")
    assert conforms(root["properties"]["status"], status.to_json_dict()) == []
    assert conforms(root["properties"]["status"], {"routersConnected": "three"}) != []


class _Converted(Model):
    positive: int = Field(default=1, gt=0)
    mode: Literal["only"] = "only"


def test_exclusive_bounds_and_constants_become_openapi_v3() -> None:
    schema = crd.structural_schema(_Converted)["properties"]
    assert schema["positive"] == {
        "type": "integer",
        "default": 1,
        "minimum": 0,
        "exclusiveMinimum": True,
    }
    assert schema["mode"] == {"type": "string", "enum": ["only"], "default": "only"}
