"""An I2CP session for one destination on one router: handshake, dispatch, heartbeat.

The session knows nothing of multihoming: the balancer hands it callbacks for lease requests
and incoming payloads, and tells it what to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from i2p_multihome.clock import SYSTEM_CLOCK, Clock
from i2p_multihome.i2cp.connection import ConnectionClosed, I2CPConnection, RouterProtocolError
from i2p_multihome.logs import fields
from i2p_multihome.wire import messages
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Destination, Lease, LeaseSet2, SessionConfig

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=messages.RouterMessage)


class SessionRefused(Exception):
    """The router answered CreateSession with something other than `created`."""


class SessionLost(Exception):
    """The session ended: connection lost, router disconnected, or it stopped answering."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        # Java routers serve I2CP TLS with a self-signed certificate; I2CP has no CA story,
        # so the channel is encrypted but not authenticated (as in Java's own client).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context


LeaseRequestHandler = Callable[["RouterSession", tuple[Lease, ...]], Awaitable[None]]
PayloadHandler = Callable[["RouterSession", messages.MessagePayload], Awaitable[None]]


class RouterSession:
    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        keys: DestinationKeys,
        *,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat_s: float = 10.0,
        handshake_timeout_s: float = 15.0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self._keys = keys
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._handshake_timeout_s = handshake_timeout_s
        self._connection: I2CPConnection | None = None
        self.session_id: int | None = None
        self.router_version: str | None = None
        self._last_received = 0.0
        self._request_ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._lookups: dict[int, asyncio.Future[Destination | None]] = {}
        self._running = False  # run() owns the reader; others must not read
        self._destroyed = asyncio.Event()

    @property
    def established(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.closed
            and self.session_id is not None
        )

    async def connect(self, sent_version: str) -> str:
        """Open the connection and exchange GetDate/SetDate; returns the router's version."""
        self._connection = await I2CPConnection.open(
            self.endpoint.host,
            self.endpoint.port,
            ssl_context=self.endpoint.ssl_context(),
            connect_timeout_s=self._handshake_timeout_s,
        )
        auth = {}
        if self.endpoint.username is not None and self.endpoint.password is not None:
            auth = {
                "i2cp.username": self.endpoint.username,
                "i2cp.password": self.endpoint.password,
            }
        await self._connection.send(messages.GetDate(sent_version, auth))
        reply = await self._expect(messages.SetDate)
        self.router_version = reply.version
        return reply.version

    async def create(self, options: Mapping[str, str]) -> int:
        """CreateSession with `options`; returns the session id or raises SessionRefused."""
        config = SessionConfig.build(
            self._keys.destination, options, self._wall_clock_ms(), self._keys.sign
        )
        await self._require_connection().send(messages.CreateSession(config))
        status = await self._expect(messages.SessionStatus)
        if status.status != messages.STATUS_CREATED:
            await self.close()
            raise SessionRefused(f"router answered CreateSession with '{status.status_name}'")
        if status.session_id == messages.NO_SESSION:
            # i2pd draws the id from 16 random bits and never asks a session with the id that
            # means "no session" for a LeaseSet (I2CP.cpp, CreateNewLeaseSet): such a session
            # would never get leases. Give it back; the caller's retry draws a new id.
            self.session_id = status.session_id
            await self.destroy()
            raise SessionRefused(
                "router gave the session id 0xFFFF, which I2CP reserves for 'no session'"
            )
        self.session_id = status.session_id
        return status.session_id

    async def reconfigure(self, options: Mapping[str, str]) -> None:
        """ReconfigureSession in place; the router answers asynchronously (logged)."""
        config = SessionConfig.build(
            self._keys.destination, options, self._wall_clock_ms(), self._keys.sign
        )
        await self._require_connection().send(
            messages.ReconfigureSession(self._require_session(), config)
        )

    async def send_lease_set(self, lease_set: LeaseSet2) -> None:
        private = tuple(
            messages.PrivateKey(crypto_type, key) for crypto_type, key in self._keys.private_keys
        )
        await self._require_connection().send(
            messages.CreateLeaseSet2(self._require_session(), lease_set, private)
        )

    async def send_payload(
        self, to: Destination, payload: messages.Payload, expires_ms: int
    ) -> int:
        nonce = next(self._nonces) & 0xFFFFFFFF or 1
        await self._require_connection().send(
            messages.SendMessageExpires(
                self._require_session(), to, payload.encode(), nonce, 0, expires_ms
            )
        )
        return nonce

    async def send(self, to: Destination, payload: bytes) -> None:
        """SendMessage with nonce 0: the router sends no MessageStatus back (i2pd I2CP.cpp),
        which the data plane does not need: streaming has its own acks."""
        await self._require_connection().send(
            messages.SendMessage(self._require_session(), to, payload, 0)
        )

    async def lookup(self, hash32: bytes, timeout_s: float = 30.0) -> Destination | None:
        request_id = next(self._request_ids) & 0xFFFFFFFF
        future: asyncio.Future[Destination | None] = asyncio.get_running_loop().create_future()
        self._lookups[request_id] = future
        try:
            await self._require_connection().send(
                messages.HostLookup(
                    self._require_session(), request_id, int(timeout_s * 1000), hash32
                )
            )
            return await asyncio.wait_for(future, timeout_s + 5)
        finally:
            self._lookups.pop(request_id, None)

    async def destroy(self) -> None:
        """DestroySession, wait briefly for the router's `destroyed`, then close. While
        `run()` is reading, it is the one that sees the answer."""
        if self.established and self._connection is not None and self.session_id is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._connection.send(messages.DestroySession(self.session_id))
                waiter = self._destroyed.wait() if self._running else self._drain_until_destroyed()
                with contextlib.suppress(TimeoutError, ConnectionClosed, RouterProtocolError):
                    await asyncio.wait_for(waiter, 5.0)
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self.session_id = None
        for future in self._lookups.values():
            if not future.done():
                future.set_result(None)

    async def run(self, on_lease_request: LeaseRequestHandler, on_payload: PayloadHandler) -> None:
        """Dispatch router messages until the session ends; always raises SessionLost."""
        connection = self._require_connection()
        self._last_received = self._clock.monotonic()
        self._running = True
        heartbeat = asyncio.create_task(self._heartbeat(connection))
        try:
            while True:
                try:
                    message = await connection.receive()
                except (ConnectionClosed, RouterProtocolError) as exc:
                    raise SessionLost(str(exc)) from exc
                self._last_received = self._clock.monotonic()
                await self._dispatch(message, on_lease_request, on_payload)
        finally:
            self._running = False
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.close()

    async def _dispatch(
        self,
        message: messages.RouterMessage,
        on_lease_request: LeaseRequestHandler,
        on_payload: PayloadHandler,
    ) -> None:
        match message:
            case messages.RequestVariableLeaseSet(leases=leases):
                await on_lease_request(self, leases)
            case messages.MessagePayload():
                await on_payload(self, message)
            case messages.HostReply(request_id=request_id, destination=destination):
                future = self._lookups.get(request_id)
                if future is not None and not future.done():
                    future.set_result(destination)
            case messages.SessionStatus(status=messages.STATUS_DESTROYED):
                self._destroyed.set()
                raise SessionLost("router destroyed the session")
            case messages.SessionStatus():
                log.info(
                    "session status",
                    extra=fields(router=self.name, status=message.status_name),
                )
            case messages.Disconnect(reason=reason):
                raise SessionLost(f"router disconnected: {reason}")
            case messages.SetDate() | messages.MessageStatus():
                pass

    async def _heartbeat(self, connection: I2CPConnection) -> None:
        """GetDate when the router has been quiet; close if it stays silent (a hung router
        keeps its TCP connection open, so silence is the only sign)."""
        while not connection.closed:
            await self._clock.sleep(self._heartbeat_s / 2)
            quiet = self._clock.monotonic() - self._last_received
            if quiet > 2 * self._heartbeat_s:
                log.warning(
                    "router stopped answering; dropping session",
                    extra=fields(router=self.name, silent_s=round(quiet, 1)),
                )
                await connection.close()
                return
            if quiet > self._heartbeat_s:
                with contextlib.suppress(ConnectionClosed):
                    await connection.send(messages.GetDate(self.router_version or ""))

    async def _drain_until_destroyed(self) -> None:
        connection = self._require_connection()
        while True:
            message = await connection.receive()
            if (
                isinstance(message, messages.SessionStatus)
                and message.status == messages.STATUS_DESTROYED
            ):
                return

    async def _expect(self, kind: type[_M]) -> _M:
        """The next message of type `kind` during the handshake, within the timeout."""
        connection = self._require_connection()
        try:
            async with asyncio.timeout(self._handshake_timeout_s):
                while True:
                    message = await connection.receive()
                    if isinstance(message, kind):
                        return message
                    if isinstance(message, messages.Disconnect):
                        raise SessionRefused(f"router disconnected: {message.reason}")
        except TimeoutError:
            await self.close()
            raise SessionLost(f"no {kind.__name__} within {self._handshake_timeout_s}s") from None

    def _wall_clock_ms(self) -> int:
        return int(self._clock.wall() * 1000)

    def _require_connection(self) -> I2CPConnection:
        if self._connection is None or self._connection.closed:
            raise ConnectionClosed(f"no connection to router {self.name}")
        return self._connection

    def _require_session(self) -> int:
        if self.session_id is None:
            raise ConnectionClosed(f"no session on router {self.name}")
        return self.session_id
