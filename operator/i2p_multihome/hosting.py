"""One destination hosted by this process, whatever runs it (`balance` or the operator): the
balancer that keeps its sessions and LeaseSet, the data plane that serves what clients send,
and the status reporter with the caller's sink. Each part runs as a task that must not end
on its own; `failed` tells when one does."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from i2p_multihome.balancer.engine import Balancer, EndpointResolver, Timing, plain_endpoint
from i2p_multihome.balancer.events import BalancerEvent, FailoverPublished, LeaseSetPublished
from i2p_multihome.balancer.profiles import PeerProfiles
from i2p_multihome.balancer.reporter import StatusReporter, StatusSink
from i2p_multihome.balancer.snapshot import BalancerSnapshot
from i2p_multihome.clock import SYSTEM_CLOCK, Clock
from i2p_multihome.dataplane import DataPlane
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import Condition, MultihomedDestinationSpec
from i2p_multihome.streaming.routes import KEPT_ACROSS_RESTART, RememberedClient
from i2p_multihome.supervision import first_to_end
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Destination

log = logging.getLogger(__name__)

# Peer profiles are saved this often and when the destination is stopped: a crash loses
# at most this much of what the balancer learned (the profiles remember 48 h).
PROFILE_SAVE_INTERVAL_S = 300.0
# The recent clients are saved this often when they changed, and when the destination is
# stopped: a crash forgets at most the clients that came this long before it.
CLIENT_SAVE_INTERVAL_S = 60.0

ProfileSaver = Callable[[PeerProfiles], Awaitable[None]]
ClientSaver = Callable[[Sequence[RememberedClient]], Awaitable[None]]


class TaskEnded(Exception):
    """A task of a hosted destination that must run until stopped ended on its own."""


class HostedDestination:
    def __init__(
        self,
        name: str,
        spec: MultihomedDestinationSpec,
        keys: DestinationKeys,
        sink: StatusSink,
        *,
        namespace: str = "default",
        conditions: Sequence[Condition] = (),
        generation: int | None = None,
        on_event: Callable[[BalancerEvent], None] = lambda event: None,
        on_snapshot: Callable[[BalancerSnapshot, float], None] = lambda snapshot, now: None,
        resolve_endpoint: EndpointResolver = plain_endpoint,
        timing: Timing | None = None,
        clock: Clock = SYSTEM_CLOCK,
        log_fields: Mapping[str, object] | None = None,
        peer_profiles: PeerProfiles | None = None,
        save_profiles: ProfileSaver | None = None,
        profile_save_interval_s: float = PROFILE_SAVE_INTERVAL_S,
        recent_clients: Sequence[RememberedClient] = (),
        save_clients: ClientSaver | None = None,
        client_save_interval_s: float = CLIENT_SAVE_INTERVAL_S,
    ) -> None:
        """`recent_clients`: the clients a previous run kept (`save_clients` stores them):
        their sessions went with that run's, so once the first LeaseSet is out each is
        answered through a router that holds it, and pinged from there."""
        self._log_fields = dict(log_fields or {"destination": keys.destination.b32})
        self.dataplane = DataPlane(
            keys,
            spec,
            namespace,
            self._send,
            clock,
            log_fields=self._log_fields,
            on_change=self._changed,
            on_client=self._client_arrived,
        )
        self._on_event = on_event
        self.balancer = Balancer(
            name,
            spec,
            keys,
            on_change=self._changed,
            on_event=self._balancer_event,
            on_payload=self.dataplane.receive,
            resolve_endpoint=resolve_endpoint,
            timing=timing,
            clock=clock,
            peer_profiles=peer_profiles,
        )
        self._clock = clock
        self._save_profiles = save_profiles
        self._profile_save_interval_s = profile_save_interval_s
        self._to_restore = list(recent_clients[:KEPT_ACROSS_RESTART])
        self._save_clients = save_clients
        self._client_save_interval_s = client_save_interval_s
        self._clients_saved: frozenset[bytes] | None = None
        self.reporter = StatusReporter(
            self.snapshot,
            sink,
            conditions=conditions,
            generation=generation,
            clock=clock,
            on_snapshot=on_snapshot,
            log_fields=self._log_fields,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def snapshot(self) -> BalancerSnapshot:
        return dataclasses.replace(
            self.balancer.snapshot(), streams=self.dataplane.streams_by_router()
        )

    def start(self) -> None:
        self._tasks = {
            "balancer": asyncio.create_task(self.balancer.run(), name="balancer"),
            "data plane": asyncio.create_task(self.dataplane.run(), name="data-plane"),
            "status": asyncio.create_task(self.reporter.run(), name="status"),
        }
        if self._save_profiles is not None:
            self._tasks["profiles"] = asyncio.create_task(
                self._keep_profiles(), name="peer-profiles"
            )
        if self._save_clients is not None:
            self._tasks["recent clients"] = asyncio.create_task(
                self._keep_clients(), name="recent-clients"
            )

    async def failed(self) -> TaskEnded:
        """Wait until a task ends on its own (a bug: each runs until stopped); what ended
        and why, logged with its traceback."""
        name, error = await first_to_end(self._tasks)
        reason = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        log.error(
            "destination task ended unexpectedly",
            exc_info=error,
            extra=fields(**self._log_fields, task=name, error=reason),
        )
        return TaskEnded(f"the {name} task ended unexpectedly ({reason})")

    async def update(self, spec: MultihomedDestinationSpec, generation: int | None) -> None:
        self.reporter.generation = generation
        self.dataplane.apply_spec(spec)
        await self.balancer.apply_spec(spec)
        self.reporter.changed()

    async def stop(self, destroy_sessions: bool, keep_profiles: bool = True) -> None:
        """With `destroy_sessions`, clients' streams are reset and every router drops the
        destination; without, the sessions just close (a takeover or restart follows). The
        peer profiles are saved once more unless not `keep_profiles` (a deleted
        destination's go with it)."""
        if destroy_sessions:
            await self.dataplane.shutdown()
        await self.balancer.stop(destroy_sessions=destroy_sessions)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if keep_profiles:
            await self.save_profiles()
            await self.save_clients()

    async def save_profiles(self) -> bool:
        """Store the balancer's peer profiles now; False (logged) when that failed."""
        if self._save_profiles is None:
            return False
        try:
            await self._save_profiles(self.balancer.peer_profiles)
        except Exception as exc:  # a failed save costs only what was learned since
            log.warning(
                "peer profiles not saved", extra=fields(**self._log_fields, error=repr(exc))
            )
            return False
        return True

    def recent_clients(self) -> list[RememberedClient]:
        """The clients to keep across a restart: the data plane's, and those of the previous
        run not restored yet (none is forgotten by a restart before the first LeaseSet)."""
        current = self.dataplane.remembered_clients()
        known = {client.address.hash for client in current}
        waiting = [c for c in self._to_restore if c.address.hash not in known]
        merged = sorted([*current, *waiting], key=lambda c: c.last_heard_s, reverse=True)
        return merged[:KEPT_ACROSS_RESTART]

    async def save_clients(self, only_if_changed: bool = False) -> bool:
        """Store the recent clients now (with `only_if_changed`, only when other clients
        than at the last save); False (logged) when that failed."""
        if self._save_clients is None:
            return False
        clients = self.recent_clients()
        which = frozenset(client.address.hash for client in clients)
        if only_if_changed and which == self._clients_saved:
            return True
        try:
            await self._save_clients(clients)
        except Exception as exc:  # a failed save costs the clients that came since
            log.warning(
                "recent clients not saved", extra=fields(**self._log_fields, error=repr(exc))
            )
            return False
        self._clients_saved = which
        return True

    async def _keep_clients(self) -> None:
        while True:
            await self._clock.sleep(self._client_save_interval_s)
            await self.save_clients(only_if_changed=True)

    async def _keep_profiles(self) -> None:
        while True:
            await self._clock.sleep(self._profile_save_interval_s)
            await self.save_profiles()

    async def report(self) -> bool:
        """Write the status now (the last one, after `stop`)."""
        return await self.reporter.report()

    def _balancer_event(self, event: BalancerEvent) -> None:
        if isinstance(event, FailoverPublished | LeaseSetPublished) and self._to_restore:
            self._restore_clients(event.move_to)
        if isinstance(event, FailoverPublished):
            # The survivors hold a LeaseSet without the lost routers now: a new session
            # from one of them carries it to the client.
            moved = self.dataplane.move_clients(event.lost, event.move_to)
            if moved:
                log.info(
                    "clients moved off lost routers",
                    extra=fields(
                        **self._log_fields, lost=",".join(event.lost),
                        to=",".join(event.move_to), clients=moved,
                    ),
                )  # fmt: skip
        self._on_event(event)

    def _restore_clients(self, serving: Sequence[str]) -> None:
        """The previous run's clients go to `serving`, which hold the first LeaseSet."""
        if not serving:
            return
        restored = self.dataplane.restore_clients(self._to_restore, serving)
        log.info(
            "recent clients of the previous run restored",
            extra=fields(
                **self._log_fields, kept=len(self._to_restore), restored=restored,
                to=",".join(serving),
            ),
        )  # fmt: skip
        self._to_restore = []

    def _client_arrived(self, router: str) -> None:
        self.balancer.renew_affinity(router)

    def _changed(self) -> None:
        self.reporter.changed()

    async def _send(self, router: str, to: Destination, payload: bytes) -> bool:
        return await self.balancer.send_payload(router, to, payload)
