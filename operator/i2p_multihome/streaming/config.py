"""Limits and timing of the streaming protocol: one frozen value, every default justified."""

from __future__ import annotations

from dataclasses import dataclass

# The largest packet i2pd can take at all is 4096 bytes, header included (Streaming.h
# MAX_PACKET_SIZE); Java honours the size we offer. Out-of-order data never uses the last
# this-many bytes of the receive buffer, so the next in-order packet always fits once the
# application has read what is ready.
IN_ORDER_RESERVE = 4096


@dataclass(frozen=True)
class StreamConfig:
    # --- sizes ----------------------------------------------------------------------------
    # The payload size we offer in our SYN: Proposal 155's value for ECIES sessions; i2pd
    # uses it for ratchet sessions (Streaming.h STREAMING_MTU_RATCHETS).
    max_packet_size: int = 1812
    # What we send to a peer whose SYN names no size (Java ConnectionOptions default, i2pd
    # STREAMING_MTU).
    default_peer_packet_size: int = 1730
    # We never send smaller packets than this even if a peer asks (Java MIN_MESSAGE_SIZE).
    min_packet_size: int = 512
    # Bytes the application may queue plus bytes sent and not yet acked, per stream: all the
    # memory a stream's sending side holds. 256 KiB lets a full 128-packet window fly.
    send_buffer_bytes: int = 256 * 1024
    # Bytes received and not yet read by the application (in order or not), per stream. The
    # spec recommends at least 128 packets of 1812 bytes; past it we choke the sender.
    receive_buffer_bytes: int = 128 * 1812

    # --- congestion control ---------------------------------------------------------------
    initial_window: int = 6  # packets (spec/Java i2p.streaming.initialWindowSize)
    max_window: int = 128  # packets (spec MAX_WINDOW_SIZE; Java and i2pd)
    min_window: int = 1
    # Fast retransmit once a packet was NACKed in this many acks (spec: "Two NACKs of a packet
    # is a request for a 'fast retransmit'").
    fast_retransmit_nacks: int = 2

    # --- timing (seconds) -----------------------------------------------------------------
    # How long an ack of in-order data may wait for data to ride on: a tenth of the smoothed
    # RTT, at least `min_ack_delay` and at most `ack_delay` (i2pd's rule, 200 ms cap; Java
    # waits up to 750 ms). The RTT bound keeps a client's session on its router: an i2pd
    # client's RTO is 1.5 times its mean RTT over the stream, with no floor, and a packet it
    # resends twice goes to another random lease (Streaming.cpp, HandleResendTimer), which
    # in a merged LeaseSet is mostly a router that cannot decrypt it.
    # Gaps, duplicates, CLOSE and a peer's "delay 0" are acked at once.
    ack_delay: float = 0.2
    min_ack_delay: float = 0.002
    # A bare SYN (and anything else before our first RTT sample) is answered after this,
    # unless data rides along. The wait is in the client's first RTT sample, which i2pd
    # takes whole (and passes to the client's next streams), and keeps its RTO (1.5 times
    # that) above the tunnel RTT plus our own delay's jitter J: wait >= 2J - RTT. Answering
    # at once made two resends leave before our answer on a testnet of millisecond
    # tunnels: i2pd sends the second to another random lease, in a merged LeaseSet mostly
    # a router without the client's session, and sets the RTO to 9 s. Under client
    # affinity the data plane waits less (`dataplane.service.AFFINITY_SYN_ANSWER_DELAY`).
    syn_answer_delay: float = 0.2
    # RTO before the first RTT sample (spec INITIAL_TIMEOUT, Java initialRTO, i2pd).
    initial_rto: float = 9.0
    # RTO bounds: Java's MIN_RESEND_DELAY and MAX_RESEND_DELAY (the spec's maximum).
    min_rto: float = 1.0
    max_rto: float = 45.0
    # Retransmissions of one packet before the stream is given up with a RESET (spec/Java
    # i2p.streaming.maxResends). With the RTO doubling to 45 s this is about 5 minutes.
    max_resends: int = 8
    # A SYN must be answered, or our SYN acked, within this (Java's default connect timeout).
    handshake_timeout: float = 60.0
    # Nothing heard for this long with nothing in flight: send an empty sequenced packet the
    # peer must ack (Java i2p.streaming.inactivityTimeout, action "send").
    keepalive_interval: float = 90.0
    # Nothing heard from the peer for this long ends an unfinished stream with a RESET, so a
    # vanished client leaves nothing behind whatever the retransmission state.
    idle_timeout: float = 300.0
    # After we closed first and acked the peer's CLOSE, stay to re-ack its retransmitted
    # CLOSE for two of its longest retransmission intervals.
    time_wait: float = 90.0

    # --- endpoint limits ------------------------------------------------------------------
    max_streams: int = 256  # established and half-open together
    max_streams_per_remote: int = 32
    # SYN received, our SYN not yet acked: what a SYN flood creates.
    max_half_open: int = 64
    # New inbound streams and answered pings per second (token bucket), checked before any
    # signature is verified so a flood cannot buy unbounded CPU.
    new_stream_rate: float = 20.0
    new_stream_burst: int = 64
    # Packets of a stream that arrive before its SYN (the client may send up to its window
    # before our SYN reaches it): held this long, this many across the endpoint (i2pd keeps
    # them 10 s, PENDING_INCOMING_TIMEOUT).
    early_packets: int = 64
    early_packet_lifetime: float = 10.0
    # Streams that finished and linger to re-ack a retransmitted CLOSE.
    max_time_wait: int = 256
    # Pings we answer, and the payload echoed (Java answers with at most 32 bytes).
    answer_pings: bool = True
    max_ping_payload: int = 32
    # Pings we sent and still wait for.
    max_pending_pings: int = 16
    ping_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.min_packet_size <= self.max_packet_size <= 0xFFFF:
            raise ValueError("max_packet_size must be between min_packet_size and 65535")
        if not self.min_packet_size <= self.default_peer_packet_size <= 0xFFFF:
            raise ValueError("default_peer_packet_size must be at least min_packet_size")
        if self.receive_buffer_bytes < 4 * max(IN_ORDER_RESERVE, self.max_packet_size):
            raise ValueError("receive_buffer_bytes must hold at least 4 of the largest packets")
        if self.send_buffer_bytes < self.max_packet_size:
            raise ValueError("send_buffer_bytes must hold at least one packet")
        if not 1 <= self.min_window <= self.initial_window <= self.max_window <= 255:
            raise ValueError("need 1 <= min_window <= initial_window <= max_window <= 255")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if self.max_resends < 0 or self.fast_retransmit_nacks < 1:
            raise ValueError("max_resends >= 0 and fast_retransmit_nacks >= 1")
        for name in ("ack_delay", "min_ack_delay", "syn_answer_delay", "handshake_timeout",
                     "keepalive_interval", "idle_timeout", "time_wait", "early_packet_lifetime",
                     "ping_timeout"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.keepalive_interval >= self.idle_timeout:
            raise ValueError("keepalive_interval must be shorter than idle_timeout")
        for name in ("max_streams", "max_streams_per_remote", "max_half_open",
                     "new_stream_burst", "max_time_wait", "max_pending_pings"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.new_stream_rate <= 0 or self.early_packets < 0:
            raise ValueError("new_stream_rate > 0 and early_packets >= 0")
        if not 0 <= self.max_ping_payload <= 0xFFFF:
            raise ValueError("max_ping_payload out of range")
