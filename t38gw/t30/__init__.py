"""The T.30 fax engine over T.38 (sans-IO).  Start with ``T30Receiver``.

Wiring it to UDPTL (what the call session does)::

    engine = T30Receiver(ReceiverConfig(local_ident="+1 555 0100"))
    events = engine.start(now)
    # on each datagram:
    for item in udptl_receiver.datagram_received(data, now):
        if isinstance(item, IfpReceived) and item.packet is not None:
            events += engine.ifp_received(item.packet, now)
        else:  # IfpLost, or an IFP that did not decode
            events += engine.ifps_lost(1, now)
    # at engine.next_deadline():
    events += engine.handle_timer(now)
    # after every call:
    for out in engine.ifps_to_send(now):
        for _ in range(out.repeat):
            socket.send(udptl_sender.datagram_for(encode_ifp(out.packet, version)))

Sending is ``T30Transmitter(TransmitterConfig(local_ident=...), pages)`` (pages are
``imaging.Page`` bitmaps), driven the same way; it reports ``PhaseBCompleted`` (the mode
chosen), ``PageSent`` per page answered and one ``CallEnded``.

``PageReceived`` events carry each confirmed page (keep them as they come: a call that
dies later keeps them); ``CallEnded`` comes once, with a ``T30Result``.  BYE: ``hang_up``.
"""

from t38gw.t30.dcs import Compression, DcsParameters, Modulation, PaperWidth, ReceiveCapabilities, Resolution
from t38gw.t30.errors import LocalProtocolError, RemoteProtocolError
from t38gw.t30.events import (
    CallEnded,
    DocumentEnded,
    Event,
    PageQuality,
    PageReceived,
    PageRejected,
    PageSent,
    PhaseBCompleted,
    ProtocolEventLogged,
    T30Result,
)
from t38gw.t30.frames import Fcf, T30Frame
from t38gw.t30.receiver import ReceiverConfig, State, T30Receiver, judge_quality
from t38gw.t30.t38_io import OutgoingIfp
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig

__all__ = [
    "CallEnded", "Compression", "DcsParameters", "DocumentEnded", "Event", "Fcf", "LocalProtocolError",
    "Modulation", "OutgoingIfp", "PageQuality", "PageReceived", "PageRejected", "PageSent", "PaperWidth",
    "PhaseBCompleted", "ProtocolEventLogged", "ReceiveCapabilities", "ReceiverConfig",
    "RemoteProtocolError", "Resolution", "State", "T30Frame", "T30Receiver", "T30Result", "T30Transmitter",
    "TransmitterConfig", "judge_quality",
]
