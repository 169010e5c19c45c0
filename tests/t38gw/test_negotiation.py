"""Offer/answer for a fax call: the SDP we send and the media settings it leads to."""

from __future__ import annotations

import pytest

from sip.errors import RemoteProtocolError
from sip.sdp import UDP_EC_FEC, UDP_EC_NONE, UDP_EC_REDUNDANCY, T38Params, find_audio_stream, find_t38_stream, parse_sdp
from t38gw.negotiation import (
    LocalMedia,
    answer_audio,
    answer_t38,
    local_t38_params,
    offer_t38,
    t38_answered,
    t38_session,
)

LOCAL = LocalMedia("192.0.2.10", 40000, 77, local_t38_params(versions=[0, 1, 2, 3], max_bitrate=14400,
                                                              max_datagram=400, error_correction="redundancy"))


def t38_offer(*attributes: str, host: str = "198.51.100.7", port: int = 40002) -> bytes:
    lines = ["v=0", f"o=peer 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0", f"m=image {port} udptl t38",
             *(f"a={a}" for a in attributes)]
    return ("\r\n".join(lines) + "\r\n").encode()


AUDIO_AND_VIDEO = (b"v=0\r\no=peer 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
                   b"m=video 5000 RTP/AVP 96\r\nm=audio 49170 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n"
                   b"a=rtpmap:0 PCMU/8000\r\n")


def test_t38_answer_echoes_as_annex_d_requires():
    offer = parse_sdp(t38_offer("T38FaxVersion:3", "T38MaxBitRate:9600", "T38FaxRateManagement:transferredTCF",
                                "T38FaxMaxDatagram:160", "T38FaxUdpEC:t38UDPFEC"))
    answer = answer_t38(offer, LOCAL, session_version=1)
    sdp = parse_sdp(answer.sdp)
    params = T38Params.from_attributes(find_t38_stream(sdp).attributes)
    # T.38 D.2.3: the lower version and bit rate; FEC offered but we configured
    # redundancy, so the best lesser one; our own T38FaxMaxDatagram (declarative).
    assert (params.version, params.max_bitrate, params.udp_ec, params.max_datagram) == (3, 9600, UDP_EC_REDUNDANCY, 400)
    assert find_t38_stream(sdp).port == 40000 and sdp.connection.address == "192.0.2.10"
    assert sdp.origin.session_id == "77" and sdp.origin.session_version == "1"
    assert (answer.remote_host, answer.remote_port, answer.peer_max_datagram) == ("198.51.100.7", 40002, 160)


def test_no_t38_in_the_offer_is_488():
    with pytest.raises(RemoteProtocolError) as raised:
        answer_t38(parse_sdp(AUDIO_AND_VIDEO), LOCAL, 1)
    assert raised.value.status_hint == 488


def test_audio_answer_keeps_the_offered_payload_type_and_rejects_other_streams():
    sdp = parse_sdp(answer_audio(parse_sdp(AUDIO_AND_VIDEO), LOCAL, 1))
    assert [m.port for m in sdp.media] == [0, 40000]  # RFC 3264 6: video rejected, audio on our port
    assert find_audio_stream(sdp).formats == ["8"]


def test_audio_answer_without_g711_is_488():
    with pytest.raises(RemoteProtocolError) as raised:
        answer_audio(parse_sdp(AUDIO_AND_VIDEO.replace(b"PCMA", b"G729").replace(b"PCMU", b"G722")), LOCAL, 1)
    assert raised.value.status_hint == 488


def test_our_offer_carries_our_parameters():
    sdp = parse_sdp(offer_t38(LOCAL, 4))
    params = T38Params.from_attributes(find_t38_stream(sdp).attributes)
    assert params == LOCAL.t38 and sdp.origin.session_version == "4"


@pytest.mark.parametrize("declared,used", [(None, 400), (0, 400), (8, 32), (72, 72), (1400, 1400)])
def test_peer_max_datagram_default_and_floor(declared, used):
    attributes = ["T38FaxVersion:0"] + ([f"T38FaxMaxDatagram:{declared}"] if declared is not None else [])
    answer = answer_t38(parse_sdp(t38_offer(*attributes)), LOCAL, 1)
    session = t38_session(answer, sip_source_host="198.51.100.7", media_latching="learn")
    assert session.peer_max_datagram == used
    assert session.media_latching == "learn" and session.remote == ("198.51.100.7", 40002)


def test_media_from_the_sip_source_when_the_sdp_names_a_private_address():
    answer = answer_t38(parse_sdp(t38_offer("T38FaxVersion:0", host="192.168.1.20")), LOCAL, 1)
    session = t38_session(answer, sip_source_host="93.184.216.34", media_latching="strict")
    assert session.remote == ("192.168.1.20", 40002) and session.expected_host == "93.184.216.34"


def test_the_peers_answer_to_our_offer():
    answered = t38_answered(parse_sdp(t38_offer("T38FaxVersion:1", "T38FaxUdpEC:t38UDPNoEC", "T38FaxMaxDatagram:300")))
    session = t38_session(answered, sip_source_host="198.51.100.7", media_latching="strict")
    assert (session.version, session.error_correction, session.peer_max_datagram) == (1, "none", 300)
    assert t38_answered(parse_sdp(AUDIO_AND_VIDEO)) is None


def test_error_correction_names():
    for name, sdp_name in (("fec", UDP_EC_FEC), ("redundancy", UDP_EC_REDUNDANCY), ("none", UDP_EC_NONE)):
        params = local_t38_params(versions=[0], max_bitrate=9600, max_datagram=400, error_correction=name)
        assert params.udp_ec == sdp_name and params.version == 0 and params.max_bitrate == 9600


# ----------------------------------------------------------------- the audio fax leg

def _sdp(text: str):
    from sip.sdp import parse_sdp

    return parse_sdp(text.replace("\n", "\r\n").encode())


def test_audio_session_takes_the_answers_first_g711_and_the_offers_address():
    offer = _sdp("v=0\no=peer 1 1 IN IP4 203.0.113.5\ns=-\nc=IN IP4 203.0.113.5\nt=0 0\n"
                 "m=audio 30000 RTP/AVP 18 8 0 101\na=rtpmap:101 telephone-event/8000\n")
    answer = _sdp("v=0\no=gw 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                  "m=audio 40000 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\n")
    from t38gw.negotiation import audio_session

    audio = audio_session(offer, answer, sip_source_host="203.0.113.5", media_latching="learn")
    assert audio is not None
    assert (audio.remote, audio.payload_type, audio.law, audio.media) == (("203.0.113.5", 30000), 8, "alaw", "g711a")
    assert (audio.telephone_event, audio.media_latching, audio.expected_host) == (101, "learn", "203.0.113.5")


def test_audio_session_behind_nat_expects_rtp_from_the_sip_source():
    from t38gw.negotiation import audio_session

    offer = _sdp("v=0\no=peer 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\nm=audio 30000 RTP/AVP 0\n")
    # A public SIP source (documentation ranges are not "global" to ipaddress).
    audio = audio_session(offer, offer, sip_source_host="93.184.216.34", media_latching="strict")
    assert audio is not None and audio.remote == ("10.0.0.5", 30000) and audio.expected_host == "93.184.216.34"
    assert audio.payload_type == 0 and audio.telephone_event is None


def test_audio_session_without_g711_is_none():
    from t38gw.negotiation import audio_session

    offer = _sdp("v=0\no=peer 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\n"
                 "m=audio 30000 RTP/AVP 18 96\na=rtpmap:96 opus/48000/2\n")
    assert audio_session(offer, offer, sip_source_host="10.0.0.5", media_latching="strict") is None
    # A dynamic payload type that claims to be PCMU is not G.711's static 0 (RFC 3551).
    odd = _sdp("v=0\no=peer 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\n"
               "m=audio 30000 RTP/AVP 97\na=rtpmap:97 PCMU/8000\n")
    assert audio_session(odd, odd, sip_source_host="10.0.0.5", media_latching="strict") is None
