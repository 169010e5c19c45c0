"""Sender -> seeded impairment -> receiver, in simulated time.

The claim: every IFP that redundancy or FEC makes recoverable is delivered exactly once,
in order, with its own bytes; everything else is reported lost with its sequence number.
"Recoverable" is computed here offline, from the whole list of datagrams that arrived,
independently of the receiver's online bookkeeping:

* no error correction: the IFPs whose datagram arrived;
* redundancy depth N: IFP i is recoverable when any of datagrams i .. i+N arrived;
* FEC: start from the arrived primaries and apply every parity entry of every arrived
  datagram that misses exactly one IFP, until nothing changes.

The first and last few datagrams travel a perfect path so that the receiver knows where
the stream starts and ends (it cannot report losses after the last datagram it sees).
"""

from __future__ import annotations

import heapq
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udptl.codec import decode_udptl
from udptl.impairment import Impairment
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

from tests.udptl.test_receiver import make_ifps

INTERVAL = 0.02
SAFE_ENDS = 6


def run_link(ifps, sender, receiver, impairment, *, delay=0.02):
    """Send every IFP; return (events in order, indexes whose datagram arrived, datagrams)."""
    start = sender.seq
    pending: list[tuple[float, int, int, bytes]] = []
    order = 0
    events: list = []
    arrived: set[int] = set()
    sent: list[bytes] = []

    def deliver_until(limit: float) -> None:
        while True:
            deadline = receiver.next_deadline()
            arrival = pending[0][0] if pending else math.inf
            if deadline is None and not pending:
                return
            if min(deadline if deadline is not None else math.inf, arrival) > limit:
                return
            if deadline is not None and deadline <= arrival:
                events.extend(receiver.handle_timer(deadline))
            else:
                when, _, index, datagram = heapq.heappop(pending)
                arrived.add(index)
                events.extend(receiver.datagram_received(datagram, when))

    for index, ifp in enumerate(ifps):
        now = index * INTERVAL
        deliver_until(now)
        datagram = sender.datagram_for(ifp)
        sent.append(datagram)
        if index < SAFE_ENDS or index >= len(ifps) - SAFE_ENDS:
            arrivals = [(now + delay, datagram)]
        else:
            arrivals = impairment.transmit(datagram, now)
        for when, copy in arrivals:
            heapq.heappush(pending, (when, order, index, copy))
            order += 1
    deliver_until(math.inf)
    seq_to_index = {(start + index) & 0xFFFF: index for index in range(len(ifps))}
    return events, arrived, sent, seq_to_index


def recoverable(scheme: str, depth: int, arrived: set[int], sent: list[bytes]) -> set[int]:
    count = len(sent)
    if scheme == "none":
        return set(arrived)
    if scheme == "redundancy":
        return {index for index in range(count) if any(later in arrived for later in range(index, min(count, index + depth + 1)))}
    known = set(arrived)
    parity = []
    for carrier in sorted(arrived):
        fec = decode_udptl(sent[carrier]).fec
        entries = len(fec.entries)
        for m in range(entries):
            parity.append([carrier + m - entries * fec.npackets + step * entries for step in range(fec.npackets)])
    changed = True
    while changed:
        changed = False
        for covered in parity:
            unknown = [index for index in covered if index not in known]
            if len(unknown) == 1:
                known.add(unknown[0])
                changed = True
    return known


def check_delivery(events, ifps, seq_to_index, expected: set[int]) -> tuple[list[int], list[int]]:
    delivered, lost, timeline = [], [], []
    for event in events:
        if isinstance(event, IfpReceived):
            index = seq_to_index[event.seq]
            assert event.raw == ifps[index], f"IFP {index} delivered with the wrong bytes"
            delivered.append(index)
            timeline.append(index)
        else:
            assert isinstance(event, IfpLost)
            indexes = [seq_to_index[seq] for seq in event.seqs]
            lost.extend(indexes)
            timeline.extend(indexes)
    assert timeline == list(range(len(ifps))), "every IFP once, in order, delivered or reported lost"
    assert set(delivered) == expected, (
        f"recoverable but not delivered: {sorted(expected - set(delivered))[:10]}, "
        f"delivered but not recoverable: {sorted(set(delivered) - expected)[:10]}"
    )
    return delivered, lost


SCHEMES = st.one_of(
    st.tuples(st.just("none"), st.just(0), st.just(3), st.just(3)),
    st.tuples(st.just("redundancy"), st.integers(1, 5), st.just(3), st.just(3)),
    st.tuples(st.just("fec"), st.just(0), st.integers(1, 4), st.integers(1, 4)),
)
LOSS = st.one_of(
    st.builds(lambda p: {"loss": p}, st.floats(0.0, 0.4)),
    st.builds(lambda gb, bg: {"burst_loss": (gb, bg)}, st.floats(0.01, 0.2), st.floats(0.2, 0.9)),
)


@settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), SCHEMES, LOSS, st.floats(0.0, 0.3), st.floats(0.0, 0.3), st.floats(0.0, 0.04))
def test_everything_recoverable_is_delivered_once_in_order(seed, scheme, loss, duplicate, reorder, jitter):
    name, depth, span, entries = scheme
    rng = random.Random(seed)
    ifps = make_ifps(250, rng)
    sender = UdptlSender(error_correction=name, redundancy_depth=depth, fec_span=span, fec_entries=entries,
                         max_datagram=1400, rng=rng)
    # A long patience, so online recovery sees all that the offline oracle sees.
    receiver = UdptlReceiver(1, reorder_window=1000, reorder_timeout=100.0, resync_threshold=2048)
    impairment = Impairment(rng, duplicate=duplicate, reorder=reorder, jitter=jitter, **loss)
    events, arrived, sent, seq_to_index = run_link(ifps, sender, receiver, impairment)
    expected = recoverable(name, depth, arrived, sent)
    delivered, lost = check_delivery(events, ifps, seq_to_index, expected)
    stats = receiver.stats
    assert (stats.delivered, stats.lost) == (len(delivered), len(lost))
    assert stats.malformed == stats.malformed_ifp == 0
    assert stats.recovered_redundancy + stats.recovered_fec >= len(set(delivered) - arrived)
    if not reorder and not jitter:
        assert stats.duplicates == impairment.counters.duplicated
        assert stats.recovered_redundancy + stats.recovered_fec == len(set(delivered) - arrived)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 4), st.floats(0.0, 0.3), st.floats(0.0, 0.3), st.floats(0.0, 0.03))
def test_default_receiver_recovers_all_redundancy_can_give(seed, depth, loss, reorder, jitter):
    # With the default 0.2 s patience: the reordering here (<= 0.08 s) never outlasts it.
    rng = random.Random(seed)
    ifps = make_ifps(200, rng, version=0)
    sender = UdptlSender(error_correction="redundancy", redundancy_depth=depth, max_datagram=1400, rng=rng)
    receiver = UdptlReceiver(0)
    impairment = Impairment(rng, loss=loss, reorder=reorder, jitter=jitter, reorder_delay=0.05)
    events, arrived, sent, seq_to_index = run_link(ifps, sender, receiver, impairment)
    check_delivery(events, ifps, seq_to_index, recoverable("redundancy", depth, arrived, sent))


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.sampled_from(["redundancy", "fec", "none"]), st.floats(0.05, 0.5))
def test_default_receiver_under_heavy_burst_loss_keeps_its_invariants(seed, scheme, p_good_to_bad):
    # Long bursts outlast the reorder window and timer: delivery is then a subset of
    # the recoverable set, but still once each, in order, with the rest reported lost.
    rng = random.Random(seed)
    ifps = make_ifps(300, rng)
    sender = UdptlSender(error_correction=scheme, max_datagram=400, rng=rng)
    receiver = UdptlReceiver(1)
    impairment = Impairment(rng, burst_loss=(p_good_to_bad, 0.1), duplicate=0.1, jitter=0.01)
    events, arrived, sent, seq_to_index = run_link(ifps, sender, receiver, impairment)
    delivered = [seq_to_index[e.seq] for e in events if isinstance(e, IfpReceived)]
    lost = [seq_to_index[s] for e in events if isinstance(e, IfpLost) for s in e.seqs]
    assert sorted(delivered + lost) == list(range(len(ifps)))
    assert delivered == sorted(delivered) and lost == sorted(lost)
    assert arrived <= set(delivered) <= recoverable(scheme, sender.redundancy_depth, arrived, sent)
    assert all(e.raw == ifps[seq_to_index[e.seq]] for e in events if isinstance(e, IfpReceived))
    assert impairment.counters.lost_in_bursts > 0


def test_impairment_is_seeded_and_counts():
    def run(seed):
        impairment = Impairment(random.Random(seed), loss=0.1, burst_loss=(0.05, 0.3), duplicate=0.2, reorder=0.2,
                                jitter=0.01)
        return [impairment.transmit(index.to_bytes(2, "big"), index * 0.02) for index in range(500)], impairment.counters

    first, counters = run(7)
    assert first == run(7)[0]
    assert counters.sent == 500
    assert counters.delivered == sum(len(arrivals) for arrivals in first)
    assert counters.lost == sum(1 for arrivals in first if not arrivals)
    assert 0 < counters.lost_in_bursts < counters.lost
    assert counters.duplicated == sum(1 for arrivals in first if len(arrivals) == 2)
    assert counters.reordered > 0
    assert all(when >= index * 0.02 + 0.02 for index, arrivals in enumerate(first) for when, _ in arrivals)
