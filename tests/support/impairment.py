"""A seeded model of a bad IP path: loss, burst loss, duplication, reordering, delay.

``Impairment.transmit(datagram, now)`` says when (and how many times) the datagram
arrives.  Everything random comes from the ``random.Random`` passed in, so a failing
test replays exactly.

* ``loss``: each datagram is lost with this probability (independently).
* ``burst_loss=(p_good_to_bad, p_bad_to_good)``: a Gilbert-Elliott channel.  Before each
  datagram the channel moves from the good to the bad state with ``p_good_to_bad`` and
  back with ``p_bad_to_good``; in the bad state every datagram is lost.  The mean burst
  is ``1 / p_bad_to_good`` datagrams long.  Independent ``loss`` applies in the good
  state too.
* ``duplicate``: a datagram that gets through arrives a second time with this
  probability, up to ``reorder_delay`` later.
* ``reorder``: a datagram is held back by an extra ``reorder_delay`` (uniform in
  (0, reorder_delay]) with this probability, so datagrams sent after it overtake it.
* ``delay`` + uniform(0, ``jitter``): every datagram's one-way delay.  With jitter
  larger than the sending interval datagrams also arrive out of order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(slots=True)
class ImpairmentCounters:
    sent: int = 0
    lost: int = 0
    lost_in_bursts: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0


class Impairment:
    """One direction of a lossy path; see the module docstring."""

    def __init__(
        self,
        rng: random.Random,
        loss: float = 0.0,
        burst_loss: tuple[float, float] | None = None,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.02,
        jitter: float = 0.0,
        *,
        reorder_delay: float = 0.05,
    ) -> None:
        for name, value in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, not {value!r}")
        if burst_loss is not None and not all(0.0 <= p <= 1.0 for p in burst_loss):
            raise ValueError(f"burst_loss must be two probabilities, not {burst_loss!r}")
        if delay < 0 or jitter < 0 or reorder_delay < 0:
            raise ValueError("delay, jitter and reorder_delay must be >= 0")
        self.rng = rng
        self.loss = loss
        self.burst_loss = burst_loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self.jitter = jitter
        self.reorder_delay = reorder_delay
        self.in_burst = False
        self.counters = ImpairmentCounters()

    def transmit(self, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        """Send ``datagram`` at ``now``; return its arrivals as (time, bytes), maybe none."""
        rng = self.rng
        counters = self.counters
        counters.sent += 1
        if self.burst_loss is not None:
            p_good_to_bad, p_bad_to_good = self.burst_loss
            if self.in_burst:
                self.in_burst = rng.random() >= p_bad_to_good
            else:
                self.in_burst = rng.random() < p_good_to_bad
            if self.in_burst:
                counters.lost += 1
                counters.lost_in_bursts += 1
                return []
        if self.loss and rng.random() < self.loss:
            counters.lost += 1
            return []
        when = now + self.delay + (rng.uniform(0.0, self.jitter) if self.jitter else 0.0)
        if self.reorder and rng.random() < self.reorder:
            counters.reordered += 1
            when += rng.uniform(0.0, self.reorder_delay) or self.reorder_delay
        arrivals = [(when, datagram)]
        if self.duplicate and rng.random() < self.duplicate:
            counters.duplicated += 1
            arrivals.append((when + (rng.uniform(0.0, self.reorder_delay) or self.reorder_delay), datagram))
        counters.delivered += len(arrivals)
        return arrivals
