"""Digest authentication: the published examples of RFC 7616 3.9.1 and RFC 2617 3.5,
a client/server exchange, stale nonces, replays and malformed input."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.auth import (
    AuthOutcome,
    DigestClient,
    DigestServer,
    digest_response,
    parse_challenge,
    parse_credentials,
)
from sip.errors import SipParseError
from sip.message import Request, make_response
from sip.parser import parse_message

# RFC 7616 3.9.1: the challenge (as the RFC prints it, folded here onto one line).
RFC7616_CHALLENGES = {
    "SHA-256": (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    ),
    "MD5": (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    ),
}
# RFC 7616 3.9.1: the responses it publishes for Mufasa / "Circle of Life".
RFC7616_RESPONSES = {
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
}
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_rfc7616_example(algorithm):
    challenge = parse_challenge(RFC7616_CHALLENGES[algorithm])
    assert challenge.realm == "http-auth@example.org"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == algorithm
    assert challenge.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    client = DigestClient("Mufasa", "Circle of Life", rng=random.Random(0))
    value = client.authorize(challenge, "GET", "/dir/index.html", cnonce=RFC7616_CNONCE)
    credentials = parse_credentials(value)
    assert credentials.scheme == "Digest"
    assert credentials.get("response") == RFC7616_RESPONSES[algorithm]
    assert credentials.get("nc") == "00000001" and credentials.get("qop") == "auth"
    assert credentials.get("cnonce") == RFC7616_CNONCE
    assert credentials.get("opaque") == challenge.opaque
    assert credentials.get("algorithm") == algorithm
    assert credentials.get("uri") == "/dir/index.html" and credentials.get("username") == "Mufasa"


def test_rfc2617_example():
    # RFC 2617 3.5: MD5 without an algorithm parameter, qop="auth,auth-int".
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.algorithm == "MD5" and challenge.qop == ("auth", "auth-int")
    value = DigestClient("Mufasa", "Circle Of Life", rng=random.Random(0)).authorize(
        challenge, "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    assert parse_credentials(value).get("response") == "6629fae49393a05397450978507c4ef1"


def test_nonce_counts_grow_per_nonce():
    client = DigestClient("alice", "pw", rng=random.Random(1))
    first = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    second = parse_challenge('Digest realm="r", nonce="n2", qop="auth"')
    counts = [parse_credentials(client.authorize(c, "REGISTER", "sip:r")).get("nc") for c in (first, first, second, first)]
    assert counts == ["00000001", "00000002", "00000001", "00000003"]
    cnonces = {parse_credentials(client.authorize(first, "REGISTER", "sip:r")).get("cnonce") for _ in range(5)}
    assert len(cnonces) == 5


def test_rfc2069_mode_and_auth_int_and_sess():
    client = DigestClient("bob", "secret", rng=random.Random(2))
    plain = parse_credentials(client.authorize(parse_challenge('Digest realm="r", nonce="n"'), "INVITE", "sip:x"))
    assert plain.get("qop") is None and plain.get("nc") is None and plain.get("cnonce") is None
    assert plain.get("response") == digest_response(
        algorithm="MD5", username="bob", realm="r", password="secret", nonce="n", method="INVITE", uri="sip:x", qop=None
    )
    body = b"v=0\r\n"
    only_int = parse_challenge('Digest realm="r", nonce="n", qop="auth-int", algorithm=SHA-256-sess')
    credentials = parse_credentials(client.authorize(only_int, "INVITE", "sip:x", body))
    assert credentials.get("qop") == "auth-int"
    assert credentials.get("response") == digest_response(
        algorithm="SHA-256-sess", username="bob", realm="r", password="secret", nonce="n", method="INVITE",
        uri="sip:x", qop="auth-int", nc=credentials.get("nc"), cnonce=credentials.get("cnonce"), body=body,
    )
    assert credentials.get("response") != digest_response(
        algorithm="SHA-256-sess", username="bob", realm="r", password="secret", nonce="n", method="INVITE",
        uri="sip:x", qop="auth-int", nc=credentials.get("nc"), cnonce=credentials.get("cnonce"), body=b"",
    )


def test_server_client_exchange_over_sip_messages():
    server = DigestServer("t38gw.example", {"trunk": "s3cret"}, rng=random.Random(7))
    client = DigestClient("trunk", "s3cret", rng=random.Random(8))
    invite = Request(
        "INVITE",
        "sip:+15550100@gw.example",
        [("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"), ("From", "<sip:a@b>;tag=1"),
         ("To", "<sip:+15550100@gw.example>"), ("Call-ID", "c1"), ("CSeq", "1 INVITE")],
    )
    now = 1000.0
    assert server.verify(invite.headers.get("Authorization"), "INVITE", now).outcome is AuthOutcome.REJECTED
    challenge_response = make_response(invite, 401, to_tag="x")
    for value in server.challenges(now):
        challenge_response.headers.add("WWW-Authenticate", value)
    wire_response = parse_message(challenge_response.to_bytes())
    challenges = [parse_challenge(v) for v in wire_response.headers.get_all("WWW-Authenticate")]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]  # RFC 8760 2.4: preferred first
    assert client.should_retry(challenges[0], already_answered=False)
    invite.headers.set("CSeq", "2 INVITE")
    invite.headers.set("Authorization", client.authorize(challenges[0], "INVITE", str(invite.uri)))
    received = parse_message(invite.to_bytes())
    verdict = server.verify(received.headers.get("Authorization"), "INVITE", now + 1, request_uri=str(received.uri))
    assert verdict.accepted and verdict.username == "trunk"
    # The same credentials again: a replayed nonce count.
    assert server.verify(received.headers.get("Authorization"), "INVITE", now + 2).outcome is AuthOutcome.REJECTED
    # The next request on the same nonce counts up and is accepted; MD5 works too.
    again = client.authorize(challenges[0], "INVITE", str(invite.uri))
    assert server.verify(again, "INVITE", now + 3).accepted
    assert server.verify(client.authorize(challenges[1], "BYE", "sip:x"), "BYE", now + 3).accepted
    # Wrong method, wrong URI, wrong password, foreign nonce, unknown user.
    assert not server.verify(client.authorize(challenges[0], "INVITE", "sip:x"), "BYE", now + 4).accepted
    assert not server.verify(client.authorize(challenges[0], "INVITE", "sip:x"), "INVITE", now + 4, request_uri="sip:y").accepted
    wrong = DigestClient("trunk", "guess", rng=random.Random(9))
    assert server.verify(wrong.authorize(challenges[0], "INVITE", "sip:x"), "INVITE", now + 4).outcome is AuthOutcome.REJECTED
    forged = parse_challenge('Digest realm="t38gw.example", nonce="bm90LW91cnM", qop="auth", algorithm=SHA-256')
    assert server.verify(client.authorize(forged, "INVITE", "sip:x"), "INVITE", now + 4).reason == "not our nonce"
    stranger = DigestClient("mallory", "s3cret", rng=random.Random(3))
    assert not server.verify(stranger.authorize(challenges[0], "INVITE", "sip:x"), "INVITE", now + 4).accepted


def test_stale_nonce_is_retried_once():
    server = DigestServer("r", {"u": "p"}, rng=random.Random(4), nonce_lifetime=30)
    client = DigestClient("u", "p", rng=random.Random(5))
    challenge = parse_challenge(server.challenges(0.0)[0])
    late = server.verify(client.authorize(challenge, "REGISTER", "sip:r"), "REGISTER", 31.0)
    assert late.outcome is AuthOutcome.STALE
    fresh = parse_challenge(server.challenges(31.0, stale=True)[0])
    assert fresh.stale and client.should_retry(fresh, already_answered=True)
    assert server.verify(client.authorize(fresh, "REGISTER", "sip:r"), "REGISTER", 32.0).accepted
    # A second challenge without stale=true after credentials: they were refused.
    assert not client.should_retry(parse_challenge(server.challenges(33.0)[0]), already_answered=True)
    # A wrong password on an expired nonce is a rejection, not "stale".
    wrong = DigestClient("u", "x", rng=random.Random(6))
    assert server.verify(wrong.authorize(challenge, "REGISTER", "sip:r"), "REGISTER", 99.0).outcome is AuthOutcome.REJECTED


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="r"',
        'Digest realm="r"',  # no nonce
        'Digest nonce="n"',  # no realm
        'Digest realm="r", nonce="n", algorithm=ROT13',
        'Digest realm="unterminated, nonce="n"',
        "Digest realm=, nonce=n",
        "",
    ],
)
def test_bad_challenges(value):
    with pytest.raises(SipParseError):
        parse_challenge(value)


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=120))
def test_fuzzed_auth_values_raise_only_sip_parse_error(value):
    try:
        parse_challenge(value)
    except SipParseError:
        pass
    try:
        parse_credentials(value)
    except SipParseError:
        pass
    server = DigestServer("r", {"u": "p"}, rng=random.Random(0))
    assert not server.verify(value, "INVITE", 0.0).accepted


@settings(deadline=None, max_examples=60)
@given(
    st.text(min_size=1, max_size=12),
    st.text(max_size=12),
    st.sampled_from(["MD5", "SHA-256", "SHA-512-256", "MD5-sess", "SHA-256-sess"]),
    st.integers(0, 2**32),
)
def test_any_account_authenticates(username, password, algorithm, seed):
    rng = random.Random(seed)
    server = DigestServer("realm", {username: password}, rng=rng, algorithms=[algorithm])
    client = DigestClient(username, password, rng=rng)
    challenge = parse_challenge(server.challenges(5.0)[0])
    assert server.verify(client.authorize(challenge, "INVITE", "sip:a@b"), "INVITE", 6.0).accepted


def test_userhash():
    # RFC 7616 3.4.4: with userhash=true the username is H(username:realm).

    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256, userhash=true')
    assert challenge.userhash
    credentials = parse_credentials(DigestClient("J\u00e4s\u00f8n Doe", "pw", rng=random.Random(0)).authorize(challenge, "INVITE", "sip:x"))
    assert credentials.get("userhash") == "true"
    assert credentials.get("username") == hashlib.sha256("J\u00e4s\u00f8n Doe:r".encode()).hexdigest()


def test_server_rejects_incomplete_or_foreign_credentials():
    server = DigestServer("r", {"u": "p"}, rng=random.Random(11), algorithms=("SHA-256",), max_tracked_nonces=2)
    client = DigestClient("u", "p", rng=random.Random(12))
    challenge = parse_challenge(server.challenges(0.0)[0])
    good = parse_credentials(client.authorize(challenge, "INVITE", "sip:x")).params

    def value(**changes):
        params = {**good, **changes}
        return "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items() if v is not None)

    reasons = {
        "incomplete credentials": value(response=None),
        "wrong realm": value(realm="other"),
        "algorithm MD5 not offered": value(algorithm="MD5"),
        "qop=auth required": value(qop=None),
        "bad nc": value(nc="zz"),
        "not our nonce": value(nonce="!!!"),
    }
    for reason, credentials in reasons.items():
        verdict = server.verify(credentials, "INVITE", 1.0)
        assert verdict.outcome is AuthOutcome.REJECTED and verdict.reason == reason
    assert server.verify('Basic dTpw', "INVITE", 1.0).reason == "scheme Basic"
    # Replay tracking is bounded: the oldest nonce is forgotten first.
    for t in range(5):
        fresh = parse_challenge(server.challenges(float(t))[0])
        assert server.verify(client.authorize(fresh, "INVITE", "sip:x"), "INVITE", float(t)).accepted
    assert len(server._last_nc) == 2


def test_client_limits():
    client = DigestClient("u", "p", rng=random.Random(13))
    for i in range(100):
        client.authorize(parse_challenge(f'Digest realm="r", nonce="n{i}", qop="auth"'), "INVITE", "sip:x")
    assert len(client._nonce_counts) <= 64
    with pytest.raises(SipParseError):
        client.authorize(parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"'), "INVITE", "sip:x")
    assert not client.should_retry(parse_challenge('Digest realm="r", nonce="n"').__class__(
        scheme="Basic", realm="r", nonce="n"), already_answered=False)
