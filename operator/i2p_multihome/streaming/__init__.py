"""I2P streaming, sans-I/O: `Endpoint` serves one Destination's streams, `Connection` is one
stream. Neither reads a clock nor does I/O: the caller passes time in and moves the bytes."""

from i2p_multihome.streaming.config import StreamConfig
from i2p_multihome.streaming.connection import Connection, LocalIdentity, StreamState
from i2p_multihome.streaming.endpoint import Endpoint, Outgoing
from i2p_multihome.streaming.events import (
    DataReadable,
    Event,
    PeerClosed,
    PongReceived,
    SendBufferFree,
    StreamAccepted,
    StreamClosed,
    StreamClosedError,
    StreamEstablished,
    StreamEvent,
    StreamReset,
)

__all__ = [
    "Connection",
    "DataReadable",
    "Endpoint",
    "Event",
    "LocalIdentity",
    "Outgoing",
    "PeerClosed",
    "PongReceived",
    "SendBufferFree",
    "StreamAccepted",
    "StreamClosed",
    "StreamClosedError",
    "StreamConfig",
    "StreamEstablished",
    "StreamEvent",
    "StreamReset",
    "StreamState",
]
