"""Datagram codecs: repliable (protocol 17) and raw (18), byte-exact and fuzzed."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.datagrams import (
    RepliableDatagram,
    decode_raw,
    encode_raw,
    signed_message,
)
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.messages import MAX_PAYLOAD
from i2p_multihome.wire.streaming import DSA_G, DSA_P, DSA_Q
from seeded import seeded_random
from sigtypes import DsaSigner, EcdsaSigner
from test_wire_fuzz import mutations

KEYS = DestinationKeys.generate(seeded_random(b"datagram"))


def test_repliable_datagram_is_from_signature_payload() -> None:
    payload = b"\x00hello datagram\xff"
    signature = Ed25519PrivateKey.from_private_bytes(KEYS.signing_seed).sign(payload)
    wire = KEYS.destination.raw + signature + payload
    datagram = RepliableDatagram.build(KEYS, payload)
    assert datagram.encode() == wire  # Ed25519 is deterministic: the same bytes
    decoded = RepliableDatagram.decode_verified(wire)
    assert decoded == datagram
    assert (decoded.source, decoded.payload) == (KEYS.destination, payload)


def test_dsa_sender_signs_the_sha256_of_the_payload() -> None:
    """Spec and i2pd Datagram.cpp: only DSA_SHA1 signs a hash of the payload."""
    signer = DsaSigner.generate(b"dg")
    payload = b"x" * 100
    datagram = RepliableDatagram.build(signer, payload)
    assert signed_message(signer.destination, payload) == hashlib.sha256(payload).digest()
    # The independent check: DSA over SHA-256(payload) with I2P's group.
    r = int.from_bytes(datagram.signature[:20], "big")
    s = int.from_bytes(datagram.signature[20:], "big")
    digest = int.from_bytes(hashlib.sha1(hashlib.sha256(payload).digest()).digest(), "big")  # noqa: S324
    y = int.from_bytes(signer.destination.signing_public_key, "big")
    w = pow(s, -1, DSA_Q)
    assert pow(DSA_G, digest * w % DSA_Q, DSA_P) * pow(y, r * w % DSA_Q, DSA_P) % DSA_P % DSA_Q == r
    assert RepliableDatagram.decode_verified(datagram.encode()).payload == payload
    # A DSA signature over the payload itself (not its hash) is refused.
    wrong = RepliableDatagram(signer.destination, signer.sign(payload), payload)
    assert not wrong.verify()


def test_ecdsa_sender_signs_the_payload() -> None:
    signer = EcdsaSigner.generate(1, b"dg")
    datagram = RepliableDatagram.build(signer, b"payload")
    assert signed_message(signer.destination, b"payload") == b"payload"
    assert RepliableDatagram.decode_verified(datagram.encode()).source == signer.destination


def test_tampered_datagrams_do_not_verify() -> None:
    wire = RepliableDatagram.build(KEYS, b"payload").encode()
    # The Ed25519 key (ending the 384-byte key area), the certificate up to the signature
    # type, then signature and payload; the crypto type (389-390) is not signed either.
    for at in [*range(352, 389), *range(391, len(wire))]:
        tampered = bytearray(wire)
        tampered[at] ^= 0x80
        with pytest.raises(WireError):
            RepliableDatagram.decode_verified(bytes(tampered))


def test_the_signature_does_not_cover_the_unused_key_area() -> None:
    """As in i2pd and Java: only the payload is signed, so the encryption key area of FROM
    can be altered; that names another destination (another hash), never the sender's."""
    wire = RepliableDatagram.build(KEYS, b"payload").encode()
    for at in (0, 390):
        tampered = bytearray(wire)
        tampered[at] ^= 0x01
        datagram = RepliableDatagram.decode_verified(bytes(tampered))
        assert datagram.source.hash != KEYS.destination.hash


def test_size_bounds() -> None:
    overhead = len(KEYS.destination.raw) + 64
    largest = RepliableDatagram.build(KEYS, bytes(MAX_PAYLOAD - overhead))
    assert len(largest.encode()) == MAX_PAYLOAD
    with pytest.raises(WireError, match="exceeds"):
        RepliableDatagram.build(KEYS, bytes(MAX_PAYLOAD - overhead + 1))
    with pytest.raises(WireError, match="exceeds"):
        RepliableDatagram.decode(largest.encode() + b"x")
    assert encode_raw(bytes(MAX_PAYLOAD)) == bytes(MAX_PAYLOAD)
    assert decode_raw(b"raw") == b"raw"
    for codec in (encode_raw, decode_raw):
        with pytest.raises(WireError):
            codec(bytes(MAX_PAYLOAD + 1))


def test_signature_length_must_match_the_sender() -> None:
    with pytest.raises(WireError, match="signature"):
        RepliableDatagram(KEYS.destination, bytes(40), b"")


def test_every_truncation_is_refused_or_shorter() -> None:
    wire = RepliableDatagram.build(KEYS, b"0123456789").encode()
    payload_at = len(wire) - 10
    for cut in range(len(wire)):
        if cut < payload_at:
            with pytest.raises(WireError):
                RepliableDatagram.decode(wire[:cut])
        else:
            # No length field: a cut payload parses, and its signature fails.
            with pytest.raises(WireError):
                RepliableDatagram.decode_verified(wire[:cut])


def _decode_or_wire_error(data: bytes) -> None:
    try:
        datagram = RepliableDatagram.decode(data)
    except WireError:
        return
    assert datagram.encode() == data
    with contextlib.suppress(WireError):  # an unverifiable type is a WireError too
        datagram.verify()


@settings(max_examples=300)
@given(st.binary(max_size=700))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    _decode_or_wire_error(data)


@settings(max_examples=300)
@given(st.data())
def test_mutated_datagrams_only_raise_wire_error(data: st.DataObject) -> None:
    valid = RepliableDatagram.build(KEYS, data.draw(st.binary(max_size=100))).encode()
    _decode_or_wire_error(data.draw(mutations(valid)))


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_round_trip(payload: bytes) -> None:
    datagram = RepliableDatagram.build(KEYS, payload)
    assert RepliableDatagram.decode_verified(datagram.encode()) == datagram
    assert decode_raw(encode_raw(payload)) == payload
