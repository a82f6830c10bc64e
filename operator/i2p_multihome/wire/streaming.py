"""The I2P streaming packet (I2CP protocol 6; spec: streaming) and signature checks for every
signature type a remote Destination commonly has.

A packet is a frozen `StreamPacket`. `StreamPacket.decode` keeps the exact bytes it read, so
`verify` checks the signature over what the sender signed: the whole packet with the signature
bytes zeroed (i2pd Streaming.cpp `Sign`/`ProcessOptions`, Java `Packet.verifySignature`).

Layout: sendStreamId u32 | receiveStreamId u32 | sequenceNum u32 | ackThrough u32 |
NACK count u8 | NACKs u32 each | resendDelay u8 | flags u16 | option size u16 | options | payload.
Options appear in the spec's order: delay (u16), FROM (Destination), max packet size (u16),
offline signature (unsupported here), signature.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from i2p_multihome.wire import codec
from i2p_multihome.wire.codec import Reader, WireError
from i2p_multihome.wire.structures import SIG_TYPE_DSA_SHA1, SIG_TYPE_ED25519, Destination

SYNCHRONIZE = 0x0001
CLOSE = 0x0002
RESET = 0x0004
SIGNATURE_INCLUDED = 0x0008
SIGNATURE_REQUESTED = 0x0010  # unused by every implementation; carried, never acted on
FROM_INCLUDED = 0x0020
DELAY_REQUESTED = 0x0040
MAX_PACKET_SIZE_INCLUDED = 0x0080
PROFILE_INTERACTIVE = 0x0100  # ignored by every implementation
ECHO = 0x0200
NO_ACK = 0x0400
OFFLINE_SIGNATURE = 0x0800

FLAG_NAMES = {
    SYNCHRONIZE: "SYN",
    CLOSE: "CLOSE",
    RESET: "RESET",
    SIGNATURE_INCLUDED: "SIG",
    SIGNATURE_REQUESTED: "SIGREQ",
    FROM_INCLUDED: "FROM",
    DELAY_REQUESTED: "DELAY",
    MAX_PACKET_SIZE_INCLUDED: "MAXPS",
    PROFILE_INTERACTIVE: "INTERACTIVE",
    ECHO: "ECHO",
    NO_ACK: "NO_ACK",
    OFFLINE_SIGNATURE: "OFFLINE",
}

HEADER_SIZE = 22  # the fixed fields with no NACKs and no options
MAX_NACKS = 255  # the NACK count is one byte
MAX_STREAM_ID = 0xFFFFFFFF
# A delay option above this asks the receiver to stop sending data (spec: "choking").
MAX_DELAY_NOT_CHOKED = 60000
# What we send to choke: Java sends 61000 ("MIN_DELAY_CHOKE" is 60001).
DELAY_CHOKE = 61000
# A SYN's 8 NACK slots may carry the target's 32-byte destination hash (replay prevention,
# Java 0.9.58, i2pd 2.47).
REPLAY_NACK_COUNT = 8


def nacks_from_hash(destination_hash: bytes) -> tuple[int, ...]:
    """The 8 NACK values that carry `destination_hash` in a SYN."""
    if len(destination_hash) != 32:
        raise WireError(f"a destination hash is 32 bytes, got {len(destination_hash)}")
    return tuple(int.from_bytes(destination_hash[i : i + 4], "big") for i in range(0, 32, 4))


def hash_from_nacks(nacks: tuple[int, ...]) -> bytes | None:
    """The destination hash a SYN carries in its NACKs, or None when it carries none (fewer
    or more than 8 NACKs: older clients, i2pd before 2.47)."""
    if len(nacks) != REPLAY_NACK_COUNT:
        return None
    return b"".join(codec.u32(n) for n in nacks)


@dataclass(frozen=True)
class StreamPacket:
    """One streaming packet. An option is present exactly when its flag is set; `signature`
    is None on a packet that has SIGNATURE_INCLUDED but is not signed yet (see `signed`)."""

    send_stream_id: int
    receive_stream_id: int
    sequence: int
    ack_through: int = 0
    nacks: tuple[int, ...] = ()
    resend_delay: int = 0
    flags: int = 0
    delay_requested_ms: int | None = None
    from_destination: Destination | None = None
    max_packet_size: int | None = None
    signature: bytes | None = field(default=None, repr=False)
    payload: bytes = field(default=b"", repr=False)
    # Option bytes after the options we know. i2pd and Java find the payload by the option
    # size and skip whatever they do not parse, so we keep them to re-encode exactly.
    extra_options: bytes = field(default=b"", repr=False)
    # The bytes this packet was decoded from: what a signature is checked against.
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("send_stream_id", "receive_stream_id", "sequence", "ack_through"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_STREAM_ID:
                raise WireError(f"{name} {value} does not fit in 4 bytes")
        if len(self.nacks) > MAX_NACKS:
            raise WireError(f"{len(self.nacks)} NACKs, at most {MAX_NACKS} fit")
        if any(not 0 <= n <= MAX_STREAM_ID for n in self.nacks):
            raise WireError("a NACK does not fit in 4 bytes")
        if not 0 <= self.resend_delay <= 0xFF:
            raise WireError(f"resend delay {self.resend_delay} does not fit in 1 byte")
        if not 0 <= self.flags <= 0xFFFF:
            raise WireError(f"flags {self.flags:#x} do not fit in 2 bytes")
        if self.flags & OFFLINE_SIGNATURE:
            raise WireError("offline-signed streaming packets are not supported")
        _check_option(self.flags, DELAY_REQUESTED, "delay", self.delay_requested_ms)
        _check_option(self.flags, FROM_INCLUDED, "FROM", self.from_destination)
        _check_option(self.flags, MAX_PACKET_SIZE_INCLUDED, "max packet size",
                      self.max_packet_size)  # fmt: skip
        for name in ("delay_requested_ms", "max_packet_size"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFFFF:
                raise WireError(f"{name} {value} does not fit in 2 bytes")
        if self.signature is not None and not self.flags & SIGNATURE_INCLUDED:
            raise WireError("a signature without the SIGNATURE_INCLUDED flag")
        if len(self.options()) > 0xFFFF:
            raise WireError("options longer than 65535 bytes")

    @classmethod
    def make(
        cls,
        send_stream_id: int,
        receive_stream_id: int,
        sequence: int,
        *,
        ack_through: int = 0,
        nacks: tuple[int, ...] = (),
        resend_delay: int = 0,
        flags: int = 0,
        delay_requested_ms: int | None = None,
        from_destination: Destination | None = None,
        max_packet_size: int | None = None,
        signature: bytes | None = None,
        payload: bytes = b"",
    ) -> StreamPacket:
        """A packet whose option flags follow from the options given: `make(..., flags=SYN,
        from_destination=d)` sets FROM_INCLUDED too."""
        if delay_requested_ms is not None:
            flags |= DELAY_REQUESTED
        if from_destination is not None:
            flags |= FROM_INCLUDED
        if max_packet_size is not None:
            flags |= MAX_PACKET_SIZE_INCLUDED
        if signature is not None:
            flags |= SIGNATURE_INCLUDED
        return cls(
            send_stream_id, receive_stream_id, sequence, ack_through, nacks, resend_delay,
            flags, delay_requested_ms, from_destination, max_packet_size, signature, payload,
        )  # fmt: skip

    # --- flags --------------------------------------------------------------------------

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    @property
    def is_syn(self) -> bool:
        return self.has(SYNCHRONIZE)

    @property
    def is_plain_ack(self) -> bool:
        """Sequence 0 without SYN: an ack that is itself never acked or retransmitted."""
        return self.sequence == 0 and not self.has(SYNCHRONIZE)

    @property
    def choked(self) -> bool | None:
        """True if the sender asks us to stop sending data, False if it asks us to resume,
        None when the packet says nothing about it (no delay option)."""
        if self.delay_requested_ms is None:
            return None
        return self.delay_requested_ms > MAX_DELAY_NOT_CHOKED

    @property
    def replay_hash(self) -> bytes | None:
        """The target destination hash a SYN carries in its NACK slots, if any."""
        return hash_from_nacks(self.nacks) if self.is_syn else None

    # --- encoding -----------------------------------------------------------------------

    def options(self, signature: bytes | None = None) -> bytes:
        parts = []
        if self.delay_requested_ms is not None:
            parts.append(codec.u16(self.delay_requested_ms))
        if self.from_destination is not None:
            parts.append(self.from_destination.raw)
        if self.max_packet_size is not None:
            parts.append(codec.u16(self.max_packet_size))
        sig = self.signature if signature is None else signature
        if sig is not None:
            parts.append(sig)
        parts.append(self.extra_options)
        return b"".join(parts)

    def _encode(self, signature: bytes | None) -> bytes:
        options = self.options(signature)
        return b"".join(
            [
                codec.u32(self.send_stream_id),
                codec.u32(self.receive_stream_id),
                codec.u32(self.sequence),
                codec.u32(self.ack_through),
                codec.u8(len(self.nacks)),
                *(codec.u32(n) for n in self.nacks),
                codec.u8(self.resend_delay),
                codec.u16(self.flags),
                codec.u16(len(options)),
                options,
                self.payload,
            ]
        )

    def signature_offset(self) -> int:
        """Where the signature starts in the encoded packet."""
        offset = HEADER_SIZE + 4 * len(self.nacks)
        if self.delay_requested_ms is not None:
            offset += 2
        if self.from_destination is not None:
            offset += len(self.from_destination.raw)
        if self.max_packet_size is not None:
            offset += 2
        return offset

    def encode(self) -> bytes:
        """The wire bytes. A packet flagged SIGNATURE_INCLUDED must be signed first."""
        if self.has(SIGNATURE_INCLUDED) and self.signature is None:
            raise WireError("packet flagged SIGNATURE_INCLUDED is not signed")
        return self._encode(None)

    def signed(self, sign: Callable[[bytes], bytes], signature_len: int) -> StreamPacket:
        """This packet with its signature: `sign` signs the whole packet with `signature_len`
        zero bytes where the signature goes. `signature_len` is the signer's (FROM's, when
        the packet carries FROM)."""
        if not self.has(SIGNATURE_INCLUDED):
            raise WireError("signing a packet without the SIGNATURE_INCLUDED flag")
        if self.from_destination is not None and signature_len != (
            self.from_destination.signature_len
        ):
            raise WireError("signature length differs from the FROM destination's")
        unsigned = self._encode(bytes(signature_len))
        signature = sign(unsigned)
        if len(signature) != signature_len:
            raise WireError(f"signer returned {len(signature)} bytes, expected {signature_len}")
        start = self.signature_offset()
        raw = unsigned[:start] + signature + unsigned[start + signature_len :]
        return dataclasses.replace(self, signature=signature, raw=raw)

    def signed_bytes(self) -> bytes:
        """What the signature covers: the packet with the signature bytes zeroed."""
        if self.signature is None:
            raise WireError("packet carries no signature")
        data = self.raw or self._encode(None)
        start = self.signature_offset()
        end = start + len(self.signature)
        return data[:start] + bytes(len(self.signature)) + data[end:]

    def verify(self, destination: Destination) -> bool:
        """Whether `destination` signed this packet. False when unsigned or when the signature
        length does not fit the destination's type; WireError when the type cannot be
        checked here."""
        if self.signature is None or len(self.signature) != destination.signature_len:
            return False
        return verify_signature(destination, self.signed_bytes(), self.signature)

    # --- decoding -----------------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes, signer: Destination | None = None) -> StreamPacket:
        """Parse `data`. The signature length comes from FROM when present, else from
        `signer` (the stream's known remote), else from what is left of the options (the
        spec's rule for a stray CLOSE or RESET)."""
        reader = Reader(data)
        send_id = reader.u32("send stream id")
        receive_id = reader.u32("receive stream id")
        sequence = reader.u32("sequence number")
        ack_through = reader.u32("ack through")
        nack_count = reader.u8("NACK count")
        nacks = tuple(reader.u32("NACK") for _ in range(nack_count))
        resend_delay = reader.u8("resend delay")
        flags = reader.u16("flags")
        option_size = reader.u16("option size")
        options = Reader(reader.take(option_size, "options"))
        payload = reader.rest()
        if flags & OFFLINE_SIGNATURE:
            raise WireError("offline-signed streaming packets are not supported")
        delay = options.u16("delay option") if flags & DELAY_REQUESTED else None
        source = Destination.read(options) if flags & FROM_INCLUDED else None
        max_size = (
            options.u16("max packet size option") if flags & MAX_PACKET_SIZE_INCLUDED else None
        )
        signature = None
        if flags & SIGNATURE_INCLUDED:
            if source is not None:
                signature_len = source.signature_len
            elif signer is not None:
                signature_len = signer.signature_len
            else:
                signature_len = options.remaining
            signature = options.take(signature_len, "signature option")
        extra = options.rest()
        return cls(
            send_id, receive_id, sequence, ack_through, nacks, resend_delay, flags,
            delay, source, max_size, signature, payload, extra, raw=data,
        )  # fmt: skip

    def describe(self) -> str:
        """A short form for logs: ids, sequence, acks, flag names, payload length."""
        names = [name for flag, name in FLAG_NAMES.items() if self.flags & flag]
        return (
            f"{self.send_stream_id:08x}/{self.receive_stream_id:08x} #{self.sequence} "
            f"ack {self.ack_through} nacks {len(self.nacks)} {'|'.join(names) or '-'} "
            f"data {len(self.payload)}"
        )


def _check_option(flags: int, flag: int, name: str, value: object) -> None:
    if bool(flags & flag) != (value is not None):
        raise WireError(f"the {name} option and its flag disagree")


def peek_send_stream_id(data: bytes) -> int:
    """The first field of a packet, read before deciding which stream decodes it."""
    return Reader(data).u32("send stream id")


# --- signatures ---------------------------------------------------------------------------

# The DSA group every I2P DSA_SHA1 key uses (spec: cryptography, "DSA"); the same constants
# are in i2pd Crypto.cpp and Java CryptoConstants.
DSA_P = int(
    "9C05B2AA960D9B97B8931963C9CC9E8C3026E9B8ED92FAD0A69CC886D5BF8015FCADAE31A0AD18FAB3F01B00"
    "A358DE237655C4964AFAA2B337E96AD316B9FB1CC564B5AEC5B69A9FF6C3E4548707FEF8503D91DD8602E867"
    "E6D35D2235C1869CE2479C3B9D5401DE04E0727FB33D6511285D4CF29538D9E3B6051F5B22CC1C93",
    16,
)
DSA_Q = int("A5DFC28FEF4CA1E286744CD8EED9D29D684046B7", 16)
DSA_G = int(
    "0C1F4D27D40093B429E962D7223824E0BBC47E7C832A39236FC683AF84889581075FF9082ED32353D4374D73"
    "01CDA1D23C431F4698599DDA02451824FF369752593647CC3DDC197DE985E43D136CDCFC6BD5409CD2F45082"
    "1142A5E6F8EB1C3AB5D0484B8129FCF17BCE4F7F33321C3CB3DBB14A905E7B2B3E93BE4708CBCC82",
    16,
)

_ECDSA: dict[int, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    1: (ec.SECP256R1(), hashes.SHA256()),
    2: (ec.SECP384R1(), hashes.SHA384()),
    3: (ec.SECP521R1(), hashes.SHA512()),
}

# Signature types `verify_signature` checks. RSA types are refused by i2pd's streaming too
# (Streaming.cpp ProcessOptions); Ed25519ph and RedDSA do not sign Destinations in practice.
VERIFIABLE_SIG_TYPES = frozenset({SIG_TYPE_DSA_SHA1, 1, 2, 3, SIG_TYPE_ED25519})


def verify_signature(destination: Destination, message: bytes, signature: bytes) -> bool:
    """Whether `destination`'s signing key signed `message`: DSA_SHA1, ECDSA P-256/384/521
    and Ed25519. Other types raise WireError: the caller counts and drops them."""
    sig_type = destination.sig_type
    if sig_type not in VERIFIABLE_SIG_TYPES:
        raise WireError(f"verifying signature type {sig_type} is not supported")
    if len(signature) != destination.signature_len:
        return False
    if sig_type == SIG_TYPE_ED25519:
        return destination.verify(message, signature)
    half = len(signature) // 2
    r = int.from_bytes(signature[:half], "big")
    s = int.from_bytes(signature[half:], "big")
    key = destination.signing_public_key
    if sig_type == SIG_TYPE_DSA_SHA1:
        return _dsa_sha1_verify(int.from_bytes(key, "big"), message, r, s)
    curve, digest = _ECDSA[sig_type]
    coordinate = len(key) // 2
    try:
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(key[:coordinate], "big"),
            int.from_bytes(key[coordinate:], "big"),
            curve,
        ).public_key()
        public.verify(encode_dss_signature(r, s), message, ec.ECDSA(digest))
    except (InvalidSignature, ValueError):
        return False
    return True


def _dsa_sha1_verify(y: int, message: bytes, r: int, s: int) -> bool:
    """FIPS 186 DSA verification over I2P's fixed group."""
    if not (0 < r < DSA_Q and 0 < s < DSA_Q and 1 < y < DSA_P):
        return False
    digest = int.from_bytes(hashlib.sha1(message).digest(), "big")  # noqa: S324 (DSA_SHA1)
    w = pow(s, -1, DSA_Q)
    u1 = digest * w % DSA_Q
    u2 = r * w % DSA_Q
    v = pow(DSA_G, u1, DSA_P) * pow(y, u2, DSA_P) % DSA_P % DSA_Q
    return v == r
