"""Session timers (RFC 4028): what the Session-Expires/Min-SE headers say, which side
refreshes, the headers we send, and when our refresh or the session's expiry is due.

Pure functions over a :class:`~sip.call.Call` and messages; ``sip.ua`` arms the timers
they compute and sends the refreshes.
"""

from __future__ import annotations

from sip.call import Call, UATimer
from sip.errors import SipParseError
from sip.message import Request, Response, option_tags


class SessionIntervalTooSmall(Exception):
    """Session-Expires below our Min-SE (RFC 4028 5: answered with 422)."""


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires: 1800;refresher=uac`` -> (1800, "uac") (RFC 4028 4)."""
    if not value:
        return None
    delta_text, _, params = value.partition(";")
    delta = delta_text.strip()
    if not delta.isdigit():
        raise SipParseError(f"bad Session-Expires {value!r}")
    refresher = None
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower() or None
            if refresher not in ("uac", "uas"):
                raise SipParseError(f"bad refresher in Session-Expires {value!r}")
    return int(delta), refresher


def uas_session_timer(request: Request, min_se: int) -> tuple[int | None, bool]:
    """RFC 4028 9: the interval and whether we (the UAS of ``request``) refresh.

    Raises :class:`SessionIntervalTooSmall` below ``min_se``.
    """
    se = parse_session_expires(request.headers.get("Session-Expires"))
    if se is None:
        return None, False
    interval, refresher = se
    if interval < min_se:
        raise SessionIntervalTooSmall()
    if refresher is None:
        refresher = "uac" if "timer" in option_tags(request, "Supported") else "uas"
    return interval, refresher == "uas"


def uac_session_timer(call: Call, response: Response) -> None:
    """RFC 4028 7.2: take the interval and refresher a 2xx to our INVITE/UPDATE set."""
    se = parse_session_expires(response.headers.get("Session-Expires"))
    if se is None:
        call.session_interval = None
        return
    interval, refresher = se
    call.session_interval = interval
    call.we_refresh = refresher != "uas"  # RFC 4028 7.2: absent means the UAC refreshes


def session_headers_as_uas(call: Call) -> list[tuple[str, str]]:
    """Session-Expires (and Require) for our 2xx to an INVITE/UPDATE (RFC 4028 9)."""
    if call.session_interval is None:
        return []
    refresher = "uas" if call.we_refresh else "uac"
    headers = [("Session-Expires", f"{call.session_interval};refresher={refresher}")]
    if refresher == "uac":
        headers.append(("Require", "timer"))  # RFC 4028 9: the UAC must refresh
    return headers


def session_headers_as_uac(call: Call, *, session_expires: int, min_se: int) -> list[tuple[str, str]]:
    """Supported, Session-Expires and Min-SE for our re-INVITE/UPDATE (RFC 4028 7)."""
    headers = [("Supported", "timer")]
    if call.session_interval:
        headers.append(("Session-Expires", f"{call.session_interval};refresher={'uac' if call.we_refresh else 'uas'}"))
        headers.append(("Min-SE", str(min_se)))
    elif session_expires:
        headers.append(("Session-Expires", str(session_expires)))
        headers.append(("Min-SE", str(min_se)))
    return headers


def session_deadline(call: Call, now: float) -> tuple[UATimer, float] | None:
    """The session timer to arm for ``call`` now, or None (no session timer)."""
    interval = call.session_interval
    if not interval:
        return None
    if call.we_refresh:
        # RFC 4028 10: refresh at half the interval.
        return UATimer.SESSION_REFRESH, now + interval / 2
    # RFC 4028 10: without a refresh, BYE at interval - min(32, interval/3).
    return UATimer.SESSION_EXPIRE, now + interval - min(32, interval / 3)
