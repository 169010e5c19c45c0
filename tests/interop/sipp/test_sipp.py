"""SIPp 3.6 (Debian sip-tester) runs every scenario in sipp-scenarios/ against our UA on
127.0.0.1.  All scenarios run in parallel once per session; each test then checks SIPp's
exit status (0 = every message arrived as the scenario demands, including its regex checks
on our answers) and what our UA reported."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.interop.sipp.harness import CASES, SCENARIOS, Result, run_case


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: install Debian's sip-tester (make test-deps)")
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {name: pool.submit(run_case, case) for name, case in CASES.items()}
        return {name: future.result(timeout=120) for name, future in futures.items()}


# Scenarios that need the gateway itself (a fax played as audio): they run against
# ``t38gw serve`` in tests/interop/sipp/test_sipp_audio.py, not against the test UA.
SERVE_ONLY = {"audio_fax_pcap_refuses_t38"}


def test_every_scenario_file_is_exercised():
    assert {p.stem for p in SCENARIOS.glob("*.xml")} - SERVE_ONLY == {case.scenario for case in CASES.values()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sipp_scenario_passes(results, name):
    result = results[name]
    if CASES[name].sipp_passes:
        assert result.sipp_rc == 0, result.describe()
    else:  # a negative case: the UA must refuse what the scenario expects to succeed
        assert result.sipp_rc not in (0, None), result.describe()


def test_digest_caller_outside_allow_from_is_challenged_then_answered(results):
    r = results["invite_digest_uac"]
    refused = r.events("RequestRefused")
    assert [(e["reason"], e["status"], e["method"], e["source"]) for e in refused] == [
        ("auth_required", 401, "INVITE", "127.0.0.2")], r.describe()
    assert _one(r, "InviteReceived")["source"] == "127.0.0.2", r.describe()
    assert _one(r, "CallTerminated")["reason"] == "remote hangup", r.describe()
    assert _one(r, "Stats")["auth_challenges"] == 1, r.describe()


def test_digest_caller_with_a_wrong_password_gets_403_and_no_call(results):
    r = results["invite_digest_uac_wrong_password"]
    assert "403 Forbidden" in r.errors_log, r.describe()
    refused = r.events("RequestRefused")
    assert [(e["reason"], e["status"]) for e in refused] == [("auth_required", 401), ("auth_failed", 403)], r.describe()
    assert not r.events("InviteReceived"), r.describe()


def _one(result: Result, name: str) -> dict:
    events = result.events(name)
    assert len(events) == 1, result.describe()
    return events[0]


@pytest.mark.parametrize("name", ["t38_first_invite", "t38_first_invite_tcp"])
def test_t38_first_invite_ends_by_peer_bye(results, name):
    r = results[name]
    assert _one(r, "CallTerminated")["reason"] == "remote hangup", r.describe()
    assert not r.events("MediaChanged")


@pytest.mark.parametrize("name", ["bye_mid_call", "bye_mid_call_tcp"])
def test_bye_mid_call_is_ours(results, name):
    r = results[name]
    assert _one(r, "CallTerminated")["reason"] == "local hangup", r.describe()


def test_our_reinvite_switched_to_t38(results):
    r = results["audio_then_our_reinvite"]
    change = _one(r, "MediaChanged")
    assert change["t38"] and not change["needs_answer"], r.describe()


def test_peer_reinvite_switched_to_t38(results):
    r = results["audio_then_peer_reinvite"]
    change = _one(r, "MediaChanged")
    assert change["t38"] and change["needs_answer"], r.describe()


def test_glare_was_seen_and_retried(results):
    r = results["reinvite_glare"]
    stats = _one(r, "Stats")
    assert stats.get("glare") == 1, r.describe()
    change = _one(r, "MediaChanged")
    assert change["t38"] and not change["needs_answer"], r.describe()


def test_cancel_ends_the_call(results):
    r = results["cancel_before_answer"]
    assert _one(r, "CallTerminated")["reason"] == "cancelled", r.describe()
    assert not r.events("CallEstablished")


def test_session_refresh_does_not_disturb_t38(results):
    r = results["session_refresh_t38"]
    assert len(r.events("SessionRefreshed")) == 2, r.describe()
    assert not r.events("MediaChanged"), r.describe()
    assert _one(r, "CallTerminated")["reason"] == "remote hangup"


def test_registration_succeeded(results):
    r = results["register_digest_uas"]
    assert _one(r, "RegistrationSucceeded")["expires"] == 120, r.describe()
    assert not r.events("RegistrationFailed")


def test_t38_reinvite_rejected_with_488(results):
    r = results["t38_reinvite_488_uas"]
    assert _one(r, "ReinviteFailed")["status"] == 488, r.describe()
    assert _one(r, "CallTerminated")["reason"] == "local hangup", r.describe()


def test_delayed_offer_answer_taken_from_the_ack(results):
    r = results["delayed_offer_t38"]
    change = _one(r, "MediaChanged")
    assert change["t38"] and not change["needs_answer"], r.describe()
    assert _one(r, "CallTerminated")["reason"] == "remote hangup"
