"""The UA core in simulated time: two of our UAs (or one and a scripted peer) on a lossy
simulated network.  Assertions are on the datagrams that crossed it and on TU events."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.auth import AuthOutcome, DigestServer
from sip.message import make_response
from sip.registration import Trunk
from sip.ua import (
    Address,
    CallAnswered,
    CallEstablished,
    CallProgressed,
    CallState,
    CallTerminated,
    InviteReceived,
    MediaChanged,
    RegistrationFailed,
    RegistrationSucceeded,
    ReinviteFailed,
    SessionRefreshed,
    UAConfig,
    UserAgent,
    session_unchanged,
)
from tests.sip_ua.simnet import SimNet
from tests.sip_ua.wire import invite_bytes, request_bytes

AUDIO = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)
AUDIO_B = AUDIO.replace(b"alice 2890844526 2890844526", b"bob 1 1").replace(b"49170", b"51372")
T38_A = (
    b"v=0\r\no=alice 2890844526 2890844527 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=image 40000 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n"
    b"a=T38FaxRateManagement:transferredTCF\r\na=T38FaxMaxDatagram:400\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
)
T38_B = T38_A.replace(b"alice 2890844526 2890844527", b"bob 1 2").replace(b"40000", b"40002")


def answer_with(sdp: bytes, *, ring_for: float | None = None):
    """A TU that answers every incoming call (after ringing for ``ring_for`` seconds)."""
    pending = []

    def on_event(node, event, now):
        if isinstance(event, InviteReceived):
            if ring_for is None:
                node.ua.answer(event.call, sdp, now)
            else:
                node.ua.ring(event.call, now)
                pending.append((now + ring_for, event.call))
        elif isinstance(event, MediaChanged) and event.needs_answer:
            node.ua.answer(event.call, T38_B if b"image" in event.remote_sdp else sdp, now)

    on_event.pending = pending
    return on_event


def events_of(node, kind):
    return [e for _, e in node.events if isinstance(e, kind)]


def setup_call(net=None, *, callee_sdp=AUDIO_B, **kw):
    net = net or SimNet()
    a = net.add("alice", "127.0.0.1", 5060, seed=1, **kw)
    b = net.add("bob", "127.0.0.2", 5060, seed=2, **kw)
    b.on_event = answer_with(callee_sdp)
    call = a.ua.invite("sip:bob@127.0.0.2:5060", AUDIO, net.now)
    net.run(5.0, stop=lambda: bool(events_of(b, CallEstablished)))
    return net, a, b, call


def test_basic_call_and_bye():
    net, a, b, call = setup_call()
    (answered,) = events_of(a, CallAnswered)
    assert answered.answer == AUDIO_B
    (incoming,) = events_of(b, InviteReceived)
    assert incoming.offer == AUDIO and incoming.source.host == "127.0.0.1"
    assert incoming.request_uri == "sip:bob@127.0.0.2:5060"
    a.ua.hangup(call, net.now)
    net.run(net.now + 5)
    assert [e.reason for e in events_of(b, CallTerminated)] == ["remote hangup"]
    assert [e.reason for e in events_of(a, CallTerminated)] == ["local hangup"]
    assert [s.first_line for s in net.sent_by("bob", "SIP/2.0 200")][-1] == "SIP/2.0 200 OK"
    assert net.sent_by("bob", "SIP/2.0 200")[-1].message.cseq[1] == "BYE"


def test_lost_200_is_retransmitted_until_ack():
    lost = {"n": 0}

    def drop(sent):
        if sent.src == "bob" and sent.first_line.startswith("SIP/2.0 200") and lost["n"] < 3:
            lost["n"] += 1
            return True
        return False

    net, a, b, call = setup_call(SimNet(drop=drop))
    oks = [s for s in net.sent_by("bob", "SIP/2.0 200")]
    times = [round(s.time - oks[0].time, 6) for s in oks]
    # RFC 3261 13.3.1.4: T1, then doubling (T1=0.5): 0, 0.5, 1.5, 3.5 - the 4th gets through.
    assert times == [0.0, 0.5, 1.5, 3.5]
    assert len(net.sent_by("alice", "ACK")) == 1
    net.run(net.now + 20)
    assert len(net.sent_by("bob", "SIP/2.0 200")) == 4  # the ACK stopped them
    assert events_of(b, CallEstablished)


def test_lost_ack_is_resent_on_the_200_retransmission():
    lost = {"n": 0}

    def drop(sent):
        if sent.src == "alice" and sent.first_line.startswith("ACK") and lost["n"] < 1:
            lost["n"] += 1
            return True
        return False

    net, a, b, call = setup_call(SimNet(drop=drop))
    assert len(net.sent_by("alice", "ACK")) == 2
    assert len(net.sent_by("bob", "SIP/2.0 200")) == 2
    acks = [s.message for s in net.sent_by("alice", "ACK")]
    assert acks[0].to_bytes() == acks[1].to_bytes()  # the same ACK (13.2.2.4)


def test_no_ack_ends_the_call_with_bye_after_64_t1():
    net = SimNet(drop=lambda s: s.src == "alice" and s.first_line.startswith("ACK"))
    a = net.add("alice", "127.0.0.1")
    b = net.add("bob", "127.0.0.2")
    b.on_event = answer_with(AUDIO_B)
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(60)
    (ended,) = events_of(b, CallTerminated)
    assert ended.reason == "no ACK"
    assert net.sent_by("bob", "BYE")[0].time == pytest.approx(0.01 + 32.0, abs=0.05)


def test_reinvite_to_t38_from_the_callee():
    net, a, b, call = setup_call()
    a.on_event = answer_with(AUDIO)
    b_call = events_of(b, InviteReceived)[0].call
    b.ua.reinvite(b_call, T38_B, net.now)
    net.run(net.now + 5)
    (offered,) = [e for e in events_of(a, MediaChanged)]
    assert offered.needs_answer and offered.remote_sdp == T38_B
    (answered,) = events_of(b, MediaChanged)
    assert not answered.needs_answer and answered.remote_sdp == T38_B  # a answered with T.38
    reinvite = net.sent_by("bob", "INVITE")[0].message
    assert reinvite.to.tag == call.local_tag and reinvite.from_.tag == b_call.local_tag
    assert reinvite.cseq[0] == 1  # the callee's first request in the dialog


def test_refresh_with_the_same_sdp_reports_no_change():
    net, a, b, call = setup_call()
    b.on_event = None
    a.ua.reinvite(call, AUDIO, net.now)  # same o= line: RFC 3264 8 "no change"
    net.run(net.now + 5)
    assert events_of(b, SessionRefreshed) and not events_of(b, MediaChanged)
    ok = net.sent_by("bob", "SIP/2.0 200")[-1].message
    assert ok.cseq[1] == "INVITE" and ok.body == AUDIO_B  # answered with the same SDP
    assert events_of(a, SessionRefreshed) and not events_of(a, MediaChanged)


def test_session_unchanged_rules():
    assert session_unchanged(T38_A, T38_A)
    assert session_unchanged(T38_A, T38_A.replace(b"2890844527 IN", b"2890844599 IN"))  # body same
    assert not session_unchanged(AUDIO, T38_A)


def test_glare_both_get_491_and_the_first_retry_wins():
    net, a, b, call = setup_call()
    a.on_event = answer_with(AUDIO)
    b_call = events_of(b, InviteReceived)[0].call
    a.ua.reinvite(call, T38_A, net.now)
    b.ua.reinvite(b_call, T38_B, net.now)
    start = net.now
    net.run(start + 20)
    glare = [s for s in net.trace if s.first_line.startswith("SIP/2.0 491")]
    assert {s.src for s in glare} == {"alice", "bob"}
    # bob does not own the Call-ID: he retries within 0-2 s (RFC 3261 14.1); alice
    # accepts his T.38 offer, which supersedes her own pending retry.
    b_invites = net.sent_by("bob", "INVITE")
    assert 0.0 <= b_invites[1].time - (start + 0.01) <= 2.0 + 1e-6
    assert len(net.sent_by("alice", "INVITE")) == 2  # the first call's INVITE and the glared one
    (superseded,) = events_of(a, ReinviteFailed)
    assert superseded.status == 491
    assert [e.needs_answer for e in events_of(a, MediaChanged)] == [True]
    assert call.remote_sdp == T38_B and b_call.remote_sdp == call.local_sdp
    assert call.state is CallState.CONFIRMED and b_call.state is CallState.CONFIRMED


@pytest.mark.parametrize("caller_retries", [True, False])
def test_491_retry_delay_depends_on_call_id_ownership(caller_retries):
    net, a, b, call = setup_call()
    b_call = events_of(b, InviteReceived)[0].call
    node, handle = (a, call) if caller_retries else (b, b_call)
    peer_address = ("127.0.0.2", 5060) if caller_retries else ("127.0.0.1", 5060)
    net.drop = lambda sent: sent.src == node.name and sent.first_line.startswith("INVITE")
    node.ua.reinvite(handle, T38_A, net.now)
    net.flush()
    invite = net.sent_by(node.name, "INVITE")[-1].message

    start = net.now
    net.inject(make_response(invite, 491, to_tag=invite.to.tag).to_bytes(), peer_address, node.name)
    net.drop = lambda sent: False
    net.run(start + 5)
    retry = [sent for sent in net.sent_by(node.name, "INVITE") if sent.time > start][0]
    delay = retry.time - start
    # RFC 3261 14.1: the Call-ID owner (the caller) waits 2.1-4 s, the other side 0-2 s.
    assert (2.1 <= delay <= 4.0) if caller_retries else (0.0 <= delay <= 2.0)
    assert retry.message.cseq[0] == invite.cseq[0] + 1 and retry.message.body == T38_A


def test_cancel_before_answer():
    net = SimNet()
    a = net.add("alice", "127.0.0.1")
    b = net.add("bob", "127.0.0.2")
    b.on_event = answer_with(AUDIO_B, ring_for=30)
    call = a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(1.0)
    assert [e.status for e in events_of(a, CallProgressed)] == [180]
    a.ua.hangup(call, net.now)
    net.run(net.now + 40)
    lines = [s.first_line for s in net.trace]
    assert "SIP/2.0 487 Request Terminated" in lines
    cancel = net.sent_by("alice", "CANCEL")[0].message
    invite = net.sent_by("alice", "INVITE")[0].message
    assert cancel.vias[0].branch == invite.vias[0].branch and cancel.cseq == (invite.cseq[0], "CANCEL")
    assert [e.reason for e in events_of(b, CallTerminated)] == ["cancelled"]
    assert [(e.reason, e.status) for e in events_of(a, CallTerminated)] == [("cancelled", 487)]
    assert net.sent_by("alice", "ACK")  # the 487 is ACKed by the client transaction
    ok_cancel = [s.message for s in net.sent_by("bob", "SIP/2.0 200")]
    assert [m.cseq[1] for m in ok_cancel] == ["CANCEL"]


def test_cancel_crossing_the_200_ends_with_bye():
    net = SimNet(latency=0.05)
    a = net.add("alice", "127.0.0.1")
    b = net.add("bob", "127.0.0.2")
    b_calls = []

    def tu(node, event, now):
        if isinstance(event, InviteReceived):
            node.ua.ring(event.call, now)
            b_calls.append(event.call)

    b.on_event = tu
    call = a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(0.5)
    # Both act at the same instant: bob's 200 and alice's CANCEL cross on the wire.
    b.ua.answer(b_calls[0], AUDIO_B, net.now)
    a.ua.hangup(call, net.now)
    net.run(net.now + 10)
    assert net.sent_by("bob", "SIP/2.0 200")[0].message.cseq[1] == "INVITE"
    assert [m.message.cseq[1] for m in net.sent_by("bob", "SIP/2.0 200")][1] == "CANCEL"
    assert net.sent_by("alice", "ACK") and net.sent_by("alice", "BYE")
    assert [e.reason for e in events_of(b, CallTerminated)] == ["remote hangup"]
    assert [e.reason for e in events_of(a, CallTerminated)] == ["cancelled"]


def test_t38_reinvite_rejected_with_488_keeps_the_call():
    net, a, b, call = setup_call()

    def refuse(node, event, now):
        if isinstance(event, MediaChanged) and event.needs_answer:
            node.ua.reject(event.call, 488, now)

    b.on_event = refuse
    a.ua.reinvite(call, T38_A, net.now)
    net.run(net.now + 5)
    (failed,) = events_of(a, ReinviteFailed)
    assert failed.status == 488
    assert call.state is CallState.CONFIRMED and call.local_sdp == AUDIO
    assert net.sent_by("alice", "ACK")[-1].message.cseq[0] == net.sent_by("alice", "INVITE")[-1].message.cseq[0]


def test_options_answered_with_allow_accept_supported():
    net = SimNet()
    net.add("bob", "127.0.0.2")
    net.inject(request_bytes("OPTIONS", cseq=7, sent_by="127.0.0.9:5090"), ("127.0.0.9", 5090), "bob")
    (reply,) = net.sent_by("bob")
    response = reply.message
    assert response.status == 200 and response.cseq == (7, "OPTIONS")
    assert "INVITE" in response.headers.get("Allow") and "UPDATE" in response.headers.get("Allow")
    assert response.headers.get("Accept") == "application/sdp"
    assert "timer" in response.headers.get("Supported")
    assert reply.dst == ("127.0.0.9", 5090)


def test_responses_follow_via_received_and_rport():
    net = SimNet()
    net.add("bob", "127.0.0.2")
    # RFC 3581: rport asks for the source port; received records the source address.
    data = request_bytes("OPTIONS", branch="z9hG4bKr1;rport", sent_by="10.1.1.1:5070")
    net.inject(data, ("127.0.0.9", 40000), "bob")
    reply = net.sent_by("bob")[-1]
    assert reply.dst == ("127.0.0.9", 40000)
    via = reply.message.vias[0]
    assert via.received == "127.0.0.9" and via.rport == 40000
    # Without rport: to the received address, at the Via port (RFC 3261 18.2.2).
    net.inject(request_bytes("OPTIONS", branch="z9hG4bKr2", sent_by="10.1.1.1:5070"), ("127.0.0.9", 40001), "bob")
    assert net.sent_by("bob")[-1].dst == ("127.0.0.9", 5070)


def test_invite_from_outside_allow_from_is_refused():
    net = SimNet()
    b = net.add("bob", "127.0.0.2")
    net.inject(invite_bytes(sent_by="192.0.2.7", body=AUDIO), ("192.0.2.7", 5060), "bob")
    (reply,) = net.sent_by("bob")
    assert reply.first_line == "SIP/2.0 403 Forbidden"
    assert not events_of(b, InviteReceived)


def test_hostile_input_400_or_drop_and_no_crash():
    net = SimNet()
    b = net.add("bob", "127.0.0.2")
    src = ("127.0.0.9", 5090)
    net.inject(b"\x00\xff garbage \r\n\r\n", src, "bob")
    net.inject(b"NOTSIP\r\n", src, "bob")
    assert net.sent_by("bob") == []
    # A request whose CSeq is broken but whose other headers are fine is answered 400.
    bad = request_bytes("OPTIONS", cseq=5).replace(b"CSeq: 5 OPTIONS", b"CSeq: five OPTIONS")
    net.inject(bad, src, "bob")
    (reply,) = net.sent_by("bob")
    assert reply.first_line.startswith("SIP/2.0 400")
    # An ACK is never answered, however broken.
    net.inject(request_bytes("ACK").replace(b"CSeq: 1 ACK", b"CSeq: 1 BYE"), src, "bob")
    assert len(net.sent_by("bob")) == 1
    assert b.ua.stats["parse_errors"] == 4


def test_flood_from_one_source_is_rate_limited_per_source():
    net = SimNet()
    b = net.add("bob", "127.0.0.2", rate=10.0, burst=20.0)
    for i in range(200):
        net.inject(request_bytes("OPTIONS", branch=f"z9hG4bKf{i}", sent_by="192.0.2.9"), ("192.0.2.9", 5090), "bob")
    answered = len(net.sent_by("bob"))
    assert answered == 20 and b.ua.stats["rate_limited"] == 180
    net.inject(request_bytes("OPTIONS", branch="z9hG4bKother", sent_by="192.0.2.8"), ("192.0.2.8", 5090), "bob")
    assert net.sent_by("bob")[-1].dst == ("192.0.2.8", 5060)  # no rport: the Via port (default)
    # A trusted trunk (inside allow_from) is never throttled.
    for i in range(200):
        net.inject(request_bytes("OPTIONS", branch=f"z9hG4bKt{i}", sent_by="127.0.0.9"), ("127.0.0.9", 5090), "bob")
    assert len(net.sent_by("bob")) == 21 + 200


def test_in_dialog_errors_481_and_500():
    net, a, b, call = setup_call()
    src = ("127.0.0.9", 5090)
    net.inject(request_bytes("BYE", to_tag="nosuchtag", sent_by="127.0.0.9:5090"), src, "bob")
    assert net.sent_by("bob")[-1].first_line.startswith("SIP/2.0 481")
    # An in-dialog request with a CSeq lower than the last one (RFC 3261 12.2.2).
    invite = net.sent_by("alice", "INVITE")[0].message
    b_call = events_of(b, InviteReceived)[0].call
    raw = (
        f"BYE sip:bob@127.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKlow\r\n"
        f"Max-Forwards: 70\r\nFrom: {invite.headers.get('From')}\r\nTo: <sip:bob@127.0.0.2:5060>;tag={b_call.local_tag}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: {invite.cseq[0] - 1} BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    net.inject(raw, ("127.0.0.1", 5060), "bob")
    assert net.sent_by("bob")[-1].first_line.startswith("SIP/2.0 500")
    assert b_call.state is CallState.CONFIRMED


def test_session_timer_refresh_by_update_and_bye_on_expiry():
    net, a, b, call = setup_call(session_expires=120, min_se=90)
    ok = [s.message for s in net.sent_by("bob", "SIP/2.0 200")][0]
    # RFC 4028 9: alice said Supported: timer without a refresher, so bob picks uac.
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert "timer" in ok.headers.get("Require")
    net.run(net.now + 61)
    updates = net.sent_by("alice", "UPDATE")
    assert len(updates) == 1 and updates[0].time == pytest.approx(60.0, abs=0.1)  # at half the interval
    assert events_of(b, SessionRefreshed)
    # Alice stops refreshing (her UPDATEs are lost): bob sends BYE at 120 - min(32, 40) after the last refresh.
    net.drop = lambda s: s.src == "alice" and s.first_line.startswith("UPDATE")
    net.run(net.now + 200)
    (ended,) = events_of(b, CallTerminated)
    assert ended.reason == "session expired"
    bye = net.sent_by("bob", "BYE")[0]
    assert bye.time == pytest.approx(updates[0].time + 0.01 + 120 - 32, abs=0.1)


def test_session_interval_too_small_gets_422_and_the_caller_retries():
    net = SimNet()
    a = net.add("alice", "127.0.0.1", session_expires=60, min_se=30)
    b = net.add("bob", "127.0.0.2", min_se=90)
    b.on_event = answer_with(AUDIO_B)
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(5.0)
    (too_small,) = net.sent_by("bob", "SIP/2.0 422")
    assert too_small.message.headers.get("Min-SE") == "90"
    second = net.sent_by("alice", "INVITE")[1].message
    assert second.headers.get("Session-Expires") == "90"
    assert events_of(a, CallAnswered)


def test_deadlines_are_monotonic_outputs_only():
    net, a, b, call = setup_call()
    deadline = b.ua.next_deadline()
    b.ua.handle_timer(0.0)  # long before anything is due: nothing happens
    assert b.ua.messages_to_send() == [] and b.ua.events() == []
    assert b.ua.next_deadline() == deadline


# ----------------------------------------------------------------- digest auth


def _scripted_reply(request, status, extra=()):
    response = make_response(request, status, to_tag="reg1")
    for name, value in extra:
        response.headers.add(name, value)
    return response.to_bytes()


def test_register_with_digest_refresh_and_stale_nonce():
    net = SimNet()
    a = net.add("alice", "127.0.0.1")
    registrar = DigestServer("example.net", {"fax": "s3cret"}, rng=random.Random(7), algorithms=("MD5",))
    registrar_addr = ("127.0.0.50", 5060)
    a.ua.register(Trunk("carrier", "sip:127.0.0.50", username="fax", password="s3cret", expires=60), 0.0)
    net.flush()
    first = net.sent_by("alice", "REGISTER")[-1].message
    assert first.headers.get("Authorization") is None
    net.inject(_scripted_reply(first, 401, [("WWW-Authenticate", c) for c in registrar.challenges(0.0)]), registrar_addr, "alice")
    second = net.sent_by("alice", "REGISTER")[-1].message
    verdict = registrar.verify(second.headers.get("Authorization"), "REGISTER", 0.0, request_uri=str(second.uri))
    assert verdict.outcome is AuthOutcome.ACCEPTED and verdict.username == "fax"
    assert second.call_id == first.call_id and second.cseq[0] == first.cseq[0] + 1
    net.inject(_scripted_reply(second, 200, [("Contact", f"{second.headers.get('Contact')};expires=60")]), registrar_addr, "alice")
    assert [e.expires for e in events_of(a, RegistrationSucceeded)] == [60]
    # Refresh before expiry (at half of 60 s), same Call-ID, next CSeq.
    net.run(29.0)
    assert len(net.sent_by("alice", "REGISTER")) == 2
    net.run(31.0)
    refresh = net.sent_by("alice", "REGISTER")[2]  # (then Timer E retransmits it at 30.5)
    assert refresh.time == pytest.approx(30.0) and refresh.message.cseq[0] == second.cseq[0] + 1
    # A stale nonce is answered again with the new nonce, no failure reported (RFC 7616 3.3).
    net.inject(_scripted_reply(refresh.message, 401, [("WWW-Authenticate", c) for c in registrar.challenges(31.0, stale=True)]), registrar_addr, "alice")
    retry = net.sent_by("alice", "REGISTER")[-1].message
    assert registrar.verify(retry.headers.get("Authorization"), "REGISTER", 31.0).outcome is AuthOutcome.ACCEPTED
    assert not events_of(a, RegistrationFailed)
    # The same credentials refused again (not stale): failure with back-off, no loop.
    net.inject(_scripted_reply(retry, 401, [("WWW-Authenticate", c) for c in registrar.challenges(31.0)]), registrar_addr, "alice")
    fourth = net.sent_by("alice", "REGISTER")[-1].message
    net.inject(_scripted_reply(fourth, 401, [("WWW-Authenticate", c) for c in registrar.challenges(31.0)]), registrar_addr, "alice")
    (failed,) = events_of(a, RegistrationFailed)
    assert failed.status == 401 and 24.0 <= failed.retry_in <= 36.0
    count = len(net.sent_by("alice", "REGISTER"))
    net.run(31.0 + failed.retry_in - 0.1)
    assert len(net.sent_by("alice", "REGISTER")) == count
    net.run(31.0 + failed.retry_in + 0.1)
    assert len(net.sent_by("alice", "REGISTER")) == count + 1


def test_invite_from_outside_allow_from_is_challenged_and_verified():
    net = SimNet()
    a = net.add("alice", "192.0.2.7")
    b = net.add("bob", "127.0.0.2", auth_users={"alice": "pw"})
    b.on_event = answer_with(AUDIO_B)
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0, credentials=("alice", "pw"))
    net.run(5.0, stop=lambda: bool(events_of(b, CallEstablished)))
    assert net.sent_by("bob", "SIP/2.0 401")
    invites = [s.message for s in net.sent_by("alice", "INVITE")]
    assert invites[0].headers.get("Authorization") is None and invites[1].headers.get("Authorization")
    assert len(events_of(b, InviteReceived)) == 1 and events_of(a, CallAnswered)


def test_invite_with_wrong_password_gets_403_and_no_call():
    net = SimNet()
    a = net.add("alice", "192.0.2.7")
    b = net.add("bob", "127.0.0.2", auth_users={"alice": "pw"})
    b.on_event = answer_with(AUDIO_B)
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0, credentials=("alice", "wrong"))
    net.run(40.0)
    assert not events_of(b, InviteReceived)
    assert [(e.reason, e.status) for e in events_of(a, CallTerminated)] == [("rejected 403", 403)]


def test_callee_hangup_before_ack_waits_for_the_ack():
    net = SimNet(latency=0.05)
    a = net.add("alice", "127.0.0.1")
    b = net.add("bob", "127.0.0.2")

    def answer_then_hang_up(node, event, now):
        if isinstance(event, InviteReceived):
            node.ua.answer(event.call, AUDIO_B, now)
            node.ua.hangup(event.call, now)  # RFC 3261 15: no BYE before the ACK

    b.on_event = answer_then_hang_up
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(10.0)
    ack_arrival = net.sent_by("alice", "ACK")[0].time + 0.05
    (bye,) = net.sent_by("bob", "BYE")
    assert bye.time == pytest.approx(ack_arrival)
    assert [e.reason for e in events_of(a, CallTerminated)] == ["remote hangup"]
    assert b.ua.calls == {}


def test_callee_hangup_without_any_ack_sends_bye_at_64_t1():
    net = SimNet(drop=lambda s: s.src == "alice" and s.first_line.startswith("ACK"))
    a = net.add("alice", "127.0.0.1")
    b = net.add("bob", "127.0.0.2")

    def answer_then_hang_up(node, event, now):
        if isinstance(event, InviteReceived):
            node.ua.answer(event.call, AUDIO_B, now)
            node.ua.hangup(event.call, now)

    b.on_event = answer_then_hang_up
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(60.0)
    (bye,) = net.sent_by("bob", "BYE")
    assert bye.time == pytest.approx(0.01 + 32.0, abs=0.02)
    assert [e.reason for e in events_of(b, CallTerminated)] == ["local hangup"]
    assert b.ua.calls == {}


# ----------------------------------------------------------------- loss, as a property



@settings(deadline=None, max_examples=60)
@given(lost=st.sets(st.integers(0, 24), max_size=12), latency=st.sampled_from([0.001, 0.05, 0.3]))
def test_any_loss_pattern_leaves_both_sides_consistent_and_clean(lost, latency):
    counter = {"n": 0}

    def drop(sent):
        index = counter["n"]
        counter["n"] += 1
        return index in lost

    net = SimNet(latency=latency, drop=drop)
    a = net.add("alice", "127.0.0.1", session_expires=120, min_se=90)
    b = net.add("bob", "127.0.0.2", session_expires=120, min_se=90)
    b.on_event = answer_with(AUDIO_B)
    call = a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    net.run(40.0)
    if call.state is CallState.CONFIRMED:
        a.ua.hangup(call, net.now)
    net.run(4000.0)
    # Whatever was lost: no call, transaction or timer is left behind on either side.
    for node in (a, b):
        assert node.ua.calls == {} and node.ua._by_dialog == {}
        assert len(node.ua.transactions) == 0
        assert node.ua.next_deadline() is None
    # And the two sides agree: a call bob saw established also ended for him, and
    # alice only heard "answered" for a call bob really took.
    if events_of(b, CallEstablished):
        assert events_of(b, CallTerminated)
    if events_of(a, CallAnswered):
        assert events_of(b, InviteReceived)
    assert len(events_of(a, CallTerminated)) == 1


def test_refresh_by_reinvite_when_the_peer_lacks_update():
    net, a, b, call = setup_call(session_expires=120, min_se=90)
    b.on_event = None
    call.peer_allows_update = False  # as if bob's Allow had no UPDATE (RFC 4028 7.4)
    net.run(net.now + 61)
    (refresh,) = net.sent_by("alice", "INVITE")[1:]
    assert refresh.message.body == AUDIO and refresh.time == pytest.approx(60.0, abs=0.1)
    assert refresh.message.headers.get("Session-Expires") == "120;refresher=uac"
    assert events_of(b, SessionRefreshed) and not events_of(b, MediaChanged)


def test_unanswered_offer_gets_480_after_invite_expires():
    net = SimNet()
    b = net.add("bob", "127.0.0.2")
    net.inject(invite_bytes(sent_by="127.0.0.9:5090", body=AUDIO, extra="Expires: 20\r\n"), ("127.0.0.9", 5090), "bob")
    net.run(19.9)
    assert [s.first_line for s in net.sent_by("bob")] == ["SIP/2.0 100 Trying"]
    net.run(21.0)
    assert net.sent_by("bob")[1].first_line == "SIP/2.0 480 Temporarily Unavailable"
    assert net.sent_by("bob")[1].time == pytest.approx(20.0)
    assert [(e.reason, e.status) for e in events_of(b, CallTerminated)] == [("not answered", 480)]


def test_tcp_responses_use_the_connection_and_fall_back_to_the_via_port():
    ua = UserAgent(UAConfig(listen={"tcp": ("127.0.0.2", 5060)}), rng=random.Random(3))
    data = request_bytes("OPTIONS", sent_by="10.0.0.1:5070").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    ua.receive(data, Address("tcp", "127.0.0.9", 40001, connection=7), 0.0)
    (out,) = ua.messages_to_send()
    # RFC 3261 18.2.2: over the same connection (7); if it is gone, to received:sent-by port.
    assert out.destination == Address("tcp", "127.0.0.9", 5070, 7)
    assert out.message.vias[0].received == "127.0.0.9"


def test_delayed_offer_invite_gets_its_answer_from_the_ack():
    net = SimNet()
    b = net.add("bob", "127.0.0.2")

    def offer_in_200(node, event, now):
        if isinstance(event, InviteReceived):
            assert event.offer == b""
            node.ua.answer(event.call, T38_B, now)  # our offer, in the 2xx

    b.on_event = offer_in_200
    net.inject(invite_bytes(sent_by="127.0.0.9:5090"), ("127.0.0.9", 5090), "bob")
    ok = net.sent_by("bob", "SIP/2.0 200")[0].message
    assert ok.body == T38_B
    ack = (
        f"ACK sip:t38gw@127.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5090;branch=z9hG4bKack1\r\n"
        f"Max-Forwards: 70\r\nFrom: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
        f"Call-ID: {ok.call_id}\r\nCSeq: {ok.cseq[0]} ACK\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(T38_A)}\r\n\r\n"
    ).encode() + T38_A
    net.inject(ack, ("127.0.0.9", 5090), "bob")
    (change,) = events_of(b, MediaChanged)
    assert change.remote_sdp == T38_A and not change.needs_answer
    assert events_of(b, CallEstablished) and change.call.remote_sdp == T38_A


@settings(deadline=None, max_examples=int(os.environ.get("T38GW_GLARE_EXAMPLES", "60")))
@given(
    t_alice=st.floats(0, 1.0), t_bob=st.floats(0, 1.0),
    latency=st.sampled_from([0.001, 0.02, 0.2, 0.6]),
    lost=st.sets(st.integers(0, 20), max_size=5),
)
def test_concurrent_reinvites_always_converge(t_alice, t_bob, latency, lost):
    """Whatever the timing (glare or not) and a few losses, both re-INVITEs end up done and
    each side's idea of the other's SDP matches what the other last sent."""
    net, a, b, call = setup_call(SimNet(latency=latency))
    b_call = events_of(b, InviteReceived)[0].call
    a.on_event = answer_with(AUDIO)
    b.on_event = answer_with(AUDIO_B)
    counter = {"n": 0}

    def drop(sent):
        counter["n"] += 1
        return counter["n"] - 1 in lost

    net.drop = drop
    start = net.now
    for at, who in sorted([(t_alice, "alice"), (t_bob, "bob")]):
        net.run(start + at)
        if who == "alice":
            a.ua.reinvite(call, T38_A, net.now)
        else:
            b.ua.reinvite(b_call, T38_B, net.now)
    net.run(start + 200.0)
    assert call.state is CallState.CONFIRMED and b_call.state is CallState.CONFIRMED
    assert call.out_reinvite is None and b_call.out_reinvite is None
    assert call.glare_retry_sdp is None and b_call.glare_retry_sdp is None
    assert call.local_sdp == b_call.remote_sdp and b_call.local_sdp == call.remote_sdp


@settings(deadline=None, max_examples=40)
@given(lost=st.sets(st.integers(0, 60), max_size=4), latency=st.sampled_from([0.001, 0.1, 0.4]),
       update=st.booleans())
def test_session_timers_keep_a_long_call_up_through_losses(lost, latency, update):
    """A 20-minute fax call with 90 s session timers: refreshes (UPDATE or re-INVITE) and
    their retransmissions keep it up; nothing expires, nothing is renegotiated.

    At most 4 losses: the refresh goes out at 45 s (half the interval) and its 5th
    retransmission at 45 + 15.5 s, after the non-refresher's BYE at 90 - min(32, 90/3) = 60 s
    (RFC 4028 10) -- so losing the refresh 5 times in a row rightly ends the call
    (test_refresh_lost_five_times_ends_the_call_at_the_rfc_4028_moment pins that)."""
    net, a, b, call = setup_call(SimNet(latency=latency), session_expires=90, min_se=90)
    b_call = events_of(b, InviteReceived)[0].call
    call.peer_allows_update = update
    b.on_event = None
    counter = {"n": 0}

    def drop(sent):
        counter["n"] += 1
        return counter["n"] - 1 in lost

    net.drop = drop
    net.run(net.now + 1200.0)
    assert call.state is CallState.CONFIRMED and b_call.state is CallState.CONFIRMED
    assert not events_of(a, CallTerminated) and not events_of(b, CallTerminated)
    assert not events_of(a, MediaChanged) and not events_of(b, MediaChanged)
    refreshes = net.sent_by("alice", "UPDATE" if update else "INVITE")
    assert len({s.message.cseq[0] for s in refreshes}) >= 1200 // 45 - 1


def test_refresh_lost_five_times_ends_the_call_at_the_rfc_4028_moment():
    """Found by Hypothesis: the re-INVITE refresh (sent at 45 s) lost 5 times in a row. The
    non-refresher must send BYE at 90 - min(32, 90/3) = 60 s (RFC 4028 10), before the 6th
    retransmission (60.5 s) could arrive; the late refresh then gets 481."""
    net, a, b, call = setup_call(SimNet(latency=0.001), session_expires=90, min_se=90)
    b_call = events_of(b, InviteReceived)[0].call
    call.peer_allows_update = False
    b.on_event = None
    start = net.now
    counter = {"n": 0}

    def drop(sent):
        counter["n"] += 1
        return counter["n"] <= 5

    net.drop = drop
    net.run(start + 120.0)
    [bye] = net.sent_by("bob", "BYE")
    assert 59.0 <= bye.time - start <= 60.5
    assert call.state is CallState.ENDED and b_call.state is CallState.ENDED


@settings(deadline=None, max_examples=int(os.environ.get("T38GW_HANGUP_EXAMPLES", "80")))
@given(
    who=st.sampled_from(["alice", "bob"]),
    hang_at=st.floats(0, 3.0),
    ring_for=st.sampled_from([None, 0.2, 1.0, 5.0]),
    latency=st.sampled_from([0.001, 0.05, 0.3]),
    lost=st.sets(st.integers(0, 15), max_size=4),
)
def test_hangup_at_any_moment_ends_both_sides_cleanly(who, hang_at, ring_for, latency, lost):
    """Hang up (CANCEL, 480, BYE, deferred BYE - whatever the state needs) at any moment of
    call set-up, with losses: both sides end up with exactly one CallTerminated, no call,
    transaction or timer left."""
    counter = {"n": 0}

    def drop(sent):
        counter["n"] += 1
        return counter["n"] - 1 in lost

    net = SimNet(latency=latency, drop=drop)
    a = net.add("alice", "127.0.0.1", session_expires=0)
    b = net.add("bob", "127.0.0.2", session_expires=0)
    tu = answer_with(AUDIO_B, ring_for=ring_for)
    b.on_event = tu
    call = a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0)
    hung = False
    for _ in range(10_000):
        next_answer = min((t for t, _ in tu.pending), default=None)
        target = min(x for x in (hang_at if not hung else None, next_answer, 400.0) if x is not None)
        net.run(target)
        if next_answer is not None and net.now >= next_answer:
            for t, c in [p for p in tu.pending if p[0] <= net.now]:
                tu.pending.remove((t, c))
                if c.state is CallState.OFFERED:
                    b.ua.answer(c, AUDIO_B, net.now)
        if not hung and net.now >= hang_at:
            hung = True
            if who == "alice":
                a.ua.hangup(call, net.now)
            else:
                bob_calls = list(b.ua.calls.values())
                for b_call in bob_calls:
                    b.ua.hangup(b_call, net.now)
                if not bob_calls:
                    who = "nobody"  # the INVITE had not reached bob yet
        if net.now >= 400.0:
            break
    if who == "nobody" and call.state is CallState.CONFIRMED:
        a.ua.hangup(call, net.now)
    net.run(net.now + 400.0)
    for node in (a, b):
        assert node.ua.calls == {} and node.ua._by_dialog == {}, node.name
        assert len(node.ua.transactions) == 0, node.name
        assert node.ua.next_deadline() is None, node.name
    assert len(events_of(a, CallTerminated)) == 1
    assert len(events_of(b, CallTerminated)) == len(events_of(b, InviteReceived))


def test_forked_second_2xx_is_acked_and_hung_up():
    net, a, b, call = setup_call()
    invite = net.sent_by("alice", "INVITE")[0].message

    # A second UAS behind a forking proxy answers the same INVITE with another To tag.
    forked = make_response(invite, 200, to_tag="forkedtag")
    forked.headers.add("Contact", "<sip:carol@127.0.0.3:5060>")
    net.inject(forked.to_bytes(), ("127.0.0.3", 5060), "alice")
    acks = [s for s in net.sent_by("alice", "ACK") if s.message.to.tag == "forkedtag"]
    byes = [s for s in net.sent_by("alice", "BYE") if s.message.to.tag == "forkedtag"]
    assert len(acks) == 1 and len(byes) == 1 and byes[0].dst == ("127.0.0.3", 5060)
    assert call.dialog.remote_tag != "forkedtag" and call.state is CallState.CONFIRMED
    assert not events_of(a, CallTerminated)


def test_register_423_raises_expires_and_unregister_sends_expires_0():
    net = SimNet()
    a = net.add("alice", "127.0.0.1")
    registrar = ("127.0.0.50", 5060)
    a.ua.register(Trunk("carrier", "sip:127.0.0.50", username="", expires=30), 0.0)
    net.flush()
    first = net.sent_by("alice", "REGISTER")[-1].message
    assert first.headers.get("Expires") == "30" and str(first.uri) == "sip:127.0.0.50"
    # RFC 3261 10.2.8: 423 Interval Too Brief names the minimum.
    net.inject(_scripted_reply(first, 423, [("Min-Expires", "300")]), registrar, "alice")
    second = net.sent_by("alice", "REGISTER")[-1].message
    assert second.headers.get("Expires") == "300" and second.cseq[0] == first.cseq[0] + 1
    net.inject(_scripted_reply(second, 200, [("Expires", "300")]), registrar, "alice")
    assert [e.expires for e in events_of(a, RegistrationSucceeded)] == [300]
    a.ua.unregister("carrier", net.now)
    net.flush()
    last = net.sent_by("alice", "REGISTER")[-1].message
    assert last.headers.get("Expires") == "0" and last.call_id == first.call_id
    net.run(net.now + 1000)
    assert len(net.sent_by("alice", "REGISTER")) == 3 + 10  # 3 + Timer E retransmissions of the un-REGISTER, no refresh
