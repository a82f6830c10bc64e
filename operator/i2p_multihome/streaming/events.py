"""What the streaming protocol tells its caller. Every stream ends with exactly one of
`StreamReset` or `StreamClosed`; after it the stream id is gone."""

from __future__ import annotations

from dataclasses import dataclass, field

from i2p_multihome.wire.structures import Destination


class StreamClosedError(Exception):
    """The stream is unknown, finished, or closed for writing: nothing more can be sent."""


@dataclass(frozen=True)
class StreamAccepted:
    """A verified SYN opened a stream to us. Connect the backend for `local_port`."""

    stream_id: int
    remote: Destination = field(repr=False)
    via: str
    local_port: int
    remote_port: int

    @property
    def remote_hash(self) -> bytes:
        return self.remote.hash


@dataclass(frozen=True)
class StreamEstablished:
    """The handshake completed: the peer has our SYN (server) or we have its (client)."""

    stream_id: int


@dataclass(frozen=True)
class DataReadable:
    """The stream has data to `read`. Raised again only after `read` has returned all of it,
    so the event queue stays bounded however data trickles in."""

    stream_id: int


@dataclass(frozen=True)
class SendBufferFree:
    """`send` accepted less than offered earlier; at least half the send buffer is free now."""

    stream_id: int


@dataclass(frozen=True)
class PeerClosed:
    """The peer sent CLOSE: no data follows what is already readable (EOF)."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    """The stream ended abnormally: reset by the peer, by us, or given up."""

    stream_id: int
    reason: str
    by_peer: bool


@dataclass(frozen=True)
class StreamClosed:
    """Both sides closed, everything acked and read: the stream is done."""

    stream_id: int


@dataclass(frozen=True)
class PongReceived:
    """The answer to `Endpoint.ping`."""

    ping_id: int
    payload: bytes


StreamEvent = (
    StreamAccepted
    | StreamEstablished
    | DataReadable
    | SendBufferFree
    | PeerClosed
    | StreamReset
    | StreamClosed
)
Event = StreamEvent | PongReceived
