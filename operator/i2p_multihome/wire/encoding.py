"""I2P's text forms of binary values: its base64 alphabet and `.b32.i2p` addresses."""

from __future__ import annotations

import base64
import binascii
import hashlib

from i2p_multihome.wire.codec import WireError

_TO_I2P = bytes.maketrans(b"+/", b"-~")
_FROM_I2P = bytes.maketrans(b"-~", b"+/")


def b64encode(data: bytes) -> str:
    """I2P base64: the standard alphabet with '-' and '~' for '+' and '/', padded."""
    return base64.b64encode(data).translate(_TO_I2P).decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        raw = text.strip().encode("ascii").translate(_FROM_I2P)
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise WireError(f"not I2P base64: {exc}") from exc


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def b32_address(hash32: bytes) -> str:
    """The `<52 chars>.b32.i2p` address of a 32-byte destination hash."""
    if len(hash32) != 32:
        raise WireError(f"a destination hash is 32 bytes, got {len(hash32)}")
    return base64.b32encode(hash32).decode("ascii").rstrip("=").lower() + ".b32.i2p"


def hash_from_b32(address: str) -> bytes:
    label = address.lower().removesuffix(".b32.i2p")
    if len(label) != 52:
        raise WireError(f"not a b32 address: {address!r}")
    try:
        return base64.b32decode(label.upper() + "====")
    except ValueError as exc:  # binascii.Error, or a non-ASCII label
        raise WireError(f"not a b32 address: {address!r}") from exc
