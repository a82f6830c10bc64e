"""I2P streaming, sans-I/O: `Endpoint` serves one Destination's streams, `Connection` is one
stream. Neither reads a clock nor does I/O: the caller passes time in and moves the bytes.

Driving a server Endpoint from an I/O loop (one Endpoint per Destination, every router's
I2CP session feeding it)::

    endpoint = Endpoint(keys, StreamConfig())
    # An I2CP MessagePayload arrived through router `name`:
    payload = Payload.decode(message.payload)
    if payload.protocol == PROTOCOL_STREAMING:
        endpoint.receive(payload.data, payload.from_port, payload.to_port, name, now)
    # Whenever the backend can take data / has data:
    backend.write(endpoint.read(sid, backend_room))
    endpoint.send(sid, backend.read(endpoint.send_buffer_free(sid)))
    # After every input, in this order:
    while (event := endpoint.next_event()) is not None:
        ...  # StreamAccepted: connect the backend for event.local_port
             # DataReadable / SendBufferFree: resume moving bytes
             # PeerClosed: shut the backend's write side; backend EOF: endpoint.close(sid)
             # StreamReset / StreamClosed: drop the backend connection
    for out in endpoint.packets_to_send(now):
        sessions[out.via].send(out.destination, out.payload.encode())
    # Sleep until endpoint.timer_at() at the latest; then endpoint.handle_timer(now).
"""

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
