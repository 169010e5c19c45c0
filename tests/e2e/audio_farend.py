"""A far end that calls the gateway and sends a fax as G.711 audio over RTP, on real sockets.

The SIP side is ``tests.e2e.farend``'s hand-written UAC (raw SIP text, RFC 3261's
examples; it shares no code with our ``sip`` package).  What differs:

* the INVITE offers audio only (``m=audio <port> RTP/AVP 0 8 101``, RFC 3551 PCMU/PCMA
  plus RFC 4733 telephone-event);
* the gateway's re-INVITE to T.38 is answered 488 (``on_t38_reinvite="refuse"``), so the
  fax must go on as audio; or (``"accept"``) taken with our T.38 answer, and from then on
  the fax is a fresh SpanDSP T.38 terminal (the audio terminal's T.30 cannot carry on over
  IFPs: it is an audio terminal), framed with our UDPTL code as in ``farend.py``;
* the fax is SpanDSP's AUDIO fax terminal (``tests.peers.spandsp_audio``: ``fax_init``,
  V.21/V.27ter/V.29/V.17 modems, its own G.711 codec), and its 20 ms blocks travel as
  RTP packets whose 12-octet header is built here from RFC 3550 5.1 (no code shared
  with our ``rtp`` package either).

Everything runs in one thread with ``select`` and bounded waits, in real time: every
20 ms one RTP packet goes out (sequence +1, timestamp +160, RFC 3550 5.1 / RFC 3551 4.5.14)
and 160 octets of what the gateway sent are played into the terminal through a small
playout buffer ordered by sequence number (silence when nothing has arrived).
"""

from __future__ import annotations

import select
import struct
import time
from dataclasses import dataclass, field

from tests.e2e.farend import TICK, CallPlan, CallResult, FarEnd, _tag_of, _uri_in, parse_sip
from tests.peers.spandsp import SpandspT38Terminal
from tests.peers.spandsp_audio import SpandspAudioTerminal
from udptl.receiver import IfpReceived

__all__ = ["AudioCallPlan", "AudioCallResult", "AudioFarEnd", "PlayoutBuffer", "build_rtp_header",
           "parse_rtp_packet"]

BLOCK = 160  # 20 ms of 8 kHz G.711 (RFC 3551 4.5.14: PCMU/PCMA, default packetisation 20 ms)
PT_PCMU = 0  # RFC 3551 Table 4
PT_PCMA = 8
PT_TELEPHONE_EVENT = 101  # dynamic (RFC 4733); offered, never sent by us
HANG_UP_GRACE = 5.0  # s a terminal may take to reach phase E after the gateway's BYE
LAW_OF_PT = {PT_PCMU: "ulaw", PT_PCMA: "alaw"}
# G.711 silence: u-law 0xFF and A-law 0xD5 both decode to (near) zero (G.711 Tables 1/2).
SILENCE = {"ulaw": b"\xff" * BLOCK, "alaw": b"\xd5" * BLOCK}
_RTP_FIXED = struct.Struct("!BBHII")


def build_rtp_header(payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool = False) -> bytes:
    """RFC 3550 5.1: V=2, P=0, X=0, CC=0, M, PT, sequence, timestamp, SSRC."""
    return _RTP_FIXED.pack(0x80, (0x80 if marker else 0) | (payload_type & 0x7F), sequence & 0xFFFF,
                           timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)


def parse_rtp_packet(data: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(payload type, sequence, timestamp, SSRC, payload), or None for what is not RTP v2.

    RFC 3550 5.1: skip CC CSRCs; 5.3.1: a header extension is one 32-bit word (profile,
    length) plus ``length`` words; with P the last octet counts the padding octets."""
    if len(data) < 12:
        return None
    first, second, sequence, timestamp, ssrc = _RTP_FIXED.unpack_from(data)
    if first >> 6 != 2:
        return None
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:
        end -= data[-1]
    if offset > end:
        return None
    return second & 0x7F, sequence, timestamp, ssrc, data[offset:end]


def _seq_before(a: int, b: int) -> bool:
    """True when 16-bit sequence number ``a`` comes before ``b`` (RFC 3550 A.1 arithmetic)."""
    return a != b and ((a - b) & 0xFFFF) >= 0x8000


MISSING = object()  # a packet the buffer knows was lost: a later one arrived first


class PlayoutBuffer:
    """A tiny jitter buffer: packets ordered by sequence number, played one per 20 ms.

    Playout starts once ``depth`` packets are in (the scheduling jitter of two processes
    on one machine is a few ms; 40 ms of depth absorbs it).  :meth:`take` returns the
    payload due now, :data:`MISSING` when a later packet has arrived but this one has not
    (lost: the terminal bridges it with fill-in), or None when nothing is there (silence).
    """

    def __init__(self, depth: int = 2, max_depth: int = 10) -> None:
        self.depth = depth
        self.max_depth = max_depth
        self.packets: dict[int, bytes] = {}
        self.next_seq: int | None = None
        self.playing = False
        self.late = 0
        self.missing = 0
        self.underruns = 0
        self.dropped = 0

    def put(self, sequence: int, payload: bytes) -> None:
        if self.next_seq is None or (not self.playing and _seq_before(sequence, self.next_seq)):
            self.next_seq = sequence
        elif _seq_before(sequence, self.next_seq):
            self.late += 1  # its time has passed
            return
        self.packets[sequence] = payload

    def take(self) -> object:
        if not self.playing:
            if len(self.packets) < self.depth:
                return None
            self.playing = True
        assert self.next_seq is not None
        if len(self.packets) > self.max_depth:
            # Far behind (we were descheduled): catch up rather than lag for the whole call.
            while len(self.packets) > self.depth:
                self.packets.pop(self.next_seq, None)
                self.next_seq = (self.next_seq + 1) & 0xFFFF
                self.dropped += 1
        payload = self.packets.pop(self.next_seq, None)
        if payload is not None:
            self.next_seq = (self.next_seq + 1) & 0xFFFF
            return payload
        if self.packets:
            self.next_seq = (self.next_seq + 1) & 0xFFFF
            self.missing += 1
            return MISSING
        # Nothing at all: this packet is late, not lost; wait for it (the delay grows 20 ms).
        self.underruns += 1
        return None

    def reset(self) -> None:
        self.packets.clear()
        self.next_seq = None
        self.playing = False


@dataclass
class AudioCallPlan(CallPlan):
    """``CallPlan`` for a G.711 caller.  ``offer_payload_types``: the m=audio formats in
    our order (101 is appended); ``on_t38_reinvite``: "refuse" (488) or "accept"."""

    offer_payload_types: tuple[int, ...] = (PT_PCMU, PT_PCMA)
    on_t38_reinvite: str = "refuse"
    playout_depth: int = 2
    max_seconds: float = 120.0


@dataclass
class AudioCallResult(CallResult):
    answer_payload_types: list[int] = field(default_factory=list)
    law: str = ""
    remote_ident: str = ""
    reinvites_received: int = 0
    reinvites_refused: int = 0
    reinvites_accepted: int = 0
    switched_to_t38_after: float | None = None  # seconds after the answer
    audio_pages_confirmed: int = 0  # pages the audio terminal had sent before a switch
    rtp_sent: int = 0
    rtp_received: int = 0
    rtp_payload_types_received: set[int] = field(default_factory=set)
    rtp_payload_sizes: set[int] = field(default_factory=set)
    rtp_missing: int = 0
    rtp_late: int = 0
    playout_underruns: int = 0
    spandsp_stats: dict = field(default_factory=dict)
    spandsp_events: list = field(default_factory=list)


def _audio_answer(body: bytes) -> tuple[str, int, list[int]]:
    """(connection address, port, payload types) of the first m=audio line with a port."""
    address, port, formats = "", 0, []
    media_address = ""
    in_audio = False
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("c=IN IP4 "):
            if in_audio:
                media_address = line.split()[2]
            elif not port:
                address = line.split()[2]
        elif line.startswith("m="):
            in_audio = False
            parts = line[2:].split()
            if parts[0] == "audio" and parts[1] != "0" and not port:
                port, formats, in_audio = int(parts[1]), [int(f) for f in parts[3:] if f.isdigit()], True
    return media_address or address, port, formats


def _first_media_kind(body: bytes) -> str:
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("m=") and line.split()[1] != "0":
            return line[2:].split()[0]
    return ""


class AudioFarEnd(FarEnd):
    """One calling fax machine on a G.711 line: see the module docstring."""

    plan: AudioCallPlan
    result: AudioCallResult  # type: ignore[assignment]

    def __init__(self, gateway_sip: tuple[str, int], plan: AudioCallPlan, workdir) -> None:
        super().__init__(gateway_sip, plan, workdir)
        self.result = AudioCallResult()
        self.rtp = self.udptl  # the media socket FarEnd bound; here it carries RTP
        self.rtp_remote: tuple[str, int] | None = None
        self.payload_type: int | None = None
        self.ssrc = self.rng.getrandbits(32)
        self.sequence = self.rng.getrandbits(16)
        self.timestamp = self.rng.getrandbits(32)
        self.marker = True  # RFC 3551 4.1: the first packet of a talkspurt
        self.playout = PlayoutBuffer(plan.playout_depth)
        self.remote_ssrc: int | None = None
        self.fax: SpandspAudioTerminal | None = None
        self.t38_fax: SpandspT38Terminal | None = None
        self.answered_at: float | None = None
        self.answered_reinvites: dict[str, bytes] = {}  # CSeq -> our response (for retransmissions)
        self.hung_up_at: float | None = None

    def sdp(self, t38: bool) -> bytes:
        if t38:
            return super().sdp(True)
        formats = [*self.plan.offer_payload_types, PT_TELEPHONE_EVENT]
        names = {PT_PCMU: "PCMU/8000", PT_PCMA: "PCMA/8000"}
        lines = ["v=0", f"o=- {self.rng.randint(1, 10**6)} {self.cseq} IN IP4 127.0.0.1", "s=-",
                 "c=IN IP4 127.0.0.1", "t=0 0", f"m=audio {self.rtp.getsockname()[1]} RTP/AVP " + " ".join(map(str, formats))]
        lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in self.plan.offer_payload_types]
        lines += [f"a=rtpmap:{PT_TELEPHONE_EVENT} telephone-event/8000", f"a=fmtp:{PT_TELEPHONE_EVENT} 0-15",
                  "a=ptime:20", "a=sendrecv"]
        return ("\r\n".join(lines) + "\r\n").encode()

    # -- media ------------------------------------------------------------------------
    def _start_audio(self, answer: bytes) -> None:
        address, port, formats = _audio_answer(answer)
        self.result.answer_payload_types = formats
        # RFC 3264 6.1: we send one of the formats the answer lists (its first G.711 one).
        usable = [pt for pt in formats if pt in LAW_OF_PT]
        if not port or not usable:
            self.result.error = f"no G.711 in the answer: {answer!r}"
            self.finished = True
            return
        self.rtp_remote = (address, port)
        if self.fax is None and self.t38_fax is None:
            self.answered_at = time.monotonic()
            self.payload_type = usable[0]
            self.result.law = LAW_OF_PT[self.payload_type]
            # The calling fax starts (CNG) once the call is answered.
            self.fax = SpandspAudioTerminal(calling_party=True, law=self.result.law, ecm=self.plan.ecm,
                                            tx_tiff=self.tiff, ident=self.plan.ident)

    def _on_rtp(self, data: bytes) -> None:
        parsed = parse_rtp_packet(data)
        if parsed is None:
            return
        payload_type, sequence, _timestamp, ssrc, payload = parsed
        self.result.rtp_received += 1
        self.result.rtp_payload_types_received.add(payload_type)
        if payload_type not in LAW_OF_PT:
            return  # telephone-event or comfort noise: not fax audio
        self.result.rtp_payload_sizes.add(len(payload))
        if ssrc != self.remote_ssrc:
            # RFC 3550 8: a new SSRC is a new stream (sequence numbers start afresh).
            self.remote_ssrc = ssrc
            self.playout.reset()
        self.playout.put(sequence, payload)

    def _tick_audio(self) -> None:
        fax = self.fax
        if fax is None or self.t38_fax is not None or self.rtp_remote is None or self.payload_type is None:
            return
        law = LAW_OF_PT[self.payload_type]
        if self.hung_up_at is not None:
            # The line is gone: the terminal still runs (its DCN ends, then phase E), unheard.
            fax.rx_audio(SILENCE[law])
            fax.tx_audio()
            return
        item = self.playout.take()
        if item is MISSING:
            fax.rx_missing()
        elif item is None:
            fax.rx_audio(SILENCE[law])
        else:
            assert isinstance(item, bytes)
            fax.rx_audio((item + SILENCE[law])[:BLOCK])
        block = fax.tx_audio()
        header = build_rtp_header(self.payload_type, self.sequence, self.timestamp, self.ssrc, self.marker)
        self.marker = False
        self.rtp.sendto(header + block, self.rtp_remote)
        self.result.rtp_sent += 1
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + BLOCK) & 0xFFFFFFFF

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> AudioCallResult:  # type: ignore[override]
        plan = self.plan
        start = time.monotonic()
        try:
            self._send_request("INVITE", self.sdp(False))
            next_tick = time.monotonic()
            while time.monotonic() - start < plan.max_seconds and not self.finished:
                if plan.abort is not None and plan.abort.is_set():
                    break
                timeout = max(0.0, next_tick - time.monotonic())
                readable, _, _ = select.select([self.sip, self.rtp], [], [], timeout)
                if self.sip in readable:
                    for message in self._read_sip():
                        self._on_sip_message(message)
                if self.rtp in readable:
                    data = self.rtp.recvfrom(65535)[0]
                    if self.t38_fax is not None:
                        self._on_udptl(data, self.t38_fax)
                    else:
                        self._on_rtp(data)
                now = time.monotonic()
                self._retransmit(now)
                while now >= next_tick:
                    next_tick += TICK
                    self._tick_audio()
                    self._tick_t38(now)
                    if next_tick < now - 1.0:
                        next_tick = now  # fell far behind (a slow box): do not race to catch up
                fax = self.t38_fax or self.fax
                if fax is not None and fax.phase_e_status is not None and self.result.phase_e_status is None:
                    self.result.phase_e_status = fax.phase_e_status
                    if not self.result.bye_from_gateway and self.bye_cseq is None:
                        self._send_request("BYE")
                        self.result.bye_sent = True
                if self.result.bye_from_gateway:
                    # The line is gone.  A sender reaches phase E once its DCN is out, and the
                    # gateway may hang up as soon as it has heard the DCN; give it 5 s, no more.
                    self.hung_up_at = self.hung_up_at or now
                    if fax is None or fax.phase_e_status is not None or now - self.hung_up_at > HANG_UP_GRACE:
                        self.finished = True
        finally:
            if self.fax is not None and self.t38_fax is not None:
                self.result.audio_pages_confirmed = sum(1 for kind, _ in self.fax.events if kind == "phase_d")
            fax = self.t38_fax or self.fax
            if fax is not None:
                self.result.pages_sent_confirmed = sum(1 for kind, _ in fax.events if kind == "phase_d")
                self.result.remote_ident = (fax._lib.t30_get_rx_ident(fax.t30_state) or b"").decode("latin-1")
                self.result.spandsp_stats = fax.stats()
                self.result.spandsp_events = list(fax.events)
                if self.result.phase_e_status is None:
                    self.result.phase_e_status = fax.phase_e_status
            for terminal in (self.fax, self.t38_fax):
                if terminal is not None:
                    terminal.close()
            self.result.rtp_missing = self.playout.missing
            self.result.rtp_late = self.playout.late
            self.result.playout_underruns = self.playout.underruns
            self.result.seconds = time.monotonic() - start
            for sock in (self.sip, self.rtp, self.decoy):
                if sock is not None:
                    sock.close()
        return self.result

    def _switch_to_t38(self, offer: bytes) -> None:
        """From now on the media is T.38 (RFC 3264 8: the new offer/answer replaces the audio
        stream): RTP stops, a SpanDSP T.38 calling terminal starts with the same pages."""
        if self.t38_fax is not None:
            return
        self._start_t38(offer)  # FarEnd's: UDPTL sender/receiver towards the offer's port
        if self.answered_at is not None:
            self.result.switched_to_t38_after = time.monotonic() - self.answered_at
        self.t38_fax = SpandspT38Terminal(calling_party=True, on_ifp=self._on_ifp, version=0, ecm=self.plan.ecm,
                                          ident=self.plan.ident, tx_tiff=self.tiff)

    def _tick_t38(self, now: float) -> None:
        fax = self.t38_fax
        if fax is None or self.receiver is None:
            return
        deadline = self.receiver.next_deadline()
        if deadline is not None and deadline <= now:
            for item in self.receiver.handle_timer(now):
                if isinstance(item, IfpReceived):
                    fax.rx_ifp(item.raw, item.seq)
        fax.advance(160)

    # -- SIP --------------------------------------------------------------------------
    def _on_sip_message(self, data: bytes) -> None:
        if not data.strip():
            return
        first, headers, body = parse_sip(data)
        self.result.sip_log.append(("in", first))
        if first.startswith("SIP/2.0 "):
            self._on_response(int(first.split()[1]), headers, body)
            return
        method = first.split()[0]
        if method == "INVITE":
            self._on_reinvite(headers, body)
        elif method == "BYE":
            self.result.bye_from_gateway = True
            self._send_sip(self._response(200, "OK", headers))
        elif method != "ACK":
            self._send_sip(self._response(200, "OK", headers))

    def _on_response(self, status: int, headers: dict, body: bytes) -> None:
        cseq_text, method = headers["cseq"][0].split()
        cseq_number = int(cseq_text)
        if status < 200:
            if cseq_number in self.pending:
                data, resend_at, give_up = self.pending[cseq_number]
                self.pending[cseq_number] = (data, max(resend_at, time.monotonic() + 4.0), give_up)
            return
        retransmitted = cseq_number not in self.pending
        self.pending.pop(cseq_number, None)
        if method == "INVITE":
            if cseq_number == 1:
                self.result.invite_status = status
            if status >= 300:
                if cseq_number == 1:
                    self.finished = True
                return
            self.remote_tag = _tag_of(headers["to"][0])
            self.remote_target = _uri_in(headers["contact"][0])
            # RFC 3261 13.2.2.4: every 2xx (retransmissions too) is ACKed.
            self._ack(cseq_number)
            if not retransmitted:
                self._start_audio(body)
        elif method == "BYE":
            self.finished = True

    def _on_reinvite(self, headers: dict, body: bytes) -> None:
        cseq = headers["cseq"][0]
        if cseq in self.answered_reinvites:
            # A retransmission (RFC 3261 17.2.1): the same answer again, counted once.
            self._send_sip(self.answered_reinvites[cseq])
            return
        self.result.gateway_reinvite = True
        self.result.reinvites_received += 1
        kind = _first_media_kind(body)
        if kind == "image" and self.plan.on_t38_reinvite == "refuse":
            # RFC 3261 21.4.26: no T.38 on this trunk; 14.2: a refused re-INVITE leaves the audio session as it was.
            response = self._response(488, "Not Acceptable Here", headers)
            self.result.reinvites_refused += 1
        elif kind == "image":
            response = self._response(200, "OK", headers, self.sdp(True))
            self.result.reinvites_accepted += 1
            self._switch_to_t38(body)
        else:
            # An audio re-INVITE (a refresh, or new media address): follow it.
            response = self._response(200, "OK", headers, self.sdp(False))
            address, port, _ = _audio_answer(body)
            if port:
                self.rtp_remote = (address, port)
        self.answered_reinvites[cseq] = response
        self._send_sip(response)
