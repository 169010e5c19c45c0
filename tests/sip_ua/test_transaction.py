"""RFC 3261 section 17 transactions in simulated time: retransmission, absorption, timers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import LocalProtocolError
from sip.message import make_response
from sip.transaction import (
    TABLES,
    TIMERS_BY_STATE,
    AckReceived,
    Input,
    Kind,
    ResponseReceived,
    SendMessage,
    State,
    TimerSettings,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
)
from tests.sip_ua.wire import invite_bytes, msg, request_bytes, response_bytes

T1, T2, T4 = 0.5, 4.0, 5.0


def sent(outputs):
    return [o.message for o in outputs if isinstance(o, SendMessage)]


def run_timers(tx, until, step_outputs=None):
    """Advance simulated time deadline by deadline; return [(time, outputs)]."""
    fired = []
    for _ in range(1000):
        deadline = tx.next_deadline()
        if deadline is None or deadline > until:
            break
        fired.append((deadline, tx.handle_timer(deadline)))
    return fired


def client(kind_request: bytes, *, reliable=False):
    request = msg(kind_request)
    kind = Kind.CLIENT_INVITE if request.method == "INVITE" else Kind.CLIENT_NON_INVITE
    tx = Transaction(kind, request, "peer", reliable=reliable)
    return tx, tx.start(0.0)


# ----------------------------------------------------------------- client INVITE


def test_invite_client_timer_a_doubles_until_timer_b():
    tx, first = client(invite_bytes())
    assert len(sent(first)) == 1
    fired = run_timers(tx, 100.0)
    resend_times = [t for t, outs in fired if sent(outs)]
    # 17.1.1.2: A starts at T1 and doubles; B = 64*T1 ends the transaction.
    assert resend_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    last_time, last = fired[-1]
    assert last_time == 64 * T1
    assert any(isinstance(o, TransactionTimedOut) and o.timer == "B" for o in last)
    assert tx.state is State.TERMINATED and tx.next_deadline() is None


def test_invite_client_provisional_stops_retransmission_and_error_is_acked():
    request = invite_bytes()
    tx, _ = client(request)
    outs = tx.receive_response(msg(response_bytes(180, "Ringing", request)), 0.2)
    assert [type(o) for o in outs] == [ResponseReceived]
    assert tx.state is State.PROCEEDING and tx.next_deadline() is None
    busy = msg(response_bytes(486, "Busy Here", request, to_tag="b0b"))
    outs = tx.receive_response(busy, 1.0)
    (ack,) = sent(outs)
    # 17.1.1.3: ACK with the INVITE's branch, Call-ID, From and CSeq number; To from the response.
    assert ack.method == "ACK"
    assert ack.vias[0].branch == "z9hG4bKnashds8"
    assert ack.cseq == (314159, "ACK")
    assert ack.to.tag == "b0b"
    assert str(ack.uri) == "sip:bob@biloxi.example.com"
    assert any(isinstance(o, ResponseReceived) and o.response.status == 486 for o in outs)
    # A retransmitted 486 is ACKed again but not passed up.
    again = tx.receive_response(busy, 2.0)
    assert [m.method for m in sent(again)] == ["ACK"]
    assert not any(isinstance(o, ResponseReceived) for o in again)
    # Timer D (>= 32 s on UDP) ends the transaction.
    assert tx.next_deadline() == pytest.approx(1.0 + 32.0)
    assert tx.handle_timer(32.0) == []  # early: nothing
    outs = tx.handle_timer(33.0)
    assert tx.state is State.TERMINATED and any(isinstance(o, TransactionTerminated) for o in outs)


def test_invite_client_2xx_goes_to_accepted_and_passes_retransmissions_up():
    request = invite_bytes()
    tx, _ = client(request)
    ok = msg(response_bytes(200, "OK", request))
    outs = tx.receive_response(ok, 0.1)
    assert tx.state is State.ACCEPTED and not sent(outs)  # the TU ACKs a 2xx, not the tx
    outs = tx.receive_response(ok, 0.6)
    assert [type(o) for o in outs] == [ResponseReceived]  # RFC 6026 7.2
    assert tx.next_deadline() == pytest.approx(0.1 + 64 * T1)  # Timer M


def test_invite_client_reliable_has_no_timer_a():
    tx, _ = client(invite_bytes(), reliable=True)
    assert set(tx.armed_timers()) == {"B"}


# ----------------------------------------------------------------- client non-INVITE


def test_non_invite_client_timer_e_caps_at_t2_and_f_times_out():
    tx, _ = client(request_bytes("OPTIONS"))
    fired = run_timers(tx, 100.0)
    resend_times = [t for t, outs in fired if sent(outs)]
    intervals = [round(b - a, 6) for a, b in zip([0.0] + resend_times, resend_times)]
    # 17.1.2.2: E = T1, 2T1, 4T1, ... capped at T2.
    assert intervals[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert max(intervals) == T2
    end_time, end = fired[-1]
    assert end_time == 64 * T1
    assert any(isinstance(o, TransactionTimedOut) and o.timer == "F" for o in end)


def test_non_invite_client_proceeding_retransmits_at_t2():
    request = request_bytes("BYE")
    tx, _ = client(request)
    tx.receive_response(msg(response_bytes(100, "Trying", request, to_tag=None)), 0.1)
    assert tx.state is State.PROCEEDING
    fired = run_timers(tx, 20.0)
    times = [t for t, outs in fired if sent(outs)]
    assert times[0] == 0.5  # E armed at start still fires
    assert all(round(b - a, 6) == T2 for a, b in zip(times, times[1:]))


def test_non_invite_client_final_response_and_timer_k():
    request = request_bytes("BYE")
    tx, _ = client(request)
    ok = msg(response_bytes(200, "OK", request))
    outs = tx.receive_response(ok, 0.3)
    assert any(isinstance(o, ResponseReceived) for o in outs)
    assert tx.armed_timers() == {"K": pytest.approx(0.3 + T4)}
    assert tx.receive_response(ok, 1.0) == []  # absorbed
    tx_r, _ = client(request, reliable=True)
    tx_r.receive_response(ok, 0.3)
    assert tx_r.armed_timers() == {"K": 0.3}  # 17.1.2.2: K is zero on reliable transports


# ----------------------------------------------------------------- server INVITE


def server(request_data: bytes, *, reliable=False):
    request = msg(request_data)
    kind = Kind.SERVER_INVITE if request.method == "INVITE" else Kind.SERVER_NON_INVITE
    return Transaction(kind, request, "peer", reliable=reliable), request


def test_invite_server_error_retransmitted_by_timer_g_until_ack():
    tx, request = server(invite_bytes())
    trying = make_response(request, 100)
    assert sent(tx.send_response(trying, 0.0)) == [trying]
    # A retransmitted INVITE in Proceeding gets the last provisional again.
    assert sent(tx.receive_request(request, 0.3)) == [trying]
    busy = make_response(request, 486, to_tag="x1")
    tx.send_response(busy, 1.0)
    fired = run_timers(tx, 1.0 + 15.6)
    times = [round(t - 1.0, 6) for t, outs in fired if sent(outs)]
    # 17.2.1: G = T1, doubling up to T2.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    ack = msg(request_bytes("ACK", "z9hG4bKnashds8", cseq=314159, to_tag="x1"))
    outs = tx.receive_request(ack, 17.0)
    assert tx.state is State.CONFIRMED and outs == []
    assert tx.armed_timers() == {"I": pytest.approx(17.0 + T4)}
    assert tx.receive_request(ack, 18.0) == []  # ACK retransmissions absorbed
    assert sent(tx.receive_request(request, 18.0)) == []


def test_invite_server_timer_h_when_ack_never_comes():
    tx, request = server(invite_bytes())
    tx.send_response(make_response(request, 603, to_tag="x"), 0.0)
    fired = run_timers(tx, 100.0)
    assert fired[-1][0] == 64 * T1
    assert any(isinstance(o, TransactionTimedOut) and o.timer == "H" for o in fired[-1][1])


def test_invite_server_accepted_lets_tu_retransmit_2xx_and_absorbs_invite():
    tx, request = server(invite_bytes())
    ok = make_response(request, 200, to_tag="t")
    assert sent(tx.send_response(ok, 0.0)) == [ok]
    assert tx.state is State.ACCEPTED
    assert sent(tx.receive_request(request, 0.2)) == []  # RFC 6026 7.1: absorbed
    assert sent(tx.send_response(ok, 0.5)) == [ok]  # the TU's 13.3.1.4 retransmission
    ack = msg(request_bytes("ACK", "z9hG4bKnashds8", cseq=314159, to_tag="t"))
    assert [type(o) for o in tx.receive_request(ack, 0.6)] == [AckReceived]
    with pytest.raises(LocalProtocolError):
        tx.send_response(make_response(request, 486, to_tag="t"), 0.7)


def test_server_non_invite_absorbs_then_repeats_final():
    tx, request = server(request_bytes("OPTIONS"))
    assert tx.receive_request(request, 0.1) == []  # Trying: absorbed
    ok = make_response(request, 200, to_tag="t")
    tx.send_response(ok, 0.2)
    assert sent(tx.receive_request(request, 0.9)) == [ok]
    assert tx.armed_timers() == {"J": pytest.approx(0.2 + 64 * T1)}
    with pytest.raises(LocalProtocolError):
        tx.send_response(ok, 1.0)


def test_superseded_timer_is_a_no_op():
    request = invite_bytes()
    tx, _ = client(request)
    stale = tx.next_deadline()
    tx.receive_response(msg(response_bytes(183, "Session Progress", request)), 0.1)
    assert tx.handle_timer(stale) == []
    assert tx.handle_timer(1000.0) == []  # Proceeding has no timers at all


# ----------------------------------------------------------------- the layer


def test_layer_matches_by_branch_and_method():
    layer = TransactionLayer()
    invite = msg(invite_bytes("z9hG4bKaaa"))
    tx, _ = layer.start_client(invite, "peer", reliable=False, now=0.0)
    assert layer.match_response(msg(response_bytes(180, "Ringing", invite_bytes("z9hG4bKaaa")))) is tx
    # A CANCEL response shares the branch but not the method (17.1.3).
    cancel = request_bytes("CANCEL", "z9hG4bKaaa", cseq=314159)
    assert layer.match_response(msg(response_bytes(200, "OK", cancel))) is None
    assert layer.match_response(msg(response_bytes(180, "Ringing", invite_bytes("z9hG4bKbbb")))) is None


def test_layer_server_matching_ack_cancel_and_sent_by():
    layer = TransactionLayer()
    invite = msg(invite_bytes("z9hG4bKsrv"))
    stx = layer.create_server(invite, "peer", reliable=False)
    assert layer.match_request(msg(invite_bytes("z9hG4bKsrv"))) is stx
    # Same branch from another sent-by is another transaction (17.2.3).
    assert layer.match_request(msg(invite_bytes("z9hG4bKsrv", sent_by="other.example.com"))) is None
    ack = msg(request_bytes("ACK", "z9hG4bKsrv", cseq=314159, to_tag="t"))
    assert layer.match_request(ack) is stx
    cancel = msg(request_bytes("CANCEL", "z9hG4bKsrv", cseq=314159))
    assert layer.match_request(cancel) is None
    assert layer.find_server_invite(cancel) is stx


def test_layer_rfc2543_requests_without_magic_cookie_still_match():
    layer = TransactionLayer()
    invite = msg(invite_bytes("oldbranch1"))
    stx = layer.create_server(invite, "peer", reliable=False)
    assert layer.match_request(msg(invite_bytes("oldbranch1"))) is stx


def test_layer_forgets_terminated_transactions():
    layer = TransactionLayer()
    request = request_bytes("OPTIONS")
    tx, _ = layer.start_client(msg(request), "peer", reliable=True, now=0.0)
    tx.receive_response(msg(response_bytes(200, "OK", request)), 0.1)
    layer.handle_timer(0.1)  # K = 0 on TCP
    assert len(layer) == 0


# ----------------------------------------------------------------- the tables


ALL_INPUTS = list(Input)


def test_every_table_state_is_reachable_and_timers_declared():
    for kind, table in TABLES.items():
        for state, row in table.items():
            assert state in TIMERS_BY_STATE[kind]
            for transition in row.values():
                assert transition.next_state is State.TERMINATED or transition.next_state in table


@settings(deadline=None, max_examples=150)
@given(
    kind=st.sampled_from(list(Kind)),
    reliable=st.booleans(),
    steps=st.lists(st.tuples(st.sampled_from(["1xx", "2xx", "4xx", "again", "ack", "tu1", "tu2", "tu4", "timer", "transport"]), st.floats(0, 10)), max_size=25),
)
def test_any_input_sequence_keeps_the_machine_sound(kind, reliable, steps):
    request_data = invite_bytes() if kind in (Kind.CLIENT_INVITE, Kind.SERVER_INVITE) else request_bytes("BYE")
    request = msg(request_data)
    tx = Transaction(kind, request, "peer", reliable=reliable, timers=TimerSettings())
    now = 0.0
    if kind in (Kind.CLIENT_INVITE, Kind.CLIENT_NON_INVITE):
        tx.start(now)
    responses = {s: msg(response_bytes(s, "X", request_data)) for s in (180, 200, 486)}
    for action, dt in steps:
        now += dt
        try:
            if action in ("1xx", "2xx", "4xx"):
                tx.receive_response(responses[{"1xx": 180, "2xx": 200, "4xx": 486}[action]], now)
            elif action == "again":
                tx.receive_request(request, now)
            elif action == "ack":
                tx.receive_request(msg(request_bytes("ACK", "z9hG4bKnashds8", cseq=314159, to_tag="a6c85cf")), now)
            elif action.startswith("tu"):
                status = {"tu1": 180, "tu2": 200, "tu4": 486}[action]
                tx.send_response(make_response(request, status, to_tag="a6c85cf"), now)
            elif action == "timer":
                tx.handle_timer(now)
            else:
                tx.transport_failed(now)
        except LocalProtocolError:
            # Only our own (TU) misuse may raise.
            assert action.startswith("tu")
        # Armed timers always belong to the state; a terminated tx has none.
        if tx.state is State.TERMINATED:
            assert tx.next_deadline() is None
        else:
            allowed = {t.value for t in TIMERS_BY_STATE[kind][tx.state]}
            assert set(tx.armed_timers()) <= allowed
            if reliable:
                assert not set(tx.armed_timers()) & {"A", "E", "G"}


def test_layer_next_deadline_equals_the_earliest_live_timer():
    layer = TransactionLayer()
    requests = [request_bytes("OPTIONS", branch=f"z9hG4bKl{i}") for i in range(6)] + [invite_bytes(f"z9hG4bKi{i}") for i in range(3)]
    txs = [layer.start_client(msg(data), "peer", reliable=False, now=i * 0.1)[0] for i, data in enumerate(requests)]

    def brute():
        deadlines = [d for tx in txs if not tx.terminated and (d := tx.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    now = 0.0
    assert layer.next_deadline() == brute()
    for step, tx in enumerate(txs):
        now += 0.3
        layer.handle_timer(now)
        assert layer.next_deadline() == brute()
        data = requests[step]
        tx.receive_response(msg(response_bytes(200 if step % 2 else 486, "X", data)), now)
        layer.collect()
        assert layer.next_deadline() == brute()
    layer.handle_timer(1000.0)
    assert layer.next_deadline() is None and len(layer) == 0
