"""The receive jitter buffer of one G.711 RTP stream, sans-IO.

How it works
------------
Packets go in with the time they arrived (``push(packet, now)``); the edge calls
``pop(now)`` once per playout tick (``ptime_ms``, 20 ms) and gets the next frame to
play, or ``None`` when there is none (the caller then asks SpanDSP for a fill-in).
Nothing reads a clock: both calls take ``now``.

Playout follows the RTP timestamp.  ``_play_ts`` is the (extended) timestamp of the
next sample to play and advances one ptime per tick; a packet is *due* when its
timestamp falls within the tick being played.  Playout begins ``depth_ms`` after the
first packet arrived, at that packet's timestamp (or that of an earlier-numbered one
that overtook it), so that up to ``depth_ms`` of reordering and jitter is absorbed.
Sequence numbers (16 bits) and timestamps (32 bits) are *extended* to unbounded
integers by placing each within half the range of the highest seen, so wrap-around
needs no special case.

Each ``pop`` returns exactly one ptime of samples (160 octets for 20 ms).  When packets
carry that much - the negotiated ``a=ptime`` - the next packet is returned as it came
(the hot path).  Senders do not always keep to ``a=ptime``: in the FAX-Call-t38-CA-TDM
capture (shared test data) the far end sends 10 ms packets against ``a=ptime:20``, so
packets of any size are re-framed: a tick takes the samples of the packets due in it,
in sequence order, and the rest of a longer packet waits for the next tick.

At each tick, with ``next`` the lowest sequence number not yet played or given up:

* packets due in this tick are played, in order; numbers below a due packet that never
  came are ``lost``;
* part of the tick missing while another part has audio (a lost 10 ms packet): the
  gap is G.711 silence (``padded``), since a fill-in is asked for whole ticks only;
* nothing due (a packet is late or lost, or the sender paused, RFC 3551 4.1 silence
  suppression): the tick is a fill-in, ``None``;
* nothing is buffered at all: an *underrun*, a fill-in; ``next`` is not yet given up,
  and if it arrives after its slot it is ``late``.

A packet that arrives after its slot was played over is ``late`` (dropped); a packet
whose sequence number was already received is a ``duplicate`` (dropped); a packet that
arrives after a higher-numbered one is ``reordered`` (and played in order if in time).

Comfort noise (RFC 3389, payload type 13) plays as G.711 silence (0xFF PCMU, 0xD5 PCMA;
G.711 Tables 1a/2a, the codes for zero) for every tick from its timestamp until the
next packet's.  RFC 4733 telephone events (the dynamic payload type given) are parsed
and counted, never played; their sequence numbers, like those of any other payload
type, are passed over without counting a loss.

Clock drift
-----------
The far end's sample clock is not ours: 0.5 % fast is 5 ms more audio per second, which
would grow the buffer without bound; 0.5 % slow drains it into underruns.  After each
played tick the buffered amount (the end of the newest packet minus the playout point)
is checked.  Above ``depth + 2 ptime`` for ``drift_window_ms`` running, one tick of
audio (one packet at the negotiated ptime) is dropped (``dropped_for_drift``).  Below ``depth`` for as long - or on a second underrun
within ``drift_window_ms`` while packets keep arriving - playout is held for one tick: a
fill-in without advancing (``inserted_for_drift``).  The low mark is the depth itself,
not ``depth - 2 ptime``: a slow sender then settles with the full depth in hand for
jitter (in simulation 50 ms of jitter on a 60 ms buffer loses nothing), while the
packet granularity (20 ms steps) keeps one insertion from ever tripping the high mark.
A fax modem trained on the stream hears one 20 ms slip; that is what a TDM slip buffer
does too.

Restarts
--------
A packet from a new SSRC means the far end restarted its stream (RFC 3550 8.2 lets it
change SSRC, with new random sequence and timestamp bases): the new stream is spliced
on where the old one ends - its numbers shifted so that its first packet comes next,
playing after what is buffered (or ``depth`` after the playout point if the old stream
had run dry) - so nothing buffered is thrown away and no priming gap is heard
(``ssrc_changes``).  Stragglers from the SSRC just left are dropped as late.  A sender
that jumps its timestamp without real time passing (the next packet in order arrives
timestamped more than ``depth + 2 ptime`` beyond where it should play, or more than a
second before the playout point) is spliced the same way, keeping the SSRC; one whose packets keep arriving late
(``_RESYNC_LATE`` in a row, nothing buffered) primes again from the next packet.  Both
count ``resyncs``.

Hostile input cannot make it raise or grow: the buffer never holds more than
``max_packets`` packets (beyond that the newest is refused and counted as ``overflow``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtp.errors import LocalProtocolError, RtpParseError
from rtp.events import TelephoneEvent, parse_telephone_event
from rtp.packet import RtpPacket

__all__ = ["COMFORT_NOISE", "PCMA", "PCMU", "SILENCE", "JitterBuffer", "JitterStats"]

PCMU, PCMA, COMFORT_NOISE = 0, 8, 13  # RFC 3551 Table 4
SILENCE = {PCMU: 0xFF, PCMA: 0xD5}  # G.711 Table 1a (mu-law) and Table 2a (A-law): the zero codes
_RING = 1024  # how far back duplicates are told apart from late packets
_RESYNC_LATE = 3  # consecutive late packets that mean our playout point is off the stream
_NEVER = -(1 << 62)  # in the duplicate ring: no number (extended numbers may be negative: -1 is 65535 before 0)

_AUDIO, _CN, _SKIP = 0, 1, 2  # what a sequence number carries


@dataclass(slots=True)
class JitterStats:
    """Counters; ``jitter`` is the RFC 3550 A.8 interarrival jitter in ms."""

    received: int = 0  # packets of the stream (any payload type, late ones too) that were not duplicates
    played: int = 0  # ticks returned with audio
    silence: int = 0  # ticks of silence played for comfort noise
    padded: int = 0  # ticks with audio of which a part never came (padded with silence)
    fill_ins: int = 0  # ticks that returned None after playout began
    lost: int = 0  # sequence numbers that had not arrived when playout passed them
    late: int = 0  # packets that arrived after playout passed them (also in ``lost``), dropped
    duplicates: int = 0
    reordered: int = 0
    jitter: float = 0.0
    dropped_for_drift: int = 0
    inserted_for_drift: int = 0
    ssrc_changes: int = 0
    resyncs: int = 0
    comfort_noise: int = 0  # CN packets received
    telephone_events: int = 0  # distinct RFC 4733 events (by start timestamp)
    telephone_event_packets: int = 0
    other_payload_types: int = 0
    malformed: int = 0  # telephone-event payloads too short to parse
    overflow: int = 0


class JitterBuffer:
    """Reorders and paces one G.711 stream; see the module docstring.

    ``payload_type`` is the negotiated audio type (0 PCMU or 8 PCMA);
    ``telephone_event_pt`` the dynamic type of RFC 4733 events, if negotiated.
    Raises ``LocalProtocolError`` for a payload type other than 0 or 8, or sizes that
    do not make sense.
    """

    # The state of the current stream (set by _reset_stream).
    _held: dict[int, tuple[int, int, bytes]]  # extended seq -> (extended ts, kind, payload): audio and CN
    _passover: set[int]  # extended seqs received that carry nothing to play (events, other types)
    _current: bytes | None  # the rest of a packet longer than a tick, starting at _play_ts
    _seen: list[int]  # ring of extended sequence numbers received
    _top_seq: int | None
    _top_ts: int
    _end_ts: int | None  # extended timestamp where the newest audio ends
    _play_ts: int | None  # extended timestamp of the next frame to play
    _next_seq: int
    _start_at: float | None
    _in_silence: bool
    _hold_pending: bool
    _above: int  # ticks in a row above the high water mark
    _below: int  # ticks in a row below the low water mark
    _tick_count: int
    _last_underrun: int
    _last_arrival: float | None
    _late_run: int
    _transit: float | None
    _event_start: int | None
    _seq_shift: int  # added to a packet's sequence number (mod 2**16): splices a new SSRC on
    _ts_shift: int  # added to its timestamp (mod 2**32)

    def __init__(
        self,
        payload_type: int = PCMU,
        *,
        depth_ms: int = 60,
        ptime_ms: int = 20,
        clock_rate: int = 8000,
        telephone_event_pt: int | None = None,
        drift_window_ms: int = 1000,
        max_packets: int = 500,
    ) -> None:
        if payload_type not in SILENCE:
            raise LocalProtocolError(f"payload type {payload_type} is not G.711 (0 PCMU or 8 PCMA)")
        if telephone_event_pt is not None and not 96 <= telephone_event_pt <= 127:
            raise LocalProtocolError(f"telephone-event payload type {telephone_event_pt} is not dynamic (96-127)")
        if not 0 < ptime_ms <= depth_ms or clock_rate <= 0 or clock_rate * ptime_ms % 1000:
            raise LocalProtocolError("need 0 < ptime_ms <= depth_ms and a whole number of samples per ptime")
        if drift_window_ms < ptime_ms or max_packets < 2 * depth_ms // ptime_ms + 4:
            raise LocalProtocolError("drift_window_ms below ptime_ms or max_packets below twice the depth")
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.depth_ms = depth_ms
        self.ptime_ms = ptime_ms
        self.clock_rate = clock_rate
        self.max_packets = max_packets
        self.stats = JitterStats()
        self.last_telephone_event: TelephoneEvent | None = None
        self._tick = clock_rate * ptime_ms // 1000  # samples per playout tick
        self._depth = clock_rate * depth_ms // 1000
        self._high_water = self._depth + 2 * self._tick
        self._low_water = self._depth
        self._drift_ticks = drift_window_ms // ptime_ms
        self._silence = bytes((SILENCE[payload_type],)) * self._tick
        self._depth_s = depth_ms / 1000
        self._alive_s = (depth_ms + 2 * ptime_ms) / 1000
        self._ssrc: int | None = None
        self._previous_ssrc: int | None = None
        self._reset_stream()

    # ------------------------------------------------------------------ public API

    @property
    def buffered_ms(self) -> float:
        """Audio held ahead of the playout point (0 before playout begins), in ms."""
        if self._play_ts is None or self._end_ts is None:
            return 0.0
        return max(0, self._end_ts - self._play_ts) * 1000 / self.clock_rate

    @property
    def packets_held(self) -> int:
        """Audio and CN packets waiting to be played."""
        return len(self._held)

    def push(self, packet: RtpPacket, now: float) -> None:
        """Feed one received packet (already parsed; RTCP already set aside) and when it
        arrived, in seconds.  Never raises for what the peer sent."""
        stats = self.stats
        if packet.ssrc != self._ssrc:
            if packet.ssrc == self._previous_ssrc:
                stats.late += 1  # a straggler of the stream the far end left
                return
            if self._ssrc is not None:
                stats.ssrc_changes += 1
                self._previous_ssrc = self._ssrc
                self._splice(packet)
            self._ssrc = packet.ssrc
        # Extend the sequence number and timestamp around the highest seen.
        top = self._top_seq
        raw_seq = (packet.sequence + self._seq_shift) & 0xFFFF
        raw_ts = (packet.timestamp + self._ts_shift) & 0xFFFFFFFF
        if top is None:
            seq = raw_seq
            ts = raw_ts
            self._top_seq = seq
            self._top_ts = ts
        else:
            seq = top + ((raw_seq - top + 0x8000) & 0xFFFF) - 0x8000
            top_ts = self._top_ts
            ts = top_ts + ((raw_ts - top_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        slot = seq % _RING
        if self._seen[slot] == seq:
            stats.duplicates += 1
            return
        pt = packet.payload_type
        if pt == self.payload_type:
            kind = _AUDIO
        elif pt == COMFORT_NOISE:
            kind = _CN
            stats.comfort_noise += 1
        else:
            kind = _SKIP
            if pt == self.telephone_event_pt:
                self._telephone_event(packet.payload, ts)
            else:
                stats.other_payload_types += 1
        play_ts = self._play_ts
        if play_ts is not None and kind != _SKIP:
            if top is not None and seq == top + 1:
                expected = max(self._end_ts if self._end_ts is not None else ts, play_ts + self._depth)
                if ts - expected > self._high_water or play_ts - ts > self.clock_rate:
                    # The next packet in order, with a timestamp no real time explains: a
                    # sender restarting its clock under the same SSRC (the FAX-Call-t38-CA-TDM
                    # capture goes from 347200 back to 0 after a re-INVITE).  Shift this and
                    # the later ones to where it should be, after what is buffered.
                    stats.resyncs += 1
                    self._ts_shift = (self._ts_shift + expected - ts) & 0xFFFFFFFF
                    self._top_ts = ts = expected
                    self._transit = None  # RFC 3550 A.8 across the discontinuity means nothing
            if ts < play_ts or seq < self._next_seq:
                self._late(seq, now)
                return
        elif play_ts is not None and seq < self._next_seq:
            self._seen[slot] = seq
            stats.received += 1
            return  # an event or stray type for a slot already passed: nothing to play
        self._seen[slot] = seq
        stats.received += 1
        if top is not None and seq < top:
            stats.reordered += 1
        if len(self._held) >= self.max_packets:
            stats.overflow += 1
            return
        if self._top_seq is None or seq > self._top_seq:
            self._top_seq = seq
        if ts > self._top_ts:
            self._top_ts = ts
        if kind == _SKIP:
            passover = self._passover
            if len(passover) >= self.max_packets:
                passover.discard(min(passover))
            passover.add(seq)
        else:
            self._late_run = 0
            self._last_arrival = now
            self._interarrival(ts, now)
            end = ts + (len(packet.payload) if kind == _AUDIO else 0)
            if self._end_ts is None or end > self._end_ts:
                self._end_ts = end
            if self._start_at is None:
                self._start_at = now + self._depth_s
            self._held[seq] = (ts, kind, packet.payload)

    def pop(self, now: float) -> bytes | None:
        """The frame for this playout tick, or None (nothing to play: a fill-in is wanted)."""
        if self._play_ts is None:
            start_at = self._start_at
            if start_at is None or now < start_at:
                return None
            if not self._held:
                return None
            first = min(self._held)
            self._next_seq = first  # events before the first audio are forgotten
            self._passover = {seq for seq in self._passover if seq > first}
            self._play_ts = self._held[first][0]
        frame = self._play(now)
        if frame is None:
            self.stats.fill_ins += 1
        return frame

    # ------------------------------------------------------------------ internals

    def _reset_stream(self) -> None:
        self._held = {}
        self._passover = set()
        self._current = None
        self._seen = [_NEVER] * _RING
        self._top_seq = None
        self._top_ts = 0
        self._end_ts = None
        self._play_ts = None
        self._next_seq = 0
        self._start_at = None
        self._in_silence = False
        self._hold_pending = False
        self._above = self._below = self._tick_count = self._late_run = 0
        self._last_underrun = -(1 << 30)
        self._last_arrival = None
        self._transit = None
        self._event_start = None
        self._seq_shift = self._ts_shift = 0

    def _splice(self, packet: RtpPacket) -> None:
        """Continue with the far end's new stream (new SSRC, new random sequence and
        timestamp bases; RFC 3550 8.2) where the old one ends: its first packet takes the
        next sequence number and plays after what is buffered, or ``depth`` from the
        playout point if the old stream had run dry."""
        top = self._top_seq
        if top is None:
            return
        target = self._end_ts if self._end_ts is not None else self._top_ts
        if self._play_ts is not None:
            target = max(target, self._play_ts + self._depth)
        self._seq_shift = (top + 1 - packet.sequence) & 0xFFFF
        self._ts_shift = (target - packet.timestamp) & 0xFFFFFFFF
        self._transit = None  # RFC 3550 A.8 jitter restarts with the new source's clock
        self._event_start = None
        self._late_run = 0

    def _flush(self) -> None:
        """Start priming again, keeping the SSRC, the duplicate ring and the extension base."""
        kept = self._seen, self._transit, self._top_seq, self._top_ts, self._seq_shift, self._ts_shift
        self._reset_stream()
        self._seen, self._transit, self._top_seq, self._top_ts, self._seq_shift, self._ts_shift = kept

    def _late(self, seq: int, now: float) -> None:
        stats = self.stats
        stats.received += 1
        stats.late += 1
        self._seen[seq % _RING] = seq
        if seq >= self._next_seq:
            # Its slot was played over: so was every number before it.
            self._give_up_to(seq + 1)
        self._late_run += 1
        if self._late_run >= _RESYNC_LATE and not self._held:
            # Packets keep coming, each after its slot: our playout point is ahead of the
            # stream (a pause we played through); prime again from the next packet.
            stats.resyncs += 1
            self._flush()
            self._transit = None

    def _interarrival(self, ts: int, now: float) -> None:
        # RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si) in timestamp units, J += (|D| - J) / 16.
        transit = now * self.clock_rate - ts
        if self._transit is not None:
            jitter = self.stats.jitter * self.clock_rate / 1000
            jitter += (abs(transit - self._transit) - jitter) / 16
            self.stats.jitter = jitter * 1000 / self.clock_rate
        self._transit = transit

    def _telephone_event(self, payload: bytes, ts: int) -> None:
        stats = self.stats
        stats.telephone_event_packets += 1
        try:
            event = parse_telephone_event(payload)
        except RtpParseError:
            stats.malformed += 1
            return
        self.last_telephone_event = event
        if ts != self._event_start:  # RFC 4733 2.5.1.2: one start timestamp per event
            self._event_start = ts
            stats.telephone_events += 1

    def _play(self, now: float) -> bytes | None:
        stats = self.stats
        self._tick_count += 1
        if self._hold_pending:
            self._hold_pending = False
            stats.inserted_for_drift += 1
            return None
        if self._current is None and not self._held and not self._in_silence:
            self._underrun(now)
            return None
        frame, audio = self._frame()
        if audio and self._drift_check():
            # Too far behind the sender: this tick's audio is dropped, the next one played.
            stats.dropped_for_drift += 1
            frame, audio = self._frame()
        if audio:
            stats.played += 1
        elif frame is not None:
            stats.silence += 1
        return frame

    def _frame(self) -> tuple[bytes | None, bool]:
        """Take the samples of the tick at the playout point; advance it one tick.
        Returns the frame (None if no sample of it was there) and whether it has audio."""
        held, passover, tick = self._held, self._passover, self._tick
        pos = self._play_ts
        assert pos is not None
        end = self._play_ts = pos + tick
        if self._current is None:
            while self._next_seq in passover:
                passover.discard(self._next_seq)
                self._next_seq += 1
            entry = held.get(self._next_seq)
            if entry is not None and entry[0] == pos and entry[1] == _AUDIO and len(entry[2]) == tick:
                # The hot path: the next packet is this tick, exactly.
                del held[self._next_seq]
                self._next_seq += 1
                self._in_silence = False
                return entry[2], True
        pieces: list[bytes] = []
        missing = audio = False
        while pos < end:
            current = self._current
            if current is not None:
                taken = current[: end - pos]
                pieces.append(taken)
                pos += len(taken)
                self._current = current[len(taken) :] or None
                audio = True
                continue
            while self._next_seq in passover:
                passover.discard(self._next_seq)
                self._next_seq += 1
            entry = held.get(self._next_seq)
            if entry is None:
                if not held:
                    break
                head_seq = min(held)
                entry = held[head_seq]
                if entry[0] >= end:
                    break
                self._give_up_to(head_seq)
            elif entry[0] >= end:
                break  # not due yet (the sender paused, RFC 3551 4.1)
            del held[self._next_seq]
            self._next_seq += 1
            ts, kind, payload = entry
            if ts > pos:
                missing |= not self._in_silence
                pieces.append(self._silence[: ts - pos])
                pos = ts
            if kind == _CN:
                self._in_silence = True
                continue
            self._in_silence = False
            # A packet overlapping what was already played (a sender whose packets
            # overlap, or a timestamp that went back a little) gives only its new part.
            self._current = payload[pos - ts :] or None
        if pos < end:
            missing |= not self._in_silence
            pieces.append(self._silence[: end - pos])
        if not audio:
            return (None, False) if missing else (self._silence[:tick], False)
        if missing:
            self.stats.padded += 1  # part of a tick never came: G.711 silence in its place
        return b"".join(pieces), True

    def _give_up_to(self, seq: int) -> None:
        """Playout has passed every number below ``seq``: count the ones that never came."""
        held, passover, first = self._held, self._passover, self._next_seq
        present = sum(1 for number in held if first <= number < seq) + sum(1 for number in passover if first <= number < seq)
        self.stats.lost += max(0, seq - first - present)
        for passed in [number for number in held if number < seq]:
            del held[passed]
        if passover:
            self._passover = {number for number in passover if number >= seq}
        self._next_seq = seq

    def _drift_check(self) -> bool:
        """After a tick with audio: True if one tick should be dropped; holds playout for
        one tick (returns False) if it runs too low."""
        end, play_ts = self._end_ts, self._play_ts
        assert end is not None and play_ts is not None
        ahead = end - play_ts
        if ahead > self._high_water:
            self._below = 0
            self._above += 1
            if self._above >= self._drift_ticks:
                self._above = 0
                return True
        elif ahead < self._low_water:
            self._above = 0
            self._below += 1
            if self._below >= self._drift_ticks:
                self._below = 0
                self._hold_pending = True  # the next tick is a fill-in that does not advance
        else:
            self._above = self._below = 0
        return False

    def _underrun(self, now: float) -> None:
        """Nothing at all to play: a fill-in, holding the playout point on the second
        underrun in a window while packets keep arriving."""
        self._above = 0
        # "Still arriving": an audio packet within the depth and two ptimes of jitter.
        arriving = self._last_arrival is not None and now - self._last_arrival <= self._alive_s
        recent = arriving and self._tick_count - self._last_underrun <= self._drift_ticks
        self._last_underrun = self._tick_count
        if recent:
            # A second underrun while the stream is alive: we play faster than it comes.
            self.stats.inserted_for_drift += 1
            self._last_underrun = -(1 << 30)
            return  # playout point held
        assert self._play_ts is not None
        self._play_ts += self._tick
