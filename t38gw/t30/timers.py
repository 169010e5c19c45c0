"""T.30 timers and the durations both engines (calling and called) use.

The engines hold their armed timers as ``{Timer: deadline}`` (see ``Deadlines``):
re-arming replaces the deadline, cancelling drops it, and a timer fires only if its
deadline is still the one that was armed, so a superseded timer is a no-op by
construction (STYLE.md 2).  Which timer does what in which state is each engine's
transition table, not this module.
"""

from __future__ import annotations

import enum

# T.30 5.4.1 / clause 5 timers, seconds.
T0 = 60.0  # calling side: the first wait for the called terminal (SpanDSP's T0; T.30 leaves it to the terminal)
T1 = 35.0  # 35 +/- 5 s: phase B identification
T2 = 6.0  # 6 +/- 1 s: waiting for a command
T4 = 3.0  # 3 s +/- 15 %: waiting for a response (our DIS repeats)
T5 = 60.0  # 60 +/- 5 s: ECM receiver-not-ready
#: No image data for this long ends a page in progress (SpanDSP MID_RX_TIMEOUT).
CARRIER_TIMEOUT = 15.0
#: localTCF: how long to wait for a training burst after DCS before answering CFR.
LOCAL_TCF_WAIT = 1.0
#: TCF data that stops this long without its sig-end has ended (its end packets were lost).
TCF_END_SILENCE = 0.5
#: Transferred TCF: no training carrier (nor TCF data) this long after a DCS means the TCF
#: is missing: answer FTT so the sender retrains (TSB-85 MRGN13/MRGN15).  TCF starts 75 ms
#: after the DCS (T.30 5.3.2.4); if its training indicator is lost, its data comes only
#: after the training (V.17 long train 1.4 s): 3 s covers both plus network jitter.
TCF_MISSING_WAIT = 3.0
#: After a garbled command while we answer, DIS is repeated this long after the V.21
#: carrier ended, or at once after the fast carrier (a TCF) that followed it.
GARBLED_DIS_WAIT = 0.5
#: TCF (T.30 5.3.6.2.3 / 5.4.2.1) is 1.5 s of zeros at the DCS rate (what a sender
#: sends); a receiver wants an unbroken run of at least 1 s of it, as SpanDSP judges it.
TCF_DURATION = 1.5
TCF_MIN_ZERO_RUN = 1.0
#: T.30 5.3.2: CNG is 0.5 s of 1100 Hz, off 3 s, repeated while the calling terminal waits.
CNG_ON = 0.5
CNG_PERIOD = 3.5
#: Calling side: a response is acted on when its V.21 carrier ends (we do not talk over the
#: far end); if that end is lost, this long after its final frame.
RESPONSE_END_WAIT = 0.5


class Timer(enum.Enum):
    """The timers of a T.30 engine (T.30 5.4.1 and the T.38 edge's own watches)."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code

    T1 = "T1"  # phase B: no valid answer to our DIS (called) / DCS (calling)
    T2 = "T2"  # waiting for a command
    T4 = "T4"  # waiting for a response: repeat our command
    T5 = "T5"  # ECM receiver not ready
    CARRIER = "carrier"  # image data stalled mid-page
    LOCAL_TCF = "local_tcf"  # localTCF: no training burst came after DCS
    TCF_END = "tcf_end"  # TCF data stopped without its end
    TCF_MISSING = "tcf_missing"  # DCS with no TCF after it
    CNG = "cng"  # calling side: the next CNG tone (T.30 5.3.2)
    RR = "rr"  # calling side: poll a receiver not ready with RR again (T.30 A.4.4)
    RESPONSE_END = "response_end"  # calling side: a response whose carrier end was lost
    PAGE_SENT = "page_sent"  # calling side: the image data is out, the post-page command follows


class Deadlines(dict[Timer, float]):
    """Armed timers, ``{Timer: deadline}``: at most one deadline per timer.  A dict, so the
    per-packet re-arming of the carrier watch costs a dict store."""

    __slots__ = ()

    def arm(self, timer: Timer, at: float) -> None:
        self[timer] = at

    def cancel(self, timer: Timer, other: Timer | None = None) -> None:
        self.pop(timer, None)
        if other is not None:
            self.pop(other, None)

    def extend(self, timer: Timer, at: float) -> None:
        """Move an armed timer to ``at`` if that is later (T.30 5.4.1: flags reset T2/T4)."""
        current = self.get(timer)
        if current is not None and at > current:
            self[timer] = at

    def next(self) -> float | None:
        """The earliest deadline, None when nothing is armed."""
        return min(self.values()) if self else None

    def in_order(self) -> list[tuple[Timer, float]]:
        """The armed timers in deadline order (fire those still armed and due, see ``fire``)."""
        return sorted(self.items(), key=lambda item: item[1])

    def fire(self, timer: Timer, deadline: float, now: float) -> bool:
        """Disarm ``timer`` and say True if it is still armed at ``deadline`` and due by ``now``."""
        if deadline <= now and self.get(timer) == deadline:
            del self[timer]
            return True
        return False
