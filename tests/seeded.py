"""Deterministic stand-ins for os.urandom, so generated keys are the same on every run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def seeded_random(seed: bytes) -> Callable[[int], bytes]:
    """A `random_bytes(n)` whose output depends only on `seed` and the calls so far."""
    counter = iter(range(1 << 30))

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(4, "big")).digest()
        return out[:n]

    return random_bytes
