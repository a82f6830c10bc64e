"""Destination keys: generation, our JSON key file, i2pd key import, and never leaking them.

`data/i2pd-ed25519.dat` was written by Debian's i2pd 2.45.1 for a server tunnel with
`signaturetype = 7` (run once in a network namespace holding only loopback);
`data/i2pd-ed25519.b32` is the address i2pd printed for it in its log and web console.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import (
    ELGAMAL_PRIME,
    KEY_FILE_FORMAT,
    DestinationKeys,
    KeyFileError,
    load_or_create,
)
from i2p_multihome.wire.messages import CreateLeaseSet2, PrivateKey
from i2p_multihome.wire.structures import Destination, Lease2, LeaseSet2
from seeded import seeded_random

DATA = Path(__file__).parent / "data"
I2PD_DAT = (DATA / "i2pd-ed25519.dat").read_bytes()
I2PD_B32 = (DATA / "i2pd-ed25519.b32").read_text().strip()
ELGAMAL_PRIVATE_LEN = 256


def _scripted(*chunks: bytes) -> Callable[[int], bytes]:
    """A random source that returns exactly these chunks, in order."""
    queue = list(chunks)

    def random_bytes(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return random_bytes


def _encodings(secret: bytes) -> list[str]:
    """Every text form a secret could leak in."""
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode().rstrip("="),
        b64encode(secret).rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        base64.b32encode(secret).decode().rstrip("="),
        base64.b32encode(secret).decode().rstrip("=").lower(),
        repr(secret),
        str(list(secret)),
    ]


def _assert_no_secret(text: str, keys: DestinationKeys) -> None:
    for secret in (keys.signing_seed, keys.encryption_private):
        for encoded in _encodings(secret):
            assert encoded not in text


def _lease_set_for(keys: DestinationKeys) -> LeaseSet2:
    leases = tuple(
        Lease2(hashlib.sha256(b"gw%d" % i).digest(), i + 1, 1_700_000_600) for i in range(4)
    )
    return LeaseSet2.build(
        keys.destination, 1_700_000_000, 600, (keys.encryption_key,), leases, keys.sign
    )


# --- generation and JSON ----------------------------------------------------------------------


def test_generate_uses_the_injected_randomness() -> None:
    seed, block, x25519 = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    keys = DestinationKeys.generate(_scripted(seed, block, x25519))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert keys.signing_seed == seed
    assert keys.encryption_private == x25519
    assert keys.destination == Destination.for_ed25519(public, block)
    assert keys.destination.raw[:352] == block * 11
    assert keys.destination.signing_public_key == public


def test_generate_is_deterministic_given_the_randomness() -> None:
    assert DestinationKeys.generate(seeded_random(b"a")) == DestinationKeys.generate(
        seeded_random(b"a")
    )
    assert DestinationKeys.generate(seeded_random(b"a")) != DestinationKeys.generate(
        seeded_random(b"b")
    )


def test_generate_defaults_to_os_randomness() -> None:
    first, second = DestinationKeys.generate(), DestinationKeys.generate()
    assert first.destination.b32 != second.destination.b32


def test_json_round_trip() -> None:
    keys = DestinationKeys.generate(seeded_random(b"json"))
    text = keys.to_json()
    doc = json.loads(text)
    assert doc["format"] == KEY_FILE_FORMAT
    assert doc["b32"] == keys.destination.b32
    assert doc["destination"] == b64encode(keys.destination.raw)
    assert doc["signingPrivateKey"] == b64encode(keys.signing_seed)
    assert doc["encryptionPrivateKey"] == b64encode(keys.encryption_private)
    restored = DestinationKeys.from_json(text)
    assert restored == keys
    assert restored.sign(b"m") == keys.sign(b"m")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "i2p-multihome-keys/0"),
        ("signingPrivateKey", b64encode(bytes(32))),  # not the destination's key
        ("signingPrivateKey", b64encode(bytes(31))),
        ("encryptionPrivateKey", b64encode(bytes(31))),
        ("destination", b64encode(bytes(391))),
        ("destination", "not base64!"),
        ("destination", 17),
    ],
)
def test_json_refuses_bad_fields_without_echoing_keys(field: str, value: object) -> None:
    keys = DestinationKeys.generate(seeded_random(b"bad"))
    doc = json.loads(keys.to_json())
    doc[field] = value
    with pytest.raises(KeyFileError) as info:
        DestinationKeys.from_json(json.dumps(doc))
    _assert_no_secret(str(info.value), keys)
    _assert_no_secret(repr(info.value), keys)


def test_json_refuses_missing_fields() -> None:
    doc = json.loads(DestinationKeys.generate(seeded_random(b"m")).to_json())
    for name in ("destination", "signingPrivateKey", "encryptionPrivateKey"):
        partial = {k: v for k, v in doc.items() if k != name}
        with pytest.raises(KeyFileError):
            DestinationKeys.from_json(json.dumps(partial))


def test_mismatched_seed_is_refused_on_construction() -> None:
    keys = DestinationKeys.generate(seeded_random(b"x"))
    with pytest.raises(KeyFileError):
        DestinationKeys(keys.destination, bytes(32), keys.encryption_private)
    with pytest.raises(KeyFileError):
        DestinationKeys(keys.destination, keys.signing_seed, bytes(16))


# --- no key material in text ----------------------------------------------------------------


def test_repr_and_str_show_only_the_address() -> None:
    keys = DestinationKeys.generate(seeded_random(b"repr"))
    assert repr(keys) == f"DestinationKeys({keys.destination.b32})"
    for text in (repr(keys), str(keys), f"{keys}", f"{keys!r}", repr([keys]), repr({"k": keys})):
        _assert_no_secret(text, keys)


def test_sanity_of_the_leak_check() -> None:
    """The checker itself finds a leak, so the tests above can fail."""
    keys = DestinationKeys.generate(seeded_random(b"leak"))
    with pytest.raises(AssertionError):
        _assert_no_secret(f"oops {b64encode(keys.signing_seed)}", keys)
    with pytest.raises(AssertionError):
        _assert_no_secret(f"oops {keys.encryption_private.hex()}", keys)


def test_logging_the_keys_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    keys = DestinationKeys.generate(seeded_random(b"log"))
    log = logging.getLogger("i2p_multihome.test_keys")
    with caplog.at_level(logging.DEBUG):
        log.info("keys %s", keys)
        log.info("keys %r", keys)
        log.info(keys)
        log.info("%s", {"keys": keys, "msg": CreateLeaseSet2(1, _lease_set_for(keys), ())})
        try:
            raise RuntimeError(f"failed with {keys}")
        except RuntimeError:
            log.exception("while using %r", keys)
    assert keys.destination.b32 in caplog.text
    _assert_no_secret(caplog.text, keys)
    for record in caplog.records:
        _assert_no_secret(record.getMessage(), keys)


def test_messages_carrying_private_keys_do_not_repr_them() -> None:
    keys = DestinationKeys.generate(seeded_random(b"msg"))
    message = CreateLeaseSet2(1, _lease_set_for(keys), (PrivateKey(4, keys.encryption_private),))
    _assert_no_secret(repr(message), keys)
    _assert_no_secret(repr(PrivateKey(4, keys.encryption_private)), keys)
    # ... while the encoded message does carry the X25519 private key, as the router needs.
    assert keys.encryption_private in message.encode_body()


# --- load_or_create -------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would let a careless open() create a world-readable file."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_load_or_create_creates_a_0600_file(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "keys.json"
    keys = load_or_create(str(path), seeded_random(b"create"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys == DestinationKeys.generate(seeded_random(b"create"))
    assert DestinationKeys.from_json(path.read_text()) == keys


def test_load_or_create_loads_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = load_or_create(str(path), seeded_random(b"first"))
    before = path.read_bytes()
    loaded = load_or_create(str(path), seeded_random(b"second"))
    assert loaded == created
    assert path.read_bytes() == before


def test_load_or_create_imports_an_i2pd_dat(tmp_path: Path) -> None:
    path = tmp_path / "test.dat"
    path.write_bytes(I2PD_DAT)
    keys = load_or_create(str(path), seeded_random(b"dat"))
    assert keys.destination.b32 == I2PD_B32
    assert path.read_bytes() == I2PD_DAT  # imported, not rewritten


def test_load_or_create_imports_an_i2pd_dat_that_starts_with_a_brace(tmp_path: Path) -> None:
    """i2pd's first 256 bytes are a random public key: 1 file in 256 starts with '{'."""
    seed = bytes(range(32))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    destination = Destination.for_ed25519(public, b"{" + bytes(range(0x80, 0x9F)))
    path = tmp_path / "brace.dat"
    path.write_bytes(destination.raw + bytes(ELGAMAL_PRIVATE_LEN) + seed)
    keys = load_or_create(str(path), seeded_random(b"brace"))
    assert keys.destination == destination


def test_load_or_create_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(KeyFileError):
        load_or_create(str(path))
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(KeyFileError):
        load_or_create(str(path))


# --- i2pd import ----------------------------------------------------------------------------


def test_the_stored_i2pd_file_is_what_i2pd_writes() -> None:
    """Layout of i2pd's key file: Destination (391), ElGamal private (256), Ed25519 seed (32)."""
    assert len(I2PD_DAT) == 391 + ELGAMAL_PRIVATE_LEN + 32
    assert I2PD_DAT[384:391] == bytes.fromhex("05000400070000")
    digest = hashlib.sha256(I2PD_DAT[:391]).digest()
    assert base64.b32encode(digest).decode().rstrip("=").lower() + ".b32.i2p" == I2PD_B32


def test_i2pd_import_gives_the_address_i2pd_showed() -> None:
    keys = DestinationKeys.from_i2pd_dat(I2PD_DAT)
    assert keys.destination.b32 == I2PD_B32
    assert keys.destination.raw == I2PD_DAT[:391]
    assert keys.signing_seed == I2PD_DAT[-32:]
    # The destination's crypto type is ElGamal, so the LeaseSet2's X25519 key is derived
    # from the signing key: the same at every import, and neither key itself.
    assert keys.destination.crypto_type == 0
    again = DestinationKeys.from_i2pd_dat(I2PD_DAT)
    assert keys.encryption_private == again.encryption_private
    assert keys.encryption_private not in (keys.signing_seed, I2PD_DAT[391:423])


def test_i2pd_imported_key_signs_a_lease_set_that_verifies() -> None:
    keys = DestinationKeys.from_i2pd_dat(I2PD_DAT)
    lease_set = _lease_set_for(keys)
    data = lease_set.to_bytes()
    parsed = LeaseSet2.from_bytes(data)
    assert parsed.verify()
    # Independently: the Ed25519 key in i2pd's destination bytes verifies 0x03 || body.
    public = Ed25519PublicKey.from_public_bytes(I2PD_DAT[352:384])
    public.verify(data[-64:], b"\x03" + data[:-64])


def test_i2pd_import_reuses_an_x25519_identity_key() -> None:
    seed, x25519 = bytes(range(32)), bytes(range(32, 64))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    area = bytes(range(64, 96)) * 11  # 32-byte X25519 public key + padding, 352 bytes
    raw = area + public + struct.pack(">BHHH", 5, 4, 7, 4)
    keys = DestinationKeys.from_i2pd_dat(raw + x25519 + seed)
    assert keys.destination.crypto_type == 4
    assert keys.encryption_private == x25519


def _offline_signed_dat() -> bytes:
    """What i2pd writes for offline keys: a zeroed signing key, then the offline signature
    (expires, transient type, transient public key, signature) and the transient key."""
    transient_seed = bytes(range(200, 232))
    transient = Ed25519PrivateKey.from_private_bytes(transient_seed).public_key()
    offline = struct.pack(">IH", 1_800_000_000, 7) + transient.public_bytes_raw() + bytes(range(64))
    return I2PD_DAT[:391] + I2PD_DAT[391:647] + bytes(32) + offline + transient_seed


def test_offline_signed_i2pd_keys_are_refused() -> None:
    with pytest.raises(KeyFileError, match="offline"):
        DestinationKeys.from_i2pd_dat(_offline_signed_dat())


def _non_ed25519_dat(sig_type: int, public_len: int, private_len: int) -> bytes:
    key_area = bytes(range(256)) + bytes(128 - public_len) + b"\x01" * public_len
    cert = struct.pack(">BHHH", 5, 4, sig_type, 0)
    return key_area + cert + bytes(ELGAMAL_PRIVATE_LEN) + b"\x02" * private_len


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("DSA (NULL certificate)", bytes(384) + b"\x00\x00\x00" + bytes(256) + b"\x02" * 20),
        ("ECDSA-P256", _non_ed25519_dat(1, 64, 32)),
        ("ECDSA-P384", _non_ed25519_dat(2, 96, 48)),
        ("Ed25519ph", _non_ed25519_dat(8, 32, 32)),
        ("RedDSA", _non_ed25519_dat(11, 32, 32)),
    ],
)
def test_non_ed25519_i2pd_keys_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(KeyFileError, match="signature type"):
        DestinationKeys.from_i2pd_dat(data)


def test_i2pd_keys_with_unknown_crypto_type_are_refused() -> None:
    data = bytearray(I2PD_DAT)
    data[389:391] = struct.pack(">H", 99)
    with pytest.raises(KeyFileError, match="crypto type"):
        DestinationKeys.from_i2pd_dat(bytes(data))


def test_i2pd_keys_with_a_foreign_seed_are_refused() -> None:
    data = I2PD_DAT[:-32] + bytes(range(1, 33))
    with pytest.raises(KeyFileError, match="does not match"):
        DestinationKeys.from_i2pd_dat(data)


@pytest.mark.parametrize("cut", [0, 100, 391, 500, 647, len(I2PD_DAT) - 1])
def test_truncated_i2pd_keys_are_refused(cut: int) -> None:
    with pytest.raises(KeyFileError):
        DestinationKeys.from_i2pd_dat(I2PD_DAT[:cut])


# --- ElGamal, for clients that speak nothing else ------------------------------------------


def test_the_elgamal_key_is_a_key_of_i2ps_group_and_stable() -> None:
    keys = DestinationKeys.generate(seeded_random(b"elgamal-5"))
    x = int.from_bytes(keys.elgamal_private, "big")
    assert 2 <= x < ELGAMAL_PRIME - 1 and len(keys.elgamal_private) == 256
    assert keys.elgamal_key.crypto_type == 0
    assert int.from_bytes(keys.elgamal_key.public_key, "big") == pow(2, x, ELGAMAL_PRIME)
    # Derived from the signing key: the same after a reload, different for other keys.
    again = DestinationKeys.from_json(keys.to_json())
    assert again.elgamal_key == keys.elgamal_key
    assert DestinationKeys.generate(seeded_random(b"elgamal-6")).elgamal_key != keys.elgamal_key
    assert keys.encryption_keys == (keys.encryption_key, keys.elgamal_key)
    assert [t for t, _ in keys.private_keys] == [4, 0]
    assert "elgamal" not in keys.to_json().lower()  # nothing new in the key file


def test_the_prime_is_rfc_3526_group_14() -> None:
    # The group's defining property: p = 2^2048 - 2^1984 - 1 + 2^64 * (floor(2^1918 pi) + 124476).
    assert ELGAMAL_PRIME.bit_length() == 2048
    assert ELGAMAL_PRIME >> 1984 == (1 << 64) - 1
    assert ELGAMAL_PRIME & ((1 << 64) - 1) == (1 << 64) - 1
    assert pow(2, ELGAMAL_PRIME - 1, ELGAMAL_PRIME) == 1  # Fermat: consistent with a prime


def test_an_imported_i2pd_destination_derives_its_elgamal_key() -> None:
    """i2pd fills a destination's identity key with random bytes (Identity.cpp,
    CreateRandomKeys with isDestination): the .dat's "private key" belongs to no public
    key, so it is not used."""
    keys = DestinationKeys.from_i2pd_dat(I2PD_DAT)
    unrelated = int.from_bytes(I2PD_DAT[391 : 391 + 256], "big")
    assert pow(2, unrelated, ELGAMAL_PRIME).to_bytes(256, "big") != keys.destination.raw[:256]
    assert keys.elgamal_private != I2PD_DAT[391 : 391 + 256]
    x = int.from_bytes(keys.elgamal_private, "big")
    assert int.from_bytes(keys.elgamal_key.public_key, "big") == pow(2, x, ELGAMAL_PRIME)
    assert DestinationKeys.from_i2pd_dat(I2PD_DAT).elgamal_key == keys.elgamal_key
