"""The MultihomedDestination CustomResourceDefinition, generated from the pydantic models.

`v1alpha1` is the truth: the OpenAPI schema here is the models' JSON schema made structural
(every `$ref` inlined, `anyOf [X, null]` turned into an optional X, titles dropped), plus what a
JSON schema cannot say (list semantics, cross-field rules as CEL, printer columns).

Regenerate the committed manifest with:

    python -m i2p_multihome.model.crd > crds/multihomeddestinations.multihome.i2p.yaml
"""

from __future__ import annotations

import copy
import sys
from typing import Any, TextIO

import yaml
from pydantic import BaseModel

from i2p_multihome.model.v1alpha1 import (
    BACKEND_PORT_MESSAGE,
    BACKEND_SERVICE_PORT_MESSAGE,
    BACKEND_TARGET_MESSAGE,
    CLIENT_AFFINITY_MESSAGE,
    GROUP,
    KIND,
    PLURAL,
    ROUTERS_FROM_AFFINITY_MESSAGE,
    ROUTERS_SOURCE_MESSAGE,
    SHARED_MIXED_MESSAGE,
    SHARED_ZERO_HOP_MESSAGE,
    UNIQUE_PORTS_MESSAGE,
    VERSION,
    MultihomedDestinationSpec,
    MultihomedDestinationStatus,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
SINGULAR = "multihomeddestination"
SHORT_NAMES = ["mhd"]
REGENERATE = "python -m i2p_multihome.model.crd > crds/multihomeddestinations.multihome.i2p.yaml"
# Resource names become I2CP session nicknames (inbound.nickname / outbound.nickname).
MAX_NAME_LENGTH = 63

Schema = dict[str, Any]

# CEL rules on spec.routers (cost-bounded by its maxItems and the names' maxLength). The
# list-map keyed by name already refuses duplicates, with a terse `Duplicate value:
# map[string]interface {}{"name":...}`; the first rule says what to do about it. (Not
# `reason: FieldValueDuplicate`: the API server then prints `Duplicate value: "array"` in
# place of the message.)
UNIQUE_ROUTER_NAMES_RULE = "self.all(r, self.exists_one(s, s.name == r.name))"
UNIQUE_ROUTER_NAMES_MESSAGE = (
    "router names in spec.routers must be unique; "
    "rename or remove the router whose name repeats an earlier one"
)
PUBLISHING_ROUTER_RULE = "self.exists(r, !has(r.publish) || r.publish)"
PUBLISHING_ROUTER_MESSAGE = (
    "at least one router in spec.routers must have publish: true (the default); "
    "set publish: true on a router that should publish the LeaseSet"
)

# spec.leaseSet.clientAffinity serves clients from the routers with publish: false.
_NO_AFFINITY = (
    "!has(self.leaseSet) || !has(self.leaseSet.clientAffinity) || !self.leaseSet.clientAffinity"
)
CLIENT_AFFINITY_RULE = (
    _NO_AFFINITY + " || !has(self.routers) || self.routers.exists(r, has(r.publish) && !r.publish)"
)
ROUTERS_FROM_AFFINITY_RULE = _NO_AFFINITY + " || !has(self.routersFrom)"

# spec.routers or spec.routersFrom: the routers listed, or found through a Service.
ROUTERS_SOURCE_RULE = "has(self.routers) != has(self.routersFrom)"

# spec.peerPolicy.gateways: shared (see the model's messages for why).
_SHARED = (
    "!has(self.peerPolicy) || !has(self.peerPolicy.gateways) || "
    "self.peerPolicy.gateways != 'shared' || "
)
SHARED_MIXED_RULE = _SHARED + (
    "!has(self.routers) || "
    "!(self.routers.exists(r, has(r.implementation) && r.implementation == 'i2pd') && "
    "self.routers.exists(r, has(r.implementation) && r.implementation == 'java'))"
)
SHARED_ZERO_HOP_RULE = _SHARED + (
    "(has(self.routers) && size(self.routers) < 2) || "
    "!has(self.tunnels) || !has(self.tunnels.inbound) || "
    "(has(self.tunnels.inbound.length) ? self.tunnels.inbound.length : 3) + "
    "(has(self.tunnels.inbound.lengthVariance) && self.tunnels.inbound.lengthVariance < 0 "
    "? self.tunnels.inbound.lengthVariance : 0) > 0"
)

# spec.ports: a list-map keyed by name; each (port, protocol) once, since a client's packet
# names only the port and the protocol (cost-bounded by MAX_PORTS).
UNIQUE_PORTS_RULE = (
    "self.all(p, self.exists_one(q, q.port == p.port && "
    "(has(q.protocol) ? q.protocol : 'Stream') == (has(p.protocol) ? p.protocol : 'Stream')))"
)
BACKEND_TARGET_RULE = "has(self.host) != has(self.service)"
BACKEND_PORT_RULE = "!has(self.host) || has(self.port)"
BACKEND_SERVICE_PORT_RULE = "!has(self.service) || !has(self.port)"

# The keys are the destination's address: changing them is a different destination.
IMMUTABLE_KEYS_RULE = "self == oldSelf"
IMMUTABLE_KEYS_MESSAGE = (
    "spec.keys is immutable: other keys are another I2P address; "
    "create a new MultihomedDestination for them"
)

# JSON-schema keywords carried over unchanged: all of them mean the same in OpenAPI v3.
_KEPT = frozenset(
    {
        "type",
        "description",
        "format",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "enum",
        "minItems",
        "maxItems",
        "required",
    }
)
# Dropped on purpose: `title` is noise in kubectl explain; `additionalProperties: false` is
# not allowed beside `properties` in a structural schema, and pruning has the same effect.
_DROPPED = frozenset({"title", "additionalProperties", "$defs"})


class SchemaConversionError(ValueError):
    """The model's JSON schema uses something a structural OpenAPI schema cannot express."""


def structural_schema(model: type[BaseModel]) -> Schema:
    """`model`'s JSON schema (by alias) as a structural OpenAPI v3 schema."""
    json_schema = model.model_json_schema(by_alias=True)
    return _convert(json_schema, json_schema.get("$defs", {}), model.__name__)


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs, path)
    if node.get("additionalProperties", False) is not False:
        raise SchemaConversionError(f"{path}: maps (additionalProperties) are not supported")
    out: Schema = {}
    for key, value in node.items():
        if key in _KEPT:
            out[key] = copy.deepcopy(value)
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020-12 gives the bound; OpenAPI v3.0 a flag beside minimum/maximum.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default":
            pass  # set below, once the converted properties are known
        elif key not in _DROPPED:
            raise SchemaConversionError(f"{path}: unsupported JSON schema keyword {key!r}")
    if "type" not in out:
        raise SchemaConversionError(f"{path}: no type (a structural schema needs one everywhere)")
    if "default" in node and node["default"] is not None:
        out["default"] = _structural_default(out, node["default"])
    if out.get("required") == []:
        del out["required"]
    return _ordered(out)


# Reading order in the generated YAML: what a node is, then its constraints, then its children.
_ORDER = (
    "type",
    "format",
    "description",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "items",
)


def _ordered(node: Schema) -> Schema:
    """`node` with its keys in `_ORDER`, anything else (x-kubernetes-*) after them."""
    rank = {key: i for i, key in enumerate(_ORDER)}
    return {key: node[key] for key in sorted(node, key=lambda k: rank.get(k, len(rank)))}


def _resolve(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Inline `$ref` and collapse `anyOf [X, null]` into X; siblings override the target."""
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "anyOf")}
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name not in defs:
            raise SchemaConversionError(f"{path}: unresolvable $ref {node['$ref']!r}")
        return {**_resolve(defs[name], defs, path), **siblings}
    if "anyOf" in node:
        members = [m for m in node["anyOf"] if m != {"type": "null"}]
        if len(members) != 1:
            raise SchemaConversionError(f"{path}: anyOf other than [X, null] is not structural")
        return {**_resolve(members[0], defs, path), **siblings}
    return node


def _structural_default(schema: Schema, default: Any) -> Any:
    """The default to declare: `{}` for an object whose inner defaults rebuild the model's
    default (so the API server fills every level), else the model's default itself."""
    if schema["type"] != "object":
        return copy.deepcopy(default)
    wanted = _without_empty(default)
    if apply_defaults(schema, {}) == wanted:
        return {}
    return wanted


def _without_empty(value: Any) -> Any:
    """`value` without None and empty lists: in the models both mean "absent"."""
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def apply_defaults(schema: Schema, value: Any) -> Any:
    """`value` with `schema`'s defaults filled in the way the API server does it: an absent
    property with a default gets that default, then defaulting continues inside it."""
    if isinstance(value, dict) and "properties" in schema:
        filled = dict(value)
        for name, sub in schema["properties"].items():
            if name not in filled and "default" in sub:
                filled[name] = copy.deepcopy(sub["default"])
            if name in filled:
                filled[name] = apply_defaults(sub, filled[name])
        return filled
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _node(schema: Schema, *path: str) -> Schema:
    """The schema node at `path` (property names; "[]" steps into a list's items)."""
    node = schema
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


def _list_map(schema: Schema, key: str, *path: str) -> None:
    node = _node(schema, *path)
    if key not in node["items"].get("required", []):
        raise SchemaConversionError(f"{'.'.join(path)}: list-map key {key!r} must be required")
    node["x-kubernetes-list-type"] = "map"
    node["x-kubernetes-list-map-keys"] = [key]


def spec_schema() -> Schema:
    spec = structural_schema(MultihomedDestinationSpec)
    spec["description"] = "One I2P Destination served through several routers (Proposal 140)."
    spec = _ordered(spec)
    _list_map(spec, "name", "routers")
    _node(spec, "routers")["x-kubernetes-validations"] = [
        {"rule": UNIQUE_ROUTER_NAMES_RULE, "message": UNIQUE_ROUTER_NAMES_MESSAGE},
        {"rule": PUBLISHING_ROUTER_RULE, "message": PUBLISHING_ROUTER_MESSAGE},
    ]
    _list_map(spec, "name", "ports")
    _node(spec, "ports")["x-kubernetes-validations"] = [
        {"rule": UNIQUE_PORTS_RULE, "message": UNIQUE_PORTS_MESSAGE},
    ]
    _node(spec, "ports", "[]", "backend")["x-kubernetes-validations"] = [
        {"rule": BACKEND_TARGET_RULE, "message": BACKEND_TARGET_MESSAGE},
        {"rule": BACKEND_PORT_RULE, "message": BACKEND_PORT_MESSAGE},
        {"rule": BACKEND_SERVICE_PORT_RULE, "message": BACKEND_SERVICE_PORT_MESSAGE},
    ]
    _node(spec, "keys")["x-kubernetes-validations"] = [
        {"rule": IMMUTABLE_KEYS_RULE, "message": IMMUTABLE_KEYS_MESSAGE},
    ]
    spec["x-kubernetes-validations"] = [
        {"rule": ROUTERS_SOURCE_RULE, "message": ROUTERS_SOURCE_MESSAGE},
        {"rule": CLIENT_AFFINITY_RULE, "message": CLIENT_AFFINITY_MESSAGE},
        {"rule": ROUTERS_FROM_AFFINITY_RULE, "message": ROUTERS_FROM_AFFINITY_MESSAGE},
        {"rule": SHARED_MIXED_RULE, "message": SHARED_MIXED_MESSAGE},
        {"rule": SHARED_ZERO_HOP_RULE, "message": SHARED_ZERO_HOP_MESSAGE},
    ]
    return spec


def status_schema() -> Schema:
    status = structural_schema(MultihomedDestinationStatus)
    status["description"] = "What the balancer last observed; written only by the operator."
    status = _ordered(status)
    _list_map(status, "type", "conditions")
    _list_map(status, "name", "routers")
    return status


def root_schema() -> Schema:
    return {
        "type": "object",
        "description": "An I2P Destination multihomed across several routers "
        "(I2P Proposal 140, invisible multihoming).",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": MAX_NAME_LENGTH,
                        "description": "Also the I2CP tunnel nickname on every router.",
                    }
                },
            },
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "The merged LeaseSet is published through at least one router.",
    },
    {
        "name": "Routers",
        "type": "string",
        "jsonPath": ".status.routersConnected",
        "description": "Routers with an established I2CP session / routers configured.",
    },
    {
        "name": "Leases",
        "type": "integer",
        "jsonPath": ".status.leaseSet.leases",
        "description": "Leases in the last published LeaseSet.",
    },
    {
        "name": "Published",
        "type": "date",
        "jsonPath": ".status.leaseSet.published",
        "description": "When the merged LeaseSet was last handed to a router.",
    },
    {
        "name": "Streams",
        "type": "integer",
        "jsonPath": ".status.streams",
        "description": "Active streams the destination serves.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Publisher",
        "type": "string",
        "jsonPath": ".status.leaseSet.publisher",
        "priority": 1,
        "description": "The router that stores the LeaseSet at the floodfills.",
    },
    {
        "name": "B32",
        "type": "string",
        "jsonPath": ".status.destination.b32",
        "priority": 1,
        "description": "The destination's .b32.i2p address.",
    },
]


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition as a Kubernetes manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": root_schema()},
                }
            ],
        },
    }


def render() -> str:
    """The manifest as the YAML committed under crds/."""
    header = (
        "# Generated from i2p_multihome.model.v1alpha1; do not edit. Regenerate:\n"
        f"#   {REGENERATE}\n"
    )
    body = yaml.safe_dump(crd_manifest(), sort_keys=False, width=1000, allow_unicode=True)
    return header + body


def main(out: TextIO = sys.stdout) -> None:
    out.write(render())


if __name__ == "__main__":
    main()
