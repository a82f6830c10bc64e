"""What the data plane counts: cumulative, read by status and metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Why a packet or datagram was dropped (beside the streaming protocol's own reasons).
DROP_MALFORMED_PAYLOAD = "malformed_payload"
DROP_UNKNOWN_PROTOCOL = "unknown_protocol"
DROP_NO_PORT = "no_port"
DROP_NO_SESSION = "no_session"  # the router a reply must leave through has no session
DROP_BAD_DATAGRAM = "bad_datagram"
DROP_RAW_DATAGRAM = "raw_datagram"  # no sender to answer, nothing to forward it for
DROP_FLOW_LIMIT = "flow_limit"
DROP_REPLY_QUEUE_FULL = "datagram_reply_queue_full"

# Why a stream ended with a RESET from our side.
RESET_NO_PORT = "no_port"
RESET_BACKEND_REFUSED = "backend_refused"
RESET_BACKEND_FAILED = "backend_failed"
RESET_SHUTDOWN = "shutdown"


@dataclass
class DataPlaneStats:
    bytes_in: Counter[tuple[str, str]] = field(default_factory=Counter)  # (router, port name)
    bytes_out: Counter[tuple[str, str]] = field(default_factory=Counter)
    streams_accepted: Counter[str] = field(default_factory=Counter)  # port name
    resets: Counter[str] = field(default_factory=Counter)  # reason
    drops: Counter[str] = field(default_factory=Counter)  # reason
    datagrams_in: Counter[str] = field(default_factory=Counter)  # port name
    datagrams_out: Counter[str] = field(default_factory=Counter)
