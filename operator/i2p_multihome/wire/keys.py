"""The destination's private keys: generation, our key file format, and i2pd key import.

Key material stays inside `DestinationKeys`; its repr shows only the public b32 address so a
stray log line or traceback cannot leak a private key.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.encoding import b64decode, b64encode
from i2p_multihome.wire.structures import (
    CRYPTO_PRIVATE_KEY_LEN,
    CRYPTO_TYPE_ELGAMAL,
    CRYPTO_TYPE_X25519,
    SIG_TYPE_ED25519,
    Destination,
    EncryptionKey,
    sig_spec,
)

KEY_FILE_FORMAT = "i2p-multihome-keys/1"
_DERIVED_X25519_INFO = b"i2p-multihome LeaseSet2 X25519 key"
_DERIVED_ELGAMAL_INFO = b"i2p-multihome LeaseSet2 ElGamal key"
_DERIVED_TIER_KEY_INFO = b"i2p-multihome fast-tier randomKey"

# I2P's ElGamal group: the 2048-bit MODP prime of RFC 3526 (group 14), generator 2.
ELGAMAL_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
ELGAMAL_GENERATOR = 2
ELGAMAL_KEY_LEN = 256


class KeyFileError(ValueError):
    """A key file that cannot be used; the message says why, never what the keys are."""


@dataclass(frozen=True)
class DestinationKeys:
    destination: Destination
    signing_seed: bytes = field(repr=False)
    encryption_private: bytes = field(repr=False)

    def __post_init__(self) -> None:
        derived = Ed25519PrivateKey.from_private_bytes(self.signing_seed).public_key()
        if (
            derived.public_bytes(Encoding.Raw, PublicFormat.Raw)
            != self.destination.signing_public_key
        ):
            raise KeyFileError("signing key does not match the destination")
        if len(self.encryption_private) != 32:
            raise KeyFileError("X25519 private key must be 32 bytes")

    def __repr__(self) -> str:
        return f"DestinationKeys({self.destination.b32})"

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> DestinationKeys:
        seed = random_bytes(32)
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
        destination = Destination.for_ed25519(
            public.public_bytes(Encoding.Raw, PublicFormat.Raw), random_bytes(32)
        )
        return cls(destination, seed, random_bytes(32))

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.signing_seed).sign(message)

    @property
    def encryption_key(self) -> EncryptionKey:
        public = X25519PrivateKey.from_private_bytes(self.encryption_private).public_key()
        return EncryptionKey(
            CRYPTO_TYPE_X25519, public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        )

    @functools.cached_property
    def elgamal_private(self) -> bytes:
        """The LeaseSet2's ElGamal private key (256 bytes, big-endian), derived from the
        signing key, so it is the same at every start and on every replica without a change
        to the key file. (An i2pd .dat holds no usable one: i2pd fills a destination's
        identity key with random bytes and makes LeaseSet keys per run.)"""
        material = HKDF(
            hashes.SHA256(), ELGAMAL_KEY_LEN, salt=None, info=_DERIVED_ELGAMAL_INFO
        ).derive(self.signing_seed)
        exponent = int.from_bytes(material, "big") % (ELGAMAL_PRIME - 3) + 2
        return exponent.to_bytes(ELGAMAL_KEY_LEN, "big")

    @functools.cached_property
    def tier_slicing_key(self) -> bytes:
        """The 32 bytes every Java router hosting the destination gets as its pools'
        `randomKey` (the `shared` gateway policy), so they all slice their fast tiers alike:
        derived from the signing key, so kept with the keys and the same on every start. It
        reveals nothing of them (HKDF is one-way)."""
        return HKDF(hashes.SHA256(), 32, salt=None, info=_DERIVED_TIER_KEY_INFO).derive(
            self.signing_seed
        )

    @functools.cached_property
    def elgamal_key(self) -> EncryptionKey:
        exponent = int.from_bytes(self.elgamal_private, "big")
        public = pow(ELGAMAL_GENERATOR, exponent, ELGAMAL_PRIME)
        return EncryptionKey(CRYPTO_TYPE_ELGAMAL, public.to_bytes(ELGAMAL_KEY_LEN, "big"))

    @property
    def encryption_keys(self) -> tuple[EncryptionKey, ...]:
        """What the LeaseSet2 offers, preferred first: X25519 (ECIES-X25519-AEAD-Ratchet),
        and ElGamal for clients that speak nothing else (an i2pd 2.45.1 SAM session without
        i2cp.leaseSetEncType is one), as Java and i2pd server tunnels offer by default."""
        return (self.encryption_key, self.elgamal_key)

    @property
    def private_keys(self) -> tuple[tuple[int, bytes], ...]:
        """(crypto type, private key) for each of `encryption_keys`, for CreateLeaseSet2."""
        return (
            (CRYPTO_TYPE_X25519, self.encryption_private),
            (CRYPTO_TYPE_ELGAMAL, self.elgamal_private),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": KEY_FILE_FORMAT,
                "b32": self.destination.b32,
                "destination": self.destination.b64,
                "signingPrivateKey": b64encode(self.signing_seed),
                "encryptionPrivateKey": b64encode(self.encryption_private),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> DestinationKeys:
        try:
            doc = json.loads(text)
            if doc.get("format") != KEY_FILE_FORMAT:
                raise KeyFileError(f"not an {KEY_FILE_FORMAT} key file")
            return cls(
                Destination.from_bytes(b64decode(doc["destination"])),
                b64decode(doc["signingPrivateKey"]),
                b64decode(doc["encryptionPrivateKey"]),
            )
        except KeyFileError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise KeyFileError(f"malformed key file ({type(exc).__name__})") from None

    @classmethod
    def from_i2pd_dat(cls, data: bytes) -> DestinationKeys:
        """Import an i2pd private key file (Destination, crypto private key, signing private
        key). Only Ed25519 destinations without offline keys can be multihomed here. An
        X25519 identity key is reused for the LeaseSet2; otherwise (ElGamal identities) the
        X25519 key is derived from the signing key, so it is the same at every start without
        writing anything next to the user's key file."""
        try:
            reader = Reader(data)
            destination = Destination.read(reader)
            crypto_len = CRYPTO_PRIVATE_KEY_LEN.get(destination.crypto_type)
            if crypto_len is None:
                raise KeyFileError(f"unsupported crypto type {destination.crypto_type}")
            crypto_private = reader.take(crypto_len, "crypto private key")
            if destination.sig_type != SIG_TYPE_ED25519:
                raise KeyFileError(
                    f"signature type {destination.sig_type} is not supported; only Ed25519 (7)"
                )
            seed = reader.take(sig_spec(destination.sig_type).private_key_len, "signing key")
        except WireError as exc:
            raise KeyFileError(f"not an i2pd key file: {exc}") from None
        if not any(seed):
            raise KeyFileError("offline-signed i2pd keys are not supported")
        encryption = (
            crypto_private
            if destination.crypto_type == CRYPTO_TYPE_X25519
            else HKDF(hashes.SHA256(), 32, salt=None, info=_DERIVED_X25519_INFO).derive(seed)
        )
        return cls(destination, seed, encryption)


def load_or_create(path: str, random_bytes: Callable[[int], bytes] = os.urandom) -> DestinationKeys:
    """Read KEYFILE, or create it (mode 0600) when missing. i2pd `.dat` files are imported."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        keys = DestinationKeys.generate(random_bytes)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(keys.to_json())
        return keys
    text = _json_text(data)
    if text is not None:
        return DestinationKeys.from_json(text)
    return DestinationKeys.from_i2pd_dat(data)


def _json_text(data: bytes) -> str | None:
    """The file as text if it is a JSON key file. A binary i2pd key file starts with random
    key bytes, so a leading '{' alone does not make JSON; it is never valid UTF-8 as well."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.lstrip().startswith("{") else None
