"""Fuzzing every parser that reads bytes or text from outside.

The contract: a parser returns a value or raises its module's documented error (`WireError`
for wire codecs, `KeyFileError` for key files), never IndexError, struct.error,
UnicodeDecodeError, zlib.error, RecursionError or anything else.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.encoding import b32_address, b64decode, b64encode, hash_from_b32
from i2p_multihome.wire.keys import DestinationKeys, KeyFileError
from i2p_multihome.wire.messages import (
    MAX_BODY,
    MAX_PAYLOAD,
    PROTOCOL_STREAMING,
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
    parse_header,
)
from i2p_multihome.wire.structures import (
    MAX_LEASES,
    Destination,
    Lease,
    Lease2,
    LeaseSet2,
    SessionConfig,
    encode_mapping,
    read_mapping,
)
from seeded import seeded_random

FUZZ = settings(max_examples=300)
I2PD_DAT = (Path(__file__).parent / "data" / "i2pd-ed25519.dat").read_bytes()


KEYS = DestinationKeys.generate(seeded_random(b"fuzz"))
OTHER = Destination.for_ed25519(bytes(range(32)), bytes(32))


def _lease_set(n_leases: int, options: dict[str, str]) -> LeaseSet2:
    leases = tuple(
        Lease2(hashlib.sha256(b"%d" % i).digest(), i + 1, 1_700_000_600) for i in range(n_leases)
    )
    return LeaseSet2.build(
        KEYS.destination,
        1_700_000_000,
        600,
        (KEYS.encryption_key,),
        leases,
        KEYS.sign,
        options=options,
    )


CONFIG = SessionConfig.build(
    KEYS.destination, {"inbound.quantity": "3", "i2cp.leaseSetEncType": "4"}, 1, KEYS.sign
)
LEASE_SET = _lease_set(3, {"a": "b"})

ROUTER_SAMPLES: list[Message] = [
    SetDate(1_700_000_000_000, "0.9.67"),
    SessionStatus(1, 1),
    RequestVariableLeaseSet(
        1,
        tuple(Lease(hashlib.sha256(b"g%d" % i).digest(), i, 1_700_000_600_000) for i in range(3)),
    ),
    MessageStatus(1, 2, 4, 100, 7),
    MessagePayload(1, 2, Payload(b"hello", PROTOCOL_STREAMING, 1, 2).encode()),
    HostReply(1, 2, 0, OTHER),
    HostReply(1, 2, 1),
    Disconnect("bye"),
]
CLIENT_SAMPLES: list[Message] = [
    GetDate("0.9.62", {"i2cp.username": "u", "i2cp.password": "p"}),
    GetDate("0.9.62"),
    CreateSession(CONFIG),
    ReconfigureSession(1, CONFIG),
    DestroySession(1),
    CreateLeaseSet2(1, LEASE_SET, (PrivateKey(4, KEYS.encryption_private),)),
    SendMessage(1, OTHER, b"payload", 9),
    SendMessageExpires(1, OTHER, b"payload", 9, 0x0100, 1_700_000_000_000),
    HostLookup(1, 2, 10_000, hash=OTHER.hash),
    HostLookup(1, 2, 10_000, hostname="example.i2p"),
    Disconnect("bye"),
]
ROUTER_TYPES = sorted({m.TYPE for m in ROUTER_SAMPLES})
CLIENT_TYPES = sorted({m.TYPE for m in CLIENT_SAMPLES})


def _accepts_or_wire_error(parse: Callable[[], object]) -> object | None:
    """Run `parse`; WireError is an allowed outcome, any other exception fails the test."""
    try:
        return parse()
    except WireError:
        return None


def _decode_router(msg_type: int, body: bytes) -> None:
    message = _accepts_or_wire_error(lambda: decode_router_message(msg_type, body))
    if message is not None:
        assert msg_type == type(message).TYPE  # type: ignore[attr-defined]


def _decode_client(msg_type: int, body: bytes) -> None:
    message = _accepts_or_wire_error(lambda: decode_client_message(msg_type, body))
    if message is not None:
        assert msg_type == type(message).TYPE  # type: ignore[attr-defined]


@st.composite
def mutations(draw: st.DrawFn, valid: bytes) -> bytes:
    """Truncations, bit flips, insertions, deletions and lying integers over `valid`."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "lie", "extend"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "lie":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 1, (1 << (8 * width)) - 1, 1 << (8 * width - 1)]))
            data[at : at + width] = value.to_bytes(width, "big")
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def _sweep(valid: bytes) -> list[bytes]:
    """Every truncation, and every single byte set to 0x00 and to 0xFF."""
    out = [valid[:cut] for cut in range(len(valid))]
    for at in range(len(valid)):
        for value in (0x00, 0xFF):
            if valid[at] != value:
                out.append(valid[:at] + bytes([value]) + valid[at + 1 :])
    return out


# --- I2CP -----------------------------------------------------------------------------------


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=1200))
def test_decode_router_message_random(msg_type: int, body: bytes) -> None:
    _decode_router(msg_type, body)


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=1200))
def test_decode_client_message_random(msg_type: int, body: bytes) -> None:
    _decode_client(msg_type, body)


@pytest.mark.parametrize("msg_type", ROUTER_TYPES)
@settings(max_examples=100)
@given(body=st.binary(max_size=600))
def test_decode_router_message_random_per_type(msg_type: int, body: bytes) -> None:
    _decode_router(msg_type, body)


@pytest.mark.parametrize("msg_type", CLIENT_TYPES)
@settings(max_examples=100)
@given(body=st.binary(max_size=1300))
def test_decode_client_message_random_per_type(msg_type: int, body: bytes) -> None:
    _decode_client(msg_type, body)


@pytest.mark.parametrize("sample", ROUTER_SAMPLES, ids=lambda m: type(m).__name__)
@settings(max_examples=120)
@given(data=st.data())
def test_decode_router_message_mutated(sample: Message, data: st.DataObject) -> None:
    assert decode_router_message(sample.TYPE, sample.encode_body()) == sample
    _decode_router(sample.TYPE, data.draw(mutations(sample.encode_body())))


@pytest.mark.parametrize("sample", CLIENT_SAMPLES, ids=lambda m: type(m).__name__)
@settings(max_examples=120)
@given(data=st.data())
def test_decode_client_message_mutated(sample: Message, data: st.DataObject) -> None:
    assert decode_client_message(sample.TYPE, sample.encode_body()) == sample
    _decode_client(sample.TYPE, data.draw(mutations(sample.encode_body())))


@pytest.mark.parametrize("sample", ROUTER_SAMPLES, ids=lambda m: type(m).__name__)
def test_decode_router_message_sweep(sample: Message) -> None:
    for body in _sweep(sample.encode_body()):
        _decode_router(sample.TYPE, body)


@pytest.mark.parametrize("sample", CLIENT_SAMPLES, ids=lambda m: type(m).__name__)
def test_decode_client_message_sweep(sample: Message) -> None:
    for body in _sweep(sample.encode_body()):
        _decode_client(sample.TYPE, body)


def test_truncated_bodies_are_refused() -> None:
    """Every message here has only fixed or length-prefixed fields: no strict prefix of a
    valid body is itself valid, except where the tail is optional (GetDate's options)."""
    for sample in ROUTER_SAMPLES + CLIENT_SAMPLES:
        body = sample.encode_body()
        decode = decode_router_message if sample in ROUTER_SAMPLES else decode_client_message
        for cut in range(len(body)):
            if isinstance(sample, GetDate) and cut == body[0] + 1:
                continue
            with pytest.raises(WireError):
                decode(sample.TYPE, body[:cut])


@FUZZ
@given(st.binary(max_size=10))
def test_parse_header_random(header: bytes) -> None:
    result = _accepts_or_wire_error(lambda: parse_header(header))
    if result is not None:
        assert isinstance(result, tuple)
        assert len(header) >= 5
        assert 0 <= result[0] <= MAX_BODY
        assert result == (int.from_bytes(header[:4], "big"), header[4])


# --- structures -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=1400))
def test_lease_set2_random(data: bytes) -> None:
    result = _accepts_or_wire_error(lambda: LeaseSet2.from_bytes(data))
    if isinstance(result, LeaseSet2):
        assert len(result.leases) <= MAX_LEASES


@FUZZ
@given(st.data())
def test_lease_set2_mutated(data: st.DataObject) -> None:
    valid = data.draw(st.sampled_from([LEASE_SET, _lease_set(16, {}), _lease_set(0, {})]))
    _accepts_or_wire_error(lambda: LeaseSet2.from_bytes(data.draw(mutations(valid.to_bytes()))))


def test_lease_set2_sweep() -> None:
    for mutated in _sweep(_lease_set(2, {"k": "v"}).to_bytes()):
        parsed = _accepts_or_wire_error(partial(LeaseSet2.from_bytes, mutated))
        if isinstance(parsed, LeaseSet2) and not parsed.offline_block:
            _accepts_or_wire_error(parsed.verify)


@FUZZ
@given(st.binary(min_size=380, max_size=800))
def test_destination_random(data: bytes) -> None:
    result = _accepts_or_wire_error(lambda: Destination.from_bytes(data))
    if isinstance(result, Destination):
        assert result.raw == data


@FUZZ
@given(st.data())
def test_destination_mutated(data: st.DataObject) -> None:
    raw = data.draw(mutations(KEYS.destination.raw))
    result = _accepts_or_wire_error(lambda: Destination.from_bytes(raw))
    if isinstance(result, Destination):
        assert result.raw == raw
        _accepts_or_wire_error(lambda: result.signing_public_key)


@FUZZ
@given(st.binary(max_size=300))
def test_read_mapping_random(data: bytes) -> None:
    _accepts_or_wire_error(lambda: read_mapping(Reader(data)))


@FUZZ
@given(st.data())
def test_read_mapping_mutated(data: st.DataObject) -> None:
    valid = encode_mapping({"inbound.length": "3", "é": "ü", "": "", "x" * 50: "y" * 50})
    mutated = data.draw(mutations(valid))
    _accepts_or_wire_error(lambda: read_mapping(Reader(mutated)))


# --- payloads -------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_payload_random(tail: bytes) -> None:
    _accepts_or_wire_error(lambda: Payload.decode(tail))
    _accepts_or_wire_error(lambda: Payload.decode(b"\x1f\x8b\x08" + tail))


@FUZZ
@given(st.data())
def test_payload_mutated(data: st.DataObject) -> None:
    text = data.draw(st.binary(max_size=500))
    raw = Payload(text, PROTOCOL_STREAMING, 80, 443).encode()
    mutated = data.draw(mutations(raw))
    result = _accepts_or_wire_error(lambda: Payload.decode(mutated))
    if isinstance(result, Payload):
        assert len(result.data) <= MAX_PAYLOAD


def test_truncated_payload_is_refused() -> None:
    raw = Payload(bytes(range(256)) * 8).encode()
    for cut in range(len(raw)):
        with pytest.raises(WireError):
            Payload.decode(raw[:cut])


def test_payload_with_a_bad_crc_is_refused() -> None:
    raw = bytearray(Payload(b"some data").encode())
    raw[-8] ^= 0xFF
    with pytest.raises(WireError):
        Payload.decode(bytes(raw))


def _gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = []
    left = size
    while left:
        take = min(left, len(chunk))
        parts.append(compressor.compress(chunk[:take]))
        left -= take
    parts.append(compressor.flush())
    return b"".join(parts)


def test_payload_at_the_limit_is_accepted_and_one_more_byte_refused() -> None:
    assert Payload.decode(_gzip_of_zeros(MAX_PAYLOAD)).data == bytes(MAX_PAYLOAD)
    with pytest.raises(WireError):
        Payload.decode(_gzip_of_zeros(MAX_PAYLOAD + 1))


def test_gzip_bomb_is_bounded() -> None:
    bomb = _gzip_of_zeros(64 << 20)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(WireError):
            Payload.decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"decoding a bomb allocated {peak} bytes"


# --- key files ------------------------------------------------------------------------------


def _accepts_or_key_file_error(parse: Callable[[], DestinationKeys]) -> DestinationKeys | None:
    try:
        return parse()
    except KeyFileError:
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(st.text(max_size=300))
def test_keys_from_json_random_text(text: str) -> None:
    _accepts_or_key_file_error(lambda: DestinationKeys.from_json(text))


@FUZZ
@given(json_values)
def test_keys_from_json_random_document(value: object) -> None:
    _accepts_or_key_file_error(lambda: DestinationKeys.from_json(json.dumps(value)))


@FUZZ
@given(
    st.sampled_from(["format", "b32", "destination", "signingPrivateKey", "encryptionPrivateKey"]),
    json_values | st.binary(max_size=500).map(b64encode),
)
def test_keys_from_json_one_field_replaced(name: str, value: object) -> None:
    doc = json.loads(KEYS.to_json())
    doc[name] = value
    _accepts_or_key_file_error(lambda: DestinationKeys.from_json(json.dumps(doc)))


@FUZZ
@given(st.data())
def test_keys_from_json_mutated_text(data: st.DataObject) -> None:
    raw = data.draw(mutations(KEYS.to_json().encode()))
    text = raw.decode("utf-8", errors="replace")
    _accepts_or_key_file_error(lambda: DestinationKeys.from_json(text))


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 100_000, "", "null", "{}", '{"format": 1}', "\ud800"],
    ids=["deep-array", "deep-object", "empty", "null", "no-format", "bad-format", "surrogate"],
)
def test_keys_from_json_pathological(text: str) -> None:
    with pytest.raises(KeyFileError):
        DestinationKeys.from_json(text)


@FUZZ
@given(st.binary(max_size=800))
def test_keys_from_i2pd_dat_random(data: bytes) -> None:
    _accepts_or_key_file_error(lambda: DestinationKeys.from_i2pd_dat(data))


@FUZZ
@given(st.data())
def test_keys_from_i2pd_dat_mutated(data: st.DataObject) -> None:
    mutated = data.draw(mutations(I2PD_DAT))
    _accepts_or_key_file_error(lambda: DestinationKeys.from_i2pd_dat(mutated))


def test_keys_from_i2pd_dat_sweep() -> None:
    for mutated in _sweep(I2PD_DAT):
        keys = _accepts_or_key_file_error(partial(DestinationKeys.from_i2pd_dat, mutated))
        if keys is not None:
            # Whatever was accepted is internally consistent: it signs for its destination.
            assert keys.destination.verify(b"m", keys.sign(b"m"))


# --- text encodings -------------------------------------------------------------------------

BASE64ISH = "ABCXYZabcxyz0189+/-~= \n\t.é\x00İ"


@FUZZ
@given(st.text(max_size=80) | st.text(alphabet=BASE64ISH, max_size=80))
def test_b64decode_random(text: str) -> None:
    result = _accepts_or_wire_error(lambda: b64decode(text))
    if result is not None:
        assert isinstance(result, bytes)


def test_b64decode_lone_surrogate() -> None:
    with pytest.raises(WireError):
        b64decode("AA\ud800")


B32ISH = "abcdefghijklmnopqrstuvwxyz234567ABC0189=.é\x00İ"


@FUZZ
@given(
    st.text(max_size=70)
    | st.text(alphabet=B32ISH, min_size=50, max_size=54)
    | st.text(alphabet=B32ISH, min_size=52, max_size=52).map(lambda s: s + ".b32.i2p")
)
def test_hash_from_b32_random(text: str) -> None:
    result = _accepts_or_wire_error(lambda: hash_from_b32(text))
    if isinstance(result, bytes):
        assert len(result) == 32
        assert b32_address(result)[:51] == text.lower()[:51]


@pytest.mark.parametrize(
    "text",
    ["é" * 52, "\ud800" * 52, "İ" * 26, "1" * 52, "a" * 51 + "="],
    ids=["non-ascii", "surrogates", "dotted-capital-i", "digit-1", "padding"],
)
def test_hash_from_b32_refuses_non_base32(text: str) -> None:
    with pytest.raises(WireError):
        hash_from_b32(text)


def test_samples_are_valid() -> None:
    """The corpus the mutators start from parses cleanly, so mutations test something."""
    for sample in ROUTER_SAMPLES:
        assert decode_router_message(sample.TYPE, sample.encode_body()) == sample
    for sample in CLIENT_SAMPLES:
        assert decode_client_message(sample.TYPE, sample.encode_body()) == sample
    assert LeaseSet2.from_bytes(LEASE_SET.to_bytes()).verify()
    assert DestinationKeys.from_i2pd_dat(I2PD_DAT).destination.raw == I2PD_DAT[:391]
    assert struct.unpack(">H", encode_mapping({"a": "b"})[:2]) == (6,)
