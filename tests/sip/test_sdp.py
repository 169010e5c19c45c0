"""SDP: real bodies from a capture and RFC 4475, T.38 Annex D attributes and answer rules,
builders, round trips and fuzzing."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sip.message import Request, Response
from sip.parser import parse_message
from sip.sdp import (
    UDP_EC_FEC,
    UDP_EC_NONE,
    UDP_EC_REDUNDANCY,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    T38Params,
    answer_t38,
    find_audio_stream,
    find_t38_stream,
    make_audio_answer,
    make_audio_offer,
    make_t38_answer,
    make_t38_offer,
    parse_sdp,
    with_version,
)
from tests.support.pcap import sip_datagrams

CAPTURE = "FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"


@pytest.fixture(scope="module")
def capture_messages(testdata: Path) -> list[Request | Response]:
    return [parse_message(d.payload) for d in sip_datagrams(testdata / "captures" / CAPTURE)]


def _sdp_invites(messages):
    return [m for m in messages if isinstance(m, Request) and m.method == "INVITE" and m.body]


def test_capture_reinvite_to_t38_without_attributes_gets_defaults(capture_messages):
    # captures/README.md: at t=64.46 s a re-INVITE offers m=image ... udptl t38 with no
    # T38* attributes, and the far end answers 488.
    t38_offers = [m for m in _sdp_invites(capture_messages) if find_t38_stream(parse_sdp(m.body))]
    assert t38_offers, "the capture's re-INVITE to T.38"
    for offer in t38_offers:
        sdp = parse_sdp(offer.body)
        stream = find_t38_stream(sdp)
        assert (stream.media, stream.proto, stream.formats) == ("image", "udptl", ["t38"])
        # Two legs of a B2BUA, each with its own media address.
        assert (sdp.address_of(stream), stream.port) in {("10.23.1.52", 16756), ("138.132.169.101", 15580)}
        assert not any(name.lower().startswith("t38") for name, _ in stream.attributes)
        assert T38Params.from_attributes(stream.attributes) == T38Params()
        assert parse_sdp(sdp.to_bytes()) == sdp
        assert sdp.to_bytes() == offer.body  # byte-exact: every line is kept
    call_ids = {m.call_id for m in t38_offers}
    refusals = [m for m in capture_messages if isinstance(m, Response) and m.status == 488 and m.call_id in call_ids]
    assert refusals and all(r.cseq[1] == "INVITE" for r in refusals)


def test_capture_fallback_offer_with_capability_negotiation(capture_messages):
    # The second re-INVITE goes back to audio and lists image/t38 only as a capability
    # (a=cdsc), which is not an m= stream.
    fallback = [
        parse_sdp(m.body) for m in _sdp_invites(capture_messages) if b"a=cdsc:1 image udptl t38" in m.body
    ]
    assert len(fallback) >= 2
    # The first INVITE also offers G.726 (103); the fallback re-INVITE only PCMA.
    first = find_audio_stream(fallback[0])
    assert first.rtpmap() == {"8": ("PCMA", 8000), "103": ("G726-32", 8000), "102": ("telephone-event", 8000)}
    answer, codec = make_audio_answer(fallback[0], "192.0.2.9", 30000, session_id=7)
    assert codec == "PCMA" and answer.media[0].formats == ["8", "102"]
    sdp = fallback[-1]
    assert find_t38_stream(sdp) is None
    audio = find_audio_stream(sdp)
    assert audio.formats == ["8", "102"]
    assert audio.rtpmap() == {"8": ("PCMA", 8000), "102": ("telephone-event", 8000)}
    assert audio.attribute("cdsc") == "1 image udptl t38" and audio.attribute("sqn") == "0"
    with pytest.raises(RemoteProtocolError) as info:
        make_t38_answer(sdp, "192.0.2.9", 40000, T38Params(), session_id=1)
    assert info.value.status_hint == 488
    answer, codec = make_audio_answer(sdp, "192.0.2.9", 30000, session_id=7)
    assert codec == "PCMA"
    [media] = answer.media
    assert media.formats == ["8", "102"] and media.port == 30000


def test_capture_every_sdp_round_trips_and_survives_truncation(capture_messages):
    bodies = {m.body for m in capture_messages if m.content_type == "application/sdp"}
    assert len(bodies) >= 3
    for body in bodies:
        sdp = parse_sdp(body)
        assert parse_sdp(sdp.to_bytes()) == sdp
        _h11_checks(body)


def _h11_checks(body: bytes) -> None:
    whole = parse_sdp(body)
    for cut in range(len(body)):
        try:
            parse_sdp(body[:cut])
        except SipParseError:
            pass
    # LF-only line endings are accepted (RFC 4566 5) and mean the same.
    assert parse_sdp(body.replace(b"\r\n", b"\n")) == whole
    with pytest.raises(SipParseError):
        parse_sdp(body + b"garbage\r\n")
    with pytest.raises(SipParseError):
        parse_sdp(body + b"\x00\xff\r\n")


def test_rfc4475_sdp01(testdata: Path):
    message = parse_message((testdata / "sip-torture" / "rfc4475" / "sdp01.dat").read_bytes())
    sdp = parse_sdp(message.body)
    assert sdp.origin == Origin("mhandley", "29739", "7272939", "IN", "IP4", "192.0.2.5")
    assert sdp.connection == Connection("192.0.2.5")
    assert [m.media for m in sdp.media] == ["audio", "video"]
    assert sdp.media[1].attributes == [("rtpmap", "31 LPC")]
    assert sdp.to_bytes() == message.body
    _h11_checks(message.body)


T38_BODY = (
    b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    b"m=audio 0 RTP/AVP 0\r\n"
    b"m=image 5004 udptl t38\r\n"
    b"a=T38FaxVersion:3\r\n"
    b"a=T38MaxBitrate:33600\r\n"
    b"a=T38FaxFillBitRemoval\r\n"
    b"a=T38FaxTranscodingMMR:1\r\n"
    b"a=T38FaxTranscodingJBIG:0\r\n"
    b"a=T38FaxRateManagement:localTCF\r\n"
    b"a=T38FaxMaxBuffer:2000\r\n"
    b"a=T38FaxMaxDatagram:512\r\n"
    b"a=T38FaxUdpEc:t38UDPFEC\r\n"
    b"a=T38VendorInfo:0 0 0\r\n"
    b"a=sendrecv\r\n"
)


def test_all_annex_d_attributes():
    sdp = parse_sdp(T38_BODY)
    stream = find_t38_stream(sdp)
    assert stream is sdp.media[1] and sdp.media[0].rejected
    assert T38Params.from_attributes(stream.attributes) == T38Params(
        version=3, max_bitrate=33600, fill_bit_removal=True, transcoding_mmr=True,
        transcoding_jbig=False, rate_management="localTCF", max_buffer=2000, max_datagram=512,
        udp_ec=UDP_EC_FEC,
    )
    _h11_checks(T38_BODY)


@pytest.mark.parametrize(
    "attribute, field, value",
    [
        ("T38FaxFillBitRemoval", "fill_bit_removal", True),
        ("T38FaxFillBitRemoval:1", "fill_bit_removal", True),
        ("T38FaxFillBitRemoval:0", "fill_bit_removal", False),
        ("t38faxtranscodingjbig", "transcoding_jbig", True),
        ("T38FaxTranscodingJBIG:0", "transcoding_jbig", False),
        ("T38FaxUdpEC:t38UDPRedundancy", "udp_ec", UDP_EC_REDUNDANCY),
        ("T38FaxUdpEC:t38UDPNoEC", "udp_ec", UDP_EC_NONE),
        ("T38FaxUDPEC:T38UDPFEC", "udp_ec", UDP_EC_FEC),
        ("T38FaxRateManagement:transferredTCF", "rate_management", "transferredTCF"),
        ("T38FaxVersion:0", "version", 0),
        ("T38MaxBitRate:9600", "max_bitrate", 9600),
    ],
)
def test_attribute_spellings(attribute, field, value):
    body = T38_BODY.split(b"m=image")[0] + b"m=image 5004 udptl t38\r\na=" + attribute.encode() + b"\r\n"
    params = T38Params.from_attributes(find_t38_stream(parse_sdp(body)).attributes)
    assert getattr(params, field) == value


@pytest.mark.parametrize(
    "attribute", ["T38FaxVersion:x", "T38MaxBitRate:", "T38FaxUdpEC:magic", "T38FaxRateManagement:sometimes", "T38FaxFillBitRemoval:2"]
)
def test_bad_t38_values_are_488(attribute):
    with pytest.raises(SipParseError) as info:
        T38Params.from_attributes([tuple(attribute.split(":", 1))])
    assert info.value.status_hint == 488


def test_answer_follows_annex_d():
    offered = T38Params(version=3, max_bitrate=33600, fill_bit_removal=True, transcoding_mmr=True,
                        rate_management="localTCF", max_buffer=2000, max_datagram=512, udp_ec=UDP_EC_FEC)
    local = T38Params(version=0, max_bitrate=14400, fill_bit_removal=False, transcoding_mmr=True,
                      max_buffer=1800, max_datagram=400, udp_ec=UDP_EC_REDUNDANCY)
    answer = answer_t38(offered, local)
    assert answer == T38Params(version=0, max_bitrate=14400, fill_bit_removal=False, transcoding_mmr=True,
                               transcoding_jbig=False, rate_management="localTCF", max_buffer=1800,
                               max_datagram=400, udp_ec=UDP_EC_REDUNDANCY)
    # Error correction: the offered one if we support it, else the best lesser one.
    assert answer_t38(T38Params(udp_ec=UDP_EC_FEC), T38Params(udp_ec=UDP_EC_FEC)).udp_ec == UDP_EC_FEC
    assert answer_t38(T38Params(udp_ec=UDP_EC_REDUNDANCY), T38Params(udp_ec=UDP_EC_FEC)).udp_ec == UDP_EC_REDUNDANCY
    assert answer_t38(T38Params(udp_ec=UDP_EC_NONE), T38Params(udp_ec=UDP_EC_FEC)).udp_ec == UDP_EC_NONE
    assert answer_t38(T38Params(udp_ec=UDP_EC_FEC), T38Params(udp_ec=UDP_EC_NONE)).udp_ec == UDP_EC_NONE
    assert answer_t38(T38Params(udp_ec=UDP_EC_FEC), T38Params(), supported_ec=[UDP_EC_FEC]).udp_ec == UDP_EC_FEC


def test_t38_offer_answer_bodies():
    offer = make_t38_offer("192.0.2.1", 40000, T38Params(version=2, max_datagram=400), session_id=77, session_version=3)
    wire = offer.to_bytes()
    assert b"m=image 40000 udptl t38\r\n" in wire and b"o=- 77 3 IN IP4 192.0.2.1\r\n" in wire
    parsed = parse_sdp(wire)
    assert parsed == offer
    # An offer with audio first: the answer keeps both m= lines, audio rejected (RFC 3264 6).
    offered = parse_sdp(T38_BODY.replace(b"m=audio 0", b"m=audio 4000"))
    answer, negotiated = make_t38_answer(offered, "2001:db8::5", 41000, T38Params(max_datagram=300), session_id=5)
    assert [(m.media, m.port) for m in answer.media] == [("audio", 0), ("image", 41000)]
    assert answer.connection == Connection("2001:db8::5", "IP6")
    assert negotiated.version == 0 and negotiated.rate_management == "localTCF" and negotiated.max_datagram == 300
    assert T38Params.from_attributes(parse_sdp(answer.to_bytes()).media[1].attributes) == negotiated
    # A T.38 stream offered with port 0 is not usable.
    rejected = parse_sdp(T38_BODY.replace(b"m=image 5004", b"m=image 0"))
    assert find_t38_stream(rejected) is None and find_t38_stream(rejected, include_rejected=True).rejected
    with pytest.raises(RemoteProtocolError):
        make_t38_answer(rejected, "192.0.2.1", 1, T38Params(), session_id=1)


def test_audio_offer_answer():
    offer = make_audio_offer("192.0.2.1", 30000, session_id=1, codecs=("PCMA", "PCMU"), telephone_event=96)
    parsed = parse_sdp(offer.to_bytes())
    assert find_audio_stream(parsed).rtpmap() == {"8": ("PCMA", 8000), "0": ("PCMU", 8000), "96": ("telephone-event", 8000)}
    answer, codec = make_audio_answer(parsed, "192.0.2.2", 30002, session_id=2, codecs=("PCMU", "PCMA"))
    assert codec == "PCMA"  # the offerer's first choice that we support
    assert answer.media[0].formats == ["8", "96"]
    held = parse_sdp(offer.to_bytes().replace(b"a=sendrecv", b"a=sendonly"))
    assert make_audio_answer(held, "192.0.2.2", 1, session_id=2)[0].media[0].direction == "recvonly"
    with pytest.raises(RemoteProtocolError):
        make_audio_answer(parse_sdp(T38_BODY), "192.0.2.2", 1, session_id=2)


# ---------------------------------------------------------------------------------------
# Properties

_field = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12)
_word = st.text(string.ascii_letters + string.digits + "-./+_", min_size=1, max_size=10)
_attributes = st.lists(st.tuples(_word, st.none() | _field), max_size=4)


def _lines(kinds: str):
    return st.lists(st.tuples(st.sampled_from(kinds), _field), max_size=2)


_media = st.builds(
    MediaDescription,
    media=_word,
    port=st.integers(0, 65535),
    proto=_word,
    formats=st.lists(_word, max_size=4),
    port_count=st.none() | st.integers(1, 99),
    connection=st.none() | st.builds(Connection, _word, _word, _word),
    attributes=_attributes,
    other_lines=st.tuples(_lines("i"), _lines("bk")).map(lambda t: t[0] + t[1]),
)

sessions = st.builds(
    SessionDescription,
    origin=st.builds(Origin, _word, _word, _word, _word, _word, _word),
    session_name=_field,
    connection=st.none() | st.builds(Connection, _word, _word, _word),
    times=st.lists(st.tuples(st.sampled_from("tr"), _field), min_size=1, max_size=3),
    attributes=_attributes,
    media=st.lists(_media, max_size=3),
    other_lines=st.tuples(_lines("iuep"), _lines("b"), _lines("zk")).map(lambda t: t[0] + t[1] + t[2]),
)

t38_params = st.builds(
    T38Params,
    version=st.integers(0, 3),
    max_bitrate=st.sampled_from([2400, 4800, 7200, 9600, 12000, 14400, 33600]),
    fill_bit_removal=st.booleans(),
    transcoding_mmr=st.booleans(),
    transcoding_jbig=st.booleans(),
    rate_management=st.sampled_from(["transferredTCF", "localTCF"]),
    max_buffer=st.none() | st.integers(0, 65535),
    max_datagram=st.none() | st.integers(0, 65535),
    udp_ec=st.sampled_from([UDP_EC_FEC, UDP_EC_REDUNDANCY, UDP_EC_NONE]),
)


@settings(deadline=None, max_examples=200)
@given(sessions)
def test_sdp_round_trip(sdp):
    assert parse_sdp(sdp.to_bytes()) == sdp


@settings(deadline=None, max_examples=200)
@given(t38_params)
def test_t38_params_round_trip(params):
    offer = make_t38_offer("192.0.2.1", 4000, params, session_id=1)
    assert T38Params.from_attributes(find_t38_stream(parse_sdp(offer.to_bytes())).attributes) == params


@settings(deadline=None, max_examples=200)
@given(t38_params, t38_params)
def test_answer_never_exceeds_either_side(offered, local):
    answer = answer_t38(offered, local)
    assert answer.version <= min(offered.version, local.version)
    assert answer.max_bitrate <= min(offered.max_bitrate, local.max_bitrate)
    for flag in ("fill_bit_removal", "transcoding_mmr", "transcoding_jbig"):
        assert getattr(answer, flag) <= getattr(offered, flag)
    assert answer.rate_management == offered.rate_management
    assert answer.max_datagram == local.max_datagram
    strength = {UDP_EC_NONE: 0, UDP_EC_REDUNDANCY: 1, UDP_EC_FEC: 2}
    assert strength[answer.udp_ec] <= min(strength[offered.udp_ec], strength[local.udp_ec])


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300))
def test_fuzzed_sdp_raises_only_sip_parse_error(data):
    try:
        sdp = parse_sdp(data)
    except SipParseError:
        return
    for media in sdp.media:
        try:
            T38Params.from_attributes(media.attributes)
        except SipParseError:
            pass
        media.rtpmap()


def test_huge_numbers_are_parse_errors():
    # Python refuses int() of more than 4300 digits; that must not escape as ValueError.
    digits = b"1" * 5000
    for body in (
        b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio " + digits + b" RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 1/" + digits + b" RTP/AVP 0\r\n",
    ):
        with pytest.raises(SipParseError):
            parse_sdp(body)
    with pytest.raises(SipParseError):
        T38Params.from_attributes([("T38FaxMaxDatagram", digits.decode())])


def test_small_helpers():
    offer = make_audio_offer("192.0.2.1", 4000, session_id=1)
    assert with_version(offer, 9).origin.session_version == "9" and offer.origin.session_version == "0"
    assert find_audio_stream(offer).has_attribute("SENDRECV")
    with pytest.raises(LocalProtocolError):
        make_audio_offer("192.0.2.1", 4000, session_id=1, codecs=("G729",))
    offer.session_name = "bad\r\nline"
    with pytest.raises(LocalProtocolError):
        offer.to_bytes()
    with pytest.raises(SipParseError):
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n")  # t= inside media
    held = parse_sdp(T38_BODY.replace(b"a=sendrecv", b"a=inactive"))
    answer, _ = make_t38_answer(held, "192.0.2.2", 5, T38Params(), session_id=1)
    assert answer.media[1].direction == "inactive"
