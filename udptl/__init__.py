"""T.38 Annex A IFP codec and clause 9 UDPTL framing, receiver and sender (sans-IO)."""

from udptl.codec import FecInfo, UdptlPacket, decode_ifp, decode_udptl, encode_ifp, encode_udptl
from udptl.errors import LocalProtocolError, MalformedPacket, RemoteProtocolError, UdptlError
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown
from udptl.receiver import IfpLost, IfpReceived, ReceiverStats, UdptlReceiver
from udptl.sender import SenderStats, UdptlSender, far_max_ifp

__all__ = [
    "DataField",
    "FecInfo",
    "FieldType",
    "IfpLost",
    "IfpPacket",
    "IfpReceived",
    "LocalProtocolError",
    "MalformedPacket",
    "ReceiverStats",
    "RemoteProtocolError",
    "SenderStats",
    "T30Data",
    "T30Indicator",
    "UdptlError",
    "UdptlPacket",
    "UdptlReceiver",
    "UdptlSender",
    "Unknown",
    "decode_ifp",
    "decode_udptl",
    "encode_ifp",
    "encode_udptl",
    "far_max_ifp",
]
