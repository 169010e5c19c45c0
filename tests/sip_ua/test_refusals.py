"""Requests the UA refuses by itself leave a trace (issue 9, item 8): RequestRefused events,
throttled so that a flood cannot flood the log but counted exactly; the global token bucket
that spoofed sources cannot bypass; inbound digest auth for peers outside allow_from, end to
end through two UAs and with raw bytes (challenge, wrong password, stale nonce)."""

from __future__ import annotations

import random

import pytest

from sip.auth import DigestClient, challenge_in
from sip.errors import LocalProtocolError
from sip.parser import parse_message
from sip.ratelimit import RateLimiter
from sip.ua import REFUSAL_REASONS, Address, InviteReceived, RequestRefused, UAConfig, UserAgent
from tests.sip_ua.simnet import SimNet
from tests.sip_ua.test_ua import AUDIO, AUDIO_B, answer_with, events_of
from tests.sip_ua.wire import invite_bytes, request_bytes


def _refusals(node_or_events) -> list[RequestRefused]:
    events = node_or_events if isinstance(node_or_events, list) else [e for _, e in node_or_events.events]
    return [e for e in events if isinstance(e, RequestRefused)]


def _reported(events: list[RequestRefused], reason: str) -> int:
    """How many refusals the events stand for (each: itself + the ones it says were suppressed)."""
    return sum(1 + e.suppressed for e in events if e.reason == reason)


def _invite(i: int, source_host: str = "192.0.2.7") -> bytes:
    return invite_bytes(branch=f"z9hG4bKflood{i}", call_id=f"flood-{i}@x", sent_by=source_host, body=AUDIO)


# ----------------------------------------------------------------- the token buckets


def test_global_bucket_caps_many_sources_and_refills():
    limiter = RateLimiter(rate=10.0, burst=10.0, global_rate=5.0, global_burst=20.0)
    # 100 spoofed sources, each with a full bucket of its own: only the global 20 pass.
    assert sum(limiter.allow(f"198.51.100.{i}", 0.0) for i in range(100)) == 20
    assert limiter.dropped == limiter.dropped_global == 80 and limiter.dropped_source == 0
    assert sum(limiter.allow(f"198.51.100.{i}", 1.0) for i in range(100, 200)) == 5  # 5 tokens/s


def test_an_empty_source_bucket_does_not_spend_global_tokens():
    limiter = RateLimiter(rate=1.0, burst=2.0, global_rate=1.0, global_burst=3.0)
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [True, True, False, False, False]
    assert limiter.dropped_source == 3
    assert limiter.allow("b", 0.0)  # the global bucket still had its third token
    assert not limiter.allow("c", 0.0) and limiter.dropped_global == 1


def test_global_bucket_parameters_are_checked():
    with pytest.raises(ValueError):
        RateLimiter(global_rate=5.0)
    with pytest.raises(ValueError):
        RateLimiter(global_rate=0.0, global_burst=10.0)


def test_spoofed_flood_is_capped_globally_and_trusted_trunk_still_answered():
    ua = UserAgent(UAConfig(rate=100.0, burst=200.0, global_rate=50.0, global_burst=100.0), rng=random.Random(1))
    # 2,000 OPTIONS from 2,000 different (spoofed) sources at the same instant.
    for i in range(2000):
        ua.receive(request_bytes("OPTIONS", branch=f"z9hG4bKs{i}", sent_by=f"10.{i // 250}.{i % 250}.1"),
                   Address("udp", f"10.{i // 250}.{i % 250}.1", 5060), 0.0)
    answered = [o for o in ua.messages_to_send() if o.data.startswith(b"SIP/2.0 200")]
    assert len(answered) == 100  # the global burst, not 2,000 per-source bursts
    assert ua.stats["rate_limited"] == 1900 == ua.stats["refused_rate_limited"]
    # A trusted source (allow_from) is never throttled, even with the global bucket empty.
    for i in range(300):
        ua.receive(request_bytes("OPTIONS", branch=f"z9hG4bKt{i}", sent_by="127.0.0.1"), Address("udp", "127.0.0.1", 5060), 0.0)
    assert len([o for o in ua.messages_to_send() if o.data.startswith(b"SIP/2.0 200")]) == 300


# ----------------------------------------------------------------- RequestRefused events


def test_invite_outside_allow_from_is_reported_once_per_transaction():
    net = SimNet()
    b = net.add("bob", "127.0.0.2")
    data = _invite(1)
    net.inject(data, ("192.0.2.7", 5060), "bob")
    net.inject(data, ("192.0.2.7", 5060), "bob")  # a retransmission: absorbed by the transaction
    assert [r.first_line for r in net.sent_by("bob")] == ["SIP/2.0 403 Forbidden"] * 2
    net.run(5.0)
    assert _refusals(b) == [RequestRefused(Address("udp", "192.0.2.7", 5060), "INVITE", 403, "not_allowed", 0)]
    assert b.ua.stats["refused_not_allowed"] == 1


def test_refusals_from_one_source_are_throttled_and_counted_exactly():
    ua = UserAgent(UAConfig(), rng=random.Random(2))
    source = Address("udp", "192.0.2.7", 5060)
    for i in range(50):  # 50 distinct INVITEs within half a second
        ua.receive(_invite(i), source, i * 0.01)
    now = 0.5
    first = _refusals(ua.events())
    assert [(e.reason, e.status, e.suppressed) for e in first] == [("not_allowed", 403, 0)]
    # The throttled 49 are flushed by a timer about a second after the first of them.
    ua.handle_timer(1.0)
    assert not _refusals(ua.events())
    ua.handle_timer(1.02)
    flushed = _refusals(ua.events())
    assert [(e.reason, e.suppressed) for e in flushed] == [("not_allowed", 48)]
    assert _reported(first + flushed, "not_allowed") == 50 == ua.stats["refused_not_allowed"]
    # A second later the same source is reported again at once, with nothing pending.
    ua.receive(_invite(99), source, now + 2.0)
    assert [e.suppressed for e in _refusals(ua.events())] == [0]


def test_spoofed_flood_yields_a_bounded_number_of_events_with_exact_totals():
    config = UAConfig(global_rate=1e6, global_burst=1e6, refused_events_rate=10.0, refused_events_burst=20.0)
    ua = UserAgent(config, rng=random.Random(3))
    events: list = []
    t = 0.0
    for i in range(5000):  # 5,000 INVITEs from 5,000 sources over 5 s
        t = i * 0.001
        host = f"10.{i // 250 % 250}.{i % 250}.9"
        ua.receive(_invite(i, host), Address("udp", host, 5060), t)
        if (deadline := ua.next_deadline()) is not None and deadline <= t:
            ua.handle_timer(t)
        events += ua.events()
        ua.messages_to_send()
    # Run the timers out (flush what the throttle held back).
    while (deadline := ua.next_deadline()) is not None and deadline < t + 200:
        ua.handle_timer(deadline)
        t = deadline
        events += ua.events()
        ua.messages_to_send()
    refused = _refusals(events)
    # 20 at once, then 10 per second for ~5 s, plus one flush per second: far below 5,000.
    assert 20 <= len(refused) <= 20 + 10 * 6 + 8
    assert _reported(refused, "not_allowed") == 5000 == ua.stats["refused_not_allowed"]


def test_rate_limited_datagrams_are_reported_with_their_method():
    ua = UserAgent(UAConfig(rate=1.0, burst=1.0), rng=random.Random(4))
    source = Address("udp", "192.0.2.7", 5060)
    ua.receive(request_bytes("OPTIONS", branch="z9hG4bKa"), source, 0.0)
    ua.receive(request_bytes("OPTIONS", branch="z9hG4bKb"), source, 0.0)
    ua.receive(b"SIP/2.0 200 OK\r\n\r\n", source, 0.0)  # a response: no method
    ua.handle_timer(1.0)
    refused = _refusals(ua.events())
    assert [(e.method, e.status, e.reason) for e in refused] == [("OPTIONS", None, "rate_limited"), ("", None, "rate_limited")]
    assert refused[1].suppressed == 0 and _reported(refused, "rate_limited") == 2


def test_stream_messages_are_rate_limited_and_reported_too():
    ua = UserAgent(UAConfig(rate=1.0, burst=1.0), rng=random.Random(5))
    source = Address("tcp", "192.0.2.7", 40000, connection=1)
    ua.receive_message(parse_message(request_bytes("OPTIONS", branch="z9hG4bKa")), source, 0.0)
    ua.receive_message(parse_message(request_bytes("OPTIONS", branch="z9hG4bKb")), source, 0.0)
    (refused,) = _refusals(ua.events())
    assert (refused.source, refused.method, refused.reason) == (source, "OPTIONS", "rate_limited")


def test_report_refused_accepts_only_the_known_reasons():
    ua = UserAgent(UAConfig(), rng=random.Random(6))
    with pytest.raises(LocalProtocolError):
        ua.report_refused(Address("tcp", "192.0.2.7", 1), "", None, "because", 0.0)
    for reason in REFUSAL_REASONS:
        ua.report_refused(Address("tcp", "192.0.2.7", 1), "", None, reason, 0.0)
    assert [e.reason for e in _refusals(ua.events())] == list(REFUSAL_REASONS)


def test_refusal_throttle_parameters_are_checked():
    with pytest.raises(ValueError):
        UserAgent(UAConfig(refused_event_interval=0.0), rng=random.Random(1))
    with pytest.raises(ValueError):
        UserAgent(UAConfig(global_rate=0.0), rng=random.Random(1))


def test_source_trusted_follows_allow_from():
    ua = UserAgent(UAConfig(allow_from=("127.0.0.1/32", "2001:db8::/32")), rng=random.Random(7))
    assert ua.source_trusted("127.0.0.1") and ua.source_trusted("2001:db8::5")
    assert not ua.source_trusted("127.0.0.2") and not ua.source_trusted("not-an-ip")


# ----------------------------------------------------------------- inbound digest auth


def test_challenge_then_call_reports_auth_required_only():
    net = SimNet()
    a = net.add("alice", "192.0.2.7")
    b = net.add("bob", "127.0.0.2", auth_users={"alice": "pw"})
    b.on_event = answer_with(AUDIO_B)
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0, credentials=("alice", "pw"))
    net.run(5.0)
    assert len(events_of(b, InviteReceived)) == 1
    assert [(e.reason, e.status, e.method) for e in _refusals(b)] == [("auth_required", 401, "INVITE")]


def test_wrong_password_reports_auth_failed():
    net = SimNet()
    a = net.add("alice", "192.0.2.7")
    b = net.add("bob", "127.0.0.2", auth_users={"alice": "pw"})
    a.ua.invite("sip:bob@127.0.0.2", AUDIO, 0.0, credentials=("alice", "wrong"))
    net.run(40.0)
    assert not events_of(b, InviteReceived)
    assert [(e.reason, e.status) for e in _refusals(b)] == [("auth_required", 401), ("auth_failed", 403)]
    assert b.ua.stats["auth_failures"] == 1


def test_stale_nonce_is_challenged_again_and_the_fresh_one_accepted():
    net = SimNet()
    b = net.add("bob", "127.0.0.2", auth_users={"fax": "s3cret"})
    b.on_event = answer_with(AUDIO_B)
    src = ("192.0.2.7", 5060)
    client = DigestClient("fax", "s3cret", rng=random.Random(8))
    uri = "sip:bob@biloxi.example.com"

    def invite(i: int, authorization: str | None) -> bytes:
        extra = f"Authorization: {authorization}\r\n" if authorization else ""
        return invite_bytes(branch=f"z9hG4bKst{i}", cseq=i, call_id="stale@x", sent_by="192.0.2.7", body=AUDIO, extra=extra)

    net.inject(invite(1, None), src, "bob")
    first = net.sent_by("bob", "SIP/2.0 401")[-1].message
    old, _ = challenge_in(first)
    assert not old.stale
    net.run(400.0)  # past the 300 s nonce lifetime
    net.inject(invite(2, client.authorize(old, "INVITE", uri, AUDIO)), src, "bob")
    again = net.sent_by("bob", "SIP/2.0 401")[-1].message
    fresh, _ = challenge_in(again)
    assert fresh.stale and fresh.nonce != old.nonce  # RFC 7616 3.3: stale=true, a new nonce
    assert not events_of(b, InviteReceived)
    net.inject(invite(3, client.authorize(fresh, "INVITE", uri, AUDIO)), src, "bob")
    assert len(events_of(b, InviteReceived)) == 1
    assert [(e.reason, e.status) for e in _refusals(b)] == [("auth_required", 401), ("auth_required", 401)]


def test_replayed_authorization_is_refused():
    net = SimNet()
    b = net.add("bob", "127.0.0.2", auth_users={"fax": "s3cret"})
    b.on_event = answer_with(AUDIO_B)
    src = ("192.0.2.7", 5060)
    client = DigestClient("fax", "s3cret", rng=random.Random(9))
    net.inject(_invite(1), src, "bob")
    challenge, _ = challenge_in(net.sent_by("bob", "SIP/2.0 401")[-1].message)
    authorization = client.authorize(challenge, "INVITE", "sip:bob@biloxi.example.com", AUDIO)
    for i in (2, 3):  # the same Authorization (same nc) in a new INVITE: a replay
        net.inject(invite_bytes(branch=f"z9hG4bKrp{i}", call_id=f"rp{i}@x", sent_by="192.0.2.7", body=AUDIO,
                                extra=f"Authorization: {authorization}\r\n"), src, "bob")
    assert len(events_of(b, InviteReceived)) == 1
    assert net.sent_by("bob")[-1].first_line == "SIP/2.0 403 Forbidden"
    assert [e.reason for e in _refusals(b)] == ["auth_required", "auth_failed"]
