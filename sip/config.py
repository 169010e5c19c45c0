"""What the user agent needs to know about itself (``UAConfig``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sip.transaction import TimerSettings


@dataclass
class UAConfig:
    """What the UA needs to know about itself.

    ``listen`` maps a transport ("udp", "tcp", "tls") to the (host, port) we are reachable
    at; ``public_host`` replaces the host in Via/Contact when behind NAT.  ``allow_from``
    lists the networks whose INVITEs are accepted without authentication; others are
    challenged when ``auth_users`` is set, refused with 403 otherwise.
    """

    listen: dict[str, tuple[str, int]] = field(default_factory=lambda: {"udp": ("127.0.0.1", 5060)})
    public_host: str = ""
    user: str = "t38gw"
    user_agent: str = "t38gw"
    allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    auth_realm: str = "t38gw"
    auth_users: dict[str, str] = field(default_factory=dict)
    # Challenges, most preferred first (RFC 8760 2.4: one WWW-Authenticate per algorithm).
    # A client must use the topmost it supports (2.5), but some (SIPp 3.6) read only the
    # first header and know only MD5: ("MD5",) serves those.
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    session_expires: int = 1800  # RFC 4028: what we ask for on outbound INVITEs (0 = none)
    min_se: int = 90  # RFC 4028 5: the smallest interval we accept
    timers: TimerSettings = TimerSettings()
    # Several processes share one SIP port and a dispatcher hands each message to the
    # process that owns its Call-ID (t38gw.workers): the Call-IDs we make must be ours.
    call_id_owner: Callable[[str], bool] | None = None
    offer_timeout: float = 180.0  # an inbound INVITE the TU leaves unanswered gets 480 after this
    rate: float = 100.0  # messages per second per source address outside allow_from
    burst: float = 200.0
    # All sources outside allow_from together (spoofed UDP sources each get a fresh
    # per-source bucket; this one they share).
    global_rate: float = 500.0
    global_burst: float = 1000.0
    # RequestRefused events: at most one per (source host, reason) per this many seconds,
    # and at most refused_events_burst at once / refused_events_rate per second overall.
    refused_event_interval: float = 1.0
    refused_events_rate: float = 10.0
    refused_events_burst: float = 20.0
