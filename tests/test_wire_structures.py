"""Byte-exact vectors and round-trip properties for the wire structures and I2CP messages.

Expected bytes are built by hand with `struct.pack` from the specification's layouts
(common-structures, i2cp), never with the code under test.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.wire import codec
from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.encoding import b32_address, b64decode, b64encode, hash_from_b32
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.messages import (
    MAX_BODY,
    PROTOCOL_DATAGRAM,
    CreateLeaseSet2,
    CreateSession,
    DestroySession,
    Disconnect,
    GetDate,
    HostLookup,
    HostReply,
    Message,
    MessagePayload,
    MessageStatus,
    Payload,
    PrivateKey,
    ReconfigureSession,
    RequestVariableLeaseSet,
    SendMessage,
    SendMessageExpires,
    SessionStatus,
    SetDate,
    decode_client_message,
    decode_router_message,
    encode_frame,
    parse_header,
)
from i2p_multihome.wire.structures import (
    MAX_LEASES,
    SIG_SPECS,
    Destination,
    EncryptionKey,
    Lease,
    Lease2,
    LeaseSet2,
    SessionConfig,
    encode_mapping,
    read_mapping,
)

# RFC 8032, section 7.1, TEST 1: an Ed25519 key pair and its signature of the empty message.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
PADDING_BLOCK = bytes(range(0x40, 0x60))
X25519_PRIVATE = bytes(range(0x80, 0xA0))


def _hand_destination(public: bytes = RFC8032_PUBLIC, block: bytes = PADDING_BLOCK) -> bytes:
    """256-byte public key area + 96 bytes padding + Ed25519 key + key certificate."""
    padding = (block * 11)[: 256 + 96]
    key_cert = struct.pack(">BHHH", 5, 4, 7, 0)  # KEY cert, length 4, sig 7, crypto 0
    return padding + public + key_cert


def _rfc_keys() -> DestinationKeys:
    return DestinationKeys(
        Destination.for_ed25519(RFC8032_PUBLIC, PADDING_BLOCK), RFC8032_SEED, X25519_PRIVATE
    )


def _gateway(i: int) -> bytes:
    return hashlib.sha256(b"gateway %d" % i).digest()


# --- encodings ----------------------------------------------------------------------------


def test_rfc8032_vector_holds_for_the_library_we_verify_with() -> None:
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    assert key.sign(b"") == RFC8032_EMPTY_SIGNATURE


def test_i2p_base64_uses_dash_and_tilde() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF])  # standard base64 "+/+/"
    assert base64.b64encode(raw) == b"+/+/"
    assert b64encode(raw) == "-~-~"
    assert b64decode("-~-~") == raw


def test_i2p_base64_pads_and_accepts_missing_padding() -> None:
    assert b64encode(b"\x00") == "AA=="
    assert b64decode("AA==") == b"\x00"
    assert b64decode("AA") == b"\x00"
    assert b64decode("  AAA=\n") == b"\x00\x00"


@pytest.mark.parametrize("text", ["A", "A!==", "AA==AA==", "é"])
def test_i2p_base64_rejects_garbage(text: str) -> None:
    with pytest.raises(WireError):
        b64decode(text)


def test_b32_of_known_hashes() -> None:
    assert b32_address(bytes(32)) == "a" * 52 + ".b32.i2p"
    # RFC 4648 base32 of the bytes 0..31, lowercased, padding dropped.
    expected = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq.b32.i2p"
    assert b32_address(bytes(range(32))) == expected
    assert hash_from_b32(expected) == bytes(range(32))
    assert hash_from_b32(expected.upper()) == bytes(range(32))
    assert hash_from_b32(expected.removesuffix(".b32.i2p")) == bytes(range(32))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_b32_needs_a_32_byte_hash(size: int) -> None:
    with pytest.raises(WireError):
        b32_address(bytes(size))


@given(st.binary(min_size=32, max_size=32))
def test_b32_round_trip(hash32: bytes) -> None:
    address = b32_address(hash32)
    assert address == base64.b32encode(hash32).decode().rstrip("=").lower() + ".b32.i2p"
    assert hash_from_b32(address) == hash32


@given(st.binary(max_size=300))
def test_b64_round_trip(data: bytes) -> None:
    text = b64encode(data)
    assert "+" not in text and "/" not in text
    assert b64decode(text) == data
    assert b64decode(text.rstrip("=")) == data


# --- codec --------------------------------------------------------------------------------


def test_codec_integers_are_big_endian_and_range_checked() -> None:
    assert codec.u16(0x0102) == b"\x01\x02"
    assert codec.u32(0x01020304) == b"\x01\x02\x03\x04"
    assert codec.u64(1) == b"\x00" * 7 + b"\x01"
    for encode, bits in ((codec.u8, 8), (codec.u16, 16), (codec.u32, 32), (codec.u64, 64)):
        with pytest.raises(WireError):
            encode(1 << bits)
        with pytest.raises(WireError):
            encode(-1)


def test_codec_string() -> None:
    assert codec.string("héllo") == b"\x06h\xc3\xa9llo"
    assert Reader(b"\x06h\xc3\xa9llo").string() == "héllo"
    assert codec.string("x" * 255)[0] == 255
    with pytest.raises(WireError):
        codec.string("x" * 256)
    with pytest.raises(WireError):
        codec.string("é" * 128)  # 256 bytes


def test_reader_refuses_to_read_past_the_end() -> None:
    reader = Reader(b"\x00\x01\x02")
    assert reader.u16() == 1
    with pytest.raises(WireError):
        reader.u16()
    assert reader.remaining == 1  # a failed read consumes nothing
    with pytest.raises(WireError):
        reader.take(-1)


# --- Destination --------------------------------------------------------------------------


def test_ed25519_destination_is_391_bytes_exactly() -> None:
    dest = Destination.for_ed25519(RFC8032_PUBLIC, PADDING_BLOCK)
    expected = _hand_destination()
    assert len(expected) == 391
    assert dest.raw == expected
    assert dest.raw[:32] == PADDING_BLOCK
    assert dest.raw[352:384] == RFC8032_PUBLIC
    assert dest.raw[384:] == bytes.fromhex("05000400070000")
    assert (dest.sig_type, dest.crypto_type) == (7, 0)
    assert dest.signing_public_key == RFC8032_PUBLIC
    assert dest.signature_len == 64
    digest = hashlib.sha256(expected).digest()
    assert dest.hash == digest
    assert dest.b32 == base64.b32encode(digest).decode().rstrip("=").lower() + ".b32.i2p"
    assert dest.b64 == base64.b64encode(expected).decode().replace("+", "-").replace("/", "~")
    assert Destination.from_bytes(expected) == dest


def test_destination_verifies_ed25519_signatures() -> None:
    dest = Destination.for_ed25519(RFC8032_PUBLIC, PADDING_BLOCK)
    assert dest.verify(b"", RFC8032_EMPTY_SIGNATURE)
    assert not dest.verify(b"x", RFC8032_EMPTY_SIGNATURE)
    tampered = bytes([RFC8032_EMPTY_SIGNATURE[0] ^ 1]) + RFC8032_EMPTY_SIGNATURE[1:]
    assert not dest.verify(b"", tampered)


def test_null_certificate_destination_is_dsa_elgamal() -> None:
    raw = bytes(range(256)) + bytes(128) + b"\x00\x00\x00"
    dest = Destination.from_bytes(raw)
    assert (dest.sig_type, dest.crypto_type, dest.signature_len) == (0, 0, 40)
    assert dest.signing_public_key == bytes(128)
    with pytest.raises(WireError):
        dest.verify(b"", bytes(40))


def test_key_certificate_with_excess_signing_key_bytes() -> None:
    # RSA-2048 (type 4): a 256-byte key, 128 in the key area and 128 in the certificate.
    key = bytes(range(256))
    raw = bytes(256) + key[:128] + struct.pack(">BHHH", 5, 4 + 128, 4, 0) + key[128:]
    dest = Destination.from_bytes(raw)
    assert dest.sig_type == 4
    assert dest.signing_public_key == key
    assert dest.signature_len == 256


@pytest.mark.parametrize(
    ("cert", "why"),
    [
        (struct.pack(">BH", 0, 1) + b"\x00", "NULL certificate with a payload"),
        (struct.pack(">BH", 1, 0), "hashcash certificate"),
        (struct.pack(">BHHH", 5, 4, 99, 0), "unknown signature type"),
        (struct.pack(">BHHH", 5, 5, 7, 0) + b"\x00", "excess bytes for Ed25519"),
        (struct.pack(">BHH", 5, 2, 7), "truncated key certificate"),
        (struct.pack(">BHHH", 5, 9, 7, 0), "certificate length lies"),
    ],
)
def test_destination_refuses_bad_certificates(cert: bytes, why: str) -> None:
    with pytest.raises(WireError):
        Destination.from_bytes(bytes(384) + cert)


def test_destination_refuses_trailing_bytes() -> None:
    with pytest.raises(WireError):
        Destination.from_bytes(_hand_destination() + b"\x00")


# --- Mapping ------------------------------------------------------------------------------


def test_mapping_exact_bytes_and_key_order() -> None:
    encoded = encode_mapping({"b": "2", "a": "1", "i2cp.x": ""})
    entries = b"\x01a=\x011;" + b"\x01b=\x012;" + b"\x06i2cp.x=\x00;"
    assert encoded == struct.pack(">H", len(entries)) + entries
    assert encode_mapping({}) == b"\x00\x00"


def test_mapping_sorts_by_key_not_insertion_order() -> None:
    forward = encode_mapping({"inbound.length": "3", "inbound.quantity": "2", "a": "z"})
    backward = encode_mapping({"a": "z", "inbound.quantity": "2", "inbound.length": "3"})
    assert forward == backward
    assert forward.index(b"a=") < forward.index(b"inbound.length") < forward.index(b"quantity")


def test_mapping_parses_unsorted_and_rejects_duplicates() -> None:
    body = b"\x01b=\x012;\x01a=\x011;"
    assert read_mapping(Reader(struct.pack(">H", len(body)) + body)) == {"a": "1", "b": "2"}
    dup = b"\x01a=\x011;\x01a=\x012;"
    with pytest.raises(WireError):
        read_mapping(Reader(struct.pack(">H", len(dup)) + dup))


@pytest.mark.parametrize(
    "body",
    [b"\x01a:\x011;", b"\x01a=\x011,", b"\x01a=\x051;", b"\x02\xff\xfe=\x011;", b"\x01a="],
)
def test_mapping_rejects_malformed_entries(body: bytes) -> None:
    with pytest.raises(WireError):
        read_mapping(Reader(struct.pack(">H", len(body)) + body))


def test_mapping_reads_only_its_declared_size() -> None:
    body = b"\x01a=\x011;"
    reader = Reader(struct.pack(">H", len(body)) + body + b"rest")
    assert read_mapping(reader) == {"a": "1"}
    assert reader.rest() == b"rest"


# --- leases ---------------------------------------------------------------------------------


def test_lease2_is_40_bytes() -> None:
    lease = Lease2(_gateway(1), 0xDEADBEEF, 1_700_000_600)
    expected = _gateway(1) + struct.pack(">II", 0xDEADBEEF, 1_700_000_600)
    assert Lease2.SIZE == 40
    assert lease.to_bytes() == expected
    assert Lease2.read(Reader(expected)) == lease


def test_lease_is_44_bytes_with_millisecond_end() -> None:
    lease = Lease(_gateway(2), 7, 1_700_000_600_123)
    expected = _gateway(2) + struct.pack(">IQ", 7, 1_700_000_600_123)
    assert Lease.SIZE == 44
    assert lease.to_bytes() == expected
    assert Lease.read(Reader(expected)) == lease


def test_lease_gateway_must_be_32_bytes() -> None:
    with pytest.raises(WireError):
        Lease2(b"short", 1, 2).to_bytes()
    with pytest.raises(WireError):
        Lease(bytes(33), 1, 2).to_bytes()


# --- LeaseSet2 ----------------------------------------------------------------------------


def _sixteen_lease_set(keys: DestinationKeys) -> LeaseSet2:
    leases = tuple(Lease2(_gateway(i), 1000 + i, 1_700_000_600 + i) for i in range(16))
    return LeaseSet2.build(
        keys.destination, 1_700_000_000, 600, (keys.encryption_key,), leases, keys.sign
    )


def test_lease_set2_layout_16_leases_one_x25519_key_is_1143_bytes() -> None:
    keys = _rfc_keys()
    lease_set = _sixteen_lease_set(keys)
    data = lease_set.to_bytes()
    assert len(data) == 1143

    x25519_public = keys.encryption_key.public_key
    body = (
        _hand_destination()
        + struct.pack(">IHH", 1_700_000_000, 600, 0)
        + struct.pack(">H", 0)  # empty options mapping
        + struct.pack(">BHH", 1, 4, 32)
        + x25519_public
        + struct.pack(">B", 16)
        + b"".join(_gateway(i) + struct.pack(">II", 1000 + i, 1_700_000_600 + i) for i in range(16))
    )
    assert len(body) == 1079
    assert data[:1079] == body
    # Field offsets.
    assert data[391:395] == struct.pack(">I", 1_700_000_000)
    assert data[395:397] == struct.pack(">H", 600)
    assert data[397:399] == b"\x00\x00"
    assert data[399:401] == b"\x00\x00"
    assert data[401] == 1
    assert data[402:406] == b"\x00\x04\x00\x20"
    assert data[438] == 16
    assert data[439:479] == _gateway(0) + struct.pack(">II", 1000, 1_700_000_600)

    # The signature covers 0x03 || body, checked with the library directly.
    signature = data[1079:]
    assert signature == lease_set.signature
    Ed25519PublicKey.from_public_bytes(RFC8032_PUBLIC).verify(signature, b"\x03" + body)
    assert signature == Ed25519PrivateKey.from_private_bytes(RFC8032_SEED).sign(b"\x03" + body)
    assert lease_set.signed_bytes() == b"\x03" + body
    assert lease_set.verify()

    parsed = LeaseSet2.from_bytes(data)
    assert parsed == lease_set
    assert parsed.verify()


def test_lease_set2_x25519_key_is_the_public_half() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    expected = (
        X25519PrivateKey.from_private_bytes(X25519_PRIVATE)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert _rfc_keys().encryption_key == EncryptionKey(4, expected)


def test_lease_set2_with_options_signs_sorted_mapping() -> None:
    keys = _rfc_keys()
    lease_set = LeaseSet2.build(
        keys.destination, 5, 6, (keys.encryption_key,), (), keys.sign, options={"z": "1", "a": "2"}
    )
    data = lease_set.to_bytes()
    entries = b"\x01a=\x012;\x01z=\x011;"
    assert data[399 : 401 + len(entries)] == struct.pack(">H", len(entries)) + entries
    assert data[401 + len(entries)] == 1  # key count follows the mapping
    assert LeaseSet2.from_bytes(data).verify()


def test_lease_set2_tampering_breaks_the_signature() -> None:
    data = bytearray(_sixteen_lease_set(_rfc_keys()).to_bytes())
    data[500] ^= 0x01  # inside a lease
    assert not LeaseSet2.from_bytes(bytes(data)).verify()


def test_lease_set2_limits() -> None:
    keys = _rfc_keys()
    leases = tuple(Lease2(_gateway(i), i, 100) for i in range(MAX_LEASES + 1))
    with pytest.raises(WireError):
        LeaseSet2.build(keys.destination, 1, 1, (keys.encryption_key,), leases, keys.sign)
    with pytest.raises(WireError):
        LeaseSet2.build(keys.destination, 1, 1, (), leases[:1], keys.sign)
    unsigned = LeaseSet2(keys.destination, 1, 1, 0, {}, (keys.encryption_key,), ())
    with pytest.raises(WireError):
        unsigned.to_bytes()
    # A lease count over 16 in received bytes is refused.
    data = bytearray(_sixteen_lease_set(keys).to_bytes())
    data[438] = 17
    with pytest.raises(WireError):
        LeaseSet2.from_bytes(bytes(data) + bytes(40))


def test_offline_signed_lease_set2_uses_the_transient_signature_length() -> None:
    keys = _rfc_keys()
    transient = bytes(range(32))
    offline = struct.pack(">IH", 1_700_100_000, 7) + transient + bytes(64)
    body = (
        keys.destination.raw
        + struct.pack(">IHH", 1, 2, 1)
        + offline
        + b"\x00\x00"
        + struct.pack(">BHH", 1, 4, 32)
        + bytes(32)
        + b"\x00"
    )
    parsed = LeaseSet2.from_bytes(body + b"\x11" * 64)
    assert parsed.offline_block == offline
    assert parsed.signature == b"\x11" * 64
    assert parsed.to_bytes() == body + b"\x11" * 64
    with pytest.raises(WireError):
        parsed.verify()


# --- SessionConfig --------------------------------------------------------------------------


def test_session_config_exact_bytes_and_signature() -> None:
    keys = _rfc_keys()
    options = {"inbound.quantity": "2", "i2cp.leaseSetEncType": "4"}
    config = SessionConfig.build(keys.destination, options, 1_700_000_000_123, keys.sign)
    entries = b"\x14i2cp.leaseSetEncType=\x014;" + b"\x10inbound.quantity=\x012;"
    signed = (_hand_destination() + struct.pack(">H", len(entries)) + entries) + struct.pack(
        ">Q", 1_700_000_000_123
    )
    assert config.signed_part() == signed
    data = config.to_bytes()
    assert data == signed + config.signature
    Ed25519PublicKey.from_public_bytes(RFC8032_PUBLIC).verify(config.signature, signed)
    assert SessionConfig.read(Reader(data)) == config
    with pytest.raises(WireError):
        SessionConfig(keys.destination, options, 1).to_bytes()


# --- I2CP framing and exact messages --------------------------------------------------------


def test_frame_exact_bytes() -> None:
    frame = encode_frame(SessionStatus(0x0102, 1))
    assert frame == struct.pack(">IB", 3, 20) + b"\x01\x02\x01"
    assert parse_header(frame[:5]) == (3, 20)
    assert decode_router_message(20, frame[5:]) == SessionStatus(0x0102, 1)


def test_parse_header_refuses_oversized_and_short() -> None:
    assert parse_header(struct.pack(">IB", MAX_BODY, 1)) == (MAX_BODY, 1)
    with pytest.raises(WireError):
        parse_header(struct.pack(">IB", MAX_BODY + 1, 1))
    with pytest.raises(WireError):
        parse_header(b"\x00\x00\x00")


def test_encode_frame_refuses_oversized_body() -> None:
    with pytest.raises(WireError):
        encode_frame(MessagePayload(1, 2, bytes(MAX_BODY)))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (GetDate("0.9.62"), b"\x060.9.62"),
        (
            GetDate("0.9.62", {"i2cp.username": "u"}),
            b"\x060.9.62" + b"\x00\x12\x0di2cp.username=\x01u;",
        ),
        (DestroySession(7), b"\x00\x07"),
        (
            SetDate(1_700_000_000_000, "0.9.67"),
            struct.pack(">Q", 1_700_000_000_000) + b"\x060.9.67",
        ),
        (MessageStatus(1, 2, 4, 5, 6), struct.pack(">HIBII", 1, 2, 4, 5, 6)),
        (MessagePayload(1, 2, b"abc"), struct.pack(">HII", 1, 2, 3) + b"abc"),
        (Disconnect("bye"), b"\x03bye"),
        (
            HostLookup(1, 2, 3, hash=bytes(range(32))),
            struct.pack(">HIIB", 1, 2, 3, 0) + bytes(range(32)),
        ),
        (HostLookup(1, 2, 3, hostname="a.i2p"), struct.pack(">HIIB", 1, 2, 3, 1) + b"\x05a.i2p"),
        (HostReply(1, 2, 1), struct.pack(">HIB", 1, 2, 1)),
    ],
)
def test_message_exact_bodies(message: Message, expected: bytes) -> None:
    assert message.encode_body() == expected


def test_request_variable_lease_set_exact_bytes() -> None:
    leases = (Lease(_gateway(1), 11, 1_700_000_600_000), Lease(_gateway(2), 12, 1))
    body = struct.pack(">HB", 3, 2) + b"".join(
        lease.gateway + struct.pack(">IQ", lease.tunnel_id, lease.end_ms) for lease in leases
    )
    assert RequestVariableLeaseSet(3, leases).encode_body() == body
    assert decode_router_message(37, body) == RequestVariableLeaseSet(3, leases)


def test_create_lease_set2_exact_bytes() -> None:
    keys = _rfc_keys()
    lease_set = _sixteen_lease_set(keys)
    message = CreateLeaseSet2(9, lease_set, (PrivateKey(4, X25519_PRIVATE),))
    expected = (
        struct.pack(">HB", 9, 3)
        + lease_set.to_bytes()
        + struct.pack(">BHH", 1, 4, 32)
        + X25519_PRIVATE
    )
    assert message.encode_body() == expected
    assert decode_client_message(41, expected) == message


def test_send_message_expires_exact_bytes() -> None:
    dest = Destination.for_ed25519(RFC8032_PUBLIC, PADDING_BLOCK)
    message = SendMessageExpires(1, dest, b"pay", 77, 0x0102, 0x0000_0123_4567_89AB)
    expected = (
        struct.pack(">H", 1)
        + dest.raw
        + struct.pack(">I", 3)
        + b"pay"
        + struct.pack(">IH", 77, 0x0102)
        + bytes.fromhex("0123456789ab")
    )
    assert message.encode_body() == expected
    assert decode_client_message(36, expected) == message


def test_disconnect_truncates_to_255_utf8_bytes() -> None:
    body = Disconnect("é" * 200).encode_body()
    assert body[0] <= 255
    reason = decode_client_message(30, body)
    assert isinstance(reason, Disconnect)
    assert reason.reason == "é" * 127
    assert decode_router_message(30, Disconnect("x" * 300).encode_body()) == Disconnect("x" * 255)


def test_host_lookup_needs_a_32_byte_hash_or_a_name() -> None:
    with pytest.raises(WireError):
        HostLookup(1, 2, 3, hash=b"short").encode_body()
    with pytest.raises(WireError):
        HostLookup(1, 2, 3).encode_body()


def test_payload_header_carries_ports_and_protocol() -> None:
    payload = Payload(b"hello", PROTOCOL_DATAGRAM, from_port=0x1234, to_port=0xABCD)
    raw = payload.encode()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[4:8] == b"\x12\x34\xab\xcd"
    assert raw[9] == 17
    assert gzip.decompress(raw) == b"hello"  # still a valid gzip stream
    assert Payload.decode(raw) == payload


# --- round-trip properties ----------------------------------------------------------------

u16s = st.integers(0, 0xFFFF)
u32s = st.integers(0, 0xFFFF_FFFF)
u64s = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
hashes = st.binary(min_size=32, max_size=32)
i2p_strings = st.text(max_size=40)  # at most 160 UTF-8 bytes


@st.composite
def destinations(draw: st.DrawFn) -> Destination:
    kind = draw(st.sampled_from(["ed25519", "null", "key"]))
    if kind == "ed25519":
        return Destination.for_ed25519(draw(hashes), draw(hashes))
    keys = draw(st.binary(min_size=384, max_size=384))
    if kind == "null":
        return Destination.from_bytes(keys + b"\x00\x00\x00")
    sig_type = draw(st.sampled_from(sorted(SIG_SPECS)))
    excess = draw(
        st.binary(
            min_size=max(0, SIG_SPECS[sig_type].public_key_len - 128),
            max_size=max(0, SIG_SPECS[sig_type].public_key_len - 128),
        )
    )
    crypto_type = draw(u16s)
    cert = struct.pack(">HH", sig_type, crypto_type) + excess
    return Destination.from_bytes(keys + struct.pack(">BH", 5, len(cert)) + cert)


mappings = st.dictionaries(i2p_strings, i2p_strings, max_size=8)
leases = st.builds(Lease, hashes, u32s, u64s)
leases2 = st.builds(Lease2, hashes, u32s, u32s)
encryption_keys = st.builds(EncryptionKey, u16s, st.binary(max_size=64))


@st.composite
def lease_sets(draw: st.DrawFn) -> LeaseSet2:
    destination = draw(destinations())
    flags = draw(u16s) & ~1
    offline_block = b""
    signature_len = destination.signature_len
    if draw(st.booleans()):
        transient_type = draw(st.sampled_from(sorted(SIG_SPECS)))
        spec = SIG_SPECS[transient_type]
        offline_block = (
            struct.pack(">IH", draw(u32s), transient_type)
            + draw(st.binary(min_size=spec.public_key_len, max_size=spec.public_key_len))
            + draw(st.binary(min_size=signature_len, max_size=signature_len))
        )
        flags |= 1
        signature_len = spec.signature_len
    return LeaseSet2(
        destination,
        draw(u32s),
        draw(u16s),
        flags,
        draw(mappings),
        tuple(draw(st.lists(encryption_keys, min_size=1, max_size=3))),
        tuple(draw(st.lists(leases2, max_size=MAX_LEASES))),
        signature=draw(st.binary(min_size=signature_len, max_size=signature_len)),
        offline_block=offline_block,
    )


@st.composite
def session_configs(draw: st.DrawFn) -> SessionConfig:
    destination = draw(destinations())
    size = destination.signature_len
    signature = draw(st.binary(min_size=size, max_size=size))
    return SessionConfig(destination, draw(mappings), draw(u64s), signature)


@given(destinations())
def test_destination_round_trip(dest: Destination) -> None:
    assert Destination.from_bytes(dest.raw) == dest
    assert len(dest.hash) == 32


@given(mappings)
def test_mapping_round_trip(options: dict[str, str]) -> None:
    reader = Reader(encode_mapping(options))
    assert read_mapping(reader) == options
    assert reader.remaining == 0


@given(leases)
def test_lease_round_trip(lease: Lease) -> None:
    assert Lease.read(Reader(lease.to_bytes())) == lease


@given(leases2)
def test_lease2_round_trip(lease: Lease2) -> None:
    assert Lease2.read(Reader(lease.to_bytes())) == lease


@given(lease_sets())
def test_lease_set2_round_trip(lease_set: LeaseSet2) -> None:
    data = lease_set.to_bytes()
    assert LeaseSet2.from_bytes(data) == lease_set
    assert data == lease_set.body() + lease_set.signature


@given(session_configs())
def test_session_config_round_trip(config: SessionConfig) -> None:
    reader = Reader(config.to_bytes())
    assert SessionConfig.read(reader) == config
    assert reader.remaining == 0


def _signed_lease_set(seed: bytes, published: int, lease_list: list[Lease2]) -> LeaseSet2:
    keys = DestinationKeys(
        Destination.for_ed25519(
            Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw(),
            PADDING_BLOCK,
        ),
        seed,
        X25519_PRIVATE,
    )
    return LeaseSet2.build(
        keys.destination, published, 600, (keys.encryption_key,), tuple(lease_list), keys.sign
    )


@given(hashes, u32s, st.lists(leases2, max_size=MAX_LEASES))
def test_built_lease_set2_verifies_after_round_trip(
    seed: bytes, published: int, lease_list: list[Lease2]
) -> None:
    lease_set = _signed_lease_set(seed, published, lease_list)
    parsed = LeaseSet2.from_bytes(lease_set.to_bytes())
    assert parsed.verify()
    assert len(lease_set.to_bytes()) == 391 + 11 + 36 + 1 + 40 * len(lease_list) + 64


CLIENT_MESSAGES: dict[str, st.SearchStrategy[Message]] = {
    "GetDate": st.builds(GetDate, i2p_strings, mappings),
    "CreateSession": st.builds(CreateSession, session_configs()),
    "ReconfigureSession": st.builds(ReconfigureSession, u16s, session_configs()),
    "DestroySession": st.builds(DestroySession, u16s),
    "CreateLeaseSet2": st.builds(
        CreateLeaseSet2,
        u16s,
        lease_sets(),
        st.lists(st.builds(PrivateKey, u16s, st.binary(max_size=64)), max_size=3).map(tuple),
    ),
    "SendMessage": st.builds(SendMessage, u16s, destinations(), st.binary(max_size=200), u32s),
    "SendMessageExpires": st.builds(
        SendMessageExpires,
        u16s,
        destinations(),
        st.binary(max_size=200),
        u32s,
        u16s,
        st.integers(0, (1 << 48) - 1),
    ),
    "HostLookup(hash)": st.builds(HostLookup, u16s, u32s, u32s, hash=hashes),
    "HostLookup(name)": st.builds(HostLookup, u16s, u32s, u32s, hostname=i2p_strings),
    "Disconnect": st.builds(Disconnect, i2p_strings),
}

ROUTER_MESSAGES: dict[str, st.SearchStrategy[Message]] = {
    "SetDate": st.builds(SetDate, u64s, i2p_strings),
    "SessionStatus": st.builds(SessionStatus, u16s, st.integers(0, 255)),
    "RequestVariableLeaseSet": st.builds(
        RequestVariableLeaseSet, u16s, st.lists(leases, max_size=MAX_LEASES).map(tuple)
    ),
    "MessageStatus": st.builds(MessageStatus, u16s, u32s, st.integers(0, 255), u32s, u32s),
    "MessagePayload": st.builds(MessagePayload, u16s, u32s, st.binary(max_size=300)),
    "HostReply(found)": st.builds(HostReply, u16s, u32s, st.just(0), destinations()),
    "HostReply(failed)": st.builds(HostReply, u16s, u32s, st.integers(1, 255)),
    "Disconnect": st.builds(Disconnect, i2p_strings),
}


def _frame_round_trip(message: Message, decode: Callable[[int, bytes], object]) -> object:
    encoded = encode_frame(message)
    length, msg_type = parse_header(encoded[:5])
    assert length == len(encoded) - 5
    assert msg_type == message.TYPE
    return decode(msg_type, encoded[5:])


@pytest.mark.parametrize("name", sorted(CLIENT_MESSAGES))
@settings(max_examples=60)
@given(data=st.data())
def test_client_message_round_trip(name: str, data: st.DataObject) -> None:
    message = data.draw(CLIENT_MESSAGES[name])
    assert _frame_round_trip(message, decode_client_message) == message


@pytest.mark.parametrize("name", sorted(ROUTER_MESSAGES))
@settings(max_examples=60)
@given(data=st.data())
def test_router_message_round_trip(name: str, data: st.DataObject) -> None:
    message = data.draw(ROUTER_MESSAGES[name])
    assert _frame_round_trip(message, decode_router_message) == message


def test_every_message_type_has_a_round_trip_strategy() -> None:
    from i2p_multihome.wire import messages

    client_types = {cls.TYPE for cls in messages._CLIENT_MESSAGES.values()}
    router_types = {cls.TYPE for cls in messages._ROUTER_MESSAGES.values()}
    assert client_types == {
        GetDate.TYPE, CreateSession.TYPE, ReconfigureSession.TYPE, DestroySession.TYPE,
        CreateLeaseSet2.TYPE, SendMessage.TYPE, SendMessageExpires.TYPE, HostLookup.TYPE,
        Disconnect.TYPE,
    }  # fmt: skip
    assert router_types == {
        SetDate.TYPE, SessionStatus.TYPE, RequestVariableLeaseSet.TYPE, MessageStatus.TYPE,
        MessagePayload.TYPE, HostReply.TYPE, Disconnect.TYPE,
    }  # fmt: skip


def test_message_directions_are_separate() -> None:
    with pytest.raises(WireError):
        decode_router_message(DestroySession.TYPE, DestroySession(1).encode_body())
    with pytest.raises(WireError):
        decode_client_message(SessionStatus.TYPE, SessionStatus(1, 1).encode_body())


def test_decoders_refuse_trailing_bytes() -> None:
    with pytest.raises(WireError):
        decode_router_message(20, b"\x00\x01\x01\x00")
    with pytest.raises(WireError):
        decode_client_message(3, b"\x00\x01\x00")


def test_request_variable_lease_set_count_must_match_length() -> None:
    body = RequestVariableLeaseSet(1, (Lease(_gateway(1), 1, 1),)).encode_body()
    with pytest.raises(WireError):
        decode_router_message(37, body[:2] + b"\x02" + body[3:])
    with pytest.raises(WireError):
        decode_router_message(37, struct.pack(">HB", 1, 17) + bytes(17 * 44))


@given(
    st.binary(max_size=2000),
    st.sampled_from([6, 17, 18, 0, 255]),
    u16s,
    u16s,
)
def test_payload_round_trip(data: bytes, protocol: int, from_port: int, to_port: int) -> None:
    payload = Payload(data, protocol, from_port, to_port)
    raw = payload.encode()
    assert Payload.decode(raw) == payload
    assert gzip.decompress(raw) == data
