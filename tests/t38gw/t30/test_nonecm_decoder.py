"""T30Receiver with its default non-ECM decoder (imaging.nonecm) behaves exactly as with
the streaming decoder it replaced, and takes the libtiff path where it should.

Every scenario runs twice, on the same IFPs: once with the default decoder factory (spied
on, to see which path each page took) and once with ``imaging_decoder`` (StreamingDecoder,
as before issue #14).  Everything observable must match: events (pages with their
bitmaps, bad rows, quality; rejected copies with the loss estimate), the frames sent
(MCF/RTP/RTN) and the counters.  The calls with a real peer are SpanDSP's T.38 terminal
sending through our UDPTL, perfect and lossy.
"""

from __future__ import annotations

import random

import pytest

from imaging.nonecm import NonEcmPageDecoder
from t38gw.t30 import (
    CallEnded,
    Compression,
    Fcf,
    PageReceived,
    PageRejected,
    ReceiverConfig,
    T30Receiver,
    T30Result,
)
from t38gw.t30.receiver import imaging_decoder, non_ecm_decoder
from t38gw.t30.dcs import Modulation
from tests.peers.spandsp import T30_ERR_OK, make_fax_tiff
from tests.t38gw.t30 import scripted as s
from tests.t38gw.t30.harness import run_call
from tests.t38gw.t30.pages import chart_page
from udptl.impairment import Impairment

WIDTH = 1728


class Spy:
    """The default factory, keeping each decoder it made."""

    def __init__(self) -> None:
        self.decoders: list = []

    def __call__(self, compression: Compression, width: int):
        decoder = non_ecm_decoder(compression, width)
        self.decoders.append(decoder)
        return decoder

    @property
    def paths(self) -> list[str | None]:
        return [getattr(decoder, "path", None) for decoder in self.decoders]


def observed(driver: s.Driver):
    driver.flush()
    engine = driver.engine
    return driver.events, driver.sent_names(), engine.counters, engine.pages_confirmed, engine._rejected_copy


def run_both(script, **config):
    """``script(driver)`` against the default decoder and against StreamingDecoder; both
    must be seen to do the same.  Returns the default run's driver and spy."""
    config.setdefault("local_ident", "+1 555 0100")
    spy = Spy()
    new = s.Driver(T30Receiver(ReceiverConfig(**config), decoder_factory=spy))
    old = s.Driver(T30Receiver(ReceiverConfig(**config), decoder_factory=imaging_decoder))
    script(new)
    script(old)
    assert observed(new) == observed(old)
    assert spy.decoders and all(isinstance(d, NonEcmPageDecoder) for d in spy.decoders)
    return new, spy


def trained(driver: s.Driver, compression: Compression) -> None:
    driver.wait(6.0)
    driver.feed(s.dcs_sequence(Modulation.V17_14400, compression=compression))
    driver.feed(s.tcf(Modulation.V17_14400))
    driver.flush()


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def coded():
    bitmap = chart_page(4, WIDTH, max_rows=400)
    height = len(bitmap) // (WIDTH // 8)
    return bitmap, {c: s.coded_page(bitmap, WIDTH, height, c) for c in (Compression.MH, Compression.MR)}


COMPRESSIONS = [Compression.MH, Compression.MR]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_clean_pages_take_the_libtiff_path(coded, compression):
    bitmap, data = coded

    def script(d):
        trained(d, compression)
        d.feed(s.image_carrier(Modulation.V17_14400, data[compression], chunk=36))
        d.feed(s.control(s.frame(Fcf.MPS)))
        d.feed(s.image_carrier(Modulation.V17_14400, data[compression] + bytes(range(200)), chunk=36))
        d.feed(s.control(s.frame(Fcf.EOP)))
        d.feed(s.control(s.frame(Fcf.DCN)))

    d, spy = run_both(script)
    assert spy.paths == ["libtiff", "libtiff"]
    assert [p.bitmap == bitmap and p.bad_rows == 0 for p in of(d.events, PageReceived)] == [True, True]
    assert d.sent_names()[-2:] == ["MCF", "MCF"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("hits", [3, 40])
def test_damaged_pages_without_loss(coded, compression, hits):
    # A noisy analogue line on the far side: bad rows in the data, no IFP lost.
    _bitmap, data = coded
    damaged = bytearray(data[compression])
    rng = random.Random(hits)
    for _ in range(hits):
        damaged[rng.randrange(100, len(damaged) - 50)] ^= 1 << rng.randrange(8)

    def script(d):
        trained(d, compression)
        d.feed(s.image_carrier(Modulation.V17_14400, bytes(damaged), chunk=36))
        d.feed(s.control(s.frame(Fcf.EOP)))

    d, spy = run_both(script)
    (page,) = of(d.events, PageReceived) + of(d.events, PageRejected)
    assert page.bad_rows > 0 and spy.paths == ["streaming"]
    if hits == 40:
        assert d.sent_names()[-1] in ("RTP", "RTN")


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("where", ["middle", "after_rtc", "before_data", "no_image_data_in_it"])
def test_lost_ifps(coded, compression, where):
    _bitmap, data = coded
    packets = s.image_carrier(Modulation.V17_14400, data[compression] + bytes(300), chunk=36)
    # ifps_lost before the packet at ``cut``; the lost ones never arrive.  In the last case
    # the IFP lost mid-page carried no image data (nothing is missing from the data fed):
    # only the loss report tells, and it must still keep the page from the libtiff path.
    cut = {"middle": len(packets) // 2, "after_rtc": len(packets) - 2, "before_data": 1,
           "no_image_data_in_it": len(packets) // 2}[where]
    lost = {"middle": 3, "after_rtc": 1, "before_data": 3, "no_image_data_in_it": 0}[where]

    def script(d):
        trained(d, compression)
        d.feed(packets[:cut])
        d.events += d.engine.ifps_lost(max(lost, 1), d.now)
        d.feed(packets[cut + lost:])
        d.feed(s.control(s.frame(Fcf.MPS)))

    d, spy = run_both(script)
    if where == "after_rtc":
        assert d.sent_names()[-1] == "MCF" and spy.paths == ["libtiff"]
    else:
        (rejected,) = of(d.events, PageRejected)
        assert rejected.ifp_loss_gaps == 1 and d.sent_names()[-1] == "RTN"
        assert spy.paths == ["streaming"]


def test_page_over_the_row_limit_ends_the_call_at_the_same_packet(coded):
    _bitmap, data = coded

    def script(d):
        trained(d, Compression.MR)
        d.feed(s.image_carrier(Modulation.V17_14400, data[Compression.MR], chunk=36))
        d.feed(s.control(s.frame(Fcf.EOP)))

    d, _spy = run_both(script, max_page_rows=150)
    (ended,) = of(d.events, CallEnded)
    assert ended.result is T30Result.LIMIT_REACHED


# --- a real peer: SpanDSP's T.38 terminal through our UDPTL, simulated time ---


def spandsp_call(tmp_path, compression: str, decoder_factory, *, loss: float = 0.0, seed: int = 1):
    pages = [(chart_page(n, WIDTH, max_rows=300), WIDTH) for n in (1, 5)]
    pages = [(b, w, len(b) // (w // 8)) for b, w in pages]
    tx = tmp_path / f"tx-{compression}.tif"
    if not tx.exists():
        make_fax_tiff(tx, pages, x_dpi=204, y_dpi=98)
    channel = {}
    if loss:
        rng = random.Random(seed)
        channel = dict(to_engine=Impairment(random.Random(rng.random()), loss=loss).transmit,
                       to_sender=Impairment(random.Random(rng.random()), loss=loss).transmit)
    outcome = run_call(tx, ecm=False, compressions={compression}, decoder_factory=decoder_factory, seed=seed,
                       **channel)
    return outcome, [bitmap for bitmap, _w, _h in pages]


@pytest.mark.parametrize("compression", ["mh", "mr"])
def test_spandsp_sender_perfect_link(tmp_path, compression):
    spy = Spy()
    new, bitmaps = spandsp_call(tmp_path, compression, spy)
    old, _ = spandsp_call(tmp_path, compression, imaging_decoder)
    assert new.sender_status == T30_ERR_OK
    assert [p.bitmap for p in new.pages] == bitmaps
    assert spy.paths == ["libtiff", "libtiff"]
    assert new.events == old.events


@pytest.mark.parametrize("loss, seed", [(0.01, 3), (0.01, 5), (0.02, 3)])
def test_spandsp_sender_lossy_link(tmp_path, loss, seed):
    # Random loss without redundancy: pages with image data lost (RTN, sent again) and
    # whole ones; both decoders must have the call go the same way, IFP for IFP.
    spy = Spy()
    new, bitmaps = spandsp_call(tmp_path, "mr", spy, loss=loss, seed=seed)
    old, _ = spandsp_call(tmp_path, "mr", imaging_decoder, loss=loss, seed=seed)
    assert new.events == old.events
    assert new.sender_stats == old.sender_stats and new.sender_status == old.sender_status
    rejected = [e for e in new.events if isinstance(e, PageRejected)]
    assert rejected and all(e.ifp_loss_gaps for e in rejected)
    # A page with a loss noted never comes from libtiff; the whole ones do.
    assert spy.paths.count("streaming") == len(rejected)
    assert spy.paths.count("libtiff") == len(new.pages) >= 1
    assert all(p.bitmap in bitmaps for p in new.pages)
