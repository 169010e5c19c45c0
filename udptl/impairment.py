"""A seeded, sans-IO model of a bad IP path for a datagram stream (UDPTL, T.38 clause 9).

``Impairment.transmit(datagram, now)`` says when, and how many times, a datagram sent at
``now`` arrives: a list of ``(delivery time, bytes)``, empty when it is lost.  Everything
random comes from the one ``random.Random`` passed in, so a run replays exactly from its
seed.  The same model drives the simulated-time benches and tests and the real UDP proxy
(bench/impairment_proxy.py).

* ``loss``: each datagram is lost with this probability, independently (Bernoulli).
* ``burst_loss``: a Gilbert-Elliott two-state channel, either ``(p_good_to_bad,
  p_bad_to_good)`` (every datagram lost in the bad state) or a ``GilbertElliott`` with a
  loss probability for each state.  Before each datagram the channel changes state with
  those probabilities; the mean stay in the bad state is ``1 / p_bad_to_good`` datagrams.
  The independent ``loss`` applies on top, in either state.
* ``duplicate``: a datagram that gets through arrives a second time with this
  probability, up to ``reorder_delay`` later.
* ``reorder``: a datagram is held back with this probability: by ``reorder_positions``
  later datagrams when that is set (it then arrives just after the k-th datagram sent
  after it, or at ``flush()``), else by an extra delay uniform in (0, ``reorder_delay``].
* ``delay`` + jitter: every datagram's one-way delay.  ``jitter`` is the upper bound of a
  uniform extra delay, or the mean of an exponential one (``jitter_distribution``).
  Jitter larger than the sending interval reorders datagrams too, as on a real path.

The random draws for a datagram happen in a fixed order (state change, state loss, loss,
jitter, reorder, reorder delay, duplicate, duplicate delay), and a feature that is off
draws nothing, so adding a feature to a model changes only what comes after it.  For the
features of the test model it replaced (tests/support/impairment.py, removed) it draws as
that model did, so the seeded tests keep their outcomes; tests/udptl/test_impairment.py
pins one seed's draws.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["GilbertElliott", "Impairment", "ImpairmentCounters", "Arrival"]

#: (delivery time, datagram)
Arrival = tuple[float, bytes]

JitterDistribution = Literal["uniform", "exponential"]

#: A datagram released after the k-th later one arrives this much after it, so that
#: sorting arrivals by time puts it behind (a real path's queues are never simultaneous).
_RELEASE_GAP = 1e-6


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability, not {value!r}")


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """The two-state burst-loss channel (Gilbert 1960, Elliott 1963).

    ``p_good_to_bad`` and ``p_bad_to_good`` are the per-datagram transition
    probabilities; ``loss_in_good`` and ``loss_in_bad`` the loss probability in each state
    (the simple Gilbert model: 0 and 1)."""

    p_good_to_bad: float
    p_bad_to_good: float
    loss_in_good: float = 0.0
    loss_in_bad: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p_good_to_bad", "p_bad_to_good", "loss_in_good", "loss_in_bad"):
            _check_probability(name, getattr(self, name))

    @classmethod
    def from_mean_burst(cls, mean_burst: float, loss_rate: float) -> GilbertElliott:
        """The simple Gilbert channel whose bursts last ``mean_burst`` datagrams on average
        and which loses ``loss_rate`` of all datagrams in the long run."""
        if mean_burst < 1.0:
            raise ValueError(f"mean_burst must be >= 1 datagram, not {mean_burst!r}")
        if not 0.0 <= loss_rate < 1.0:
            raise ValueError(f"loss_rate must be in [0, 1), not {loss_rate!r}")
        p_bad_to_good = 1.0 / mean_burst
        # Stationary share of the bad state: p / (p + r) = loss_rate.
        p_good_to_bad = min(1.0, loss_rate * p_bad_to_good / (1.0 - loss_rate))
        return cls(p_good_to_bad, p_bad_to_good)

    @property
    def mean_burst(self) -> float:
        """Mean stay in the bad state, in datagrams."""
        return 1.0 / self.p_bad_to_good if self.p_bad_to_good else float("inf")

    @property
    def loss_rate(self) -> float:
        """Long-run share of datagrams this channel alone loses."""
        total = self.p_good_to_bad + self.p_bad_to_good
        bad_share = self.p_good_to_bad / total if total else 0.0
        return bad_share * self.loss_in_bad + (1.0 - bad_share) * self.loss_in_good


@dataclass(slots=True)
class ImpairmentCounters:
    sent: int = 0
    lost: int = 0
    lost_in_bursts: int = 0  # lost while the Gilbert-Elliott channel was in its bad state
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0  # arrivals, duplicates included


@dataclass(slots=True)
class _Held:
    datagram: bytes
    remaining: int  # later datagrams still to be sent before this one is released
    earliest: float  # when it would have arrived had it not been held


class Impairment:
    """One direction of a lossy path; see the module docstring."""

    def __init__(
        self,
        rng: random.Random,
        loss: float = 0.0,
        burst_loss: tuple[float, float] | GilbertElliott | None = None,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.02,
        jitter: float = 0.0,
        *,
        reorder_delay: float = 0.05,
        reorder_positions: int = 0,
        jitter_distribution: JitterDistribution = "uniform",
    ) -> None:
        for name, value in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            _check_probability(name, value)
        if isinstance(burst_loss, tuple):
            if len(burst_loss) != 2:
                raise ValueError(f"burst_loss must be two probabilities, not {burst_loss!r}")
            burst_loss = GilbertElliott(*burst_loss)
        if delay < 0 or jitter < 0 or reorder_delay < 0:
            raise ValueError("delay, jitter and reorder_delay must be >= 0")
        if reorder_positions < 0:
            raise ValueError(f"reorder_positions must be >= 0, not {reorder_positions!r}")
        if jitter_distribution not in ("uniform", "exponential"):
            raise ValueError(f"jitter_distribution must be uniform or exponential, not {jitter_distribution!r}")
        self.rng = rng
        self.loss = loss
        self.burst_loss: GilbertElliott | None = burst_loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self.jitter = jitter
        self.reorder_delay = reorder_delay
        self.reorder_positions = reorder_positions
        self.jitter_distribution: JitterDistribution = jitter_distribution
        self.in_burst = False
        self.counters = ImpairmentCounters()
        self._held: list[_Held] = []

    def describe(self) -> str:
        """A short label for tables and logs."""
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss:.0%}")
        if self.burst_loss is not None:
            ge = self.burst_loss
            parts.append(f"GE burst {ge.mean_burst:g} ({ge.loss_rate:.0%})")
        if self.duplicate:
            parts.append(f"dup {self.duplicate:.0%}")
        if self.reorder:
            by = f"{self.reorder_positions} pos" if self.reorder_positions else f"{self.reorder_delay * 1000:g} ms"
            parts.append(f"reorder {self.reorder:.0%} by {by}")
        if self.jitter:
            parts.append(f"jitter {self.jitter_distribution} {self.jitter * 1000:g} ms")
        return ", ".join(parts) or "clean"

    def _lost(self) -> bool:
        rng = self.rng
        burst = self.burst_loss
        if burst is not None:
            if self.in_burst:
                self.in_burst = rng.random() >= burst.p_bad_to_good
            else:
                self.in_burst = rng.random() < burst.p_good_to_bad
            # A certain or impossible loss draws nothing (the simple Gilbert channel).
            state_loss = burst.loss_in_bad if self.in_burst else burst.loss_in_good
            if state_loss >= 1.0 or (state_loss > 0.0 and rng.random() < state_loss):
                self.counters.lost_in_bursts += self.in_burst
                return True
        return bool(self.loss) and rng.random() < self.loss

    def _arrival_time(self, now: float) -> float:
        if not self.jitter:
            return now + self.delay
        if self.jitter_distribution == "exponential":
            return now + self.delay + self.rng.expovariate(1.0 / self.jitter)
        return now + self.delay + self.rng.uniform(0.0, self.jitter)

    def transmit(self, datagram: bytes, now: float) -> list[Arrival]:
        """Send ``datagram`` at ``now``; return the arrivals this causes as (time, bytes):
        its own (maybe none, maybe two) and those of held-back datagrams it releases."""
        rng = self.rng
        counters = self.counters
        counters.sent += 1
        arrivals: list[Arrival] = []
        lost = self._lost()
        when = now + self.delay
        if lost:
            counters.lost += 1
        else:
            when = self._arrival_time(now)
            if self.reorder and rng.random() < self.reorder:
                counters.reordered += 1
                if self.reorder_positions:
                    self._held.append(_Held(datagram, self.reorder_positions + 1, when))
                else:
                    when += rng.uniform(0.0, self.reorder_delay) or self.reorder_delay
                    arrivals.append((when, datagram))
            else:
                arrivals.append((when, datagram))
            if self.duplicate and rng.random() < self.duplicate:
                counters.duplicated += 1
                arrivals.append((when + (rng.uniform(0.0, self.reorder_delay) or self.reorder_delay), datagram))
        arrivals.extend(self._release(when))
        counters.delivered += len(arrivals)
        return arrivals

    def _release(self, after: float) -> list[Arrival]:
        """Count one more datagram sent past each held one; release those whose turn came,
        just after ``after`` (the arrival of the datagram that overtook them last)."""
        released: list[Arrival] = []
        kept: list[_Held] = []
        for held in self._held:
            held.remaining -= 1
            if held.remaining <= 0:
                released.append((max(after, held.earliest) + _RELEASE_GAP * (len(released) + 1), held.datagram))
            else:
                kept.append(held)
        self._held = kept
        return released

    def flush(self, now: float) -> list[Arrival]:
        """The stream ended: deliver every datagram still held back, at ``now`` at the
        earliest (a real path does not keep a datagram for ever)."""
        released = [(max(now, held.earliest) + _RELEASE_GAP * (i + 1), held.datagram)
                    for i, held in enumerate(self._held)]
        self._held = []
        self.counters.delivered += len(released)
        return released

    @property
    def held(self) -> int:
        """Datagrams held back for reordering, not yet delivered."""
        return len(self._held)
