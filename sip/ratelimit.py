"""Per-source token buckets, so one flooding peer cannot starve the SIP listener.

Sans-IO: the caller passes ``now``.  Each source (usually the peer's IP address) has a
bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a message costs one
token and is dropped when the bucket is empty.  The table of buckets is bounded: when it
is full, the bucket idle the longest is forgotten (a forgotten source starts full, which
errs on the side of answering a legitimate peer).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per source key.

    ``rate``: tokens added per second; ``burst``: bucket size; ``max_sources``: how many
    buckets are kept.  ``dropped`` counts refused messages (a metric, not an error).
    """

    def __init__(self, rate: float = 50.0, burst: float = 100.0, max_sources: int = 10_000) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_sources >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.dropped = 0
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: Hashable, now: float) -> bool:
        """Take one token from ``source``'s bucket; False (and count it) when empty."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = _Bucket(self.burst, now)
            self._buckets[source] = bucket
        else:
            self._buckets.move_to_end(source)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.dropped += 1
        return False
