"""Routers found through a Service (`spec.routersFrom`): its EndpointSlices read into plain
values, and the routers they name. Pure: the kopf index hands in the slices' bodies.

An EndpointSlice belongs to its Service by the label `kubernetes.io/service-name`; a Service
has one slice per address family and per 100 endpoints or so, and during a change one
endpoint may appear in two slices. The routers are the ready endpoints of all of them, once
each, by name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from i2p_multihome.model.v1alpha1 import (
    MAX_ROUTERS,
    I2CPEndpoint,
    MultihomedDestinationSpec,
    RoutersFrom,
    RouterSpec,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The API server's own limits on one EndpointSlice; a body beyond them is cut there.
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100
MAX_ADDRESS_LENGTH = 253
MAX_ROUTER_NAME = 63
_NOT_IN_NAME = re.compile(r"[^a-z0-9-]")  # one `-` each: fd00::1 and fd00:1 stay apart


@dataclass(frozen=True)
class SliceEndpoint:
    """One endpoint of a slice: the router name it would get, its first address, whether
    it is ready."""

    name: str
    address: str
    ready: bool


@dataclass(frozen=True)
class SliceView:
    """What the balancer needs of one EndpointSlice: its named ports and its endpoints;
    `skipped` counts entries too malformed to use."""

    ports: tuple[tuple[str, int], ...]
    endpoints: tuple[SliceEndpoint, ...]
    skipped: int = 0

    def port(self, name: str) -> int | None:
        return next((number for named, number in self.ports if named == name), None)


def router_name(target: str | None, hostname: str | None, address: str) -> str:
    """A router name (a DNS label, as spec.routers[].name) for an endpoint: its pod's name,
    else its hostname, else its address, lower-cased with anything else turned into `-`.
    A name longer than a label keeps its start and gains a hash of the whole, so two long
    pod names stay apart."""
    for candidate in (target, hostname, address):
        if not candidate:
            continue
        name = _NOT_IN_NAME.sub("-", candidate.lower()).strip("-")
        if not name:
            continue
        if len(name) > MAX_ROUTER_NAME:
            digest = hashlib.sha256(candidate.encode()).hexdigest()[:8]
            name = f"{name[: MAX_ROUTER_NAME - 9].rstrip('-')}-{digest}"
        return name
    return "endpoint-" + hashlib.sha256(address.encode()).hexdigest()[:8]


def read_slice(body: Mapping[str, Any]) -> SliceView:
    """The ports and endpoints of an EndpointSlice's body (as the API server serves it).
    Entries of the wrong shape are skipped and counted, never raised: the body comes from
    whoever may write EndpointSlices in the namespace."""
    skipped = 0
    ports: list[tuple[str, int]] = []
    raw_ports = body.get("ports")
    for port in raw_ports[:MAX_SLICE_PORTS] if isinstance(raw_ports, list) else ():
        name = port.get("name") if isinstance(port, Mapping) else None
        number = port.get("port") if isinstance(port, Mapping) else None
        if (
            isinstance(name, str)
            and isinstance(number, int)
            and not isinstance(number, bool)
            and 1 <= number <= 65535
        ):
            ports.append((name, number))
        else:
            skipped += 1  # an unnamed port, or `port: null` (all ports), names no I2CP port
    endpoints: list[SliceEndpoint] = []
    raw_endpoints = body.get("endpoints")
    for entry in raw_endpoints[:MAX_SLICE_ENDPOINTS] if isinstance(raw_endpoints, list) else ():
        endpoint = _read_endpoint(entry)
        if endpoint is None:
            skipped += 1
        else:
            endpoints.append(endpoint)
    return SliceView(tuple(ports), tuple(endpoints), skipped)


def _read_endpoint(entry: object) -> SliceEndpoint | None:
    if not isinstance(entry, Mapping):
        return None
    addresses = entry.get("addresses")
    if not isinstance(addresses, list) or not addresses:
        return None
    address = addresses[0]
    if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_LENGTH:
        return None
    conditions = entry.get("conditions")
    ready = conditions.get("ready") if isinstance(conditions, Mapping) else None
    target_ref = entry.get("targetRef")
    target = target_ref.get("name") if isinstance(target_ref, Mapping) else None
    hostname = entry.get("hostname")
    return SliceEndpoint(
        router_name(
            target if isinstance(target, str) else None,
            hostname if isinstance(hostname, str) else None,
            address,
        ),
        address,
        # Kubernetes: an unknown readiness (ready absent) is to be read as ready.
        ready is not False,
    )


def found_routers(slices: Iterable[SliceView], source: RoutersFrom) -> tuple[RouterSpec, ...]:
    """The routers `source` finds in its Service's slices: every ready endpoint of a slice
    that has the named port, once per name (the lowest address when one name appears twice,
    as a dual-stack pod does), sorted by name, at most MAX_ROUTERS."""
    chosen: dict[str, RouterSpec] = {}
    candidates = sorted(
        (endpoint.name, endpoint.address, port)
        for view in slices
        if (port := view.port(source.service.port)) is not None
        for endpoint in view.endpoints
        if endpoint.ready
    )
    for name, address, port in candidates:
        if name in chosen:
            continue
        try:
            endpoint = I2CPEndpoint(
                host=address,
                port=port,
                tls=source.tls,
                credentials_secret_ref=source.credentials_secret_ref,
            )
            chosen[name] = RouterSpec(
                name=name, i2cp=endpoint, implementation=source.implementation
            )
        except ValidationError:
            continue  # read_slice bounds what it keeps; this only guards the model's rules
        if len(chosen) == MAX_ROUTERS:
            break
    return tuple(chosen.values())


def changes(
    before: Iterable[RouterSpec], after: Iterable[RouterSpec]
) -> tuple[list[str], list[str]]:
    """(joined, left) router names between two router lists, each sorted."""
    old = {r.name for r in before}
    new = {r.name for r in after}
    return sorted(new - old), sorted(old - new)


def hosted_spec(
    declared: MultihomedDestinationSpec, slices: Iterable[SliceView]
) -> MultihomedDestinationSpec:
    """The spec the balancer runs: `declared` itself, or with spec.routersFrom, `declared`
    on the routers found in its Service's `slices`."""
    if declared.routers_from is None:
        return declared
    return declared.with_routers(found_routers(slices, declared.routers_from))
