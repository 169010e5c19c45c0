"""How long a gap is held: long enough for the stream's own error correction to repair it.

Streams are real SpanDSP IFPs (tests/vectors/spandsp_ifp: two SpanDSP 0.0.6 terminals
faxing a page) sent at the times SpanDSP emitted them (paced: 20-40 ms per image or V.21
IFP, seconds between T.30 phases), each copy SpanDSP asked for as its own datagram,
framed by our UdptlSender with parity FEC (span 3, 3 entries) or redundancy, then loss
bursts cut out of the image and HDLC data.  What is rebuildable is computed offline from
the datagrams that arrived (tests/udptl/test_loss_model.py ``recoverable``); every one
of those IFPs must come out, once, in order, with its own bytes, and everything else
reported lost.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

from tests.udptl.test_loss_model import recoverable
from tests.udptl.test_receiver import make_ifps

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "spandsp_ifp"
DELAY = 0.02  # one-way network delay


def spandsp_stream(name: str) -> list[tuple[float, bytes]]:
    """(emission time, IFP) for every datagram the sending terminal asked for, in order."""
    stream = []
    for line in (VECTORS / name).read_text().splitlines():
        row = json.loads(line)
        if row["dir"] == "sender->receiver":
            stream += [(row["t"], bytes.fromhex(row["ifp"]))] * max(row["count"], 1)
    return stream


def frame(stream, **sender_options) -> tuple[list[bytes], int]:
    """Frame each IFP as one datagram; return them and the first sequence number."""
    sender = UdptlSender(max_datagram=1400, rng=random.Random(38), **sender_options)
    first = sender.seq
    return [sender.datagram_for(ifp) for _, ifp in stream], first


def play(receiver: UdptlReceiver, arrivals: list[tuple[float, bytes]]) -> list:
    """Feed (arrival time, datagram) in time order, running the receiver's timer when due."""
    events: list = []
    for when, datagram in sorted(arrivals, key=lambda item: item[0]):
        while (deadline := receiver.next_deadline()) is not None and deadline <= when:
            events += receiver.handle_timer(deadline)
        events += receiver.datagram_received(datagram, when)
    while (deadline := receiver.next_deadline()) is not None:
        events += receiver.handle_timer(deadline)
    return events


def outcome(events, first_seq: int, ifps: list[bytes]) -> tuple[list[int], list[int]]:
    """(delivered indexes, lost indexes), checking that each index comes out once, in
    order, and every delivered IFP with its own bytes."""
    count = len(ifps)
    index_of = {(first_seq + index) & 0xFFFF: index for index in range(count)}
    delivered, lost, timeline = [], [], []
    for event in events:
        if isinstance(event, IfpReceived):
            assert event.raw == ifps[index_of[event.seq]]
            delivered.append(index_of[event.seq])
            timeline.append(index_of[event.seq])
        else:
            assert isinstance(event, IfpLost)
            lost += [index_of[seq] for seq in event.seqs]
            timeline += [index_of[seq] for seq in event.seqs]
    assert timeline == list(range(count))
    return delivered, lost


def data_runs(stream, minimum: int = 20) -> list[range]:
    """Index ranges where IFPs follow each other at the paced 20-40 ms (image data, V.21 octets)."""
    runs, start = [], 0
    for index in range(1, len(stream) + 1):
        if index == len(stream) or not 0.0 < stream[index][0] - stream[index - 1][0] <= 0.045:
            if index - start >= minimum:
                runs.append(range(start, index))
            start = index
    return runs


def burst_losses(stream, lengths, *, then: int | None = None, spacing: int = 26) -> set[int]:
    """Bursts of the given lengths cut out of each paced run, ``spacing`` datagrams apart;
    with ``then``, also the datagram ``then`` places after each burst."""
    lost: set[int] = set()
    cycle = 0
    for run in data_runs(stream):
        for start in range(run.start + 12, run.stop - 20, spacing):
            end = start + lengths[cycle % len(lengths)]
            lost.update(range(start, end))
            if then is not None:
                lost.add(end + then)
            cycle += 1
    return lost


def transmit(stream, datagrams, lost: set[int], *, jitter: float = 0.0) -> list[tuple[float, bytes]]:
    """Arrivals: ``DELAY`` plus up to ``jitter`` later (not for the first few datagrams: the
    receiver learns where the stream starts from the first one it sees)."""
    rng = random.Random(7)
    return [(when + DELAY + (rng.uniform(0, jitter) if index >= 8 else 0.0), datagram)
            for index, ((when, _), datagram) in enumerate(zip(stream, datagrams)) if index not in lost]


# With span 3 and 3 entries a burst of 4 or more holds two IFPs of one parity group, so
# its last IFP is rebuilt only by a group of later datagrams: the first such parity rides
# E*(S-1) + 1 = 7 datagrams after it, ~0.18 s at SpanDSP's ~30 ms pace, just inside a
# fixed 0.2 s.  One more loss among those datagrams (``then``: the next parity for it
# rides one or two datagrams later) or 60 ms of network jitter is enough to miss 0.2 s.
@pytest.mark.parametrize("vector", ["v0_nonecm_mh.jsonl", "v0_ecm_mmr.jsonl", "v3_nonecm_mr.jsonl"])
@pytest.mark.parametrize("then, jitter", [(6, 0.0), (None, 0.06)], ids=["burst+1", "burst+jitter"])
def test_fec_bursts_at_spandsp_pacing_are_all_rebuilt(vector, then, jitter):
    stream = spandsp_stream(vector)
    ifps = [ifp for _, ifp in stream]
    datagrams, first = frame(stream, error_correction="fec", fec_span=3, fec_entries=3)
    lost = burst_losses(stream, [4, 5, 6], then=then)
    arrivals = transmit(stream, datagrams, lost, jitter=jitter)
    arrived = set(range(len(datagrams))) - lost
    expected = recoverable("fec", 0, arrived, datagrams)
    assert len(lost) >= 12 and expected >= set(range(len(datagrams)))  # all of it is rebuildable

    receiver = UdptlReceiver(0)
    delivered, reported_lost = outcome(play(receiver, arrivals), first, ifps)
    assert set(delivered) == expected and reported_lost == []
    # (with jitter some datagrams come after their IFP was rebuilt: late)
    assert receiver.stats.recovered_fec == len(lost) + receiver.stats.late
    if not jitter:  # the last gap was a burst in image data: (9 + 1) x 24-30 ms
        assert 0.2 < receiver.hold <= 0.5

    # The same stream through a fixed 0.2 s hold (what the receiver did before) loses some.
    fixed = UdptlReceiver(0, reorder_timeout=0.2, max_hold=0.2)
    delivered, reported_lost = outcome(play(fixed, arrivals), first, ifps)
    assert reported_lost and set(reported_lost) <= lost


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_redundancy_bursts_rebuilt_without_holding_longer_than_before(depth):
    stream = spandsp_stream("v0_nonecm_mh.jsonl")
    ifps = [ifp for _, ifp in stream]
    datagrams, first = frame(stream, error_correction="redundancy", redundancy_depth=depth)
    lost = burst_losses(stream, [1, depth, depth + 2])  # the last one partly beyond repair
    arrivals = transmit(stream, datagrams, lost)
    expected = recoverable("redundancy", depth, set(range(len(datagrams))) - lost, datagrams)
    receiver = UdptlReceiver(0)
    delivered, reported_lost = outcome(play(receiver, arrivals), first, ifps)
    assert set(delivered) == expected and reported_lost
    assert receiver.stats.recovered_redundancy == len(expected & lost)
    # Redundancy repairs from the next datagrams: (depth + 1) x 30 ms stays under 0.2 s.
    assert receiver.hold == 0.2


def test_an_unrepairable_gap_is_given_up_within_the_cap():
    # FEC 4 x 4 over IFPs 0.2 s apart would want (16 + 1) x 0.2 s: held 2 s, no longer.
    ifps = make_ifps(80, random.Random(4), version=0)
    sender = UdptlSender(error_correction="fec", fec_span=4, fec_entries=4, max_datagram=1400)
    datagrams = [sender.datagram_for(ifp) for ifp in ifps]
    receiver = UdptlReceiver(0)
    for index in range(40):
        receiver.datagram_received(datagrams[index], index * 0.2)
    receiver.datagram_received(datagrams[60], 60 * 0.2)  # 20 lost, then the sender stops
    assert receiver.hold == 2.0
    assert receiver.next_deadline() == pytest.approx(60 * 0.2 + 2.0)
    assert receiver.handle_timer(60 * 0.2 + 1.99) == []
    events = receiver.handle_timer(60 * 0.2 + 2.0)
    assert [type(event) for event in events] == [IfpLost, IfpReceived] and len(events[0].seqs) == 20


def test_the_pace_is_measured_from_what_arrived_before_the_gap():
    # A long silence between two T.30 phases counts as a 0.25 s step at most, so the
    # image data after it is measured at its own pace.
    ifps = make_ifps(60, random.Random(5), version=0)
    sender = UdptlSender(error_correction="fec", fec_span=3, fec_entries=3, max_datagram=1400)
    datagrams = [sender.datagram_for(ifp) for ifp in ifps]
    receiver = UdptlReceiver(0)
    times = [index * 0.04 for index in range(20)] + [5.0 + index * 0.04 for index in range(40)]
    for index in range(40):
        receiver.datagram_received(datagrams[index], times[index])
    receiver.datagram_received(datagrams[44], times[44])  # 40-43 lost
    # 16 numbers: 11 steps of 0.04 s, then 40..43 lost: 5 numbers in 0.2 s -> 0.04 s each.
    assert receiver.hold == pytest.approx(10 * 0.04)


PACE = st.floats(0.015, 0.1)


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 4), st.integers(1, 4), PACE, st.floats(0.0, 0.4))
def test_isolated_fec_bursts_are_always_rebuilt(seed, span, entries, pace, jitter_share):
    # Bursts far enough apart that each is repaired by the datagrams that follow it, at a
    # steady pace with some jitter: whatever the offline oracle can rebuild comes out.
    rng = random.Random(seed)
    ifps = make_ifps(200, rng, version=0)
    sender = UdptlSender(error_correction="fec", fec_span=span, fec_entries=entries, max_datagram=1400, rng=rng)
    first = sender.seq
    datagrams = [sender.datagram_for(ifp) for ifp in ifps]
    horizon = span * entries
    lost: set[int] = set()
    start = 20
    while start < len(ifps) - horizon - 20:
        length = rng.randint(1, 2 * entries)
        lost.update(range(start, start + length))
        start += length + horizon + rng.randint(16, 30)
    jitter = pace * jitter_share
    arrivals = [(index * pace + rng.uniform(0, jitter), datagram) for index, datagram in enumerate(datagrams)
                if index not in lost]
    receiver = UdptlReceiver(0)
    delivered, _ = outcome(play(receiver, arrivals), first, ifps)
    expected = recoverable("fec", 0, set(range(len(datagrams))) - lost, datagrams)
    assert set(delivered) == expected
    assert receiver.hold <= 2.0 and (math.isclose(receiver.hold, 0.2) or receiver.hold > 0.2)
