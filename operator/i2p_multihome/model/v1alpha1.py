"""`multihome.i2p/v1alpha1` MultihomedDestination: spec and status models."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from i2p_multihome.wire.structures import MAX_LEASES

GROUP = "multihome.i2p"
VERSION = "v1alpha1"
KIND = "MultihomedDestination"
PLURAL = "multihomeddestinations"


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


# A Service's name (RFC 1035 label); router and Service port names (RFC 1123 label, which
# may start with a digit; an IANA service name, which a Service port name is, has this form).
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
RFC1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SecretRef(Model):
    name: Annotated[str, Field(min_length=1, max_length=253)]


class KeysSpec(Model):
    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret holding the destination keys; generated there if absent.",
    )


class I2CPEndpoint(Model):
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 7654
    tls: bool = Field(default=False, description="I2CP over TLS (Java routers, i2cp.SSL=true).")
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with `username` and `password` for Java routers with i2cp.auth.",
    )


class RouterImplementation(StrEnum):
    AUTO = "auto"
    I2PD = "i2pd"
    JAVA = "java"


class RouterSpec(Model):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=RFC1123_LABEL)]
    # Explicit alias: the camel-case generator would spell it `i2Cp`.
    i2cp: I2CPEndpoint = Field(alias="i2cp", description="Where this router's I2CP listens.")
    publish: bool = Field(
        default=True,
        description="Whether this router may publish the merged LeaseSet. One router "
        "with publish: true publishes at a time (status.leaseSet.publisher); the next in "
        "this list takes over when it is lost. false: never.",
    )
    implementation: RouterImplementation = Field(
        default=RouterImplementation.AUTO,
        description="Router software, for options whose meaning differs between them "
        "(i2cp.dontPublishLeaseSet). auto: detected from the I2CP handshake, which cannot "
        "tell Java I2P 2.9+ from i2pd 2.58+: set java on Java routers.",
    )


class RouterServiceRef(Model):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = Field(
        description="A Service in the destination's namespace, usually headless."
    )
    # A Service port name is an IANA service name: at most 15 characters.
    port: Annotated[str, Field(min_length=1, max_length=15, pattern=RFC1123_LABEL)] = Field(
        description="The name of the Service port that carries I2CP."
    )


class RoutersFrom(Model):
    service: RouterServiceRef = Field(
        description="The routers are this Service's ready endpoints, read from its "
        "EndpointSlices; each is named by its pod (targetRef), else its hostname, else its "
        "address. An endpoint that turns ready joins; one that goes or turns not ready "
        "leaves as a lost router does."
    )
    implementation: RouterImplementation = Field(
        default=RouterImplementation.AUTO,
        description="Router software of every endpoint (see spec.routers[].implementation).",
    )
    tls: bool = Field(default=False, description="I2CP over TLS (Java routers, i2cp.SSL=true).")
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with `username` and `password` for Java routers with i2cp.auth.",
    )


class TunnelDirection(Model):
    quantity: Annotated[int, Field(ge=1, le=16)] = 3
    length: Annotated[int, Field(ge=0, le=7)] = 3
    length_variance: Annotated[int, Field(ge=-7, le=7)] = 0


class TunnelsSpec(Model):
    inbound: TunnelDirection = TunnelDirection()
    outbound: TunnelDirection = TunnelDirection()


class SelectionStrategy(StrEnum):
    FAIR_FRESHEST = "FairFreshest"


class LeaseSetSpec(Model):
    max_leases: Annotated[int, Field(ge=1, le=MAX_LEASES)] = MAX_LEASES
    strategy: SelectionStrategy = Field(
        default=SelectionStrategy.FAIR_FRESHEST,
        description="FairFreshest: round-robin across routers, each router's freshest lease first.",
    )
    client_affinity: bool = Field(
        default=False,
        description="Keep each client on one router: every router with publish: false hands "
        "the clients it talks to a LeaseSet of its own leases only (flagged unpublished), and "
        "routers with publish: true only publish (their leases join the LeaseSet when no "
        "other router has any). Needs a router with publish: false. A client then learns "
        "which leases one router holds: see docs/conversations.md before turning it on.",
    )


# I2CP option values are I2P Strings (at most 255 bytes): explicitPeers, comma-separated
# 44-character hashes, holds at most 5.
MAX_EXPLICIT_PEERS = 5
MAX_EXCLUDED_PEERS = 1024


class GatewayPolicy(StrEnum):
    NATIVE = "native"
    SHARED = "shared"


class PeerPolicy(Model):
    gateways: GatewayPolicy = Field(
        default=GatewayPolicy.NATIVE,
        description="Which inbound gateways the published leases show. native: every "
        "router's own, as they come (what one router of the hosting implementation shows; "
        "right for i2pd, whose picks are near-uniform). shared: one reduced set, as many "
        "gateways as the median router built through in the last hour, kept stable from "
        "the balancer's peer profiles; routers build twice the inbound tunnels to choose "
        "from, other gateways fill at most three quarters of the leases asked for, and "
        "Java routers share one randomKey. Needs one implementation and tunnels of at "
        "least one hop when several routers host.",
    )
    explicit_peers: list[Annotated[str, Field(min_length=44, max_length=44)]] = Field(
        default_factory=list,
        max_length=MAX_EXPLICIT_PEERS,
        description="Base64 router hashes the routers build their tunnels through (at most "
        "5: the I2CP option that carries them holds 255 bytes). i2pd (explicitPeers) builds "
        "one tunnel each way through the first peers of the list, as many as the tunnel "
        "length, in order; each i2pd router is given the list starting at its own place "
        "in `routers`, so that the routers do not all depend on the first peer. Java "
        "(inbound.explicitPeers, outbound.explicitPeers) picks from the list for one build "
        "in four.",
    )
    excluded_peers: list[Annotated[str, Field(min_length=44, max_length=44)]] = Field(
        default_factory=list,
        max_length=MAX_EXCLUDED_PEERS,
        description="Base64 router hashes never published as a lease's inbound gateway.",
    )


class PortProtocol(StrEnum):
    STREAM = "Stream"
    DATAGRAM = "Datagram"


class ServiceBackend(Model):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = Field(
        description="A Service in the destination's namespace."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="The Service's port.")


class BackendSpec(Model):
    """Where a port's traffic goes: a host and port, or a Service in the same namespace."""

    host: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="A host name or address the operator can reach."
    )
    port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        default=None, description="The backend's TCP (Stream) or UDP (Datagram) port."
    )
    service: ServiceBackend | None = Field(
        default=None, description="A Service in the destination's namespace, instead of host."
    )

    @model_validator(mode="after")
    def _one_target(self) -> BackendSpec:
        if (self.host is None) == (self.service is None):
            raise ValueError(BACKEND_TARGET_MESSAGE)
        if self.host is not None and self.port is None:
            raise ValueError(BACKEND_PORT_MESSAGE)
        if self.service is not None and self.port is not None:
            raise ValueError(BACKEND_SERVICE_PORT_MESSAGE)
        return self


BACKEND_TARGET_MESSAGE = (
    "spec.ports[].backend names either host (with port) or service, not both or neither"
)
BACKEND_PORT_MESSAGE = "spec.ports[].backend with host needs port"
BACKEND_SERVICE_PORT_MESSAGE = (
    "spec.ports[].backend with service takes its port in service.port; remove port"
)


class PortSpec(Model):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        description="The I2P port clients address (0: clients that name no port, and any "
        "port no other entry of this protocol takes). Unique per protocol."
    )
    protocol: PortProtocol = Field(
        default=PortProtocol.STREAM,
        description="Stream: I2P streaming to a TCP backend. Datagram: repliable datagrams "
        "to a UDP backend.",
    )
    backend: BackendSpec


MAX_PORTS = 32

CLIENT_AFFINITY_MESSAGE = (
    "spec.leaseSet.clientAffinity needs a router with publish: false (it serves the clients; "
    "routers with publish: true only publish); set publish: false on a router or turn "
    "clientAffinity off"
)


SHARED_MIXED_MESSAGE = (
    "spec.peerPolicy.gateways: shared hides the routers behind one LeaseSet, and i2pd and "
    "Java routers show in it as two: give every router the same implementation, or use "
    "gateways: native"
)
SHARED_ZERO_HOP_MESSAGE = (
    "spec.peerPolicy.gateways: shared with several routers needs inbound tunnels of at "
    "least one hop (tunnels.inbound.length plus a negative lengthVariance above 0): a "
    "zero-hop lease names its router as gateway, so the LeaseSet would name them all"
)


UNIQUE_PORT_NAMES_MESSAGE = "port names in spec.ports must be unique"
UNIQUE_PORTS_MESSAGE = (
    "spec.ports: each (port, protocol) may appear once; give the repeated entry another port"
)


ROUTERS_SOURCE_MESSAGE = (
    "give exactly one of spec.routers (a list of routers) and spec.routersFrom (a Service "
    "whose ready endpoints are the routers)"
)
ROUTERS_FROM_AFFINITY_MESSAGE = (
    "spec.leaseSet.clientAffinity needs routers with publish: false, and every router "
    "found through spec.routersFrom publishes: list the routers in spec.routers or turn "
    "clientAffinity off"
)
MAX_ROUTERS = 64


class MultihomedDestinationSpec(Model):
    keys: KeysSpec = KeysSpec()
    # Not required: spec.routersFrom may stand in its place (a validator wants exactly one).
    # A default factory gives the CRD no default, so `has(self.routers)` stays meaningful.
    routers: Annotated[list[RouterSpec], Field(min_length=1, max_length=MAX_ROUTERS)] = Field(
        default_factory=list,
        description="The routers that host the destination, by I2CP address.",
    )
    routers_from: RoutersFrom | None = Field(
        default=None,
        description="Find the routers through a Service instead of listing them: its ready "
        "endpoints (up to 64, by name) host the destination, with no edit to this object "
        "when the Service scales.",
    )
    tunnels: TunnelsSpec = TunnelsSpec()
    lease_set: LeaseSetSpec = LeaseSetSpec()
    peer_policy: PeerPolicy = PeerPolicy()
    ports: Annotated[list[PortSpec], Field(max_length=MAX_PORTS)] = Field(
        default_factory=list,
        description="What the destination serves: each I2P port and protocol, and its backend.",
    )

    @model_validator(mode="after")
    def _check_ports(self) -> MultihomedDestinationSpec:
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError(UNIQUE_PORT_NAMES_MESSAGE)
        keys = [(p.port, p.protocol) for p in self.ports]
        if len(set(keys)) != len(keys):
            raise ValueError(UNIQUE_PORTS_MESSAGE)
        return self

    @model_validator(mode="after")
    def _check_routers(self) -> MultihomedDestinationSpec:
        if bool(self.routers) == (self.routers_from is not None):
            raise ValueError(ROUTERS_SOURCE_MESSAGE)
        if self.routers_from is not None:
            if self.lease_set.client_affinity:
                raise ValueError(ROUTERS_FROM_AFFINITY_MESSAGE)
            return self
        names = [r.name for r in self.routers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"spec.routers: duplicate router names {duplicates}")
        if not any(r.publish for r in self.routers):
            raise ValueError("spec.routers: at least one router must have publish: true")
        if self.lease_set.client_affinity and all(r.publish for r in self.routers):
            raise ValueError(CLIENT_AFFINITY_MESSAGE)
        return self

    @model_validator(mode="after")
    def _check_shared_gateways(self) -> MultihomedDestinationSpec:
        if self.peer_policy.gateways is not GatewayPolicy.SHARED:
            return self
        kinds = {r.implementation for r in self.routers} - {RouterImplementation.AUTO}
        if len(kinds) > 1:
            raise ValueError(SHARED_MIXED_MESSAGE)
        inbound = self.tunnels.inbound
        several = len(self.routers) > 1 or self.routers_from is not None
        if several and inbound.length + min(inbound.length_variance, 0) <= 0:
            raise ValueError(SHARED_ZERO_HOP_MESSAGE)
        return self

    def with_routers(self, routers: Sequence[RouterSpec]) -> MultihomedDestinationSpec:
        """This spec hosted on `routers` (those found through spec.routersFrom; none is
        allowed here: a Service may have no ready endpoint)."""
        return self.model_copy(update={"routers": list(routers)})


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str | None = None


class MultihomedDestinationManifest(Model):
    """A manifest as `kubectl apply` or the standalone balancer reads it."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )
    api_version: Literal["multihome.i2p/v1alpha1"]
    kind: Literal["MultihomedDestination"]
    metadata: ObjectMeta
    spec: MultihomedDestinationSpec


# --- status -----------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """KEP-1623 condition."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class DestinationStatus(Model):
    b32: str
    hash: str


class LeaseSetStatus(Model):
    leases: int
    published: str | None = None
    expires: str | None = None
    routers: list[str] = Field(default_factory=list)
    publishes: int = 0
    publisher: str | None = Field(
        default=None,
        description="The router that stores the LeaseSet at the floodfills; the others "
        "hold it unpublished. Unset while no router with publish: true has a session.",
    )


class RouterState(StrEnum):
    CONNECTING = "Connecting"
    ESTABLISHED = "Established"
    DISCONNECTED = "Disconnected"
    REFUSED = "Refused"


class RouterStatus(Model):
    name: str
    state: RouterState
    version: str | None = None
    leases: int = 0
    streams: int = Field(default=0, description="Active streams whose packets arrive here.")
    last_error: str | None = None
    since: str | None = None


class TunnelStatus(Model):
    router: str
    gateway: str
    tunnel_id: int
    expires: str
    live: bool
    published: bool


class MultihomedDestinationStatus(Model):
    observed_generation: int | None = None
    routers_connected: str | None = Field(
        default=None,
        pattern=r"^[0-9]+/[0-9]+$",
        max_length=16,
        description="Routers with an established I2CP session / routers configured, e.g. 3/4.",
    )
    destination: DestinationStatus | None = None
    lease_set: LeaseSetStatus | None = None
    streams: int | None = Field(
        default=None, description="Active streams the destination serves, on every router."
    )
    routers: list[RouterStatus] = Field(default_factory=list)
    tunnels: list[TunnelStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
