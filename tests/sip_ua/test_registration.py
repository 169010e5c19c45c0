"""What a registrar's responses mean to a ``Registration`` (RFC 3261 10.2), on real
REGISTER requests and the responses a registrar builds for them; the UA's handling of the
same steps over a simulated network is in ``test_ua.py``."""

from __future__ import annotations

import random

import pytest

from sip.auth import AuthOutcome, DigestServer
from sip.message import Response, make_response
from sip.registration import BACKOFF_FIRST, Granted, Refused, Registration, RegistrationState, Resend, Trunk

VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg1;rport"
CONTACT = "<sip:fax@192.0.2.10:5060>"


def registration(username: str = "fax") -> Registration:
    trunk = Trunk("carrier", "sip:registrar.example.net", username=username, password="s3cret", expires=600)
    return Registration(trunk, random.Random(7), call_id="reg-1@192.0.2.10", local_tag="t1")


def answer(reg: Registration, status: int, *headers: tuple[str, str]) -> Response:
    request = reg.build_request(via=VIA, contact=CONTACT, host="192.0.2.10")
    response = make_response(request, status, to_tag="r1")
    for name, value in headers:
        response.headers.add(name, value)
    return response


def test_a_2xx_grants_the_contact_expiry_and_refreshes_32_s_early():
    reg = registration()
    step = reg.on_response(answer(reg, 200, ("Contact", f"{CONTACT};expires=120")), 1000.0)
    assert step == Granted(120, 1000.0 + 88)  # 10.2.1: the Contact's expires wins; refresh 32 s early
    assert reg.state is RegistrationState.REGISTERED


def test_a_short_binding_is_refreshed_at_half_life():
    reg = registration()
    assert reg.on_response(answer(reg, 200, ("Expires", "40")), 0.0) == Granted(40, 20.0)


def test_a_provisional_response_changes_nothing():
    reg = registration()
    assert reg.on_response(answer(reg, 100), 0.0) is None
    assert reg.state is RegistrationState.REGISTERING


def test_expires_zero_is_a_failure_with_back_off():
    reg = registration()
    step = reg.on_response(answer(reg, 200, ("Expires", "0")), 0.0)
    assert isinstance(step, Refused) and step.reason == "registrar granted expires=0"
    assert 0.8 * BACKOFF_FIRST <= step.retry_in <= 1.2 * BACKOFF_FIRST


def test_a_challenge_is_answered_once_then_the_credentials_are_refused():
    server = DigestServer("example.net", {"fax": "s3cret"}, rng=random.Random(1))
    reg = registration()
    challenge = ("WWW-Authenticate", server.challenges(0.0)[0])
    assert reg.on_response(answer(reg, 401, challenge), 0.0) == Resend()
    retry = reg.build_request(via=VIA, contact=CONTACT, host="192.0.2.10")
    verdict = server.verify(retry.headers.get("Authorization") or "", "REGISTER", 0.5, request_uri=str(retry.uri))
    assert verdict.outcome is AuthOutcome.ACCEPTED
    # RFC 3261 22.2: a second challenge (not stale) means the credentials were wrong.
    step = reg.on_response(answer(reg, 401, ("WWW-Authenticate", server.challenges(1.0)[0])), 1.0)
    assert isinstance(step, Refused) and step.status == 401


def test_a_challenge_without_a_username_is_a_failure():
    server = DigestServer("example.net", {"fax": "s3cret"}, rng=random.Random(1))
    reg = registration(username="")
    step = reg.on_response(answer(reg, 407, ("Proxy-Authenticate", server.challenges(0.0)[0])), 0.0)
    assert isinstance(step, Refused) and step.status == 407


@pytest.mark.parametrize("min_expires, resent", [("900", True), ("300", False), ("99999", False), ("", False)])
def test_423_raises_the_expiry_when_the_registrar_names_a_longer_one(min_expires, resent):
    reg = registration()
    headers = [("Min-Expires", min_expires)] if min_expires else []
    step = reg.on_response(answer(reg, 423, *headers), 0.0)
    assert (step == Resend()) is resent
    if resent:
        request = reg.build_request(via=VIA, contact=CONTACT, host="192.0.2.10")
        assert request.headers.get("Expires") == min_expires


def test_back_off_doubles_after_each_failure():
    reg = registration()
    delays = [reg.on_failure(None, "timeout", 0.0).retry_in for _ in range(4)]
    for n, delay in enumerate(delays):
        assert 0.8 * BACKOFF_FIRST * 2**n <= delay <= 1.2 * BACKOFF_FIRST * 2**n
