"""A small SAM v3.1 client (asyncio) for the test bed: i2pd's SAM bridge on testnet routers.

The e2e tests and benchmarks use it as an ordinary I2P client would: STREAM and DATAGRAM
sessions on TRANSIENT destinations, NAMING LOOKUP, STREAM CONNECT/ACCEPT/FORWARD, and
repliable datagrams through the bridge's UDP port. Spec: geti2p.net/en/docs/api/samv3.

What i2pd 2.45.1 does that the spec does not say (libi2pd_client/SAM.cpp and SAM.h there):

- Versions: it speaks 3.0 and 3.1 only, and a MAX above 3.1 makes it pick MIN ("MIN=3.0
  MAX=3.3" gets 3.0; SAMVersionAcceptable, SAM.cpp 85-88, negotiation 142-155), so HELLO
  asks for exactly 3.1. A second HELLO on a connection is an unknown command and closes it
  (SAM.cpp 298).
- SESSION CREATE answers only once the new destination has tunnels, and it looks every 20 s
  (SAM_SESSION_READINESS_CHECK_INTERVAL, SAM.h 33; SAM.cpp 426-455): a TRANSIENT session
  takes 20 s to create, however fast its tunnels build.
- SESSION STATUS carries the private keys (SendSessionCreateReplyOk); the public destination
  is their first part.
- TRANSIENT destinations are DSA_SHA1 with ElGamal unless SIGNATURE_TYPE says otherwise
  (CreateSession, SAM.cpp 1349-1374), and a destination without `i2cp.leaseSetEncType` gets
  only its identity's crypto type (Destination.cpp 919-949), i.e. no ECIES-X25519 key, where
  i2pd's own client and server tunnels default to "0,4". Sessions here ask for Ed25519 and
  both keys unless told otherwise.
- Parameters are split at spaces with no quoting (ExtractParams, SAM.cpp 874-891): a value
  cannot hold a space.
- STREAM CONNECT: a DESTINATION containing ".i2p" is resolved as an address (a b32 works),
  anything else is read as base64 (SAM.cpp 504-515). RESULT=OK comes as soon as the LeaseSet
  is known and the SYN is queued, not when the peer accepts (Connect, SAM.cpp 543-555): a
  peer that never accepts shows up as EOF later. An unknown LeaseSet is CANT_REACH_PEER.
- STREAM ACCEPT answers OK at once; the peer's base64 destination then arrives as a line
  before its data. An incoming stream that finds no acceptor waits 10 s and is dropped
  (PENDING_INCOMING_TIMEOUT, Streaming.h 64), so accept before the peer connects.
- STREAM FORWARD ignores HOST: it connects to the address the FORWARD command came from, at
  PORT (SAM.cpp 634-640). The forwarded connection starts with the peer's base64
  destination line unless SILENT=true.
- Streams do not half-close: EOF from our side ends the whole stream (HandleReceived,
  SAM.cpp 900-906). Once the peer has closed, i2pd writes us at most one more 8 KiB read of
  what it still buffers and then neither writes nor closes (I2PReceive, SAM.cpp 936-949):
  read what the protocol says is coming (Content-Length), not until EOF.
- NAMING LOOKUP of an unknown b32 answers RESULT=INVALID_KEY after i2pd's LeaseSet request
  gives up (HandleNamingLookupLeaseSetRequestComplete, SAM.cpp 844-860), not KEY_NOT_FOUND.
- With the address book disabled, NAMING LOOKUP of a b32, STREAM CONNECT to a base64
  destination and every accepted stream kill the router (see testnet/i2pd.py
  ADDRESS_BOOK_FILES): testnet routers keep it enabled.
- Datagrams: the UDP port is the TCP port less one (SAM.cpp 1245). A datagram sent there is
  "3.0 ID DESTINATION\n" + payload; DESTINATION must be full base64 (a b32 is read as
  garbage and sent nowhere) and nothing may follow it on the line (HandleReceivedDatagram,
  SAM.cpp 1459-1508). Datagrams for a session created with HOST and PORT are forwarded to
  that UDP address as "<base64 sender>\n" + payload, without the FROM_PORT/TO_PORT of SAM
  3.2 (HandleI2PDatagramReceive, SAM.cpp 1107-1122). Payloads are sent to port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self

from i2p_multihome.balancer.policy import rotated
from i2p_multihome.logs import fields
from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.encoding import b64decode, hash_from_b32
from i2p_multihome.wire.structures import SIG_TYPE_ED25519, Destination

log = logging.getLogger(__name__)

SAM_VERSION = "3.1"
# Longest reply line accepted, and the StreamReader's buffer limit. i2pd's own lines fit its
# 8 KiB buffer (SAM_SOCKET_BUFFER_SIZE); a SESSION STATUS with Ed25519 keys is under 1 KiB.
MAX_LINE = 64 * 1024
# i2pd reads at most this much from its UDP port, header included (MAX_DATAGRAM_SIZE).
MAX_DATAGRAM = 32768
# Both LeaseSet encryption keys, as i2pd gives its own tunnels (ReadI2CPOptions "0,4").
DEFAULT_SESSION_OPTIONS: Mapping[str, str] = {"i2cp.leaseSetEncType": "4,0"}
# SESSION CREATE takes at least one 20 s readiness check on i2pd 2.45.1.
SESSION_TIMEOUT_S = 90.0
RECEIVED_QUEUE = 4096
_SAFE_VALUE = re.compile(r"[^\s\"]{1,4096}")
_TOKEN = re.compile(r'([^\s=]+)(?:=("(?:[^"\\]|\\.)*"|\S*))?')

Style = Literal["STREAM", "DATAGRAM"]
Address = tuple[str, int]


def explicit_peers_options(peer_hashes: Iterable[str], first: int = 0) -> dict[str, str]:
    """Session (or client tunnel) options whose tunnels go only through `peer_hashes`,
    starting the list at its `first` (modulo its length) peer.

    i2pd 2.45.1 builds every tunnel of a session with explicitPeers through the first
    `length` peers of the list, one fixed path (TunnelPool `SelectExplicitPeers`): with
    SAM's default 3 hops one bad peer left a session without tunnels (SESSION CREATE
    unanswered 3 times in 90 s). One hop, like the hosted destinations', depends on one,
    so a caller that retries a session passes another `first` each time and does not
    depend on the same lead peer in every try (the balancer rotates its routers' lists the
    same way)."""
    peers = rotated(list(peer_hashes), first)
    return {"explicitPeers": ",".join(peers), "inbound.length": "1",
            "outbound.length": "1", "inbound.quantity": "2", "outbound.quantity": "2"}  # fmt: skip


class SamError(Exception):
    """The SAM bridge refused a command: `result` and `message` are its RESULT and MESSAGE
    (empty when the failure is ours: a closed connection or a reply we cannot read)."""

    def __init__(self, what: str, result: str = "", message: str = "") -> None:
        detail = f"RESULT={result}" if result else "no RESULT"
        if message:
            detail += f" MESSAGE={message!r}"
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.result = result
        self.message = message


@dataclasses.dataclass(frozen=True)
class SamReply:
    """One reply line: its first two words (``SESSION STATUS``) and its key=value pairs."""

    topic: str
    values: Mapping[str, str]

    @property
    def result(self) -> str:
        return self.values.get("RESULT", "")


def parse_reply(line: str) -> SamReply:
    """A reply line; values may be double-quoted (i2pd quotes MESSAGE)."""
    words = line.strip().split(" ", 2)
    if len(words) < 2 or not all(words[:2]):
        raise SamError(f"unreadable SAM reply {line[:80]!r}")
    values: dict[str, str] = {}
    for match in _TOKEN.finditer(words[2] if len(words) == 3 else ""):
        value = match.group(2) or ""
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[match.group(1)] = value
    return SamReply(topic=" ".join(words[:2]), values=values)


def format_command(topic: str, options: Mapping[str, str]) -> bytes:
    """One command line. i2pd splits parameters at spaces and knows no quoting, so a value
    with a space, a quote or a line break could only be misread: refuse it."""
    parts = [topic]
    for key, value in options.items():
        if not _SAFE_VALUE.fullmatch(key) or "=" in key:
            raise ValueError(f"SAM option name {key!r} cannot be sent")
        if not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"SAM option {key}={value!r} cannot be sent (spaces, quotes)")
        parts.append(f"{key}={value}")
    return (" ".join(parts) + "\n").encode("ascii")


def parse_destination(text: str) -> Destination:
    """A full destination in I2P base64, as SAM hands them out (trailing key material, as in
    SESSION STATUS, is ignored)."""
    try:
        return Destination.read(Reader(b64decode(text)))
    except WireError as exc:
        raise ValueError(f"not a base64 destination: {exc}") from None


def stream_target(destination: str) -> str:
    """What STREAM CONNECT's DESTINATION needs: a b32 with its ``.b32.i2p`` suffix (i2pd
    resolves only names containing ".i2p"), or a full base64 destination."""
    label = destination.removesuffix(".b32.i2p")
    if len(label) == 52:
        hash_from_b32(label)  # raises on a malformed address
        return f"{label}.b32.i2p"
    parse_destination(destination)
    return destination


def datagram_frame(session_id: str, destination: str, payload: bytes) -> bytes:
    """A datagram for the bridge's UDP port: ``3.0 ID DESTINATION\\n`` + payload.

    i2pd takes everything after the second space as the destination and reads it as base64
    without checking it: anything but a full base64 destination is sent nowhere.
    """
    parse_destination(destination)
    frame = f"3.0 {session_id} {destination}\n".encode("ascii") + payload
    if len(frame) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(payload)} bytes exceeds i2pd's {MAX_DATAGRAM}")
    return frame


def parse_forwarded_datagram(data: bytes) -> tuple[Destination, bytes]:
    """A datagram the bridge forwarded: ``<base64 sender>\\n`` + payload."""
    head, newline, payload = data.partition(b"\n")
    if not newline:
        raise ValueError("forwarded datagram without a sender line")
    try:
        sender = head.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("forwarded datagram's sender is not ASCII") from None
    return parse_destination(sender), payload


async def _open(
    sam: Address, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = sam
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_LINE), timeout_s
        )
    except TimeoutError:
        raise TimeoutError(f"SAM {host}:{port} did not accept within {timeout_s:.0f}s") from None
    try:
        await _exchange(
            reader,
            writer,
            f"HELLO VERSION MIN={SAM_VERSION} MAX={SAM_VERSION}\n",
            "HELLO REPLY",
            f"HELLO to {host}:{port}",
            timeout_s,
        )
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _read_line(reader: asyncio.StreamReader, what: str, timeout_s: float) -> str:
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\n"), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"{what}: no answer within {timeout_s:.0f}s") from None
    except asyncio.IncompleteReadError:
        raise SamError(f"{what}: the bridge closed the connection") from None
    except asyncio.LimitOverrunError:
        raise SamError(f"{what}: reply line longer than {MAX_LINE} bytes") from None
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SamError(f"{what}: reply is not ASCII") from None


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    line: str | bytes,
    topic: str,
    what: str,
    timeout_s: float,
) -> SamReply:
    """Send one command, read its reply, and insist on RESULT=OK."""
    writer.write(line.encode("ascii") if isinstance(line, str) else line)
    await writer.drain()
    reply = parse_reply(await _read_line(reader, what, timeout_s))
    if reply.topic != topic:
        raise SamError(f"{what}: expected {topic}, got {reply.topic}")
    if reply.result != "OK":
        raise SamError(what, reply.result or "missing", reply.values.get("MESSAGE", ""))
    return reply


def _destination_in(reply: SamReply, key: str, what: str) -> Destination:
    try:
        return parse_destination(reply.values.get(key, ""))
    except ValueError as exc:
        raise SamError(f"{what}: {key} is {exc}") from None


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


async def naming_lookup(sam: Address, name: str, timeout_s: float = 60.0) -> Destination:
    """Resolve a name (a b32) to its full destination through the router's shared client
    destination. A session's own `SamSession.lookup` uses that session instead."""
    reader, writer = await _open(sam, timeout_s)
    try:
        reply = await _exchange(
            reader,
            writer,
            format_command("NAMING LOOKUP", {"NAME": name}),
            "NAMING REPLY",
            f"NAMING LOOKUP {name}",
            timeout_s,
        )
    finally:
        _close(writer)
    return _destination_in(reply, "VALUE", f"NAMING LOOKUP {name}")


@dataclasses.dataclass(frozen=True)
class _Created:
    """What SESSION CREATE gave: the session's id and destination, its open control
    connection, and how long it took."""

    session_id: str
    destination: Destination
    control: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    seconds: float


class SamSession:
    """One SAM session: a TRANSIENT destination that lives while its control connection is
    open (i2pd closes the session when that connection ends)."""

    def __init__(self, sam: Address, style: Style, created: _Created) -> None:
        self.sam = sam
        self.id = created.session_id
        self.style = style
        self.destination = created.destination
        self.created_s = created.seconds  # how long SESSION CREATE took
        self._reader, self._writer = created.control
        self._lock = asyncio.Lock()
        self._out_of_step = False

    @property
    def b32(self) -> str:
        return self.destination.b32

    @property
    def local_address(self) -> str:
        """Our address as the router sees it: where STREAM FORWARD and datagram forwarding
        deliver, and so where their listeners must be bound."""
        return str(self._writer.get_extra_info("sockname")[0])

    async def lookup(self, name: str, timeout_s: float = 60.0) -> Destination:
        """NAMING LOOKUP through this session's destination (it then knows the LeaseSet).

        After a timeout the late answer would be read as the next one's, so the session
        refuses further lookups."""
        what = f"NAMING LOOKUP {name} in session {self.id}"
        async with self._lock:
            if self._out_of_step:
                raise SamError(f"{what}: an earlier lookup timed out; create a new session")
            try:
                reply = await _exchange(
                    self._reader,
                    self._writer,
                    format_command("NAMING LOOKUP", {"NAME": name}),
                    "NAMING REPLY",
                    what,
                    timeout_s,
                )
            except TimeoutError:
                self._out_of_step = True
                raise
        return _destination_in(reply, "VALUE", what)

    async def close(self) -> None:
        _close(self._writer)
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        log.info("SAM session closed", extra=fields(session=self.id, b32=self.b32))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _create_session(
    sam: Address,
    style: Style,
    signature_type: int | None,
    options: Mapping[str, str] | None,
    extra: Mapping[str, str],
    timeout_s: float,
    control: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
) -> _Created:
    reader, writer = control or await _open(sam, timeout_s)
    session_id = f"tb{secrets.token_hex(6)}"
    command: dict[str, str] = {"STYLE": style, "ID": session_id, "DESTINATION": "TRANSIENT"}
    if signature_type is not None:
        command["SIGNATURE_TYPE"] = str(signature_type)
    command.update(extra)
    command.update({**DEFAULT_SESSION_OPTIONS, **(options or {})})
    started = time.monotonic()
    try:
        reply = await _exchange(
            reader,
            writer,
            format_command("SESSION CREATE", command),
            "SESSION STATUS",
            f"SESSION CREATE STYLE={style} on {sam[0]}:{sam[1]}",
            timeout_s,
        )
        destination = _destination_in(reply, "DESTINATION", f"SESSION CREATE STYLE={style}")
    except BaseException:
        _close(writer)
        raise
    took = time.monotonic() - started
    log.info(
        "SAM session created",
        extra=fields(
            session=session_id,
            style=style,
            b32=destination.b32,
            sam=f"{sam[0]}:{sam[1]}",
            seconds=round(took, 1),
        ),
    )
    return _Created(session_id, destination, (reader, writer), took)


# ----------------------------------------------------------------------------- streams


@dataclasses.dataclass
class IncomingStream:
    """A stream STREAM ACCEPT handed over: who connected, and the data connection."""

    peer: Destination
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Forwarding:
    """A STREAM FORWARD in force: incoming streams are connected to `address`. Closing it
    (or its control connection ending) stops forwarding."""

    def __init__(self, address: Address, writer: asyncio.StreamWriter) -> None:
        self.address = address
        self._writer = writer

    async def close(self) -> None:
        _close(self._writer)
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class StreamSession(SamSession):
    """A STYLE=STREAM session: connect out, accept or forward in."""

    async def connect(
        self, destination: str, timeout_s: float = 120.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """STREAM CONNECT to a b32 or base64 destination; the data connection after OK.

        i2pd looks the LeaseSet up first if it does not hold it. OK does not mean the peer
        accepted (see the module notes)."""
        target = stream_target(destination)
        reader, writer = await _open(self.sam, timeout_s)
        try:
            await _exchange(
                reader,
                writer,
                format_command(
                    "STREAM CONNECT", {"ID": self.id, "DESTINATION": target, "SILENT": "false"}
                ),
                "STREAM STATUS",
                f"STREAM CONNECT to {target[:60]}",
                timeout_s,
            )
        except BaseException:
            _close(writer)
            raise
        return reader, writer

    async def accept(self, timeout_s: float = 120.0) -> IncomingStream:
        """STREAM ACCEPT, then wait up to `timeout_s` for a peer to connect."""
        reader, writer = await _open(self.sam, timeout_s)
        try:
            await _exchange(
                reader,
                writer,
                format_command("STREAM ACCEPT", {"ID": self.id, "SILENT": "false"}),
                "STREAM STATUS",
                f"STREAM ACCEPT in session {self.id}",
                timeout_s,
            )
            what = f"waiting for a stream to {self.b32}"
            peer = await _read_line(reader, what, timeout_s)
            try:
                return IncomingStream(parse_destination(peer), reader, writer)
            except ValueError as exc:
                raise SamError(f"{what}: the peer line is {exc}") from None
        except BaseException:
            _close(writer)
            raise

    async def forward(self, port: int, silent: bool = False, timeout_s: float = 30.0) -> Forwarding:
        """STREAM FORWARD every incoming stream to `port` on `local_address` (i2pd connects
        back to where this command came from). With `silent`, the forwarded connection
        carries only the stream's data, as a plain TCP backend expects."""
        reader, writer = await _open(self.sam, timeout_s)
        host = str(writer.get_extra_info("sockname")[0])
        try:
            await _exchange(
                reader,
                writer,
                format_command(
                    "STREAM FORWARD",
                    {"ID": self.id, "PORT": str(port), "SILENT": str(silent).lower()},
                ),
                "STREAM STATUS",
                f"STREAM FORWARD to {host}:{port}",
                timeout_s,
            )
        except BaseException:
            _close(writer)
            raise
        return Forwarding((host, port), writer)


async def stream_session(
    sam: Address,
    signature_type: int | None = SIG_TYPE_ED25519,
    options: Mapping[str, str] | None = None,
    timeout_s: float = SESSION_TIMEOUT_S,
) -> StreamSession:
    """SESSION CREATE STYLE=STREAM DESTINATION=TRANSIENT on the bridge at `sam`.

    `signature_type` None leaves i2pd's default (DSA_SHA1); `options` (I2CP options such
    as inbound.length) go over `DEFAULT_SESSION_OPTIONS`."""
    created = await _create_session(sam, "STREAM", signature_type, options, {}, timeout_s)
    return StreamSession(sam, "STREAM", created)


# --------------------------------------------------------------------------- datagrams


@dataclasses.dataclass(frozen=True)
class ReceivedDatagram:
    source: Destination
    payload: bytes
    received_at: float  # time.monotonic()


class _Forwarded(asyncio.DatagramProtocol):
    """Datagrams the bridge forwards to us, queued; anything else is counted and dropped."""

    def __init__(self, bridge: Address, queue: asyncio.Queue[ReceivedDatagram]) -> None:
        self.bridge = bridge
        self.queue = queue
        self.dropped = 0
        self.foreign = 0
        self.malformed = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if (addr[0], addr[1]) != self.bridge:
            self.foreign += 1
            return
        try:
            source, payload = parse_forwarded_datagram(data)
        except ValueError:
            self.malformed += 1
            return
        try:
            self.queue.put_nowait(ReceivedDatagram(source, payload, time.monotonic()))
        except asyncio.QueueFull:
            self.dropped += 1


class DatagramSession(SamSession):
    """A STYLE=DATAGRAM session (repliable datagrams). Sends go to the bridge's UDP port;
    received datagrams are forwarded by the bridge to a UDP socket of ours."""

    def __init__(
        self, sam: Address, created: _Created, udp: tuple[asyncio.DatagramTransport, _Forwarded]
    ) -> None:
        super().__init__(sam, "DATAGRAM", created)
        self._transport, self._protocol = udp

    @property
    def udp_address(self) -> Address:
        """Where the bridge forwards this session's datagrams."""
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    @property
    def dropped(self) -> int:
        """Datagrams lost because nobody called `receive` fast enough."""
        return self._protocol.dropped

    def send(self, destination: Destination | str, payload: bytes) -> None:
        """Send a repliable datagram; `destination` must be the full destination (look a
        b32 up first: i2pd's UDP port takes nothing else)."""
        target = destination.b64 if isinstance(destination, Destination) else destination
        frame = datagram_frame(self.id, target, payload)
        self._transport.sendto(frame, (self.sam[0], self.sam[1] - 1))

    async def receive(self, timeout_s: float) -> ReceivedDatagram:
        try:
            return await asyncio.wait_for(self._protocol.queue.get(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no datagram for {self.b32} within {timeout_s:.1f}s") from None

    def drain(self) -> list[ReceivedDatagram]:
        """Everything received and not yet taken, without waiting."""
        found = []
        while not self._protocol.queue.empty():
            found.append(self._protocol.queue.get_nowait())
        return found

    async def close(self) -> None:
        self._transport.close()
        await super().close()


async def datagram_session(
    sam: Address,
    signature_type: int | None = SIG_TYPE_ED25519,
    options: Mapping[str, str] | None = None,
    timeout_s: float = SESSION_TIMEOUT_S,
) -> DatagramSession:
    """SESSION CREATE STYLE=DATAGRAM with HOST/PORT naming a UDP socket of ours, bound on
    the address the router sees us at (a testnet's bridge address)."""
    reader, writer = await _open(sam, timeout_s)
    local_host = str(writer.get_extra_info("sockname")[0])
    queue: asyncio.Queue[ReceivedDatagram] = asyncio.Queue(RECEIVED_QUEUE)
    loop = asyncio.get_running_loop()
    bridge = (sam[0], sam[1] - 1)
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Forwarded(bridge, queue), local_addr=(local_host, 0)
        )
    except BaseException:
        _close(writer)
        raise
    udp_port = transport.get_extra_info("sockname")[1]
    try:
        created = await _create_session(
            sam,
            "DATAGRAM",
            signature_type,
            options,
            {"HOST": local_host, "PORT": str(udp_port)},
            timeout_s,
            control=(reader, writer),
        )
    except BaseException:
        transport.close()
        raise
    return DatagramSession(sam, created, (transport, protocol))
