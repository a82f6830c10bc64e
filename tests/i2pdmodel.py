"""A model of an i2pd 2.45.1 client stream (libi2pd/Streaming.cpp), enough to hold a
conversation with our server Endpoint in bytes: its SYN (no replay hash, window 1), its
follow-on packets, SendQuickAck, the 200 ms wait for a SYN after a follow-on
(SYN_TIMEOUT), ProcessOptions' signature check in place, and its close: answer a CLOSE with
a CLOSE and forget the stream (ProcessPacket, Terminate).

Written from the C++ control flow, not from our code; where i2pd does more (leases,
routing sessions, resend timers) the model does nothing."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from i2p_multihome.wire import streaming as sp
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Destination


@dataclass
class I2pdClientStream:
    keys: DestinationKeys
    remote: Destination  # from the server's LeaseSet
    recv_id: int
    send_id: int = 0
    seq: int = 0  # m_SequenceNumber: the next to use
    last_received: int = -1  # m_LastReceivedSequenceNumber
    saved: dict[int, bytes] = field(default_factory=dict)  # m_SavedPackets
    sent: dict[int, bytes] = field(default_factory=dict)  # m_SentPackets
    received: bytearray = field(default_factory=bytearray)
    status: str = "new"  # new, open, closing, closed, reset, terminated
    syn_deadline: float | None = None  # the SYN_TIMEOUT timer after a follow-on
    outbox: list[bytes] = field(default_factory=list)

    # --- writers (SendBuffer, SendQuickAck, SendClose) ------------------------------------

    def send(self, data: bytes, mtu: int = 1812) -> None:
        """SendBuffer: the SYN first; follow-ons only once established (m_SendStreamID)."""
        if self.status == "new":
            self.status = "open"
            flags = sp.SYNCHRONIZE | sp.FROM_INCLUDED | sp.SIGNATURE_INCLUDED
            flags |= sp.MAX_PACKET_SIZE_INCLUDED | sp.NO_ACK
            options = self.keys.destination.raw + struct.pack(">H", mtu) + bytes(64)
            head = struct.pack(">IIII", 0, self.recv_id, self.seq, 0) + bytes([0, 9])
            packet = head + struct.pack(">HH", flags, len(options)) + options + data[:mtu]
            self._emit(self._sign(packet, len(packet) - len(data[:mtu]) - 64))
            data = data[mtu:]
        while data and self.send_id:
            head = struct.pack(">IIII", self.send_id, self.recv_id, self.seq, self.last_received)
            self._emit(head + bytes([0, 9]) + struct.pack(">HH", 0, 0) + data[:mtu])
            data = data[mtu:]

    def _emit(self, packet: bytes) -> None:
        self.sent[self.seq] = packet
        self.seq += 1
        self.outbox.append(packet)

    def _sign(self, packet: bytes, at: int) -> bytes:
        return packet[:at] + self.keys.sign(packet) + packet[at + 64 :]

    def close(self) -> None:
        """Stream::Close from Open: Closing, and the CLOSE once all it sent is acked."""
        if self.status == "open":
            self.status = "closing"
            self._close_when_acked()

    def _close_when_acked(self) -> None:
        if self.status == "closing" and not self.sent:
            self.status = "closed"
            self.send_close()

    def quick_ack(self) -> None:
        highest = max([self.last_received, *self.saved])
        if highest < 0:
            return
        nacks = [s for s in range(self.last_received + 1, highest) if s not in self.saved]
        packet = struct.pack(">IIII", self.send_id, self.recv_id, 0, highest)
        packet += bytes([len(nacks)]) + b"".join(struct.pack(">I", n) for n in nacks)
        self.outbox.append(packet + bytes([0]) + struct.pack(">HH", 0, 0))

    def send_close(self) -> None:
        head = struct.pack(">IIII", self.send_id, self.recv_id, self.seq,
                           max(self.last_received, 0))  # fmt: skip
        packet = head + bytes([0, 0]) + struct.pack(">HH", sp.CLOSE | sp.SIGNATURE_INCLUDED, 64)
        self._emit(self._sign(packet + bytes(64), len(packet)))

    # --- reader (HandleNextPacket, ProcessPacket, ProcessOptions, ProcessAck) -------------

    def receive(self, packet: bytes, now: float) -> None:
        if self.status == "terminated":
            return  # the destination no longer knows the stream: "Unknown stream"
        flags = struct.unpack(">H", packet[17 + 4 * packet[16] + 1 : 17 + 4 * packet[16] + 3])[0]
        if not self.send_id:
            self.send_id = struct.unpack(">I", packet[4:8])[0]
        if not flags & sp.NO_ACK:
            self._process_ack(packet)
        seq = struct.unpack(">I", packet[8:12])[0]
        if seq == 0 and not flags & sp.SYNCHRONIZE:
            return  # plain ack
        if seq == self.last_received + 1:
            self._process(seq, packet)
            while self.status not in ("terminated", "reset") and self.last_received + 1 in (
                self.saved
            ):
                self._process(self.last_received + 1, self.saved.pop(self.last_received + 1))
            if self.status == "open":
                self.quick_ack()  # (i2pd waits min(RTT/10, 200 ms); sooner is the same)
        elif seq <= self.last_received:
            self.quick_ack()
        else:
            self.saved[seq] = packet
            if self.last_received >= 0:
                self.quick_ack()
            else:
                self.syn_deadline = now + 0.2  # wait for the SYN

    def handle_timer(self, now: float) -> None:
        if self.syn_deadline is not None and now >= self.syn_deadline:
            self.syn_deadline = None
            if self.last_received < 0:
                self.status = "terminated"  # "SYN has not been received after 200 ms"

    def _process_ack(self, packet: bytes) -> None:
        ack_through = struct.unpack(">I", packet[12:16])[0]
        if ack_through > self.seq:
            return
        nacks = {struct.unpack(">I", packet[17 + 4 * i : 21 + 4 * i])[0] for i in range(packet[16])}
        for seq in sorted(self.sent):
            if seq <= ack_through and seq not in nacks:
                del self.sent[seq]
        if self.status == "closed":
            self.status = "terminated"
        elif self.status == "closing":
            self._close_when_acked()

    def _process(self, seq: int, packet: bytes) -> None:
        option = 17 + 4 * packet[16] + 3
        flags = struct.unpack(">H", packet[option - 2 : option])[0]
        size = struct.unpack(">H", packet[option : option + 2])[0]
        data = option + 2
        payload = packet[data + size :]
        if flags & sp.DELAY_REQUESTED:
            data += 2
        if flags & sp.FROM_INCLUDED:
            data += len(self.remote.raw)  # i2pd takes the identity from the LeaseSet
        if flags & sp.MAX_PACKET_SIZE_INCLUDED:
            data += 2
        if flags & sp.SIGNATURE_INCLUDED:
            signature = packet[data : data + 64]
            if not self.remote.verify(packet[:data] + bytes(64) + packet[data + 64 :], signature):
                flags |= sp.CLOSE  # i2pd closes on a bad signature
        self.received += payload
        self.last_received = seq
        if flags & sp.RESET:
            self.status = "terminated"
        elif flags & sp.CLOSE:
            if self.status != "closed":
                self.send_close()
            self.status = "terminated"
