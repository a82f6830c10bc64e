"""I2P common structures (spec: common-structures): Destination, Mapping, leases, LeaseSet2,
SessionConfig. Frozen values that serialize byte-exactly and parse with bounds checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from i2p_multihome.wire import codec
from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.encoding import b32_address, b64encode, sha256

SIG_TYPE_DSA_SHA1 = 0
SIG_TYPE_ED25519 = 7
CRYPTO_TYPE_ELGAMAL = 0
CRYPTO_TYPE_X25519 = 4

STORE_TYPE_LEASESET2 = 3
MAX_LEASES = 16
LEASESET2_FLAG_OFFLINE_KEYS = 0x0001
# Floodfills refuse to store a LeaseSet2 with this flag; a client that is handed one keeps it.
LEASESET2_FLAG_UNPUBLISHED = 0x0002

CERT_TYPE_NULL = 0
CERT_TYPE_KEY = 5


class SigSpec(NamedTuple):
    public_key_len: int
    signature_len: int
    private_key_len: int


# Signing key types of common-structures' "SigningPublicKey" table.
SIG_SPECS: dict[int, SigSpec] = {
    0: SigSpec(128, 40, 20),  # DSA_SHA1
    1: SigSpec(64, 64, 32),  # ECDSA_SHA256_P256
    2: SigSpec(96, 96, 48),  # ECDSA_SHA384_P384
    3: SigSpec(132, 132, 66),  # ECDSA_SHA512_P521
    4: SigSpec(256, 256, 512),  # RSA_SHA256_2048
    5: SigSpec(384, 384, 768),  # RSA_SHA384_3072
    6: SigSpec(512, 512, 1024),  # RSA_SHA512_4096
    7: SigSpec(32, 64, 32),  # EdDSA_SHA512_Ed25519
    8: SigSpec(32, 64, 32),  # EdDSA_SHA512_Ed25519ph
    11: SigSpec(32, 64, 32),  # RedDSA_SHA512_Ed25519
}

# Public key lengths of common-structures' "PublicKey" table.
CRYPTO_PUBLIC_KEY_LEN: dict[int, int] = {0: 256, 1: 64, 2: 96, 3: 132, 4: 32}
# Private key lengths, as i2pd stores them in its key files.
CRYPTO_PRIVATE_KEY_LEN: dict[int, int] = {0: 256, 1: 32, 2: 48, 3: 66, 4: 32}

_KEYS_AREA = 384  # 256-byte public key area + 128-byte signing key area


def sig_spec(sig_type: int) -> SigSpec:
    try:
        return SIG_SPECS[sig_type]
    except KeyError:
        raise WireError(f"unknown signature type {sig_type}") from None


@dataclass(frozen=True)
class Destination:
    """A Destination (KeysAndCert): its exact bytes plus the fields we act on."""

    raw: bytes = field(repr=False)
    sig_type: int
    crypto_type: int

    @classmethod
    def read(cls, reader: Reader) -> Destination:
        keys = reader.take(_KEYS_AREA, "destination keys")
        cert_type = reader.u8("certificate type")
        cert_len = reader.u16("certificate length")
        cert = reader.take(cert_len, "certificate")
        sig_type, crypto_type = SIG_TYPE_DSA_SHA1, CRYPTO_TYPE_ELGAMAL
        if cert_type == CERT_TYPE_KEY:
            cert_reader = Reader(cert)
            sig_type = cert_reader.u16("key certificate signature type")
            crypto_type = cert_reader.u16("key certificate crypto type")
            spec = sig_spec(sig_type)
            excess = max(0, spec.public_key_len - 128)
            if cert_reader.remaining != excess:
                raise WireError(
                    f"key certificate: {cert_reader.remaining} excess key bytes, expected {excess}"
                )
        elif cert_type != CERT_TYPE_NULL:
            raise WireError(f"destination certificate type {cert_type} is not NULL or KEY")
        elif cert_len:
            raise WireError("NULL certificate with a payload")
        raw = keys + bytes([cert_type]) + codec.u16(cert_len) + cert
        return cls(raw=raw, sig_type=sig_type, crypto_type=crypto_type)

    @classmethod
    def from_bytes(cls, data: bytes) -> Destination:
        reader = Reader(data)
        dest = cls.read(reader)
        reader.expect_end("destination")
        return dest

    @classmethod
    def for_ed25519(cls, signing_public_key: bytes, padding_block: bytes) -> Destination:
        """An Ed25519 destination whose unused key areas are a repeated 32-byte random block
        (Proposal 161 compressible padding); crypto type 0 keeps Java routers happy, the
        X25519 key travels in the LeaseSet2."""
        if len(signing_public_key) != 32 or len(padding_block) != 32:
            raise WireError("Ed25519 key and padding block are 32 bytes each")
        padding = (padding_block * 11)[: _KEYS_AREA - 32]
        cert = codec.u16(SIG_TYPE_ED25519) + codec.u16(CRYPTO_TYPE_ELGAMAL)
        raw = padding + signing_public_key + bytes([CERT_TYPE_KEY]) + codec.u16(4) + cert
        return cls(raw=raw, sig_type=SIG_TYPE_ED25519, crypto_type=CRYPTO_TYPE_ELGAMAL)

    @property
    def signing_public_key(self) -> bytes:
        spec = sig_spec(self.sig_type)
        if spec.public_key_len <= 128:
            return self.raw[_KEYS_AREA - spec.public_key_len : _KEYS_AREA]
        excess = self.raw[_KEYS_AREA + 7 :]
        return self.raw[256:_KEYS_AREA] + excess

    @property
    def signature_len(self) -> int:
        return sig_spec(self.sig_type).signature_len

    @property
    def hash(self) -> bytes:
        return sha256(self.raw)

    @property
    def b32(self) -> str:
        return b32_address(self.hash)

    @property
    def b64(self) -> str:
        return b64encode(self.raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Check an Ed25519 signature; other signature types are not ours to verify."""
        if self.sig_type != SIG_TYPE_ED25519:
            raise WireError(f"verifying signature type {self.sig_type} is not supported")
        try:
            Ed25519PublicKey.from_public_bytes(self.signing_public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def encode_mapping(options: Mapping[str, str]) -> bytes:
    """A Mapping, keys sorted as signed structures require."""
    body = b"".join(
        codec.string(k) + b"=" + codec.string(v) + b";" for k, v in sorted(options.items())
    )
    return codec.u16(len(body)) + body


def read_mapping(reader: Reader) -> dict[str, str]:
    body = Reader(reader.take(reader.u16("mapping size"), "mapping"))
    result: dict[str, str] = {}
    while body.remaining:
        key = body.string("mapping key")
        if body.take(1, "mapping '='") != b"=":
            raise WireError(f"mapping: expected '=' after key {key!r}")
        value = body.string("mapping value")
        if body.take(1, "mapping ';'") != b";":
            raise WireError(f"mapping: expected ';' after value of {key!r}")
        if key in result:
            raise WireError(f"mapping: duplicate key {key!r}")
        result[key] = value
    return result


@dataclass(frozen=True, order=True)
class Lease:
    """A lease as RequestVariableLeaseSet carries it: end date in milliseconds."""

    gateway: bytes
    tunnel_id: int
    end_ms: int

    SIZE: ClassVar[int] = 44

    @classmethod
    def read(cls, reader: Reader) -> Lease:
        return cls(reader.take(32, "lease gateway"), reader.u32("tunnel id"), reader.u64("end"))

    def to_bytes(self) -> bytes:
        return _hash32(self.gateway) + codec.u32(self.tunnel_id) + codec.u64(self.end_ms)


@dataclass(frozen=True, order=True)
class Lease2:
    """A lease in a LeaseSet2: end date in seconds."""

    gateway: bytes
    tunnel_id: int
    end_s: int

    SIZE: ClassVar[int] = 40

    @classmethod
    def read(cls, reader: Reader) -> Lease2:
        return cls(reader.take(32, "lease2 gateway"), reader.u32("tunnel id"), reader.u32("end"))

    def to_bytes(self) -> bytes:
        return _hash32(self.gateway) + codec.u32(self.tunnel_id) + codec.u32(self.end_s)


class EncryptionKey(NamedTuple):
    crypto_type: int
    public_key: bytes


@dataclass(frozen=True)
class LeaseSet2:
    """A LeaseSet2 (store type 3). `signature` covers 0x03 || `body()`."""

    destination: Destination
    published: int
    expires: int
    flags: int
    options: Mapping[str, str]
    encryption_keys: tuple[EncryptionKey, ...]
    leases: tuple[Lease2, ...]
    signature: bytes = field(default=b"", repr=False)
    offline_block: bytes = field(default=b"", repr=False)

    def body(self) -> bytes:
        if len(self.leases) > MAX_LEASES:
            raise WireError(f"a LeaseSet2 holds at most {MAX_LEASES} leases")
        if not self.encryption_keys or len(self.encryption_keys) > 255:
            raise WireError("a LeaseSet2 needs between 1 and 255 encryption keys")
        parts = [
            self.destination.raw,
            codec.u32(self.published),
            codec.u16(self.expires),
            codec.u16(self.flags),
            self.offline_block,
            encode_mapping(self.options),
            codec.u8(len(self.encryption_keys)),
        ]
        for key in self.encryption_keys:
            parts += [codec.u16(key.crypto_type), codec.u16(len(key.public_key)), key.public_key]
        parts.append(codec.u8(len(self.leases)))
        parts += [lease.to_bytes() for lease in self.leases]
        return b"".join(parts)

    def signed_bytes(self) -> bytes:
        return bytes([STORE_TYPE_LEASESET2]) + self.body()

    def to_bytes(self) -> bytes:
        if not self.signature:
            raise WireError("LeaseSet2 is not signed")
        return self.body() + self.signature

    @classmethod
    def build(
        cls,
        destination: Destination,
        published: int,
        expires: int,
        encryption_keys: tuple[EncryptionKey, ...],
        leases: tuple[Lease2, ...],
        sign: Callable[[bytes], bytes],
        options: Mapping[str, str] | None = None,
        flags: int = 0,
    ) -> LeaseSet2:
        if flags & LEASESET2_FLAG_OFFLINE_KEYS:
            raise WireError("LeaseSet2.build signs with the destination's key: no offline keys")
        unsigned = cls(
            destination, published, expires, flags, dict(options or {}), encryption_keys, leases
        )
        return cls(
            destination, published, expires, flags, unsigned.options, encryption_keys, leases,
            signature=sign(unsigned.signed_bytes()),
        )  # fmt: skip

    @classmethod
    def read(cls, reader: Reader) -> LeaseSet2:
        destination = Destination.read(reader)
        published = reader.u32("published")
        expires = reader.u16("expires")
        flags = reader.u16("flags")
        signature_len = destination.signature_len
        offline_block = b""
        if flags & LEASESET2_FLAG_OFFLINE_KEYS:
            start = reader.pos
            head = Reader(reader.take(6, "offline signature header"))
            head.u32()
            transient = sig_spec(head.u16())
            reader.take(transient.public_key_len + destination.signature_len, "offline signature")
            offline_block = reader.since(start)
            signature_len = transient.signature_len
        options = read_mapping(reader)
        keys = []
        for _ in range(reader.u8("key count")):
            crypto_type = reader.u16("key type")
            keys.append(EncryptionKey(crypto_type, reader.take(reader.u16("key length"), "key")))
        count = reader.u8("lease count")
        if count > MAX_LEASES:
            raise WireError(f"LeaseSet2 claims {count} leases, at most {MAX_LEASES} allowed")
        leases = tuple(Lease2.read(reader) for _ in range(count))
        signature = reader.take(signature_len, "LeaseSet2 signature")
        return cls(
            destination, published, expires, flags, options, tuple(keys), leases,
            signature=signature, offline_block=offline_block,
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseSet2:
        reader = Reader(data)
        lease_set = cls.read(reader)
        reader.expect_end("LeaseSet2")
        return lease_set

    def verify(self) -> bool:
        if self.offline_block:
            raise WireError("verifying offline-signed LeaseSet2s is not supported")
        return self.destination.verify(self.signed_bytes(), self.signature)


@dataclass(frozen=True)
class SessionConfig:
    """What CreateSession and ReconfigureSession carry: signed by the destination."""

    destination: Destination
    options: Mapping[str, str]
    date_ms: int
    signature: bytes = field(default=b"", repr=False)

    def signed_part(self) -> bytes:
        return self.destination.raw + encode_mapping(self.options) + codec.u64(self.date_ms)

    def to_bytes(self) -> bytes:
        if not self.signature:
            raise WireError("SessionConfig is not signed")
        return self.signed_part() + self.signature

    @classmethod
    def build(
        cls,
        destination: Destination,
        options: Mapping[str, str],
        date_ms: int,
        sign: Callable[[bytes], bytes],
    ) -> SessionConfig:
        unsigned = cls(destination, dict(options), date_ms)
        return cls(destination, unsigned.options, date_ms, sign(unsigned.signed_part()))

    @classmethod
    def read(cls, reader: Reader) -> SessionConfig:
        destination = Destination.read(reader)
        options = read_mapping(reader)
        date_ms = reader.u64("date")
        return cls(destination, options, date_ms, reader.take(destination.signature_len, "sig"))


def _hash32(value: bytes) -> bytes:
    if len(value) != 32:
        raise WireError(f"expected a 32-byte hash, got {len(value)} bytes")
    return value
