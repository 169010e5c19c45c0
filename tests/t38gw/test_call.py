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

from sip.errors import LocalProtocolError
from sip.sdp import T38Params
from sip.ua import (
    CallAnswered,
    CallTerminated,
    InviteReceived,
    MediaChanged,
    ReinviteFailed,
)
from t38gw.call import (
    T38_WAIT_SECONDS,
    Accept,
    Answer,
    CallControl,
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
    StartMedia,
    State,
    StopMedia,
)
from t38gw.config import Route
from t38gw.negotiation import local_t38_params
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
            load = Load(calls=sum(not core.done for core in self.cores.values()), max_calls=self.max_calls)
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
                elif isinstance(command, (Refuse, RejectOffer)):
                    ua.reject(call, command.status, now)
                elif isinstance(command, Reinvite):
                    ua.reinvite(call, command.sdp, now)
                    if self.on_our_reinvite is not None:
                        self.on_our_reinvite(now)
                elif isinstance(command, Hangup):
                    ua.hangup(call, now)
                elif isinstance(command, StartMedia) and key not in self.media_started:
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
              MediaChanged(our_call, b"garbage", False), MediaChanged(our_call, b"garbage", True)]
    for state in State:
        for event in events:
            core = CallControl(h.settings, sdp_session_id=1)
            core.state = state
            assert isinstance(core.sip_event(event, 0.0), list)
            assert isinstance(core.fax_ended(0.0), list)
            assert isinstance(core.shutdown_started(0.0), list)
    assert call is not None


def test_local_t38_params_follow_the_config():
    params = local_t38_params(versions=[0, 2], max_bitrate=33600, max_datagram=300, error_correction="fec")
    assert params == T38Params(version=2, max_bitrate=14400, rate_management="transferredTCF", max_datagram=300,
                               udp_ec="t38UDPFEC")
