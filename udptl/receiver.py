"""The UDPTL receiver (T.38 clause 9), sans-IO.

How it works
------------
Datagrams go in with the time they arrived; IFPs come out once each, in sequence order,
as ``IfpReceived`` events, and sequence numbers that could not be recovered come out as
``IfpLost``.  Nothing reads a clock: ``next_deadline()`` says when a held packet should
be given up on and ``handle_timer(now)`` does it.

Sequence numbers are 16 bits and wrap from 65535 to 0.  Internally every packet gets an
*extended* number: the 16-bit value placed within +-32768 of the next number we expect,
so wrap-around needs no special case.

For each decoded datagram with extended number ``s`` and ``next`` the number we deliver
next:

* ``s == next`` and nothing is waiting: its IFP is delivered at once (the hot path).
* ``s < next``: a duplicate (its primary was already received) or late (its slot was
  filled by recovery or declared lost); dropped and counted.
* ``next < s``: the primary is held, then the gap below it is filled from the packet's
  redundancy: ``secondary-ifp-packets`` are the previous IFPs, newest first (what
  Asterisk, SpanDSP and FreeSWITCH send), so secondary ``i`` is IFP ``s - 1 - i``.
  Zero-length secondaries are no IFP at all; like Asterisk since AST-2016-003 we count
  them, drop them and close up the list.  Secondaries that contradict a primary we hold
  or have just delivered (a sender that skips a number, e.g. wraps from 65535 to 1) are
  not used at all: delivering one IFP in another's slot is worse than reporting a loss.  With ``fec-info`` each parity entry ``m`` of
  a packet carrying ``n`` entries over ``fec-npackets`` = ``span`` IFPs covers
  ``s + m - n*span, s + m - n*(span-1), ..., s + m - n`` (the interleaved scheme of
  SpanDSP's and Asterisk's udptl.c): when exactly one of those is missing it is the XOR
  of the parity and the others.  Recovery repeats until nothing more can be rebuilt.
* Whatever is now contiguous from ``next`` is delivered.  Packets held behind a gap
  wait at most the *hold* (below, from the arrival of the first packet after the gap)
  and never more than ``reorder_window`` numbers ahead; then the gap is reported lost
  and delivery goes on.
* A packet more than ``resync_threshold`` numbers away from ``next`` (either way) is
  held on probation, as RFC 3550 A.1 does for RTP: a stray packet (RTP on the UDPTL
  port, a very old duplicate) is dropped, but when the next datagram continues from it
  the peer has restarted its numbering, and we resynchronise to it.

How long a gap is held
----------------------
The numbers that can still repair a lost IFP ``p`` arrive after it: with redundancy of
depth ``D`` the packet ``p + D`` is the last to carry it; with parity FEC of ``entries``
``E`` over ``span`` ``S`` the last parity covering ``p`` rides on ``p + E*S`` (entry 0
of that packet).  That *horizon* ``H`` is learnt from the datagrams themselves: the
number of non-empty secondaries, or ``fec-npackets`` times the number of entries, the
largest seen among the packets that arrived since the gap opened (a sender that trims
its redundancy to fit ``T38FaxMaxDatagram`` sends fewer secondaries with big IFPs).
The time per sequence number is measured too: the arrival times of the last
``_RATE_WINDOW`` numbers received before the gap, over how many numbers they span, each
step counted at most ``_MAX_STEP`` s so that a pause between T.30 phases does not
count.  The hold is ``(H + 1)`` such intervals (the last lost IFP's repair comes at most
``H - 1`` intervals after the first packet past the gap; two more allow for jitter),
never less than ``reorder_timeout`` (0.2 s, which covers reordering on its own) and
never more than ``max_hold`` (2 s).  SpanDSP paces image data and V.21 octets at 20-40 ms
per IFP, so FEC 3x3 needs ~0.3 s: a fixed 0.2 s gave up on bursts its parity rebuilt a
moment later.  The cap: the hold delays only what arrived after a gap, and only until
the repair comes or the hold ends; T.30 command/response timers are seconds (T4 is
3 s +-15 %, T.30 5.3.6.2.4), so a frame held past a gap must still be answered well
inside them.

Hostile input cannot make it raise or grow: undecodable datagrams and IFPs are
counters, and every table is bounded by the window sizes.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

from udptl.codec import FecInfo, _decode_ifp, _decode_udptl_parts, _parse_ifp
from udptl.errors import LocalProtocolError, MalformedPacket
from udptl.ifp import IfpPacket

__all__ = ["IfpLost", "IfpReceived", "ReceiverStats", "UdptlReceiver"]

_PRIMARY, _REDUNDANCY, _FEC = 0, 1, 2
_RING = 4096  # how far back duplicates are told apart from late packets
_RECENT = 128  # delivered IFPs kept: to check secondaries against, and for FEC parity
_RATE_WINDOW = 16  # sequence numbers whose arrival times give the time per number
_MAX_STEP = 0.25  # s: a longer silence between two numbers counts as this much


@dataclass(frozen=True, slots=True)
class IfpReceived:
    """An IFP, delivered once and in order.  ``packet`` is None if the IFP is malformed."""

    seq: int
    raw: bytes
    packet: IfpPacket | None


# IfpReceived built through its slots, as ``udptl.codec._one_item_packet`` builds packets:
# the frozen dataclass's generated __init__ (object.__setattr__ per field) cost ~0.4 us of
# every datagram's ~7 us on the receive path (issue 14).
_new = object.__new__
_set_seq: Callable[[IfpReceived, int], None] = IfpReceived.__dict__["seq"].__set__
_set_raw: Callable[[IfpReceived, bytes], None] = IfpReceived.__dict__["raw"].__set__
_set_packet: Callable[[IfpReceived, IfpPacket | None], None] = IfpReceived.__dict__["packet"].__set__


def _received(seq: int, raw: bytes, packet: IfpPacket | None) -> IfpReceived:
    """``IfpReceived(seq, raw, packet)``: the same value (equality and hashing are the
    dataclass's own), at less cost."""
    item = _new(IfpReceived)
    _set_seq(item, seq)
    _set_raw(item, raw)
    _set_packet(item, packet)
    return item


@dataclass(frozen=True, slots=True)
class IfpLost:
    """IFPs that never arrived and could not be recovered, in order."""

    seqs: tuple[int, ...]


@dataclass(slots=True)
class ReceiverStats:
    """Counters.  ``received`` counts datagrams that decoded; IFP counts are per IFP."""

    received: int = 0
    delivered: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    recovered_redundancy: int = 0
    recovered_fec: int = 0
    malformed: int = 0
    malformed_ifp: int = 0
    empty_secondaries: int = 0
    inconsistent_redundancy: int = 0
    stray: int = 0
    resyncs: int = 0


class UdptlReceiver:
    """Turns UDPTL datagrams into in-order IFPs; see the module docstring.

    ``version`` is the negotiated T.38 version, used to decode IFPs.  ``reorder_window``
    bounds how many sequence numbers ahead packets are held; a gap holds them for what
    the stream's error correction can still repair (see "How long a gap is held"), at
    least ``reorder_timeout`` and at most ``max_hold`` seconds (``reorder_timeout`` wins
    if it is the larger); a jump of ``resync_threshold`` or more is a restart or a
    stray; FEC entries covering more than ``max_fec_coverage`` IFPs are ignored.
    """

    def __init__(
        self,
        version: int,
        *,
        reorder_window: int = 64,
        reorder_timeout: float = 0.2,
        max_hold: float = 2.0,
        resync_threshold: int = 1024,
        max_fec_coverage: int = 128,
    ) -> None:
        if version not in (0, 1, 2, 3):
            raise LocalProtocolError(f"T.38 version {version!r} is not one of (0, 1, 2, 3)")
        if not 1 <= reorder_window < resync_threshold <= _RING // 2:
            raise LocalProtocolError("need 1 <= reorder_window < resync_threshold <= 2048")
        if not 1 <= max_fec_coverage <= _RECENT:
            raise LocalProtocolError(f"need 1 <= max_fec_coverage <= {_RECENT}")
        if not 0 < reorder_timeout or not 0 < max_hold:
            raise LocalProtocolError("need reorder_timeout > 0 and max_hold > 0")
        self.version = version
        self.reorder_window = reorder_window
        self.reorder_timeout = reorder_timeout
        self.max_hold = max(max_hold, reorder_timeout)
        self.resync_threshold = resync_threshold
        self.max_fec_coverage = max_fec_coverage
        self.stats = ReceiverStats()
        self._next: int | None = None
        # extended seq -> (ifp, arrival time, how we got it); only numbers >= _next
        self._held: dict[int, tuple[bytes, float, int]] = {}
        # Rings of extended numbers whose primary arrived, and when (valid where _primaries
        # matches).  Arrays, not lists: the cyclic garbage collector does not walk them.  As
        # lists they were 8,192 references a call that every full collection followed - 2.5
        # of the 2.75 million with 300 calls up (t38gw issue 14); 300 such receivers cost a
        # full collection 19 ms with their slots filled, as arrays 1 ms.
        self._primaries = array("q", [-1]) * _RING
        self._arrival = array("d", [0.0]) * _RING
        # The current gap: how long it holds packets (s; None: not worked out yet, as most
        # gaps close with the packet that opens them), how many numbers after a lost IFP
        # can still repair it, the seconds per number before it, and (number, time) of
        # the packet that opened it until that is measured.
        self._hold: float | None = reorder_timeout
        self._horizon = 0
        self._interval: float | None = None
        self._gap_opened: tuple[int, float] | None = None
        self._fec: dict[int, tuple[int, tuple[bytes, ...]]] = {}
        self._probation: tuple[int, bytes, tuple[bytes, ...] | None, FecInfo | None, float] | None = None
        self._cache: dict[bytes, IfpPacket | None] = {}
        self._recent_seq: list[int | None] = [None] * _RECENT  # ring of delivered numbers
        self._recent_ifp = [b""] * _RECENT  # their IFPs (valid where _recent_seq matches)

    # ------------------------------------------------------------------ public API

    def datagram_received(self, data: bytes, now: float) -> list[IfpReceived | IfpLost]:
        """Feed one datagram; return the events it makes possible.  Never raises for bad input."""
        # Hot path: the next datagram in order, nothing waiting, one-octet lengths.  Its
        # secondaries are only walked to check the framing, not copied.
        expected = self._next
        size = len(data)
        if expected is not None and size > 4 and not self._held and self._probation is None:
            length = data[2]
            position = 3 + length
            if (
                length < 0x80
                and position + 1 < size
                and (data[0] << 8 | data[1]) == expected & 0xFFFF
                and not data[position] & 0x80
            ):
                count = data[position + 1]
                cursor = position + 2
                empties = 0
                if count < 0x80:
                    # An index past the end (a truncated datagram) leaves it to _datagram.  The
                    # delivery sits inside the try because that measured fastest; _deliver only
                    # indexes its own rings, so the IndexError can only come from ``data``.
                    try:
                        for _ in range(count):
                            length = data[cursor]
                            if length >= 0x80:
                                break
                            if not length:
                                empties += 1
                            cursor += 1 + length
                        else:
                            if cursor == size:
                                stats = self.stats
                                stats.received += 1
                                if empties:
                                    stats.empty_secondaries += empties
                                slot = expected % _RING
                                self._primaries[slot] = expected
                                self._arrival[slot] = now
                                return [self._deliver(expected, data[3:position], _PRIMARY)]
                    except IndexError:
                        pass
        return self._datagram(data, now)

    def _datagram(self, data: bytes, now: float) -> list[IfpReceived | IfpLost]:
        try:
            seq16, primary, secondaries, fec = _decode_udptl_parts(data)
        except MalformedPacket:
            self.stats.malformed += 1
            return []
        stats = self.stats
        stats.received += 1
        if secondaries and b"" in secondaries:
            kept = tuple(ifp for ifp in secondaries if ifp)
            stats.empty_secondaries += len(secondaries) - len(kept)
            secondaries = kept
        expected = self._next
        if expected is None:
            # First packet: its secondaries are the IFPs sent before it (lost to us).
            lookback = min(len(secondaries), self.reorder_window - 1) if secondaries else 0
            expected = self._next = seq16 - lookback
        diff = ((seq16 - expected + 0x8000) & 0xFFFF) - 0x8000
        if diff >= self.resync_threshold or diff <= -self.resync_threshold:
            return self._far_packet(seq16, primary, secondaries, fec, now)
        if self._probation is not None:
            self._probation = None
            stats.stray += 1
        ext = expected + diff
        slot = ext % _RING
        if diff < 0:
            if self._primaries[slot] == ext:
                stats.duplicates += 1
            else:
                stats.late += 1
            return []
        if self._primaries[slot] == ext:
            stats.duplicates += 1
            return []
        self._primaries[slot] = ext
        self._arrival[slot] = now
        if diff == 0 and not self._held:
            return [self._deliver(ext, primary, _PRIMARY)]
        return self._accept_out_of_order(ext, primary, secondaries, fec, now)

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` should next run, or None when nothing is held."""
        if not self._held:
            return None
        return min(entry[1] for entry in self._held.values()) + self.hold

    @property
    def hold(self) -> float:
        """How long (s) the current (or last) gap holds the packets behind it."""
        hold = self._hold
        if hold is None:
            if self._gap_opened is not None:
                self._interval = self._time_per_number(*self._gap_opened)
                self._gap_opened = None
            hold = self._hold = self._hold_for(self._horizon)
        return hold

    def handle_timer(self, now: float) -> list[IfpReceived | IfpLost]:
        """Give up on gaps whose held packets have waited the hold."""
        events: list[IfpReceived | IfpLost] = []
        while self._held:
            deadline = self.next_deadline()
            if deadline is None or now < deadline:
                break
            self._release_until(min(self._held), events)
            self._drain(events)
        return events

    # ------------------------------------------------------------------ internals

    def _deliver(self, ext: int, raw: bytes, source: int) -> IfpReceived:
        stats = self.stats
        if len(raw) > 8:
            try:
                packet = _decode_ifp(raw, self.version)
            except MalformedPacket:
                packet = None
        else:
            # Short IFPs (indicators, end-of-data markers) repeat all call long.
            cache = self._cache
            if raw in cache:
                packet = cache[raw]
            else:
                try:
                    packet = _decode_ifp(raw, self.version)
                except MalformedPacket:
                    packet = None
                if len(cache) >= 256:
                    cache.clear()
                cache[raw] = packet
        if packet is None:
            stats.malformed_ifp += 1
        if source:
            if source == _REDUNDANCY:
                stats.recovered_redundancy += 1
            else:
                stats.recovered_fec += 1
        stats.delivered += 1
        self._next = ext + 1
        slot = ext % _RECENT
        self._recent_seq[slot] = ext
        self._recent_ifp[slot] = raw
        return _received(ext & 0xFFFF, raw, packet)

    def _accept_out_of_order(
        self, ext: int, primary: bytes, secondaries: tuple[bytes, ...] | None, fec: FecInfo | None, now: float
    ) -> list[IfpReceived | IfpLost]:
        held = self._held
        horizon = len(secondaries) if secondaries else 0
        if fec is not None and fec.entries and 0 < fec.npackets:
            horizon = max(horizon, min(fec.npackets * len(fec.entries), self.max_fec_coverage))
        if not held:  # a gap opens: the stream before it is measured if the hold is asked for
            self._horizon = horizon
            self._gap_opened = (ext, now)
            self._hold = None
        elif horizon > self._horizon:
            self._horizon = horizon
            self._hold = None
        entry = held.get(ext)
        if entry is None:
            held[ext] = (primary, now, _PRIMARY)
        elif entry[2] != _PRIMARY:
            held[ext] = (primary, entry[1], _PRIMARY)
        expected = self._next
        assert expected is not None  # set by the first datagram, before any gap
        if secondaries:
            if self._redundancy_consistent(ext, secondaries):
                for back, ifp in enumerate(secondaries, 1):
                    missing = ext - back
                    if missing < expected:
                        break
                    if missing not in held:
                        held[missing] = (ifp, now, _REDUNDANCY)
            else:
                self.stats.inconsistent_redundancy += 1
        if fec is not None:
            span, entries = fec.npackets, fec.entries
            if entries and 0 < span and span * len(entries) <= self.max_fec_coverage:
                self._fec[ext] = (span, entries)
            if self._fec:
                self._recover_from_fec(now)
        events: list[IfpReceived | IfpLost] = []
        if ext - expected >= self.reorder_window:
            self._release_until(ext - self.reorder_window + 1, events)
        self._drain(events)
        return events

    def _time_per_number(self, ext: int, now: float) -> float | None:
        """Seconds per sequence number, from the arrival times of the last
        ``_RATE_WINDOW`` primaries received before ``ext`` (which arrived at ``now``),
        looking back at most ``_RECENT`` numbers; None if there are none."""
        primaries, arrival = self._primaries, self._arrival
        later_seq, later_time = ext, now
        elapsed = 0.0
        numbers = found = 0
        for seq in range(ext - 1, ext - 1 - _RECENT, -1):
            slot = seq % _RING
            if primaries[slot] != seq:
                continue
            found += 1
            if found > _RATE_WINDOW:
                break
            step = later_time - arrival[slot]
            if step >= 0:  # a reordered arrival says nothing about the rate
                elapsed += min(step, _MAX_STEP * (later_seq - seq))
                numbers += later_seq - seq
            later_seq, later_time = seq, arrival[slot]
        return elapsed / numbers if numbers else None

    def _hold_for(self, horizon: int) -> float:
        interval = self._interval
        if interval is None or not horizon:
            return self.reorder_timeout
        return min(max((horizon + 1) * interval, self.reorder_timeout), self.max_hold)

    def _redundancy_consistent(self, ext: int, secondaries: tuple[bytes, ...]) -> bool:
        """Whether the secondaries agree with every primary we hold or just delivered.

        A sender whose numbering skips (SpanDSP notes stacks that wrap from 65535 to 1)
        or that lists its secondaries in another order would otherwise make us deliver
        one IFP in the slot of another.  When they disagree we use none of them.
        """
        held = self._held
        recent_seq, recent_ifp = self._recent_seq, self._recent_ifp
        for back, ifp in enumerate(secondaries, 1):
            seq = ext - back
            entry = held.get(seq)
            if entry is not None:
                if entry[2] == _PRIMARY and entry[0] != ifp:
                    return False
            elif recent_seq[seq % _RECENT] == seq and recent_ifp[seq % _RECENT] != ifp:
                return False
        return True

    def _drain(self, events: list[IfpReceived | IfpLost]) -> None:
        held = self._held
        ext = self._next
        assert ext is not None  # set by the first datagram, before any gap
        while ext in held:
            raw, _, source = held.pop(ext)
            events.append(self._deliver(ext, raw, source))
            ext += 1
        if self._fec:
            for key in [key for key in self._fec if key <= ext]:
                del self._fec[key]

    def _release_until(self, limit: int, events: list[IfpReceived | IfpLost]) -> None:
        """Deliver or declare lost every number below ``limit``."""
        held = self._held
        lost: list[int] = []
        ext = self._next
        assert ext is not None  # set by the first datagram, before any gap
        while ext < limit:
            entry = held.pop(ext, None)
            if entry is None:
                lost.append(ext & 0xFFFF)
                self._next = ext + 1
            else:
                if lost:
                    events.append(IfpLost(tuple(lost)))
                    self.stats.lost += len(lost)
                    lost = []
                events.append(self._deliver(ext, entry[0], entry[2]))
            ext += 1
        if lost:
            events.append(IfpLost(tuple(lost)))
            self.stats.lost += len(lost)

    def _recover_from_fec(self, now: float) -> None:
        held, expected = self._held, self._next
        assert expected is not None  # set by the first datagram, before any gap
        recent_seq = self._recent_seq
        progress = True
        while progress:
            progress = False
            for carrier, (span, entries) in self._fec.items():
                count = len(entries)
                for m, parity in enumerate(entries):
                    covered = range(carrier + m - count * span, carrier + m, count)
                    missing = None
                    usable = True
                    for seq in covered:
                        if seq >= expected:
                            if seq not in held:
                                if missing is not None:
                                    usable = False
                                    break
                                missing = seq
                        elif recent_seq[seq % _RECENT] != seq:
                            usable = False
                            break
                    if not usable or missing is None:
                        continue
                    rebuilt = self._rebuild(parity, covered, missing)
                    if rebuilt is not None:
                        held[missing] = (rebuilt, now, _FEC)
                        progress = True

    def _rebuild(self, parity: bytes, covered: range, missing: int) -> bytes | None:
        size = len(parity)
        value = int.from_bytes(parity, "big")
        for seq in covered:
            if seq == missing:
                continue
            entry = self._held.get(seq)
            other = entry[0] if entry is not None else self._recent_ifp[seq % _RECENT]
            if len(other) > size:
                return None  # parity shorter than a packet it covers: not ours to trust
            value ^= int.from_bytes(other, "big") << (8 * (size - len(other)))
        rebuilt = value.to_bytes(size, "big")
        # The parity is as long as the longest IFP it covers; shorter ones come back
        # followed by zeros, which the IFP's own encoding tells us to drop.
        for octet_per_item in (False, True):
            try:
                end = _parse_ifp(rebuilt, self.version, octet_per_item)[1]
            except MalformedPacket:
                continue
            if not any(rebuilt[end:]):
                return rebuilt[:end]
        return rebuilt

    def _far_packet(
        self, seq16: int, primary: bytes, secondaries: tuple[bytes, ...] | None, fec: FecInfo | None, now: float
    ) -> list[IfpReceived | IfpLost]:
        probation = self._probation
        if probation is None or seq16 != (probation[0] + 1) & 0xFFFF:
            if probation is not None:
                self.stats.stray += 1
            self._probation = (seq16, primary, secondaries, fec, now)
            return []
        # Two datagrams in a row continue a new numbering: the peer restarted.
        events: list[IfpReceived | IfpLost] = []
        if self._held:
            self._release_until(max(self._held) + 1, events)
        self.stats.resyncs += 1
        self._probation = None
        self._held.clear()
        self._fec.clear()
        self._primaries = array("q", [-1]) * _RING
        self._recent_seq = [None] * _RECENT
        self._next = probation[0]
        first = probation[0]
        self._primaries[first % _RING] = first
        self._arrival[first % _RING] = probation[4]
        events.append(self._deliver(first, probation[1], _PRIMARY))
        events.extend(self._continue(seq16, primary, secondaries, fec, now))
        return events

    def _continue(
        self, seq16: int, primary: bytes, secondaries: tuple[bytes, ...] | None, fec: FecInfo | None, now: float
    ) -> list[IfpReceived | IfpLost]:
        """Process an already-decoded datagram that continues the current numbering."""
        expected = self._next
        assert expected is not None  # the restart just set it
        ext = expected + (((seq16 - expected + 0x8000) & 0xFFFF) - 0x8000)
        self._primaries[ext % _RING] = ext
        self._arrival[ext % _RING] = now
        if ext == expected and not self._held:
            return [self._deliver(ext, primary, _PRIMARY)]
        return self._accept_out_of_order(ext, primary, secondaries, fec, now)
