"""Hostile input to the UA core: mutated real messages never raise out of ``receive`` and
never leave calls, transactions or timers behind."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.ua import InviteReceived
from tests.sip_ua.simnet import SimNet
from tests.sip_ua.test_ua import AUDIO, AUDIO_B
from tests.sip_ua.wire import invite_bytes, request_bytes, response_bytes

# Raise for a long local run: T38GW_FUZZ_EXAMPLES=5000 (4,000 ran clean in 13 s).
FUZZ_EXAMPLES = int(os.environ.get("T38GW_FUZZ_EXAMPLES", "300"))

SEEDS = [
    invite_bytes(body=AUDIO, sent_by="127.0.0.9:5090;rport", extra="Session-Expires: 90\r\nSupported: timer\r\n"),
    invite_bytes(branch="z9hG4bKre", to_tag="abc", cseq=9, body=AUDIO, sent_by="127.0.0.9:5090"),
    request_bytes("BYE", to_tag="abc", sent_by="127.0.0.9:5090"),
    request_bytes("CANCEL", branch="z9hG4bKnashds8", cseq=314159, sent_by="127.0.0.9:5090"),
    request_bytes("ACK", branch="z9hG4bKnashds8", cseq=314159, to_tag="abc", sent_by="127.0.0.9:5090"),
    request_bytes("OPTIONS", sent_by="127.0.0.9:5090"),
    request_bytes("UPDATE", to_tag="abc", sent_by="127.0.0.9:5090"),
    response_bytes(200, "OK", invite_bytes()),
]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "dropline", "dupline", "insert"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif op in ("dropline", "dupline"):
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines = lines[:i] + lines[i + 1 :] if op == "dropline" else lines[: i + 1] + lines[i:]
            data = bytearray(b"\r\n".join(lines))
        else:
            i = draw(st.integers(0, len(data)))
            junk = draw(st.sampled_from([b";tag=", b",", b"\"", b"<", b"\r\nVia: x\r\n", b"\r\nCSeq: 1 BYE\r\n", b"\xff", b"\r\nTo: <sip:a@b>;tag=abc\r\n"]))
            data[i:i] = junk
    return bytes(data)


@settings(deadline=None, max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(mutated(), min_size=1, max_size=6))
def test_mutated_messages_never_raise_and_leave_nothing_behind(messages):
    net = SimNet()
    bob = net.add("bob", "127.0.0.2")

    def tu(node, event, now):
        if isinstance(event, InviteReceived):
            node.ua.answer(event.call, AUDIO_B, now)

    bob.on_event = tu
    for data in messages:
        net.inject(data, ("127.0.0.9", 5090), "bob")
        net.run(net.now + 1.0)
    net.run(net.now + 5000.0)
    assert bob.ua.calls == {}
    assert len(bob.ua.transactions) == 0
    assert bob.ua.next_deadline() is None


def test_bare_cr_inside_call_id_is_refused_not_copied():
    # Found by the fuzz test above: a lone CR inside Call-ID passed the parser and later
    # broke the BYE the UA built from it.
    net = SimNet()
    bob = net.add("bob", "127.0.0.2")
    bob.on_event = lambda node, event, now: isinstance(event, InviteReceived) and node.ua.answer(event.call, AUDIO_B, now)
    data = SEEDS[0].replace(b"Call-ID: a84b", b"Call-ID: a\r4b")
    net.inject(data, ("127.0.0.9", 5090), "bob")
    net.run(100.0)
    assert not [e for _, e in bob.events if isinstance(e, InviteReceived)]
    assert bob.ua.stats["parse_errors"] == 1 and bob.ua.calls == {}
