"""SDP offer/answer for a fax call, as pure functions (no I/O, no clock, no state).

The call core (``t38gw.call``) decides *when* to offer or answer; these functions say
*what*: the SDP bytes we send and the :class:`T38Session` the media side starts with.

- :func:`answer_t38` answers a T.38 offer (first INVITE or the peer's re-INVITE) with
  T.38 Annex D's echo rules (``sip.sdp.make_t38_answer``: the lower version and bit
  rate, the best error correction we both support, our own T38FaxMaxDatagram).
- :func:`offer_t38` is our offer: in the 2xx to an INVITE without SDP (RFC 3261 13.2.1)
  and in our re-INVITE from audio to T.38.
- :func:`offer_audio` is the first INVITE of an outbound call with ``[send]
  initial_offer = "audio"`` (most trunks expect G.711 first; T.38 comes by re-INVITE):
  PCMU and PCMA on the call's UDPTL port, like :func:`answer_audio`.  With
  ``initial_offer = "t38"`` the first INVITE carries :func:`offer_t38`.
- :func:`answer_audio` answers a G.711 offer (the call starts as audio and turns into
  T.38 later).  The audio leg names the call's UDPTL port: nothing is played on it, and
  the port is ready when the call turns into T.38.  An audio media leg (audio fax) would
  answer here too, with an RTP port of its own.
- :func:`t38_session` turns the negotiated parameters and the peer's SDP into what the
  UDPTL endpoint needs: where to send, which error correction, the datagram size the
  peer can take, and which host media must come from (:func:`media_source_host`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sip import sdp as sdpmod
from sip.errors import RemoteProtocolError

EC_TO_SDP = {"redundancy": sdpmod.UDP_EC_REDUNDANCY, "fec": sdpmod.UDP_EC_FEC, "none": sdpmod.UDP_EC_NONE}
SDP_TO_EC = {v: k for k, v in EC_TO_SDP.items()}
SDP_USERNAME = "t38gw"
# T.38 D.2.3: with no T38FaxMaxDatagram the peer takes what every deployed stack takes.
DEFAULT_PEER_MAX_DATAGRAM = 400
# Below this not even a split HDLC frame fits with its IFP and UDPTL headers.
MIN_PEER_MAX_DATAGRAM = 32


@dataclass(frozen=True)
class T38Session:
    """What SDP negotiation settled: where to send and how."""

    remote: tuple[str, int]
    version: int
    max_bitrate: int
    error_correction: str  # "redundancy" | "fec" | "none"
    rate_management: str
    peer_max_datagram: int
    media_latching: str = "strict"  # "strict" | "learn" ([sip] media_latching)
    expected_host: str | None = None  # host media must come from; None: remote[0]


@dataclass(frozen=True)
class LocalMedia:
    """Our side of the call's SDP: the address and UDPTL port we advertise, the ``o=``
    session id, and the T.38 parameters we support."""

    host: str
    port: int
    session_id: int
    t38: sdpmod.T38Params


@dataclass(frozen=True)
class T38Answer:
    """Our answer to a T.38 offer and what it settled."""

    sdp: bytes
    negotiated: sdpmod.T38Params
    remote_host: str | None  # the c= address of the peer's T.38 stream (None: none given)
    remote_port: int
    peer_max_datagram: int | None  # T38FaxMaxDatagram of the offer (what the peer can receive)


@dataclass(frozen=True)
class AudioSession:
    """A settled G.711 audio leg: where RTP goes and how it is coded (the audio fax path,
    used when T.38 is refused or never comes: ``[t38] audio_fallback``)."""

    remote: tuple[str, int]
    payload_type: int  # 0 PCMU (mu-law) or 8 PCMA (A-law), RFC 3551
    telephone_event: int | None = None  # RFC 4733 payload type, if negotiated
    media_latching: str = "strict"
    expected_host: str | None = None  # host RTP must come from; None: remote[0]

    @property
    def law(self) -> str:
        return "ulaw" if self.payload_type == 0 else "alaw"

    @property
    def media(self) -> str:
        """meta.json ``media``: "g711u" | "g711a"."""
        return "g711u" if self.payload_type == 0 else "g711a"


_G711 = {"PCMU": 0, "PCMA": 8}


def _payload_types(media: sdpmod.MediaDescription) -> tuple[list[int], int | None]:
    """The G.711 payload types of an m=audio line in its order, and telephone-event's."""
    names: dict[int, str] = {}
    for name, value in media.attributes:
        if name.lower() == "rtpmap" and value:
            number, _, encoding = value.partition(" ")
            if number.strip().isdigit():
                names[int(number)] = encoding.split("/", 1)[0].strip().upper()
    g711: list[int] = []
    event: int | None = None
    for fmt in media.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        name = names.get(pt) or {0: "PCMU", 8: "PCMA"}.get(pt, "")
        if name in _G711 and pt == _G711[name]:
            g711.append(pt)
        elif name == "TELEPHONE-EVENT" and event is None:
            event = pt
    return g711, event


def audio_session(remote_sdp: sdpmod.SessionDescription, chosen_sdp: sdpmod.SessionDescription, *,
                  sip_source_host: str, media_latching: str) -> AudioSession | None:
    """The audio leg that an offer/answer settled: RTP goes to ``remote_sdp``'s audio
    stream; the codec is the first G.711 of the answer (``chosen_sdp``: ours when we
    answered, the peer's when it answered our offer; RFC 3264 6.1).  None without one."""
    remote = sdpmod.find_audio_stream(remote_sdp)
    chosen = sdpmod.find_audio_stream(chosen_sdp)
    if remote is None or chosen is None:
        return None
    g711, event = _payload_types(chosen)
    if not g711:
        return None
    host = remote_sdp.address_of(remote) or sip_source_host
    return AudioSession(remote=(host, remote.port), payload_type=g711[0], telephone_event=event,
                        media_latching=media_latching, expected_host=media_source_host(host, sip_source_host))


def local_t38_params(*, versions: tuple[int, ...] | list[int], max_bitrate: int, max_datagram: int,
                     error_correction: str) -> sdpmod.T38Params:
    """The T.38 parameters we offer and answer with ([t38] config)."""
    return sdpmod.T38Params(version=max(versions), max_bitrate=min(max_bitrate, 14400),
                            rate_management="transferredTCF", max_datagram=max_datagram,
                            udp_ec=EC_TO_SDP[error_correction])


def offers_t38(sdp: sdpmod.SessionDescription) -> bool:
    return sdpmod.find_t38_stream(sdp) is not None


def offers_audio(sdp: sdpmod.SessionDescription) -> bool:
    return sdpmod.find_audio_stream(sdp) is not None


def answer_t38(offer: sdpmod.SessionDescription, local: LocalMedia, session_version: int) -> T38Answer:
    """Answer ``offer``'s T.38 stream.  Raises ``RemoteProtocolError`` (488) when it has
    none or its parameters cannot be read."""
    answer, negotiated = sdpmod.make_t38_answer(offer, local.host, local.port, local.t38,
                                                session_id=local.session_id, session_version=session_version,
                                                username=SDP_USERNAME)
    media = sdpmod.find_t38_stream(offer)
    if media is None:  # make_t38_answer already refused it; for the type checker
        raise RemoteProtocolError("no T.38 stream in the offer", 488)
    offered = sdpmod.T38Params.from_attributes(media.attributes)
    return T38Answer(answer.to_bytes(), negotiated, offer.address_of(media), media.port, offered.max_datagram)


def offer_t38(local: LocalMedia, session_version: int) -> bytes:
    """Our T.38 offer (2xx to a delayed-offer INVITE, or our re-INVITE)."""
    return sdpmod.make_t38_offer(local.host, local.port, local.t38, session_id=local.session_id,
                                 session_version=session_version, username=SDP_USERNAME).to_bytes()


def offer_audio(local: LocalMedia, session_version: int) -> bytes:
    """Our G.711 offer (the first INVITE of an audio-first outbound call)."""
    return sdpmod.make_audio_offer(local.host, local.port, session_id=local.session_id,
                                   session_version=session_version, telephone_event=None,
                                   username=SDP_USERNAME).to_bytes()


def answer_audio(offer: sdpmod.SessionDescription, local: LocalMedia, session_version: int) -> bytes:
    """Answer ``offer``'s G.711 stream.  Raises ``RemoteProtocolError`` (488) without one."""
    answer, _ = sdpmod.make_audio_answer(offer, local.host, local.port, session_id=local.session_id,
                                         session_version=session_version, username=SDP_USERNAME)
    return answer.to_bytes()


def t38_answered(answer: sdpmod.SessionDescription) -> T38Answer | None:
    """What the peer's answer to our T.38 offer settled (None: it has no T.38 stream)."""
    media = sdpmod.find_t38_stream(answer)
    if media is None:
        return None
    answered = sdpmod.T38Params.from_attributes(media.attributes)
    return T38Answer(b"", answered, answer.address_of(media), media.port, answered.max_datagram)


def t38_session(answer: T38Answer, *, sip_source_host: str, media_latching: str) -> T38Session:
    """The media side's settings for a settled T.38 negotiation."""
    negotiated = answer.negotiated
    remote_host = answer.remote_host or sip_source_host
    return T38Session(
        remote=(remote_host, answer.remote_port), version=negotiated.version, max_bitrate=negotiated.max_bitrate,
        error_correction=SDP_TO_EC.get(negotiated.udp_ec, "none"),
        rate_management=negotiated.rate_management,
        # T.38 D.2.3: T38FaxMaxDatagram is what the peer can receive; absent (or 0), use
        # the 400 every deployed stack takes, as Asterisk does.  A small value is honoured:
        # the sender trims error correction (Asterisk's calculate_far_max_ifp) and the
        # session splits HDLC frames to fit.  Below 32 octets not even a split frame
        # fits with its headers, so such a value is taken as 32.
        peer_max_datagram=max(answer.peer_max_datagram or DEFAULT_PEER_MAX_DATAGRAM, MIN_PEER_MAX_DATAGRAM),
        media_latching=media_latching,
        expected_host=media_source_host(remote_host, sip_source_host),
    )


def media_source_host(sdp_host: str, sip_source_host: str) -> str:
    """The host UDPTL must come from: the SDP's, unless it names an address that cannot be
    reached from here (private, link-local, unspecified) while the SIP request came from a
    public one - a caller behind NAT, whose media will come from its NAT's public address,
    the one its SIP came from.  (``strict`` media then accepts that host only; hardening
    review item 1.)"""
    try:
        sip = ipaddress.ip_address(sip_source_host)
    except ValueError:
        return sdp_host or sip_source_host
    try:
        sdp = ipaddress.ip_address(sdp_host)
    except ValueError:
        # A host name in c= (RFC 8866 5.7 allows it; rare): the latch compares addresses
        # and we do not block a call on DNS, so the address the signalling came from it is.
        return sip_source_host
    if (sdp.is_private or sdp.is_link_local or sdp.is_unspecified) and sip.is_global:
        return sip_source_host
    return sdp_host
