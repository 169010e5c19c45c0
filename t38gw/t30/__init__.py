"""The T.30 fax engine over T.38 (sans-IO).  Start with ``T30Receiver``."""

from t38gw.t30.dcs import Compression, DcsParameters, Modulation, PaperWidth, ReceiveCapabilities, Resolution
from t38gw.t30.errors import LocalProtocolError, RemoteProtocolError
from t38gw.t30.events import (
    CallEnded,
    DocumentEnded,
    Event,
    PageQuality,
    PageReceived,
    PageRejected,
    PhaseBCompleted,
    ProtocolEventLogged,
    T30Result,
)
from t38gw.t30.frames import Fcf, T30Frame
from t38gw.t30.receiver import ReceiverConfig, State, T30Receiver, judge_quality
from t38gw.t30.t38_io import OutgoingIfp

__all__ = [
    "CallEnded", "Compression", "DcsParameters", "DocumentEnded", "Event", "Fcf", "LocalProtocolError",
    "Modulation", "OutgoingIfp", "PageQuality", "PageReceived", "PageRejected", "PaperWidth",
    "PhaseBCompleted", "ProtocolEventLogged", "ReceiveCapabilities", "ReceiverConfig",
    "RemoteProtocolError", "Resolution", "State", "T30Frame", "T30Receiver", "T30Result", "judge_quality",
]
