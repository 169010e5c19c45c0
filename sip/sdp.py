"""SDP (RFC 4566) with the offer/answer rules of RFC 3264, for G.711 audio and T.38 fax.

A ``SessionDescription`` keeps every line it does not interpret (``i=``, ``b=``, ``z=``,
unknown attributes...) in order, so ``parse_sdp(sd.to_bytes()) == sd``.

T.38 streams are ``m=image <port> udptl t38`` with the attributes of ITU-T T.38 Annex D
(D.2.3), read into ``T38Params``. ``answer_t38`` applies Annex D's answer rules;
``make_t38_offer/answer`` and ``make_audio_offer/answer`` build whole bodies.
A port of 0 in an answer means the stream was rejected (RFC 3264 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Iterable

from .errors import LocalProtocolError, RemoteProtocolError, SipParseError

__all__ = [
    "Connection",
    "MediaDescription",
    "Origin",
    "SessionDescription",
    "T38Params",
    "UDP_EC_FEC",
    "UDP_EC_NONE",
    "UDP_EC_REDUNDANCY",
    "answer_t38",
    "find_audio_stream",
    "find_t38_stream",
    "make_audio_answer",
    "make_audio_offer",
    "make_t38_answer",
    "make_t38_offer",
    "parse_sdp",
    "session_unchanged",
    "with_version",
]


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`` (RFC 4566 5.2)."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <address>`` (RFC 4566 5.7); ``address`` may carry ``/ttl``."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


Attribute = tuple[str, "str | None"]


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section: media, port, protocol, formats, then its own lines."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    # i=, b=, k= lines (type, value) in order; emitted in RFC 4566's order.
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        """RFC 3264 6: a zero port rejects (or disables) the stream."""
        return self.port == 0

    @property
    def is_t38(self) -> bool:
        """``m=image <port> udptl t38`` (T.38 Annex D.2.1), any case."""
        media = self.media
        if media != "image" and media.lower() != "image":
            return False
        proto = self.proto
        if proto != "udptl" and proto.lower() != "udptl":
            return False
        return "t38" in self.formats or any(f.lower() == "t38" for f in self.formats)

    def attribute(self, name: str) -> str | None:
        """The value of the first attribute ``name`` (case-insensitive); '' for a flag."""
        lower = name.lower()
        for key, value in self.attributes:
            if key.lower() == lower:
                return "" if value is None else value
        return None

    def has_attribute(self, name: str) -> bool:
        lower = name.lower()
        return any(key.lower() == lower for key, _ in self.attributes)

    @property
    def direction(self) -> str:
        """sendrecv / sendonly / recvonly / inactive (RFC 4566 6; default sendrecv)."""
        for key, _ in self.attributes:
            if key in _DIRECTIONS:
                return key
        return "sendrecv"

    def rtpmap(self) -> dict[str, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate), static types 0 and 8 included."""
        mapping = {pt: _STATIC_PAYLOADS[pt] for pt in self.formats if pt in _STATIC_PAYLOADS}
        for key, value in self.attributes:
            if key.lower() == "rtpmap" and value:
                pt, _, encoding = value.partition(" ")
                name, _, rest = encoding.strip().partition("/")
                rate = rest.partition("/")[0]
                if rate.isdigit() and rate.isascii() and len(rate) < 10:
                    mapping[pt] = (name, int(rate))
        return mapping

    def lines(self) -> list[str]:
        count = "" if self.port_count is None else f"/{self.port_count}"
        out = [f"m={self.media} {self.port}{count} {self.proto} {' '.join(self.formats)}".rstrip()]
        out += [f"{kind}={value}" for kind, value in self.other_lines if kind == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{kind}={value}" for kind, value in self.other_lines if kind in "bk"]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return out


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_STATIC_PAYLOADS = {"0": ("PCMU", 8000), "8": ("PCMA", 8000)}


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body (RFC 4566 5). ``times`` holds the ``t=``/``r=`` lines as (type, value)."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    times: list[tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    # i=, u=, e=, p=, b=, z=, k= lines at session level.
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    def to_bytes(self) -> bytes:
        """The body, CRLF line endings (RFC 4566 5)."""
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += [f"{k}={v}" for k, v in self.other_lines if k in "iuep"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"{k}={v}" for k, v in self.other_lines if k == "b"]
        lines += [f"{k}={v}" for k, v in self.times]
        lines += [f"{k}={v}" for k, v in self.other_lines if k in "zk"]
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            lines += media.lines()
        text = "\r\n".join(lines) + "\r\n"
        if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
            raise LocalProtocolError("SDP field with CR, LF or NUL")
        return text.encode("utf-8", "surrogateescape")

    def address_of(self, media: MediaDescription) -> str | None:
        """The connection address for ``media`` (its own ``c=``, else the session's), no /ttl."""
        connection = media.connection or self.connection
        if connection is None:
            return None
        return connection.address.split("/", 1)[0]


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SipParseError(f"bad SDP c= line {value!r}")
    return Connection(parts[2], parts[1], parts[0])


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SipParseError(f"bad SDP m= line {value!r}")
    media, port_text, proto = parts[:3]
    port_text, slash, count_text = port_text.partition("/")
    if len(port_text) > 5 or not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
        raise SipParseError(f"bad port in SDP m= line {value!r}")
    count = None
    if slash:
        if not count_text.isdigit() or not count_text.isascii() or len(count_text) > 5:
            raise SipParseError(f"bad port count in SDP m= line {value!r}")
        count = int(count_text)
    return MediaDescription(media, int(port_text), proto, parts[3:], count, None, [], [])


_SESSION_OTHER = frozenset("iuepbzk")
_MEDIA_OTHER = frozenset("ibk")
_LINE_TYPES = frozenset("abcdefghijklmnopqrstuvwxyz")


def sdp_lines(text: str) -> list[str]:
    """``text.replace("\\r\\n", "\\n").split("\\n")``, without the copy when every LF is in a CRLF.

    A stray CR stays inside its line either way.
    """
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:
        lines = text.replace("\r\n", "\n").split("\n")
    return lines


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body. Lines may end in CRLF or LF (RFC 4566 5 lets a parser accept LF).

    Raises ``SipParseError``: hint 400 for a malformed body; 488 (RFC 3261 21.4.26) comes
    from ``T38Params.from_attributes`` for T.38 values we cannot use.
    """
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, (bytes, bytearray)) else body
    if "\x00" in text:
        # RFC 4566 9: no field may hold NUL (byte-string, text).  Refused here, else an
        # answer echoing the offer's m= line (a rejected stream) cannot be serialised.
        raise SipParseError("NUL in SDP body")
    lines = sdp_lines(text)
    # The origin is filled in by o= (a body without one is refused below).
    session = SessionDescription(None, "-", None, [], [], [], [])  # type: ignore[arg-type]
    attributes = session.attributes
    current: MediaDescription | None = None
    seen_version = seen_origin = seen_name = False
    for line in lines:
        kind = line[:2]
        if kind == "a=":
            name, colon, value = line[2:].partition(":")
            if not name:
                raise SipParseError(f"bad SDP attribute {line[:80]!r}")
            attributes.append((name, value if colon else None))
            continue
        if not line:
            continue
        if len(kind) != 2 or kind[1] != "=" or kind[0] not in _LINE_TYPES or "\r" in line:
            raise SipParseError(f"bad SDP line {line[:80]!r}")
        kind = kind[0]
        value = line[2:]
        if kind == "m":
            current = _parse_media(value)
            session.media.append(current)
            attributes = current.attributes
        elif kind == "c":
            connection = _parse_connection(value)
            if current is not None:
                current.connection = connection
            else:
                session.connection = connection
        elif current is not None:
            if kind not in _MEDIA_OTHER:
                raise SipParseError(f"SDP line {kind}= not allowed in a media section")
            current.other_lines.append((kind, value))
        elif kind == "v":
            if seen_version or value.strip() != "0":
                raise SipParseError(f"bad SDP version line {line!r}")
            seen_version = True
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SipParseError(f"bad SDP o= line {value!r}")
            session.origin = Origin(*parts)
            seen_origin = True
        elif kind == "s":
            session.session_name = value
            seen_name = True
        elif kind == "t" or kind == "r":
            session.times.append((kind, value))
        elif kind in _SESSION_OTHER:
            session.other_lines.append((kind, value))
        # RFC 4566 5: other unknown line types at session level are ignored.
    if not (seen_version and seen_origin):
        raise SipParseError("SDP without v= and o=")
    if not seen_name:
        session.session_name = "-"
    return session


# ---------------------------------------------------------------------------------------
# T.38 (ITU-T T.38 Annex D.2.3)

UDP_EC_REDUNDANCY = "t38UDPRedundancy"
UDP_EC_FEC = "t38UDPFEC"
UDP_EC_NONE = "t38UDPNoEC"
_UDP_EC = {v.lower(): v for v in (UDP_EC_REDUNDANCY, UDP_EC_FEC, UDP_EC_NONE)}
_RATE_MANAGEMENT = {"transferredtcf": "transferredTCF", "localtcf": "localTCF"}


def _parse_bool(name: str, value: str | None) -> bool:
    # T.38 D.2.3: the boolean attributes are flags; many stacks send ":0"/":1" instead.
    if value is None or value.strip() == "":
        return True
    v = value.strip().lower()
    if v in ("1", "true", "on", "yes"):
        return True
    if v in ("0", "false", "off", "no"):
        return False
    raise SipParseError(f"bad boolean {name}:{value}", 488)


def _parse_int(name: str, value: str | None) -> int:
    v = value.strip() if value else ""
    if len(v) > 9 or not v.isdigit() or not v.isascii():
        raise SipParseError(f"bad number {name}:{value}", 488)
    return int(v)


@dataclass(frozen=True, slots=True)
class T38Params:
    """The T.38 session parameters of T.38 Annex D (Table D.1 / D.2.3).

    An ``m=image`` stream with none of the attributes gets these defaults: version 0
    (D.2.3: absent T38FaxVersion means 0), 14400 bit/s, no fill-bit removal or
    transcoding, transferredTCF (the only rate management usable over UDP, 8.2),
    redundancy (every UDPTL receiver decodes secondary IFPs, T.38 9.1).
    ``max_buffer`` / ``max_datagram`` of None mean "not declared".
    """

    version: int = 0
    max_bitrate: int = 14400
    fill_bit_removal: bool = False
    transcoding_mmr: bool = False
    transcoding_jbig: bool = False
    rate_management: str = "transferredTCF"
    max_buffer: int | None = None
    max_datagram: int | None = None
    udp_ec: str = UDP_EC_REDUNDANCY

    @classmethod
    def from_attributes(cls, attributes: Iterable[Attribute]) -> T38Params:
        """Read the T38* attributes (names case-insensitive: ``T38MaxBitrate`` is common)."""
        # A peer offers the same attribute list call after call, and T38Params is frozen,
        # so the whole result can be shared; bounded so a hostile peer cannot grow it.
        attributes = tuple(attributes)
        params = _T38_PARAMS_MEMO.get(attributes)
        if params is not None:
            return params
        fields: dict[str, object] = {}
        memo = _T38_MEMO
        for attribute in attributes:
            known = memo.get(attribute)
            if known is None:
                name, value = attribute
                if name[:3].lower() != "t38":
                    continue
                reader = _T38_READERS.get(name.lower())
                if reader is None:
                    continue
                known = (reader[0], reader[1](name, value))
                if len(memo) < 512:
                    # Peers send the same few spellings and values; remember them.
                    memo[attribute] = known
            fields[known[0]] = known[1]
        params = cls(**fields)  # type: ignore[arg-type]
        if cls is T38Params and len(_T38_PARAMS_MEMO) < 256:
            _T38_PARAMS_MEMO[attributes] = params
        return params

    def to_attributes(self) -> list[Attribute]:
        """The attributes in T.38 Annex D's spelling; true booleans as bare flags."""
        attributes: list[Attribute] = [
            ("T38FaxVersion", str(self.version)),
            ("T38MaxBitRate", str(self.max_bitrate)),
        ]
        if self.fill_bit_removal:
            attributes.append(("T38FaxFillBitRemoval", None))
        if self.transcoding_mmr:
            attributes.append(("T38FaxTranscodingMMR", None))
        if self.transcoding_jbig:
            attributes.append(("T38FaxTranscodingJBIG", None))
        attributes.append(("T38FaxRateManagement", self.rate_management))
        if self.max_buffer is not None:
            attributes.append(("T38FaxMaxBuffer", str(self.max_buffer)))
        if self.max_datagram is not None:
            attributes.append(("T38FaxMaxDatagram", str(self.max_datagram)))
        attributes.append(("T38FaxUdpEC", self.udp_ec))
        return attributes


def _parse_rate_management(name: str, value: str | None) -> str:
    rate = _RATE_MANAGEMENT.get((value or "").strip().lower())
    if rate is None:
        raise SipParseError(f"bad {name} {value!r}", 488)
    return rate


def _parse_udp_ec(name: str, value: str | None) -> str:
    ec = _UDP_EC.get((value or "").strip().lower())
    if ec is None:
        raise SipParseError(f"bad {name} {value!r}", 488)
    return ec


# T.38 Table D.1 attribute (lower-cased) -> (T38Params field, reader).
_T38_READERS = {
    "t38faxversion": ("version", _parse_int),
    "t38maxbitrate": ("max_bitrate", _parse_int),
    "t38faxfillbitremoval": ("fill_bit_removal", _parse_bool),
    "t38faxtranscodingmmr": ("transcoding_mmr", _parse_bool),
    "t38faxtranscodingjbig": ("transcoding_jbig", _parse_bool),
    "t38faxratemanagement": ("rate_management", _parse_rate_management),
    "t38faxmaxbuffer": ("max_buffer", _parse_int),
    "t38faxmaxdatagram": ("max_datagram", _parse_int),
    "t38faxudpec": ("udp_ec", _parse_udp_ec),
}


_T38_MEMO: dict[Attribute, tuple[str, object]] = {}
_T38_PARAMS_MEMO: dict[tuple[Attribute, ...], T38Params] = {}


def answer_t38(offered: T38Params, local: T38Params, *, supported_ec: Iterable[str] | None = None) -> T38Params:
    """The parameters to answer ``offered`` with, given what we support (``local``).

    T.38 D.2.3 (offer/answer): version and bit rate are the lower of the two; the
    fill-bit-removal and transcoding options may only be true in the answer when offered
    and supported; rate management is echoed; T38FaxMaxBuffer and T38FaxMaxDatagram are
    declarative, so they state what *we* can receive; the error correction is the offered
    scheme if we support it, else the best lesser one we do (FEC > redundancy > none).
    ``supported_ec`` defaults to ``local.udp_ec``, anything weaker, and no EC.
    """
    if supported_ec is None:
        order = [UDP_EC_FEC, UDP_EC_REDUNDANCY, UDP_EC_NONE]
        supported = set(order[order.index(local.udp_ec) :])
    else:
        supported = set(supported_ec) | {UDP_EC_NONE}
    for candidate in _ec_fallbacks(offered.udp_ec):
        if candidate in supported:
            udp_ec = candidate
            break
    else:  # pragma: no cover - NoEC is always supported
        udp_ec = UDP_EC_NONE
    return T38Params(
        version=min(offered.version, local.version),
        max_bitrate=min(offered.max_bitrate, local.max_bitrate),
        fill_bit_removal=offered.fill_bit_removal and local.fill_bit_removal,
        transcoding_mmr=offered.transcoding_mmr and local.transcoding_mmr,
        transcoding_jbig=offered.transcoding_jbig and local.transcoding_jbig,
        rate_management=offered.rate_management,
        max_buffer=local.max_buffer,
        max_datagram=local.max_datagram,
        udp_ec=udp_ec,
    )


def _ec_fallbacks(offered: str) -> list[str]:
    if offered == UDP_EC_FEC:
        return [UDP_EC_FEC, UDP_EC_REDUNDANCY, UDP_EC_NONE]
    if offered == UDP_EC_REDUNDANCY:
        return [UDP_EC_REDUNDANCY, UDP_EC_NONE]
    return [UDP_EC_NONE]


def find_t38_stream(sdp: SessionDescription, *, include_rejected: bool = False) -> MediaDescription | None:
    """The first ``m=image <port> udptl t38`` stream (skipping port-0 ones unless asked)."""
    for media in sdp.media:
        if media.is_t38 and (include_rejected or not media.rejected):
            return media
    return None


def find_audio_stream(sdp: SessionDescription, *, include_rejected: bool = False) -> MediaDescription | None:
    """The first ``m=audio`` RTP stream (skipping port-0 ones unless asked)."""
    for media in sdp.media:
        if media.media.lower() == "audio" and "rtp" in media.proto.lower() and (include_rejected or not media.rejected):
            return media
    return None


# ---------------------------------------------------------------------------------------
# Builders


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _session(address: str, session_id: int, session_version: int, username: str) -> SessionDescription:
    addrtype = _address_type(address)
    return SessionDescription(
        origin=Origin(username, str(session_id), str(session_version), "IN", addrtype, address),
        session_name="-",
        connection=Connection(address, addrtype),
        times=[("t", "0 0")],
    )


def _rejected_copy(media: MediaDescription) -> MediaDescription:
    # RFC 3264 6: a rejected stream is answered with port 0 and the offered formats.
    return MediaDescription(media.media, 0, media.proto, list(media.formats) or ["0"])


_ANSWER_DIRECTION = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def make_t38_offer(
    address: str, port: int, params: T38Params, *, session_id: int, session_version: int = 0, username: str = "-"
) -> SessionDescription:
    """An offer with one ``m=image <port> udptl t38`` stream carrying ``params``."""
    sdp = _session(address, session_id, session_version, username)
    sdp.media.append(MediaDescription("image", port, "udptl", ["t38"], attributes=params.to_attributes()))
    return sdp


def make_t38_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    local: T38Params,
    *,
    session_id: int,
    session_version: int = 0,
    username: str = "-",
    supported_ec: Iterable[str] | None = None,
) -> tuple[SessionDescription, T38Params]:
    """Answer ``offer`` accepting its first T.38 stream (RFC 3264 6: one m= line per
    offered one, others rejected with port 0). Returns the answer and the negotiated
    parameters. Raises ``RemoteProtocolError(488)`` if no usable T.38 stream was offered.
    """
    chosen = find_t38_stream(offer)
    if chosen is None:
        raise RemoteProtocolError("no T.38 stream in the offer", 488)
    offered = T38Params.from_attributes(chosen.attributes)
    negotiated = answer_t38(offered, local, supported_ec=supported_ec)
    answer = _session(address, session_id, session_version, username)
    for media in offer.media:
        if media is chosen:
            attributes = negotiated.to_attributes()
            if media.direction in _ANSWER_DIRECTION:
                attributes.append((_ANSWER_DIRECTION[media.direction], None))
            answer.media.append(MediaDescription("image", port, media.proto, ["t38"], attributes=attributes))
        else:
            answer.media.append(_rejected_copy(media))
    return answer, negotiated


AUDIO_CODECS = {"PCMU": "0", "PCMA": "8"}


def make_audio_offer(
    address: str,
    port: int,
    *,
    session_id: int,
    session_version: int = 0,
    codecs: Iterable[str] = ("PCMU", "PCMA"),
    telephone_event: int | None = 101,
    ptime: int | None = 20,
    username: str = "-",
) -> SessionDescription:
    """An offer with one G.711 audio stream (``codecs`` from PCMU/PCMA, RFC 3551) and
    RFC 4733 telephone-event on payload type ``telephone_event`` (None: not offered)."""
    sdp = _session(address, session_id, session_version, username)
    formats: list[str] = []
    attributes: list[Attribute] = []
    for codec in codecs:
        pt = AUDIO_CODECS.get(codec.upper())
        if pt is None:
            raise LocalProtocolError(f"unsupported codec {codec!r}")
        formats.append(pt)
        attributes.append(("rtpmap", f"{pt} {codec.upper()}/8000"))
    if telephone_event is not None:
        formats.append(str(telephone_event))
        attributes.append(("rtpmap", f"{telephone_event} telephone-event/8000"))
        attributes.append(("fmtp", f"{telephone_event} 0-15"))
    if ptime is not None:
        attributes.append(("ptime", str(ptime)))
    attributes.append(("sendrecv", None))
    sdp.media.append(MediaDescription("audio", port, "RTP/AVP", formats, attributes=attributes))
    return sdp


def make_audio_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    session_id: int,
    session_version: int = 0,
    codecs: Iterable[str] = ("PCMU", "PCMA"),
    ptime: int | None = 20,
    username: str = "-",
) -> tuple[SessionDescription, str]:
    """Answer ``offer``'s first audio stream with the first offered codec we support
    (RFC 3264 6.1: the answer keeps the offerer's payload types), plus telephone-event if
    offered. Other streams are rejected. Returns (answer, chosen codec name).
    Raises ``RemoteProtocolError(488)`` if no G.711 was offered.
    """
    wanted = {c.upper() for c in codecs}
    chosen = find_audio_stream(offer)
    answer = _session(address, session_id, session_version, username)
    selected: tuple[str, str] | None = None
    event_pt: str | None = None
    if chosen is not None:
        rtpmap = chosen.rtpmap()
        for pt in chosen.formats:
            name, rate = rtpmap.get(pt, ("", 0))
            if selected is None and name.upper() in wanted and rate == 8000:
                selected = (pt, name.upper())
            elif event_pt is None and name.lower() == "telephone-event" and rate == 8000:
                event_pt = pt
    if chosen is None or selected is None:
        raise RemoteProtocolError("no G.711 audio stream in the offer", 488)
    for media in offer.media:
        if media is not chosen:
            answer.media.append(_rejected_copy(media))
            continue
        pt, name = selected
        formats = [pt]
        attributes: list[Attribute] = [("rtpmap", f"{pt} {name}/8000")]
        if event_pt is not None:
            formats.append(event_pt)
            attributes.append(("rtpmap", f"{event_pt} telephone-event/8000"))
            attributes.append(("fmtp", f"{event_pt} 0-15"))
        if ptime is not None:
            attributes.append(("ptime", str(ptime)))
        attributes.append((_ANSWER_DIRECTION.get(media.direction, "sendrecv"), None))
        answer.media.append(MediaDescription("audio", port, media.proto, formats, attributes=attributes))
    return answer, selected[1]


def with_version(sdp: SessionDescription, session_version: int) -> SessionDescription:
    """A copy of ``sdp`` with a new o= session version (RFC 3264 8: bump it on every change)."""
    return replace(sdp, origin=replace(sdp.origin, session_version=str(session_version)))


def session_unchanged(old: bytes | None, new: bytes | None) -> bool:
    """RFC 3264 8: an offer whose ``o=`` line (hence version) is unchanged changes nothing.

    Also treats a byte-identical body (ignoring the ``o=`` line, since some peers bump
    the version on every refresh) as unchanged.
    """
    if old is None or new is None:
        return old == new
    old_lines = old.replace(b"\r\n", b"\n").split(b"\n")
    new_lines = new.replace(b"\r\n", b"\n").split(b"\n")
    old_origin = [line for line in old_lines if line.startswith(b"o=")]
    new_origin = [line for line in new_lines if line.startswith(b"o=")]
    if old_origin and old_origin == new_origin:
        return True

    def strip(lines: list[bytes]) -> list[bytes]:
        return [line.rstrip() for line in lines if not line.startswith(b"o=") and line.strip()]

    return strip(old_lines) == strip(new_lines)
