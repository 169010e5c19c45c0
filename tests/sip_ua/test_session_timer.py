"""Session timers (RFC 4028) as pure functions: what the headers say, who refreshes, and
when the refresh or the expiry is due. The UA's use of them over a lossy simulated
network is in ``test_ua.py`` (long calls kept up through losses)."""

from __future__ import annotations

import pytest

from sip.address import Address
from sip.call import Call, CallState, Direction, UATimer
from sip.errors import SipParseError
from sip.message import Request
from sip.parser import parse_message
from sip.session_timer import (
    SessionIntervalTooSmall,
    parse_session_expires,
    session_deadline,
    session_headers_as_uac,
    session_headers_as_uas,
    uas_session_timer,
)
from tests.sip_ua.wire import invite_bytes


def invite(extra: str = "") -> Request:
    request = parse_message(invite_bytes(extra=extra))
    assert isinstance(request, Request)
    return request


def call(interval: int | None, we_refresh: bool) -> Call:
    request = invite()
    return Call(id="c", direction=Direction.INBOUND, state=CallState.CONFIRMED, call_id=request.call_id, invite=request,
                invite_tx=None, peer=Address("udp", "192.0.2.1", 5060), local_tag="t",
                session_interval=interval, we_refresh=we_refresh)


@pytest.mark.parametrize("value, parsed", [
    ("1800", (1800, None)),
    ("1800;refresher=uac", (1800, "uac")),
    ("90 ; refresher = UAS", (90, "uas")),
    (None, None),
    ("", None),
])
def test_parse_session_expires(value, parsed):
    assert parse_session_expires(value) == parsed


@pytest.mark.parametrize("value", ["soon", "1800;refresher=proxy", "-5"])
def test_parse_session_expires_refuses_malformed_values(value):
    with pytest.raises(SipParseError):
        parse_session_expires(value)


def test_the_uac_refreshes_when_it_supports_timers_and_names_no_refresher():
    # RFC 4028 9: with no refresher, a UAC that supports "timer" refreshes; else we do.
    assert uas_session_timer(invite("Session-Expires: 1800\r\nSupported: timer\r\n"), 90) == (1800, False)
    assert uas_session_timer(invite("Session-Expires: 1800\r\n"), 90) == (1800, True)
    assert uas_session_timer(invite("Session-Expires: 1800;refresher=uas\r\nSupported: timer\r\n"), 90) == (1800, True)
    assert uas_session_timer(invite(), 90) == (None, False)


def test_an_interval_below_min_se_is_too_small():
    with pytest.raises(SessionIntervalTooSmall):
        uas_session_timer(invite("Session-Expires: 60\r\n"), 90)


def test_deadlines_refresh_at_half_and_expire_before_the_interval():
    # RFC 4028 10: the refresher at half the interval; the other side BYEs at
    # interval - min(32, interval/3).
    assert session_deadline(call(1800, True), 100.0) == (UATimer.SESSION_REFRESH, 1000.0)
    assert session_deadline(call(1800, False), 100.0) == (UATimer.SESSION_EXPIRE, 100.0 + 1800 - 32)
    assert session_deadline(call(90, False), 0.0) == (UATimer.SESSION_EXPIRE, 60.0)
    assert session_deadline(call(None, False), 0.0) is None


def test_headers_name_the_refresher_and_require_timer_from_a_refreshing_uac():
    assert session_headers_as_uas(call(1800, True)) == [("Session-Expires", "1800;refresher=uas")]
    assert session_headers_as_uas(call(1800, False)) == [("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]
    assert session_headers_as_uas(call(None, False)) == []
    assert session_headers_as_uac(call(1800, True), session_expires=600, min_se=90) == [
        ("Supported", "timer"), ("Session-Expires", "1800;refresher=uac"), ("Min-SE", "90")]
    assert session_headers_as_uac(call(None, False), session_expires=600, min_se=90) == [
        ("Supported", "timer"), ("Session-Expires", "600"), ("Min-SE", "90")]
    assert session_headers_as_uac(call(None, False), session_expires=0, min_se=90) == [("Supported", "timer")]
