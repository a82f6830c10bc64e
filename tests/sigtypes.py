"""Signers for Destinations of other signature types than our Ed25519, built by hand from
common-structures' layout, so tests can play a DSA_SHA1 or ECDSA remote client."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from i2p_multihome.wire.streaming import DSA_G, DSA_P, DSA_Q
from i2p_multihome.wire.structures import Destination
from seeded import seeded_random

_CURVES = {
    1: (ec.SECP256R1(), hashes.SHA256(), 32),
    2: (ec.SECP384R1(), hashes.SHA384(), 48),
    3: (ec.SECP521R1(), hashes.SHA512(), 66),
}


@dataclass(frozen=True)
class DsaSigner:
    """A DSA_SHA1 destination (NULL certificate: the type every old Java key and i2pd's SAM
    TRANSIENT default has) and FIPS 186 signing over I2P's group."""

    destination: Destination = field(repr=False)
    x: int = field(repr=False)
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls, seed: bytes) -> DsaSigner:
        random = seeded_random(b"dsa " + seed)
        x = int.from_bytes(random(20), "big") % (DSA_Q - 1) + 1
        y = pow(DSA_G, x, DSA_P)
        raw = random(256) + y.to_bytes(128, "big") + b"\x00\x00\x00"  # NULL cert
        return cls(Destination.from_bytes(raw), x, seed)

    def sign(self, message: bytes) -> bytes:
        digest = int.from_bytes(hashlib.sha1(message).digest(), "big")  # noqa: S324
        counter = 0
        while True:
            nonce_seed = self.seed + message + counter.to_bytes(4, "big")
            k = int.from_bytes(hashlib.sha256(nonce_seed).digest(), "big") % (DSA_Q - 1) + 1
            r = pow(DSA_G, k, DSA_P) % DSA_Q
            s = pow(k, -1, DSA_Q) * (digest + self.x * r) % DSA_Q
            if r and s:
                return r.to_bytes(20, "big") + s.to_bytes(20, "big")
            counter += 1


@dataclass(frozen=True)
class EcdsaSigner:
    """An ECDSA destination (KEY certificate, sig type 1, 2 or 3)."""

    destination: Destination = field(repr=False)
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, sig_type: int, seed: bytes) -> EcdsaSigner:
        curve, _, size = _CURVES[sig_type]
        random = seeded_random(b"ecdsa " + seed)
        order_bytes = random(size + 8)
        key = ec.derive_private_key(int.from_bytes(order_bytes, "big") % (1 << 250) + 1, curve)
        numbers = key.public_key().public_numbers()
        public = numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")
        in_area, excess = public[:128], public[128:]
        area = random(128 - len(in_area)) + in_area  # right-aligned in the 128-byte area
        cert = struct.pack(">HH", sig_type, 0) + excess
        raw = random(256) + area + struct.pack(">BH", 5, len(cert)) + cert
        return cls(Destination.from_bytes(raw), key)

    def sign(self, message: bytes) -> bytes:
        _, digest, size = _CURVES[self.destination.sig_type]
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(digest)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
