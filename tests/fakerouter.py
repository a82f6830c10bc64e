"""An in-process I2CP router for tests: real I2CP bytes on 127.0.0.1, answering the way
i2pd 2.45.1 does (libi2pd_client/I2CP.cpp), with switches for the ways routers fail.

What it copies from i2pd:
- the client's first byte must be 0x2A, else the connection is closed;
- frames are `u32 length | u8 type | body`; a length over 65535 closes the connection;
- GetDate is answered with SetDate echoing the client's version (i2pd < 2.58), or with the
  router's own API version (2.58+, `version="0.9.67"`);
- CreateSession: the SessionConfig signature is checked (invalid if wrong), a destination
  already hosted on this router is answered `invalid`, a second CreateSession on a connection
  `refused`; the session id is random;
- a RequestVariableLeaseSet must be answered by a valid CreateLeaseSet2 within 10 s, else
  the session is terminated (socket closed, no message), and no new request is sent while
  one is outstanding;
- an invalid LeaseSet2 or a wrong session id in CreateLeaseSet2 is logged and ignored;
- DestroySession: status `destroyed`, then the connection is closed;
- ReconfigureSession: `updated` when session id, destination and signature check out (the
  options it carries replace those of the session, the others stay);
- HostLookup by hash: HostReply with the destination, or result 1 when unknown.

Switches for failures: `die()` (connections cut, port closed until `revive()`), `hang()`
(nothing read or answered, sockets open, until `resume()`), `send_malformed(kind)`,
`disconnect(reason)`. Everything the client sends is recorded; `errors` lists anything a
well-behaved client should never cause. Tests wait on the records with `eventually`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from i2p_multihome.i2cp.session import Endpoint
from i2p_multihome.wire import codec, messages
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.structures import Destination, Lease, LeaseSet2

log = logging.getLogger("fakerouter")

_C = TypeVar("_C", bound=messages.ClientMessage)

HOST = "127.0.0.1"
LEASESET_CREATION_TIMEOUT_S = 10.0  # i2pd's I2CP_LEASESET_CREATION_TIMEOUT
I2PD_258_API_VERSION = "0.9.67"  # what i2pd 2.58+ puts in SetDate
MESSAGE_STATUS_ACCEPTED = 1

MALFORMED_KINDS = ("short_frame", "unknown_type", "oversize_length", "lying_lease_count")


async def eventually(
    predicate: Callable[[], object], within_s: float = 5.0, what: str = "condition"
) -> None:
    """Wait until `predicate()` is truthy; fail the test after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.005)


def gateway_hash(label: str, index: int) -> bytes:
    return hashlib.sha256(f"{label}/gateway/{index}".encode()).digest()


def make_leases(
    label: str,
    count: int,
    *,
    lifetime_s: int = 600,
    first_tunnel_id: int = 1000,
    now_ms: int | None = None,
) -> tuple[Lease, ...]:
    """`count` leases as i2pd reports them: end 600 s after creation, one gateway each
    (derived from `label`, so a lease's router is recognisable), staggered by a second."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return tuple(
        Lease(gateway_hash(label, i), first_tunnel_id + i, now + (lifetime_s - i) * 1000)
        for i in range(count)
    )


@dataclass(frozen=True)
class Received:
    connection: int
    message: messages.ClientMessage
    at: float  # the router's clock (see FakeRouter)


@dataclass(frozen=True)
class ReceivedLeaseSet:
    connection: int
    session_id: int
    raw: bytes  # the LeaseSet2 exactly as it arrived
    lease_set: LeaseSet2
    signature_ok: bool
    private_keys: tuple[messages.PrivateKey, ...] = field(repr=False)
    at: float  # the router's clock (see FakeRouter)
    answered_after_s: float | None  # since the outstanding RequestVariableLeaseSet

    @property
    def gateways(self) -> set[bytes]:
        return {lease.gateway for lease in self.lease_set.leases}


@dataclass(frozen=True)
class MissedDeadline:
    connection: int
    session_id: int
    requested_at: float


@dataclass
class LeaseRequest:
    """One RequestVariableLeaseSet sent; `answered` resolves with the CreateLeaseSet2."""

    connection: int
    session_id: int
    leases: tuple[Lease, ...]
    sent_at: float
    answered: asyncio.Future[ReceivedLeaseSet]
    timer: asyncio.Task[None] | None = None


@dataclass
class RouterConnection:
    """One client connection; i2pd's I2CPSession (at most one session per connection)."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    session_id: int | None = None
    destination: Destination | None = None
    options: dict[str, str] = field(default_factory=dict)
    client_version: str | None = None
    getdate_options: dict[str, str] = field(default_factory=dict, repr=False)
    protocol_byte_read: bool = False
    closed: bool = False
    pending: LeaseRequest | None = None
    task: asyncio.Task[None] | None = None


class FakeRouter:
    def __init__(
        self,
        name: str = "router",
        *,
        version: str | None = None,
        leases: Iterable[Lease] = (),
        auto_request: bool = True,
        create_status: int | None = None,
        lease_deadline_s: float = LEASESET_CREATION_TIMEOUT_S,
        known_destinations: Iterable[Destination] = (),
        destroy_reply_delay_s: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        session_ids: Iterable[int] = (),
    ) -> None:
        """`version`: None echoes the client's GetDate version (i2pd < 2.58), a string is
        sent as the router's own (2.58+). `leases` are requested right after a session is
        created when `auto_request`. `create_status` forces the CreateSession answer.
        `lease_deadline_s` is i2pd's LeaseSet creation timer; `destroy_reply_delay_s` holds
        back the `destroyed` status (to see that the client waits for it). `clock` stamps
        the records' `at` (a test with a virtual clock passes its own); i2pd's timers and
        `answered_after_s` stay on real time. `session_ids` answer the next CreateSession
        messages, in order, before random ones: i2pd draws 16 random bits, 0xFFFF included."""
        self.name = name
        self.version = version
        self.leases: tuple[Lease, ...] = tuple(leases)
        self.auto_request = auto_request
        self.create_status = create_status
        self.lease_deadline_s = lease_deadline_s
        self.known_destinations = {d.hash: d for d in known_destinations}
        self.destroy_reply_delay_s = destroy_reply_delay_s
        self.ssl_context = ssl_context  # I2CP over TLS, as Java routers with i2cp.SSL=true
        self._clock = clock
        self.connections: list[RouterConnection] = []
        self.received: list[Received] = []
        self.lease_sets: list[ReceivedLeaseSet] = []
        self.requests: list[LeaseRequest] = []
        self.missed_deadlines: list[MissedDeadline] = []
        self.skipped_requests = 0
        self.errors: list[str] = []
        self.hung = False
        # Called with every SendMessage(Expires) a client sends: the tests' "network".
        self.send_listeners: list[
            Callable[[messages.SendMessage | messages.SendMessageExpires], None]
        ] = []
        self._port = 0
        self._server: asyncio.Server | None = None
        self._rng = random.Random(name)
        self._forced_session_ids = list(session_ids)
        self._message_ids = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> FakeRouter:
        self._server = await asyncio.start_server(
            self._accept, HOST, self._port, ssl=self.ssl_context
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self._port)

    async def close(self) -> None:
        await self._stop_listening()
        for connection in list(self.connections):
            self._terminate(connection, abort=True)
        tasks = [c.task for c in self.connections if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> FakeRouter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- failure switches ---------------------------------------------------------------

    async def die(self, stay_down: bool = True) -> None:
        """Crash: every connection is cut without a message; with `stay_down` nothing
        listens on the port until `revive()`."""
        log.info("fake router dies", extra={"fields": {"router": self.name}})
        if stay_down:
            await self._stop_listening()
        for connection in list(self.connections):
            self._terminate(connection, abort=True)

    async def revive(self) -> None:
        if self._server is None:
            await self.start()

    def hang(self) -> None:
        """Stop reading and answering; sockets stay open (a wedged router process)."""
        self.hung = True
        for connection in self.connections:
            if connection.task is not None:
                connection.task.cancel()
            if connection.pending is not None and connection.pending.timer is not None:
                connection.pending.timer.cancel()

    def resume(self) -> None:
        self.hung = False
        for connection in self.connections:
            if not connection.closed:
                connection.task = asyncio.create_task(self._serve(connection))

    async def send_malformed(self, kind: str, connection: RouterConnection | None = None) -> None:
        """Bytes no I2CP router may send, on `connection` or every live session.
        short_frame: a header announcing 100 bytes, 10 bytes, then close.
        unknown_type: a well-formed frame of type 99.
        oversize_length: a header announcing 1 MiB.
        lying_lease_count: RequestVariableLeaseSet claiming 5 leases, carrying 2."""
        targets = [connection] if connection is not None else self.sessions
        for target in targets:
            session_id = target.session_id or 0
            match kind:
                case "short_frame":
                    target.writer.write(codec.u32(100) + codec.u8(37) + bytes(10))
                    with contextlib.suppress(ConnectionError):
                        await target.writer.drain()
                    self._terminate(target)
                    continue
                case "unknown_type":
                    frame = codec.u32(3) + codec.u8(99) + b"\x00\x01\x02"
                case "oversize_length":
                    frame = codec.u32(1 << 20) + codec.u8(messages.RequestVariableLeaseSet.TYPE)
                case "lying_lease_count":
                    two = b"".join(lease.to_bytes() for lease in make_leases(self.name, 2))
                    body = codec.u16(session_id) + codec.u8(5) + two
                    frame = codec.u32(len(body)) + codec.u8(37) + body
                case _:
                    raise ValueError(f"unknown malformed kind {kind!r}; one of {MALFORMED_KINDS}")
            target.writer.write(frame)
            with contextlib.suppress(ConnectionError):
                await target.writer.drain()

    async def disconnect(self, reason: str) -> None:
        for connection in self.sessions:
            await self._send(connection, messages.Disconnect(reason))
            self._terminate(connection)

    # --- lease requests -----------------------------------------------------------------

    async def deliver(self, payload: bytes) -> None:
        """A MessagePayload to the newest session, as if a remote client sent `payload`."""
        live = [c for c in self.connections if c.session_id is not None and not c.closed]
        if not live:
            raise AssertionError(f"{self.name} has no session to deliver to")
        connection = live[-1]
        self._message_ids += 1
        await self._send(
            connection,
            messages.MessagePayload(connection.session_id or 0, self._message_ids, payload),
        )

    async def request_leases(
        self, leases: Iterable[Lease] | None = None, connection: RouterConnection | None = None
    ) -> list[LeaseRequest]:
        """Send RequestVariableLeaseSet (default: `self.leases`) on `connection` or every
        session. Like i2pd, a session with a request outstanding gets none."""
        if leases is not None:
            self.leases = tuple(leases)
        sent = []
        for target in [connection] if connection is not None else self.sessions:
            request = await self._request(target)
            if request is not None:
                sent.append(request)
        return sent

    async def _request(self, connection: RouterConnection) -> LeaseRequest | None:
        if connection.session_id is None or connection.closed:
            return None
        if connection.pending is not None:
            self.skipped_requests += 1
            return None
        request = LeaseRequest(
            connection.index,
            connection.session_id,
            self.leases,
            time.monotonic(),
            asyncio.get_running_loop().create_future(),
        )
        connection.pending = request
        self.requests.append(request)
        await self._send(
            connection, messages.RequestVariableLeaseSet(connection.session_id, self.leases)
        )
        request.timer = asyncio.create_task(self._lease_deadline(connection, request))
        return request

    async def _lease_deadline(self, connection: RouterConnection, request: LeaseRequest) -> None:
        await asyncio.sleep(self.lease_deadline_s)
        if connection.pending is request:
            log.warning(
                "LeaseSet creation timeout expired; terminating session",
                extra={"fields": {"router": self.name, "session_id": request.session_id}},
            )
            self.missed_deadlines.append(
                MissedDeadline(connection.index, request.session_id, request.sent_at)
            )
            connection.pending = None
            self._terminate(connection)

    # --- records ------------------------------------------------------------------------

    @property
    def sessions(self) -> list[RouterConnection]:
        """Connections holding a live session."""
        return [c for c in self.connections if c.session_id is not None and not c.closed]

    def messages(self, kind: type[_C]) -> list[_C]:
        return [r.message for r in self.received if isinstance(r.message, kind)]

    @property
    def creates(self) -> list[messages.CreateSession]:
        return self.messages(messages.CreateSession)

    @property
    def destroys(self) -> list[messages.DestroySession]:
        return self.messages(messages.DestroySession)

    @property
    def reconfigures(self) -> list[messages.ReconfigureSession]:
        return self.messages(messages.ReconfigureSession)

    @property
    def session_ids(self) -> list[int]:
        """Every session id this router ever handed out, in order."""
        return [c.session_id for c in self.connections if c.session_id is not None]

    @property
    def last_lease_set(self) -> ReceivedLeaseSet | None:
        return self.lease_sets[-1] if self.lease_sets else None

    # --- the I2CP server ----------------------------------------------------------------

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = RouterConnection(len(self.connections), reader, writer)
        self.connections.append(connection)
        if not self.hung:
            connection.task = asyncio.create_task(self._serve(connection))

    async def _serve(self, connection: RouterConnection) -> None:
        reader = connection.reader
        try:
            if not connection.protocol_byte_read:
                first = await reader.readexactly(1)
                connection.protocol_byte_read = True
                if first[0] != messages.PROTOCOL_BYTE:
                    self._error(f"protocol byte {first[0]:#x}")
                    self._terminate(connection)
                    return
            while not connection.closed:
                header = await reader.readexactly(messages.HEADER_SIZE)
                length, msg_type = int.from_bytes(header[:4], "big"), header[4]
                if length > messages.MAX_BODY:
                    self._error(f"unexpected payload length {length}")
                    self._terminate(connection)
                    return
                body = await reader.readexactly(length)
                try:
                    message = messages.decode_client_message(msg_type, body)
                except WireError as exc:
                    self._error(f"message type {msg_type}: {exc}")
                    continue
                self.received.append(Received(connection.index, message, self._clock()))
                await self._handle(connection, message)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._terminate(connection)

    async def _handle(self, connection: RouterConnection, message: messages.ClientMessage) -> None:
        match message:
            case messages.GetDate():
                connection.client_version = message.version
                connection.getdate_options = dict(message.options)
                version = self.version if self.version is not None else message.version
                await self._send(connection, messages.SetDate(int(time.time() * 1000), version))
            case messages.CreateSession():
                await self._create_session(connection, message)
            case messages.ReconfigureSession():
                await self._reconfigure(connection, message)
            case messages.DestroySession():
                await asyncio.sleep(self.destroy_reply_delay_s)
                await self._status(connection, messages.STATUS_DESTROYED)
                self._terminate(connection)
            case messages.CreateLeaseSet2():
                self._lease_set_created(connection, message)
            case messages.HostLookup():
                await self._host_lookup(connection, message)
            case messages.SendMessage() | messages.SendMessageExpires():
                for listener in self.send_listeners:
                    listener(message)
                if message.nonce:
                    await self._send(
                        connection,
                        messages.MessageStatus(
                            connection.session_id or 0, len(self.received),
                            MESSAGE_STATUS_ACCEPTED, 0, message.nonce,
                        ),
                    )  # fmt: skip
            case messages.Disconnect():
                self._terminate(connection)

    async def _create_session(
        self, connection: RouterConnection, message: messages.CreateSession
    ) -> None:
        config = message.config
        session_id = self._new_session_id()
        if connection.session_id is not None:
            await self._send(
                connection, messages.SessionStatus(session_id, messages.STATUS_REFUSED)
            )
            return
        if not config.destination.verify(config.signed_part(), config.signature):
            self._error("CreateSession signature verification failed")
            await self._send(
                connection, messages.SessionStatus(session_id, messages.STATUS_INVALID)
            )
            return
        if any(c.destination == config.destination for c in self.sessions):
            log.info("duplicate destination refused", extra={"fields": {"router": self.name}})
            await self._send(
                connection, messages.SessionStatus(session_id, messages.STATUS_INVALID)
            )
            return
        if self.create_status is not None and self.create_status != messages.STATUS_CREATED:
            await self._send(connection, messages.SessionStatus(session_id, self.create_status))
            return
        connection.session_id = session_id
        connection.destination = config.destination
        connection.options = dict(config.options)
        await self._send(connection, messages.SessionStatus(session_id, messages.STATUS_CREATED))
        # i2pd's CreateNewLeaseSet sends RequestVariableLeaseSet only when the id is not 0xFFFF.
        if self.auto_request and self.leases and session_id != messages.NO_SESSION:
            await self._request(connection)

    async def _reconfigure(
        self, connection: RouterConnection, message: messages.ReconfigureSession
    ) -> None:
        config = message.config
        ok = (
            message.session_id == connection.session_id
            and config.destination == connection.destination
            and config.destination.verify(config.signed_part(), config.signature)
        )
        if ok:
            # As i2pd and Java do: the options it carries change, the others stay.
            connection.options = {**connection.options, **config.options}
        else:
            self._error("ReconfigureSession rejected")
        await self._status(connection, messages.STATUS_UPDATED if ok else messages.STATUS_INVALID)

    def _lease_set_created(
        self, connection: RouterConnection, message: messages.CreateLeaseSet2
    ) -> None:
        if message.session_id != connection.session_id:
            self._error(f"CreateLeaseSet2 for unexpected session id {message.session_id}")
            return
        lease_set = message.lease_set
        signature_ok = lease_set.destination == connection.destination and lease_set.verify()
        pending = connection.pending
        record = ReceivedLeaseSet(
            connection.index,
            message.session_id,
            lease_set.to_bytes(),
            lease_set,
            signature_ok,
            message.private_keys,
            self._clock(),
            time.monotonic() - pending.sent_at if pending is not None else None,
        )
        self.lease_sets.append(record)
        if not signature_ok:
            self._error("invalid LeaseSet2")  # i2pd ignores it; the timer keeps running
            return
        if pending is not None:
            connection.pending = None
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.answered.done():
                pending.answered.set_result(record)

    async def _host_lookup(
        self, connection: RouterConnection, message: messages.HostLookup
    ) -> None:
        if message.session_id not in (connection.session_id, messages.NO_SESSION):
            self._error(f"HostLookup for unexpected session id {message.session_id}")
            return
        found = self.known_destinations.get(message.hash) if message.hash is not None else None
        await self._send(
            connection,
            messages.HostReply(
                connection.session_id or messages.NO_SESSION,
                message.request_id,
                0 if found is not None else 1,
                found,
            ),
        )

    # --- helpers ------------------------------------------------------------------------

    def _new_session_id(self) -> int:
        if self._forced_session_ids:
            return self._forced_session_ids.pop(0)
        taken = set(self.session_ids)
        while True:
            candidate = self._rng.randrange(0, messages.NO_SESSION)
            if candidate not in taken:
                return candidate

    async def _status(self, connection: RouterConnection, status: int) -> None:
        await self._send(connection, messages.SessionStatus(connection.session_id or 0, status))

    async def _send(self, connection: RouterConnection, message: messages.Message) -> None:
        if connection.closed:
            return
        connection.writer.write(messages.encode_frame(message))
        with contextlib.suppress(ConnectionError):
            await connection.writer.drain()

    def _terminate(self, connection: RouterConnection, abort: bool = False) -> None:
        if connection.closed:
            return
        connection.closed = True
        if connection.pending is not None and connection.pending.timer is not None:
            connection.pending.timer.cancel()
        connection.pending = None
        if abort:
            connection.writer.transport.abort()
        else:
            connection.writer.close()

    def _error(self, what: str) -> None:
        log.warning("fake router: %s", what, extra={"fields": {"router": self.name}})
        self.errors.append(what)


def options_of(router: FakeRouter) -> Mapping[str, str]:
    """The options of the router's newest session."""
    sessions = router.sessions
    assert sessions, f"{router.name} has no session"
    return sessions[-1].options
