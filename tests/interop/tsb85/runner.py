"""The TSB-85 tester side, played over T.38 IFP packets in simulated time.

How a script becomes IFPs
=========================
SpanDSP runs ``tsb85.xml`` over audio modems (``tests/tsb85_tests.c`` with
``tests/fax_tester.c``).  We play the same steps over T.38 (T.38 clause 6 and Annex A),
step by step as fax_tester.c reads them:

* ``CALL`` - the tester calls: the device under test (DUT) answers when the first step
  after the ``SET``s runs.  ``ANSWER`` - the DUT calls (annexes E-J): it must originate.
* ``SET`` with ``dir="T"`` configures the DUT (fax_tester.c sets the *far* T.30's ident).
* ``PREAMBLE`` with a modem opens a carrier: V.21 -> the ``v21-preamble`` indicator and
  the flags' time (``value`` flags, default 37, at 300 bit/s); a fast modem -> its
  training indicator (short train for V.17, as fax_tester.c asks) then 200 ms of flags.
  Without a modem it is more flags on the open carrier.
* ``HDLC`` -> ``hdlc-data`` with the octets exactly as written (the script writes frames
  first-transmitted bit first, which is T.38's order, see ``t38gw.t30.frames``) and, a
  frame-time later at the line rate, ``hdlc-fcs-OK`` (``hdlc-fcs-BAD`` for ``crc_error``).
* ``POSTAMBLE`` -> closing flags, ``hdlc-sig-end`` and ``no-signal``.  A carrier left open
  by the script is closed the same way by the next step that is not part of it.
* ``TCF`` -> the (long) training indicator, ``value`` octets of zeros (the first
  ``pattern`` octets 0x55, fax_tester.c's corrupted TCF) as ``t4-non-ecm-data`` at the
  modem's rate, ``t4-non-ecm-sig-end``, ``no-signal``.
* ``MSG`` -> a non-ECM page: the first page of the named image coded by our ``imaging``
  encoder as the last DCS says (or the step's ``compression``), ``min_bits`` fill per row,
  ``bad_rows`` corrupted as fax_tester.c does (first bit after the listed rows' EOL), sent
  as ``t4-non-ecm-data`` at the modem's rate after its training indicator.
* ``PP`` -> one ECM partial page on the open fast carrier: block ``block`` of the coded
  image in ``frame_size`` FCD frames (numbered 0-255 within the block, the last one
  zero-padded), ``crc_error`` = the page-absolute frame index sent with a bad FCS, then 3
  RCP (T.4 A.3.6.2).
* ``WAIT`` -> the tester is silent for ``value`` ms; like fax_tester.c (its receiver is off
  while it waits or sends) frames the DUT sends meanwhile are not matched, only kept for
  the "do not respond" checks.
* ``dir="R"`` steps check what the DUT sends, each within ``timeout`` ms (default 7000):
  ``CED`` (indicator, 2.6-4 s long), ``HDLC`` (the next frame with the same control
  octet must equal the value, ``...`` = any tail; fcs-OK), ``SILENCE`` (``no-signal``),
  ``CLEAR`` (the DUT ended the call within ``timein``-``timeout`` ms).  Frames whose
  control octet differs from the awaited one are passed over, as fax_tester.c does.
* ``CLEAR`` (tester) drops the call: the DUT is hung up (the session's BYE).
* ``STATUS`` -> the T.30 result the DUT ended with (``STATUS_RESULTS`` below).

Timing checks over T.38: the TSB-85 audio durations become the times of the IFPs that
stand for them (T.38 clause 5: an indicator marks the start of a signal): CED length =
CED indicator to the next indicator; silence CED->DIS = that indicator to the V.21
preamble indicator; a frame's preamble = V.21 indicator to its first ``hdlc-data``
(every first frame of a DUT burst is checked, 850-1150 ms); MCF->DIS (MRGN09M02) =
end of the MCF burst to the DIS preamble indicator.  The checks that remain are pixel
checks (every confirmed non-ECM page sent clean must be pixel-identical to its source),
the "do not respond to bad commands" checks, and those in ``NOT_APPLICABLE``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import imaging
from t38gw.t30 import CallEnded, PageReceived, PageRejected, ProtocolEventLogged, ReceiverConfig, T30Receiver, T30Result
from t38gw.t30.dcs import Compression, DcsParameters, parse_dcs
from t38gw.t30.frames import Fcf, T30Frame
from t38gw.t30.t38_io import HdlcFrameArrived, IfpDemultiplexer
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig
from tests.interop.tsb85.script import Repeat, Script, Step, parse_octets, tsb85_dir
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator


class TestFailed(AssertionError):
    __test__ = False


class DutCannot(AssertionError):
    """The DUT lacks a capability the script needs (originating a call, sending)."""


# --------------------------------------------------------------------------- modems
@dataclass(frozen=True)
class Modem:
    bit_rate: int
    long_indicator: T30Indicator
    short_indicator: T30Indicator
    data_type: T30Data
    long_train_s: float
    short_train_s: float


_I = T30Indicator
MODEMS = {
    # Training lengths: V.27ter 2.1.1 (1074/1118 symbols), V.29 (253 ms), V.17 long/short.
    "V.27ter/2400": Modem(2400, _I.V27_2400_TRAINING, _I.V27_2400_TRAINING, T30Data.V27_2400, 0.943, 0.943),
    "V.27ter/4800": Modem(4800, _I.V27_4800_TRAINING, _I.V27_4800_TRAINING, T30Data.V27_4800, 0.708, 0.708),
    "V.29/7200": Modem(7200, _I.V29_7200_TRAINING, _I.V29_7200_TRAINING, T30Data.V29_7200, 0.253, 0.253),
    "V.29/9600": Modem(9600, _I.V29_9600_TRAINING, _I.V29_9600_TRAINING, T30Data.V29_9600, 0.253, 0.253),
    "V.17/7200": Modem(7200, _I.V17_7200_LONG_TRAINING, _I.V17_7200_SHORT_TRAINING, T30Data.V17_7200, 1.393, 0.142),
    "V.17/9600": Modem(9600, _I.V17_9600_LONG_TRAINING, _I.V17_9600_SHORT_TRAINING, T30Data.V17_9600, 1.393, 0.142),
    "V.17/12000": Modem(12000, _I.V17_12000_LONG_TRAINING, _I.V17_12000_SHORT_TRAINING, T30Data.V17_12000, 1.393, 0.142),
    "V.17/14400": Modem(14400, _I.V17_14400_LONG_TRAINING, _I.V17_14400_SHORT_TRAINING, T30Data.V17_14400, 1.393, 0.142),
}
V21_RATE = 300
DEFAULT_R_TIMEOUT_MS = 7000  # fax_tester.c: "Receive always has a timeout applied"


# --------------------------------------------------------------------------- tables
#: Checks with no meaning over T.38, or that these scripts/images cannot produce: one
#: check each, never a whole test.  (test, what) -> why.
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("MRGN03", "STATUS"): (
        "RETRYDCN needs a scan line longer than 5 s, but etsi_300_242_a4_duration2.tif is "
        "byte-identical to duration1.tif (SpanDSP's generator builds DURATION2 with the "
        "DURATION1 routine; testdata README 'Known artefacts'), so the second page is a "
        "valid page and is confirmed; every frame check of the script still runs"),
    ("MRGX01", "CLEAR.timein"): (
        "the lower bound (800 ms from DCN to on-hook) is an audio line measurement: over "
        "T.38 the engine is done when its DCN's last IFP is due, and clearing the call is "
        "the session's SIP BYE (RFC 3261 15), not a T.30 timing; the upper bound is checked"),
    ("*", "NSF"): (
        "NSF is an optional signal (T.30 5.3.6.1.1), and its FIF must start with a "
        "T.35 country and manufacturer code this project has none of; a DUT that sends no "
        "NSF passes this step when its next frame is the script's next expected frame"),
}


def not_applicable(test: str, what: str) -> str | None:
    return NOT_APPLICABLE.get((test, what)) or NOT_APPLICABLE.get(("*", what))


def _unexpected_reported(ended: CallEnded | None, events) -> bool:
    return any(isinstance(e, ProtocolEventLogged) and ("unexpected" in e.what or "not a T.30" in e.what
                                                      or "is not 0xFF" in e.what) for e in events)


#: TSB-85 STATUS (SpanDSP T30_ERR_* tag) -> what our engine must report.  Our T30Result
#: values carry SpanDSP's names; only CALLDROPPED is spelled differently.  SpanDSP's
#: "UNEXPECTED" is a sticky note in its current_status (t30.c unexpected_*_frame sets it
#: only while the status is still OK, and a call that then completes keeps it): our engine
#: reports the same fact as a ProtocolEventLogged about the unexpected frame, and ends the
#: call with whatever T.30 prescribes for what followed.
STATUS_RESULTS = {
    "OK": ("T30Result.OK", lambda ended, events: ended is not None and ended.result is T30Result.OK),
    "CALLDROPPED": ("T30Result.CALL_DROPPED",
                    lambda ended, events: ended is not None and ended.result is T30Result.CALL_DROPPED),
    "UNEXPECTED": ("an unexpected frame reported (ProtocolEventLogged)", _unexpected_reported),
}


def status_expectation(tag: str):
    if tag in STATUS_RESULTS:
        return STATUS_RESULTS[tag]
    return (f"T30Result.{tag}", lambda ended, events: ended is not None and ended.result.value == tag)


# --------------------------------------------------------------------------- images
@functools.lru_cache(maxsize=16)
def load_image(name: str) -> tuple[bytes, int, int, int]:
    """(bitmap packed 1 = black, width, height, y_dpi) of the first page of an ETSI image."""
    from PIL import Image

    with Image.open(tsb85_dir() / "images" / name) as im:
        im.seek(0)
        mono = im.convert("1")
        width, height = mono.size
        # Pillow packs mode "1" with 1 = white: invert to T.4's 1 = black.
        bitmap = bytes(b ^ 0xFF for b in mono.tobytes())
        y_dpi = int(round((im.info.get("dpi") or (204, 98))[1]))
    return bitmap, width, height, y_dpi


@functools.lru_cache(maxsize=16)
def _document_pages(name: str) -> tuple[imaging.Page, ...]:
    from PIL import Image, ImageSequence

    pages = []
    with Image.open(tsb85_dir() / "images" / name) as im:
        for frame in ImageSequence.Iterator(im):
            mono = frame.convert("1")
            width, height = mono.size
            bitmap = bytes(b ^ 0xFF for b in mono.tobytes())  # Pillow "1": 1 = white
            x_dpi, y_dpi = (float(v) for v in (frame.info.get("dpi") or (204, 98)))
            pages.append(imaging.Page(width, height, x_dpi, y_dpi, bitmap))
    return tuple(pages)


def load_document(name: str) -> list[imaging.Page]:
    """Every page of an ETSI image file, as the DUT sends it (SpanDSP's t30_set_tx_file)."""
    return list(_document_pages(name))


@functools.lru_cache(maxsize=32)
def coded_image(name: str, coding: imaging.Coding, min_bits: int) -> bytes:
    """The image coded for T.38 (first line bit = MSB)."""
    bitmap, width, _, y_dpi = load_image(name)
    return imaging.encode_page(bitmap, width, coding, k=imaging.mr_k(y_dpi), min_row_bits=min_bits,
                               bit_order=imaging.BitOrder.MSB_FIRST)


def corrupt_rows(data: bytes, rows: set[int]) -> bytes:
    """fax_tester.c corrupt_image: flip the first bit after the EOL of each listed row
    (rows counted 1, 2, ... at each EOL: eleven zeros then a one)."""
    bits = bytearray()
    for octet in data:
        bits.extend((octet >> (7 - i)) & 1 for i in range(8))
    zeros = 0
    row = 0
    for i, bit in enumerate(bits):
        if bit == 1 and zeros >= 11:
            row += 1
            if row in rows and i + 1 < len(bits):
                bits[i + 1] ^= 1
        zeros = zeros + 1 if bit == 0 else 0
    out = bytearray(len(data))
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


_TRANSMIT_ANNEXES = frozenset("FGHI")
_TRAININGS = frozenset(i for i in T30Indicator if i.name.endswith("TRAINING"))

_CODINGS = {"T.4 1D": imaging.Coding.MH, "T.4 2D": imaging.Coding.MR, "T.6": imaging.Coding.MMR}
_BY_COMPRESSION = {Compression.MH: imaging.Coding.MH, Compression.MR: imaging.Coding.MR,
                   Compression.MMR: imaging.Coding.MMR}


# --------------------------------------------------------------------------- DUTs
class EngineDut:
    """Our T30Receiver (the tester calls) or T30Transmitter (the DUT calls, annexes F-I) as
    the device under test."""

    name = "t38gw"

    def __init__(self) -> None:
        self.ident = ""
        self.engine: Any = None
        self.next_documents: list[str] = []
        self.events: list = []
        self.ended_at: float | None = None
        self.now = 0.0

    def set(self, tag: str, value: str | None) -> None:
        if tag == "IDENT":
            self.ident = value or ""
        elif tag == "TXFILE" and value:
            # fax_tester.c: the next document, handed over when the current one ends (EOM).
            if isinstance(self.engine, T30Transmitter):
                self.engine.append_document(load_document(value))
            else:
                self.next_documents.append(value)

    def answer(self, now: float) -> None:
        self.engine = T30Receiver(ReceiverConfig(local_ident=self.ident))
        self.now = now
        self._note(self.engine.start(now), now)

    def originate(self, now: float, image: str | None = None, *, ecm_frame_size: int = 256) -> None:
        """The DUT calls to send ``image`` (its first page, at the image's resolution)."""
        if not image:
            raise DutCannot("the DUT must place a call without a document (polling); the engine only sends")
        # fax_tester.c restricts the DUT's T.4 output to 1-D (a libtiff 3.8.2 workaround);
        # T.6 stays available under ECM (OTEN06 expects the page in one ECM block).
        config = TransmitterConfig(local_ident=self.ident, compressions=frozenset({Compression.MH, Compression.MMR}),
                                   ecm_frame_size=ecm_frame_size)
        self.engine = T30Transmitter(config, load_document(image))
        for name in self.next_documents:
            self.engine.append_document(load_document(name))
        self.now = now
        self._note(self.engine.start(now), now)

    def deliver(self, packet: IfpPacket, now: float) -> None:
        self._note(self.engine.ifp_received(packet, now), now)

    def hang_up(self, now: float) -> None:
        self._note(self.engine.hang_up(now), now)

    def advance(self, now: float) -> list[tuple[float, IfpPacket]]:
        """Run the engine's timers up to ``now``; the packets it sent, with their times."""
        out = []
        engine = self.engine
        for _ in range(100_000):
            deadline = engine.next_deadline()
            if deadline is None or deadline > now:
                break
            t = max(deadline, self.now)
            self.now = t
            self._note(engine.handle_timer(t), t)
            for o in engine.ifps_to_send(t):
                out.extend([(o.at, o.packet)] * o.repeat)
        self.now = max(self.now, now)
        return out

    def next_wake(self) -> float | None:
        return self.engine.next_deadline() if self.engine else None

    @property
    def cleared(self) -> bool:
        return self.engine is not None and self.engine.finished

    def _note(self, events, now) -> None:
        self.events.extend(events)
        if self.ended_at is None and any(isinstance(e, CallEnded) for e in events):
            self.ended_at = now

    def take_pages(self) -> list:
        pages = [e for e in self.events if isinstance(e, (PageReceived, PageRejected))]  # receiving only
        return pages

    @property
    def call_ended(self) -> CallEnded | None:
        ended = [e for e in self.events if isinstance(e, CallEnded)]
        return ended[-1] if ended else None

    def check_status(self, tag: str) -> tuple[bool, str]:
        what, ok = status_expectation(tag)
        ended = self.call_ended
        if ended is None and tag == "OK" and isinstance(self.engine, T30Transmitter) and not self.engine.finished:
            # fax_tester.c reads SpanDSP's current status, which is OK while a call goes on
            # without error (MTGX01 checks it mid-call, right after the DUT's TCF).
            return True, "call in progress, no error"
        return ok(ended, self.events), f"expected {tag} ({what}); engine ended with {ended}"


# --------------------------------------------------------------------------- tester
@dataclass
class RxFrame:
    t: float
    wire: bytes
    fcs_ok: bool
    burst_start: float | None  # V.21 indicator time when this is a burst's first frame
    first_data: float | None


@dataclass
class RxIndicator:
    t: float
    indicator: object


@dataclass
class Report:
    test: str
    not_applicable: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)


class Tester:
    """Plays one script against a DUT adapter; ``run()`` raises TestFailed/DutCannot."""

    __test__ = False

    def __init__(self, script: Script, dut) -> None:
        self.script = script
        self.dut = dut
        self.now = 0.0
        self.report = Report(script.name)
        self._rx: list = []  # RxFrame / RxIndicator from the DUT, in time order
        self._cursor = 0
        self._discarded: list = []
        self._demux = IfpDemultiplexer()
        self._last_indicator = None
        self._burst_start: float | None = None
        self._burst_first = False
        self._first_data: float | None = None
        self._carrier: tuple[str, Modem | None] | None = None  # ("v21"|"fast", modem)
        self._carrier_has_frame = False
        self._call_pending = False
        self._originate_pending: str | None = None  # ANSWER: the DUT calls once the SETs ran
        self._started = False
        self.dcs: DcsParameters | None = None
        self._last_msg: tuple[str, bytes | None] | None = None  # image, clean bitmap
        self._pages_seen = 0
        self._bad_command_at: float | None = None
        self._last_mcf_end: float | None = None
        self._ced_end: float | None = None

    # ------------------------------------------------------------------ plumbing
    def fail(self, step: Step | None, why: str) -> None:
        where = f"{self.script.name} {step.describe()}" if step else self.script.name
        raise TestFailed(f"{where} at t={self.now:.3f}s: {why}")

    def _pump(self, t: float) -> None:
        if not self._started:
            return
        for at, packet in self.dut.advance(t):
            self._dut_packet(at, packet)
        self._check_pages()

    def _dut_packet(self, at: float, packet: IfpPacket) -> None:
        if packet.is_indicator:
            if packet.msg != self._last_indicator:  # repeats of an indicator are one signal
                self._rx.append(RxIndicator(at, packet.msg))
                if packet.msg is T30Indicator.V21_PREAMBLE:
                    self._burst_start, self._burst_first = at, True
            self._last_indicator = packet.msg
        else:
            self._last_indicator = None
            for f in packet.fields or ():
                if f.field_type is FieldType.HDLC_DATA and self._first_data is None and packet.msg is T30Data.V21:
                    self._first_data = at
        for ev in self._demux.packet_received(packet):
            if isinstance(ev, HdlcFrameArrived) and ev.data_type is T30Data.V21:
                self._rx.append(RxFrame(at, ev.wire, ev.fcs_ok, self._burst_start if self._burst_first else None,
                                        self._first_data))
                self._burst_first = False
                self._first_data = None

    def _check_pages(self) -> None:
        pages = self.dut.take_pages()
        for page in pages[self._pages_seen:]:
            if isinstance(page, PageReceived) and not page.ecm and self._last_msg is not None:
                name, bitmap = self._last_msg
                if bitmap is not None and page.bitmap != bitmap:
                    self.fail(None, f"confirmed page {page.number} differs from {name} (pixel check)")
                if bitmap is not None:
                    self.report.checked.append(f"page {page.number} pixel-identical to {name}")
        self._pages_seen = len(pages)

    def _advance_to(self, t: float) -> None:
        self._pump(t)
        self.now = max(self.now, t)

    def _send(self, packet: IfpPacket) -> None:
        self._pump(self.now)
        if self._started and not self.dut.cleared:
            self.dut.deliver(packet, self.now)
        self._pump(self.now)

    def _discard_rx(self) -> None:
        """Frames that arrived while the tester was sending or waiting are not matched."""
        self._pump(self.now)
        self._discarded.extend(self._rx[self._cursor:])
        self._cursor = len(self._rx)

    def _wait_rx(self, step: Step, deadline: float, want):
        """Next DUT item for which ``want(item)`` returns True (others are passed over)."""
        while True:
            while self._cursor < len(self._rx):
                item = self._rx[self._cursor]
                self._cursor += 1
                if want(item):
                    self.now = max(self.now, item.t)
                    return item
            if self.now >= deadline:
                return None
            wake = self.dut.next_wake() if self._started else None
            t = deadline if wake is None else min(deadline, max(wake, self.now))
            if t <= self.now:
                t = min(deadline, self.now + 0.001)
            self._advance_to(t)

    # ------------------------------------------------------------------ carriers
    def _open(self, kind: str, modem: Modem | None, indicator) -> None:
        self._close()
        self._send(IfpPacket(indicator))
        self._carrier = (kind, modem)
        self._carrier_has_frame = False

    def _close(self) -> None:
        if self._carrier is None:
            return
        kind, modem = self._carrier
        data_type = T30Data.V21 if kind == "v21" else modem.data_type
        if self._carrier_has_frame:
            self._send(IfpPacket(data_type, (DataField(FieldType.HDLC_SIG_END),)))
        self._send(IfpPacket(T30Indicator.NO_SIGNAL))
        self._carrier = None

    def _carrier_rate(self) -> int:
        kind, modem = self._carrier
        return V21_RATE if kind == "v21" else modem.bit_rate

    def _hdlc(self, wire: bytes, fcs_ok: bool) -> None:
        kind, modem = self._carrier
        data_type = T30Data.V21 if kind == "v21" else modem.data_type
        self._send(IfpPacket(data_type, (DataField(FieldType.HDLC_DATA, wire),)))
        # Octets, 16-bit FCS and one closing flag on the line.
        self._advance_to(self.now + (len(wire) + 3) * 8 / self._carrier_rate())
        self._send(IfpPacket(data_type, (DataField(FieldType.HDLC_FCS_OK if fcs_ok else FieldType.HDLC_FCS_BAD),)))
        self._carrier_has_frame = True

    def _non_ecm(self, modem: Modem, indicator, data: bytes) -> None:
        self._close()
        self._send(IfpPacket(indicator))
        self._advance_to(self.now + (modem.long_train_s if indicator is modem.long_indicator else modem.short_train_s))
        chunk = max(1, modem.bit_rate // 80)  # 100 ms of data per IFP
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            kind = FieldType.T4_NON_ECM_SIG_END if last else FieldType.T4_NON_ECM_DATA
            self._send(IfpPacket(modem.data_type, (DataField(kind, piece),)))
            self._advance_to(self.now + len(piece) * 8 / modem.bit_rate)
        self._send(IfpPacket(T30Indicator.NO_SIGNAL))

    def _modem(self, step: Step) -> Modem:
        name = step.get("modem")
        if name not in MODEMS:
            self.fail(step, f"unknown modem {name!r}")
        return MODEMS[name]

    def _coding(self, step: Step) -> imaging.Coding:
        if step.get("compression"):
            return _CODINGS[step.get("compression")]
        if self.dcs is None:
            return imaging.Coding.MH
        return _BY_COMPRESSION[self.dcs.compression]

    # ------------------------------------------------------------------ steps
    def run(self) -> Report:
        for step in self.script.steps:
            if self._call_pending and not (step.type == "SET" and step.dir == "T"):
                self._call_pending = False
                self.dut.answer(self.now)
                self._started = True
                self._pump(self.now)
            if isinstance(step, Repeat):
                self._repeat(step)
            else:
                self.step(step)
        # fax_tester.c lets everything flush at the end; the DUT must not have failed since.
        if self._started:
            self._advance_to(self.now + 60.0)
        return self.report

    def _repeat(self, block: Repeat) -> None:
        """Run the block ``min`` times, then again while the DUT's next frame is the one
        the block starts by expecting (up to ``max``)."""
        first = block.steps[0]
        count = 0
        while count < block.max:
            if count >= block.min:
                if not (first.dir == "R" and first.type == "HDLC"):
                    break
                self._close()
                awaited, tail = parse_octets(first.get("value", ""))
                item = self._wait_rx(first, self.now + int(first.get("timeout") or DEFAULT_R_TIMEOUT_MS) / 1000,
                                     lambda i: isinstance(i, RxFrame) and len(i.wire) >= 2 and i.wire[1] == awaited[1])  # noqa: B023 (used at once)
                if item is None:
                    break
                self._cursor -= 1  # leave it for whichever step it belongs to
                if not (item.wire[:len(awaited)] == awaited and (tail or len(item.wire) == len(awaited))):
                    break
            for step in block.steps:
                self.step(step)
            count += 1

    def step(self, step: Step) -> None:
        kind = step.type
        if self._originate_pending is not None and not (kind == "SET" and step.dir == "T"):
            image, self._originate_pending = self._originate_pending, None
            self.dut.originate(self.now, image)
            self._started = True
            self._pump(self.now)
        if kind == "CALL":
            self._call_pending = True
            return
        if kind == "ANSWER":
            self._originate_pending = step.get("value") or ""
            return
        if kind == "STATUS":
            self._status(step)
            return
        if kind == "WAIT":
            self._close()
            self._discard_rx()
            self._advance_to(self.now + int(step.get("value", "1")) / 1000)
            self._discard_rx()
            return
        if step.dir == "R":
            self._close()
            self._receive(step)
            return
        self._transmit(step)
        if kind not in ("SET",):
            self._discard_rx()

    def _status(self, step: Step) -> None:
        tag = step.get("value")
        why = not_applicable(self.script.name, "STATUS")
        if why:
            self.report.not_applicable.append(f"STATUS {tag}: {why}")
            return
        ok, detail = self.dut.check_status(tag)
        if not ok:
            self.fail(step, detail)
        self.report.checked.append(f"STATUS {tag}")

    def _transmit(self, step: Step) -> None:
        kind = step.type
        if kind == "SET":
            self.dut.set((step.get("tag") or "").upper(), step.get("value"))
        elif kind == "PREAMBLE":
            flags = int(step.get("value", "37"))
            if step.get("modem") is None or step.get("modem") == "V.21":
                if step.get("modem") == "V.21" and not (self._carrier and self._carrier[0] == "v21"):
                    self._open("v21", None, T30Indicator.V21_PREAMBLE)
                elif self._carrier is None:
                    self._open("v21", None, T30Indicator.V21_PREAMBLE)
                self._advance_to(self.now + flags * 8 / self._carrier_rate())
            else:
                modem = self._modem(step)
                self._open("fast", modem, modem.short_indicator)
                self._advance_to(self.now + modem.short_train_s + 0.2)
        elif kind == "HDLC":
            wire, _ = parse_octets(step.get("value", ""))
            if self._carrier is None:
                self._open("v21", None, T30Indicator.V21_PREAMBLE)
            fcs_ok = step.get("crc_error") != "0"
            if not fcs_ok and self._bad_command_at is None:
                self._bad_command_at = self.now
            self._track_dcs(wire)
            self._hdlc(wire, fcs_ok)
        elif kind == "POSTAMBLE":
            if self._carrier is not None:
                self._advance_to(self.now + int(step.get("value", "5")) * 8 / self._carrier_rate())
            self._close()
        elif kind == "TCF":
            modem = self._modem(step)
            octets = int(step.get("value", "450"))
            pattern = int(step.get("pattern", "0") or 0)
            data = b"\x55" * min(pattern, octets) + bytes(max(0, octets - pattern))
            self._non_ecm(modem, modem.long_indicator, data)
        elif kind == "MSG":
            modem = self._modem(step)
            name = step.get("value")
            coding = self._coding(step)
            data = coded_image(name, coding, int(step.get("min_bits", "0") or 0))
            bitmap = load_image(name)[0]
            if step.get("bad_rows"):
                rows = {int(x) for x in re.findall(r"\d+", step.get("bad_rows"))}
                data = corrupt_rows(data, rows)
                bitmap = None
            self._last_msg = (name, bitmap)
            self._non_ecm(modem, modem.short_indicator, data)
        elif kind == "PP":
            self._partial_page(step)
        elif kind == "CLEAR":
            self._close()
            if self._started and not self.dut.cleared:
                self.dut.hang_up(self.now)
            self._pump(self.now)
        elif kind in ("CED", "CNG"):
            indicator = T30Indicator.CED if kind == "CED" else T30Indicator.CNG
            self._close()
            self._send(IfpPacket(indicator))
            self._advance_to(self.now + (3.0 if kind == "CED" else 0.5))
            self._send(IfpPacket(T30Indicator.NO_SIGNAL))
        else:
            self.fail(step, f"unknown tester step {kind}")

    def _track_dcs(self, wire: bytes) -> None:
        try:
            frame = T30Frame.from_wire(wire)
        except Exception:
            return
        if frame.fcf == Fcf.DCS:
            try:
                self.dcs = parse_dcs(frame.fif)
            except Exception:
                pass

    def _partial_page(self, step: Step) -> None:
        if self._carrier is None or self._carrier[0] != "fast":
            self.fail(step, "PP without a fast carrier opened by PREAMBLE")
        frame_size = int(step.get("frame_size", "64"))
        block = int(step.get("block", "0"))
        bad = int(step.get("crc_error", "-1"))
        data = coded_image(step.get("value"), self._coding(step), int(step.get("min_bits", "0") or 0))
        start = 256 * frame_size * block
        end = min(len(data), start + 256 * frame_size)
        for offset in range(start, end, frame_size):
            index = offset // frame_size
            octets = data[offset:offset + frame_size].ljust(frame_size, b"\x00")
            header = T30Frame(Fcf.FCD, bytes([index & 0xFF]), final=False).to_wire()
            self._hdlc(header + octets, index != bad)
        for _ in range(3):  # T.4 A.3.6.2: three RCP frames close the partial page
            self._hdlc(T30Frame(Fcf.RCP, final=False).to_wire(), True)

    def _receive(self, step: Step) -> None:
        kind = step.type
        start = self.now
        timeout_ms = int(step.get("timeout") or DEFAULT_R_TIMEOUT_MS)
        deadline = start + timeout_ms / 1000
        if kind == "CED":
            item = self._wait_rx(step, deadline, lambda i: isinstance(i, RxIndicator) and i.indicator is T30Indicator.CED)
            if item is None:
                self.fail(step, "no CED")
            began = item.t
            end = self._wait_rx(step, began + 5.0, lambda i: isinstance(i, RxIndicator))
            if end is None:
                self.fail(step, "CED never ended")
            length = end.t - began
            if not 2.6 <= length <= 4.0:
                self.fail(step, f"CED lasted {length:.3f} s, TSB-85 wants 2.6-4 s")
            self._ced_end = end.t
            self.report.checked.append(f"CED {length:.2f} s")
        elif kind == "HDLC":
            self._receive_hdlc(step, deadline)
        elif kind == "SILENCE":
            item = self._wait_rx(step, deadline, lambda i: isinstance(i, RxIndicator) and i.indicator is T30Indicator.NO_SIGNAL)
            if item is None:
                self.fail(step, "the DUT's carrier did not stop")
        elif kind == "CLEAR":
            timein = int(step.get("timein") or 0) / 1000
            self._wait_until_cleared(deadline)
            if not self.dut.cleared:
                self.fail(step, f"the DUT did not end the call within {timeout_ms} ms")
            if timein > 0:
                why = not_applicable(self.script.name, "CLEAR.timein")
                if self.script.annex in _TRANSMIT_ANNEXES:
                    why = why or not_applicable("MRGX01", "CLEAR.timein")
                if why:
                    self.report.not_applicable.append(f"CLEAR timein {timein * 1000:.0f} ms: {why}")
                elif self.now - start < timein:
                    self.fail(step, f"the DUT cleared after {(self.now - start) * 1000:.0f} ms, before {timein * 1000:.0f} ms")
        elif kind == "CNG":
            if self._wait_rx(step, deadline, lambda i: isinstance(i, RxIndicator) and i.indicator is T30Indicator.CNG) is None:
                self.fail(step, "no CNG")
            self.report.checked.append("CNG")
        elif kind in ("TCF", "MSG", "PP"):
            self._receive_fast(step, deadline)
        elif kind == "SET":
            pass  # expectations about what the DUT transmits (polling annexes only)
        else:
            self.fail(step, f"unknown receive step {kind}")

    def _receive_fast(self, step: Step, deadline: float) -> None:
        """TCF, a non-ECM page or an ECM partial page from the DUT: its training indicator on
        the step's modem (long or short train), then its carrier's end (no-signal)."""
        modem = self._modem(step)
        trainings = {modem.long_indicator, modem.short_indicator}
        item = self._wait_rx(step, deadline, lambda i: isinstance(i, RxIndicator) and i.indicator in _TRAININGS)
        if item is None:
            self.fail(step, f"no {step.type} carrier")
        if item.indicator not in trainings:
            self.fail(step, f"{step.type} on {item.indicator.name}, the script expects {step.get('modem')}")
        end = self._wait_rx(step, deadline, lambda i: isinstance(i, RxIndicator) and i.indicator is T30Indicator.NO_SIGNAL)
        if end is None:
            self.fail(step, f"the {step.type} carrier did not end")
        self.report.checked.append(f"{step.type} on {step.get('modem')} ({end.t - item.t:.2f} s)")

    def _wait_until_cleared(self, deadline: float) -> None:
        while not self.dut.cleared and self.now < deadline:
            wake = self.dut.next_wake()
            t = deadline if wake is None else min(deadline, max(wake, self.now + 1e-6))
            self._advance_to(t)

    def _receive_hdlc(self, step: Step, deadline: float) -> None:
        awaited, open_ended = parse_octets(step.get("value", ""))
        alternates = [parse_octets(step.get("xxx"))[0]] if step.get("xxx") else []
        tag = (step.get("tag") or "").split()[0]
        flat = self.script.flat()
        index = flat.index(step)
        following = next((s for s in flat[index + 1:] if s.type == "HDLC" and s.dir == "R"), None)

        def wanted(item) -> bool:
            return isinstance(item, RxFrame) and len(item.wire) >= 2 and item.wire[1] == awaited[1]

        def matches(wire: bytes, pattern: bytes, tail: bool) -> bool:
            return wire[:len(pattern)] == pattern and (tail or len(wire) == len(pattern))

        item = self._wait_rx(step, deadline, wanted)
        if item is None:
            self.fail(step, f"no {tag} from the DUT within {step.get('timeout') or DEFAULT_R_TIMEOUT_MS} ms")
        ok = matches(item.wire, awaited, open_ended) or any(matches(item.wire, a, open_ended) for a in alternates)
        if not ok and tag == "NSF" and following is not None:
            nxt, nxt_tail = parse_octets(following.get("value", ""))
            why = not_applicable(self.script.name, "NSF")
            if why and matches(item.wire, nxt, nxt_tail):
                self._cursor -= 1  # the frame belongs to the next step
                self.report.not_applicable.append(f"{tag}: {why}")
                return
        if not ok:
            self.fail(step, f"expected {step.get('value')} ({tag}), DUT sent {item.wire.hex(' ').upper()}")
        if not item.fcs_ok:
            self.fail(step, f"{tag} arrived with a bad FCS")
        self.report.checked.append(f"{tag} octets")
        if item.burst_start is not None and item.first_data is not None:
            preamble = item.first_data - item.burst_start
            if not 0.85 <= preamble <= 1.15:
                self.fail(step, f"{tag} preamble {preamble * 1000:.0f} ms, TSB-85 wants 850-1150 ms")
            if tag == "DIS" and self._ced_end is not None:
                silence = item.burst_start - self._ced_end
                self._ced_end = None
                if not 0.055 <= silence <= 0.095:
                    self.fail(step, f"CED to DIS silence {silence * 1000:.0f} ms, TSB-85 wants 55-95 ms")
            for name, desc in step.checks:
                if "MCF to DIS interval" in desc and self._last_mcf_end is not None:
                    low, high = (float(x) for x in re.findall(r"(\d+\.\d+)s", desc)[:2])
                    gap = item.burst_start - self._last_mcf_end
                    if not low <= gap <= high:
                        self.fail(step, f"{name}: MCF to DIS {gap:.2f} s, TSB-85 wants {low}-{high} s")
                    self.report.checked.append(f"{name} {gap:.2f} s")
        for name, desc in step.checks:
            if desc.startswith("Do not respond to bad") and self._bad_command_at is not None:
                answered = [f for f in self._discarded if isinstance(f, RxFrame) and f.t >= self._bad_command_at]
                if answered:
                    self.fail(step, f"{name}: the DUT answered a bad-FCS command with "
                                    f"{[f.wire.hex(' ').upper() for f in answered]}")
                self.report.checked.append(name)
        self._bad_command_at = None
        if tag in ("MCF", "MCF or RTP") or awaited[2:3] == b"\x31":
            self._last_mcf_end = item.t


class SpandspDut:
    """SpanDSP 0.0.6's T.38 terminal (C, via ctypes) as the device under test, to check the
    runner itself: it plays the same IFPs to a terminal whose TSB-85 behaviour is known.
    SpanDSP is advanced every 20 ms of simulated time (t38_terminal_send_timeout)."""

    name = "spandsp"
    TICK = 0.02

    def __init__(self, rx_tiff) -> None:
        self.ident = ""
        self.rx_tiff = rx_tiff
        self.terminal = None
        self.t = 0.0
        self._seq = 0
        self._out: list[tuple[float, IfpPacket]] = []

    def set(self, tag: str, value: str | None) -> None:
        if tag == "IDENT":
            self.ident = value or ""

    def answer(self, now: float) -> None:
        from tests.peers.spandsp import SpandspT38Terminal

        self.t = now
        self.terminal = SpandspT38Terminal(calling_party=False, on_ifp=self._on_ifp, ident=self.ident,
                                           rx_tiff=self.rx_tiff, ecm=True, max_bitrate=14400)

    def originate(self, now: float, image: str | None = None, *, ecm_frame_size: int = 256) -> None:
        raise DutCannot("cross-check covers the receive annexes only")

    def _on_ifp(self, raw: bytes, count: int) -> None:
        from udptl.codec import decode_ifp

        packet = decode_ifp(raw, 0)
        self._out.extend([(self.t, packet)] * max(count, 1))

    def advance(self, now: float) -> list[tuple[float, IfpPacket]]:
        while self.terminal is not None and self.t + self.TICK <= now + 1e-9 and self.terminal.phase_e_status is None:
            self.terminal.advance(160)
            self.t += self.TICK
        self.t = max(self.t, now) if self.terminal is None or self.terminal.phase_e_status is not None else self.t
        out, self._out = self._out, []
        return out

    def deliver(self, packet: IfpPacket, now: float) -> None:
        from udptl.codec import encode_ifp

        self._out.extend(self.advance(now))
        self.terminal.rx_ifp(encode_ifp(packet, 0), self._seq)
        self._seq += 1

    def hang_up(self, now: float) -> None:
        self.terminal.terminate()

    def next_wake(self) -> float | None:
        return None if self.cleared else self.t + self.TICK

    @property
    def cleared(self) -> bool:
        return self.terminal is not None and self.terminal.phase_e_status is not None

    def take_pages(self) -> list:
        return []

    def check_status(self, tag: str) -> tuple[bool, str]:
        from tests.peers.spandsp import T30_ERRORS, SpandspT38Terminal

        want = T30_ERRORS[f"T30_ERR_{tag}"]
        got = self.terminal.stats()["current_status"]
        return got == want, f"expected {tag}, SpanDSP reports {SpandspT38Terminal.completion_code_name(got)}"

    def close(self) -> None:
        if self.terminal is not None:
            self.terminal.close()
