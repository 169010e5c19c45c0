"""End to end on loopback in real time: a fax machine on a G.711 line calls `t38gw serve`.

The far end (tests/e2e/audio_farend.py) is a hand-written SIP UAC that offers audio only,
refuses the gateway's re-INVITE to T.38 with 488 (a trunk without T.38), and sends the fax
with SpanDSP's AUDIO fax terminal as RTP (PCMU or PCMA, 20 ms packets).  The gateway must
carry on with the fax as audio (``[t38] audio_fallback``, on by default) through its
SpanDSP t38_gateway modems and archive it with ``media`` "g711u" / "g711a".
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.audio_farend import PT_PCMA, PT_PCMU, AudioCallPlan, AudioFarEnd, AudioCallResult
from tests.e2e.support import GatewayProcess
from tests.e2e.test_inbound import assert_pages_identical, source_pages
from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal

pytestmark = pytest.mark.realtime

FAX_WAIT = 20.0


@pytest.fixture
def gateway(tmp_path):
    # Defaults: t38_reinvite_after = 0 (re-INVITE to T.38 at once), audio_fallback on.
    gw = GatewayProcess(tmp_path).start()
    yield gw
    gw.stop()


def _describe(gateway: GatewayProcess, result: AudioCallResult, meta: dict | None = None) -> str:
    fields = {k: v for k, v in vars(result).items() if k not in ("sip_log", "spandsp_stats")}
    # The call's own log lines (the API polling's audit lines would crowd them out).
    call_log = "\n".join(line for line in gateway.log_text().splitlines() if '"event": "audit"' not in line)
    return (f"far end: {fields}\nspandsp: {result.spandsp_stats}\nsip: {result.sip_log}"
            + (f"\nmeta: {json.dumps(meta, indent=1)}" if meta else "")
            + f"\n--- gateway log tail\n{call_log[-6000:]}")


def _run(gateway: GatewayProcess, plan: AudioCallPlan, tmp_path) -> AudioCallResult:
    return AudioFarEnd(gateway.sip_address, plan, tmp_path).run()


def _assert_audio_fax_received(gateway: GatewayProcess, result: AudioCallResult, plan: AudioCallPlan,
                               media: str, tmp_path) -> dict:
    describe = _describe(gateway, result)
    assert result.invite_status == 200, describe
    # The gateway asked for T.38 once (t38_reinvite_after = 0) and we said no.
    assert (result.reinvites_received, result.reinvites_refused) == (1, 1), describe
    assert result.phase_e_status == T30_ERR_OK, (
        SpandspT38Terminal.completion_code_name(result.phase_e_status if result.phase_e_status is not None else -1),
        describe)
    assert result.pages_sent_confirmed == len(plan.pages), describe
    assert result.remote_ident == "+1 555 0100", describe  # the gateway's CSI ([fax] local_ident)
    assert result.rtp_sent > 0 and result.rtp_received > 0, describe
    assert result.rtp_payload_sizes == {160}, describe  # 20 ms of G.711 per packet (RFC 3551 4.5.14)

    [meta] = gateway.wait_for_faxes(1, FAX_WAIT)
    describe = _describe(gateway, result, meta)
    assert meta["status"] == "received", describe
    assert meta["media"] == media, describe
    assert meta["rtp"]["packets_received"] > 0, describe
    assert meta["t30"]["pages"] == len(plan.pages) and meta["t30"]["ecm"] is plan.ecm, describe
    assert meta["t30"]["remote_ident"] == plan.ident, describe
    assert meta["sip"]["caller"] == plan.caller and meta["sip"]["did"] == plan.did, describe
    return meta


def test_ulaw_caller_refuses_t38_ecm_two_pages_pixel_identical(gateway, tmp_path):
    plan = AudioCallPlan(pages=source_pages(41, 2), ecm=True, offer_payload_types=(PT_PCMU, PT_PCMA),
                         caller="5550401", seed=41)
    result = _run(gateway, plan, tmp_path)
    # RFC 3264 6.1: PCMU offered first, so the answer's first format is PCMU.
    assert result.answer_payload_types[:1] == [PT_PCMU] and result.law == "ulaw", _describe(gateway, result)
    meta = _assert_audio_fax_received(gateway, result, plan, "g711u", tmp_path)
    assert_pages_identical(gateway, meta, plan.pages, 204, 196, tmp_path)


def test_alaw_caller_refuses_t38_non_ecm_two_pages(gateway, tmp_path):
    """PCMA only, ECM off.  Without ECM a corrupt row stays corrupt; on loopback without loss
    none should be, so the pages must still come out pixel-identical."""
    plan = AudioCallPlan(pages=source_pages(42, 2), ecm=False, offer_payload_types=(PT_PCMA,),
                         caller="5550402", seed=42)
    result = _run(gateway, plan, tmp_path)
    assert result.answer_payload_types[:1] == [PT_PCMA] and result.law == "alaw", _describe(gateway, result)
    meta = _assert_audio_fax_received(gateway, result, plan, "g711a", tmp_path)
    assert_pages_identical(gateway, meta, plan.pages, 204, 196, tmp_path)


@pytest.fixture
def late_reinvite_gateway(tmp_path):
    # The audio fax runs for 2 s (the gateway's CED, our CNG) before the re-INVITE to T.38.
    gw = GatewayProcess(tmp_path, reinvite_after=2.0).start()
    yield gw
    gw.stop()


def test_caller_accepts_t38_after_two_seconds_of_audio(late_reinvite_gateway, tmp_path):
    """The call starts as G.711 audio fax; 2 s in, the gateway re-INVITEs to T.38 and the
    caller takes it.  The audio terminal cannot go on over IFPs, so the far end starts a fresh
    SpanDSP T.38 calling terminal there (as a fax machine behind an ATA would restart its
    call): the gateway's T.30 must run the fax over T.38 from that point and archive it
    with ``media`` "t38"."""
    gateway = late_reinvite_gateway
    plan = AudioCallPlan(pages=source_pages(43, 2), ecm=True, on_t38_reinvite="accept", caller="5550403", seed=43)
    result = _run(gateway, plan, tmp_path)
    describe = _describe(gateway, result)
    assert result.invite_status == 200, describe
    assert (result.reinvites_received, result.reinvites_accepted) == (1, 1), describe
    assert result.switched_to_t38_after is not None and 1.5 < result.switched_to_t38_after < 4.0, describe
    # Audio flowed both ways before the switch: 2 s are ~100 packets each way.
    assert result.rtp_sent >= 50 and result.rtp_received >= 50, describe
    assert result.audio_pages_confirmed == 0, describe
    assert result.phase_e_status == T30_ERR_OK, describe
    assert result.pages_sent_confirmed == 2 and result.remote_ident == "+1 555 0100", describe

    [meta] = gateway.wait_for_faxes(1, FAX_WAIT)
    describe = _describe(gateway, result, meta)
    assert meta["status"] == "received" and meta["media"] == "t38", describe
    assert meta["t38"]["packets_received"] > 0, describe
    assert meta["t30"]["pages"] == 2 and meta["t30"]["remote_ident"] == plan.ident, describe
    assert_pages_identical(gateway, meta, plan.pages, 204, 196, tmp_path)
