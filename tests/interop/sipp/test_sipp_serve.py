"""SIPp 3.6 runs the scenarios in sipp-scenarios/ against a real ``t38gw serve`` subprocess on
127.0.0.1 (issues #6, #12), not against the test UA (that is test_sipp.py): SIPp calls the
gateway, or (the ``*_uas`` scenarios) plays the called line of a fax sent with ``POST /v1/faxes``.

One gateway per configuration; the scenarios that can share a configuration run against it in
parallel.  SIPp's exit status is the verdict (0 = every message arrived as the scenario demands,
including its regex checks on the gateway's answers); the gateway's log and archive show that it
really handled the calls.  Which scenarios cannot run against ``serve`` yet, and why, is in
sipp-scenarios/README.md, section "Against `t38gw serve`".
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import pytest
import trio
from PIL import Image, ImageDraw

from sip.transport import SipEndpoint
from sip.ua import CallAnswered, CallTerminated, UAConfig, UserAgent
from tests.e2e.support import GatewayProcess
from tests.interop.sipp.harness import SCENARIOS, Case, port_taken, sipp_cmd, free_udp_port
from tests.sip_ua.test_ua import T38_A

SIPP_WAIT = 45.0  # SIPp's own -timeout is 30 s; this only catches a hung SIPp
FAX_WAIT = 20.0

# Scenarios that need something serve cannot do today (README section "Against `t38gw serve`").
NOT_APPLICABLE: set[str] = set()


@dataclass
class SippRun:
    scenario: str
    call_id: str
    rc: int | None
    output: str
    errors_log: str

    def describe(self) -> str:
        return (f"{self.scenario}: sipp rc={self.rc}\n--- sipp errors\n{self.errors_log[-3000:]}"
                f"\n--- sipp stdout tail\n{self.output[-1500:]}")


@pytest.fixture(autouse=True)
def _sipp_present() -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: install Debian's sip-tester (make test-deps)")


def _finish(sipp: subprocess.Popen, scenario: str, call_id: str, workdir: Path,
            wait: float = SIPP_WAIT) -> SippRun:
    try:
        out, _ = sipp.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        sipp.kill()
        out, _ = sipp.communicate(timeout=10)
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob("*_errors.log"))
    return SippRun(scenario, call_id, sipp.returncode, out.decode(errors="replace"), errors)


def _sipp(scenario: str, role: str, workdir: Path, target: str | None,
          sipp_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int, str]:
    """Start SIPp on a free port; the Call-ID names the scenario so the gateway's records can be
    matched to it (``-cid_str``: %u call number, %p pid, %s our address)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    call_id_prefix = f"sipp-{scenario}-"
    cmd = [*sipp_cmd(Case(scenario, role, sipp_args=sipp_args), port, None), "-cid_str", call_id_prefix + "%u-%p@%s"]
    if target:
        cmd.append(target)
    sipp = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    return sipp, port, call_id_prefix


def _run_callers(gateway: GatewayProcess, scenarios: list[str], workdir: Path, sipp_args: tuple[str, ...] = (),
                 wait: float = SIPP_WAIT) -> dict[str, SippRun]:
    """Run each caller scenario (SIPp as UAC, service ``fax``) against ``gateway``, all at once."""
    target = "{}:{}".format(*gateway.sip_address)

    def one(scenario: str) -> SippRun:
        where = workdir / scenario
        sipp, _, call_id = _sipp(scenario, "uac", where, target, sipp_args)
        try:
            return _finish(sipp, scenario, call_id, where, wait)
        finally:
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait(10)

    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        return dict(zip(scenarios, pool.map(one, scenarios)))


def _describe(gateway: GatewayProcess, runs: dict[str, SippRun]) -> str:
    return "\n".join(r.describe() for r in runs.values()) + f"\n--- gateway log tail\n{gateway.log_text()[-4000:]}"


def _events(gateway: GatewayProcess, name: str, call_id_prefix: str | None = None) -> list[dict]:
    return [e for e in gateway.log_events() if e.get("event") == name
            and (call_id_prefix is None or str(e.get("call_id", "")).startswith(call_id_prefix))]


def _fax_for(gateway: GatewayProcess, metas: list[dict], run: SippRun) -> dict:
    mine = [m for m in metas if str(m.get("sip", {}).get("call_id", "")).startswith(run.call_id)]
    assert len(mine) == 1, (run.scenario, metas)
    return mine[0]


def test_every_scenario_is_run_against_serve_or_explained():
    ran = {"t38_first_invite", "session_refresh_t38", "options", "delayed_offer_t38", "cancel_before_answer",
           "audio_then_our_reinvite",
           "reinvite_glare",
           "audio_then_peer_reinvite", "register_digest_uas", "invite_digest_uac",
           "bye_mid_call",
           # SIPp as the called line of a job sent with POST /v1/faxes
           "outbound_busy_uas", "t38_reinvite_488_uas", "outbound_t38_uas", "outbound_audio_then_peer_reinvite_uas",
           # a recorded G.711 fax replayed against serve: tests/interop/sipp/test_sipp_audio.py
           "audio_fax_pcap_refuses_t38"}
    assert ran | NOT_APPLICABLE == {p.stem for p in SCENARIOS.glob("*.xml")}
    readme = (SCENARIOS / "README.md").read_text()
    section = readme.split("## Against `t38gw serve`", 1)[1]
    for scenario in NOT_APPLICABLE:
        assert f"`{scenario}.xml`" in section, scenario


def test_default_config_t38_first_invite_session_refresh_options(tmp_path):
    """Default config: T.38 offered in the INVITE (SIPp sends no fax, so the gateway ends the
    call with a ``failed`` fax in the archive), an RFC 4028 refresh during T.38, OPTIONS, and a
    delayed offer (INVITE without SDP: our T.38 offer in the 200, SIPp's answer in the ACK)."""
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw").start()
    try:
        runs = _run_callers(gateway, ["t38_first_invite", "session_refresh_t38", "options", "delayed_offer_t38"],
                            tmp_path / "sipp")
        assert all(r.rc == 0 for r in runs.values()), _describe(gateway, runs)
        # The INVITE scenarios are faxes to the gateway; none sends a page, so all fail.
        metas = gateway.wait_for_faxes(3, FAX_WAIT)
        assert len(metas) == 3, metas
        delayed = runs["delayed_offer_t38"]
        assert _events(gateway, "t38_answer_in_ack", delayed.call_id), _describe(gateway, runs)
        assert _events(gateway, "t38_started", delayed.call_id), _describe(gateway, runs)
        for scenario in ("t38_first_invite", "session_refresh_t38", "delayed_offer_t38"):
            meta = _fax_for(gateway, metas, runs[scenario])
            assert meta["status"] == "failed" and meta["reason"], meta
            folder = gateway.folder(meta)
            assert folder.is_dir() and (folder / "meta.json").is_file(), folder
            on_disk = json.loads((folder / "meta.json").read_text())
            assert on_disk["status"] == "failed" and on_disk["reason"], on_disk
            assert on_disk["id"] == meta["id"]
        # The refresh re-INVITE repeated the same SDP: no media change, no re-INVITE from us.
        assert not _events(gateway, "t38_reinvite_sent"), gateway.log_text()[-3000:]
    finally:
        gateway.stop()


def test_reinvite_after_half_a_second_our_reinvite_and_glare(tmp_path):
    """``t38_reinvite_after = 0.5``: the gateway answers audio and re-INVITEs to T.38 itself; in
    the glare scenario SIPp re-INVITEs at the same moment and the gateway must 491 and retry."""
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", reinvite_after=0.5).start()
    try:
        runs = _run_callers(gateway, ["audio_then_our_reinvite", "reinvite_glare"], tmp_path / "sipp")
        assert all(r.rc == 0 for r in runs.values()), _describe(gateway, runs)
        metas = gateway.wait_for_faxes(2, FAX_WAIT)
        for run in runs.values():
            # One re-INVITE of ours per call (in glare the retry is the same re-INVITE, sent
            # again after the 491), and SIPp took it: the call really turned into T.38.
            assert len(_events(gateway, "t38_reinvite_sent", run.call_id)) == 1, _describe(gateway, runs)
            assert _events(gateway, "t38_reinvite_accepted", run.call_id), _describe(gateway, runs)
            assert _events(gateway, "t38_started", run.call_id), _describe(gateway, runs)
            assert _fax_for(gateway, metas, run)["status"] == "failed"  # SIPp sends no fax
    finally:
        gateway.stop()


def test_answer_after_ringing_lets_a_cancel_land(tmp_path):
    """``answer_after = 2``: the gateway rings (180) before it answers, so SIPp's CANCEL 0.3 s
    later gets 200 and the INVITE 487, and that call leaves no fax folder; a call nobody
    cancels is answered after its ringing."""
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", sip_extra="answer_after = 2.0").start()
    try:
        runs = _run_callers(gateway, ["cancel_before_answer", "t38_first_invite"], tmp_path / "sipp")
        run = runs["cancel_before_answer"]
        assert all(r.rc == 0 for r in runs.values()), _describe(gateway, runs)
        # The call nobody cancelled was answered after its ringing.
        answered = runs["t38_first_invite"]
        assert _events(gateway, "call_ringing", answered.call_id), _describe(gateway, runs)
        assert _events(gateway, "t38_started", answered.call_id), _describe(gateway, runs)
        assert _events(gateway, "call_ringing", run.call_id), _describe(gateway, runs)
        deadline = time.monotonic() + 5
        while not _events(gateway, "call_cancelled_while_ringing", run.call_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _events(gateway, "call_cancelled_while_ringing", run.call_id), _describe(gateway, runs)
        time.sleep(2.5)  # past answer_after: the cancelled call must not be answered late
        assert not _events(gateway, "call_incoming", run.call_id), _describe(gateway, runs)
        [meta] = gateway.wait_for_faxes(1, FAX_WAIT)
        assert meta["id"] == _fax_for(gateway, [gateway.meta(meta["id"])], answered)["id"]
    finally:
        gateway.stop()


def test_wait_for_peer_reinvite(tmp_path):
    """``t38_reinvite_after = -1``: the gateway answers audio and waits for the peer's re-INVITE."""
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", reinvite_after=-1).start()
    try:
        runs = _run_callers(gateway, ["audio_then_peer_reinvite"], tmp_path / "sipp")
        assert runs["audio_then_peer_reinvite"].rc == 0, _describe(gateway, runs)
        run = runs["audio_then_peer_reinvite"]
        assert not _events(gateway, "t38_reinvite_sent"), _describe(gateway, runs)
        assert _events(gateway, "peer_reinvite", run.call_id), _describe(gateway, runs)
        assert _events(gateway, "t38_started", run.call_id), _describe(gateway, runs)
        assert _fax_for(gateway, gateway.wait_for_faxes(1, FAX_WAIT), run)["status"] == "failed"
    finally:
        gateway.stop()


def test_trunk_registers_with_digest(tmp_path):
    """SIPp is the registrar (401 MD5 qop=auth challenge, then verifies ``fax``/``s3cret``);
    serve starts with a trunk pointing at it and must register."""
    where = tmp_path / "sipp"
    sipp, port, call_id = _sipp("register_digest_uas", "uas", where, None)
    gateway = None
    try:
        deadline = time.monotonic() + 10
        while not port_taken(port) and time.monotonic() < deadline and sipp.poll() is None:
            time.sleep(0.05)
        trunk = f"""
[[sip.trunks]]
name = "sipp"
registrar = "sip:127.0.0.1:{port}"
username = "fax"
password = "s3cret"
expires = 120
"""
        (tmp_path / "gw").mkdir()
        gateway = GatewayProcess(tmp_path / "gw", sip_extra=trunk).start()
        run = _finish(sipp, "register_digest_uas", call_id, where)
        assert run.rc == 0, _describe(gateway, {"register_digest_uas": run})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _events(gateway, "registration_ok"):
            time.sleep(0.05)
        [ok] = _events(gateway, "registration_ok")
        assert ok["trunk"] == "sipp" and ok["expires"] == 120, ok
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(10)
        if gateway is not None:
            gateway.stop()


# ----------------------------------------------------------------- inbound digest auth

_USERS = """allow_from = ["127.0.0.1/32"]
[[sip.users]]
username = "fax"
password = "s3cret"
"""


def _call_from_outside(gateway: GatewayProcess, credentials: tuple[str, str]) -> tuple[list, object]:
    """Our own UA (sip.ua on sip.transport, SHA-256 digest) calls ``gateway`` from 127.0.0.2,
    outside its allow_from, offering T.38; it hangs up 1 s after an answer.  Returns the
    caller's events and its Call (``call.invite``: the last INVITE it sent)."""



    events: list = []
    calls: list = []

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                ua = UserAgent(UAConfig(listen={"udp": ("127.0.0.2", 0)}, user="caller"), rng=random.Random(11))
                caller = SipEndpoint(ua, ["udp:127.0.0.2:0"])
                await nursery.start(caller.serve)
                host, port = gateway.sip_address
                call = caller.command(ua.invite, f"sip:5550100@{host}:{port}", T38_A, credentials=credentials)
                calls.append(call)
                async for event in caller.events:
                    events.append(event)
                    if isinstance(event, CallAnswered):
                        await trio.sleep(1.0)
                        caller.command(ua.hangup, event.call)
                    elif isinstance(event, CallTerminated):
                        await trio.sleep(0.5)  # let the BYE's 200 / the ACK go out
                        break
                nursery.cancel_scope.cancel()

    trio.run(main)
    return events, calls[0]


def test_caller_outside_allow_from_is_challenged_and_answered_with_the_right_password(tmp_path):
    """``[[sip.users]]`` with ``allow_from = ["127.0.0.1/32"]``: a caller on 127.0.0.2 gets a 401,
    answers it with the configured credentials and its call is answered with T.38 (SIPp cannot
    play this caller against serve's defaults: README, "Against `t38gw serve`")."""

    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", sip_extra=_USERS).start()
    try:
        events, call = _call_from_outside(gateway, ("fax", "s3cret"))
        call_id = call.call_id
        # One 401 (RFC 8760: SHA-256 preferred), answered once; the answered INVITE carried it.
        assert call.auth_tries == 1 and "algorithm=SHA-256" in call.invite.headers.get("Authorization")
        answered = [e for e in events if isinstance(e, CallAnswered)]
        assert len(answered) == 1 and b"m=image" in answered[0].answer, (events, gateway.log_text()[-3000:])
        assert [e.reason for e in events if isinstance(e, CallTerminated)] == ["local hangup"], events
        assert _events(gateway, "call_incoming", call_id), gateway.log_text()[-3000:]
        [meta] = gateway.wait_for_faxes(1, FAX_WAIT)
        assert meta["sip"]["call_id"] == call_id and meta["status"] == "failed"  # no fax was sent
    finally:
        gateway.stop()


def test_caller_outside_allow_from_with_a_wrong_password_gets_403_and_leaves_nothing(tmp_path):
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", sip_extra=_USERS).start()
    try:
        events, call = _call_from_outside(gateway, ("fax", "wrong"))
        call_id = call.call_id
        assert call.auth_tries == 1  # challenged, answered, refused: no second try (RFC 3261 22.2)
        assert not [e for e in events if isinstance(e, CallAnswered)], events
        assert [(e.reason, e.status) for e in events if isinstance(e, CallTerminated)] == [("rejected 403", 403)], events
        time.sleep(0.5)
        assert not _events(gateway, "call_incoming", call_id), gateway.log_text()[-3000:]
        assert gateway.faxes() == []
        # The refusals leave a trace: a log line each (throttled by the UA) and a metric.
        refused = _events(gateway, "sip_request_refused")
        assert {e["reason"] for e in refused} >= {"auth_required", "auth_failed"}, refused
        assert all(e["source"] == "127.0.0.2" for e in refused)

        metrics = httpx.get(f"{gateway.api}/metrics", timeout=5).text
        assert 't38gw_sip_refused_total{reason="auth_failed"} 1.0' in metrics, metrics
    finally:
        gateway.stop()


def test_sipp_outside_allow_from_authenticates_with_md5_against_serve(tmp_path):
    """``invite_digest_uac.xml`` against serve: SIPp on 127.0.0.2 (outside allow_from) answers
    the 401 with MD5 (SIPp 3.6 reads only the first challenge and knows only MD5, so the
    gateway is set to offer MD5: ``[sip] auth_algorithms``) and its call is answered."""
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", sip_extra='auth_algorithms = ["MD5"]\n' + _USERS).start()
    try:
        target = "{}:{}".format(*gateway.sip_address)
        case = Case("invite_digest_uac", "uac", sipp_host="127.0.0.2", sipp_args=("-auth_uri", "service@{target}"))
        where = tmp_path / "sipp"
        where.mkdir()
        cmd = [*sipp_cmd(case, free_udp_port(), target),
               "-cid_str", "sipp-digest-%u-%p@%s"]
        sipp = subprocess.Popen(cmd, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        run = _finish(sipp, "invite_digest_uac", "sipp-digest-", where)
        assert run.rc == 0, _describe(gateway, {"invite_digest_uac": run})
        assert _events(gateway, "call_incoming", "sipp-digest-"), gateway.log_text()[-3000:]
        challenged = _events(gateway, "sip_request_refused")
        assert [e["reason"] for e in challenged] == ["auth_required"], challenged
    finally:
        gateway.stop()


# ----------------------------------------------------------------- outbound: SIPp is the called line

# SIPp sends no DIS, so the gateway hangs up when its wait for the called terminal, T0 (60 s,
# as SpanDSP), runs out; the T.38 scenarios wait 75 s for that BYE, longer than the
# harness's global ``-timeout 30s``.
JOB_WAIT = 80.0
CALLED_LINE_TIMEOUT = ("-timeout", "85s")  # later on the command line than the harness's: it wins


def _page_png() -> bytes:
    """One A4-wide 1-bit page with a few black bars: something real to rasterise and send."""
    image = Image.new("1", (1728, 500), 1)
    draw = ImageDraw.Draw(image)
    for top in range(40, 460, 80):
        draw.rectangle((100, top, 1628, top + 30), fill=0)
    out = BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class CalledLine:
    """SIPp playing the called line on its own port (a UAS scenario, ``-m 1``)."""
    scenario: str
    sipp: subprocess.Popen
    port: int
    workdir: Path

    @property
    def uri(self) -> str:
        return f"sip:5550100@127.0.0.1:{self.port}"

    def finish(self) -> SippRun:
        return _finish(self.sipp, self.scenario, "", self.workdir, wait=JOB_WAIT)


def _called_line(scenario: str, workdir: Path) -> CalledLine:
    sipp, port, _ = _sipp(scenario, "uas", workdir / scenario, None, CALLED_LINE_TIMEOUT)
    deadline = time.monotonic() + 10
    while not port_taken(port) and time.monotonic() < deadline and sipp.poll() is None:
        time.sleep(0.05)
    assert port_taken(port), f"SIPp did not start {scenario}"
    return CalledLine(scenario, sipp, port, workdir / scenario)


def _outbound_gateway(workdir: Path, *, initial_offer: str, reinvite_after: float) -> GatewayProcess:
    """Direct SIP URIs (no trunk: a trunk would REGISTER to SIPp, which these scenarios do not
    expect), no retries: one attempt per job, so SIPp's single call is the whole job.  No
    audio fallback: SIPp plays no fax audio, and ``t38_reinvite_488_uas`` checks that a
    refused T.38 re-INVITE ends the call (with the fallback the fax would go on as G.711:
    tests/interop/sipp/test_sipp_audio.py, tests/e2e/test_audio_fax.py)."""
    workdir.mkdir(parents=True, exist_ok=True)
    send = f'\n[send]\nallow_direct_uri = true\ninitial_offer = "{initial_offer}"\nretries = 0\n'
    return GatewayProcess(workdir, reinvite_after=reinvite_after, extra_config=send,
                          t38_extra="audio_fallback = false").start()


def _send(gateway: GatewayProcess, to: str) -> str:
    reply = httpx.post(f"{gateway.api}/v1/faxes", files=[("file", ("page.png", _page_png(), "image/png"))],
                       data={"to": to}, timeout=30)
    assert reply.status_code == 202, (reply.status_code, reply.text)
    return reply.json()["id"]


def _wait_job(gateway: GatewayProcess, fax_id: str, timeout: float = JOB_WAIT) -> dict:
    deadline = time.monotonic() + timeout
    meta = gateway.meta(fax_id)
    while meta.get("in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        meta = gateway.meta(fax_id)
    assert not meta.get("in_progress"), (meta, gateway.log_text()[-4000:])
    return meta


def _job_events(gateway: GatewayProcess, fax_id: str, name: str) -> list[dict]:
    return [e for e in gateway.log_events() if e.get("event") == name and e.get("fax_id") == fax_id]


def _run_called_lines(gateway: GatewayProcess, lines: list[CalledLine]) -> tuple[dict[str, SippRun], dict[str, dict]]:
    """Queue one job per called line (all at once), then wait for each job and each SIPp."""
    ids = {line.scenario: _send(gateway, line.uri) for line in lines}
    with ThreadPoolExecutor(max_workers=len(lines)) as pool:
        metas = dict(zip(ids, pool.map(lambda i: _wait_job(gateway, i), ids.values())))
        runs = dict(zip(ids, pool.map(CalledLine.finish, lines)))
    return runs, metas


def _kill(lines: list[CalledLine]) -> None:
    for line in lines:
        if line.sipp.poll() is None:
            line.sipp.kill()
            line.sipp.wait(10)


def test_outbound_busy_and_our_t38_reinvite_refused_with_488(tmp_path):
    """``initial_offer = "audio"``, ``t38_reinvite_after = 0.5``: one job to a line that answers
    486 (busy, retryable, but ``retries = 0``: the job fails after one attempt), one to a line
    that answers audio and refuses our re-INVITE to T.38 with 488 (we ACK, hang up: no_t38)."""
    lines = [_called_line(s, tmp_path / "sipp") for s in ("outbound_busy_uas", "t38_reinvite_488_uas")]
    gateway = _outbound_gateway(tmp_path / "gw", initial_offer="audio", reinvite_after=0.5)
    try:
        runs, metas = _run_called_lines(gateway, lines)
        assert all(r.rc == 0 for r in runs.values()), _describe(gateway, runs)
        describe = _describe(gateway, runs) + f"\n--- metas\n{json.dumps(metas, indent=1)}"

        busy = metas["outbound_busy_uas"]
        [attempt] = busy["attempts"]
        assert busy["status"] == "failed" and busy["pages_sent"] == 0, describe
        assert (attempt["outcome"], attempt["cause"], attempt["sip_status"]) == ("failed", "busy", 486), describe
        assert not _job_events(gateway, busy["id"], "call_answered"), describe

        refused = metas["t38_reinvite_488_uas"]
        [attempt] = refused["attempts"]
        assert refused["status"] == "failed" and refused["pages_sent"] == 0, describe
        assert (attempt["outcome"], attempt["cause"], attempt["sip_status"]) == ("failed", "no_t38", 488), describe
        [answered] = _job_events(gateway, refused["id"], "call_answered")
        assert answered["media"] == "audio", describe
        assert len(_job_events(gateway, refused["id"], "t38_reinvite_sent")) == 1, describe
        [refusal] = _job_events(gateway, refused["id"], "t38_reinvite_refused")
        assert refusal["status"] == 488, describe
        assert not _job_events(gateway, refused["id"], "t38_started"), describe
    finally:
        _kill(lines)
        gateway.stop()


def _assert_t38_call_without_a_fax(gateway: GatewayProcess, meta: dict, run: SippRun, answered_with: str) -> None:
    """T.38 came up, SIPp sent no DIS: T.30 gave up (T1) and the gateway hung up with BYE,
    which SIPp waited for (its exit status)."""
    describe = _describe(gateway, {run.scenario: run}) + f"\n--- meta\n{json.dumps(meta, indent=1)}"
    assert run.rc == 0, describe
    [attempt] = meta["attempts"]
    assert meta["status"] == "failed" and meta["pages_sent"] == 0, describe
    assert attempt["outcome"] == "failed" and attempt["sip_status"] == 200, describe
    assert attempt["cause"] == "t30_tx_t1expired", describe
    assert meta["t38"]["version"] == 0, describe  # SIPp's answer (or re-INVITE) says version 0
    assert meta["media"] == "t38" and meta["t38"]["packets_received"] == 0, describe
    [answered] = _job_events(gateway, meta["id"], "call_answered")
    assert answered["media"] == answered_with, describe
    [started] = _job_events(gateway, meta["id"], "t38_started")
    assert started["call_id"] == meta["sip"]["call_id"], describe
    [t30] = _job_events(gateway, meta["id"], "t30_ended")
    assert t30["result"] == "TX_T1EXPIRED", describe
    assert _job_events(gateway, meta["id"], "sip_hangup_sent"), describe


def test_outbound_t38_in_the_first_invite_and_our_bye_mid_call(tmp_path):
    """``initial_offer = "t38"``: SIPp checks our INVITE offers T.38, rings, answers T.38.
    Meanwhile ``bye_mid_call.xml`` calls the gateway with T.38 and waits for its BYE: the
    receiving T.30 gets no answer to its DIS either and gives up (three DIS, ~20 s), then hangs up."""
    lines = [_called_line("outbound_t38_uas", tmp_path / "sipp")]
    gateway = _outbound_gateway(tmp_path / "gw", initial_offer="t38", reinvite_after=0.0)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            caller = pool.submit(_run_callers, gateway, ["bye_mid_call"], tmp_path / "sipp", CALLED_LINE_TIMEOUT,
                                 JOB_WAIT)
            runs, metas = _run_called_lines(gateway, lines)
            runs.update(caller.result())
        meta = metas["outbound_t38_uas"]
        _assert_t38_call_without_a_fax(gateway, meta, runs["outbound_t38_uas"], "t38")
        assert not _job_events(gateway, meta["id"], "t38_reinvite_sent")

        bye = runs["bye_mid_call"]
        assert bye.rc == 0, _describe(gateway, runs)
        inbound = [m for m in gateway.wait_for_faxes(2, FAX_WAIT) if m["direction"] == "inbound"]
        received = _fax_for(gateway, inbound, bye)
        assert received["status"] == "failed" and received["reason"], received
        assert _events(gateway, "t38_started", bye.call_id), _describe(gateway, runs)
        assert _events(gateway, "sip_hangup_sent", bye.call_id), _describe(gateway, runs)
    finally:
        _kill(lines)
        gateway.stop()


def test_outbound_audio_then_the_called_lines_reinvite(tmp_path):
    """``initial_offer = "audio"``, ``t38_reinvite_after = -1``: SIPp answers audio and
    re-INVITEs to T.38 itself; the gateway takes it (no re-INVITE of ours)."""
    lines = [_called_line("outbound_audio_then_peer_reinvite_uas", tmp_path / "sipp")]
    gateway = _outbound_gateway(tmp_path / "gw", initial_offer="audio", reinvite_after=-1)
    try:
        runs, metas = _run_called_lines(gateway, lines)
        meta = metas["outbound_audio_then_peer_reinvite_uas"]
        _assert_t38_call_without_a_fax(gateway, meta, runs["outbound_audio_then_peer_reinvite_uas"], "audio")
        [reinvite] = _job_events(gateway, meta["id"], "peer_reinvite")
        assert reinvite["to"] == "t38"
        assert not _job_events(gateway, meta["id"], "t38_reinvite_sent")
    finally:
        _kill(lines)
        gateway.stop()
