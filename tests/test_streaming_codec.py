"""The streaming packet codec: byte-exact vectors built by hand from the spec's layout (never
with the code under test), signatures checked against an independent computation, packets
written the way i2pd 2.45.1's Streaming.cpp writes them, and fuzzing.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.wire import streaming as sp
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.streaming import StreamPacket, verify_signature
from i2p_multihome.wire.structures import Destination
from seeded import seeded_random
from sigtypes import DsaSigner, EcdsaSigner
from test_wire_fuzz import mutations

FUZZ = settings(max_examples=300)
ALICE = DestinationKeys.generate(seeded_random(b"alice"))
BOB = DestinationKeys.generate(seeded_random(b"bob"))
SIG = 64


def header(send: int, receive: int, seq: int, ack: int, nacks: tuple[int, ...] = (),
           resend_delay: int = 0, flags: int = 0, options: bytes = b"") -> bytes:  # fmt: skip
    """The spec's layout, by hand."""
    return (
        struct.pack(">IIIIB", send, receive, seq, ack, len(nacks))
        + b"".join(struct.pack(">I", n) for n in nacks)
        + struct.pack(">BHH", resend_delay, flags, len(options))
        + options
    )


def ed25519_sign(keys: DestinationKeys, message: bytes) -> bytes:
    """Signed with the cryptography library directly, not through DestinationKeys."""
    return Ed25519PrivateKey.from_private_bytes(keys.signing_seed).sign(message)


def hand_signed_syn(payload: bytes = b"GET / HTTP/1.1\r\n\r\n") -> tuple[bytes, bytes]:
    """A client SYN as the spec describes it: replay hash in 8 NACKs, FROM, max packet size,
    signature over the packet with the signature zeroed. Returns (wire bytes, signature)."""
    nacks = struct.unpack(">8I", BOB.destination.hash)
    flags = sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED | sp.FROM_INCLUDED | sp.MAX_PACKET_SIZE_INCLUDED
    flags |= sp.NO_ACK
    unsigned_options = ALICE.destination.raw + struct.pack(">H", 1812) + bytes(SIG)
    unsigned = header(0, 0x11223344, 0, 0, nacks, 9, flags, unsigned_options) + payload
    signature = ed25519_sign(ALICE, unsigned)
    options = ALICE.destination.raw + struct.pack(">H", 1812) + signature
    return header(0, 0x11223344, 0, 0, nacks, 9, flags, options) + payload, signature


# --- byte-exact vectors -----------------------------------------------------------------


def test_plain_ack_with_nacks_is_byte_exact() -> None:
    wire = bytes.fromhex(
        "0000000a" "0000000b" "00000000" "00000007" "02" "00000003" "00000005" "00" "0000" "0000"
    )  # fmt: skip
    packet = StreamPacket.decode(wire)
    assert (packet.send_stream_id, packet.receive_stream_id) == (10, 11)
    assert (packet.sequence, packet.ack_through, packet.nacks) == (0, 7, (3, 5))
    assert packet.is_plain_ack and not packet.is_syn
    assert packet.flags == 0 and packet.payload == b"" and packet.signature is None
    assert StreamPacket(10, 11, 0, 7, (3, 5)).encode() == wire


def test_client_syn_vector_decodes_and_its_signature_is_the_independent_one() -> None:
    wire, signature = hand_signed_syn()
    packet = StreamPacket.decode(wire)
    assert packet.is_syn and packet.has(sp.NO_ACK)
    assert packet.from_destination == ALICE.destination
    assert packet.max_packet_size == 1812
    assert packet.signature == signature
    assert packet.replay_hash == BOB.destination.hash
    assert packet.payload == b"GET / HTTP/1.1\r\n\r\n"
    assert packet.encode() == wire
    assert packet.verify(ALICE.destination)
    assert not packet.verify(BOB.destination)
    # Building the same packet with the codec signs the same bytes.
    built = StreamPacket.make(
        0, 0x11223344, 0, nacks=sp.nacks_from_hash(BOB.destination.hash), resend_delay=9,
        flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED | sp.NO_ACK,
        from_destination=ALICE.destination, max_packet_size=1812,
        payload=b"GET / HTTP/1.1\r\n\r\n",
    ).signed(ALICE.sign, SIG)  # fmt: skip
    assert built.encode() == wire
    assert built.signed_bytes() == wire.replace(signature, bytes(SIG))


def test_signature_covers_every_byte() -> None:
    wire, signature = hand_signed_syn()
    start = wire.index(signature)
    for at in itertools.chain(range(0, start), range(start + SIG, len(wire))):
        tampered = bytearray(wire)
        tampered[at] ^= 0x01
        try:
            packet = StreamPacket.decode(bytes(tampered))
        except WireError:
            continue
        assert not packet.verify(ALICE.destination), f"byte {at} is not covered"


def test_options_come_in_spec_order() -> None:
    """delay, FROM, max packet size, signature: each at the offset the spec's order gives."""
    packet = StreamPacket.make(
        1, 2, 3, ack_through=2, flags=sp.SIGNATURE_INCLUDED, delay_requested_ms=500,
        from_destination=ALICE.destination, max_packet_size=1730, payload=b"xy",
    ).signed(ALICE.sign, SIG)  # fmt: skip
    wire = packet.encode()
    options = wire[22 : 22 + struct.unpack(">H", wire[20:22])[0]]
    assert options[:2] == struct.pack(">H", 500)
    assert options[2:393] == ALICE.destination.raw
    assert options[393:395] == struct.pack(">H", 1730)
    assert options[395:] == packet.signature
    assert wire[-2:] == b"xy"
    assert packet.signature_offset() == 22 + 395


OPTION_FLAGS = (sp.DELAY_REQUESTED, sp.FROM_INCLUDED, sp.MAX_PACKET_SIZE_INCLUDED,
                sp.SIGNATURE_INCLUDED)  # fmt: skip
OTHER_FLAGS = (0, sp.SYNCHRONIZE, sp.CLOSE, sp.RESET, sp.ECHO | sp.NO_ACK,
               sp.SIGNATURE_REQUESTED | sp.PROFILE_INTERACTIVE)  # fmt: skip


@pytest.mark.parametrize("others", OTHER_FLAGS)
@pytest.mark.parametrize(
    "options", [c for n in range(5) for c in itertools.combinations(OPTION_FLAGS, n)]
)
def test_every_flag_and_option_combination(others: int, options: tuple[int, ...]) -> None:
    flags = others
    option_bytes = b""
    for flag in options:
        flags |= flag
    if flags & sp.DELAY_REQUESTED:
        option_bytes += struct.pack(">H", 61000)
    if flags & sp.FROM_INCLUDED:
        option_bytes += ALICE.destination.raw
    if flags & sp.MAX_PACKET_SIZE_INCLUDED:
        option_bytes += struct.pack(">H", 1812)
    signature = bytes(range(64)) if flags & sp.SIGNATURE_INCLUDED else b""
    wire = header(5, 6, 7, 4, (1, 2), 3, flags, option_bytes + signature) + b"payload"
    packet = StreamPacket.decode(wire, signer=ALICE.destination)
    assert packet.flags == flags
    assert packet.delay_requested_ms == (61000 if flags & sp.DELAY_REQUESTED else None)
    assert packet.choked is (True if flags & sp.DELAY_REQUESTED else None)
    assert packet.from_destination == (ALICE.destination if flags & sp.FROM_INCLUDED else None)
    assert packet.max_packet_size == (1812 if flags & sp.MAX_PACKET_SIZE_INCLUDED else None)
    assert packet.signature == (signature or None)
    assert packet.payload == b"payload" and packet.extra_options == b""
    assert packet.encode() == wire
    # Without a signer, a signature's length is what is left of the options (spec).
    assert StreamPacket.decode(wire) == packet


def test_unsigned_packet_flagged_signed_will_not_encode() -> None:
    packet = StreamPacket.make(1, 2, 3, flags=sp.CLOSE | sp.SIGNATURE_INCLUDED)
    with pytest.raises(WireError, match="not signed"):
        packet.encode()
    signed = packet.signed(ALICE.sign, SIG)
    assert signed.verify(ALICE.destination)
    assert StreamPacket.decode(signed.encode(), signer=ALICE.destination) == signed


def test_signer_must_return_the_announced_length() -> None:
    packet = StreamPacket.make(1, 2, 3, flags=sp.RESET | sp.SIGNATURE_INCLUDED)
    with pytest.raises(WireError, match="signer returned"):
        packet.signed(lambda _: bytes(40), SIG)
    with pytest.raises(WireError, match="FROM"):
        StreamPacket.make(1, 2, 3, flags=sp.SIGNATURE_INCLUDED | sp.SYNCHRONIZE,
                          from_destination=ALICE.destination).signed(ALICE.sign, 40)  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sequence": 1 << 32}, "sequence"),
        ({"nacks": tuple(range(256))}, "NACKs"),
        ({"resend_delay": 256}, "resend delay"),
        ({"flags": sp.DELAY_REQUESTED}, "delay"),
        ({"delay_requested_ms": 5}, "delay"),
        ({"flags": sp.FROM_INCLUDED}, "FROM"),
        ({"flags": sp.MAX_PACKET_SIZE_INCLUDED}, "max packet size"),
        ({"signature": bytes(64)}, "SIGNATURE_INCLUDED"),
        ({"flags": sp.OFFLINE_SIGNATURE}, "offline"),
        ({"flags": 1 << 16}, "flags"),
    ],
)
def test_inconsistent_values_are_refused(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"send_stream_id": 1, "receive_stream_id": 2, "sequence": 3}
    values.update(fields)
    with pytest.raises(WireError, match=message):
        StreamPacket(**values)  # type: ignore[arg-type]


# --- decoding errors --------------------------------------------------------------------


def test_option_size_smaller_than_the_flags_need_is_refused_naming_the_option() -> None:
    flags = sp.DELAY_REQUESTED | sp.MAX_PACKET_SIZE_INCLUDED
    with pytest.raises(WireError, match="max packet size"):
        StreamPacket.decode(header(1, 2, 3, 0, flags=flags, options=b"\x00\x01") + b"data")
    with pytest.raises(WireError, match="delay"):
        StreamPacket.decode(header(1, 2, 3, 0, flags=sp.DELAY_REQUESTED, options=b"\x00"))
    with pytest.raises(WireError, match="destination"):
        StreamPacket.decode(
            header(1, 2, 3, 0, flags=sp.FROM_INCLUDED, options=ALICE.destination.raw[:200])
        )
    with pytest.raises(WireError, match="signature"):
        StreamPacket.decode(
            header(1, 2, 3, 0, flags=sp.SIGNATURE_INCLUDED, options=bytes(63)),
            signer=ALICE.destination,
        )


def test_option_size_past_the_end_is_refused() -> None:
    wire = bytearray(header(1, 2, 3, 0, options=b"abcd"))
    wire[20:22] = struct.pack(">H", 5)
    with pytest.raises(WireError, match="options"):
        StreamPacket.decode(bytes(wire))


def test_option_bytes_past_the_known_options_are_kept() -> None:
    """i2pd and Java skip option bytes they do not parse; we keep them to re-encode exactly
    and so verify what the sender signed."""
    wire = header(1, 2, 3, 0, flags=sp.DELAY_REQUESTED, options=b"\x00\x10future") + b"data"
    packet = StreamPacket.decode(wire)
    assert packet.delay_requested_ms == 16
    assert packet.extra_options == b"future" and packet.payload == b"data"
    assert packet.encode() == wire


def test_offline_signature_is_refused_clearly() -> None:
    wire = header(0, 1, 0, 0, flags=sp.SYNCHRONIZE | sp.FROM_INCLUDED | sp.OFFLINE_SIGNATURE,
                  options=ALICE.destination.raw + bytes(100))  # fmt: skip
    with pytest.raises(WireError, match="offline-signed"):
        StreamPacket.decode(wire)


def test_every_cut_before_the_payload_is_refused_and_after_it_is_a_shorter_payload() -> None:
    """The payload runs to the end (no length field): a cut inside it is a valid packet."""
    wire, _ = hand_signed_syn(b"0123456789")
    payload_at = len(wire) - 10
    for cut in range(len(wire) + 1):
        if cut < payload_at:
            with pytest.raises(WireError):
                StreamPacket.decode(wire[:cut])
        else:
            assert StreamPacket.decode(wire[:cut]).payload == wire[payload_at:cut]


def test_unknown_signature_type_in_from_is_refused() -> None:
    raw = bytearray(ALICE.destination.raw)
    raw[387:389] = struct.pack(">H", 9999)
    wire = header(0, 1, 0, 0, flags=sp.SYNCHRONIZE | sp.FROM_INCLUDED, options=bytes(raw))
    with pytest.raises(WireError, match="signature type"):
        StreamPacket.decode(wire)


# --- replay prevention -------------------------------------------------------------------


def test_replay_hash_helpers() -> None:
    digest = hashlib.sha256(b"bob").digest()
    nacks = sp.nacks_from_hash(digest)
    assert nacks == struct.unpack(">8I", digest)
    assert sp.hash_from_nacks(nacks) == digest
    assert sp.hash_from_nacks(nacks[:7]) is None
    assert sp.hash_from_nacks(()) is None
    with pytest.raises(WireError):
        sp.nacks_from_hash(digest[:31])
    # Only a SYN carries one; 8 NACKs in an ack are NACKs.
    assert StreamPacket(1, 2, 0, 9, nacks).replay_hash is None
    assert StreamPacket(0, 2, 0, 0, nacks, flags=sp.SYNCHRONIZE).replay_hash == digest


# --- signature types -----------------------------------------------------------------------


def test_dsa_group_constants_are_consistent() -> None:
    """q divides p - 1 and g has order q: a wrong digit anywhere would break this."""
    assert (sp.DSA_P - 1) % sp.DSA_Q == 0
    assert pow(sp.DSA_G, sp.DSA_Q, sp.DSA_P) == 1
    assert sp.DSA_P.bit_length() == 1024 and sp.DSA_Q.bit_length() == 160


def test_dsa_sha1_signature_made_by_the_cryptography_library_verifies() -> None:
    signer = DsaSigner.generate(b"x")
    y = int.from_bytes(signer.destination.signing_public_key, "big")
    params = dsa.DSAParameterNumbers(sp.DSA_P, sp.DSA_Q, sp.DSA_G)
    private = dsa.DSAPrivateNumbers(signer.x, dsa.DSAPublicNumbers(y, params)).private_key()
    r, s = decode_dss_signature(private.sign(b"message", hashes.SHA1()))  # noqa: S303
    signature = r.to_bytes(20, "big") + s.to_bytes(20, "big")
    assert verify_signature(signer.destination, b"message", signature)
    assert not verify_signature(signer.destination, b"massage", signature)
    assert not verify_signature(signer.destination, b"message", bytes(40))
    assert not verify_signature(signer.destination, b"message", signature[:39])


@pytest.mark.parametrize("sig_type", [1, 2, 3])
def test_ecdsa_signatures_verify(sig_type: int) -> None:
    signer = EcdsaSigner.generate(sig_type, b"e%d" % sig_type)
    assert signer.destination.sig_type == sig_type
    signature = signer.sign(b"message")
    assert len(signature) == signer.destination.signature_len
    assert verify_signature(signer.destination, b"message", signature)
    assert not verify_signature(signer.destination, b"message!", signature)
    assert not verify_signature(signer.destination, b"message", bytes(len(signature)))


def test_a_dsa_signed_syn_round_trips_with_a_40_byte_signature() -> None:
    signer = DsaSigner.generate(b"syn")
    packet = StreamPacket.make(
        0, 77, 0, flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED | sp.NO_ACK,
        from_destination=signer.destination, max_packet_size=1730, payload=b"hi",
    ).signed(signer.sign, 40)  # fmt: skip
    decoded = StreamPacket.decode(packet.encode())
    assert len(decoded.signature or b"") == 40
    assert decoded.verify(signer.destination)
    assert not decoded.verify(ALICE.destination)  # wrong length for Ed25519: False


def test_unsupported_signature_types_raise() -> None:
    raw = bytearray(_rsa_destination())
    rsa = Destination.from_bytes(bytes(raw))
    with pytest.raises(WireError, match="not supported"):
        verify_signature(rsa, b"m", bytes(rsa.signature_len))


def _rsa_destination() -> bytes:
    """RSA_SHA256_2048 (type 4): 256-byte key, 128 bytes of it beyond the key area."""
    cert = struct.pack(">HH", 4, 0) + bytes(128)
    return bytes(256) + bytes(128) + struct.pack(">BH", 5, len(cert)) + cert


# --- i2pd 2.45.1 interop -------------------------------------------------------------------
# Each builder follows the writer code in i2pd's libi2pd/Streaming.cpp at tag 2.45.1 field by
# field (SendBuffer, SendQuickAck, SendClose, SendPing, HandlePing).


def i2pd_syn(keys: DestinationKeys, recv_id: int, *, incoming_seq: int | None,
             payload: bytes, rto_ms: int = 9000, mtu: int = 1812) -> bytes:  # fmt: skip
    """Stream::SendBuffer, first packet: a client's SYN (incoming_seq None: isNoAck) or a
    server's answer (acks the client's SYN, seq `incoming_seq`)."""
    send_id = 0 if incoming_seq is None else 0x0A0B0C0D
    out = struct.pack(">III", send_id, recv_id, 0)
    out += bytes(4) if incoming_seq is None else struct.pack(">I", incoming_seq)
    out += bytes([0, rto_ms // 1000])  # NACK count, resend delay
    flags = sp.SYNCHRONIZE | sp.FROM_INCLUDED | sp.SIGNATURE_INCLUDED
    flags |= sp.MAX_PACKET_SIZE_INCLUDED
    if incoming_seq is None:
        flags |= sp.NO_ACK
    out += struct.pack(">H", flags)
    options = keys.destination.raw + struct.pack(">H", mtu) + bytes(64)
    out += struct.pack(">H", len(options)) + options + payload
    signature = ed25519_sign(keys, out)
    at = len(out) - len(payload) - 64
    return out[:at] + signature + out[at + 64 :]


def i2pd_quick_ack(send_id: int, recv_id: int, last: int, saved: list[int]) -> bytes:
    """Stream::SendQuickAck: NACKs for the gaps below the highest saved packet."""
    highest = max([last, *saved])
    nacks = [seq for seq in range(last + 1, highest) if seq not in saved]
    out = struct.pack(">IIII", send_id, recv_id, 0, highest) + bytes([len(nacks)])
    out += b"".join(struct.pack(">I", n) for n in nacks)
    return out + bytes([0]) + struct.pack(">HH", 0, 0)


def i2pd_close(keys: DestinationKeys, send_id: int, recv_id: int, seq: int, last: int) -> bytes:
    """Stream::SendClose: CLOSE | SIGNATURE_INCLUDED, the signature the only option."""
    out = struct.pack(">IIII", send_id, recv_id, seq, last) + bytes([0, 0])
    out += struct.pack(">HH", sp.CLOSE | sp.SIGNATURE_INCLUDED, 64) + bytes(64)
    return out[:-64] + ed25519_sign(keys, out)


def i2pd_ping(keys: DestinationKeys, recv_id: int) -> bytes:
    """Stream::SendPing: our id as sendStreamId, 14 zero bytes, ECHO with FROM and SIG."""
    out = struct.pack(">I", recv_id) + bytes(14)
    out += struct.pack(">H", sp.ECHO | sp.SIGNATURE_INCLUDED | sp.FROM_INCLUDED)
    options = keys.destination.raw + bytes(64)
    out += struct.pack(">H", len(options)) + options
    return out[:-64] + ed25519_sign(keys, out)


def test_i2pd_client_syn_decodes_and_verifies() -> None:
    wire = i2pd_syn(ALICE, 0x01020304, incoming_seq=None, payload=b"GET /")
    packet = StreamPacket.decode(wire)
    assert (packet.send_stream_id, packet.receive_stream_id, packet.sequence) == (0, 0x01020304, 0)
    assert packet.is_syn and packet.has(sp.NO_ACK) and packet.resend_delay == 9
    assert packet.nacks == () and packet.replay_hash is None  # 2.45.1 sends no replay hash
    assert packet.max_packet_size == 1812 and packet.payload == b"GET /"
    assert packet.verify(ALICE.destination)
    assert packet.encode() == wire


def test_i2pd_server_syn_and_follow_ons_decode() -> None:
    syn = StreamPacket.decode(i2pd_syn(BOB, 0x55, incoming_seq=0, payload=b""))
    assert syn.is_syn and not syn.has(sp.NO_ACK) and syn.ack_through == 0
    assert syn.verify(BOB.destination)
    follow = StreamPacket.decode(struct.pack(">IIIIBBHH", 0x55, 0x66, 1, 0, 0, 9, 0, 0) + b"x")
    assert (follow.sequence, follow.flags, follow.payload) == (1, 0, b"x")
    ack = StreamPacket.decode(i2pd_quick_ack(0x55, 0x66, 3, [5, 7]))
    assert ack.is_plain_ack and ack.ack_through == 7 and ack.nacks == (4, 6)
    close = StreamPacket.decode(i2pd_close(BOB, 0x55, 0x66, 9, 4), signer=BOB.destination)
    assert close.has(sp.CLOSE) and close.verify(BOB.destination)
    # Without knowing the stream, the signature length is inferred (spec) and still right.
    assert StreamPacket.decode(i2pd_close(BOB, 0x55, 0x66, 9, 4)).verify(BOB.destination)
    ping = StreamPacket.decode(i2pd_ping(BOB, 0x77))
    assert ping.has(sp.ECHO) and ping.send_stream_id == 0x77 and ping.verify(BOB.destination)


def i2pd_read_and_verify(wire: bytes, remote: Destination) -> tuple[int, bytes]:
    """Read a packet the way i2pd 2.45.1 does (Packet accessors, then ProcessOptions walking
    the option data in flag order) and check its signature the way it does: zero the
    signature in place, verify the whole packet. Returns (flags, payload)."""
    nack_count = wire[16]
    option = 17 + nack_count * 4 + 3
    flags = struct.unpack(">H", wire[option - 2 : option])[0]
    option_size = struct.unpack(">H", wire[option : option + 2])[0]
    data = option + 2
    payload = wire[data + option_size :]
    if flags & sp.DELAY_REQUESTED:
        data += 2
    if flags & sp.FROM_INCLUDED:
        data += len(remote.raw)
    if flags & sp.MAX_PACKET_SIZE_INCLUDED:
        data += 2
    if flags & sp.SIGNATURE_INCLUDED:
        signature = wire[data : data + 64]
        zeroed = wire[:data] + bytes(64) + wire[data + 64 :]
        assert remote.verify(zeroed, signature), "i2pd would not verify this"
    return flags, payload


def test_our_signed_packets_read_as_i2pd_reads_them() -> None:
    syn = StreamPacket.make(
        0x55, 0x66, 0, flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED, delay_requested_ms=0,
        from_destination=BOB.destination, max_packet_size=1812, payload=b"HTTP/1.1 200",
    ).signed(BOB.sign, SIG)  # fmt: skip
    flags, payload = i2pd_read_and_verify(syn.encode(), BOB.destination)
    assert flags == syn.flags and payload == b"HTTP/1.1 200"
    close = StreamPacket.make(0x55, 0x66, 7, ack_through=3, flags=sp.CLOSE | sp.SIGNATURE_INCLUDED)
    close = close.signed(BOB.sign, SIG)
    assert i2pd_read_and_verify(close.encode(), BOB.destination) == (close.flags, b"")
    # Java reads a signature without FROM as "the rest of the options": nothing may follow.
    wire = close.encode()
    assert struct.unpack(">H", wire[20:22])[0] == SIG


# --- round trips and fuzzing ----------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def packets(draw: st.DrawFn) -> StreamPacket:
    flags = draw(st.integers(0, 0xFFFF)) & ~sp.OFFLINE_SIGNATURE
    flags &= ~(sp.DELAY_REQUESTED | sp.FROM_INCLUDED | sp.MAX_PACKET_SIZE_INCLUDED)
    flags &= ~sp.SIGNATURE_INCLUDED
    signed = draw(st.booleans())
    return StreamPacket.make(
        draw(u32), draw(u32), draw(u32),
        ack_through=draw(u32),
        nacks=tuple(draw(st.lists(u32, max_size=12))),
        resend_delay=draw(st.integers(0, 255)),
        flags=flags | (sp.SIGNATURE_INCLUDED if signed else 0),
        delay_requested_ms=draw(st.none() | st.integers(0, 0xFFFF)),
        from_destination=draw(st.sampled_from([None, ALICE.destination])),
        max_packet_size=draw(st.none() | st.integers(0, 0xFFFF)),
        payload=draw(st.binary(max_size=64)),
    )  # fmt: skip


@FUZZ
@given(packets())
def test_round_trip(packet: StreamPacket) -> None:
    if packet.has(sp.SIGNATURE_INCLUDED):
        packet = packet.signed(ALICE.sign, SIG)
        assert packet.verify(ALICE.destination)
    wire = packet.encode()
    assert StreamPacket.decode(wire, signer=ALICE.destination) == packet
    assert StreamPacket.decode(wire) == packet
    assert StreamPacket.decode(wire).raw == wire


def _decode_or_wire_error(data: bytes, signer: Destination | None = None) -> None:
    """Anything but WireError fails; whatever decodes re-encodes to the same bytes."""
    try:
        packet = StreamPacket.decode(data, signer)
    except WireError:
        return
    assert packet.encode() == data
    assert len(packet.nacks) <= sp.MAX_NACKS
    if packet.signature is not None:
        with contextlib.suppress(WireError):  # an unverifiable type is a WireError too
            packet.verify(ALICE.destination)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    _decode_or_wire_error(data)
    _decode_or_wire_error(data, ALICE.destination)


@FUZZ
@given(st.binary(min_size=22, max_size=80), st.integers(0, 0xFFFF))
def test_random_packets_with_every_flag_word(data: bytes, flags: int) -> None:
    wire = bytearray(data)
    wire[16] = min(wire[16], 3)
    at = 17 + 4 * wire[16]
    if len(wire) >= at + 5:
        wire[at + 1 : at + 3] = struct.pack(">H", flags)
    _decode_or_wire_error(bytes(wire))


SAMPLES = [
    hand_signed_syn()[0],
    i2pd_syn(ALICE, 5, incoming_seq=None, payload=b"x" * 40),
    i2pd_quick_ack(1, 2, 3, [5, 9, 10]),
    i2pd_close(BOB, 1, 2, 3, 4),
    i2pd_ping(BOB, 9),
]


@pytest.mark.parametrize("sample", range(len(SAMPLES)))
@settings(max_examples=200)
@given(data=st.data())
def test_mutated_packets_only_raise_wire_error(sample: int, data: st.DataObject) -> None:
    _decode_or_wire_error(data.draw(mutations(SAMPLES[sample])), BOB.destination)


@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_every_byte_set_to_extremes(sample: int) -> None:
    valid = SAMPLES[sample]
    for at in range(len(valid)):
        for value in (0x00, 0xFF):
            _decode_or_wire_error(valid[:at] + bytes([value]) + valid[at + 1 :], BOB.destination)
