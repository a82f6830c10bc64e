"""Datagrams (spec: datagrams): repliable (I2CP protocol 17) and raw (protocol 18).

A repliable datagram is FROM (a Destination) | signature | payload. The signature covers the
payload, except for DSA_SHA1 senders, whose signature covers SHA-256 of the payload (spec;
i2pd Datagram.cpp `SendDatagram` / `HandleDatagram`). A raw datagram is the payload alone,
unauthenticated. Either must fit one I2CP payload, `messages.MAX_PAYLOAD` bytes before gzip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.messages import MAX_PAYLOAD
from i2p_multihome.wire.streaming import verify_signature
from i2p_multihome.wire.structures import SIG_TYPE_DSA_SHA1, Destination


class Signer(Protocol):
    """What signs for a local destination: `DestinationKeys` is one."""

    @property
    def destination(self) -> Destination: ...

    def sign(self, message: bytes) -> bytes: ...


def signed_message(source: Destination, payload: bytes) -> bytes:
    """What a repliable datagram's signature covers for a sender of `source`'s type."""
    if source.sig_type == SIG_TYPE_DSA_SHA1:
        return hashlib.sha256(payload).digest()
    return payload


@dataclass(frozen=True)
class RepliableDatagram:
    """A signed datagram that names its sender, so it can be answered."""

    source: Destination
    signature: bytes = field(repr=False)
    payload: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.signature) != self.source.signature_len:
            raise WireError(
                f"datagram signature is {len(self.signature)} bytes, the sender's type needs "
                f"{self.source.signature_len}"
            )
        size = len(self.source.raw) + len(self.signature) + len(self.payload)
        if size > MAX_PAYLOAD:
            raise WireError(f"datagram of {size} bytes exceeds one I2CP payload ({MAX_PAYLOAD})")

    @classmethod
    def build(cls, signer: Signer, payload: bytes) -> RepliableDatagram:
        source = signer.destination
        return cls(source, signer.sign(signed_message(source, payload)), payload)

    def encode(self) -> bytes:
        return self.source.raw + self.signature + self.payload

    @classmethod
    def decode(cls, data: bytes) -> RepliableDatagram:
        """Parse without checking the signature; `verify` or `decode_verified` check it."""
        if len(data) > MAX_PAYLOAD:
            raise WireError(f"datagram of {len(data)} bytes exceeds one I2CP payload")
        reader = Reader(data)
        source = Destination.read(reader)
        signature = reader.take(source.signature_len, "datagram signature")
        return cls(source, signature, reader.rest())

    def verify(self) -> bool:
        """Whether the sender signed this payload. WireError if its signature type cannot be
        checked here (see `streaming.verify_signature`)."""
        return verify_signature(
            self.source, signed_message(self.source, self.payload), self.signature
        )

    @classmethod
    def decode_verified(cls, data: bytes) -> RepliableDatagram:
        """Parse and check the signature: WireError unless the datagram is authentic."""
        datagram = cls.decode(data)
        if not datagram.verify():
            raise WireError("datagram signature does not verify")
        return datagram


def encode_raw(payload: bytes) -> bytes:
    """A raw datagram is its payload; only the size is checked."""
    if len(payload) > MAX_PAYLOAD:
        raise WireError(f"raw datagram of {len(payload)} bytes exceeds one I2CP payload")
    return payload


def decode_raw(data: bytes) -> bytes:
    if len(data) > MAX_PAYLOAD:
        raise WireError(f"raw datagram of {len(data)} bytes exceeds one I2CP payload")
    return data
