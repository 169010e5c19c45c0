"""Identifiers that sort by time: UUIDv7 (RFC 9562 5.7) for fax ids and webhook ids.

The randomness comes from an injected ``random.Random`` where a test wants replayable
ids; production passes ``random.SystemRandom()``.
"""

from __future__ import annotations

import random
import uuid

_system_random = random.SystemRandom()


def uuid7(unix_seconds: float, rng: random.Random | None = None) -> uuid.UUID:
    """A UUIDv7 for the instant ``unix_seconds``: 48-bit milliseconds, version 7, 74 random bits."""
    rng = rng or _system_random
    millis = int(unix_seconds * 1000) & ((1 << 48) - 1)
    rand_a = rng.getrandbits(12)
    rand_b = rng.getrandbits(62)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def new_fax_id(unix_seconds: float, rng: random.Random | None = None) -> str:
    """A fax id: a UUIDv7 in its canonical text form (sorts by creation time)."""
    return str(uuid7(unix_seconds, rng))


def new_webhook_id(unix_seconds: float, rng: random.Random | None = None) -> str:
    """A Standard Webhooks message id (``msg_`` + UUIDv7 hex); consumers de-duplicate on it."""
    return "msg_" + uuid7(unix_seconds, rng).hex
