"""Which source a call's UDPTL media is accepted from (sans-IO).

How it works
------------
UDP has no handshake: any host that can reach the call's port can send valid UDPTL to
it.  Whoever the endpoint accepts media from feeds the T.30 engine (pages in the
record), and, because peers behind NAT are reached at the address they send from
(symmetric RTP, RFC 4961), is also where our side of the fax goes.  ``SourceLatch``
decides, datagram by datagram, whether a source is the peer.  It takes the source
address and the datagram's 16-bit UDPTL sequence number (T.38 clause 9.1) and returns a
verdict; it never reads a clock or a socket.

Two policies, after Asterisk's ``strictrtp``/``probation`` (res_rtp_asterisk, rtp.conf):

``strict`` (the default)
    Only ``expected_host`` is the peer: the address of the SDP ``c=`` line, or the
    SIP source host when the SDP names a private address the gateway cannot reach.
    The *port* is learnt from the first datagram from that host that decodes as
    UDPTL, not taken from the SDP ``m=`` line: many T.38 gateways send from a port
    other than the one they advertise, and a NAT in front of the peer rewrites it;
    the host is what signalling vouches for (this is symmetric-RTP practice restricted
    to the signalled host).  Later the port may move to another port *of the same
    host* by the ``learn`` rule below (a NAT rebinding), never after ``freeze()``.
    The latch never moves to another host.

``learn`` (NAT latching, opt-in per listener/trunk)
    The first datagram from ``expected_host`` latches at once, as in ``strict``.  Any
    other source must first send ``probation`` (4) consecutive datagrams that continue
    the stream: the first of them numbered within ``window`` after the highest number
    accepted so far (so replays of old datagrams never count), each next one exactly
    one more (modulo 2**16, so the wrap from 65535 to 0 is in sequence).  A datagram
    that breaks the run ends it.  After ``freeze()`` (the session calls it when the
    first page is confirmed) the latch never moves again.

Why 4: it is Asterisk's ``probation`` default for the same decision, twice RFC 3550
A.1's ``MIN_SEQUENTIAL`` for a source restart; at the 20-40 ms a T.38 sender spends
per IFP it costs at most ~0.16 s of media, and that media is not lost: the datagrams
of a successful run are handed back for delivery when the latch moves.  A blind
attacker must first land within 64 of a stream position it cannot see (1 in 1,024),
while the stream moves on; ``learn`` is still no defence against an attacker who sees
the traffic, which is why it is opt-in and frozen once a page is in.

What is left to an attacker in ``strict``: forging the peer host's own address
(spoofed source) before the peer's first datagram, which at worst aims our datagrams
at another port of that same host; nothing reaches or comes from any other host.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Any

from udptl.errors import LocalProtocolError

__all__ = ["LATCHING_MODES", "LatchVerdict", "SourceLatch", "Verdict", "canonical_host"]

LATCHING_MODES = ("strict", "learn")
PROBATION = 4
WINDOW = 64


def canonical_host(host: str) -> str:
    """``host`` as one spelling: an IP literal in its compressed form (an IPv4-mapped IPv6
    address as the IPv4 address, a zone dropped); anything else lower-cased."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class Verdict(enum.Enum):
    ACCEPTED = "accepted"  # from the latched source: deliver it
    LATCHED = "latched"  # the latch was set or moved with this datagram: deliver ``backlog`` then it
    HELD = "held"  # a candidate source on probation: not delivered (yet)
    FOREIGN = "foreign"  # not the peer: drop it


@dataclass(frozen=True, slots=True)
class LatchVerdict:
    """What to do with one datagram.  ``backlog`` (only with ``LATCHED``) holds the items
    of the earlier datagrams of the successful run, oldest first, to deliver before it."""

    verdict: Verdict
    backlog: tuple[Any, ...] = ()


_ACCEPTED = LatchVerdict(Verdict.ACCEPTED)
_HELD = LatchVerdict(Verdict.HELD)
_FOREIGN = LatchVerdict(Verdict.FOREIGN)


class SourceLatch:
    """The media source policy of one call; see the module docstring.

    ``mode`` is ``"strict"`` or ``"learn"``; ``expected_host`` the host signalling vouches
    for.  Raises ``LocalProtocolError`` for another mode or ``probation < 1``.
    """

    def __init__(self, mode: str, expected_host: str, *, probation: int = PROBATION, window: int = WINDOW) -> None:
        if mode not in LATCHING_MODES:
            raise LocalProtocolError(f"media latching {mode!r} is not one of {LATCHING_MODES}")
        if probation < 1 or not 1 <= window < 0x8000:
            raise LocalProtocolError("need probation >= 1 and 1 <= window < 32768")
        self.mode = mode
        self.expected_host = expected_host
        self._expected = canonical_host(expected_host)
        self.probation = probation
        self.window = window
        self.latched: tuple[str, int] | None = None
        self.frozen = False
        self.moves = 0  # times the latch moved after it was first set
        self._highest: int | None = None  # highest sequence number accepted (16 bits)
        # the run of the candidate on probation: (source, last seq, items held)
        self._run: tuple[tuple[str, int], int, list[Any]] | None = None

    def freeze(self) -> None:
        """Never move the latch again (the first page is confirmed)."""
        self.frozen = True
        self._run = None

    def datagram(self, source: tuple[str, int], seq: int, item: Any = None) -> LatchVerdict:
        """Judge one datagram that decodes as UDPTL: its ``source``, its sequence number
        ``seq`` (0-65535) and an opaque ``item`` handed back in a later ``backlog`` if the
        datagram is held on probation and its run succeeds."""
        if source == self.latched:
            self.accepted(seq)
            return _ACCEPTED
        same_host = canonical_host(source[0]) == self._expected
        if self.latched is None and same_host:
            return self._latch(source, seq, ())
        if self.frozen or (self.mode == "strict" and not same_host):
            return _FOREIGN
        return self._probation(source, seq, item)

    def accepted(self, seq: int) -> None:
        """Note ``seq`` of a datagram from the latched source that was accepted without
        ``datagram()`` (the endpoint's fast path, every datagram)."""
        highest = self._highest
        if highest is None or 0 < (seq - highest) & 0xFFFF < 0x8000:
            self._highest = seq

    # ------------------------------------------------------------------ internals

    def _continues(self, seq: int) -> bool:
        highest = self._highest
        return highest is None or 0 < (seq - highest) & 0xFFFF <= self.window

    def _probation(self, source: tuple[str, int], seq: int, item: Any) -> LatchVerdict:
        run = self._run
        if run is not None and run[0] == source and seq == (run[1] + 1) & 0xFFFF:
            held = run[2]
        elif self._continues(seq):
            held = []  # a new run starts here (replacing any other candidate's)
        else:
            if run is not None and run[0] == source:
                self._run = None  # a replay or a jump breaks the run
            return _FOREIGN
        if len(held) + 1 >= self.probation:
            self._run = None
            return self._latch(source, seq, tuple(held))
        held.append(item)
        self._run = (source, seq, held)
        return _HELD

    def _latch(self, source: tuple[str, int], seq: int, backlog: tuple[Any, ...]) -> LatchVerdict:
        if self.latched is not None:
            self.moves += 1
        self.latched = source
        self._highest = seq
        return LatchVerdict(Verdict.LATCHED, backlog)
