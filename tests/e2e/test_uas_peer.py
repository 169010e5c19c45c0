"""Self-test of the answering far end (``tests.e2e.uas``) before it judges the gateway.

(a) The calling far end (raw SIP + SpanDSP sender) calls it over loopback and SpanDSP on
both sides must finish with T30_ERR_OK and the pages must arrive pixel for pixel; (b) a
hand-written INVITE is challenged with Digest, a correct retry is answered, a wrong one
refused; (c) busy, decline, no-answer + CANCEL, and re-INVITE glare give their RFC 3261
answers.  The SIP text in this file is written by hand, independent of both peers' code.
"""

from __future__ import annotations

import hashlib
import random
import socket
import time

import pytest

from tests.e2e.farend import CallPlan, FarEnd, parse_sip
from tests.e2e.support import tiff_pages
from tests.e2e.uas import AnswerPlan, FarEndReceiver, UasResult
from tests.peers.spandsp import T30_ERR_OK
from tests.t38gw.t30.pages import chart_page, random_page

pytestmark = pytest.mark.realtime


def source_pages(seed: int, count: int, rows: int = 300) -> list[tuple[bytes, int, int]]:
    rng = random.Random(seed)
    pages = [(chart_page(1, 1728, max_rows=rows), 1728, rows)]
    pages += [(random_page(rng, 1728, rows), 1728, rows) for _ in range(count - 1)]
    return pages


def call(uas_plan: AnswerPlan, caller_plan: CallPlan, tmp_path) -> tuple[object, UasResult]:
    receiver = FarEndReceiver(uas_plan, tmp_path).start()
    try:
        caller = FarEnd(("127.0.0.1", receiver.port), caller_plan, tmp_path).run()
        result = receiver.wait(uas_plan.max_seconds + 10)
    finally:
        receiver.stop()
    assert not receiver.running
    return caller, result


# (caller mode, answer mode, ECM, pages, media the answerer saw)
COMBOS = [
    ("t38", "t38", True, 2, ["t38"]),  # T.38 in the first INVITE
    ("audio-reinvite", "t38", True, 1, ["audio", "t38"]),  # audio offer; the caller re-INVITEs
    ("audio-wait", "audio-reinvite", False, 1, ["audio", "t38"]),  # we re-INVITE, as carriers do
    ("audio-reinvite", "audio-wait", False, 1, ["audio", "t38"]),
]


@pytest.mark.parametrize("caller_mode,answer_mode,ecm,page_count,media", COMBOS)
def test_spandsp_sender_to_uas_receiver(caller_mode, answer_mode, ecm, page_count, media, tmp_path):
    pages = source_pages(page_count, page_count)
    caller, result = call(AnswerPlan(mode=answer_mode, ecm=ecm, reinvite_after=0.5, max_seconds=55),
                          CallPlan(pages=pages, mode=caller_mode, ecm=ecm, reinvite_after=0.5, max_seconds=55),
                          tmp_path)
    assert not result.error and not result.malformed, result
    assert caller.invite_status == 200, caller
    assert caller.phase_e_status == T30_ERR_OK, caller
    assert result.phase_e_status == T30_ERR_OK, result
    assert result.pages == page_count
    assert result.remote_ident == "+1 555 0199"
    assert result.media_sequence == media, result
    assert result.t30_stats["error_correcting_mode"] == int(ecm)
    assert result.final_sip_event in ("bye-received", "bye-sent"), result
    assert result.udptl_packets_received > 0
    if answer_mode == "audio-reinvite":
        assert result.reinvites_sent == 1 and caller.gateway_reinvite
    if caller_mode == "audio-reinvite":
        assert result.reinvites_received == 1
    received = tiff_pages(result.tiff)
    assert [(w, h) for _, w, h, _, _ in received] == [(w, h) for _, w, h in pages]
    for (bitmap, _, _, x_dpi, y_dpi), (source, _, _) in zip(received, pages):
        assert bitmap == source
        assert (round(x_dpi), round(y_dpi)) == (204, 196)


# -- hand-written SIP ------------------------------------------------------------------


class RawUac:
    """A calling side typed out by hand (RFC 3261 24.2's INVITE) on one loopback socket."""

    def __init__(self, uas_port: int) -> None:
        self.uas = ("127.0.0.1", uas_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.call_id = f"a84b4c76e66710-{self.port}@127.0.0.1"
        self.uri = f"sip:5550100@127.0.0.1:{uas_port}"
        self.remote_to = f"<{self.uri}>"
        self.inbox: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str, body: str = "") -> None:
        data = text.replace("\n", "\r\n").rstrip("\r\n") + "\r\n"
        if body:
            data += "Content-Type: application/sdp\r\n"
        data += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        self.sock.sendto(data.encode(), self.uas)

    def invite(self, cseq: int, branch: str, extra: str = "", to: str | None = None) -> None:
        sdp = ("v=0\r\no=uac 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {self.port + 1} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        self.send(f"""INVITE {self.uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}
Max-Forwards: 70
To: {to or f'<{self.uri}>'}
From: Alice <sip:alice@127.0.0.1:{self.port}>;tag=1928301774
Call-ID: {self.call_id}
CSeq: {cseq} INVITE
Contact: <sip:alice@127.0.0.1:{self.port}>
{extra}""", sdp)

    def ack(self, cseq: int, branch: str, to: str) -> None:
        self.send(f"""ACK {self.uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}
Max-Forwards: 70
To: {to}
From: Alice <sip:alice@127.0.0.1:{self.port}>;tag=1928301774
Call-ID: {self.call_id}
CSeq: {cseq} ACK""")

    def bye(self, cseq: int, to: str) -> None:
        self.send(f"""BYE {self.uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKbye{cseq}
Max-Forwards: 70
To: {to}
From: Alice <sip:alice@127.0.0.1:{self.port}>;tag=1928301774
Call-ID: {self.call_id}
CSeq: {cseq} BYE""")

    def receive(self, predicate, timeout: float = 5.0) -> tuple[str, dict, bytes]:
        """The next message (bounded wait) whose (first line, headers) satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, data in enumerate(self.inbox):
                first, headers, body = parse_sip(data)
                if predicate(first, headers):
                    del self.inbox[index]
                    return first, headers, body
            try:
                self.inbox.append(self.sock.recvfrom(65535)[0])
            except TimeoutError:
                pass
        raise AssertionError(f"no matching message within {timeout} s; inbox: {self.inbox}")

    def final_to(self, cseq: int, method: str = "INVITE", timeout: float = 5.0) -> tuple[int, dict, bytes]:
        first, headers, body = self.receive(
            lambda first, headers: first.startswith("SIP/2.0 ") and int(first.split()[1]) >= 200
            and headers["cseq"][0] == f"{cseq} {method}", timeout)
        return int(first.split()[1]), headers, body


def digest_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest", value
    params = {}
    for part in rest.split(","):
        name, _, item = part.strip().partition("=")
        params[name] = item.strip('"')
    return params


def authorization(header: str, username: str, password: str, challenge: dict[str, str], uri: str,
                  method: str = "INVITE") -> str:
    """RFC 2617 3.2.2 computed here by hand: MD5, qop=auth."""
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    cnonce, nc = "0a4f113b", "00000001"
    ha1 = md5(f"{username}:{challenge['realm']}:{password}")
    ha2 = md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{challenge['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (f'{header}: Digest username="{username}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}')


def challenged_call(code: int, password: str, tmp_path) -> tuple[int, UasResult]:
    plan = AnswerPlan(mode="t38", challenge=code, username="trunkuser", password="s3cret", max_seconds=20)
    receiver = FarEndReceiver(plan, tmp_path).start()
    uac = RawUac(receiver.port)
    try:
        uac.invite(1, "z9hG4bK776asdhds")
        status, headers, _ = uac.final_to(1)
        assert status == code
        name = "www-authenticate" if code == 401 else "proxy-authenticate"
        [challenge_value] = headers[name]
        challenge = digest_params(challenge_value)
        assert challenge["realm"] == "farend.test" and challenge["algorithm"] == "MD5"
        assert challenge["qop"] == "auth" and len(challenge["nonce"]) >= 16
        uac.ack(1, "z9hG4bK776asdhds", headers["to"][0])  # RFC 3261 17.1.1.3: same branch
        header = "Authorization" if code == 401 else "Proxy-Authorization"
        uac.invite(2, "z9hG4bK776asdhdt", authorization(header, "trunkuser", password, challenge, uac.uri))
        status, headers, body = uac.final_to(2)
        to = headers["to"][0]
        if status == 200:
            assert b"m=audio" in body and "tag=" in to
            uac.ack(2, "z9hG4bK776asdhdu", to)  # RFC 3261 13.2.2.4: a new transaction
            uac.bye(3, to)
            assert uac.final_to(3, "BYE")[0] == 200
        else:
            uac.ack(2, "z9hG4bK776asdhdt", to)
        result = receiver.wait(10)
    finally:
        receiver.stop()
        uac.close()
    assert not receiver.running
    return status, result


@pytest.mark.parametrize("code", [407, 401])
def test_digest_challenge_then_correct_credentials_are_answered(code, tmp_path):
    status, result = challenged_call(code, "s3cret", tmp_path)
    assert status == 200
    assert result.auth_ok is True and result.challenges_sent == 1 and len(result.invites) == 2
    assert result.responses_sent == [code, 200]
    assert result.final_sip_event == "bye-received" and result.media_sequence == ["audio"]
    assert not result.error


def test_digest_wrong_password_gets_403(tmp_path):
    status, result = challenged_call(407, "not-the-password", tmp_path)
    assert status == 403
    assert result.auth_ok is False and "password" in result.auth_failure
    assert result.final_sip_event == "rejected-403" and result.media_sequence == []


@pytest.mark.parametrize("mode,code", [("busy", 486), ("decline", 603)])
def test_refusals(mode, code, tmp_path):
    receiver = FarEndReceiver(AnswerPlan(mode=mode, max_seconds=10), tmp_path).start()
    uac = RawUac(receiver.port)
    try:
        uac.invite(1, "z9hG4bKbusy1")
        status, headers, _ = uac.final_to(1)
        assert status == code
        uac.ack(1, "z9hG4bKbusy1", headers["to"][0])
        result = receiver.wait(5)
    finally:
        receiver.stop()
        uac.close()
    assert result.final_sip_event == f"rejected-{code}" and result.responses_sent == [code]


def test_no_answer_then_cancel(tmp_path):
    receiver = FarEndReceiver(AnswerPlan(mode="no-answer", max_seconds=10), tmp_path).start()
    uac = RawUac(receiver.port)
    try:
        uac.invite(1, "z9hG4bKring1")
        uac.receive(lambda first, headers: first.startswith("SIP/2.0 180"))
        # RFC 3261 9.1: CANCEL copies the INVITE's Request-URI, Call-ID, From, To, CSeq number and Via.
        uac.send(f"""CANCEL {uac.uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{uac.port};branch=z9hG4bKring1
Max-Forwards: 70
To: <{uac.uri}>
From: Alice <sip:alice@127.0.0.1:{uac.port}>;tag=1928301774
Call-ID: {uac.call_id}
CSeq: 1 CANCEL""")
        assert uac.final_to(1, "CANCEL")[0] == 200
        status, headers, _ = uac.final_to(1)
        assert status == 487
        uac.ack(1, "z9hG4bKring1", headers["to"][0])
        result = receiver.wait(5)
    finally:
        receiver.stop()
        uac.close()
    assert result.cancelled and result.final_sip_event == "cancelled"


def test_reinvite_glare_gets_491_and_our_reinvite_still_lands(tmp_path):
    """RFC 3261 14.2: a re-INVITE arriving while the peer's own is pending gets 491."""
    plan = AnswerPlan(mode="audio-reinvite", reinvite_after=0.2, max_seconds=15)
    receiver = FarEndReceiver(plan, tmp_path).start()
    uac = RawUac(receiver.port)
    udptl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udptl.bind(("127.0.0.1", 0))
    try:
        uac.invite(1, "z9hG4bKglare1")
        status, headers, _ = uac.final_to(1)
        assert status == 200
        to = headers["to"][0]
        uac.ack(1, "z9hG4bKglare2", to)
        first, their, offer = uac.receive(lambda first, headers: first.startswith("INVITE "), timeout=5)
        assert b"m=image" in offer and b"udptl t38" in offer
        # Our own re-INVITE crosses theirs.
        uac.invite(2, "z9hG4bKglare3", to=to)
        status, headers, _ = uac.final_to(2)
        assert status == 491
        uac.ack(2, "z9hG4bKglare3", headers["to"][0])
        # Now answer theirs with T.38 (copying their Via, From, To, Call-ID, CSeq; adding our tag).
        answer = ("v=0\r\no=uac 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  f"m=image {udptl.getsockname()[1]} udptl t38\r\na=T38FaxVersion:0\r\n"
                  "a=T38FaxRateManagement:transferredTCF\r\na=T38FaxMaxDatagram:400\r\n"
                  "a=T38FaxUdpEC:t38UDPRedundancy\r\n")
        vias = "\n".join(f"Via: {via}" for via in their["via"])
        uac.send(f"""SIP/2.0 200 OK
{vias}
From: {their['from'][0]}
To: {their['to'][0]}
Call-ID: {their['call-id'][0]}
CSeq: {their['cseq'][0]}
Contact: <sip:alice@127.0.0.1:{uac.port}>""", answer)
        ack_first, ack_headers, _ = uac.receive(lambda first, headers: first.startswith("ACK "))
        assert ack_headers["cseq"][0] == their["cseq"][0].replace("INVITE", "ACK")
        udptl.settimeout(3)
        assert udptl.recvfrom(65535)[0]  # SpanDSP's T.38 (CED/DIS) now flows to the answered port
        uac.bye(3, to)
        assert uac.final_to(3, "BYE")[0] == 200
        result = receiver.wait(8)
    finally:
        receiver.stop()
        uac.close()
        udptl.close()
    assert result.glare_491_sent == 1 and result.reinvites_received == 1 and result.reinvites_sent == 1
    assert result.media_sequence == ["audio", "t38"] and result.final_sip_event == "bye-received"


def test_options_answered_and_stop_ends_an_idle_peer_quickly(tmp_path):
    receiver = FarEndReceiver(AnswerPlan(max_seconds=30), tmp_path).start()
    uac = RawUac(receiver.port)
    try:
        uac.send(f"""OPTIONS {uac.uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{uac.port};branch=z9hG4bKopt1
Max-Forwards: 70
To: <{uac.uri}>
From: <sip:alice@127.0.0.1:{uac.port}>;tag=77
Call-ID: options-{uac.port}@127.0.0.1
CSeq: 63104 OPTIONS""")
        status, headers, _ = uac.final_to(63104, "OPTIONS")
        assert status == 200 and "INVITE" in headers["allow"][0]
    finally:
        uac.close()
    started = time.monotonic()
    result = receiver.stop()
    assert time.monotonic() - started < 2 and not receiver.running
    assert result.final_sip_event == "stopped" and not result.invites


def test_register_is_challenged_then_accepted(tmp_path):
    """A trunk that registers first (RFC 3261 10.2): 401, then 200 to the right credentials."""
    receiver = FarEndReceiver(AnswerPlan(challenge=401, username="trunkuser", password="s3cret", max_seconds=10),
                              tmp_path).start()
    uac = RawUac(receiver.port)
    registrar = f"sip:127.0.0.1:{receiver.port}"

    def register(cseq: int, extra: str = "") -> tuple[int, dict, bytes]:
        uac.send(f"""REGISTER {registrar} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{uac.port};branch=z9hG4bKreg{cseq}
Max-Forwards: 70
To: <sip:trunkuser@127.0.0.1:{receiver.port}>
From: <sip:trunkuser@127.0.0.1:{receiver.port}>;tag=456248
Call-ID: register-{uac.port}@127.0.0.1
CSeq: {cseq} REGISTER
Contact: <sip:trunkuser@127.0.0.1:{uac.port}>
Expires: 300
{extra}""")
        return uac.final_to(cseq, "REGISTER")

    try:
        status, headers, _ = register(1)
        assert status == 401
        challenge = digest_params(headers["www-authenticate"][0])
        status, headers, _ = register(2, authorization("Authorization", "trunkuser", "s3cret", challenge, registrar,
                                                       "REGISTER"))
        assert status == 200 and "expires=300" in headers["contact"][0]
        status, _, _ = register(3, authorization("Authorization", "trunkuser", "wrong", challenge, registrar,
                                                 "REGISTER"))
        assert status == 403
    finally:
        result = receiver.stop()
        uac.close()
    assert result.registrations == [401, 200, 403]
