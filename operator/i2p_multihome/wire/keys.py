"""The destination's private keys: generation, our key file format, and i2pd key import.

Key material stays inside `DestinationKeys`; its repr shows only the public b32 address so a
stray log line or traceback cannot leak a private key.
"""

from __future__ import annotations

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
    CRYPTO_TYPE_X25519,
    SIG_TYPE_ED25519,
    Destination,
    EncryptionKey,
    sig_spec,
)

KEY_FILE_FORMAT = "i2p-multihome-keys/1"
_DERIVED_X25519_INFO = b"i2p-multihome LeaseSet2 X25519 key"


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
