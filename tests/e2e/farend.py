"""The far end of an end-to-end call: raw SIP text over UDP plus a real SpanDSP T.38 fax.

The SIP side is written here by hand, from RFC 3261's examples, and shares no code with
our ``sip`` package, so the two cannot share a bug.  The fax side is SpanDSP's T.38
terminal (``tests.peers.spandsp``) advanced in real time every 20 ms; its IFPs are framed
with our UDPTL sender/receiver (acceptable per the brief) on a real loopback socket.

Everything runs in one thread with ``select`` and bounded waits; run several calls in
threads to have them overlap.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable

from tests.peers.spandsp import SpandspT38Terminal, make_fax_tiff
from udptl.receiver import IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

TICK = 0.02
T1 = 0.5


@dataclass
class CallPlan:
    """What the far end does.  ``mode``: "t38" (T.38 in the first INVITE), "audio-wait"
    (audio, wait for the gateway's re-INVITE), "audio-reinvite" (audio, then we re-INVITE
    to T.38 after ``reinvite_after`` s)."""

    pages: list  # [(bitmap, width, height)]
    x_dpi: float = 204
    y_dpi: float = 196
    ecm: bool = True
    mode: str = "t38"
    reinvite_after: float = 1.0
    did: str = "5550100"
    caller: str = "5550199"
    ident: str = "+1 555 0199"
    error_correction: str = "t38UDPRedundancy"
    loss: float = 0.0  # probability of dropping each UDPTL datagram, both directions
    seed: int = 1
    # Called every tick with (terminal, seconds since T.38 started); True -> send BYE now.
    bye_when: Callable[[SpandspT38Terminal, float], bool] | None = None
    # True -> stop sending UDPTL (the line goes quiet; SIP stays up).
    silent_when: Callable[[SpandspT38Terminal, float], bool] | None = None
    nat: bool = False  # advertise one UDPTL port, send from another
    refuse_t38: bool = False  # answer a re-INVITE to T.38 with 488
    transport: str = "udp"  # or "tcp": one connection, both directions (RFC 3261 18)
    max_seconds: float = 90.0
    abort: threading.Event | None = None  # set by the test: stop at once (e.g. the gateway died)


@dataclass
class CallResult:
    invite_status: int | None = None
    phase_e_status: int | None = None
    bye_from_gateway: bool = False
    bye_sent: bool = False
    gateway_reinvite: bool = False
    sip_log: list = field(default_factory=list)
    pages_sent_confirmed: int = 0
    seconds: float = 0.0
    error: str = ""


def _rand(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choice("abcdef0123456789") for _ in range(n))


def parse_sip(data: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = int(headers.get("content-length", ["0"])[0] or 0)
    return lines[0], headers, body[:length]


def _uri_in(value: str) -> str:
    if "<" in value:
        return value[value.index("<") + 1:value.index(">")]
    return value.split(";")[0]


def _tag_of(value: str) -> str | None:
    for part in value.split(";")[1:]:
        if part.strip().startswith("tag="):
            return part.strip()[4:]
    return None


def _sdp_media(body: bytes) -> tuple[str, int, str]:
    """(connection address, port, media kind) of the first accepted m= line."""
    address, port, kind = "", 0, ""
    for line in body.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            address = line.split()[2]
        elif line.startswith("m=") and not kind:
            parts = line[2:].split()
            if parts[1] != "0":
                kind, port = parts[0], int(parts[1])
    return address, port, kind


class FarEnd:
    """One calling fax: see the module docstring."""

    def __init__(self, gateway_sip: tuple[str, int], plan: CallPlan, workdir) -> None:
        self.gateway = gateway_sip
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.loss_rng = random.Random(plan.seed + 1000)
        self.result = CallResult()
        if plan.transport == "tcp":
            self.sip = socket.create_connection(gateway_sip, timeout=5)
            self.sip.setblocking(False)
        else:
            self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sip.bind(("127.0.0.1", 0))
        self.stream_buffer = b""
        self.udptl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udptl.bind(("127.0.0.1", 0))
        self.decoy = None
        if plan.nat:
            self.decoy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.decoy.bind(("127.0.0.1", 0))
        self.sip_port = self.sip.getsockname()[1]
        self.call_id = _rand(self.rng, 16) + "@farend"
        self.tag = _rand(self.rng, 8)
        self.cseq = 1
        self.remote_tag: str | None = None
        self.remote_target: str | None = None
        self.media_remote: tuple[str, int] | None = None
        self.t38_started_at: float | None = None
        self.tiff = workdir / f"tx-{self.call_id[:8]}.tif"
        make_fax_tiff(self.tiff, plan.pages, x_dpi=plan.x_dpi, y_dpi=plan.y_dpi)
        self.sender: UdptlSender | None = None
        self.receiver: UdptlReceiver | None = None
        self.silent = False
        self.pending: dict[int, tuple[bytes, float, float]] = {}  # cseq -> (request, next resend, give up)
        self.bye_cseq: int | None = None
        self.finished = False

    # -- SIP text ---------------------------------------------------------------
    @property
    def advertised_udptl_port(self) -> int:
        return (self.decoy or self.udptl).getsockname()[1]

    def sdp(self, t38: bool) -> bytes:
        lines = ["v=0", f"o=- {self.rng.randint(1, 10**6)} {self.cseq} IN IP4 127.0.0.1", "s=-",
                 "c=IN IP4 127.0.0.1", "t=0 0"]
        port = self.advertised_udptl_port
        if t38:
            lines += [f"m=image {port} udptl t38", "a=T38FaxVersion:0", "a=T38MaxBitRate:14400",
                      "a=T38FaxRateManagement:transferredTCF", "a=T38FaxMaxBuffer:2000",
                      "a=T38FaxMaxDatagram:400", f"a=T38FaxUdpEC:{self.plan.error_correction}"]
        else:
            lines += [f"m=audio {port} RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
                      "a=ptime:20", "a=sendrecv"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _request(self, method: str, uri: str, body: bytes = b"", cseq: int | None = None) -> bytes:
        to = f"<sip:{self.plan.did}@{self.gateway[0]}:{self.gateway[1]}>"
        if self.remote_tag:
            to += f";tag={self.remote_tag}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.plan.transport.upper()} 127.0.0.1:{self.sip_port};branch=z9hG4bK{_rand(self.rng)};rport",
            "Max-Forwards: 70",
            f'From: "Far End" <sip:{self.plan.caller}@127.0.0.1:{self.sip_port}>;tag={self.tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq or self.cseq} {method}",
            f"Contact: <{self.contact}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _response(self, status: int, reason: str, headers: dict, body: bytes = b"") -> bytes:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {via}" for via in headers.get("via", [])]
        to = headers["to"][0]
        if _tag_of(to) is None:
            to += f";tag={self.tag}"
        lines += [f"From: {headers['from'][0]}", f"To: {to}", f"Call-ID: {headers['call-id'][0]}",
                  f"CSeq: {headers['cseq'][0]}", f"Contact: <{self.contact}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    @property
    def contact(self) -> str:
        suffix = ";transport=tcp" if self.plan.transport == "tcp" else ""
        return f"sip:far@127.0.0.1:{self.sip_port}{suffix}"

    def _send_sip(self, data: bytes) -> None:
        self.result.sip_log.append(("out", data.split(b"\r\n", 1)[0].decode()))
        if self.plan.transport == "tcp":
            self.sip.setblocking(True)
            self.sip.sendall(data)
            self.sip.setblocking(False)
        else:
            self.sip.sendto(data, self.gateway)

    def _read_sip(self) -> list[bytes]:
        """Whole messages now readable: a datagram, or what the stream framed by Content-Length."""
        if self.plan.transport != "tcp":
            return [self.sip.recvfrom(65535)[0]]
        chunk = self.sip.recv(65535)
        if not chunk:
            self.finished = True
            return []
        self.stream_buffer += chunk
        messages = []
        while b"\r\n\r\n" in self.stream_buffer:
            self.stream_buffer = self.stream_buffer.lstrip(b"\r\n")  # keep-alives
            head, sep, rest = self.stream_buffer.partition(b"\r\n\r\n")
            if not sep:
                break
            _, headers, _ = parse_sip(head + b"\r\n\r\n")
            length = int(headers.get("content-length", ["0"])[0] or 0)
            if len(rest) < length:
                break
            messages.append(head + sep + rest[:length])
            self.stream_buffer = rest[length:]
        return messages

    def _send_request(self, method: str, body: bytes = b"") -> None:
        uri = self.remote_target or f"sip:{self.plan.did}@{self.gateway[0]}:{self.gateway[1]}"
        data = self._request(method, uri, body)
        now = time.monotonic()
        # RFC 3261 17.1.1.2: no retransmissions over a reliable transport.
        resend = now + T1 if self.plan.transport == "udp" else float("inf")
        self.pending[self.cseq] = (data, resend, now + 32 * T1)
        if method == "BYE":
            self.bye_cseq = self.cseq
        self._send_sip(data)
        self.cseq += 1

    def _ack(self, cseq: int) -> None:
        self._send_sip(self._request("ACK", self.remote_target, cseq=cseq))

    # -- media ------------------------------------------------------------------
    def _start_t38(self, answer_body: bytes) -> None:
        address, port, kind = _sdp_media(answer_body)
        if kind != "image":
            return
        self.media_remote = (address, port)
        if self.receiver is None:
            self.receiver = UdptlReceiver(0)
            self.sender = UdptlSender(error_correction="redundancy" if "Redundancy" in self.plan.error_correction
                                      else "fec" if "FEC" in self.plan.error_correction else "none",
                                      redundancy_depth=3, max_datagram=400, rng=self.rng)
            self.t38_started_at = time.monotonic()

    def _on_ifp(self, ifp: bytes, count: int) -> None:
        if self.sender is None or self.media_remote is None or self.silent:
            return
        for _ in range(max(count, 1)):
            datagram = self.sender.datagram_for(ifp)
            if self.plan.loss and self.loss_rng.random() < self.plan.loss:
                continue
            self.udptl.sendto(datagram, self.media_remote)

    # -- the loop -----------------------------------------------------------------
    def run(self) -> CallResult:
        plan = self.plan
        start = time.monotonic()
        with SpandspT38Terminal(calling_party=True, on_ifp=self._on_ifp, version=0, ecm=plan.ecm,
                                ident=plan.ident, tx_tiff=self.tiff) as fax:
            self._send_request("INVITE", self.sdp(plan.mode == "t38"))
            next_tick = time.monotonic()
            reinvite_at = None
            while time.monotonic() - start < plan.max_seconds and not self.finished:
                if plan.abort is not None and plan.abort.is_set():
                    break
                timeout = max(0.0, next_tick - time.monotonic())
                readable, _, _ = select.select([self.sip, self.udptl], [], [], timeout)
                if self.sip in readable:
                    for message in self._read_sip():
                        reinvite_at = self._on_sip(message, None, reinvite_at=reinvite_at)
                if self.udptl in readable:
                    data, _ = self.udptl.recvfrom(65535)
                    self._on_udptl(data, fax)
                now = time.monotonic()
                self._retransmit(now)
                if reinvite_at is not None and now >= reinvite_at:
                    reinvite_at = None
                    self._send_request("INVITE", self.sdp(True))
                while now >= next_tick:
                    next_tick += TICK
                    if self.receiver is not None:
                        deadline = self.receiver.next_deadline()
                        if deadline is not None and deadline <= now:
                            for item in self.receiver.handle_timer(now):
                                if isinstance(item, IfpReceived):
                                    fax.rx_ifp(item.raw, item.seq)
                        fax.advance(160)
                    if next_tick < now - 1.0:
                        next_tick = now  # fell far behind (a slow CI box): do not race to catch up
                if self.t38_started_at is not None:
                    elapsed = now - self.t38_started_at
                    if plan.silent_when and not self.silent and plan.silent_when(fax, elapsed):
                        self.silent = True
                    if plan.bye_when and self.bye_cseq is None and plan.bye_when(fax, elapsed):
                        self._send_request("BYE")
                        self.result.bye_sent = True
                if fax.phase_e_status is not None and self.result.phase_e_status is None:
                    self.result.phase_e_status = fax.phase_e_status
                    if not self.result.bye_from_gateway and self.bye_cseq is None:
                        self._send_request("BYE")
                        self.result.bye_sent = True
                if self.result.bye_from_gateway and (fax.phase_e_status is not None or self.silent
                                                     or self.result.bye_sent or self.t38_started_at is None):
                    self.finished = True
            self.result.pages_sent_confirmed = sum(1 for kind, _ in fax.events if kind == "phase_d")
        self.result.seconds = time.monotonic() - start
        for sock in (self.sip, self.udptl, self.decoy):
            if sock is not None:
                sock.close()
        return self.result

    def _retransmit(self, now: float) -> None:
        for cseq, (data, resend_at, give_up) in list(self.pending.items()):
            if now >= give_up:
                del self.pending[cseq]
                self.result.error = f"no response to CSeq {cseq}"
                self.finished = True
            elif now >= resend_at:
                self.pending[cseq] = (data, now + T1, give_up)
                self._send_sip(data)

    def _on_udptl(self, data: bytes, fax: SpandspT38Terminal) -> None:
        if self.receiver is None or self.silent:
            return
        if self.plan.loss and self.loss_rng.random() < self.plan.loss:
            return
        for item in self.receiver.datagram_received(data, time.monotonic()):
            if isinstance(item, IfpReceived):
                fax.rx_ifp(item.raw, item.seq)

    def _on_sip(self, data: bytes, source, *, reinvite_at):
        if not data.strip():
            return reinvite_at
        first, headers, body = parse_sip(data)
        self.result.sip_log.append(("in", first))
        if first.startswith("SIP/2.0 "):
            status = int(first.split()[1])
            cseq_number, method = headers["cseq"][0].split()
            cseq_number = int(cseq_number)
            if status < 200:
                if cseq_number in self.pending:
                    data, resend_at, give_up = self.pending[cseq_number]
                    self.pending[cseq_number] = (data, max(resend_at, time.monotonic() + 4.0), give_up)
                return reinvite_at
            self.pending.pop(cseq_number, None)
            if method == "INVITE":
                if cseq_number == 1:
                    self.result.invite_status = status
                if status >= 300:
                    if cseq_number == 1:
                        self.finished = True
                    return reinvite_at
                self.remote_tag = _tag_of(headers["to"][0])
                self.remote_target = _uri_in(headers["contact"][0])
                self._ack(cseq_number)
                self._start_t38(body)
                if cseq_number == 1 and self.plan.mode == "audio-reinvite":
                    return time.monotonic() + self.plan.reinvite_after
            elif method == "BYE":
                self.finished = True
            return reinvite_at
        method = first.split()[0]
        if method == "INVITE":
            self.result.gateway_reinvite = True
            _, _, kind = _sdp_media(body)
            if kind == "image" and self.plan.refuse_t38:
                self._send_sip(self._response(488, "Not Acceptable Here", headers))
                return reinvite_at
            # The gateway's re-INVITE to T.38: answer with our T.38 parameters.
            answer = self.sdp(kind == "image")
            self._send_sip(self._response(200, "OK", headers, answer))
            self._start_t38(body)
        elif method == "BYE":
            self.result.bye_from_gateway = True
            self._send_sip(self._response(200, "OK", headers))
        elif method == "ACK":
            pass
        else:
            self._send_sip(self._response(200, "OK", headers))
        return reinvite_at
