"""Fuzz targets shared by the Hypothesis tests (tests/fuzz/test_fuzz_*.py) and the long run
(bench/fuzz.py), t38gw issue #14.

A target is a function of one ``bytes`` input that drives a parser the way the gateway
does on bytes from the network, and checks the promises the parser documents:

* "no crash": only the documented error types for bad input (``Target.allowed``) may
  escape; anything else (IndexError, KeyError, struct.error, RecursionError,
  UnicodeDecodeError ...) is a bug.  A broken invariant raises ``FuzzFailure``.
* "no hang": the long run times every input (``PER_INPUT_SECONDS``); the Hypothesis tests
  set a deadline.
* "bounded memory": output is checked against the input size where a parser can amplify
  (the T.4/T.6 decoders: rows), and the long run samples tracemalloc peaks.

Seeds are real bytes: the RFC 4475 torture messages and the SIP, RTP and UDPTL datagrams
of the shared captures (../shared/testdata), the SpanDSP IFP traces (tests/vectors) and
pages of the ITU-T T.24 charts coded by our encoder.  ``mutate`` is the byte-level mutator
both runners use.
"""

from __future__ import annotations

import functools
import json
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imaging.decoder import StreamingDecoder
from imaging.model import BitOrder, Coding
from imaging.wholepage import decode_whole_page
from rtp.errors import RtpParseError
from rtp.events import parse_telephone_event
from rtp.jitter import JitterBuffer
from rtp.packet import is_rtcp, parse_rtp
from sip.address import Address
from sip.auth import parse_challenge, parse_credentials
from sip.errors import RemoteProtocolError as SipRemoteProtocolError
from sip.errors import SipParseError
from sip.message import Request, make_response
from sip.parser import StreamParser, parse_message
from sip.sdp import (
    T38Params,
    find_audio_stream,
    find_t38_stream,
    make_audio_answer,
    make_t38_answer,
    make_t38_offer,
    parse_sdp,
)
from sip.ua import UAConfig, UserAgent
from t38gw.t30.dcs import parse_dcs, parse_dis
from t38gw.t30.ecm import frames_in_ppr_map
from t38gw.t30.errors import RemoteProtocolError as T30RemoteProtocolError
from t38gw.t30.frames import T30Frame, decode_ident
from udptl.codec import FecInfo, UdptlPacket, decode_ifp, decode_udptl, encode_udptl, ifp_length
from udptl.errors import RemoteProtocolError as UdptlRemoteProtocolError
from udptl.ifp import FieldType

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors"

#: "No hang": no input may take longer than this (issue #14), 64 KiB inputs included.
PER_INPUT_SECONDS = 1.0
#: The largest input the mutator grows to (a SIP datagram is at most 65535 octets).
MAX_INPUT = 64 * 1024


class FuzzFailure(AssertionError):
    """A target's invariant (not just its error types) does not hold for an input."""


def _testdata() -> Path:
    from tests.conftest import testdata_dir

    return testdata_dir()


# ------------------------------------------------------------------------------ seeds


@functools.cache
def _udp_payloads(capture: str) -> tuple[bytes, ...]:
    from tests.support.pcap import read_udp

    return tuple(d.payload for d in read_udp(_testdata() / "captures" / capture))


NDPI = "FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"
AST = "asterisk-testsuite_ast-2016-003_crash.pcap"
_SIP_STARTS = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ", b"PRACK ", b"UPDATE ",
               b"INFO ", b"NOTIFY ", b"SUBSCRIBE ", b"REFER ", b"MESSAGE ", b"SIP/2.0 ")


@functools.cache
def sip_seeds() -> tuple[bytes, ...]:
    """RFC 4475 torture messages and every distinct SIP datagram of the two captures."""
    torture = sorted((_testdata() / "sip-torture" / "rfc4475").glob("*.dat"))
    seeds = [path.read_bytes() for path in torture]
    for capture in (NDPI, AST):
        seeds += [p for p in _udp_payloads(capture) if p.startswith(_SIP_STARTS)]
    return tuple(dict.fromkeys(seeds))


@functools.cache
def sdp_seeds() -> tuple[bytes, ...]:
    """The SDP bodies of the SIP seeds, and offers our own code makes."""
    seeds: list[bytes] = []
    for data in sip_seeds():
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"v=0" in body:
            seeds.append(body)
    offer = make_t38_offer("192.0.2.1", 40000, T38Params(), session_id=1)
    seeds.append(offer.to_bytes())
    return tuple(dict.fromkeys(seeds))


@functools.cache
def spandsp_ifps() -> tuple[tuple[int, bytes], ...]:
    """(T.38 version, IFP octets) of every IFP in the SpanDSP traces."""
    out = []
    for path in sorted((VECTORS / "spandsp_ifp").glob("*.jsonl")):
        version = int(path.name[1])
        for line in path.read_text().splitlines():
            out.append((version, bytes.fromhex(json.loads(line)["ifp"])))
    return tuple(dict.fromkeys(out))


@functools.cache
def udptl_seeds() -> tuple[bytes, ...]:
    """The asterisk capture's UDPTL datagrams (hostile ones included) and the SpanDSP IFPs
    wrapped in UDPTL with redundancy (the previous IFPs as secondaries) and with FEC."""
    seeds = [p for p in _udp_payloads(AST) if not p.startswith(_SIP_STARTS)]
    ifps = [ifp for _, ifp in spandsp_ifps()]
    for seq in range(0, len(ifps), 7):
        window = ifps[max(0, seq - 3) : seq + 1]
        seeds.append(encode_udptl(UdptlPacket(seq, window[-1], tuple(reversed(window[:-1])))))
        if seq % 21 == 0:
            seeds.append(encode_udptl(UdptlPacket(seq, window[-1], None, FecInfo(3, (window[0], window[-1])))))
    # The nDPI capture's RTP on the ports negotiated for T.38 (the decoder must refuse it).
    seeds += [p for p in _udp_payloads(NDPI) if not p.startswith(_SIP_STARTS)][:20]
    return tuple(dict.fromkeys(seeds))


@functools.cache
def t30_seeds() -> tuple[bytes, ...]:
    """The HDLC frames (T.38 wire order) the SpanDSP traces carry: hdlc-data fields joined
    up to each hdlc-fcs-OK, as the T.30 engine receives them."""
    frames: list[bytes] = []
    for path in sorted((VECTORS / "spandsp_ifp").glob("*.jsonl")):
        version = int(path.name[1])
        pending: dict[str, bytearray] = {}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            packet = decode_ifp(bytes.fromhex(record["ifp"]), version)
            buffer = pending.setdefault(record["dir"], bytearray())
            for field in packet.fields or ():
                if field.field_type == FieldType.HDLC_DATA:
                    buffer += field.data
                elif field.field_type in (FieldType.HDLC_FCS_OK, FieldType.HDLC_FCS_OK_SIG_END):
                    if buffer:
                        frames.append(bytes(buffer))
                    buffer.clear()
    return tuple(dict.fromkeys(frames))


@functools.cache
def rtp_seeds() -> tuple[bytes, ...]:
    """RTP of the nDPI capture (PCMA, comfort noise, RFC 4733 events): single packets and
    runs of consecutive packets in ``rtp_stream`` framing."""
    packets = [p for p in _udp_payloads(NDPI) if len(p) >= 12 and p[0] >> 6 == 2 and not p.startswith(_SIP_STARTS)]
    seeds = list(dict.fromkeys(packets[::10]))
    events = [p for p in packets if p[1] & 0x7F == 100]
    seeds += events
    for start in range(0, len(packets) - 8, 97):
        seeds.append(frame_stream(packets[start : start + 8] + events[:1]))
    return tuple(dict.fromkeys(seeds))


def frame_stream(packets: Sequence[bytes]) -> bytes:
    """Several datagrams in one input: each behind a 2-octet big-endian length."""
    return b"".join(len(p).to_bytes(2, "big") + p for p in packets)


def unframe_stream(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos + 2 <= len(data):
        length = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


# T.4/T.6 inputs: octet 0 picks the coding, bit order and width, octet 1 how the data is
# cut into pieces for feed(); the rest is the coded page.
CODINGS = (Coding.MH, Coding.MR, Coding.MMR)
WIDTHS = (1728, 8, 64, 2048, 2432, 3456, 4864, 216)


def t4_header(coding: Coding, bit_order: BitOrder, width: int, cut: int = 0) -> bytes:
    config = CODINGS.index(coding) | (4 if bit_order is BitOrder.LSB_FIRST else 0) | WIDTHS.index(width) << 3
    return bytes((config, cut))


def t4_config(data: bytes) -> tuple[Coding, BitOrder, int, int, bytes]:
    config = data[0] if data else 0
    cut = data[1] if len(data) > 1 else 0
    coding = CODINGS[(config & 3) % 3]
    bit_order = BitOrder.LSB_FIRST if config & 4 else BitOrder.MSB_FIRST
    return coding, bit_order, WIDTHS[(config >> 3) & 7], cut, data[2:]


@functools.cache
def t4_seeds() -> tuple[bytes, ...]:
    """Slices of the T.24 charts coded MH, MR (k=2 and 4) and MMR in both bit orders, at
    1728 pels and cut to narrow widths, and the non-ECM page data SpanDSP sent."""
    import gzip

    from imaging.encoder import encode_page

    raw = gzip.decompress((_testdata() / "itu_t24_charts" / "itu1.pbm.gz").read_bytes())
    bitmap = raw.split(maxsplit=3)[3]
    stride = 1728 // 8
    seeds = []
    for top, rows in ((0, 4), (600, 24), (1200, 12)):
        page = bitmap[top * stride : (top + rows) * stride]
        narrow = b"".join(page[r * stride + 60 : r * stride + 68] for r in range(rows))  # 64 pels
        for width, data in ((1728, page), (64, narrow)):
            for coding in CODINGS:
                for bit_order in BitOrder:
                    coded = encode_page(data, width, coding, k=2 + 2 * (top % 2), bit_order=bit_order)
                    seeds.append(t4_header(coding, bit_order, width, top % 251) + coded)
    # The start of the T.4 data SpanDSP sent in the non-ECM traces (MH v0, MR v3): T.38 order.
    for name, coding in (("v0_nonecm_mh.jsonl", Coding.MH), ("v3_nonecm_mr.jsonl", Coding.MR)):
        version = int(name[1])
        data = bytearray()
        for line in (VECTORS / "spandsp_ifp" / name).read_text().splitlines():
            packet = decode_ifp(bytes.fromhex(json.loads(line)["ifp"]), version)
            for field in packet.fields or ():
                if field.field_type in (FieldType.T4_NON_ECM_DATA, FieldType.T4_NON_ECM_SIG_END):
                    data += field.data
        seeds.append(t4_header(coding, BitOrder.MSB_FIRST, 1728, 7) + bytes(data[:3000]))
    return tuple(seeds)


# ---------------------------------------------------------------------------- targets


def run_sip(data: bytes) -> None:
    """parse_message as the UA calls it on a datagram, then every header accessor the core
    uses, the answer to a request (echoing its headers), the auth headers, and the same
    bytes framed by StreamParser fed in three pieces."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        if isinstance(exc.partial, Request):
            # The UA answers a partly parsed request with the error's status hint.
            make_response(exc.partial, exc.status_hint if 400 <= exc.status_hint < 700 else 400).to_bytes()
        message = None
    if message is not None:
        for name in ("call_id", "cseq", "from_", "to", "vias", "via", "contacts", "is_wildcard_contact",
                     "record_routes", "routes", "max_forwards", "content_type", "expires"):
            try:
                getattr(message, name)
            except SipParseError:
                pass
        for name, parse in (("www-authenticate", parse_challenge), ("proxy-authenticate", parse_challenge),
                            ("authorization", parse_credentials), ("proxy-authorization", parse_credentials)):
            for value in message.headers.get_all(name):
                try:
                    parse(value)
                except SipParseError:
                    pass
        message.to_bytes()
        if isinstance(message, Request) and message.method != "ACK":
            make_response(message, 400).to_bytes()
    parser = StreamParser(max_head_size=4096, max_body_size=8192)
    third = len(data) // 3
    try:
        for piece in (data[:third], data[third : 2 * third], data[2 * third :]):
            for framed in parser.feed(piece):
                framed.to_bytes()
    except SipParseError:
        pass
    if parser.buffered > 4096 + 8192 + len(data) // 3 + 4:
        raise FuzzFailure(f"StreamParser holds {parser.buffered} octets past its limits")


_SOURCE = Address("udp", "192.0.2.7", 5060)  # outside allow_from: the rate limiter runs too


def run_sip_ua(data: bytes) -> None:
    """The whole receive path of a datagram: UserAgent.receive (parse, refuse, answer,
    create the transaction or call), its output serialised, then its timers run out."""
    ua = UserAgent(UAConfig(), rng=random.Random(0))
    ua.receive(data, _SOURCE, 0.0)
    for outgoing in ua.messages_to_send():
        outgoing.message.to_bytes()
    ua.events()
    for now in (1.0, 40.0, 400.0):
        ua.handle_timer(now)
        ua.messages_to_send()
        ua.events()


def run_sdp(data: bytes) -> None:
    """parse_sdp, then what the gateway does with an offer: the T.38 and audio answers
    (serialised: a 488 is fine, a crash while answering is not)."""
    sdp = parse_sdp(data)
    for media in sdp.media:
        _ = media.direction
        media.rtpmap()
        sdp.address_of(media)
    find_audio_stream(sdp, include_rejected=True)
    t38 = find_t38_stream(sdp, include_rejected=True)
    if t38 is not None:
        T38Params.from_attributes(t38.attributes)
    try:
        answer, _ = make_t38_answer(sdp, "192.0.2.1", 40000, T38Params(), session_id=1)
        parse_sdp(answer.to_bytes())
    except SipRemoteProtocolError:
        pass
    try:
        answer, _ = make_audio_answer(sdp, "192.0.2.1", 40002, session_id=1)
        parse_sdp(answer.to_bytes())
    except SipRemoteProtocolError:
        pass


def run_udptl(data: bytes) -> None:
    """decode_udptl, then every IFP it carries decoded for each T.38 version (and
    ifp_length, which the FEC recovery uses on padded IFPs); the whole input as an IFP too."""
    try:
        packet = decode_udptl(data)
    except UdptlRemoteProtocolError:
        packet = None
    ifps = [data]
    if packet is not None:
        ifps.append(packet.primary)
        ifps += packet.secondaries or ()
        if packet.fec is not None:
            ifps += packet.fec.entries
    for ifp in ifps:
        for version in (0, 3):
            try:
                decode_ifp(ifp, version)
            except UdptlRemoteProtocolError:
                pass
            length = ifp_length(ifp + bytes(8), version)
            if length is not None and not 0 < length <= len(ifp) + 8:
                raise FuzzFailure(f"ifp_length {length} for {len(ifp)} octets")


def run_t30(data: bytes) -> None:
    """T30Frame.from_wire on an HDLC frame as T.38 delivers it, then the FIF readers the
    engine calls on each kind of frame: DIS/DTC, DCS, identities, PPR maps."""
    frame = T30Frame.from_wire(data)
    _ = frame.name
    if frame.to_wire() != data:
        raise FuzzFailure("from_wire/to_wire do not round-trip")
    fif = frame.fif
    for parse in (parse_dis, parse_dcs):
        try:
            parse(fif)
        except T30RemoteProtocolError:
            pass
    decode_ident(fif)
    numbers = frames_in_ppr_map(fif)
    if len(numbers) > 256:
        raise FuzzFailure(f"PPR map names {len(numbers)} frames")


def run_rtp(data: bytes) -> None:
    """parse_rtp and the RFC 4733 payload of one datagram; then the input as a run of
    datagrams (``frame_stream`` framing) through RTCP demultiplexing, parse_rtp and the
    jitter buffer (PCMA, telephone-event on 100), a pop every 10 ms."""
    is_rtcp(data)
    try:
        packet = parse_rtp(data)
        try:
            parse_telephone_event(packet.payload)
        except RtpParseError:
            pass
    except RtpParseError:
        pass
    buffer = JitterBuffer(8, telephone_event_pt=100)
    now = 0.0
    for datagram in unframe_stream(data):
        now += 0.01
        if not is_rtcp(datagram):
            try:
                buffer.push(parse_rtp(datagram), now)
            except RtpParseError:
                pass
        frame = buffer.pop(now)
        if frame is not None and len(frame) != 160:
            raise FuzzFailure(f"jitter buffer played a frame of {len(frame)} octets")
    for _ in range(20):
        now += 0.02
        buffer.pop(now)


def _pieces(data: bytes, cut: int) -> list[bytes]:
    """``data`` cut at positions drawn from ``cut`` (deterministic per input)."""
    if cut == 0 or not data:
        return [data]
    rng = random.Random(cut * 1_000_003 + len(data))
    out = []
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 2, 3, 7, 64, 500, 4096))
        out.append(data[pos : pos + step])
        pos += step
    return out


PAGE_FIELDS = ("width", "height", "bitmap", "bad_rows", "longest_bad_run", "damaged", "ended")


def _page_fields(page: object) -> tuple[object, ...]:
    return tuple(getattr(page, name) for name in PAGE_FIELDS)


def run_t4(data: bytes) -> None:
    """StreamingDecoder fed the page in pieces (coding, bit order, width and cuts taken
    from the first two octets) must give the page it gives fed in one go, never raise, and
    make at most one row per bit of input (its output is bounded by its input)."""
    coding, bit_order, width, cut, coded = t4_config(data)
    whole = StreamingDecoder(coding, width, bit_order=bit_order)
    whole.feed(coded)
    page = whole.finish()
    if page.height > 8 * len(coded) + 1 or len(page.bitmap) != page.height * (width // 8):
        raise FuzzFailure(f"{page.height} rows of {len(page.bitmap)} octets from {len(coded)} octets")
    if cut:
        pieces = StreamingDecoder(coding, width, bit_order=bit_order)
        for piece in _pieces(coded, cut):
            pieces.feed(piece)
        differ = [name for name, a, b in zip(PAGE_FIELDS, _page_fields(pieces.finish()), _page_fields(page)) if a != b]
        if differ:
            raise FuzzFailure(f"{coding.name} fed in pieces: {', '.join(differ)} not as fed whole")


def run_wholepage(data: bytes) -> None:
    """decode_whole_page (libtiff where it proves the result the same) must give the rows
    StreamingDecoder gives fed everything at once, as it documents."""
    coding, bit_order, width, _, coded = t4_config(data)
    fast = decode_whole_page(coded, coding, width, bit_order=bit_order, max_rows=4096)
    streaming = StreamingDecoder(coding, width, bit_order=bit_order)
    streaming.feed(coded)
    slow = streaming.finish()
    if (fast.height, fast.bitmap, fast.bad_rows) != (slow.height, slow.bitmap, slow.bad_rows):
        raise FuzzFailure(f"decode_whole_page: {fast.height} rows, {fast.bad_rows} bad; "
                          f"StreamingDecoder: {slow.height} rows, {slow.bad_rows} bad")


@functools.cache
def t30_rx_seeds() -> tuple[bytes, ...]:
    """What SpanDSP's sender sent in each trace, as UDPTL datagrams (each IFP with the one
    before as redundancy) in ``frame_stream`` framing behind the T.38 version octet; whole
    calls and their first 40 IFPs."""
    seeds = []
    for path in sorted((VECTORS / "spandsp_ifp").glob("*.jsonl")):
        version = int(path.name[1])
        ifps = [bytes.fromhex(record["ifp"]) for record in map(json.loads, path.read_text().splitlines())
                if record["dir"] == "sender->receiver"]
        datagrams = [encode_udptl(UdptlPacket(seq, ifp, tuple(ifps[max(0, seq - 1) : seq][::-1])))
                     for seq, ifp in enumerate(ifps)]
        seeds.append(bytes((version,)) + frame_stream(datagrams))
        seeds.append(bytes((version,)) + frame_stream(datagrams[:40]))
    return tuple(seeds)


def run_t30_rx(data: bytes) -> None:
    """The receive path of a fax: UDPTL datagrams (octet 0: T.38 version 0-3, then
    ``frame_stream`` framing, one every 20 ms) through UdptlReceiver into the T.30
    receiving engine, its timers run out at the end.  Nothing may escape: whatever a peer
    sends ends as counters, log lines or a T.30 result."""
    from t38gw.t30.receiver import ReceiverConfig, T30Receiver
    from udptl.receiver import IfpReceived, UdptlReceiver

    version = data[0] % 4 if data else 0
    receiver = UdptlReceiver(version)
    engine = T30Receiver(ReceiverConfig(local_ident="1", max_page_rows=4096))
    engine.start(0.0)
    now = 0.0
    for datagram in unframe_stream(data[1:]):
        now += 0.02
        for item in receiver.datagram_received(datagram, now):
            if isinstance(item, IfpReceived) and item.packet is not None:
                engine.ifp_received(item.packet, now)
            else:
                engine.ifps_lost(1, now)
        engine.ifps_to_send(now)
        if engine.finished:
            return
    for _ in range(12):
        deadline = engine.next_deadline()
        if deadline is None or engine.finished:
            break
        engine.handle_timer(max(deadline, now))
        engine.ifps_to_send(max(deadline, now))


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    #: The documented error types for bad input; anything else escaping is a bug.
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], tuple[bytes, ...]]
    #: Tokens the mutator inserts (structure the bytes of this format are made of).
    tokens: tuple[bytes, ...] = ()
    max_input: int = MAX_INPUT
    #: Memory a run may take per input octet (tracemalloc peak, past a fixed allowance):
    #: a decoder makes up to one row (``width // 8`` octets) per input bit.
    memory_per_octet: int = 256


_SIP_TOKENS = (
    b"\r\n", b"\r\n\r\n", b"\r\n ", b":", b";", b",", b"<", b">", b"\"", b"\\", b"%", b"%0", b"@", b"[", b"]",
    b"SIP/2.0", b"sip:", b"sips:", b"tel:", b"Via: SIP/2.0/UDP ", b";branch=z9hG4bK", b";tag=", b";received=",
    b";rport", b"Content-Length: ", b"Content-Length: 4294967296", b"CSeq: 1 INVITE", b"Max-Forwards: ",
    b"Contact: *", b"Authorization: Digest ", b"WWW-Authenticate: Digest realm=\"a\", nonce=\"b\"",
    b"Content-Type: application/sdp", b"v=0\r\n", b"m=image 0 udptl t38", b"\x00", b"\xff", b"\xc3\x28",
    b"\xed\xa0\x80", b"-1", b"99999999999999999999", b"0x10", b"\t", b" ", b"=", b"?", b"&",
)
_SDP_TOKENS = (
    b"\r\n", b"\n", b"\r", b"v=0", b"o=- 1 1 IN IP4 ", b"s=-", b"c=IN IP4 ", b"c=IN IP6 ::1", b"t=0 0",
    b"m=image ", b"m=audio ", b" udptl t38", b" RTP/AVP 0 8 101", b"/2", b"a=", b"a=T38FaxVersion:",
    b"a=T38MaxBitRate:", b"a=T38FaxRateManagement:", b"a=T38FaxUdpEC:", b"a=T38FaxMaxDatagram:",
    b"a=T38FaxMaxBuffer:", b"a=T38FaxFillBitRemoval", b"a=rtpmap:", b"PCMU/8000", b"telephone-event/8000",
    b"a=sendonly", b"a=inactive", b":", b" ", b"65536", b"-1", b"4294967296", b"99999999999999999999", b"\x00",
    b"\xff", b"0",
)
_BINARY_TOKENS = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x80\x00", b"\xc0\x00", b"\xff\xff", b"\x00\x00\x00\x00",
                  b"\xff\xff\xff\xff", b"\x01", b"\x3f\xff", b"\x40\x00")
_T4_TOKENS = (b"\x00\x10", b"\x00\x01", b"\x00\x80", b"\x00\x08", b"\x80\x00", b"\x01\x00",
              b"\x00\x10\x01\x00\x10\x01", b"\x00\x00\x00", b"\xff", b"\xaa", b"\x55")

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("sip", run_sip, (), sip_seeds, _SIP_TOKENS),
        Target("sip_ua", run_sip_ua, (), sip_seeds, _SIP_TOKENS),
        Target("sdp", run_sdp, (SipParseError,), sdp_seeds, _SDP_TOKENS),
        Target("udptl", run_udptl, (), udptl_seeds, _BINARY_TOKENS),
        Target("t30", run_t30, (T30RemoteProtocolError,), t30_seeds, _BINARY_TOKENS),
        Target("rtp", run_rtp, (), rtp_seeds, _BINARY_TOKENS),
        Target("t30_rx", run_t30_rx, (), t30_rx_seeds, _BINARY_TOKENS),
        Target("t4", run_t4, (), t4_seeds, _T4_TOKENS, memory_per_octet=16 * 608),
        Target("wholepage", run_wholepage, (), t4_seeds, _T4_TOKENS, memory_per_octet=16 * 608),
    )
}


def check(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; a documented error is fine, anything else propagates."""
    try:
        target.run(data)
    except target.allowed:
        pass


# ---------------------------------------------------------------------------- mutator

_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x3A, 0x0D, 0x0A)
_INTERESTING_16 = (0, 0x7FFF, 0x8000, 0xFFFF, 0x0100, 0x00FF)
_INTERESTING_32 = (0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes], tokens: Sequence[bytes],
           max_input: int = MAX_INPUT) -> bytes:
    """A few random byte-level edits of ``data`` (AFL/libFuzzer style): bit flips,
    interesting values, deletions, duplications, token insertion, splicing with another
    seed, truncation, and now and then growth to tens of KiB (the "no hang" check)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6, 10))):
        size = len(buf)
        op = rng.randrange(14)
        pos = rng.randrange(size + 1)
        if op == 0 and size:
            buf[pos % size] ^= 1 << rng.randrange(8)
        elif op == 1 and size:
            buf[pos % size] = rng.randrange(256)
        elif op == 2 and size:
            buf[pos % size] = rng.choice(_INTERESTING_8)
        elif op == 3:
            width, values = rng.choice(((2, _INTERESTING_16), (4, _INTERESTING_32)))
            buf[pos:pos + width] = rng.choice(values).to_bytes(width, rng.choice(("big", "little")))
        elif op == 4 and size:
            del buf[pos : pos + rng.choice((1, 1, 2, 4, 16, rng.randrange(size) + 1))]
        elif op == 5 and size:
            start = rng.randrange(size)
            chunk = buf[start : start + rng.choice((1, 4, 16, 64))]
            buf[pos:pos] = chunk
        elif op in (6, 7) and tokens:
            buf[pos:pos] = rng.choice(tokens)
        elif op == 8 and tokens:
            token = rng.choice(tokens)
            found = buf.find(token[:2], pos)
            if found >= 0:
                buf[found : found + len(token)] = rng.choice(tokens)
        elif op == 9 and seeds:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            buf[pos:] = other[cut:]
        elif op == 10:
            del buf[pos:]
        elif op == 11:
            buf[pos:pos] = rng.randbytes(rng.choice((1, 2, 4, 8)))
        elif op == 12 and size and rng.random() < 0.05:
            # Growth: a chunk repeated up to tens of KiB (a slow path shows as a hang).
            start = rng.randrange(size)
            chunk = bytes(buf[start : start + rng.choice((1, 2, 12, 100))])
            buf[pos:pos] = chunk * (rng.randrange(max_input // 2) // len(chunk))
        elif op == 13 and size > 1:
            start = rng.randrange(size - 1)
            end = min(size, start + rng.choice((2, 8, 32)))
            buf[start:end] = bytes(reversed(buf[start:end]))
    return bytes(buf[:max_input])


def input_id(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}-{len(data)}"


# ------------------------------------------------------------------- for Hypothesis


def mutants(target: Target, *, max_input: int = 4096):  # -> st.SearchStrategy[bytes]
    """Hypothesis strategy: a seed of ``target`` (read when first drawn, so collection
    does not need the test data) edited by ``mutate`` with a Hypothesis-drawn RNG."""
    from hypothesis import strategies as st

    def build(index: int, rng: random.Random) -> bytes:
        seeds = target.seeds()
        return mutate(rng, seeds[index % len(seeds)], seeds, target.tokens, max_input)

    return st.builds(build, st.integers(0, 1 << 16), st.randoms(use_true_random=False))


def fuzz_settings(max_examples: int):  # -> hypothesis.settings
    """Short, seeded and reproducible (derandomize: the same examples on every run, no
    example database), with the "no hang" bound as the deadline."""
    from datetime import timedelta

    from hypothesis import HealthCheck, settings

    return settings(max_examples=max_examples, derandomize=True, database=None,
                    deadline=timedelta(seconds=PER_INPUT_SECONDS), print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
