"""SIPp 3.6 plays the far end of an *outbound* call, over real loopback sockets, against
our ``sip`` UA driven by the call-control core (``t38gw.call.CallControl.dial``) as the
gateway will drive it: the core's commands are carried out on a real ``SipEndpoint``,
its timers are slept on, and "the fax" is a second of nothing once ``StartMedia`` came
(no UDPTL flows; the transmit engine is not wired in yet).

SIPp's exit status is the verdict on what went over the wire (each scenario checks our
SDP with ``ereg check_it``); the core's commands are the verdict on what the gateway
would do (start T.38, fail with which cause)."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from sip.errors import LocalProtocolError, SipParseError
from sip.transport import SipEndpoint
from sip.ua import UAConfig, UserAgent
from t38gw.call import (
    Answer,
    CallControl,
    CallFailed,
    CallSettings,
    Command,
    Dial,
    Hangup,
    Note,
    Reinvite,
    RejectOffer,
    RouteChoice,
    StartMedia,
    StopMedia,
)
from t38gw.negotiation import local_t38_params
from t38gw.outbound import plan_dial
from tests.interop.sipp.harness import Case, free_udp_port, port_taken, sipp_cmd

FAX_SECONDS = 1.0  # how long "the fax" runs once T.38 started
CALL_LIMIT = 25.0  # every call is over well before SIPp's own 30 s timeout


@dataclass
class Outcome:
    sipp_rc: int | None = None
    sipp_output: str = ""
    errors_log: str = ""
    commands: list[Command] = field(default_factory=list)
    progress: list[int] = field(default_factory=list)
    done: bool = False

    def of(self, kind: type) -> list:
        return [c for c in self.commands if isinstance(c, kind)]

    def notes(self, event: str) -> list[Note]:
        return [n for n in self.of(Note) if n.event == event]

    def describe(self) -> str:
        return (f"sipp rc={self.sipp_rc}\n--- sipp errors\n{self.errors_log[-3000:]}\n--- sipp stdout tail\n"
                f"{self.sipp_output[-1500:]}\n--- core commands\n" + "\n".join(map(repr, self.commands)))


def _nobody(facts: object) -> RouteChoice:
    return RouteChoice(None, None)


async def _place_call(uri: str, outcome: Outcome, *, initial_offer: str, t38_reinvite_after: float) -> None:
    ua = UserAgent(UAConfig(listen={"udp": ("127.0.0.1", 0)}, user="t38gw", user_agent="t38gw-test"),
                   rng=random.Random(12))
    endpoint = SipEndpoint(ua, ["udp:127.0.0.1:0"])
    settings = CallSettings(route_at_invite=_nobody, route_after_phase_b=_nobody, local_t38=local_t38_params(
        versions=[0, 1, 2, 3], max_bitrate=14400, max_datagram=400, error_correction="redundancy"),
        initial_offer=initial_offer, t38_reinvite_after=t38_reinvite_after, ring_timeout=20.0)
    core = CallControl(settings, sdp_session_id=4242)
    calls: list[object] = []

    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve)

        async def fax(now: float) -> None:
            await trio.sleep(FAX_SECONDS)
            execute(core.fax_ended(trio.current_time()))

        def execute(commands: list[Command]) -> None:
            queue = list(commands)
            while queue:
                command = queue.pop(0)
                outcome.commands.append(command)
                try:
                    if isinstance(command, Dial):
                        calls.append(endpoint.command(
                            ua.invite, command.uri, command.sdp, from_user=command.from_user,
                            from_domain=command.from_domain, credentials=command.credentials, proxy=command.proxy))
                    elif isinstance(command, Answer):
                        endpoint.command(ua.answer, calls[0], command.sdp)
                    elif isinstance(command, RejectOffer):
                        endpoint.command(ua.reject, calls[0], command.status)
                    elif isinstance(command, Reinvite):
                        endpoint.command(ua.reinvite, calls[0], command.sdp)
                    elif isinstance(command, Hangup):
                        endpoint.command(ua.hangup, calls[0])
                    elif isinstance(command, StartMedia) and len(outcome.of(StartMedia)) == 1:
                        nursery.start_soon(fax, trio.current_time())
                    elif isinstance(command, StopMedia):
                        execute(core.fax_ended(trio.current_time()))
                except (LocalProtocolError, SipParseError) as exc:
                    queue = core.command_failed(command, str(exc), trio.current_time())

        target = plan_dial(uri, (), allow_direct_uri=True)
        execute(core.dial(target, "127.0.0.1", 40000, trio.current_time()))
        with trio.move_on_after(CALL_LIMIT):
            while not core.done:
                deadline = core.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    event = await endpoint.events.receive()
                    if calls and getattr(event, "call", None) is calls[0]:
                        execute(core.sip_event(event, trio.current_time()))
                    continue
                execute(core.handle_timer(trio.current_time()))
        outcome.done = core.done
        outcome.progress = list(core.progress)
        await trio.sleep(0.5)  # the BYE's 200, the last ACK
        nursery.cancel_scope.cancel()


def run(scenario: str, *, initial_offer: str = "audio", t38_reinvite_after: float = -1.0) -> Outcome:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: install Debian's sip-tester (make test-deps)")
    workdir = Path(tempfile.mkdtemp(prefix=f"sipp-out-{scenario}-"))
    port = free_udp_port()
    outcome = Outcome()
    sipp = subprocess.Popen(sipp_cmd(Case(scenario, "uas"), port, None), cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not port_taken(port) and time.monotonic() < deadline and sipp.poll() is None:
            time.sleep(0.05)
        trio.run(lambda: _place_call(f"sip:fax@127.0.0.1:{port}", outcome, initial_offer=initial_offer,
                                     t38_reinvite_after=t38_reinvite_after))
        try:
            out, _ = sipp.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            sipp.kill()
            out, _ = sipp.communicate()
        outcome.sipp_rc = sipp.returncode
        outcome.sipp_output = out.decode(errors="replace")
        outcome.errors_log = "".join(p.read_text(errors="replace") for p in workdir.glob("*_errors.log"))
        return outcome
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def test_t38_in_the_first_invite_answered_with_t38():
    out = run("outbound_t38_uas", initial_offer="t38")
    assert out.sipp_rc == 0, out.describe()
    assert out.done and 180 in out.progress, out.describe()
    [dial] = out.of(Dial)
    assert b"m=image" in dial.sdp and dial.offer == "t38"
    [start] = out.of(StartMedia)
    assert start.t38.version == 0 and start.t38.remote[0] == "127.0.0.1"
    assert not out.of(CallFailed) and not out.of(Reinvite) and out.of(Hangup)


def test_busy_486_is_a_retryable_failure():
    out = run("outbound_busy_uas")
    assert out.sipp_rc == 0, out.describe()
    [failed] = out.of(CallFailed)
    assert (failed.cause, failed.status, failed.retryable) == ("busy", 486, True), out.describe()
    assert not out.of(StartMedia) and not out.of(Hangup)


def test_audio_first_then_the_callees_reinvite_to_t38():
    out = run("outbound_audio_then_peer_reinvite_uas", initial_offer="audio", t38_reinvite_after=-1.0)
    assert out.sipp_rc == 0, out.describe()
    assert [n.fields["to"] for n in out.notes("peer_reinvite")] == ["t38"], out.describe()
    assert len(out.of(StartMedia)) == 1 and not out.of(Reinvite) and not out.of(CallFailed)
    assert out.of(Hangup) and out.done


def test_our_t38_reinvite_refused_with_488_fails_the_call_and_hangs_up():
    """The older ``t38_reinvite_488_uas.xml``, which needs outbound calls: audio first, our
    re-INVITE to T.38 after 0.5 s, SIPp's 488 -> no T.38, BYE."""
    out = run("t38_reinvite_488_uas", initial_offer="audio", t38_reinvite_after=0.5)
    assert out.sipp_rc == 0, out.describe()
    [failed] = out.of(CallFailed)
    assert (failed.cause, failed.status, failed.retryable) == ("no_t38", 488, False), out.describe()
    assert out.of(Reinvite) and out.of(Hangup) and not out.of(StartMedia)
