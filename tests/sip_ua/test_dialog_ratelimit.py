"""Dialog state (RFC 3261 12) from real INVITE/200 bytes, and the per-source token bucket."""

from __future__ import annotations

from sip.dialog import Dialog
from sip.parser import parse_message
from sip.ratelimit import RateLimiter
from tests.sip_ua.wire import invite_bytes

RR = "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n"


def ok_for(invite_data: bytes, record_route: str = RR) -> bytes:
    invite = parse_message(invite_data)
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: {invite.headers.get('Via')}\r\n"
        f"{record_route}"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {invite.headers.get('To')};tag=314159\r\n"
        f"Call-ID: {invite.call_id}\r\n"
        f"CSeq: {invite.cseq[0]} INVITE\r\n"
        "Contact: <sip:bob@192.0.2.4>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_uac_dialog_reverses_record_route_and_targets_the_contact():
    data = invite_bytes()
    dialog = Dialog.as_uac(parse_message(data), parse_message(ok_for(data)))
    assert dialog.id == ("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", "314159")
    assert dialog.is_caller and dialog.local_seq == 314159
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    bye = dialog.build_request("BYE", via="SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKbye", contact=None)
    assert str(bye.uri) == "sip:bob@192.0.2.4"  # loose routing: Request-URI = remote target
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.cseq == (314160, "BYE") and bye.to.tag == "314159" and bye.from_.tag == "1928301774"


def test_strict_router_goes_in_the_request_uri():
    data = invite_bytes()
    dialog = Dialog.as_uac(parse_message(data), parse_message(ok_for(data, "Record-Route: <sip:strict.example.com>\r\n")))
    bye = dialog.build_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKx", contact=None)
    # RFC 3261 12.2.1.1: strict router -> Request-URI; the remote target ends the Route set.
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:bob@192.0.2.4>"]


def test_uas_dialog_and_cseq_ordering():
    data = invite_bytes(extra=RR)
    invite = parse_message(data)
    dialog = Dialog.as_uas(invite, "bobtag")
    assert dialog.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]  # in order for the UAS
    assert dialog.remote_target == "sip:alice@pc33.atlanta.example.com"
    assert not dialog.is_caller and dialog.local_party.endswith(";tag=bobtag")
    later = parse_message(invite_bytes(cseq=314160, to_tag="bobtag"))
    earlier = parse_message(invite_bytes(cseq=314158, to_tag="bobtag"))
    assert dialog.check_remote_cseq(later)
    assert not dialog.check_remote_cseq(earlier)  # 12.2.2: lower CSeq -> 500


def test_token_bucket_refills_and_is_per_source():
    limiter = RateLimiter(rate=2.0, burst=3.0, max_sources=2)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another source has its own bucket
    assert not limiter.allow("a", 0.4) and limiter.allow("a", 0.5)  # 2 tokens/s
    assert limiter.dropped == 2
    limiter.allow("c", 1.0)  # table full: the bucket idle longest ("b") is forgotten
    assert len(limiter) == 2 and "b" not in limiter._buckets
