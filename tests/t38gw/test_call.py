"""The call-control core in simulated time: a real peer ``UserAgent`` calls our
``UserAgent`` over the simulated (lossy) network; our UA's events drive one
``CallControl`` per call and its commands are carried out against our UA, as the gateway
does.  The fax side is a script of facts (T.38 started -> phase B with a TSI -> fax
over).  Assertions are on what the peer saw (its events, the datagrams) and on the
commands."""

from __future__ import annotations

import heapq
import itertools
import random
import re
from collections.abc import Callable

import pytest

from sip.errors import LocalProtocolError, SipParseError
from sip.sdp import T38Params
from sip.ua import (
    CallAnswered,
    CallEstablished,
    CallProgressed,
    CallTerminated,
    InviteReceived,
    MediaChanged,
    ReinviteFailed,
)
from t38gw.call import (
    T38_WAIT_SECONDS,
    FAILURE_CAUSES,
    RETRYABLE_CAUSES,
    Accept,
    Answer,
    CallControl,
    CallFailed,
    Dial,
    CallFacts,
    CallSettings,
    Hangup,
    Load,
    Note,
    Refuse,
    Reinvite,
    RejectOffer,
    Reroute,
    Ring,
    RouteChoice,
    StartAudio,
    StartMedia,
    State,
    StopMedia,
    dial_failure,
)
from t38gw.config import Route, Trunk
from t38gw.negotiation import local_t38_params
from t38gw.outbound import DialTarget, plan_dial
from t38gw.routing import route_after_phase_b, route_at_invite
from tests.sip_ua.simnet import SimNet

PEER_AUDIO = (
    b"v=0\r\no=peer 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)
PEER_T38 = (
    b"v=0\r\no=peer 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=image 40002 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:9600\r\n"
    b"a=T38FaxRateManagement:transferredTCF\r\na=T38FaxMaxDatagram:200\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
)
TSI = "+1 555 0199"
# Like the hardening review's configuration: the "udp" line has its own folder and
# webhook, and a TSI rule further down must not steal its faxes.
ROUTES_BY_LINE = (
    Route(trunk="udp", archive_subdir="udp-line", webhook="line"),
    Route(tsi=r"^\+1 555 0199$", archive_subdir="by-tsi"),
    Route(),
)


def routers(routes: tuple[Route, ...]) -> dict[str, Callable[[CallFacts], RouteChoice]]:
    def at_invite(facts: CallFacts) -> RouteChoice:
        index, route = route_at_invite(routes, facts)
        return RouteChoice(index, route, route.reject)

    def after_phase_b(facts: CallFacts) -> RouteChoice:
        index, route = route_after_phase_b(routes, facts)
        return RouteChoice(index, route, route.reject)

    return {"route_at_invite": at_invite, "route_after_phase_b": after_phase_b}


class Harness:
    """Our UA + call cores (the gateway's role) and a peer UA on one simulated network."""

    def __init__(self, *, loss: float = 0.0, seed: int = 1, routes: tuple[Route, ...] = (Route(),),
                 max_calls: int = 10, fax_seconds: float = 20.0, phase_b_after: float = 3.0,
                 **settings: object) -> None:
        lossy = random.Random(seed)
        self.net = SimNet(latency=0.02, drop=(lambda sent: lossy.random() < loss) if loss else None)
        self.gw = self.net.add("gw", "127.0.0.1", seed=seed)
        self.peer = self.net.add("peer", "127.0.0.2", seed=seed + 100)
        self.gw.on_event = self._gateway_event
        self.settings = CallSettings(**routers(routes), local_t38=local_t38_params(
            versions=[0, 1, 2, 3], max_bitrate=14400, max_datagram=400, error_correction="redundancy"),
            **settings)  # type: ignore[arg-type]
        self.max_calls = max_calls
        self.overloaded = ""  # what t38gw.overload would say
        self.fax_seconds = fax_seconds
        self.phase_b_after = phase_b_after
        self.cores: dict[str, CallControl] = {}
        self.calls: dict[str, object] = {}
        self.commands: list[tuple[float, str, object]] = []
        self.fax_over: set[str] = set()
        self.media_started: set[str] = set()
        self._actions: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._ports = itertools.count(45000, 2)
        self.on_our_reinvite: Callable[[float], None] | None = None

    # -- the gateway's role -----------------------------------------------------
    def _gateway_event(self, node, event, now: float) -> None:
        if isinstance(event, InviteReceived):
            load = Load(calls=sum(not core.done for core in self.cores.values()), max_calls=self.max_calls,
                        overloaded=self.overloaded, retry_after=10)
            core = self.cores[event.call.id] = CallControl(self.settings, sdp_session_id=len(self.cores) + 1)
            self.calls[event.call.id] = event.call
            self.execute(event.call.id, core.offered(event, load, now), now)
            return
        call = getattr(event, "call", None)
        if call is not None and call.id in self.cores:
            self.execute(call.id, self.cores[call.id].sip_event(event, now), now)

    def execute(self, key: str, commands: list, now: float) -> None:
        core, call, ua = self.cores[key], self.calls[key], self.gw.ua
        queue = list(commands)
        while queue:
            command = queue.pop(0)
            self.commands.append((now, key, command))
            try:
                if isinstance(command, Ring):
                    ua.ring(call, now)
                elif isinstance(command, Accept):
                    queue = core.media_ready("127.0.0.1", next(self._ports), now) + queue
                elif isinstance(command, Answer):
                    ua.answer(call, command.sdp, now)
                elif isinstance(command, Refuse):
                    ua.reject(call, command.status, now, retry_after=command.retry_after)
                elif isinstance(command, RejectOffer):
                    ua.reject(call, command.status, now)
                elif isinstance(command, Reinvite):
                    ua.reinvite(call, command.sdp, now)
                    if self.on_our_reinvite is not None:
                        self.on_our_reinvite(now)
                elif isinstance(command, Hangup):
                    ua.hangup(call, now)
                elif isinstance(command, (StartMedia, StartAudio)) and key not in self.media_started:
                    # The fax starts on whichever media comes first (audio fallback: G.711,
                    # and it goes on over UDPTL if T.38 follows).
                    self.media_started.add(key)
                    self.at(now + self.phase_b_after, lambda t: self.execute(key, core.phase_b(TSI, t), t))
                    self.at(now + self.fax_seconds, lambda t: self.fax_ended(key, t))
                elif isinstance(command, StopMedia):
                    self.at(now + 0.5, lambda t: self.fax_ended(key, t))  # the session drains
            except LocalProtocolError as exc:
                queue = core.command_failed(command, str(exc), now)

    def fax_ended(self, key: str, now: float) -> None:
        if key not in self.fax_over:
            self.fax_over.add(key)
            self.execute(key, self.cores[key].fax_ended(now), now)

    # -- simulated time -----------------------------------------------------------
    def at(self, when: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._actions, (when, next(self._seq), action))

    def nearest(self) -> float | None:
        deadlines = [d for core in self.cores.values() if (d := core.next_deadline()) is not None]
        if self._actions:
            deadlines.append(self._actions[0][0])
        return min(deadlines, default=None)

    def run(self, until: float) -> None:
        for _ in range(100_000):
            nearest = self.nearest()
            stop_at = until if nearest is None else min(nearest, until)
            # Stop early when an event handler armed something sooner.
            self.net.run(stop_at, stop=lambda limit=stop_at: (d := self.nearest()) is not None and d < limit)
            if self.net.now < stop_at:
                continue
            now = self.net.now
            if nearest is not None and nearest <= now:
                while self._actions and self._actions[0][0] <= now:
                    heapq.heappop(self._actions)[2](now)
                for key, core in list(self.cores.items()):
                    deadline = core.next_deadline()
                    if deadline is not None and deadline <= now:
                        self.execute(key, core.handle_timer(now), now)
                self.net.flush()
                continue
            if now >= until:
                return
        raise AssertionError("did not settle")

    # -- what happened --------------------------------------------------------------
    def of(self, kind: type, key: str | None = None) -> list:
        return [c for _, k, c in self.commands if isinstance(c, kind) and (key is None or k == key)]

    def notes(self, event: str) -> list[Note]:
        return [n for n in self.of(Note) if n.event == event]

    def peer_events(self, kind: type) -> list:
        return [e for _, e in self.peer.events if isinstance(e, kind)]

    def only_core(self) -> CallControl:
        [core] = self.cores.values()
        return core

    def dial(self, sdp: bytes = PEER_AUDIO):
        return self.peer.ua.invite("sip:fax@127.0.0.1:5060", sdp, self.net.now)


def peer_answers_t38_reinvites(h: Harness, *, status: int | None = None) -> None:
    """The peer accepts (or refuses with ``status``) re-INVITEs offering T.38."""

    def on_event(node, event, now):
        if isinstance(event, MediaChanged) and event.needs_answer:
            if status is None:
                node.ua.answer(event.call, PEER_T38 if b"m=image" in event.remote_sdp else PEER_AUDIO, now)
            else:
                node.ua.reject(event.call, status, now)

    h.peer.on_event = on_event


def assert_fax_call_ended_by_us(h: Harness, key: str) -> None:
    core = h.cores[key]
    assert core.state is State.DONE, core
    assert h.of(Hangup, key), h.commands
    assert [e.reason for e in h.peer_events(CallTerminated)] == ["remote hangup"], h.peer.events


LOSSY = [pytest.param(0.0, 1, id="no-loss"), pytest.param(0.15, 7, id="loss15-seed7"),
         pytest.param(0.2, 11, id="loss20-seed11")]


@pytest.mark.parametrize("loss,seed", LOSSY)
def test_t38_in_the_first_invite_is_answered_with_t38_and_hung_up_when_the_fax_ends(loss, seed):
    h = Harness(loss=loss, seed=seed)
    h.dial(PEER_T38)
    h.run(60)
    [answered] = h.peer_events(CallAnswered)
    assert b"m=image" in answered.answer and b"T38FaxVersion:0" in answered.answer  # T.38 D.2.3: the lower version
    [start] = h.of(StartMedia)
    assert start.t38.remote == ("127.0.0.2", 40002)
    assert start.t38.version == 0 and start.t38.max_bitrate == 9600 and start.t38.peer_max_datagram == 200
    assert start.t38.error_correction == "redundancy"
    assert not h.of(Reinvite) and not h.of(StopMedia)
    [key] = h.cores
    assert_fax_call_ended_by_us(h, key)
    [bye] = h.net.sent_by("gw", "BYE")[:1]
    assert bye.time >= h.fax_seconds


@pytest.mark.parametrize("loss,seed", LOSSY)
def test_audio_then_our_reinvite_to_t38(loss, seed):
    h = Harness(loss=loss, seed=seed, t38_reinvite_after=1.0)
    peer_answers_t38_reinvites(h)
    h.dial(PEER_AUDIO)
    h.run(60)
    [answered] = h.peer_events(CallAnswered)
    assert b"m=audio" in answered.answer and b"m=image" not in answered.answer
    [reinvite] = h.of(Reinvite)
    assert b"m=image" in reinvite.sdp
    [offered] = [e for e in h.peer_events(MediaChanged) if e.needs_answer]
    assert b"m=image" in offered.remote_sdp
    [start] = h.of(StartMedia)
    assert start.t38.remote == ("127.0.0.2", 40002) and start.t38.peer_max_datagram == 200
    assert [n.event for n in h.of(Note) if n.event.startswith("t38_")] == ["t38_reinvite_sent", "t38_reinvite_accepted"]
    # Our re-INVITE waited for the ACK plus t38_reinvite_after.
    [first_reinvite] = h.net.sent_by("gw", "INVITE")[:1]
    [ack] = [s for s in h.net.sent_by("peer", "ACK") if not s.dropped][:1]
    assert first_reinvite.time >= ack.time + 1.0
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


def test_audio_then_the_peers_reinvite_to_t38():
    h = Harness(t38_reinvite_after=-1)
    call = h.dial(PEER_AUDIO)

    def on_event(node, event, now):
        if isinstance(event, CallAnswered):
            h.at(now + 4.0, lambda t: node.ua.reinvite(call, PEER_T38, t))

    h.peer.on_event = on_event
    h.run(60)
    assert not h.of(Reinvite)  # < 0: we never re-INVITE
    assert [n.fields["to"] for n in h.notes("peer_reinvite")] == ["t38"]
    [start] = h.of(StartMedia)
    assert start.t38.remote == ("127.0.0.2", 40002)
    [answer] = [e.answer for e in h.peer_events(CallAnswered)]
    assert b"m=audio" in answer
    # The peer got our T.38 answer to its re-INVITE (a 200 with m=image).
    assert any(s.first_line.startswith("SIP/2.0 200") and b"m=image" in s.data for s in h.net.sent_by("gw"))
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


# Without loss our retry (the callee's, 0-2 s, RFC 3261 14.1) always wins; with these
# seeds loss delays it past the peer's and the peer's re-INVITE wins: ours is dropped as
# superseded (ReinviteFailed 491) while the call is already on T.38.
@pytest.mark.parametrize("loss,seed", [(0.0, 1), (0.0, 2), (0.2, 28), (0.3, 21)])
def test_glare_both_reinvite_491_then_one_wins_and_the_call_is_t38(loss, seed):
    h = Harness(loss=loss, seed=seed, t38_reinvite_after=1.0)
    peer_answers_t38_reinvites(h)
    call = h.dial(PEER_AUDIO)
    # The peer re-INVITEs at the very moment we do: the requests cross.
    h.on_our_reinvite = lambda now: (setattr(h, "on_our_reinvite", None), h.peer.ua.reinvite(call, PEER_T38, now))
    h.run(60)
    assert h.net.sent_by("gw", "SIP/2.0 491") and h.net.sent_by("peer", "SIP/2.0 491")
    starts = h.of(StartMedia)
    assert starts and all(s.t38.remote == ("127.0.0.2", 40002) for s in starts)
    # Whichever re-INVITE won, the call turned into T.38 and the fax ran to its end;
    # the loser's ReinviteFailed(491) did not fail the call.
    assert not [c for c in h.of(StopMedia) if c.failed], h.commands
    assert h.fax_over and h.only_core().state is State.DONE
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


@pytest.mark.parametrize("loss,seed", LOSSY[:2])
def test_488_to_our_reinvite_fails_the_call_and_hangs_up(loss, seed):
    h = Harness(loss=loss, seed=seed, t38_reinvite_after=0.0)
    peer_answers_t38_reinvites(h, status=488)
    h.dial(PEER_AUDIO)
    h.run(60)
    assert len(h.of(Reinvite)) == 1
    assert not h.of(StartMedia)
    [stop] = h.of(StopMedia)
    assert stop.failed and "refused our T.38 re-INVITE (488" in stop.reason
    assert h.notes("t38_reinvite_refused")[0].fields["status"] == 488
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


def test_cancel_while_ringing_opens_nothing_and_answers_nothing():
    h = Harness(answer_after=5.0)
    call = h.dial(PEER_T38)
    h.at(1.0, lambda t: h.peer.ua.hangup(call, t))  # CANCEL after the 180
    h.run(30)
    assert h.of(Ring) and h.notes("call_ringing")[0].fields["answer_after"] == 5.0
    assert h.notes("call_cancelled_while_ringing")
    assert not h.of(Accept) and not h.of(Answer) and not h.of(StartMedia) and not h.fax_over
    assert h.only_core().state is State.DONE and h.only_core().next_deadline() is None
    assert [s.first_line for s in h.net.sent_by("gw", "SIP/2.0 18")] == ["SIP/2.0 180 Ringing"]
    assert all(b"CANCEL" in s.data for s in h.net.sent_by("gw", "SIP/2.0 200"))  # only the CANCEL's 200
    [ended] = h.peer_events(CallTerminated)
    assert ended.status == 487


def test_answer_after_rings_then_answers():
    h = Harness(answer_after=2.0)
    h.dial(PEER_T38)
    h.run(60)
    [ringing] = h.net.sent_by("gw", "SIP/2.0 180")
    [ok] = [s for s in h.net.sent_by("gw", "SIP/2.0 200") if b"m=image" in s.data][:1]
    assert ok.time >= ringing.time + 2.0
    assert h.of(StartMedia)
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


@pytest.mark.parametrize("loss,seed", LOSSY[:2])
def test_bye_mid_page_stops_the_media_and_we_send_no_bye(loss, seed):
    h = Harness(loss=loss, seed=seed)
    call = h.dial(PEER_T38)
    h.at(8.0, lambda t: h.peer.ua.hangup(call, t))  # after phase B, mid-page
    h.run(60)
    assert h.of(StartMedia)
    [stop] = h.of(StopMedia)
    assert not stop.failed and stop.reason == "remote hangup"
    assert not h.of(Hangup) and not h.net.sent_by("gw", "BYE")
    assert h.only_core().state is State.DONE


def test_t38_never_arriving_ends_the_call_after_the_wait():
    h = Harness(t38_reinvite_after=-1)
    h.dial(PEER_AUDIO)
    h.run(120)
    assert not h.of(StartMedia) and not h.of(Reinvite)
    [stop] = h.of(StopMedia)
    assert stop.failed and stop.reason == f"no T.38 negotiated within {T38_WAIT_SECONDS:.0f} s of answering"
    [bye] = h.net.sent_by("gw", "BYE")[:1]
    [ok] = h.net.sent_by("gw", "SIP/2.0 200")[:1]
    assert ok.time + T38_WAIT_SECONDS <= bye.time < ok.time + T38_WAIT_SECONDS + 1
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


def test_a_t38_reinvite_in_time_disarms_the_wait():
    h = Harness(t38_reinvite_after=50.0)
    peer_answers_t38_reinvites(h)
    h.fax_seconds = 40.0  # runs past the 60 s of the T.38 wait
    h.dial(PEER_AUDIO)
    h.run(200)
    assert h.of(StartMedia) and not h.of(StopMedia)
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


def test_trunk_routed_call_rerouted_by_tsi_keeps_its_trunk():
    """The hardening review's wrong-recipient bug: routing again after phase B must see the
    trunk the call came in on ("udp" here), so the TSI rule below the trunk rule loses."""
    h = Harness(routes=ROUTES_BY_LINE)
    h.dial(PEER_T38)
    h.run(60)
    [accept] = h.of(Accept)
    assert accept.facts.trunk == "udp" and accept.route.index == 0
    assert accept.route.route.archive_subdir == "udp-line"
    assert h.of(StartMedia) and h.fax_over
    assert h.of(Reroute) == []
    assert h.only_core().route.index == 0


def test_tsi_rule_above_the_trunk_rule_reroutes():
    routes = (Route(tsi=re.escape(TSI).join("^$"), archive_subdir="by-tsi"), *ROUTES_BY_LINE)
    h = Harness(routes=routes)
    h.dial(PEER_T38)
    h.run(60)
    [accept] = h.of(Accept)
    assert accept.route.index == 1  # the TSI is not known at the INVITE
    [reroute] = h.of(Reroute)
    assert reroute.route.index == 0 and reroute.tsi == TSI and reroute.route.route.archive_subdir == "by-tsi"


def test_max_calls_answers_503():
    h = Harness(max_calls=1, fax_seconds=30)
    h.dial(PEER_T38)
    h.run(2)
    second = h.dial(PEER_T38)
    h.run(10)
    refusals = h.of(Refuse)
    assert [(r.status, r.reason) for r in refusals] == [(503, "limits.max_calls (1) calls in progress")]
    ended = [e for e in h.peer_events(CallTerminated) if e.call is second]
    assert [e.status for e in ended] == [503]
    assert len(h.of(StartMedia)) == 1
    h.run(60)
    # Once the first call is over there is room again.
    h.dial(PEER_T38)
    h.run(120)
    assert len(h.of(StartMedia)) == 2 and len(h.of(Refuse)) == 1


def test_overload_answers_503_with_retry_after_and_leaves_the_running_call_alone():
    # Issue 14: a call is refused for load (the measured verdict), never admitted to
    # damage the calls already running; the 503 tells the sender when to try again.
    h = Harness(fax_seconds=30)
    first = h.dial(PEER_T38)
    h.run(2)
    h.overloaded = "the event loop runs 400 ms late (75% of the time over 2 s; limits.max_event_loop_lag 150 ms)"
    second = h.dial(PEER_T38)
    h.run(10)
    assert [(r.status, r.retry_after) for r in h.of(Refuse)] == [(503, 10)]
    assert h.of(Refuse)[0].reason.startswith("overloaded: the event loop runs 400 ms late")
    responses = [sent.message for sent in h.net.trace
                 if sent.src == "gw" and sent.first_line.startswith("SIP/2.0 503")]
    assert responses and all(r.headers.get("Retry-After") == "10" for r in responses)
    assert [e.status for e in h.peer_events(CallTerminated) if e.call is second] == [503]
    assert not [e for e in h.peer_events(CallTerminated) if e.call is first]  # still running
    h.overloaded = ""
    h.run(60)
    h.dial(PEER_T38)
    h.run(120)
    assert len(h.of(StartMedia)) == 2 and len(h.of(Refuse)) == 1


def test_route_reject_answers_603_and_no_media():
    h = Harness(routes=(Route(did="^fax$", reject=True), Route()))
    h.dial(PEER_T38)
    h.run(10)
    assert [r.status for r in h.of(Refuse)] == [603]
    assert not h.of(Accept)
    assert [e.status for e in h.peer_events(CallTerminated)] == [603]


def test_delayed_offer_gets_our_t38_offer_and_the_answer_in_the_ack_starts_media():
    h = Harness()

    def on_event(node, event, now):
        pass

    h.peer.on_event = on_event
    h.dial(b"")
    h.run(5)
    [answer] = h.of(Answer)
    assert b"m=image" in answer.sdp and h.only_core().state is State.T38_OFFERED
    # The peer's UA cannot put an answer in the ACK by itself: the core takes the answer
    # as the UA reports it (MediaChanged without needs_answer).
    key = next(iter(h.cores))
    h.execute(key, h.cores[key].sip_event(MediaChanged(h.calls[key], PEER_T38, False), h.net.now), h.net.now)
    assert h.notes("t38_answer_in_ack") and h.of(StartMedia)


def test_back_to_audio_after_the_fax_is_accepted_with_audio():
    h = Harness(fax_seconds=30)
    call = h.dial(PEER_T38)
    h.at(10.0, lambda t: h.peer.ua.reinvite(call, PEER_AUDIO.replace(b"1 1 IN", b"1 3 IN"), t))
    h.run(60)
    assert [n.fields["to"] for n in h.notes("peer_reinvite")] == ["audio"]
    assert any(b"m=audio" in a.sdp for a in h.of(Answer)[1:])
    assert not [e for e in h.peer_events(ReinviteFailed)]


def test_a_bad_sdp_in_a_peer_reinvite_gets_488_and_the_call_goes_on():
    h = Harness(fax_seconds=30)
    call = h.dial(PEER_T38)
    bad = PEER_T38.replace(b"1 2 IN", b"1 5 IN").replace(b"transferredTCF", b"nonsense")
    h.at(10.0, lambda t: h.peer.ua.reinvite(call, bad, t))
    h.run(60)
    assert [r.status for r in h.of(RejectOffer)] == [488]
    assert [e.status for e in h.peer_events(ReinviteFailed)] == [488]
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


def test_a_stale_timer_does_nothing():
    """A timer superseded by a state change cannot fire (the T.38 wait once T.38 runs)."""
    h = Harness(t38_reinvite_after=0.0)
    peer_answers_t38_reinvites(h)
    h.dial(PEER_AUDIO)
    h.run(5)
    core = h.only_core()
    assert core.state is State.T38 and core.next_deadline() is None
    assert core.handle_timer(h.net.now + T38_WAIT_SECONDS + 1) == []


def test_every_state_absorbs_every_sip_event_without_raising():
    """Late or repeated events of a call in any state are absorbed (a missing table key)."""
    h = Harness()
    call = h.dial(PEER_T38)
    h.run(1)
    key = next(iter(h.cores))
    our_call = h.calls[key]
    events = [CallTerminated(our_call, "x"), ReinviteFailed(our_call, 500, "x"),
              MediaChanged(our_call, b"garbage", False), MediaChanged(our_call, b"garbage", True),
              CallProgressed(our_call, 183, "x", b"garbage"), CallAnswered(our_call, b"garbage"),
              CallAnswered(our_call, PEER_AUDIO), CallAnswered(our_call, PEER_T38)]
    for state in State:
        for event in events:
            core = CallControl(h.settings, sdp_session_id=1)
            core.state = state
            assert isinstance(core.sip_event(event, 0.0), list)
            assert isinstance(core.fax_ended(0.0), list)
            assert isinstance(core.shutdown_started(0.0), list)
            assert isinstance(core.handle_timer(1e9), list)
    assert call is not None


def test_local_t38_params_follow_the_config():
    params = local_t38_params(versions=[0, 2], max_bitrate=33600, max_datagram=300, error_correction="fec")
    assert params == T38Params(version=2, max_bitrate=14400, rate_management="transferredTCF", max_datagram=300,
                               udp_ec="t38UDPFEC")


# ============================================================================ outbound calls


def TrunkStub(**keys: object) -> Trunk:  # noqa: N802 (a config Trunk with an outbound default)
    return Trunk(**{"name": "carrier", "outbound": True, **keys})  # type: ignore[arg-type]

#
# Our UA places the call (the core's ``Dial`` carried out with ``ua.invite``); the peer
# UA is the far end (a trunk, a T.38 gateway or a fax server) and answers per a script.


def trunk_node(net: SimNet, name: str, host: str, *, seed: int, **config: object):
    """A peer UA with its own policy (``SimNet.add`` fixes ``allow_from``)."""
    from sip.ua import UAConfig, UserAgent
    from tests.sip_ua.simnet import Node

    cfg = UAConfig(listen={"udp": (host, 5060)}, user=name, **config)  # type: ignore[arg-type]
    node = Node(name, UserAgent(cfg, rng=random.Random(seed)), (host, 5060))
    net.nodes[name] = node
    net.by_address[(host, 5060)] = node
    return node


PEER_URI = "sip:fax@127.0.0.2:5060"


class OutboundHarness(Harness):
    """The gateway's role for an outbound call: dial, then carry out the core's commands."""

    def __init__(self, *, peer_config: dict | None = None, **kwargs: object) -> None:
        self._peer_config = peer_config
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if peer_config is not None:
            del self.net.nodes["peer"], self.net.by_address[self.peer.address]
            self.peer = trunk_node(self.net, "peer", "127.0.0.2", seed=kwargs.get("seed", 1) + 100,  # type: ignore[operator]
                                   **peer_config)
        self.by_call: dict[str, str] = {}

    def place(self, target: DialTarget | str = PEER_URI, at: float | None = None) -> str:
        if isinstance(target, str):
            target = DialTarget(to=target, uri=target, number="", trunk="")
        key = f"out{len(self.cores) + 1}"
        core = self.cores[key] = CallControl(self.settings, sdp_session_id=len(self.cores) + 1)
        self.execute(key, core.dial(target, "127.0.0.1", next(self._ports), self.net.now), self.net.now)
        self.net.flush()
        return key

    def _gateway_event(self, node, event, now: float) -> None:
        call = getattr(event, "call", None)
        key = self.by_call.get(call.id) if call is not None else None
        if key is not None:
            self.execute(key, self.cores[key].sip_event(event, now), now)

    def execute(self, key: str, commands: list, now: float) -> None:
        core, ua = self.cores[key], self.gw.ua
        queue = list(commands)
        while queue:
            command = queue.pop(0)
            self.commands.append((now, key, command))
            try:
                if isinstance(command, Dial):
                    call = ua.invite(command.uri, command.sdp, now, from_user=command.from_user,
                                     from_domain=command.from_domain, credentials=command.credentials,
                                     proxy=command.proxy)
                    self.calls[key] = call
                    self.by_call[call.id] = key
                elif isinstance(command, Answer):
                    ua.answer(self.calls[key], command.sdp, now)
                elif isinstance(command, RejectOffer):
                    ua.reject(self.calls[key], command.status, now)
                elif isinstance(command, Reinvite):
                    ua.reinvite(self.calls[key], command.sdp, now)
                elif isinstance(command, Hangup):
                    ua.hangup(self.calls[key], now)
                elif isinstance(command, (StartMedia, StartAudio)) and key not in self.media_started:
                    self.media_started.add(key)  # the transmit engine runs the fax
                    self.at(now + self.fax_seconds, lambda t: self.fax_ended(key, t))
                elif isinstance(command, StopMedia):
                    self.at(now + 0.5, lambda t: self.fax_ended(key, t))
            except (LocalProtocolError, SipParseError) as exc:  # ua.invite parses the URI
                queue = core.command_failed(command, str(exc), now)

    def invites(self) -> list:
        """Our dialog-creating INVITEs as sent (retransmissions and re-INVITEs left out)."""
        seen: dict[str, object] = {}
        for s in self.net.sent_by("gw", "INVITE"):
            message = s.message
            if message.to.tag is None:
                seen.setdefault(message.headers.get("CSeq"), s)
        return list(seen.values())


def far_end(h: OutboundHarness, *, answer: bytes | None = PEER_T38, status: int | None = None,
            ring_for: float = 1.0, reinvite_to_t38_after: float | None = None,
            accept_reinvites: bool = True) -> None:
    """The peer's script: ring (180) for ``ring_for`` s, then answer with ``answer`` or
    refuse with ``status`` (``answer=None`` and no status: ring for ever)."""

    def on_event(node, event, now):
        if isinstance(event, InviteReceived):
            call = event.call
            if status is not None and ring_for == 0:
                node.ua.reject(call, status, now)
                return
            node.ua.ring(call, now)
            if status is not None:
                h.at(now + ring_for, lambda t: node.ua.reject(call, status, t))
            elif answer is not None:
                h.at(now + ring_for, lambda t: node.ua.answer(call, answer, t))
        elif isinstance(event, CallEstablished) and reinvite_to_t38_after is not None:
            h.at(now + reinvite_to_t38_after, lambda t: node.ua.reinvite(event.call, PEER_T38, t))
        elif isinstance(event, MediaChanged) and event.needs_answer:
            if accept_reinvites:
                node.ua.answer(event.call, PEER_T38 if b"m=image" in event.remote_sdp else PEER_AUDIO, now)
            else:
                node.ua.reject(event.call, 488, now)

    h.peer.on_event = on_event


def assert_fax_sent_and_hung_up(h: OutboundHarness, key: str) -> None:
    core = h.cores[key]
    assert core.state is State.DONE, (core, h.commands)
    assert not h.of(CallFailed, key) and not [c for c in h.of(StopMedia, key) if c.failed], h.commands
    assert h.of(Hangup, key) and h.net.sent_by("gw", "BYE")
    assert [e.reason for e in h.peer_events(CallTerminated)] == ["remote hangup"], h.peer.events


@pytest.mark.parametrize("loss,seed", LOSSY)
def test_dial_t38_first_is_answered_with_t38_and_we_hang_up_after_the_fax(loss, seed):
    h = OutboundHarness(loss=loss, seed=seed, initial_offer="t38")
    far_end(h, answer=PEER_T38, ring_for=1.0)
    key = h.place()
    h.run(60)
    [invite] = h.invites()
    assert b"m=image" in invite.data and b"m=audio" not in invite.data
    assert str(invite.message.uri) == PEER_URI
    [received] = h.peer_events(InviteReceived)
    assert b"T38FaxVersion:3" in received.offer  # we offer our highest version
    assert 180 in h.cores[key].progress and h.notes("call_progress")[0].fields["status"] == 180
    [start] = h.of(StartMedia)
    assert start.t38.remote == ("127.0.0.2", 40002) and start.t38.version == 0
    assert start.t38.max_bitrate == 9600 and start.t38.peer_max_datagram == 200
    assert not h.of(Reinvite)
    [answered] = h.notes("call_answered")
    assert answered.fields["media"] == "t38"
    assert_fax_sent_and_hung_up(h, key)
    [bye] = h.net.sent_by("gw", "BYE")[:1]
    assert bye.time >= 1.0 + h.fax_seconds
    assert any(s.dropped for s in h.net.trace) == (loss > 0)


def test_dial_audio_first_then_the_peers_reinvite_to_t38():
    h = OutboundHarness(t38_reinvite_after=-1)  # initial_offer defaults to "audio"
    far_end(h, answer=PEER_AUDIO, reinvite_to_t38_after=2.0)
    key = h.place()
    h.run(60)
    [invite] = h.invites()
    assert b"m=audio" in invite.data and b"m=image" not in invite.data
    assert b"PCMU/8000" in invite.data and b"PCMA/8000" in invite.data
    assert h.notes("call_answered")[0].fields["media"] == "audio"
    assert not h.of(Reinvite)  # < 0: we wait for the peer's
    assert [n.fields["to"] for n in h.notes("peer_reinvite")] == ["t38"]
    [start] = h.of(StartMedia)
    assert start.t38.remote == ("127.0.0.2", 40002)
    # Our 200 to the peer's re-INVITE carries our T.38 answer.
    assert any(s.first_line.startswith("SIP/2.0 200") and b"m=image" in s.data for s in h.net.sent_by("gw"))
    assert_fax_sent_and_hung_up(h, key)


@pytest.mark.parametrize("loss,seed", LOSSY)
def test_dial_audio_first_then_our_reinvite_to_t38(loss, seed):
    h = OutboundHarness(loss=loss, seed=seed, t38_reinvite_after=1.5)
    far_end(h, answer=PEER_AUDIO)  # never re-INVITEs by itself
    key = h.place()
    h.run(80)
    [reinvite] = h.of(Reinvite)
    assert b"m=image" in reinvite.sdp
    ok = [s for s in h.net.sent_by("peer", "SIP/2.0 200") if b"m=audio" in s.data and not s.dropped][0]
    first_reinvite = [s for s in h.net.sent_by("gw", "INVITE") if b"m=image" in s.data][0]
    assert first_reinvite.time >= ok.time + 1.5
    assert h.notes("t38_reinvite_accepted")
    [start] = h.of(StartMedia)
    assert start.t38.remote == ("127.0.0.2", 40002)
    assert_fax_sent_and_hung_up(h, key)
    assert any(s.dropped for s in h.net.trace) == (loss > 0)


@pytest.mark.parametrize("status,cause,retryable", [
    (486, "busy", True), (600, "busy", True), (404, "not_found", False), (484, "not_found", False),
    (403, "forbidden", False), (480, "no_answer", True), (408, "no_answer", True),
    (503, "server_error", True), (500, "server_error", True), (603, "declined", False),
    (488, "not_acceptable", False),
])
def test_a_refused_dial_is_a_call_failed_with_its_cause(status, cause, retryable):
    h = OutboundHarness()
    far_end(h, status=status, ring_for=0.5)
    key = h.place()
    h.run(40)
    [failed] = h.of(CallFailed)
    assert (failed.cause, failed.status, failed.retryable) == (cause, status, retryable)
    assert f"(SIP {status})" in failed.reason
    assert not h.of(StartMedia) and not h.of(StopMedia) and not h.of(Hangup)
    core = h.cores[key]
    assert core.state is State.DONE and core.next_deadline() is None
    # RFC 3261 17.1.1.3: our transaction ACKed the final response.
    assert [s for s in h.net.sent_by("gw", "ACK")]


# Seeds whose losses hit the INVITE, the 486 and the ACK (seen in the trace).
@pytest.mark.parametrize("loss,seed", [(0.3, 4), (0.3, 13)])
def test_busy_486_with_loss(loss, seed):
    h = OutboundHarness(loss=loss, seed=seed)
    far_end(h, status=486, ring_for=0)
    h.place()
    h.run(60)
    lost = {s.first_line.split()[0] if not s.first_line.startswith("SIP/") else s.first_line[:11]
            for s in h.net.trace if s.dropped}
    assert {"INVITE", "SIP/2.0 486"} <= lost, lost
    [failed] = h.of(CallFailed)
    assert failed.cause == "busy" and failed.status == 486 and failed.retryable
    assert [e.status for e in h.peer_events(CallTerminated)] == [486]


def test_404_is_not_retried():
    h = OutboundHarness()
    far_end(h, status=404, ring_for=0)
    h.place()
    h.run(30)
    [failed] = h.of(CallFailed)
    assert failed.cause == "not_found" and not failed.retryable
    assert failed.reason == "the number does not exist or is incomplete (SIP 404)"


def test_no_answer_while_ringing_cancels_after_the_ring_timeout():
    h = OutboundHarness(ring_timeout=12.0)
    far_end(h, answer=None)  # rings for ever
    key = h.place()
    h.run(60)
    [cancel] = h.net.sent_by("gw", "CANCEL")[:1]
    [invite] = h.invites()
    assert invite.time + 12.0 <= cancel.time < invite.time + 12.5
    [failed] = h.of(CallFailed)
    assert failed.cause == "no_answer" and failed.retryable and failed.status is None
    assert "not answered within 12 s" in failed.reason
    assert h.notes("call_failed")[0].fields["status"] == 487
    assert [e.status for e in h.peer_events(CallTerminated)] == [487]
    assert h.cores[key].state is State.DONE and not h.of(StartMedia)


def test_no_answer_from_nobody_at_all_is_the_invite_timeout():
    h = OutboundHarness()
    key = h.place("sip:fax@127.0.0.9:5060")  # nothing there: RFC 3261 Timer B (64*T1)
    h.run(60)
    [failed] = h.of(CallFailed)
    assert failed.cause == "no_answer" and failed.status == 408 and failed.retryable
    [ended_at] = [t for t, k, c in h.commands if isinstance(c, CallFailed)]
    assert 31.0 <= ended_at <= 33.0
    assert h.cores[key].state is State.DONE


def test_shutdown_while_dialing_cancels_and_is_retryable():
    h = OutboundHarness()
    far_end(h, answer=None)
    key = h.place()
    h.run(3)
    h.execute(key, h.cores[key].shutdown_started(h.net.now), h.net.now)
    h.run(30)
    [failed] = h.of(CallFailed)
    assert failed.cause == "shutdown" and failed.retryable
    assert h.net.sent_by("gw", "CANCEL")


@pytest.mark.parametrize("loss,seed", LOSSY)
def test_digest_challenge_from_the_trunk_is_answered_with_the_trunks_credentials(loss, seed):
    trunk = TrunkStub(registrar="sip:127.0.0.2:5060", username="fax", password="s3cret")
    h = OutboundHarness(loss=loss, seed=seed, initial_offer="t38",
                        peer_config={"allow_from": ("127.0.0.2/32",), "auth_users": {"fax": "s3cret"}})
    far_end(h, answer=PEER_T38)
    key = h.place(plan_dial("+1 555 0100", [trunk], allow_direct_uri=False))
    h.run(60)
    challenged = [s for s in h.net.sent_by("peer", "SIP/2.0 401")]
    assert challenged
    authorised = [s for s in h.net.sent_by("gw", "INVITE") if b"Authorization:" in s.data]
    assert authorised and b'username="fax"' in authorised[0].data
    [received] = h.peer_events(InviteReceived)
    assert received.request_uri == "sip:+15550100@127.0.0.2:5060"
    assert h.of(StartMedia)
    assert_fax_sent_and_hung_up(h, key)
    assert any(s.dropped for s in h.net.trace) == (loss > 0)


def test_wrong_trunk_password_is_a_clear_failure():
    trunk = TrunkStub(registrar="sip:127.0.0.2:5060", username="fax", password="wrong")
    h = OutboundHarness(peer_config={"allow_from": ("127.0.0.2/32",), "auth_users": {"fax": "s3cret"}})
    far_end(h, answer=PEER_T38)
    h.place(plan_dial("5550100", [trunk], allow_direct_uri=False))
    h.run(60)
    [failed] = h.of(CallFailed)
    assert failed.cause == "forbidden" and failed.status == 403 and not failed.retryable
    assert not h.of(StartMedia) and not h.peer_events(InviteReceived)


def test_number_via_the_trunk_goes_to_the_proxy_with_our_from():
    """The Request-URI names the carrier's domain; the INVITE goes to the proxy."""
    trunk = TrunkStub(registrar="sip:carrier.example", proxy="sip:127.0.0.2:5060;transport=udp",
                      from_user="5550199", from_domain="fax.example.org")
    h = OutboundHarness(initial_offer="t38")
    far_end(h, answer=PEER_T38)
    key = h.place(plan_dial("+1 (555) 010-0", [trunk], allow_direct_uri=False))
    h.run(60)
    [received] = h.peer_events(InviteReceived)
    assert received.request_uri == "sip:+15550100@carrier.example"
    assert "<sip:5550199@fax.example.org>" in received.from_
    assert h.cores[key].facts.did == "+15550100" and h.cores[key].facts.trunk == "carrier"
    assert_fax_sent_and_hung_up(h, key)


def test_our_t38_reinvite_refused_fails_the_outbound_call_without_media():
    h = OutboundHarness(t38_reinvite_after=0.5)
    far_end(h, answer=PEER_AUDIO, accept_reinvites=False)
    key = h.place()
    h.run(60)
    [failed] = h.of(CallFailed)
    assert failed.cause == "no_t38" and not failed.retryable and failed.status == 488
    assert not h.of(StopMedia) and not h.of(StartMedia)  # no media session ever ran
    assert h.of(Hangup) and h.net.sent_by("gw", "BYE")
    assert h.cores[key].state is State.DONE


def test_far_end_hanging_up_on_audio_is_remote_hangup():
    h = OutboundHarness(t38_reinvite_after=-1)
    far_end(h, answer=PEER_AUDIO)

    def hang_up_soon(node, event, now):
        if isinstance(event, InviteReceived):
            node.ua.answer(event.call, PEER_AUDIO, now)
        elif isinstance(event, CallEstablished):
            h.at(now + 2.0, lambda t: node.ua.hangup(event.call, t))

    h.peer.on_event = hang_up_soon
    key = h.place()
    h.run(30)
    [failed] = h.of(CallFailed)
    assert failed.cause == "remote_hangup" and not failed.retryable
    assert h.cores[key].state is State.DONE and h.cores[key].next_deadline() is None


def test_an_audio_answer_to_a_t38_offer_fails_the_call():
    h = OutboundHarness(initial_offer="t38")
    far_end(h, answer=PEER_AUDIO)
    h.place()
    h.run(30)
    [failed] = h.of(CallFailed)
    assert failed.cause == "no_t38" and h.of(Hangup)


@pytest.mark.parametrize("uri", ["tel:+15550100", "sip:fax@[not-an-address"])
def test_a_uri_the_ua_cannot_call_is_bad_target(uri):
    h = OutboundHarness()
    key = h.place(uri)
    [failed] = h.of(CallFailed)
    assert failed.cause == "bad_target" and not failed.retryable
    assert h.cores[key].state is State.DONE and not h.net.sent_by("gw")


@pytest.mark.parametrize("status,reason,cause", [
    (None, "transport error", "unreachable"), (None, "timeout", "no_answer"), (401, "", "auth_failed"),
    (407, "", "auth_failed"), (415, "", "not_acceptable"), (599, "", "server_error"), (604, "", "declined"),
    (606, "", "declined"), (302, "", "rejected"), (420, "", "rejected"),
])
def test_dial_failure_classifies_every_final_status(status, reason, cause):
    failed = dial_failure(status, reason)
    assert failed.cause == cause and failed.retryable == (cause in RETRYABLE_CAUSES)
    assert failed.reason.startswith(FAILURE_CAUSES[cause])


def test_183_session_progress_is_progress_and_the_call_keeps_dialing():
    """100 is absorbed by the UA; 180 and 183 (with early-media SDP, which a fax gateway
    does not use) are reported as progress and the ring timer keeps running."""
    h = OutboundHarness(ring_timeout=30.0)
    far_end(h, answer=None)
    key = h.place()
    h.run(2)
    core = h.cores[key]
    h.execute(key, core.sip_event(CallProgressed(h.calls[key], 183, "Session Progress", PEER_AUDIO), h.net.now),
              h.net.now)
    assert core.progress == [180, 183] and core.state is State.DIALING
    assert [n.fields["early_media"] for n in h.notes("call_progress")] == [False, True]
    assert core.next_deadline() == pytest.approx(30.0, abs=0.1)
    assert not h.net.sent_by("gw", "SIP/2.0 1")  # we never answer our own INVITE's provisionals


# ----------------------------------------------------------------- audio fallback ([t38] audio_fallback)

PEER_PCMA_ONLY = (
    b"v=0\r\no=peer 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 49172 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


@pytest.mark.parametrize("loss,seed", LOSSY)
def test_audio_fallback_a_refused_t38_reinvite_keeps_the_fax_on_g711(loss, seed):
    h = Harness(loss=loss, seed=seed, t38_reinvite_after=0.0, audio_fallback=True)
    peer_answers_t38_reinvites(h, status=488)
    h.dial(PEER_AUDIO)
    h.run(60)
    key = next(iter(h.cores))
    [audio] = [c.audio for c in h.of(StartAudio)]
    assert (audio.remote, audio.payload_type, audio.law, audio.media) == (("127.0.0.2", 49170), 0, "ulaw", "g711u")
    assert audio.expected_host == "127.0.0.2" and audio.media_latching == "strict"
    assert len(h.of(Reinvite)) == 1 and h.notes("t38_reinvite_refused")[0].fields["status"] == 488
    assert not h.of(StopMedia) and not h.of(StartMedia)  # the fax went on as audio to its end
    assert h.notes("t38_reinvite_refused")[0].level == "warning"
    assert_fax_call_ended_by_us(h, key)


def test_without_audio_fallback_the_audio_leg_starts_nothing():
    h = Harness(t38_reinvite_after=0.0)
    peer_answers_t38_reinvites(h, status=488)
    h.dial(PEER_AUDIO)
    h.run(60)
    assert not h.of(StartAudio)
    [stop] = h.of(StopMedia)
    assert stop.failed


def test_audio_fallback_no_t38_within_the_wait_goes_on_as_audio():
    h = Harness(t38_reinvite_after=-1, audio_fallback=True, fax_seconds=90.0)
    h.dial(PEER_PCMA_ONLY)
    h.run(200)
    [audio] = [c.audio for c in h.of(StartAudio)]
    assert (audio.payload_type, audio.media, audio.telephone_event) == (8, "g711a", 101)
    assert h.notes("t38_not_negotiated") and not h.of(StopMedia)
    [bye] = h.net.sent_by("gw", "BYE")[:1]
    [ok] = h.net.sent_by("gw", "SIP/2.0 200")[:1]
    assert bye.time >= ok.time + 90.0  # ended by the fax, not by the 60 s T.38 wait
    assert_fax_call_ended_by_us(h, next(iter(h.cores)))


def test_audio_fallback_the_peers_t38_reinvite_mid_fax_moves_the_same_call_to_udptl():
    h = Harness(t38_reinvite_after=-1, audio_fallback=True)
    call = h.dial(PEER_AUDIO)

    def reinvite_after_answer(node, event, now):
        if isinstance(event, CallAnswered):
            h.at(now + 5.0, lambda t: node.ua.reinvite(call, PEER_T38, t))

    h.peer.on_event = reinvite_after_answer
    h.run(60)
    key = next(iter(h.cores))
    kinds = [type(c).__name__ for _, k, c in h.commands if k == key and isinstance(c, (StartAudio, StartMedia))]
    assert kinds == ["StartAudio", "StartMedia"], kinds
    assert h.of(StartMedia)[0].t38.remote == ("127.0.0.2", 40002)
    assert h.of(Reroute) == [] and len(h.notes("audio_fax_selected")) == 1
    assert_fax_call_ended_by_us(h, key)


def test_audio_fallback_outbound_far_end_refusing_t38_is_sent_to_as_audio():
    h = OutboundHarness(t38_reinvite_after=0.5, audio_fallback=True)
    far_end(h, answer=PEER_AUDIO, accept_reinvites=False)
    key = h.place()
    h.run(60)
    assert not h.of(CallFailed)
    [audio] = [c.audio for c in h.of(StartAudio)]
    assert audio.remote == ("127.0.0.2", 49170) and audio.payload_type == 0
    assert h.notes("t38_reinvite_refused") and not h.of(StopMedia)
    assert h.cores[key].state is State.DONE and h.net.sent_by("gw", "BYE")


def test_audio_fallback_outbound_far_end_hanging_up_mid_audio_fax_stops_the_media():
    h = OutboundHarness(t38_reinvite_after=-1, audio_fallback=True)

    def hang_up_soon(node, event, now):
        if isinstance(event, InviteReceived):
            node.ua.answer(event.call, PEER_AUDIO, now)
        elif isinstance(event, CallEstablished):
            h.at(now + 2.0, lambda t: node.ua.hangup(event.call, t))

    h.peer.on_event = hang_up_soon
    key = h.place()
    h.run(30)
    assert not h.of(CallFailed)  # the media ran: the session reports how the fax ended
    [stop] = h.of(StopMedia)
    assert not stop.failed and stop.reason == "remote hangup"
    assert h.cores[key].state is State.DONE
