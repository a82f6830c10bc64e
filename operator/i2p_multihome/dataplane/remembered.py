"""The recent clients kept across a balancer restart, as stored JSON: each client's
Destination (where a ping reaches it) and, on the wall clock, since when its session has
been up and when it was last heard (see `streaming.routes`).

The document names who talks to the service: in Kubernetes it is stored sealed
(ChaCha20-Poly1305 under a key derived from the destination's signing key, which only the
keys' holder has), standalone in a file only its owner reads; never in the status, logs or
events. Pure values and functions; reading is bounds-checked, and anything malformed is
refused whole (the balancer then starts without them, as before)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from i2p_multihome.streaming.routes import KEPT_ACROSS_RESTART, RememberedClient
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.encoding import b64decode, b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Destination

DOCUMENT_VERSION = 1
# A Destination is 387 bytes plus its certificate's payload (a few bytes for the key
# types); base64 and the times make an entry about 560 characters. A Secret holds 1 MiB of
# base64, which is 3/4 of that in JSON.
MAX_DESTINATION_B64 = 1400
MAX_DOCUMENT_BYTES = 700_000
# Sealed: base64 of a 12-byte nonce, the document and a 16-byte tag.
MAX_SEALED_CHARS = (12 + MAX_DOCUMENT_BYTES + 16) * 4 // 3 + 4
SEAL_INFO = b"i2p-multihome recent clients v1"
NONCE_BYTES = 12


class ClientDocumentError(ValueError):
    """A stored client document that cannot be read; the balancer starts without it."""


def to_json_text(clients: Sequence[RememberedClient]) -> str:
    """Compact JSON of at most KEPT_ACROSS_RESTART clients, in the order given."""
    return json.dumps(
        {
            "version": DOCUMENT_VERSION,
            "clients": [
                {
                    "destination": b64encode(client.address.raw),
                    "sessionSinceS": round(client.session_since_s, 3),
                    "lastHeardS": round(client.last_heard_s, 3),
                }
                for client in clients[:KEPT_ACROSS_RESTART]
            ],
        },
        separators=(",", ":"),
    )


def from_json_text(text: str) -> list[RememberedClient]:
    """The clients a `to_json_text` document holds. Raises ClientDocumentError for
    anything malformed or out of bounds."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ClientDocumentError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClientDocumentError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != DOCUMENT_VERSION:
        raise ClientDocumentError("not a version-1 client document")
    entries = document.get("clients")
    if not isinstance(entries, list) or len(entries) > KEPT_ACROSS_RESTART:
        raise ClientDocumentError(f"clients must be a list of at most {KEPT_ACROSS_RESTART}")
    return [_client_from(entry) for entry in entries]


def _client_from(entry: Any) -> RememberedClient:
    if not isinstance(entry, dict):
        raise ClientDocumentError("a client entry must be an object")
    encoded = entry.get("destination")
    if not isinstance(encoded, str) or not 0 < len(encoded) <= MAX_DESTINATION_B64:
        raise ClientDocumentError("a client's destination must be I2P base64")
    try:
        address = Destination.from_bytes(b64decode(encoded))
    except WireError as exc:
        raise ClientDocumentError(f"a client's destination is malformed: {exc}") from None
    since, heard = _seconds(entry.get("sessionSinceS")), _seconds(entry.get("lastHeardS"))
    return RememberedClient(address, since, heard)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientDocumentError("a client's times must be non-negative seconds")
    if not math.isfinite(value) or value < 0:
        raise ClientDocumentError("a client's times must be non-negative seconds")
    return float(value)


def seal(
    text: str, keys: DestinationKeys, random_bytes: Callable[[int], bytes] = os.urandom
) -> str:
    """`text` encrypted and authenticated for whoever holds `keys`, as base64."""
    nonce = random_bytes(NONCE_BYTES)
    sealed = _cipher(keys).encrypt(nonce, text.encode(), SEAL_INFO)
    return base64.b64encode(nonce + sealed).decode()


def unseal(sealed: str, keys: DestinationKeys) -> str:
    """The text `seal` sealed with the same keys. Raises ClientDocumentError when it was
    sealed with other keys, damaged, or is not a sealed document at all."""
    if len(sealed) > MAX_SEALED_CHARS:
        raise ClientDocumentError(f"sealed document larger than {MAX_SEALED_CHARS} characters")
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ClientDocumentError(f"sealed document is not base64: {exc}") from None
    if len(raw) < NONCE_BYTES + 16:
        raise ClientDocumentError("sealed document too short")
    try:
        opened = _cipher(keys).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], SEAL_INFO)
        return opened.decode()
    except InvalidTag:
        raise ClientDocumentError("sealed with other keys, or damaged") from None
    except UnicodeDecodeError as exc:
        raise ClientDocumentError(f"sealed document is not text: {exc}") from None


def _cipher(keys: DestinationKeys) -> ChaCha20Poly1305:
    key = HKDF(hashes.SHA256(), 32, salt=None, info=SEAL_INFO).derive(keys.signing_seed)
    return ChaCha20Poly1305(key)
