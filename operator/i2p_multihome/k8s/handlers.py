"""kopf handlers: thin. Each MultihomedDestination gets one daemon that hosts its balancer;
spec updates are applied in place; deletion destroys the sessions before kopf releases the
finalizer. EndpointSlices are indexed (kopf fills the index before any handler runs), so a
destination with spec.routersFrom starts on its Service's ready endpoints and follows them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from i2p_multihome.balancer.engine import EndpointError, EndpointResolver
from i2p_multihome.balancer.profiles import PeerProfiles
from i2p_multihome.hosting import TaskEnded
from i2p_multihome.i2cp.session import Endpoint
from i2p_multihome.k8s import clientstore, endpoints, profilestore, secrets
from i2p_multihome.k8s.runtime import (
    ApiServerStatusSink,
    DestinationRuntime,
    failure_status,
)
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Condition,
    MultihomedDestinationSpec,
    RouterSpec,
)
from i2p_multihome.streaming.routes import RememberedClient

log = logging.getLogger(__name__)

PREFIX = "multihome.i2p"
ENDPOINT_SLICES = ("discovery.k8s.io", "v1", "endpointslices")
RETRY_DELAY_S = 15.0


@dataclass
class OperatorState:
    """What handlers share in one operator process (kopf's memo)."""

    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    runtimes: dict[tuple[str, str], DestinationRuntime] = field(default_factory=dict)


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # The resource is known: no CRD or namespace scanning, which needs RBAC the chart
    # deliberately does not grant (kopf would retry 403s for about a minute first).
    settings.scanning.disabled = True
    # Deletion waits this long for the daemon's DestroySessions before re-checking later.
    settings.background.instant_exit_timeout = 10.0
    # Our own events say what happened; kopf's handler logs stay in the log.
    settings.posting.level = logging.WARNING


def _parse_spec(spec: dict[str, Any]) -> MultihomedDestinationSpec:
    try:
        return MultihomedDestinationSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise kopf.PermanentError(f"invalid spec: {problems}") from None


def _describe(error: ErrorDetails) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message  # the spec-wide rules name their fields themselves
    return f"spec.{'.'.join(str(p) for p in error['loc'])}: {message}"


def index_router_endpoints(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], endpoints.SliceView] | None:
    """The index `router_endpoints`: (namespace, Service) -> what each of its EndpointSlices
    holds (kopf drops a deleted slice's entry)."""
    service = labels.get(endpoints.SERVICE_NAME_LABEL)
    if namespace is None or not service:
        return None
    view = endpoints.read_slice(body)
    if view.skipped:
        log.debug(
            "endpoint slice entries skipped",
            extra=fields(namespace=namespace, service=service, skipped=view.skipped),
        )
    return {(namespace, service): view}


def _slices(kwargs: dict[str, Any], namespace: str, service: str | None) -> Iterable[Any]:
    """What the index holds of `service`'s EndpointSlices (kopf passes each index to every
    handler as a keyword named by its id)."""
    if service is None:
        return ()
    index: kopf.Index[tuple[str, str], endpoints.SliceView] = kwargs["router_endpoints"]
    found: Iterable[Any] = index.get((namespace, service), ())
    return found


def _followed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> bool:
    """Whether a destination follows this EndpointSlice's Service (so other Services'
    slices never wake a handler)."""
    state: OperatorState = memo.state
    service = labels.get(endpoints.SERVICE_NAME_LABEL)
    return any(
        key[0] == namespace and runtime.follows(service or "")
        for key, runtime in state.runtimes.items()
    )


async def endpoints_changed(
    *,
    namespace: str | None,
    labels: kopf.Labels,
    memo: Any,
    **kwargs: Any,
) -> None:
    """An EndpointSlice of a followed Service changed: its destinations follow the ready
    endpoints."""
    state: OperatorState = memo.state
    service = labels.get(endpoints.SERVICE_NAME_LABEL)
    for (ns, _name), runtime in list(state.runtimes.items()):
        if ns == namespace and service and runtime.follows(service):
            await runtime.endpoints_changed(_slices(kwargs, ns, service))


def _owner_reference(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": body.metadata.name,
        "uid": body.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


def endpoint_resolver(core: client.CoreV1Api, namespace: str) -> EndpointResolver:
    """Endpoints for the balancer, credentials read from their Secret at every connection
    attempt: a rotated Secret counts from the next reconnect, and a missing one refuses only
    its router, with the reason in that router's status."""

    async def resolve(router: RouterSpec) -> Endpoint:
        endpoint = Endpoint(router.i2cp.host, router.i2cp.port, router.i2cp.tls)
        ref = router.i2cp.credentials_secret_ref
        if ref is None:
            return endpoint
        try:
            username, password = await asyncio.to_thread(
                secrets.router_credentials, core, namespace, ref.name
            )
        except secrets.SecretError as exc:
            raise EndpointError(f"I2CP credentials: {exc}") from None
        return dataclasses.replace(endpoint, username=username, password=password)

    return resolve


async def host_destination(
    *,
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    status: kopf.Status,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **kwargs: Any,
) -> None:
    """The daemon: runs this destination's balancer until the object or operator goes."""
    assert namespace is not None  # the resource is namespaced
    state: OperatorState = memo.state
    generation = meta.get("generation")
    parsed = _parse_spec(dict(spec))
    secret = secrets.keys_secret_name(
        name, parsed.keys.secret_ref.name if parsed.keys.secret_ref else None
    )
    try:
        result = await asyncio.to_thread(
            secrets.load_or_create_keys, state.core, namespace, secret, _owner_reference(body)
        )
    except secrets.SecretError as exc:
        kopf.warn(body, reason="KeysUnavailable", message=str(exc))
        not_ready = failure_status(generation, "KeysUnavailable", str(exc), time.time())
        try:
            await ApiServerStatusSink(state.custom, namespace, name).write(not_ready)
        except Exception as write_error:  # kopf retries the daemon, which writes it again
            log.warning(
                "status not written",
                extra=fields(namespace=namespace, name=name, error=repr(write_error)),
            )
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from None
    if result.created:
        # kopf.event, not kopf.info: posting.level (WARNING) would swallow an info event.
        kopf.event(
            body,
            type="Normal",
            reason="KeysGenerated",
            message=f"new destination {result.keys.destination.b32} in Secret {secret}",
        )
    previous = [Condition.model_validate(c) for c in (status.get("conditions") or [])]
    owner = _owner_reference(body)
    service = parsed.routers_from.service.name if parsed.routers_from else None
    profiles = await asyncio.to_thread(
        profilestore.load_profiles, state.core, namespace, name, time.time()
    )

    async def save_profiles(current: PeerProfiles) -> None:
        await asyncio.to_thread(
            profilestore.save_profiles, state.core, namespace, name, current, owner
        )

    keys = result.keys
    clients = await asyncio.to_thread(clientstore.load_clients, state.core, namespace, name, keys)

    async def save_clients(current: Sequence[RememberedClient]) -> None:
        await asyncio.to_thread(
            clientstore.save_clients, state.core, namespace, name, current, keys, owner
        )

    runtime = DestinationRuntime(
        namespace, name, parsed, result.keys, generation, previous, state.custom,
        post_event=lambda kind, reason, message: kopf.event(
            body, type=kind, reason=reason, message=message
        ),
        resolve_endpoint=endpoint_resolver(state.core, namespace),
        peer_profiles=profiles,
        save_profiles=save_profiles,
        slices=_slices(kwargs, namespace, service),
        recent_clients=clients,
        save_clients=save_clients,
    )  # fmt: skip
    state.runtimes[(namespace, name)] = runtime
    runtime.start()
    log.info("hosting destination", extra=fields(namespace=namespace, name=name,
             destination=result.keys.destination.b32, routers=len(runtime.balancer.spec.routers),
             service=service or ""))  # fmt: skip
    failure: TaskEnded | None = None
    try:
        failure = await _until_stopped_or_failed(stopped, runtime)
    finally:
        deleted = bool(
            stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
        )
        state.runtimes.pop((namespace, name), None)
        await runtime.stop(destroy_sessions=deleted)
        log.info(
            "destination released" if deleted else "destination handed back",
            extra=fields(namespace=namespace, name=name, sessions_destroyed=deleted),
        )
    if failure is not None:
        # kopf starts the daemon afresh after its backoff: a new balancer and reporter.
        raise kopf.TemporaryError(str(failure), delay=RETRY_DELAY_S)


async def _until_stopped_or_failed(
    stopped: kopf.DaemonStopped, runtime: DestinationRuntime
) -> TaskEnded | None:
    """Wait for kopf to stop the daemon (None) or for a task of the runtime to end (what
    ended)."""

    async def until_stopped() -> None:
        await stopped.wait()

    stopping = asyncio.ensure_future(until_stopped())
    failing = asyncio.ensure_future(runtime.failed())
    try:
        await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (stopping, failing):
            waiter.cancel()
        await asyncio.gather(stopping, failing, return_exceptions=True)
    if failing.done() and not failing.cancelled() and failing.exception() is None:
        return failing.result()
    return None


async def spec_changed(
    *,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Reconfigure in place: same keys, healthy sessions kept."""
    state: OperatorState = memo.state
    runtime = state.runtimes.get((namespace or "", name))
    if runtime is None:
        return  # the daemon is (re)starting and reads the new spec itself
    parsed = _parse_spec(dict(spec))
    service = parsed.routers_from.service.name if parsed.routers_from else None
    await runtime.redeclare(
        parsed, meta.get("generation"), _slices(kwargs, namespace or "", service)
    )


def register(registry: kopf.OperatorRegistry) -> None:
    """Attach the handlers to `registry` (kept explicit so tests can build their own)."""
    kopf.on.startup(registry=registry)(lambda settings, **_: configure(settings))
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.daemon(
        GROUP, VERSION, PLURAL, registry=registry, id="host",
        cancellation_backoff=30.0, cancellation_timeout=15.0, backoff=RETRY_DELAY_S,
    )(host_destination)  # fmt: skip
    kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, field="spec", id="reconfigure")(
        spec_changed
    )
    # Only slices that belong to a Service; the index id is the handlers' keyword.
    service_slices = {endpoints.SERVICE_NAME_LABEL: kopf.PRESENT}
    kopf.index(*ENDPOINT_SLICES, registry=registry, id="router_endpoints", labels=service_slices)(
        index_router_endpoints
    )
    kopf.on.event(
        *ENDPOINT_SLICES, registry=registry, id="follow-endpoints", labels=service_slices,
        when=_followed,
    )(endpoints_changed)  # fmt: skip
