"""T.38 Annex A IFP codec and clause 9 UDPTL framing, receiver and sender (sans-IO)."""

from udptl.codec import FecInfo, UdptlPacket, decode_ifp, decode_udptl, encode_ifp, encode_udptl
from udptl.errors import LocalProtocolError, MalformedPacket, RemoteProtocolError, UdptlError
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

__all__ = [
    "DataField",
    "FecInfo",
    "FieldType",
    "IfpPacket",
    "LocalProtocolError",
    "MalformedPacket",
    "RemoteProtocolError",
    "T30Data",
    "T30Indicator",
    "UdptlError",
    "UdptlPacket",
    "Unknown",
    "decode_ifp",
    "decode_udptl",
    "encode_ifp",
    "encode_udptl",
]

from udptl.receiver import IfpLost, IfpReceived, ReceiverStats, UdptlReceiver  # noqa: E402
from udptl.sender import SenderStats, UdptlSender, far_max_ifp  # noqa: E402

__all__ += ["IfpLost", "IfpReceived", "ReceiverStats", "SenderStats", "UdptlReceiver", "UdptlSender", "far_max_ifp"]
