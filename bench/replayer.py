"""A cheap T.38 call generator: N calls replaying a recorded SpanDSP sender, one thread.

One ``selectors`` (epoll) loop carries every call.  Per call: a raw-SIP UAC written here
(no code shared with our ``sip`` package) that sends an INVITE offering T.38
(``m=image <port> udptl t38``, as tests/e2e/farend.py does), ACKs the answer and hangs up
with BYE at the end, and answers 200 to a BYE, re-INVITE, UPDATE or OPTIONS from the
gateway; and one UDP socket that sends the capture's datagrams (tools/record_t38_capture.py:
the bytes a real SpanDSP sender sent to our gateway) at their recorded offsets from the
answer, to the address and port in the gateway's SDP answer.  The replay is blind, like
SIPp's ``play_pcap_image``: it never waits for the gateway.  The datagrams are read from
the pcap once and sent as they are by every call.  All calls share one SIP socket (demuxed
by Call-ID).

Recorded per call: the INVITE's final status (and Retry-After), set-up time, every
datagram the gateway sent with its arrival time (decoded after the run, outside the
loop), when the gateway's MCF arrived, who hung up.

T.30 response latency, as defined here: for each "turn" of the capture (the datagram
ending a sender command that the recorded gateway answered: the end of TCF -> CFR, the
end of EOP / PPS-EOP -> MCF; see ``find_turns`` in the recording tool), the time from this
replay sending that datagram to the arrival of the gateway's first datagram carrying a
sequence number above every one received before (T.38 9.1: a new IFP, not a redundant
copy).  A turn with no such datagram before the next turn (or the end of the call) is
counted as unanswered.  The MCF time is the arrival of the datagram whose IFP completes
(hdlc-fcs-OK, T.38 7.4) a frame with FCF MCF.

Its own cost is reported: CPU (utime+stime of this process) in the loop, and lateness of
its sends against the schedule (a late replayer would make the gateway look slow).

Run by bench/load.py and bench/soak.py as a separate process::

    python bench/replayer.py --sip 127.0.0.1:5060 --capture ecm_mmr --calls 100 --ramp 5
    python bench/replayer.py --sip 127.0.0.1:5060 --capture nonecm_mr --concurrent 80 --minutes 60

It prints ``go`` once ready, then JSON lines: ``{"progress": ...}`` every ``--progress``
seconds, and ``{"report": ...}`` at the end.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import resource
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VECTORS = REPO / "tests" / "vectors"
T1, T2 = 0.5, 4.0  # RFC 3261 17.1.1.1 / 17.1.2.1 timer defaults
TIMER_B = 64 * T1  # RFC 3261 17.1.1.2: give up on an INVITE (and 17.1.2.2 Timer F on a BYE)
HANGUP_GRACE = 3.0  # after the last datagram: wait this long for the gateway's BYE, then send ours
LATE_SEND = 0.020  # a send this late counts as a replayer stall (the capture's own spacing is ~50 ms)
# T.30 5.3.6.2.x: MCF is [X011 0001], written first-transmitted bit first; T.38 7.3 carries HDLC
# octets first transmitted bit as the MSB, so on the wire it is 0x31 with the X bit (0x80).
MCF_ON_WIRE = 0x31
FCF_X_BIT_ON_WIRE = 0x80


@dataclass
class Capture:
    name: str
    datagrams: list[bytes]
    offsets: list[float]  # s after the answer
    turns: list[int]  # indices of datagrams ending a command the gateway answers
    meta: dict

    @property
    def seconds(self) -> float:
        return self.offsets[-1]


def load_capture(name: str) -> Capture:
    """``ecm_mmr`` / ``nonecm_mr``, or a path to a .pcap with its .json beside it."""
    from tools.record_t38_capture import read_pcap

    path = Path(name) if name.endswith(".pcap") else VECTORS / f"t38_{name}_sender.pcap"
    meta = json.loads(path.with_suffix(".json").read_text())
    records = read_pcap(path)
    return Capture(meta["flavour"], [d for _, d in records], [t for t, _ in records],
                   [turn["index"] for turn in meta["turns"]], meta)


def _token(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choice("abcdef0123456789") for _ in range(n))


@dataclass
class Call:
    index: int
    caller: str
    call_id: str
    tag: str
    media: socket.socket
    media_port: int
    planned_start: float
    invite_sent_at: float | None = None
    invite: bytes = b""
    invite_branch: str = ""
    provisional: bool = False
    status: int | None = None
    retry_after: str | None = None
    answered_at: float | None = None
    remote_tag: str = ""
    remote_target: str = ""
    media_remote: tuple[str, int] | None = None
    next_datagram: int = 0
    turn_sent: dict[int, float] = field(default_factory=dict)
    received: list[tuple[float, bytes]] = field(default_factory=list)
    bye: bytes = b""
    bye_sent_at: float | None = None
    bye_by: str = ""
    ended_at: float | None = None
    error: str = ""
    late_sends: int = 0
    worst_late: float = 0.0
    send_errors: int = 0
    done: bool = False


class Replayer:
    def __init__(self, gateway: tuple[str, int], capture: Capture, *, caller_prefix: str = "7",
                 max_seconds: float | None = None, seed: int = 1) -> None:
        self.gateway = gateway
        self.capture = capture
        self.turns = set(capture.turns)
        self.caller_prefix = caller_prefix
        self.max_call = max_seconds if max_seconds is not None else capture.seconds + 60.0
        self.rng = random.Random(seed)
        self.selector = selectors.DefaultSelector()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Many calls' SIP arrives in bursts on this one socket: a big buffer (capped by rmem_max).
        self.sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.sip_port = self.sip.getsockname()[1]
        self.selector.register(self.sip, selectors.EVENT_READ, None)
        self.calls: list[Call] = []
        self.by_call_id: dict[str, Call] = {}
        self.timers: list[tuple[float, int, str, Call]] = []  # (when, tiebreak, what, call)
        self._tiebreak = 0
        self.sip_undecodable: list[str] = []
        self.active = 0
        self.waiting = 0  # calls added whose INVITE is not sent yet
        # Soak mode: a slot whose call was refused 503 stays empty for its Retry-After
        # (RFC 3261 21.5.4), as a sending fax machine waits before it tries again.
        self.held_slots: list[float] = []

    # -- scheduling ------------------------------------------------------------------
    def _at(self, when: float, what: str, call: Call) -> None:
        self._tiebreak += 1
        heapq.heappush(self.timers, (when, self._tiebreak, what, call))

    def add_call(self, start: float) -> Call:
        index = len(self.calls)
        media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        media.bind(("127.0.0.1", 0))
        media.setblocking(False)
        call = Call(index, f"{self.caller_prefix}{index:06d}", f"{_token(self.rng, 16)}@replayer", _token(self.rng, 8),
                    media, media.getsockname()[1], start)
        self.calls.append(call)
        self.by_call_id[call.call_id] = call
        self.waiting += 1
        self._at(start, "start", call)
        return call

    # -- SIP text (RFC 3261 examples) ------------------------------------------------------
    def _sdp(self, call: Call) -> bytes:
        return (f"v=0\r\no=- {call.index + 1} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=image {call.media_port} udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n"
                "a=T38FaxRateManagement:transferredTCF\r\na=T38FaxMaxBuffer:2000\r\n"
                "a=T38FaxMaxDatagram:400\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n").encode()

    def _request(self, call: Call, method: str, uri: str, cseq: int, branch: str, body: bytes = b"") -> bytes:
        to = f"<sip:5550100@{self.gateway[0]}:{self.gateway[1]}>"
        if call.remote_tag:
            to += f";tag={call.remote_tag}"
        head = (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.sip_port};branch=z9hG4bK{branch};rport\r\n"
                f"Max-Forwards: 70\r\n"
                f"From: <sip:{call.caller}@127.0.0.1:{self.sip_port}>;tag={call.tag}\r\n"
                f"To: {to}\r\nCall-ID: {call.call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:replay@127.0.0.1:{self.sip_port}>\r\n")
        if body:
            head += "Content-Type: application/sdp\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def _response(self, call: Call | None, headers: dict[str, list[str]], status: int, reason: str,
                  body: bytes = b"") -> bytes:
        to = headers["to"][0]
        if ";tag=" not in to and call is not None:
            to += f";tag={call.tag}"
        lines = [f"SIP/2.0 {status} {reason}"] + [f"Via: {via}" for via in headers.get("via", [])]
        lines += [f"From: {headers['from'][0]}", f"To: {to}", f"Call-ID: {headers['call-id'][0]}",
                  f"CSeq: {headers['cseq'][0]}", f"Contact: <sip:replay@127.0.0.1:{self.sip_port}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _send_sip(self, data: bytes) -> None:
        try:
            self.sip.sendto(data, self.gateway)
        except OSError:
            pass  # e.g. ECONNREFUSED from an earlier ICMP: the retransmission timer covers it

    # -- call steps ------------------------------------------------------------------------
    def _start(self, call: Call, now: float) -> None:
        self.selector.register(call.media, selectors.EVENT_READ, call)
        self.waiting -= 1
        self.active += 1
        call.invite_branch = _token(self.rng)
        call.invite = self._request(call, "INVITE", f"sip:5550100@{self.gateway[0]}:{self.gateway[1]}", 1,
                                    call.invite_branch, self._sdp(call))
        call.invite_sent_at = now
        self._send_sip(call.invite)
        self._at(now + T1, "invite_timer:" + str(T1), call)

    def _invite_timer(self, call: Call, what: str, now: float) -> None:
        # RFC 3261 17.1.1.2 Timer A doubles; Timer B (64*T1) gives up.  A 1xx stops it.
        if call.status is not None or call.provisional or call.done:
            return
        assert call.invite_sent_at is not None
        if now - call.invite_sent_at >= TIMER_B:
            self._end(call, now, "no final response to the INVITE (Timer B)")
            return
        interval = float(what.split(":")[1]) * 2
        self._send_sip(call.invite)
        self._at(now + interval, f"invite_timer:{interval}", call)

    def _send_bye(self, call: Call, now: float) -> None:
        if call.bye_sent_at is not None or call.done:
            return
        call.bye = self._request(call, "BYE", call.remote_target, 2, _token(self.rng))
        call.bye_sent_at = now
        call.bye_by = "replayer"
        self._send_sip(call.bye)
        self._at(now + T1, f"bye_timer:{T1}", call)

    def _bye_timer(self, call: Call, what: str, now: float) -> None:
        if call.done:
            return
        assert call.bye_sent_at is not None
        if now - call.bye_sent_at >= TIMER_B:
            self._end(call, now, "no response to our BYE (Timer F)")
            return
        interval = min(float(what.split(":")[1]) * 2, T2)  # RFC 3261 17.1.2.2 Timer E
        self._send_sip(call.bye)
        self._at(now + interval, f"bye_timer:{interval}", call)

    def _end(self, call: Call, now: float, error: str = "") -> None:
        if call.done:
            return
        call.done = True
        call.ended_at = now
        if error and not call.error:
            call.error = error
        self.active -= 1
        if call.status == 503:
            try:
                wait = float(call.retry_after or 1)
            except ValueError:
                wait = 1.0
            self.held_slots.append(now + max(1.0, wait))
        try:
            self.selector.unregister(call.media)
        except (KeyError, ValueError):
            pass
        self._drain_media(call, now)
        call.media.close()

    def _send_datagrams(self, call: Call, now: float) -> None:
        """Send every datagram now due; schedule the call's next one."""
        if call.done or call.answered_at is None or call.media_remote is None:
            return
        offsets, datagrams = self.capture.offsets, self.capture.datagrams
        index = call.next_datagram
        base = call.answered_at
        while index < len(datagrams) and base + offsets[index] <= now:
            late = now - (base + offsets[index])
            if late > LATE_SEND:
                call.late_sends += 1
            if late > call.worst_late:
                call.worst_late = late
            try:
                call.media.sendto(datagrams[index], call.media_remote)
            except OSError:
                call.send_errors += 1  # ICMP port unreachable: the gateway closed the port
            if index in self.turns:
                call.turn_sent[index] = time.monotonic()
            index += 1
        call.next_datagram = index
        if index < len(datagrams):
            self._at(base + offsets[index], "media", call)
        else:
            self._at(now + HANGUP_GRACE, "hangup", call)

    # -- input ---------------------------------------------------------------------------
    def _drain_media(self, call: Call, now: float) -> None:
        while True:
            try:
                data = call.media.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a queued ICMP error
            call.received.append((now, data))

    def _drain_sip(self, now: float) -> None:
        while True:
            try:
                data = self.sip.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a queued ICMP error: go on reading
            try:
                self._on_sip(data, now)
            except Exception as exc:  # junk on loopback, or a message this minimal UAC cannot parse
                if len(self.sip_undecodable) < 20:
                    self.sip_undecodable.append(f"{type(exc).__name__}: {exc}: {data[:200]!r}")

    def _on_sip(self, data: bytes, now: float) -> None:
        if not data.strip():
            return  # keep-alive
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            name = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}.get(
                name, name)  # RFC 3261 7.3.3 compact forms
            headers.setdefault(name, []).append(value.strip())
        call = self.by_call_id.get(headers["call-id"][0])
        first = lines[0]
        if first.startswith("SIP/2.0 "):
            if call is not None:
                self._on_response(call, int(first.split()[1]), headers, body, now)
            return
        method = first.split()[0]
        if method == "ACK":
            return
        if call is None:
            self._send_sip(self._response(None, headers, 481, "Call/Transaction Does Not Exist"))
            return
        if method == "BYE":
            self._send_sip(self._response(call, headers, 200, "OK"))
            if not call.bye_by:
                call.bye_by = "gateway"
            self._end(call, now)
        elif method == "INVITE":
            self._send_sip(self._response(call, headers, 200, "OK", self._sdp(call)))
            self._take_answer(call, body)
        else:  # UPDATE (session refresh), OPTIONS, INFO
            self._send_sip(self._response(call, headers, 200, "OK"))

    def _take_answer(self, call: Call, body: bytes) -> None:
        address, port = "", 0
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("c=IN IP4 "):
                address = line.split()[2]
            elif line.startswith("m=image "):
                port = int(line.split()[1])
        if address and port:
            call.media_remote = (address, port)

    def _on_response(self, call: Call, status: int, headers: dict[str, list[str]], body: bytes, now: float) -> None:
        cseq_number, method = headers["cseq"][0].split()
        if method == "INVITE":
            if status < 200:
                call.provisional = True
                return
            to = headers["to"][0]
            tag = to.split(";tag=")[1].split(";")[0] if ";tag=" in to else ""
            if call.status is not None:
                if 200 <= status < 300 and call.remote_target:  # a retransmitted 2xx: ACK again (RFC 3261 13.2.2.4)
                    self._send_sip(self._request(call, "ACK", call.remote_target, int(cseq_number), _token(self.rng)))
                return
            call.status = status
            if status >= 300:
                call.retry_after = (headers.get("retry-after") or [None])[0]
                # RFC 3261 17.1.1.3: the ACK of a non-2xx reuses the INVITE's branch and takes the To tag.
                call.remote_tag = tag
                self._send_sip(self._request(call, "ACK", f"sip:5550100@{self.gateway[0]}:{self.gateway[1]}",
                                             int(cseq_number), call.invite_branch))
                self._end(call, now)
                return
            call.remote_tag = tag
            contact = headers.get("contact", [""])[0]
            call.remote_target = contact[contact.index("<") + 1:contact.index(">")] if "<" in contact else \
                contact.split(";")[0]
            self._send_sip(self._request(call, "ACK", call.remote_target, int(cseq_number), _token(self.rng)))
            self._take_answer(call, body)
            call.answered_at = now
            if call.media_remote is None:
                self._end(call, now, "no m=image in the answer")
                self._send_bye(call, now)
                return
            self._send_datagrams(call, now)
        elif method == "BYE" and status >= 200:
            self._end(call, now, "" if status < 300 else f"BYE answered {status}")

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, until: float, keep_concurrent: int = 0, ramp: float = 0.0,
            progress_every: float = 0.0, progress=None) -> dict:
        """Run until every call is done (or ``until``).  With ``keep_concurrent``, start a
        new call whenever one ends, until ``until``, then let the running ones finish."""
        cpu_0 = resource.getrusage(resource.RUSAGE_SELF)
        started_wall = time.monotonic()
        next_progress = started_wall + progress_every if progress_every else float("inf")
        hard_stop = until + self.max_call + 10
        stalls = 0
        worst_stall = 0.0
        while True:
            now = time.monotonic()
            if now >= hard_stop:
                break
            if keep_concurrent and now < until:
                self.held_slots = [t for t in self.held_slots if t > now]
                for _ in range(keep_concurrent - self.active - self.waiting - len(self.held_slots)):
                    self.add_call(now)
            elif not self.timers and self.active == 0:
                break
            timeout = max(0.0, min(self.timers[0][0] - now if self.timers else 0.1, 0.1))
            for key, _ in self.selector.select(timeout):
                now = time.monotonic()
                if key.data is None:
                    self._drain_sip(now)
                else:
                    self._drain_media(key.data, now)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                when, _, what, call = heapq.heappop(self.timers)
                if now - when > worst_stall:
                    worst_stall = now - when
                if now - when > LATE_SEND:
                    stalls += 1
                if what == "media":
                    self._send_datagrams(call, now)
                elif what == "start":
                    self._start(call, now)
                elif what.startswith("invite_timer"):
                    self._invite_timer(call, what, now)
                elif what.startswith("bye_timer"):
                    self._bye_timer(call, what, now)
                elif what == "hangup":
                    if not call.done:
                        self._send_bye(call, now)
                if (not call.done and call.answered_at is not None and now - call.answered_at > self.max_call
                        and call.bye_sent_at is None):
                    self._send_bye(call, now)
            if now >= next_progress:
                next_progress += progress_every
                if progress is not None:
                    progress(self.summary(now - started_wall))
        now = time.monotonic()
        for call in self.calls:
            if not call.done and call.invite_sent_at is not None:
                self._end(call, now, "still up when the replayer stopped")
        cpu_1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - started_wall
        cpu = (cpu_1.ru_utime - cpu_0.ru_utime) + (cpu_1.ru_stime - cpu_0.ru_stime)
        return {"loop_cpu": cpu, "loop_wall": wall, "loop_stime": cpu_1.ru_stime - cpu_0.ru_stime,
                "timer_stalls": stalls, "worst_timer_stall": worst_stall}

    def summary(self, elapsed: float) -> dict:
        started = [c for c in self.calls if c.invite_sent_at is not None]
        done = [c for c in started if c.done]
        return {"t": round(elapsed, 1), "started": len(started), "active": self.active, "done": len(done),
                "answered": sum(1 for c in started if c.status == 200),
                "refused_503": sum(1 for c in started if c.status == 503),
                "failed": sum(1 for c in done if (c.status not in (200, 503)) or c.error)}

    def close(self) -> None:
        for call in self.calls:
            if not call.done:
                call.media.close()
        self.sip.close()
        self.selector.close()


# -- after the run: decode what the gateway sent -------------------------------------------------
def analyse(call: Call, capture: Capture, clock_offset: float) -> dict:
    """Per-call figures from the raw arrivals (see the module docstring for the definitions)."""
    from udptl.codec import decode_ifp, decode_udptl
    from udptl.ifp import FieldType

    latencies: list[float] = []
    unanswered = 0
    turn_times = sorted((t, index) for index, t in call.turn_sent.items())
    arrivals: list[tuple[float, int]] = []  # (arrival, seq) of datagrams carrying a new IFP
    ifps: dict[int, tuple[float, bytes]] = {}  # seq -> (first arrival carrying it, IFP octets)
    highest = -1
    decode_errors = 0
    for at, data in call.received:
        try:
            packet = decode_udptl(data)
        except Exception:
            decode_errors += 1
            continue
        if packet.seq > highest:
            highest = packet.seq
            arrivals.append((at, packet.seq))
        ifps.setdefault(packet.seq, (at, packet.primary))
        for back, secondary in enumerate(packet.secondaries or (), 1):  # T.38 9.1: newest first
            ifps.setdefault(packet.seq - back, (at, secondary))
    for number, (sent_at, _index) in enumerate(turn_times):
        limit = turn_times[number + 1][0] if number + 1 < len(turn_times) else float("inf")
        answer = next((at for at, _ in arrivals if sent_at < at < limit), None)
        if answer is None:
            unanswered += 1
        else:
            latencies.append(answer - sent_at)
    mcf_at = None
    fcfs: list[str] = []  # every complete frame's FCF (wire octet, hex), in order
    frame = bytearray()
    for seq in sorted(ifps):
        at, octets = ifps[seq]
        try:
            ifp = decode_ifp(octets, 0)
        except Exception:
            decode_errors += 1
            continue
        for item in ifp.fields or ():
            if item.field_type == FieldType.HDLC_DATA:
                frame += item.data
            elif item.field_type in (FieldType.HDLC_FCS_OK, FieldType.HDLC_FCS_OK_SIG_END):
                frame += item.data
                if len(frame) >= 3:
                    fcfs.append(f"{frame[2] & ~FCF_X_BIT_ON_WIRE & 0xFF:02x}")
                if len(frame) >= 3 and frame[2] & ~FCF_X_BIT_ON_WIRE & 0xFF == MCF_ON_WIRE and mcf_at is None:
                    mcf_at = at
                frame.clear()
            elif item.field_type in (FieldType.HDLC_FCS_BAD, FieldType.HDLC_FCS_BAD_SIG_END, FieldType.HDLC_SIG_END):
                frame.clear()
    return {
        "index": call.index, "caller": call.caller, "status": call.status, "retry_after": call.retry_after,
        "setup_s": (call.answered_at - call.invite_sent_at) if call.answered_at and call.invite_sent_at else None,
        "call_s": (call.ended_at - call.answered_at) if call.ended_at and call.answered_at else None,
        "datagrams_sent": call.next_datagram, "replay_complete": call.next_datagram == len(capture.datagrams),
        "datagrams_received": len(call.received), "latencies": [round(x, 5) for x in latencies],
        "unanswered_turns": unanswered, "frames": fcfs,
        "last_received_s": (call.received[-1][0] - call.answered_at) if call.received and call.answered_at else None,
        "mcf_unix": (mcf_at + clock_offset) if mcf_at is not None else None,
        "bye_by": call.bye_by, "error": call.error, "late_sends": call.late_sends,
        "worst_late": round(call.worst_late, 4), "send_errors": call.send_errors, "decode_errors": decode_errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sip", required=True, help="the gateway's SIP address, host:port (UDP)")
    parser.add_argument("--capture", default="ecm_mmr", help="ecm_mmr, nonecm_mr, or a .pcap path")
    parser.add_argument("--calls", type=int, default=0, help="load mode: N calls started over --ramp s")
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--concurrent", type=int, default=0, help="soak mode: keep this many calls up")
    parser.add_argument("--minutes", type=float, default=1.0, help="soak mode: how long to start calls")
    parser.add_argument("--progress", type=float, default=0.0, help="print progress every s (0: never)")
    parser.add_argument("--caller-prefix", default="7")
    args = parser.parse_args()
    host, port = args.sip.rsplit(":", 1)
    capture = load_capture(args.capture)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one media socket per call
    replayer = Replayer((host, int(port)), capture, caller_prefix=args.caller_prefix)

    def progress(summary: dict) -> None:
        print(json.dumps({"progress": summary}), flush=True)

    clock_offset = time.time() - time.monotonic()
    start = time.monotonic() + 0.2
    if args.concurrent:
        print("go", flush=True)
        until = start + args.minutes * 60
        loop = replayer.run(until=until, keep_concurrent=args.concurrent, progress_every=args.progress,
                            progress=progress)
    else:
        for index in range(args.calls):
            replayer.add_call(start + args.ramp * index / max(args.calls, 1))
        print("go", flush=True)
        loop = replayer.run(until=start + args.ramp, progress_every=args.progress, progress=progress)
    cpu_0 = resource.getrusage(resource.RUSAGE_SELF)
    calls = [analyse(call, capture, clock_offset) for call in replayer.calls if call.invite_sent_at is not None]
    cpu_1 = resource.getrusage(resource.RUSAGE_SELF)
    replayer.close()
    report = {
        "capture": capture.name, "datagrams_per_call": len(capture.datagrams), "capture_seconds": capture.seconds,
        "start_unix": start + clock_offset, "calls": calls, **loop,
        "analysis_cpu": (cpu_1.ru_utime - cpu_0.ru_utime) + (cpu_1.ru_stime - cpu_0.ru_stime),
        "sip_undecodable": replayer.sip_undecodable,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps({"report": report}), flush=True)


if __name__ == "__main__":
    main()
