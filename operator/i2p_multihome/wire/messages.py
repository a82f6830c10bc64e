"""I2CP messages (spec: i2cp): framing and one typed value per message.

`decode_router_message` is the only entry point for bytes from a router: it returns a typed
message or raises `WireError`, never anything else. Each message can also encode itself, and
`decode_client_message` reads the client's side, so tests can play the router with real bytes.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from i2p_multihome.wire import codec
from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.structures import (
    MAX_LEASES,
    STORE_TYPE_LEASESET2,
    Destination,
    Lease,
    LeaseSet2,
    SessionConfig,
    encode_mapping,
    read_mapping,
)

PROTOCOL_BYTE = 0x2A
HEADER_SIZE = 5
MAX_BODY = 65535  # i2pd drops longer messages; a longer length header is a lie or an attack

# Session status codes (SessionStatusMessage).
STATUS_DESTROYED, STATUS_CREATED, STATUS_UPDATED, STATUS_INVALID, STATUS_REFUSED = range(5)
SESSION_STATUS_NAMES = {0: "destroyed", 1: "created", 2: "updated", 3: "invalid", 4: "refused"}

# Payload protocols carried in the gzip header's OS byte.
PROTOCOL_STREAMING, PROTOCOL_DATAGRAM, PROTOCOL_RAW = 6, 17, 18
NO_SESSION = 0xFFFF


class Message(Protocol):
    TYPE: ClassVar[int]

    def encode_body(self) -> bytes: ...


def encode_frame(message: Message) -> bytes:
    body = message.encode_body()
    if len(body) > MAX_BODY:
        raise WireError(f"I2CP message type {message.TYPE} body of {len(body)} bytes is too long")
    return codec.u32(len(body)) + codec.u8(message.TYPE) + body


def parse_header(header: bytes) -> tuple[int, int]:
    """(body length, type) from a 5-byte frame header; refuses lengths over MAX_BODY."""
    reader = Reader(header)
    length, msg_type = reader.u32("frame length"), reader.u8("frame type")
    if length > MAX_BODY:
        raise WireError(f"frame length {length} exceeds {MAX_BODY}")
    return length, msg_type


# --- client -> router -------------------------------------------------------------------


@dataclass(frozen=True)
class GetDate:
    TYPE: ClassVar[int] = 32
    version: str
    options: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold a password

    def encode_body(self) -> bytes:
        return codec.string(self.version) + (encode_mapping(self.options) if self.options else b"")

    @classmethod
    def decode(cls, reader: Reader) -> GetDate:
        version = reader.string("version")
        return cls(version, read_mapping(reader) if reader.remaining else {})


@dataclass(frozen=True)
class CreateSession:
    TYPE: ClassVar[int] = 1
    config: SessionConfig

    def encode_body(self) -> bytes:
        return self.config.to_bytes()

    @classmethod
    def decode(cls, reader: Reader) -> CreateSession:
        return cls(SessionConfig.read(reader))


@dataclass(frozen=True)
class ReconfigureSession:
    TYPE: ClassVar[int] = 2
    session_id: int
    config: SessionConfig

    def encode_body(self) -> bytes:
        return codec.u16(self.session_id) + self.config.to_bytes()

    @classmethod
    def decode(cls, reader: Reader) -> ReconfigureSession:
        return cls(reader.u16("session id"), SessionConfig.read(reader))


@dataclass(frozen=True)
class DestroySession:
    TYPE: ClassVar[int] = 3
    session_id: int

    def encode_body(self) -> bytes:
        return codec.u16(self.session_id)

    @classmethod
    def decode(cls, reader: Reader) -> DestroySession:
        return cls(reader.u16("session id"))


@dataclass(frozen=True)
class PrivateKey:
    crypto_type: int
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class CreateLeaseSet2:
    TYPE: ClassVar[int] = 41
    session_id: int
    lease_set: LeaseSet2
    private_keys: tuple[PrivateKey, ...] = field(repr=False)

    def encode_body(self) -> bytes:
        parts = [
            codec.u16(self.session_id),
            codec.u8(STORE_TYPE_LEASESET2),
            self.lease_set.to_bytes(),
            codec.u8(len(self.private_keys)),
        ]
        for pk in self.private_keys:
            parts += [codec.u16(pk.crypto_type), codec.u16(len(pk.key)), pk.key]
        return b"".join(parts)

    @classmethod
    def decode(cls, reader: Reader) -> CreateLeaseSet2:
        session_id = reader.u16("session id")
        store_type = reader.u8("store type")
        if store_type != STORE_TYPE_LEASESET2:
            raise WireError(f"CreateLeaseSet2 store type {store_type} is not supported")
        lease_set = LeaseSet2.read(reader)
        keys = []
        for _ in range(reader.u8("private key count")):
            crypto_type = reader.u16("key type")
            keys.append(PrivateKey(crypto_type, reader.take(reader.u16("key length"), "key")))
        return cls(session_id, lease_set, tuple(keys))


@dataclass(frozen=True)
class SendMessage:
    TYPE: ClassVar[int] = 5
    session_id: int
    destination: Destination
    payload: bytes
    nonce: int

    def encode_body(self) -> bytes:
        return (
            codec.u16(self.session_id)
            + self.destination.raw
            + codec.u32(len(self.payload))
            + self.payload
            + codec.u32(self.nonce)
        )

    @classmethod
    def decode(cls, reader: Reader) -> SendMessage:
        session_id = reader.u16("session id")
        destination = Destination.read(reader)
        payload = reader.take(reader.u32("payload length"), "payload")
        return cls(session_id, destination, payload, reader.u32("nonce"))


@dataclass(frozen=True)
class SendMessageExpires:
    TYPE: ClassVar[int] = 36
    session_id: int
    destination: Destination
    payload: bytes
    nonce: int
    flags: int
    expires_ms: int

    def encode_body(self) -> bytes:
        base = SendMessage(self.session_id, self.destination, self.payload, self.nonce)
        return base.encode_body() + codec.u16(self.flags) + self.expires_ms.to_bytes(6, "big")

    @classmethod
    def decode(cls, reader: Reader) -> SendMessageExpires:
        base = SendMessage.decode(reader)
        flags = reader.u16("flags")
        expires = int.from_bytes(reader.take(6, "expiration"), "big")
        return cls(base.session_id, base.destination, base.payload, base.nonce, flags, expires)


@dataclass(frozen=True)
class HostLookup:
    """Lookup by hash (type 0) or host name (type 1)."""

    TYPE: ClassVar[int] = 38
    session_id: int
    request_id: int
    timeout_ms: int
    hash: bytes | None = None
    hostname: str | None = None

    def encode_body(self) -> bytes:
        head = codec.u16(self.session_id) + codec.u32(self.request_id) + codec.u32(self.timeout_ms)
        if self.hash is not None:
            if len(self.hash) != 32:
                raise WireError("HostLookup hash must be 32 bytes")
            return head + codec.u8(0) + self.hash
        if self.hostname is None:
            raise WireError("HostLookup needs a hash or a host name")
        return head + codec.u8(1) + codec.string(self.hostname)

    @classmethod
    def decode(cls, reader: Reader) -> HostLookup:
        session_id, request_id = reader.u16("session id"), reader.u32("request id")
        timeout, kind = reader.u32("timeout"), reader.u8("lookup type")
        if kind == 0:
            return cls(session_id, request_id, timeout, hash=reader.take(32, "hash"))
        if kind == 1:
            return cls(session_id, request_id, timeout, hostname=reader.string("host"))
        raise WireError(f"HostLookup type {kind} is not supported")


# --- router -> client -------------------------------------------------------------------


@dataclass(frozen=True)
class SetDate:
    TYPE: ClassVar[int] = 33
    date_ms: int
    version: str

    def encode_body(self) -> bytes:
        return codec.u64(self.date_ms) + codec.string(self.version)

    @classmethod
    def decode(cls, reader: Reader) -> SetDate:
        return cls(reader.u64("date"), reader.string("version"))


@dataclass(frozen=True)
class SessionStatus:
    TYPE: ClassVar[int] = 20
    session_id: int
    status: int

    def encode_body(self) -> bytes:
        return codec.u16(self.session_id) + codec.u8(self.status)

    @classmethod
    def decode(cls, reader: Reader) -> SessionStatus:
        return cls(reader.u16("session id"), reader.u8("status"))

    @property
    def status_name(self) -> str:
        return SESSION_STATUS_NAMES.get(self.status, f"unknown({self.status})")


@dataclass(frozen=True)
class RequestVariableLeaseSet:
    TYPE: ClassVar[int] = 37
    session_id: int
    leases: tuple[Lease, ...]

    def encode_body(self) -> bytes:
        return (
            codec.u16(self.session_id)
            + codec.u8(len(self.leases))
            + b"".join(lease.to_bytes() for lease in self.leases)
        )

    @classmethod
    def decode(cls, reader: Reader) -> RequestVariableLeaseSet:
        session_id = reader.u16("session id")
        count = reader.u8("lease count")
        if count > MAX_LEASES:
            raise WireError(f"RequestVariableLeaseSet claims {count} leases (max {MAX_LEASES})")
        if reader.remaining != count * Lease.SIZE:
            raise WireError(f"RequestVariableLeaseSet: {count} leases in {reader.remaining} bytes")
        return cls(session_id, tuple(Lease.read(reader) for _ in range(count)))


@dataclass(frozen=True)
class MessageStatus:
    TYPE: ClassVar[int] = 22
    session_id: int
    message_id: int
    status: int
    size: int
    nonce: int

    def encode_body(self) -> bytes:
        return (
            codec.u16(self.session_id)
            + codec.u32(self.message_id)
            + codec.u8(self.status)
            + codec.u32(self.size)
            + codec.u32(self.nonce)
        )

    @classmethod
    def decode(cls, reader: Reader) -> MessageStatus:
        return cls(
            reader.u16("session id"), reader.u32("message id"), reader.u8("status"),
            reader.u32("size"), reader.u32("nonce"),
        )  # fmt: skip


@dataclass(frozen=True)
class MessagePayload:
    TYPE: ClassVar[int] = 31
    session_id: int
    message_id: int
    payload: bytes

    def encode_body(self) -> bytes:
        return (
            codec.u16(self.session_id)
            + codec.u32(self.message_id)
            + codec.u32(len(self.payload))
            + self.payload
        )

    @classmethod
    def decode(cls, reader: Reader) -> MessagePayload:
        session_id, message_id = reader.u16("session id"), reader.u32("message id")
        return cls(session_id, message_id, reader.take(reader.u32("payload length"), "payload"))


@dataclass(frozen=True)
class HostReply:
    TYPE: ClassVar[int] = 39
    session_id: int
    request_id: int
    result: int
    destination: Destination | None = None

    def encode_body(self) -> bytes:
        body = codec.u16(self.session_id) + codec.u32(self.request_id) + codec.u8(self.result)
        return body + (self.destination.raw if self.destination is not None else b"")

    @classmethod
    def decode(cls, reader: Reader) -> HostReply:
        session_id, request_id, result = reader.u16("sid"), reader.u32("rid"), reader.u8("result")
        destination = Destination.read(reader) if result == 0 else None
        return cls(session_id, request_id, result, destination)


@dataclass(frozen=True)
class Disconnect:
    """Sent by either side before closing."""

    TYPE: ClassVar[int] = 30
    reason: str

    def encode_body(self) -> bytes:
        # Truncate to 255 UTF-8 bytes, not characters, dropping a split trailing character.
        return codec.string(self.reason.encode("utf-8")[:255].decode("utf-8", errors="ignore"))

    @classmethod
    def decode(cls, reader: Reader) -> Disconnect:
        return cls(reader.string("reason"))


ClientMessage = (
    GetDate | CreateSession | ReconfigureSession | DestroySession | CreateLeaseSet2
    | SendMessage | SendMessageExpires | HostLookup | Disconnect
)  # fmt: skip
RouterMessage = (
    SetDate | SessionStatus | RequestVariableLeaseSet | MessageStatus | MessagePayload
    | HostReply | Disconnect
)  # fmt: skip

_ROUTER_MESSAGES: dict[int, type[RouterMessage]] = {
    cls.TYPE: cls
    for cls in (SetDate, SessionStatus, RequestVariableLeaseSet, MessageStatus, MessagePayload,
                HostReply, Disconnect)
}  # fmt: skip
_CLIENT_MESSAGES: dict[int, type[ClientMessage]] = {
    cls.TYPE: cls
    for cls in (GetDate, CreateSession, ReconfigureSession, DestroySession, CreateLeaseSet2,
                SendMessage, SendMessageExpires, HostLookup, Disconnect)
}  # fmt: skip


def decode_router_message(msg_type: int, body: bytes) -> RouterMessage:
    """A message a router sent us. Unknown types and malformed bodies raise `WireError`."""
    cls = _ROUTER_MESSAGES.get(msg_type)
    if cls is None:
        raise WireError(f"unknown or unexpected I2CP message type {msg_type} from router")
    reader = Reader(body)
    message = cls.decode(reader)
    reader.expect_end(f"I2CP message type {msg_type}")
    return message


def decode_client_message(msg_type: int, body: bytes) -> ClientMessage:
    """A message a client sent (used by test routers and fuzzing)."""
    cls = _CLIENT_MESSAGES.get(msg_type)
    if cls is None:
        raise WireError(f"unknown or unexpected I2CP message type {msg_type} from client")
    reader = Reader(body)
    message = cls.decode(reader)
    reader.expect_end(f"I2CP message type {msg_type}")
    return message


# --- payloads ---------------------------------------------------------------------------

MAX_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class Payload:
    """An I2CP payload: gzip whose header carries ports (mtime) and protocol (OS byte)."""

    data: bytes
    protocol: int = PROTOCOL_RAW
    from_port: int = 0
    to_port: int = 0

    def encode(self, compresslevel: int = 6) -> bytes:
        """The gzip frame. The data plane sends level 0 (stored): streamed data is mostly
        compressed already, and storing costs about 1 us a packet against 16 us at 6."""
        packed = bytearray(gzip.compress(self.data, compresslevel=compresslevel, mtime=0))
        packed[4:6] = codec.u16(self.from_port)
        packed[6:8] = codec.u16(self.to_port)
        packed[9] = codec.u8(self.protocol)[0]
        return bytes(packed)

    @classmethod
    def decode(cls, raw: bytes) -> Payload:
        if len(raw) < 10 or raw[:3] != b"\x1f\x8b\x08":
            raise WireError("payload is not a gzip frame")
        header = Reader(raw[4:8])
        from_port, to_port = header.u16(), header.u16()
        inflater = zlib.decompressobj(wbits=31)
        try:
            data = inflater.decompress(raw, MAX_PAYLOAD + 1)
        except zlib.error as exc:
            raise WireError(f"payload does not inflate: {exc}") from exc
        if len(data) > MAX_PAYLOAD or inflater.unconsumed_tail:
            raise WireError(f"payload inflates beyond {MAX_PAYLOAD} bytes")
        if not inflater.eof:
            raise WireError("payload gzip stream is truncated")
        return cls(data, raw[9], from_port, to_port)
