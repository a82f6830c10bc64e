"""`multihome.i2p/v1alpha1` MultihomedDestination: spec and status models."""

from __future__ import annotations

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
    name: Annotated[
        str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    # Explicit alias: the camel-case generator would spell it `i2Cp`.
    i2cp: I2CPEndpoint = Field(alias="i2cp", description="Where this router's I2CP listens.")
    publish: bool = Field(
        default=True, description="Whether this router publishes the merged LeaseSet."
    )
    implementation: RouterImplementation = Field(
        default=RouterImplementation.AUTO,
        description="Router software, for options whose meaning differs between them "
        "(i2cp.dontPublishLeaseSet). auto: detected from the I2CP handshake.",
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


class PeerPolicy(Model):
    explicit_peers: list[Annotated[str, Field(min_length=44, max_length=44)]] = Field(
        default_factory=list,
        description="Base64 router hashes every router builds its tunnels through.",
    )
    excluded_peers: list[Annotated[str, Field(min_length=44, max_length=44)]] = Field(
        default_factory=list,
        description="Base64 router hashes never published as a lease's inbound gateway.",
    )


class MultihomedDestinationSpec(Model):
    keys: KeysSpec = KeysSpec()
    routers: Annotated[list[RouterSpec], Field(min_length=1, max_length=64)]
    tunnels: TunnelsSpec = TunnelsSpec()
    lease_set: LeaseSetSpec = LeaseSetSpec()
    peer_policy: PeerPolicy = PeerPolicy()

    @model_validator(mode="after")
    def _check_routers(self) -> MultihomedDestinationSpec:
        names = [r.name for r in self.routers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"spec.routers: duplicate router names {duplicates}")
        if not any(r.publish for r in self.routers):
            raise ValueError("spec.routers: at least one router must have publish: true")
        return self


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
    routers: list[RouterStatus] = Field(default_factory=list)
    tunnels: list[TunnelStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
