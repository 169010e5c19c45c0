"""SourceLatch, the media source policy: strict, learn, freeze, replays, wrap-around."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udptl.errors import LocalProtocolError
from udptl.latch import LatchVerdict, SourceLatch, Verdict, canonical_host

PEER = ("198.51.100.7", 40000)
PEER_OTHER_PORT = ("198.51.100.7", 40002)
NEW_HOST = ("203.0.113.9", 5004)
THIRD = ("192.0.2.66", 6000)


def feed(latch: SourceLatch, source, seqs) -> list[Verdict]:
    return [latch.datagram(source, seq & 0xFFFF, ("item", seq & 0xFFFF)).verdict for seq in seqs]


def established(mode: str, last: int = 100) -> SourceLatch:
    """A latch whose peer has sent ``last - 9 .. last``."""
    latch = SourceLatch(mode, PEER[0])
    assert feed(latch, PEER, range(last - 9, last + 1)) == [Verdict.LATCHED] + [Verdict.ACCEPTED] * 9
    return latch


def test_strict_latches_the_expected_host_on_the_port_it_sends_from():
    latch = SourceLatch("strict", PEER[0])
    assert latch.datagram(NEW_HOST, 7).verdict is Verdict.FOREIGN  # first, but not the signalled host
    assert latch.latched is None
    assert latch.datagram(PEER_OTHER_PORT, 8) == LatchVerdict(Verdict.LATCHED, ())
    assert latch.latched == PEER_OTHER_PORT
    assert latch.datagram(PEER_OTHER_PORT, 9).verdict is Verdict.ACCEPTED


def test_strict_never_moves_to_another_host_whatever_it_sends():
    latch = established("strict")
    assert feed(latch, NEW_HOST, range(101, 140)) == [Verdict.FOREIGN] * 39
    assert latch.latched == PEER and latch.moves == 0


def test_strict_follows_a_port_change_of_the_same_host_after_four_in_sequence():
    latch = established("strict")
    assert feed(latch, PEER_OTHER_PORT, [101, 102, 103]) == [Verdict.HELD] * 3
    decision = latch.datagram(PEER_OTHER_PORT, 104, ("item", 104))
    assert decision == LatchVerdict(Verdict.LATCHED, (("item", 101), ("item", 102), ("item", 103)))
    assert latch.latched == PEER_OTHER_PORT and latch.moves == 1
    assert latch.datagram(PEER, 105).verdict is Verdict.HELD  # the old port is now a candidate


def test_learn_moves_after_exactly_four_consecutive_in_sequence_datagrams():
    latch = established("learn")
    assert feed(latch, NEW_HOST, [101, 102, 103]) == [Verdict.HELD] * 3
    assert latch.latched == PEER
    decision = latch.datagram(NEW_HOST, 104, ("item", 104))
    assert decision.verdict is Verdict.LATCHED and len(decision.backlog) == 3
    assert latch.latched == NEW_HOST and latch.moves == 1
    assert latch.datagram(PEER, 105).verdict is Verdict.HELD


def test_learn_a_broken_run_starts_again():
    latch = established("learn")
    assert feed(latch, NEW_HOST, [101, 102, 104]) == [Verdict.HELD] * 3  # 104 is a new run of one
    assert feed(latch, NEW_HOST, [105, 106]) == [Verdict.HELD] * 2
    assert latch.datagram(NEW_HOST, 107).verdict is Verdict.LATCHED
    # Another candidate in between resets the run too.
    latch = established("learn")
    assert feed(latch, NEW_HOST, [101, 102, 103]) == [Verdict.HELD] * 3
    assert latch.datagram(THIRD, 104).verdict is Verdict.HELD
    assert latch.datagram(NEW_HOST, 104).verdict is Verdict.HELD
    assert latch.latched == PEER


def test_learn_replayed_or_far_numbers_from_a_new_source_never_count():
    latch = established("learn")
    # A replay of datagrams already received (an attacker re-sending what it captured).
    assert feed(latch, NEW_HOST, range(91, 101)) == [Verdict.FOREIGN] * 10
    # Numbers far ahead of the stream (beyond the 64 window) do not continue it.
    assert feed(latch, NEW_HOST, range(300, 310)) == [Verdict.FOREIGN] * 10
    # The peer keeps sending: the stream moves on, and what was ahead is now a replay.
    assert feed(latch, PEER, range(101, 121)) == [Verdict.ACCEPTED] * 20
    assert feed(latch, NEW_HOST, range(110, 118)) == [Verdict.FOREIGN] * 8
    assert latch.latched == PEER and latch.moves == 0


def test_learn_never_moves_after_freeze():
    latch = established("learn")
    latch.freeze()
    assert feed(latch, NEW_HOST, range(101, 200)) == [Verdict.FOREIGN] * 99
    assert feed(latch, PEER_OTHER_PORT, range(101, 200)) == [Verdict.FOREIGN] * 99
    assert latch.latched == PEER and latch.frozen
    # Freezing drops a run in progress.
    latch = established("learn")
    feed(latch, NEW_HOST, [101, 102, 103])
    latch.freeze()
    assert latch.datagram(NEW_HOST, 104).verdict is Verdict.FOREIGN


def test_learn_takes_a_first_source_from_another_host_only_after_probation():
    latch = SourceLatch("learn", "10.0.0.5")  # the SDP's private address: never the real source
    assert feed(latch, NEW_HOST, [7, 8, 9, 10]) == [Verdict.HELD] * 3 + [Verdict.LATCHED]
    assert latch.latched == NEW_HOST and latch.moves == 0


@pytest.mark.parametrize("mode", ["strict", "learn"])
def test_in_sequence_across_the_wrap(mode):
    latch = established(mode, last=65534)
    candidate = PEER_OTHER_PORT if mode == "strict" else NEW_HOST
    assert feed(latch, candidate, [65535, 0, 1, 2]) == [Verdict.HELD] * 3 + [Verdict.LATCHED]
    assert feed(latch, candidate, [3, 4]) == [Verdict.ACCEPTED] * 2
    # Numbers just below the wrap are now old: a replay.
    assert feed(latch, PEER, [65533, 65534, 65535, 0]) == [Verdict.FOREIGN] * 4
    assert latch.latched == candidate


def test_the_accepted_fast_path_keeps_the_stream_position():
    latch = established("learn")
    for seq in range(101, 200):
        latch.accepted(seq)
    assert feed(latch, NEW_HOST, range(150, 154)) == [Verdict.FOREIGN] * 4  # replays now
    assert feed(latch, NEW_HOST, range(200, 204)) == [Verdict.HELD] * 3 + [Verdict.LATCHED]


def test_hosts_compare_by_address_not_spelling():
    assert canonical_host("::ffff:198.51.100.7") == "198.51.100.7"
    assert canonical_host("2001:DB8:0::1") == "2001:db8::1"
    assert canonical_host("fe80::1%eth0") == "fe80::1"
    latch = SourceLatch("strict", "2001:DB8:0::1")
    assert latch.datagram(("2001:db8::1", 4000), 1).verdict is Verdict.LATCHED
    latch = SourceLatch("strict", "198.51.100.7")
    assert latch.datagram(("::ffff:198.51.100.7", 4000), 1).verdict is Verdict.LATCHED


def test_bad_arguments_are_local_errors():
    with pytest.raises(LocalProtocolError):
        SourceLatch("nat", PEER[0])
    with pytest.raises(LocalProtocolError):
        SourceLatch("strict", PEER[0], probation=0)


SOURCES = st.sampled_from([PEER, PEER_OTHER_PORT, NEW_HOST, THIRD])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["strict", "learn"]), st.lists(st.tuples(SOURCES, st.integers(0, 0xFFFF)), max_size=60),
       st.integers(0, 60))
def test_any_traffic_keeps_the_invariants(mode, traffic, freeze_at):
    latch = SourceLatch(mode, PEER[0])
    latched_at_freeze = None
    for index, (source, seq) in enumerate(traffic):
        if index == freeze_at:
            latch.freeze()
            latched_at_freeze = latch.latched
        before = latch.latched
        decision = latch.datagram(source, seq, index)
        if decision.verdict is Verdict.ACCEPTED:
            assert source == before
        elif decision.verdict is Verdict.LATCHED:
            assert latch.latched == source != before
            assert len(decision.backlog) in (0, latch.probation - 1)
            assert list(decision.backlog) == sorted(decision.backlog)  # items come back oldest first
        else:
            assert latch.latched == before
        if mode == "strict":
            assert latch.latched is None or latch.latched[0] == PEER[0]
        if latch.frozen and latched_at_freeze is not None:
            assert latch.latched == latched_at_freeze
