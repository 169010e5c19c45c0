"""Token buckets, so one flooding peer (or many spoofed ones) cannot starve the SIP listener.

Sans-IO: the caller passes ``now``.  Each source (usually the peer's IP address) has a
bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a message costs one
token and is dropped when the bucket is empty.  The table of buckets is bounded: when it
is full, the bucket idle the longest is forgotten (a forgotten source starts full, which
errs on the side of answering a legitimate peer).

Per-source buckets alone are bypassed by a flood of UDP datagrams with spoofed source
addresses (every new address starts with a full bucket).  An optional *global* bucket
(``global_rate``/``global_burst``), shared by every source that goes through the limiter,
caps the total: a message needs a token from its own bucket and from the global one, and
takes neither when either is empty.  The UA sends only sources outside ``allow_from``
through the limiter, so a spoofed flood can starve other untrusted peers but never a
trusted trunk.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Hashable


@dataclass
class _Bucket:
    tokens: float
    stamp: float

    def refill(self, now: float, rate: float, burst: float) -> None:
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(burst, self.tokens + elapsed * rate)
        self.stamp = max(self.stamp, now)


class RateLimiter:
    """Token bucket per source key, plus an optional global bucket over all keys.

    ``rate``: tokens added per second; ``burst``: bucket size; ``max_sources``: how many
    buckets are kept; ``global_rate``/``global_burst``: the shared bucket (None: none).
    ``dropped`` counts refused messages (a metric, not an error); ``dropped_source`` and
    ``dropped_global`` say which bucket was empty.
    """

    def __init__(
        self,
        rate: float = 50.0,
        burst: float = 100.0,
        max_sources: int = 10_000,
        *,
        global_rate: float | None = None,
        global_burst: float | None = None,
    ) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_sources >= 1")
        if (global_rate is None) != (global_burst is None):
            raise ValueError("global_rate and global_burst go together")
        if global_rate is not None and global_burst is not None and (global_rate <= 0 or global_burst < 1):
            raise ValueError("global_rate must be > 0 and global_burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.global_rate = global_rate
        self.global_burst = global_burst
        self.dropped = 0
        self.dropped_source = 0
        self.dropped_global = 0
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        # (bucket, rate, burst) of the shared bucket, when there is one.
        self._global: tuple[_Bucket, float, float] | None = None
        if global_rate is not None and global_burst is not None:
            self._global = (_Bucket(float(global_burst), float("-inf")), global_rate, global_burst)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: Hashable, now: float) -> bool:
        """Take one token from ``source``'s bucket (and the global one); False (and count
        it) when either is empty."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = _Bucket(self.burst, now)
            self._buckets[source] = bucket
        else:
            self._buckets.move_to_end(source)
            bucket.refill(now, self.rate, self.burst)
        if bucket.tokens < 1.0:
            self.dropped += 1
            self.dropped_source += 1
            return False
        if self._global is not None:
            shared, global_rate, global_burst = self._global
            shared.refill(now, global_rate, global_burst)
            if shared.tokens < 1.0:
                self.dropped += 1
                self.dropped_global += 1
                return False
            shared.tokens -= 1.0
        bucket.tokens -= 1.0
        return True
