"""The UDPTL sender (T.38 clause 9), sans-IO: encoded IFPs in, datagrams out.

Error correction is one of

* ``"redundancy"``: each datagram repeats the previous ``redundancy_depth`` IFPs as
  ``secondary-ifp-packets``, newest first (as Asterisk, SpanDSP and FreeSWITCH send);
* ``"fec"``: each datagram carries ``fec_entries`` XOR parity entries, entry ``m``
  covering the ``fec_span`` IFPs ``seq + m - entries*span, ..., seq + m - entries``
  (the interleaved scheme of SpanDSP's and Asterisk's udptl.c, which a receiver undoes
  from ``fec-npackets`` and the number of entries alone).  The first datagrams wind up
  as Asterisk's do, so that no entry covers IFPs from before the first one;
* ``"none"``: an empty ``secondary-ifp-packets``.

No datagram is ever longer than ``max_datagram`` (the peer's T38FaxMaxDatagram).  The
error correction is trimmed first: the oldest secondaries are left out, or fewer FEC
entries are sent.  ``max_ifp`` tells the layer above how large its IFPs may be; it is
computed as Asterisk's ``calculate_far_max_ifp()`` does, which also lowers the
redundancy depth (never below 1) when the peer's value is too small to carry
``redundancy_depth + 1`` IFPs of 80 octets.  An IFP that cannot fit even with no error
correction at all is a ``LocalProtocolError``: the caller ignored ``max_ifp``.
"""

from __future__ import annotations

import random
from collections import deque
from itertools import islice
from dataclasses import dataclass

from udptl.codec import FecInfo, _encode_udptl_parts
from udptl.errors import LocalProtocolError

__all__ = ["SenderStats", "UdptlSender", "far_max_ifp"]

_SCHEMES = ("redundancy", "fec", "none")


def _octets_size(length: int) -> int:
    """Octets a length-prefixed octet string of ``length`` octets takes (X.691 10.9)."""
    if length < 0x80:
        return length + 1
    if length < 0x4000:
        return length + 2
    prefixes, remaining = 0, length
    while remaining >= 0x4000:  # fragments of 16K, 32K, 48K or 64K, one octet each
        prefixes += 1
        remaining -= min(remaining // 0x4000, 4) * 0x4000
    return length + prefixes + (1 if remaining < 0x80 else 2)


def far_max_ifp(max_datagram: int, error_correction: str, redundancy_depth: int) -> tuple[int, int]:
    """(largest IFP to send, redundancy depth to use), as Asterisk computes them.

    Asterisk main/udptl.c calculate_far_max_ifp(): room for the sequence number and
    length octets, the IFP and its repeats, less 5 % for insurance; with redundancy the
    depth drops while the IFP would be under 80 octets, but not below one repeat.
    """
    if error_correction == "none":
        room = max_datagram - 5
    elif error_correction == "fec":
        room = (max_datagram - 10) // 2
    else:
        while True:
            room = (max_datagram - 8) // (redundancy_depth + 1)
            if room < 80 and redundancy_depth > 1:
                redundancy_depth -= 1
            else:
                break
    return max(0, int(room * 0.95)), redundancy_depth


@dataclass(slots=True)
class SenderStats:
    """Counters: datagrams built, and error-correction entries left out to fit."""

    datagrams: int = 0
    secondaries_trimmed: int = 0
    fec_entries_trimmed: int = 0


class UdptlSender:
    """Builds UDPTL datagrams from encoded IFPs; see the module docstring.

    The first sequence number comes from ``rng`` (0 without one), so a test replays.
    """

    def __init__(
        self,
        *,
        error_correction: str = "redundancy",
        redundancy_depth: int = 3,
        fec_span: int = 3,
        fec_entries: int = 3,
        max_datagram: int,
        rng: random.Random | None = None,
    ) -> None:
        if error_correction not in _SCHEMES:
            raise LocalProtocolError(f"error_correction must be one of {_SCHEMES}, not {error_correction!r}")
        if redundancy_depth < 0 or not 1 <= fec_span <= 127 or not 0 <= fec_entries <= 127:
            raise LocalProtocolError("need redundancy_depth >= 0, 1 <= fec_span <= 127 and 0 <= fec_entries <= 127")
        if max_datagram < 6:
            raise LocalProtocolError(f"T38FaxMaxDatagram {max_datagram} cannot carry even a one-octet IFP")
        self.error_correction = error_correction
        self.max_datagram = max_datagram
        self.max_ifp, depth = far_max_ifp(max_datagram, error_correction, max(redundancy_depth, 1))
        self.redundancy_depth = min(depth, redundancy_depth) if error_correction == "redundancy" else 0
        self.fec_span = fec_span
        self.fec_entries = fec_entries if error_correction == "fec" else 0
        self.seq = rng.randrange(0x10000) if rng is not None else 0
        self.stats = SenderStats()
        self._sent = 0
        keep = self.redundancy_depth if error_correction == "redundancy" else fec_span * fec_entries
        self._previous: deque[bytes] = deque(maxlen=max(keep, 1))

    def datagram_for(self, ifp: bytes) -> bytes:
        """Encode the next UDPTL datagram carrying ``ifp`` (an encoded IFP packet)."""
        ifp = bytes(ifp)
        seq = self.seq
        base = 2 + _octets_size(len(ifp)) + 1
        if base + (3 if self.error_correction == "fec" else 1) > self.max_datagram:
            raise LocalProtocolError(
                f"IFP of {len(ifp)} octets cannot fit in a {self.max_datagram}-octet datagram "
                f"(keep IFPs within max_ifp={self.max_ifp})"
            )
        if self.error_correction == "fec":
            datagram = self._fec_datagram(seq, ifp, base)
        else:
            secondaries = list(islice(self._previous, self.redundancy_depth))
            size = base + 1 + sum(_octets_size(len(item)) for item in secondaries)
            while size > self.max_datagram:
                size -= _octets_size(len(secondaries.pop()))
                self.stats.secondaries_trimmed += 1
            datagram = _encode_udptl_parts(seq, ifp, secondaries, None)
        self._previous.appendleft(ifp)
        self._sent += 1
        self.seq = (seq + 1) & 0xFFFF
        self.stats.datagrams += 1
        return datagram

    def _fec_datagram(self, seq: int, ifp: bytes, base: int) -> bytes:
        span, entries = self.fec_span, self.fec_entries
        sent = self._sent
        if sent < span * entries:
            # Wind up as Asterisk does: cover only IFPs that were actually sent.
            entries = sent // span
        previous = self._previous  # newest first: previous[k] is IFP sent - 1 - k
        while True:
            parities = []
            for m in range(entries):
                covered = [previous[sent - 1 - seq_no] for seq_no in range(sent + m - entries * span, sent + m, entries)]
                width = max(len(item) for item in covered)
                value = 0
                for item in covered:
                    value ^= int.from_bytes(item, "big") << (8 * (width - len(item)))
                parities.append(value.to_bytes(width, "big"))
            # fec-npackets (1-octet INTEGER with its length) plus the entry count.
            size = base + 2 + 1 + sum(_octets_size(len(item)) for item in parities)
            if size <= self.max_datagram or entries == 0:
                break
            entries -= 1
            self.stats.fec_entries_trimmed += 1
        return _encode_udptl_parts(seq, ifp, None, FecInfo(span if entries else 0, tuple(parities)))
