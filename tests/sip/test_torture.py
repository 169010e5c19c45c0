"""RFC 4475 torture messages: each one whole, byte by byte, truncated and with trailing
garbage, with the values the RFC's prose names for each case."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip.auth import parse_credentials
from sip.errors import SipParseError
from sip.message import AbsoluteUri, Request, Response, SipUri, make_response
from sip.parser import StreamParser, parse_message
from sip.sdp import parse_sdp

# RFC 4475 section 3.1.1 (valid), 3.2, 3.3 (valid syntax, handled above the parser), 3.4.
VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason", "badbranch", "unkscm", "novelsc", "unksm2",
    "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01",
    "inv2543", "regbadct",
    # 3.1.2 cases the RFC lets a liberal parser accept; we do (see test_tolerated_*).
    "lwsstart", "trws", "badaspec", "baddate",
]
# RFC 4475 3.1.2 invalid messages we refuse at parse time, and 3.3 cases whose required
# answer is a 400 that the parser gives (insuf, multi01, mcl01).
INVALID = {
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": 400, "quotbal": 400,
    "ltgtruri": 400, "lwsruri": 400, "escruri": 400, "baddn": 400, "badvers": 505,
    "mismatch01": 400, "mismatch02": 400, "bigcode": 400, "insuf": 400, "multi01": 400,
    "mcl01": 400, "test": 400,
}


@pytest.fixture(scope="module")
def torture(testdata: Path) -> dict[str, bytes]:
    folder = testdata / "sip-torture" / "rfc4475"
    files = {p.stem: p.read_bytes() for p in folder.glob("*.dat")}
    assert len(files) == 50, f"expected the 50 RFC 4475 files in {folder}"
    return files


def test_every_file_has_a_verdict(torture):
    assert set(VALID) | set(INVALID) == set(torture)
    assert not set(VALID) & set(INVALID)


@pytest.mark.parametrize("name", VALID)
def test_valid_whole(torture, name):
    message = parse_message(torture[name])
    assert isinstance(message, (Request, Response))
    # A parsed message serialises and parses back to the same thing.
    again = parse_message(message.to_bytes())
    assert again == message


@pytest.mark.parametrize("name", INVALID)
def test_invalid_whole(torture, name):
    with pytest.raises(SipParseError) as info:
        parse_message(torture[name])
    assert info.value.status_hint == INVALID[name]


def _framed(data: bytes) -> bytes:
    """The message as a stream sender would frame it: with Content-Length, one copy."""
    return parse_message(data).to_bytes()


@pytest.mark.parametrize("name", VALID)
def test_valid_stream_byte_by_byte(torture, name):
    wire = _framed(torture[name])
    expected = parse_message(wire)
    parser = StreamParser()
    got = []
    for i in range(len(wire)):
        got += parser.feed(wire[i : i + 1])
    assert got == [expected]
    assert parser.buffered == 0


@pytest.mark.parametrize("name", VALID)
def test_valid_with_trailing_garbage(torture, name):
    wire = _framed(torture[name])
    expected = parse_message(wire)
    # Datagram: RFC 3261 18.3 discards bytes past Content-Length.
    assert parse_message(wire + b"\x00garbage\r\n\r\n") == expected
    # Stream: the message comes out, the garbage waits, then fails as the next message.
    parser = StreamParser()
    assert parser.feed(wire + b"garbage") == [expected]
    assert parser.buffered == len(b"garbage")
    with pytest.raises(SipParseError):
        parser.feed(b"\r\n\r\n")
    with pytest.raises(SipParseError):  # the stream stays failed
        parser.feed(b"")


@pytest.mark.parametrize("name", VALID)
def test_valid_truncated(torture, name):
    wire = _framed(torture[name])
    body_length = len(parse_message(wire).body)
    head_end = wire.index(b"\r\n\r\n") + 4
    for cut in range(len(wire)):
        prefix = wire[:cut]
        if cut < head_end:
            with pytest.raises(SipParseError):
                parse_message(prefix)
        elif cut < head_end + body_length:
            with pytest.raises(SipParseError) as info:
                parse_message(prefix)
            assert "Content-Length" in str(info.value)
        assert StreamParser().feed(prefix) == []


@pytest.mark.parametrize("name", INVALID)
def test_invalid_never_escapes_stream(torture, name):
    data = torture[name]
    for chunk in (len(data), 1, 7):
        parser = StreamParser()
        try:
            for i in range(0, len(data), chunk):
                parser.feed(data[i : i + chunk])
            parser.feed(b"\r\n\r\n")  # terminate a final header section (baddn has none)
        except SipParseError:
            continue
        # clerr announces 9999 bytes: a stream parser can only wait for them.
        assert name == "clerr" and parser.buffered > 0


# ---------------------------------------------------------------------------------------
# Values named by RFC 4475's prose


def test_wsinv(torture):
    # 3.1.1.1: LWS everywhere, folding, compact forms, mixed case, empty Subject.
    m = parse_message(torture["wsinv"])
    assert m.method == "INVITE"
    assert m.uri == SipUri("sip", "vivekg", None, "chair-dnrc.example.com", None, {"unknownparam": None})
    assert str(m.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert m.to.tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert str(m.from_.uri) == "sip:jdrosen@example.com"
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.cseq == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    [contact] = m.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == 0.33
    [route] = m.routes
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150
    assert [md.media for md in parse_sdp(m.body).media] == ["audio", "video"]


def test_intmeth(torture):
    # 3.1.1.2: a method of token characters, a Request-URI with unusual user and password.
    m = parse_message(torture["intmeth"])
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq == (139122385, m.method)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.params["fromparam''~+*_!.-%"] == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01(torture):
    # 3.1.1.3: escaped characters in URIs are unescaped when parsed.
    m = parse_message(torture["esc01"])
    assert m.uri.user == "sips:user@example.com"
    assert m.uri.host == "example.net"
    assert m.to.uri.user == "user"
    assert m.from_.uri.user == "I have spaces"
    [contact] = m.contacts
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"lr": None, "name": "value%41"}
    # Escaping survives the round trip.
    assert str(m.uri) == "sip:sips%3Auser%40example.com@example.net"


def test_escnull(torture):
    # 3.1.1.4: %00 in a user part is a NUL character, not a terminator.
    m = parse_message(torture["escnull"])
    assert m.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in m.contacts] == ["\x00", "\x00\x00"]


def test_esc02(torture):
    # 3.1.1.5: escapes in a method and header name are not unescaped.
    m = parse_message(torture["esc02"])
    assert m.method == "RE%47IST%45R"
    assert m.to.display == "%Z%45"
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    assert [c.uri.user for c in m.contacts] == ["alias1", "alias3"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp(torture):
    # 3.1.1.6: no LWS between display name and <.
    assert parse_message(torture["lwsdisp"]).from_.display == "caller"


def test_longreq(torture):
    # 3.1.1.7: long values, 34 Via values, a very long tag and branch.
    m = parse_message(torture["longreq"])
    assert m.to.display.startswith("I have a user name of extremeextreme")
    assert m.to.uri.port == 6000
    assert "longparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename" in m.to.uri.params
    assert len(m.from_.tag) == 155
    assert len(m.call_id) == 141
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:3]] == ["sip33.example.com", "sip32.example.com", "sip31.example.com"]
    assert m.vias[-1].received == "192.0.2.5"
    assert m.vias[-1].branch.startswith("verylonglong") and m.vias[-1].branch.endswith("branchvalue")
    assert len(m.body) == 150


def test_dblreq(torture):
    # 3.1.1.8: a datagram holding a REGISTER and an INVITE is one REGISTER.
    m = parse_message(torture["dblreq"])
    assert m.method == "REGISTER" and m.body == b""


def test_semiuri(torture):
    # 3.1.1.9: ';' in a user part is not a parameter separator.
    m = parse_message(torture["semiuri"])
    assert m.uri.user == "user;par=u@example.net"
    assert m.uri.host == "example.com"
    assert m.uri.params == {}
    assert m.headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag",
    ]


def test_transports(torture):
    # 3.1.1.10
    m = parse_message(torture["transports"])
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01(torture):
    # 3.1.1.11: a binary body with NULs, bare CR and LF, framed by Content-Length only.
    m = parse_message(torture["mpart01"])
    assert len(m.body) == 553
    assert b"\x00" in m.body
    assert m.content_type == "multipart/mixed"


def test_unreason_noreason(torture):
    # 3.1.1.12 / 3.1.1.13: UTF-8 reason phrase; empty reason phrase.
    m = parse_message(torture["unreason"])
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435"
    n = parse_message(torture["noreason"])
    assert (n.status, n.reason) == (100, "")


def test_tolerated_lwsstart_trws(torture):
    # 3.1.2.7 / 3.1.2.9: extra SP in or after the request line; a liberal parser may accept.
    assert parse_message(torture["lwsstart"]).uri == SipUri(host="example.com", user="user")
    assert parse_message(torture["trws"]).uri.user == "remote-target"


def test_tolerated_badaspec(torture):
    # 3.1.2.15: LWS inside <> in To; the RFC allows a liberal parser to accept it.
    assert str(parse_message(torture["badaspec"]).to.uri) == "sip:t.watson@example.org"


def test_tolerated_baddate(torture):
    # 3.1.2.13: a non-GMT Date is an application matter; the parser keeps the text.
    assert parse_message(torture["baddate"]).headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_baddn_rejected_for_the_display_name(torture):
    # 3.1.2.18: unquoted display names with commas. (The file also lacks its blank line.)
    with pytest.raises(SipParseError, match="display name"):
        parse_message(torture["baddn"] + b"\r\n")


def test_regbadct_contact_is_refused(torture):
    # 3.1.2.16: a Contact URI with '?' outside <>: the registrar must answer 400.
    m = parse_message(torture["regbadct"])
    with pytest.raises(SipParseError):
        m.contacts  # noqa: B018 (the property raises)


def test_badbranch(torture):
    # 3.2.1: the bare magic cookie is a valid branch; the transaction layer decides.
    assert parse_message(torture["badbranch"]).via.branch == "z9hG4bK"


def test_insuf_can_still_be_answered(torture):
    # 3.3.1: no Call-ID, From or To; the answer is 400, built from what is there.
    with pytest.raises(SipParseError) as info:
        parse_message(torture["insuf"])
    partial = info.value.partial
    assert isinstance(partial, Request) and partial.cseq == (193942, "INVITE")
    response = make_response(partial, info.value.status_hint)
    assert response.status == 400
    assert response.vias[0].branch == "z9hG4bKkdj.insuf"


def test_unknown_schemes(torture):
    # 3.3.2 unkscm, 3.3.3 novelsc, 3.3.4 unksm2: other schemes parse, kept opaque (416 is
    # the application's answer).
    assert parse_message(torture["unkscm"]).uri == AbsoluteUri("nobodyKnowsThisScheme", "totallyopaquecontent")
    assert parse_message(torture["novelsc"]).uri == AbsoluteUri("soap.beep", "//192.0.2.103:3002")
    m = parse_message(torture["unksm2"])
    assert m.to.uri == AbsoluteUri("isbn", "2983792873")
    assert m.from_.uri == AbsoluteUri("http", "//www.example.com")
    assert [c.uri for c in m.contacts] == [AbsoluteUri("name", "John_Smith")]


def test_bext01_invut_regaut01(torture):
    # 3.3.5 / 3.3.6 / 3.3.7
    m = parse_message(torture["bext01"])
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.headers.get_all("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert parse_message(torture["invut"]).content_type == "application/unknownformat"
    credentials = parse_credentials(parse_message(torture["regaut01"]).headers.get("Authorization"))
    assert credentials.scheme == "NoOneKnowsThisScheme"
    assert credentials.get("opaque-data") == "here"


def test_bcast_zeromf(torture):
    # 3.3.10 / 3.3.11
    assert parse_message(torture["bcast"]).vias[1].host == "255.255.255.255"
    assert parse_message(torture["zeromf"]).max_forwards == 0


def test_cparam01_cparam02(torture):
    # 3.3.12 / 3.3.13: without <> the parameter belongs to the header, with <> to the URI.
    [c1] = parse_message(torture["cparam01"]).contacts
    assert c1.uri.params == {} and c1.params == {"unknownparam": None}
    [c2] = parse_message(torture["cparam02"]).contacts
    assert c2.uri.params == {"unknownparam": None} and c2.params == {}


def test_regescrt(torture):
    # 3.3.14: an escaped header in a Contact URI.
    [contact] = parse_message(torture["regescrt"]).contacts
    assert contact.uri.headers == {"Route": "<sip:sip.example.com>"}


def test_sdp01(torture):
    # 3.3.15: Accept excludes SDP (an application matter); the SDP itself is fine.
    m = parse_message(torture["sdp01"])
    assert m.headers.get("Accept") == "text/nobodyKnowsThis"
    sdp = parse_sdp(m.body)
    assert [(md.media, md.port, md.formats) for md in sdp.media] == [
        ("audio", 49217, ["0", "12"]),
        ("video", 3227, ["31"]),
    ]


def test_inv2543(torture):
    # 3.4.1: RFC 2543 style: no branch, no Max-Forwards, no Content-Length (body = rest).
    m = parse_message(torture["inv2543"])
    assert m.via.branch is None
    assert m.max_forwards is None
    assert m.body.startswith(b"v=0") and m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert m.from_.uri.params == {"user": "phone"}
