"""A small runnable SIP user agent for interop tests (SIPp) and manual checks.

It runs the real UA core (``sip.ua``) on the real transports (``sip.transport``) with a
scriptable TU policy: answer with T.38 or audio, ring first, re-INVITE to T.38 after a
delay, hang up after a delay, place a call, register to a registrar.  No media flows (the
SDP advertises ports nothing listens on); the gateway service (#6) brings the media.

Every UA event is printed as one JSON line on stdout; the first line is
``{"event": "Listening", "udp": port, ...}``.

Examples::

    .venv/bin/python tools/testua.py --listen udp:127.0.0.1:5070 --answer auto
    .venv/bin/python tools/testua.py --listen udp:127.0.0.1:0 --answer audio --reinvite-t38-after 1
    .venv/bin/python tools/testua.py --listen udp:127.0.0.1:0 --call sip:fax@127.0.0.1:5080 --exit-when-done
    .venv/bin/python tools/testua.py --listen udp:127.0.0.1:0 --register sip:127.0.0.1:5080 \\
        --username fax --password secret --exit-when-done

Exit status: 0 when ``--exit-when-done`` was satisfied (a call ended or a registration
succeeded) or ``--max-time`` ran out without it being asked for; 3 when ``--exit-when-done``
was asked for and ``--max-time`` ran out first; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip import sdp as sdpmod  # noqa: E402
from sip.errors import RemoteProtocolError, SipParseError  # noqa: E402
from sip.registration import Trunk  # noqa: E402
from sip.transport import SipEndpoint, server_ssl_context  # noqa: E402
from sip.ua import (  # noqa: E402
    CallAnswered,
    CallEstablished,
    CallTerminated,
    InviteReceived,
    MediaChanged,
    RegistrationSucceeded,
    ReinviteFailed,
    UAConfig,
    UserAgent,
)

LOCAL_T38 = sdpmod.T38Params(version=0, max_bitrate=14400, max_datagram=400, max_buffer=2000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/testua.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", action="append", default=[], help="transport:host:port (repeatable); default udp:127.0.0.1:5060")
    p.add_argument("--answer", choices=["auto", "t38", "audio", "reject"], default="auto",
                   help="auto: T.38 if offered, else audio; reject: 488")
    p.add_argument("--ring", type=float, default=0.0, help="send 180 and wait this long before answering")
    p.add_argument("--reinvite-t38-after", type=float, default=-1.0,
                   help="after an audio call is up, re-INVITE to T.38 after this many seconds (<0: never)")
    p.add_argument("--hangup-after", type=float, default=-1.0, help="hang up this long after the call is up (<0: never)")
    p.add_argument("--on-t38-rejected", choices=["bye", "keep"], default="bye")
    p.add_argument("--call", help="place an outbound call to this SIP URI at start")
    p.add_argument("--call-t38", action="store_true", help="offer T.38 (not audio) in the outbound INVITE")
    p.add_argument("--register", help="registrar URI to register with")
    p.add_argument("--username", default="")
    p.add_argument("--password", default="")
    p.add_argument("--expires", type=int, default=600)
    p.add_argument("--auth-user", action="append", default=[], help="user:password accepted from outside --allow-from")
    p.add_argument("--allow-from", action="append", default=[], help="CIDR allowed to call without auth (default loopback)")
    p.add_argument("--auth-algorithm", action="append", default=[],
                   help="digest algorithm to challenge with, most preferred first (repeatable; default SHA-256, MD5)")
    p.add_argument("--session-expires", type=int, default=1800)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--exit-when-done", action="store_true", help="exit once a call ended or a registration succeeded")
    p.add_argument("--max-time", type=float, default=60.0, help="exit after this many seconds in any case")
    p.add_argument("--seed", type=int, default=None, help="seed the rng (tags, branches, back-off)")
    return p


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


class TestTU:
    """The scripted TU policy."""

    def __init__(self, args: argparse.Namespace, endpoint: SipEndpoint, nursery: trio.Nursery, rng: random.Random) -> None:
        self.args = args
        self.endpoint = endpoint
        self.ua = endpoint.ua
        self.nursery = nursery
        self.rng = rng
        self.done = trio.Event()
        self.versions: dict[str, list[int]] = {}

    # SDP ----------------------------------------------------------------------

    def _host(self) -> str:
        return self.ua.config.public_host or next(iter(self.ua.config.listen.values()))[0]

    def _next_version(self, call: Any) -> tuple[int, int]:
        session = self.versions.setdefault(call.id, [self.rng.randint(1, 2**31), 0])
        session[1] += 1
        return session[0], session[1]

    def answer_for(self, call: Any, offer_bytes: bytes) -> bytes | None:
        try:
            offer = sdpmod.parse_sdp(offer_bytes)
        except SipParseError:
            return None
        session_id, version = self._next_version(call)
        mode = self.args.answer
        try:
            if mode in ("auto", "t38") and sdpmod.find_t38_stream(offer) is not None:
                answer, _ = sdpmod.make_t38_answer(offer, self._host(), 40000, LOCAL_T38, session_id=session_id, session_version=version)
                return answer.to_bytes()
            if mode in ("auto", "audio", "t38") and sdpmod.find_audio_stream(offer) is not None:
                answer, _ = sdpmod.make_audio_answer(offer, self._host(), 30000, session_id=session_id, session_version=version)
                return answer.to_bytes()
        except RemoteProtocolError:
            return None
        return None

    def t38_offer(self, call: Any) -> bytes:
        session_id, version = self._next_version(call)
        return sdpmod.make_t38_offer(self._host(), 40000, LOCAL_T38, session_id=session_id, session_version=version).to_bytes()

    def audio_offer(self, call_key: str) -> bytes:
        session = self.versions.setdefault(call_key, [self.rng.randint(1, 2**31), 0])
        session[1] += 1
        return sdpmod.make_audio_offer(self._host(), 30000, session_id=session[0], session_version=session[1]).to_bytes()

    # events -------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        record: dict[str, Any] = {"t": round(trio.current_time(), 3), "event": type(event).__name__}
        call = getattr(event, "call", None)
        if call is not None:
            record["call"] = call.id
        for name in ("status", "reason", "needs_answer", "trunk", "expires", "retry_in", "method", "suppressed"):
            if hasattr(event, name):
                record[name] = getattr(event, name)
        source = getattr(event, "source", None)
        if source is not None:
            record["source"] = source.host
        if isinstance(event, MediaChanged):
            record["t38"] = b"m=image" in event.remote_sdp
        emit(record)
        if isinstance(event, InviteReceived):
            self._incoming(event)
        elif isinstance(event, (CallEstablished, CallAnswered)):
            self._call_up(event.call)
        elif isinstance(event, MediaChanged) and event.needs_answer:
            answer = self.answer_for(event.call, event.remote_sdp)
            if answer is None:
                self.endpoint.command(self.ua.reject, event.call, 488)
            else:
                self.endpoint.command(self.ua.answer, event.call, answer)
        elif isinstance(event, ReinviteFailed):
            if self.args.on_t38_rejected == "bye":
                self.endpoint.command(self.ua.hangup, event.call)
        elif isinstance(event, CallTerminated):
            if self.args.exit_when_done:
                self.nursery.start_soon(self._finish)
        elif isinstance(event, RegistrationSucceeded):
            if self.args.exit_when_done:
                self.nursery.start_soon(self._finish)

    async def _finish(self) -> None:
        await trio.sleep(1.0)  # let the last transaction (BYE/ACK/200) complete
        self.done.set()

    def _incoming(self, event: InviteReceived) -> None:
        call = event.call
        if self.args.answer == "reject":
            self.endpoint.command(self.ua.reject, call, 488)
            return
        if not event.offer:
            # Delayed offer (RFC 3261 13.2.1): our offer goes in the 200, the answer in the ACK.
            answer = self.audio_offer(call.id) if self.args.answer == "audio" else self.t38_offer(call)
        else:
            answer = self.answer_for(call, event.offer)
        if answer is None:
            self.endpoint.command(self.ua.reject, call, 488)
            return
        if self.args.ring > 0:
            self.endpoint.command(self.ua.ring, call)
            self.nursery.start_soon(self._answer_later, call, answer)
        else:
            self.endpoint.command(self.ua.answer, call, answer)

    async def _answer_later(self, call: Any, answer: bytes) -> None:
        await trio.sleep(self.args.ring)
        if call.state.value == "offered":
            self.endpoint.command(self.ua.answer, call, answer)

    def _call_up(self, call: Any) -> None:
        is_t38 = call.remote_sdp is not None and b"m=image" in call.remote_sdp and b"m=image 0 " not in call.remote_sdp
        if not is_t38 and self.args.reinvite_t38_after >= 0:
            self.nursery.start_soon(self._later, self.args.reinvite_t38_after, self._reinvite, call)
        if self.args.hangup_after >= 0:
            self.nursery.start_soon(self._later, self.args.hangup_after, self._hangup, call)

    async def _later(self, delay: float, action: Any, call: Any) -> None:
        await trio.sleep(delay)
        if call.state.value != "ended":
            action(call)

    def _reinvite(self, call: Any) -> None:
        self.endpoint.command(self.ua.reinvite, call, self.t38_offer(call))

    def _hangup(self, call: Any) -> None:
        self.endpoint.command(self.ua.hangup, call)


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed) if args.seed is not None else random.SystemRandom()
    listen = args.listen or ["udp:127.0.0.1:5060"]
    config = UAConfig(
        listen={},
        user="t38gw",
        allow_from=tuple(args.allow_from) or ("127.0.0.0/8", "::1/128"),
        auth_users=dict(item.split(":", 1) for item in args.auth_user),
        auth_algorithms=tuple(args.auth_algorithm) or ("SHA-256", "MD5"),
        session_expires=args.session_expires,
        user_agent="t38gw-testua",
    )
    for spec in listen:
        transport, _, rest = spec.partition(":")
        host = rest.rpartition(":")[0].strip("[]")
        config.listen.setdefault(transport.lower(), (host, 0))
    ua = UserAgent(config, rng=rng)
    ssl_context = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    endpoint = SipEndpoint(ua, listen, ssl_context=ssl_context)
    outcome = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve)
        emit({"event": "Listening", **{t: port for t, (_, port) in endpoint.bound.items()}})
        tu = TestTU(args, endpoint, nursery, rng)

        async def pump() -> None:
            async for event in endpoint.events:
                tu.on_event(event)

        nursery.start_soon(pump)
        if args.register:
            trunk = Trunk("registrar", args.register, username=args.username, password=args.password, expires=args.expires)
            endpoint.command(ua.register, trunk)
        if args.call:
            key = "outbound"
            offer = sdpmod.make_t38_offer(tu._host(), 40000, LOCAL_T38, session_id=rng.randint(1, 2**31)).to_bytes() if args.call_t38 else tu.audio_offer(key)
            call = endpoint.command(ua.invite, args.call, offer)
            tu.versions[call.id] = tu.versions.pop(key, [rng.randint(1, 2**31), 1])
        with trio.move_on_after(args.max_time) as timeout:
            await tu.done.wait()
        if timeout.cancelled_caught and args.exit_when_done:
            emit({"event": "Timeout"})
            outcome = 3
        emit({"event": "Stats", **dict(ua.stats), **endpoint.stats})
        nursery.cancel_scope.cancel()
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return trio.run(run, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
