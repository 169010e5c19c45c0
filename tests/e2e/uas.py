"""The far end that ANSWERS: a raw-SIP UAS plus a real SpanDSP T.38 fax receiver.

The counterpart of ``tests.e2e.farend`` (which calls and sends): this one is called and
receives, so end-to-end tests can make ``t38gw`` send a fax through an outbound trunk.
The SIP side is hand-written text after RFC 3261's examples (sections 24-25) and shares
no code with our ``sip`` package, so the two cannot share a bug; only the tiny text
helpers of ``farend`` are reused.  The fax side is SpanDSP's T.38 terminal as the called
party, advanced every 20 ms in real time, its IFPs framed with our UDPTL sender/receiver
on a loopback socket (as ``farend`` does).

One ``FarEndReceiver`` answers one call: it serves SIP on 127.0.0.1 until that call is
over (BYE either way, a final refusal, CANCEL), ``stop()`` or ``plan.max_seconds``.
Everything runs in one thread with ``select`` and bounded waits.
"""

from __future__ import annotations

import hashlib
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.farend import _tag_of, _uri_in, parse_sip
from tests.peers.spandsp import SpandspT38Terminal
from udptl.receiver import IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

TICK = 0.02
T1 = 0.5  # RFC 3261 17.1.1.1
T2 = 4.0
MODES = ("t38", "audio-wait", "audio-reinvite", "busy", "decline", "no-answer", "refuse-t38")
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 401: "Unauthorized", 403: "Forbidden",
           407: "Proxy Authentication Required", 481: "Call/Transaction Does Not Exist",
           486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
           500: "Server Internal Error", 501: "Not Implemented", 603: "Decline"}
# RFC 3261 7.3.3: compact header names.
COMPACT = {"i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"


@dataclass
class AnswerPlan:
    """What the answering far end does; see the module docstring and ``MODES``.

    ``mode``: "t38" (answer a T.38 offer with T.38; an audio-only offer with audio, then
    wait for the caller's re-INVITE), "audio-wait" (answer audio, wait for the caller's
    re-INVITE to T.38), "audio-reinvite" (answer audio, then re-INVITE to T.38 ourselves
    ``reinvite_after`` s after the ACK), "busy" (486), "decline" (603), "no-answer" (180,
    never a final answer; CANCEL -> 200 + 487), "refuse-t38" (audio; 488 to T.38).  In the
    audio modes an INVITE offering only T.38 is answered with T.38 (an answer cannot add
    an m= line, RFC 3264 6).  ``challenge`` 401/407 challenges INVITEs until one carries
    valid MD5 qop=auth credentials for ``username``/``password``; wrong ones get 403.
    """

    mode: str = "t38"
    challenge: int | None = None
    realm: str = "farend.test"
    username: str = "gateway"
    password: str = "secret"
    ecm: bool = True
    ident: str = "+1 555 0200"
    ring_seconds: float = 0.0  # 180 Ringing for this long before the final answer
    reinvite_after: float = 1.0  # "audio-reinvite": seconds after the ACK
    bye_after_phase_e: float = 5.0  # caller still up this long after T.30 phase E -> we send BYE
    t38_version: int = 0  # the highest T38FaxVersion we answer/offer
    max_seconds: float = 90.0
    linger: float = 0.5  # after the call, keep answering retransmissions this long
    spandsp_log: bool | Callable[[int, str], None] = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.challenge not in (None, 401, 407):
            raise ValueError("challenge must be None, 401 or 407")


@dataclass
class UasResult:
    invites: list[str] = field(default_factory=list)  # raw text of each INVITE transaction (no retransmissions)
    challenges_sent: int = 0
    auth_ok: bool | None = None  # None: no credentials checked
    auth_failure: str = ""
    responses_sent: list[int] = field(default_factory=list)  # to INVITEs, first transmission only
    phase_e_status: int | None = None  # SpanDSP T30_ERR_*
    pages: int = 0
    tiff: Path | None = None
    remote_ident: str = ""  # the TSI SpanDSP received
    t30_stats: dict = field(default_factory=dict)
    media_sequence: list[str] = field(default_factory=list)  # e.g. ["audio", "t38"]
    t38_offers: list[dict[str, str]] = field(default_factory=list)  # T38* attributes of each T.38 offer received
    reinvites_received: int = 0
    reinvites_sent: int = 0
    glare_491_sent: int = 0
    glare_491_received: int = 0
    refused_488: int = 0
    bye_received: bool = False
    bye_sent: bool = False
    cancelled: bool = False
    final_sip_event: str = ""  # bye-received, bye-sent, rejected-<code>, cancelled, max-seconds, stopped, ...
    sip_log: list[tuple[str, str]] = field(default_factory=list)  # ("in"/"out", first line)
    udptl_packets_received: int = 0
    registrations: list[int] = field(default_factory=list)  # our answer to each REGISTER
    malformed: list[str] = field(default_factory=list)  # SIP messages we could not handle (why, first bytes)
    seconds: float = 0.0
    error: str = ""


# -- text helpers -------------------------------------------------------------------


def parse_message(data: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    """farend.parse_sip with compact header names expanded (RFC 3261 7.3.3)."""
    first, raw_headers, body = parse_sip(data)
    headers: dict[str, list[str]] = {}
    for name, values in raw_headers.items():
        headers.setdefault(COMPACT.get(name, name), []).extend(values)
    if "content-length" in headers and "content-length" not in raw_headers:
        body = data.partition(b"\r\n\r\n")[2][:int(headers["content-length"][0] or 0)]
    return first, headers, body


def top_via_branch(headers: dict[str, list[str]]) -> str:
    top = headers.get("via", [""])[0].split(",")[0]
    for part in top.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "branch":
            return value
    return ""


def auth_params(value: str) -> tuple[str, dict[str, str]]:
    """('Digest', {param: value}) of a challenge or credentials header value."""
    scheme, _, rest = value.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest)}
    return scheme, params


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_response_md5(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                        nc: str, cnonce: str, qop: str = "auth") -> str:
    """RFC 2617 3.2.2.1 / RFC 7616 3.4.1 with qop=auth, MD5."""
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass
class SdpMedia:
    kind: str
    port: int
    proto: str
    formats: list[str]
    address: str
    attributes: dict[str, str]


def sdp_media(body: bytes) -> list[SdpMedia]:
    """Every m= line of an SDP body with its connection address (RFC 4566 5.7: the media
    c= overrides the session one) and a=name:value attributes."""
    session_address = ""
    media: list[SdpMedia] = []
    for line in body.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("c="):
            parts = line[2:].split()
            address = parts[2].split("/")[0] if len(parts) >= 3 else ""
            if media:
                media[-1].address = address
            else:
                session_address = address
        elif line.startswith("m="):
            parts = line[2:].split()
            if len(parts) >= 3:
                media.append(SdpMedia(parts[0], int(parts[1]), parts[2], parts[3:], session_address, {}))
        elif line.startswith("a=") and media:
            name, _, value = line[2:].partition(":")
            media[-1].attributes[name.strip().lower()] = value.strip()
    return media


def t38_attributes(media: SdpMedia) -> dict[str, str]:
    return {name: value for name, value in media.attributes.items() if name.startswith("t38")}


# -- the peer -------------------------------------------------------------------------


@dataclass
class _ServerInvite:
    """An INVITE server transaction (RFC 3261 17.2.1) and what we owe it."""

    branch: str
    cseq: int
    headers: dict[str, list[str]]
    body: bytes
    source: tuple[str, int]
    reinvite: bool
    last_response: bytes = b""
    final_status: int | None = None
    answer_at: float | None = None  # when the final response is due
    resend_at: float = float("inf")
    interval: float = T1
    give_up: float = float("inf")
    acked: bool = False
    challenge: bool = False


@dataclass
class _ClientRequest:
    method: str
    cseq: int
    branch: str
    data: bytes
    resend_at: float
    interval: float
    give_up: float
    provisional: bool = False


class FarEndReceiver:
    """One answering fax; see the module docstring.  ``port`` is the SIP UDP port."""

    def __init__(self, plan: AnswerPlan, workdir: Path, *, seed: int = 1) -> None:
        self.plan = plan
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)  # SpanDSP writes the received TIFF here
        self.rng = random.Random(seed)
        self.result = UasResult()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.port: int = self.sip.getsockname()[1]
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.bind(("127.0.0.1", 0))
        self.media_port: int = self.media.getsockname()[1]
        self.tiff = self.workdir / f"uas-rx-{self.port}-{self.rng.randrange(10**9)}.tif"
        self.local_tag = self._rand(10)
        self.sdp_session = self.rng.randrange(1, 10**9)
        self.sdp_version = 0
        self.nonces: set[str] = set()
        # Dialog state (RFC 3261 12): set by the INVITE we answer with 2xx.
        self.call_id: str | None = None
        self.remote_from = ""  # the caller's From value (with its tag): our To
        self.local_to = ""  # the INVITE's To value plus our tag: our From
        self.remote_target = ""
        self.remote_address: tuple[str, int] | None = None
        self.local_cseq = self.rng.randrange(1, 1000)
        self.remote_cseq = -1
        self.confirmed = False
        self.server_invites: dict[str, _ServerInvite] = {}
        self.current: _ServerInvite | None = None  # the INVITE transaction still without a final response
        self.client: dict[int, _ClientRequest] = {}
        self.reinvite_at: float | None = None
        self.reinvite_attempts = 0
        self.late_offer: _ServerInvite | None = None  # we offered in a 2xx; the ACK answers
        self.last_ack: tuple[int, str, str | None] | None = None  # (CSeq, branch, To) of our last ACK
        # Media.
        self.media_kind: str | None = None
        self.media_remote: tuple[str, int] | None = None
        self.fax: SpandspT38Terminal | None = None
        self.udptl_sender: UdptlSender | None = None
        self.udptl_receiver: UdptlReceiver | None = None
        self.phase_e_at: float | None = None
        self.bye_received_at: float | None = None
        self.done_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifetime ---------------------------------------------------------------------
    def start(self) -> FarEndReceiver:
        """Run in a background thread; ``wait()`` or ``stop()`` to collect the result."""
        self._thread = threading.Thread(target=self.run, name=f"uas-{self.port}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> UasResult:
        """Join the background thread (bounded by ``timeout``, default max_seconds + 10)."""
        if self._thread is not None:
            self._thread.join(self.plan.max_seconds + 10 if timeout is None else timeout)
        return self.result

    def stop(self, timeout: float = 10.0) -> UasResult:
        self._stop.set()
        return self.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> FarEndReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> UasResult:
        start = time.monotonic()
        next_tick = start
        try:
            while True:
                now = time.monotonic()
                if self._stop.is_set():
                    self.result.final_sip_event = self.result.final_sip_event or "stopped"
                    break
                if now - start >= self.plan.max_seconds:
                    self.result.final_sip_event = self.result.final_sip_event or "max-seconds"
                    break
                if self.done_at is not None and now - self.done_at >= self.plan.linger:
                    break
                timeout = min(0.1, max(0.0, next_tick - now)) if self.fax is not None else 0.05
                readable, _, _ = select.select([self.sip, self.media], [], [], timeout)
                if self.sip in readable:
                    data, source = self.sip.recvfrom(65535)
                    if data.strip():
                        try:
                            self._on_sip(data, source)
                        except (KeyError, ValueError, IndexError) as exc:  # a malformed message: note it, go on
                            self.result.malformed.append(f"{type(exc).__name__}: {exc}: {data[:200]!r}")
                if self.media in readable:
                    data, _ = self.media.recvfrom(65535)
                    self._on_media(data)
                now = time.monotonic()
                self._timers(now)
                while self.fax is not None and now >= next_tick:
                    next_tick += TICK
                    self._tick(now)
                    if next_tick < now - 1.0:
                        next_tick = now  # fell far behind (a slow box): do not race to catch up
                if self.fax is None:
                    next_tick = now
        except BaseException as exc:  # the thread must leave a result, not a traceback
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._close_fax()
            self.result.seconds = time.monotonic() - start
            self.sip.close()
            self.media.close()
        return self.result

    def _finish(self, event: str) -> None:
        if self.done_at is None:
            self.done_at = time.monotonic()
            self.result.final_sip_event = event

    # -- SIP out ----------------------------------------------------------------------
    def _rand(self, n: int) -> str:
        return "".join(self.rng.choice("abcdef0123456789") for _ in range(n))

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        self.result.sip_log.append(("out", data.split(b"\r\n", 1)[0].decode()))
        self.sip.sendto(data, address)

    @property
    def contact(self) -> str:
        return f"<sip:uas@127.0.0.1:{self.port}>"

    def _response(self, status: int, headers: dict[str, list[str]], body: bytes = b"",
                  extra: list[str] | None = None) -> bytes:
        """RFC 3261 8.2.6.2: Via (all, in order), From, Call-ID, CSeq copied; To gets our tag."""
        lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}"]
        lines += [f"Via: {via}" for via in headers.get("via", [])]
        to = headers.get("to", [""])[0]
        if status > 100 and _tag_of(to) is None:
            to += f";tag={self.local_tag}"
        lines += [f"From: {headers.get('from', [''])[0]}", f"To: {to}",
                  f"Call-ID: {headers.get('call-id', [''])[0]}", f"CSeq: {headers.get('cseq', [''])[0]}"]
        method = headers.get("cseq", ["0 X"])[0].split()[-1]
        if method == "INVITE" and 100 < status < 300:
            lines.append(f"Contact: {self.contact}")  # RFC 3261 12.1.1
        if status in (200, 405, 501) and method in ("INVITE", "OPTIONS"):
            lines.append(f"Allow: {ALLOW}")
        lines += extra or []
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _respond(self, status: int, headers: dict[str, list[str]], source: tuple[str, int], body: bytes = b"",
                 extra: list[str] | None = None) -> bytes:
        data = self._response(status, headers, body, extra)
        self._send(data, source)
        return data

    def _request(self, method: str, cseq: int, branch: str, body: bytes = b"", to: str | None = None) -> bytes:
        """An in-dialog request (RFC 3261 12.2.1.1): our From is the INVITE's To with our tag."""
        lines = [f"{method} {self.remote_target} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
                 "Max-Forwards: 70", f"From: {self.local_to}", f"To: {to or self.remote_from}",
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", f"Contact: {self.contact}"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _send_request(self, method: str, body: bytes = b"") -> int:
        assert self.remote_address is not None
        cseq = self.local_cseq
        self.local_cseq += 1
        branch = "z9hG4bK" + self._rand(12)
        data = self._request(method, cseq, branch, body)
        now = time.monotonic()
        self.client[cseq] = _ClientRequest(method, cseq, branch, data, now + T1, T1, now + 64 * T1)
        self._send(data, self.remote_address)
        return cseq

    def _send_bye(self) -> None:
        if not self.result.bye_sent and not self.result.bye_received:
            self.result.bye_sent = True
            self._send_request("BYE")

    # -- SDP ----------------------------------------------------------------------------
    def _sdp(self, lines: list[str]) -> bytes:
        self.sdp_version += 1  # RFC 3264 8: each new description bumps the o= version
        head = ["v=0", f"o=farend {self.sdp_session} {self.sdp_version} IN IP4 127.0.0.1", "s=-",
                "c=IN IP4 127.0.0.1", "t=0 0"]
        return ("\r\n".join(head + lines) + "\r\n").encode()

    def _audio_lines(self, formats: list[str] | None = None) -> list[str]:
        chosen = "0" if formats is None or "0" in formats else "8"
        name = {"0": "PCMU", "8": "PCMA"}[chosen]
        return [f"m=audio {self.media_port} RTP/AVP {chosen}", f"a=rtpmap:{chosen} {name}/8000", "a=ptime:20",
                "a=sendrecv"]

    def _t38_lines(self, offer: dict[str, str] | None) -> list[str]:
        offer = offer or {}
        version = min(int(offer.get("t38faxversion", self.plan.t38_version) or 0), self.plan.t38_version)
        rate_management = offer.get("t38faxratemanagement", "transferredTCF")
        error_correction = offer.get("t38faxudpec", "t38UDPRedundancy")
        if error_correction not in ("t38UDPRedundancy", "t38UDPFEC", "t38UDPNoEC"):
            error_correction = "t38UDPRedundancy"
        return [f"m=image {self.media_port} udptl t38", f"a=T38FaxVersion:{version}", "a=T38MaxBitRate:14400",
                f"a=T38FaxRateManagement:{rate_management}", "a=T38FaxMaxBuffer:2000", "a=T38FaxMaxDatagram:400",
                f"a=T38FaxUdpEC:{error_correction}"]

    @staticmethod
    def _attributes_of(lines: list[str]) -> dict[str, str]:
        return {line[2:].split(":", 1)[0].lower(): line.split(":", 1)[1] for line in lines if line.startswith("a=")}

    def _local_t38(self) -> dict[str, str]:
        """The T.38 attributes we offer (the peer answers within them)."""
        return self._attributes_of(self._t38_lines(None))

    def _answer(self, offer: list[SdpMedia], reinvite: bool) -> tuple[bytes, SdpMedia, dict[str, str]] | None:
        """Our answer (RFC 3264 6: one m= line per offered one, the unused ones port 0),
        the offered stream we took and our T.38 attributes; None -> 488."""
        images = [m for m in offer if m.kind == "image" and m.port and m.proto.lower() == "udptl"]
        audios = [m for m in offer if m.kind == "audio" and m.port and {"0", "8"} & set(m.formats)]
        for m in images:
            self.result.t38_offers.append(t38_attributes(m))
        if self.plan.mode == "refuse-t38":
            order = [audios]
        elif reinvite or self.plan.mode == "t38":
            order = [images, audios]
        else:
            order = [audios, images]
        chosen = next((group[0] for group in order if group), None)
        if chosen is None:
            return None
        lines: list[str] = []
        ours: dict[str, str] = {}
        for m in offer:
            if m is not chosen:
                lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats) or '0'}")
            elif m.kind == "image":
                t38 = self._t38_lines(t38_attributes(m))
                lines += t38
                ours = self._attributes_of(t38)
            else:
                lines += self._audio_lines(m.formats)
        return self._sdp(lines), chosen, ours

    # -- media ----------------------------------------------------------------------------
    def _use_media(self, stream: SdpMedia, local_t38: dict[str, str]) -> None:
        """Both sides agreed on ``stream`` (RFC 3264): start T.38 or note audio."""
        kind = "t38" if stream.kind == "image" else "audio"
        self.media_remote = (stream.address or "127.0.0.1", stream.port)
        if kind != self.media_kind:
            self.media_kind = kind
            self.result.media_sequence.append(kind)
        if kind == "t38" and self.fax is None:
            remote = t38_attributes(stream)
            version = min(int(remote.get("t38faxversion", "0") or 0), int(local_t38.get("t38faxversion", "0") or 0))
            error_correction = local_t38.get("t38faxudpec") or remote.get("t38faxudpec", "t38UDPRedundancy")
            scheme = {"t38UDPRedundancy": "redundancy", "t38UDPFEC": "fec"}.get(error_correction, "none")
            max_datagram = int(remote.get("t38faxmaxdatagram", "400") or 400)
            self.udptl_sender = UdptlSender(error_correction=scheme, redundancy_depth=3,
                                            max_datagram=max(max_datagram, 6), rng=self.rng)
            self.udptl_receiver = UdptlReceiver(version)
            rate_management = (local_t38.get("t38faxratemanagement") or remote.get("t38faxratemanagement")
                               or "transferredTCF")
            self.fax = SpandspT38Terminal(calling_party=False, on_ifp=self._on_ifp, version=version,
                                          ecm=self.plan.ecm, ident=self.plan.ident, rx_tiff=self.tiff,
                                          transferred_tcf=rate_management.lower() != "localtcf",
                                          log=self.plan.spandsp_log)
            self.result.tiff = self.tiff

    def _on_ifp(self, ifp: bytes, count: int) -> None:
        if self.udptl_sender is None or self.media_remote is None or self.media_kind != "t38":
            return
        for _ in range(max(count, 1)):
            self.media.sendto(self.udptl_sender.datagram_for(ifp), self.media_remote)

    def _on_media(self, data: bytes) -> None:
        if self.fax is None or self.udptl_receiver is None or self.media_kind != "t38":
            return  # audio (RTP) is not decoded: this peer faxes over T.38 only
        self.result.udptl_packets_received += 1
        for item in self.udptl_receiver.datagram_received(data, time.monotonic()):
            if isinstance(item, IfpReceived):
                self.fax.rx_ifp(item.raw, item.seq)

    def _tick(self, now: float) -> None:
        fax, receiver = self.fax, self.udptl_receiver
        assert fax is not None and receiver is not None
        deadline = receiver.next_deadline()
        if deadline is not None and deadline <= now:
            for item in receiver.handle_timer(now):
                if isinstance(item, IfpReceived):
                    fax.rx_ifp(item.raw, item.seq)
        if self.phase_e_at is None:
            fax.advance(160)
        if fax.phase_e_status is not None and self.phase_e_at is None:
            self.phase_e_at = now
            self._record_fax(fax)

    def _record_fax(self, fax: SpandspT38Terminal) -> None:
        self.result.phase_e_status = fax.phase_e_status
        self.result.remote_ident = fax.remote_ident
        self.result.t30_stats = fax.stats()
        self.result.pages = self.result.t30_stats.get("pages_rx", 0)

    def _close_fax(self) -> None:
        if self.fax is not None:
            if self.result.phase_e_status is None:
                if self.fax.phase_e_status is None and self.fax.call_active:
                    self.fax.terminate()
                self._record_fax(self.fax)
            self.fax.close()
            self.fax = None

    # -- timers ---------------------------------------------------------------------------
    def _timers(self, now: float) -> None:
        current = self.current
        if current is not None and current.answer_at is not None and now >= current.answer_at:
            current.answer_at = None
            self._final_answer(current)
        for txn in self.server_invites.values():
            # RFC 3261 17.2.1 (Timer G) and 13.3.1.4: resend the final response until the ACK.
            if txn.final_status is not None and not txn.acked:
                if now >= txn.give_up:
                    txn.acked = True  # Timer H / 64*T1: give up
                    if txn.final_status < 300 and not txn.reinvite:
                        self._send_bye()  # RFC 3261 13.3.1.4: no ACK -> end the session
                    elif not txn.challenge and not txn.reinvite:
                        self._finish("ack-timeout")
                elif now >= txn.resend_at:
                    txn.interval = min(2 * txn.interval, T2)
                    txn.resend_at = now + txn.interval
                    self._send(txn.last_response, txn.source)
        for request in list(self.client.values()):
            if now >= request.give_up:
                del self.client[request.cseq]
                self.result.error = self.result.error or f"no final response to our {request.method}"
                if request.method == "BYE":
                    self._finish("bye-timeout")
            elif now >= request.resend_at:
                if request.method == "INVITE":
                    if request.provisional:  # RFC 3261 17.1.1.2: a provisional stops Timer A
                        request.resend_at = float("inf")
                        continue
                    request.interval *= 2
                else:  # RFC 3261 17.1.2.2: Timer E doubles up to T2, T2 once a provisional arrived
                    request.interval = T2 if request.provisional else min(2 * request.interval, T2)
                request.resend_at = now + request.interval
                self._send(request.data, self.remote_address or ("127.0.0.1", 5060))
        if self.reinvite_at is not None and now >= self.reinvite_at:
            self.reinvite_at = None
            if self.media_kind != "t38" and self.current is None and not self._pending_invite():
                self.reinvite_attempts += 1
                self.result.reinvites_sent += 1
                self._send_request("INVITE", self._sdp(self._t38_lines(None)))
        if self.phase_e_at is not None and not self.result.bye_received and not self.result.bye_sent \
                and now - self.phase_e_at >= self.plan.bye_after_phase_e:
            self._send_bye()
        if self.bye_received_at is not None and self.done_at is None:
            # The caller hung up: give in-flight UDPTL a moment to reach SpanDSP, then end.
            if self.fax is None or self.phase_e_at is not None or now - self.bye_received_at >= 1.0:
                self._finish("bye-received")

    def _pending_invite(self) -> bool:
        return any(request.method == "INVITE" for request in self.client.values())

    # -- SIP in -----------------------------------------------------------------------------
    def _on_sip(self, data: bytes, source: tuple[str, int]) -> None:
        first, headers, body = parse_message(data)
        self.result.sip_log.append(("in", first))
        if first.startswith("SIP/2.0"):
            self._on_response(first, headers, body)
            return
        method = first.split()[0]
        if method == "INVITE":
            self._on_invite(data, first, headers, body, source)
        elif method == "ACK":
            self._on_ack(headers, body)
        elif method == "CANCEL":
            self._on_cancel(headers, source)
        elif method == "BYE":
            if not self._in_dialog(headers):
                self._respond(481, headers, source)
                return
            self._respond(200, headers, source)
            if not self.result.bye_received:
                self.result.bye_received = True
                self.bye_received_at = time.monotonic()
        elif method == "REGISTER":
            self._on_register(first, headers, source)
        elif method == "OPTIONS":
            self._respond(200, headers, source, extra=["Accept: application/sdp"])
        else:
            self._respond(501, headers, source)

    def _in_dialog(self, headers: dict[str, list[str]]) -> bool:
        return (self.call_id is not None and headers.get("call-id", [""])[0] == self.call_id
                and _tag_of(headers.get("to", [""])[0]) == self.local_tag)

    def _on_invite(self, data: bytes, first: str, headers: dict[str, list[str]], body: bytes,
                   source: tuple[str, int]) -> None:
        branch = top_via_branch(headers)
        cseq = int(headers.get("cseq", ["0"])[0].split()[0])
        known = self.server_invites.get(branch)
        if known is not None:  # RFC 3261 17.2.1: a retransmission gets the last response again
            if known.last_response:
                self._send(known.last_response, known.source)
            return
        self.result.invites.append(data.decode("utf-8", "replace"))
        reinvite = _tag_of(headers.get("to", [""])[0]) is not None
        txn = _ServerInvite(branch, cseq, headers, body, source, reinvite)
        self.server_invites[branch] = txn
        if reinvite:
            self._on_reinvite(txn)
            return
        call_id = headers.get("call-id", [""])[0]
        if self.call_id is not None and call_id != self.call_id or self.current is not None \
                or self.done_at is not None:
            self._final(txn, 486)  # one call per peer
            return
        self._provisional(txn, 100)
        if self.plan.challenge is not None and not self._authorized(txn, first):
            return
        self.current = txn
        if self.plan.mode in ("busy", "decline") and self.plan.ring_seconds <= 0:
            self._final_answer(txn)
            return
        self._provisional(txn, 180)
        if self.plan.mode != "no-answer":
            txn.answer_at = time.monotonic() + self.plan.ring_seconds

    def _credentials_problem(self, headers: dict[str, list[str]], method: str, request_uri: str) -> str | None:
        """None: valid credentials; "" : none for our realm (challenge); else what is wrong.

        RFC 3261 22.2/22.3 with RFC 7616 3.4 (MD5, qop=auth), checked by hand."""
        plan = self.plan
        name = "authorization" if plan.challenge == 401 else "proxy-authorization"
        credentials = [auth_params(value) for value in headers.get(name, [])]
        mine = [params for scheme, params in credentials if scheme.lower() == "digest"
                and params.get("realm") == plan.realm]
        if not mine:
            return ""
        params = mine[0]
        if params.get("nonce") not in self.nonces:
            return "a nonce we never issued"
        if params.get("username") != plan.username:
            return f"unknown username {params.get('username')!r}"
        if params.get("algorithm", "MD5").upper() != "MD5":
            return f"algorithm {params.get('algorithm')} not the challenged MD5"
        if params.get("qop") != "auth" or not params.get("cnonce") or not params.get("nc"):
            return "qop=auth credentials need qop, cnonce and nc (RFC 7616 3.4)"
        if params.get("uri") != request_uri:
            return f"uri {params.get('uri')!r} is not the Request-URI {request_uri!r}"  # RFC 7616 3.4.6
        expected = digest_response_md5(plan.username, plan.realm, plan.password, method, params["uri"],
                                       params["nonce"], params["nc"], params["cnonce"])
        if params.get("response", "").lower() != expected:
            return "wrong response digest (password)"
        return None

    def _challenge_header(self) -> str:
        nonce = self._rand(24)
        self.nonces.add(nonce)
        header = "WWW-Authenticate" if self.plan.challenge == 401 else "Proxy-Authenticate"
        return f'{header}: Digest realm="{self.plan.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'

    def _authorized(self, txn: _ServerInvite, first: str) -> bool:
        """Challenge (401/407), refuse (403) or let the INVITE through; answers itself."""
        problem = self._credentials_problem(txn.headers, "INVITE", first.split()[1])
        if problem == "" and self.result.challenges_sent >= 3:
            problem = "no credentials after 3 challenges"
        if problem == "":
            self.result.challenges_sent += 1
            txn.challenge = True
            self._final(txn, self.plan.challenge or 401, extra=[self._challenge_header()])
            return False
        if problem is not None:
            self.result.auth_ok, self.result.auth_failure = False, problem
            self._final(txn, 403)
            return False
        self.result.auth_ok = True
        return True

    def _on_register(self, first: str, headers: dict[str, list[str]], source: tuple[str, int]) -> None:
        """A trunk registering with us as its registrar (RFC 3261 10.3): challenged like INVITEs."""
        if self.plan.challenge is not None:
            problem = self._credentials_problem(headers, "REGISTER", first.split()[1])
            if problem == "":
                self.result.registrations.append(self.plan.challenge)
                self._respond(self.plan.challenge, headers, source, extra=[self._challenge_header()])
                return
            if problem is not None:
                self.result.registrations.append(403)
                self._respond(403, headers, source)
                return
        expires = (headers.get("expires") or ["3600"])[0]
        extra = [f"Contact: {contact};expires={expires}" for contact in headers.get("contact", [])]
        self.result.registrations.append(200)
        self._respond(200, headers, source, extra=extra)

    def _on_reinvite(self, txn: _ServerInvite) -> None:
        if not self._in_dialog(txn.headers):
            self._final(txn, 481)
            return
        self.result.reinvites_received += 1
        if self._pending_invite():
            self.result.glare_491_sent += 1  # RFC 3261 14.2: our own re-INVITE is pending
            self._final(txn, 491)
            return
        if self.current is not None:
            self._final(txn, 500, extra=["Retry-After: 1"])  # RFC 3261 14.2: we are still answering one
            return
        self.remote_cseq = txn.cseq
        if not txn.body:
            self.late_offer = txn
            lines = self._t38_lines(None) if self.media_kind == "t38" else self._audio_lines()
            self._final(txn, 200, self._sdp(lines))
            return
        answered = self._answer(sdp_media(txn.body), reinvite=True)
        if answered is None or (answered[1].kind == "image" and self.plan.mode == "refuse-t38"):
            self.result.refused_488 += 1
            self._final(txn, 488)
            return
        answer, stream, ours = answered
        self._final(txn, 200, answer)
        self._use_media(stream, ours)

    def _final_answer(self, txn: _ServerInvite) -> None:
        """The final response the plan gives the initial INVITE."""
        mode = self.plan.mode
        if mode == "busy":
            self._final(txn, 486)
            return
        if mode == "decline":
            self._final(txn, 603)
            return
        if mode == "no-answer":
            return
        headers = txn.headers
        if txn.body:
            answered = self._answer(sdp_media(txn.body), reinvite=False)
            if answered is None:
                self.result.refused_488 += 1
                self._final(txn, 488)
                return
            body, stream, ours = answered
        else:  # RFC 3264 / RFC 3261 13.2.1: no offer in the INVITE -> we offer in the 2xx
            self.late_offer = txn
            body = self._sdp(self._t38_lines(None) if mode == "t38" else self._audio_lines())
            stream, ours = None, {}
        self.call_id = headers["call-id"][0]
        self.remote_from = headers["from"][0]
        to = headers["to"][0]
        self.local_to = to if _tag_of(to) else f"{to};tag={self.local_tag}"
        self.remote_target = _uri_in(headers["contact"][0]) if headers.get("contact") else \
            f"sip:{txn.source[0]}:{txn.source[1]}"
        self.remote_address = self._target_address(self.remote_target, txn.source)
        self.remote_cseq = txn.cseq
        self._final(txn, 200, body)
        if stream is not None:
            self._use_media(stream, ours)

    @staticmethod
    def _target_address(uri: str, fallback: tuple[str, int]) -> tuple[str, int]:
        """host:port of a sip: URI when it is an IPv4 literal (loopback tests), else where the INVITE came from."""
        host_port = uri.split(":", 1)[1].split(";")[0].split("?")[0].rsplit("@", 1)[-1]
        host, _, port = host_port.partition(":")
        try:
            socket.inet_aton(host)
        except OSError:
            return fallback
        return host, int(port or 5060)

    def _provisional(self, txn: _ServerInvite, status: int) -> None:
        txn.last_response = self._respond(status, txn.headers, txn.source)

    def _final(self, txn: _ServerInvite, status: int, body: bytes = b"", extra: list[str] | None = None) -> None:
        txn.last_response = self._respond(status, txn.headers, txn.source, body, extra)
        txn.final_status = status
        self.result.responses_sent.append(status)
        now = time.monotonic()
        txn.interval = T1
        txn.resend_at = now + T1
        txn.give_up = now + 64 * T1
        if self.current is txn:
            self.current = None
        if status >= 300 and not txn.reinvite and not txn.challenge and self.call_id is None:
            self.result.final_sip_event = self.result.final_sip_event or f"rejected-{status}"

    def _on_ack(self, headers: dict[str, list[str]], body: bytes) -> None:
        branch = top_via_branch(headers)
        cseq = int(headers.get("cseq", ["0"])[0].split()[0])
        txn = self.server_invites.get(branch)
        if txn is None or txn.final_status is None or txn.final_status < 300:
            # RFC 3261 13.2.2.4 / 17.1.1.3: the ACK for a 2xx is its own transaction; match it by CSeq.
            txn = next((t for t in self.server_invites.values() if t.cseq == cseq and t.final_status == 200
                        and headers.get("call-id", [""])[0] == self.call_id), None)
        if txn is None or txn.acked:
            return
        txn.acked = True
        if txn.final_status is not None and txn.final_status >= 300:
            if not txn.reinvite and not txn.challenge:
                self._finish("cancelled" if self.result.cancelled else f"rejected-{txn.final_status}")
            return
        if self.late_offer is txn:
            self.late_offer = None
            accepted = [m for m in sdp_media(body) if m.port]
            if accepted:
                self._use_media(accepted[0], self._local_t38() if accepted[0].kind == "image" else {})
        if not txn.reinvite:
            self.confirmed = True
            if self.plan.mode == "audio-reinvite" and self.media_kind != "t38":
                self.reinvite_at = time.monotonic() + self.plan.reinvite_after

    def _on_cancel(self, headers: dict[str, list[str]], source: tuple[str, int]) -> None:
        txn = self.server_invites.get(top_via_branch(headers))
        if txn is None:
            self._respond(481, headers, source)  # RFC 3261 9.2
            return
        self._respond(200, headers, source)
        if txn.final_status is None:
            self.result.cancelled = True
            self._final(txn, 487)  # RFC 3261 9.2: the INVITE gets 487
            self.result.final_sip_event = "cancelled"

    def _on_response(self, first: str, headers: dict[str, list[str]], body: bytes) -> None:
        status = int(first.split()[1])
        number, _, method = headers.get("cseq", ["0 X"])[0].partition(" ")
        cseq = int(number)
        request = self.client.get(cseq)
        if method.strip() == "INVITE" and status >= 200:
            # The ACK: a new transaction for 2xx (RFC 3261 13.2.2.4), the INVITE's branch otherwise (17.1.1.3).
            if request is not None:
                branch = request.branch if status >= 300 else "z9hG4bK" + self._rand(12)
                to = headers.get("to", [self.remote_from])[0] if status >= 300 else None
                self.last_ack = (cseq, branch, to)
            if self.last_ack is not None and self.last_ack[0] == cseq:  # also a retransmitted final response
                _, branch, to = self.last_ack
                self._send(self._request("ACK", cseq, branch, to=to), self.remote_address or ("127.0.0.1", 5060))
        if request is None:
            return
        if status < 200:
            request.provisional = True
            return
        del self.client[cseq]
        if request.method == "BYE":
            self._finish("bye-sent")
        elif request.method == "INVITE":
            if status == 200:
                streams = [m for m in sdp_media(body) if m.port]
                if streams:
                    self._use_media(streams[0], self._local_t38() if streams[0].kind == "image" else {})
            elif status == 491:
                # RFC 3261 14.1: we do not own the Call-ID, so retry after 0-2 s.
                self.result.glare_491_received += 1
                if self.reinvite_attempts < 4:
                    self.reinvite_at = time.monotonic() + self.rng.uniform(0.0, 2.0)
            elif status == 488:
                self.result.refused_488 += 1
