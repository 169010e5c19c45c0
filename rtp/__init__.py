"""RTP (RFC 3550) for G.711 audio fax: packet codec, sender and jitter buffer (sans-IO)."""

from rtp.errors import LocalProtocolError, RtpError, RtpParseError
from rtp.events import TelephoneEvent, build_telephone_event, parse_telephone_event
from rtp.jitter import COMFORT_NOISE, PCMA, PCMU, SILENCE, JitterBuffer, JitterStats
from rtp.packet import HEADER_SIZE, RtpPacket, build_rtp, is_rtcp, parse_rtp
from rtp.sender import RtpSender

__all__ = [
    "COMFORT_NOISE",
    "HEADER_SIZE",
    "PCMA",
    "PCMU",
    "SILENCE",
    "JitterBuffer",
    "JitterStats",
    "LocalProtocolError",
    "RtpError",
    "RtpPacket",
    "RtpParseError",
    "RtpSender",
    "TelephoneEvent",
    "build_rtp",
    "build_telephone_event",
    "is_rtcp",
    "parse_rtp",
    "parse_telephone_event",
]
