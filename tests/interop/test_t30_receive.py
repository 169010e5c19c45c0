"""SpanDSP's T.38 terminal faxes to our T.30 engine, across the whole matrix.

Every cell is one call in simulated time (tests/t38gw/t30/harness.py): SpanDSP 0.0.6 sends a
TIFF, the IFPs go through our UDPTL sender, a seeded impairment and our UDPTL receiver,
and our engine receives.  A cell passes when SpanDSP reports T30_ERR_OK in phase E, our
engine ends with OK and every page it confirmed is pixel-identical to its source page.

Lossy non-ECM cells: a page during which UDPTL lost image data beyond recovery is answered
RTN (T.30 5.3.6.2) and reported as ``PageRejected`` with the best copy; confirmed pages
are always whole.  What SpanDSP 0.0.6 does after RTN (its t30.c ``case T30_RTN`` in the
sender's phase D, seen in these cells): to MPS it falls back one modem speed, sends a new
DCS + TCF and sends the *same* page again (the PageReceived then carries the rejected
page's number); to EOP it sends DCN at once and still reports T30_ERR_OK (0.0.6 has no
``t30_set_retransmit_capable``, so ``retransmit_capable`` is 0 and that branch gives up);
when no slower modem is left it ends with CANNOT_TRAIN.  (Measured over the 144 lossy
non-ECM cells: 8 of 672 pages rejected, 7 resent and then confirmed, 1 an RTN to EOP.)  So each source page ends confirmed and pixel-identical, or
rejected (with its loss reported) and then either resent or the call ended.  A resend
keeps the rejected page's number when the engine can tell it is the same page (see
``T30Receiver._same_page_again``), else it gets the next number and both are kept.
"""

from __future__ import annotations

import random
import zlib

import pytest

from t38gw.t30 import PageReceived, PageRejected, T30Result
from tests.peers.spandsp import T30_ERR_OK, T30_ERRORS, SpandspT38Terminal, make_fax_tiff
from tests.t38gw.t30.harness import run_call
from tests.t38gw.t30.pages import chart_page, random_page
from udptl.impairment import Impairment

MODES = [("non-ecm", "mh"), ("non-ecm", "mr"), ("ecm", "mh"), ("ecm", "mr"), ("ecm", "mmr")]
RESOLUTIONS = [(204, 98), (204, 196), (204, 391), (300, 300)]
WIDTHS = {"A4": {204: 1728, 300: 2592}, "B4": {204: 2048, 300: 3072}, "A3": {204: 2432, 300: 3648}}
PAGE_COUNTS = [1, 3, 10]
LINKS = ["clean", "loss10-red3", "burst-fec"]


def cells():
    for mi, (ecm, coding) in enumerate(MODES):
        for ri, (x_dpi, y_dpi) in enumerate(RESOLUTIONS):
            for wi, paper in enumerate(WIDTHS):
                for pi, pages in enumerate(PAGE_COUNTS):
                    for li, link in enumerate(LINKS):
                        charts = (mi + ri + wi + pi + li) % 5 == 0
                        cell_id = f"{ecm}-{coding}-{x_dpi}x{y_dpi}-{paper}-p{pages}-{link}{'-charts' if charts else ''}"
                        yield pytest.param(ecm == "ecm", coding, x_dpi, y_dpi, paper, pages, link, charts, id=cell_id)


CELLS = list(cells())


def test_chart_cells_cover_every_axis_value():
    chart_cells = [c.values for c in CELLS if c.values[7]]
    for position, axis in ((1, {c for _, c in MODES}), (3, {y for _, y in RESOLUTIONS}), (4, set(WIDTHS)),
                           (5, set(PAGE_COUNTS)), (6, set(LINKS)), (0, {True, False})):
        assert {cell[position] for cell in chart_cells} == axis


def links(link: str, seed: int):
    rng = random.Random(seed)
    if link == "clean":
        return {}
    if link == "loss10-red3":
        return dict(redundancy=3, to_engine=Impairment(random.Random(rng.random()), loss=0.10).transmit,
                    to_sender=Impairment(random.Random(rng.random()), loss=0.10).transmit)
    # Gilbert-Elliott bursts of 2 datagrams on average, entered every ~50 datagrams.
    return dict(fec=True, to_engine=Impairment(random.Random(rng.random()), burst_loss=(0.02, 0.5)).transmit,
                to_sender=Impairment(random.Random(rng.random()), burst_loss=(0.02, 0.5)).transmit)


@pytest.mark.parametrize("ecm,coding,x_dpi,y_dpi,paper,page_count,link,charts", CELLS)
def test_spandsp_sends_to_engine(tmp_path, ecm, coding, x_dpi, y_dpi, paper, page_count, link, charts):
    seed = zlib.crc32(repr((ecm, coding, x_dpi, y_dpi, paper, page_count, link)).encode())
    rng = random.Random(seed)
    width = WIDTHS[paper][x_dpi]
    if charts:
        pages = [(chart_page(1 + (i % 8), width), width) for i in range(page_count)]
    else:
        pages = [(random_page(rng, width, rng.randrange(40, 201)), width) for _ in range(page_count)]
    pages = [(bitmap, w, len(bitmap) // (w // 8)) for bitmap, w in pages]
    tiff = tmp_path / "tx.tif"
    make_fax_tiff(tiff, pages, x_dpi=x_dpi, y_dpi=y_dpi)

    outcome = run_call(tiff, ecm=ecm, compressions={coding}, seed=seed, max_sim_seconds=3000, **links(link, seed))

    ended = outcome.call_ended
    page_events = [e for e in outcome.events if isinstance(e, (PageReceived, PageRejected))]
    rejected = [e for e in page_events if isinstance(e, PageRejected)]
    if rejected:
        assert not ecm and link != "clean", rejected  # only lost image data is rejected here
    else:
        assert outcome.sender_status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.sender_status or -1)
        assert ended is not None and ended.result is T30Result.OK, ended
        assert len(page_events) == page_count
    assert ended is not None
    assert page_events, "no page at all"
    confirmed = 0  # source pages confirmed so far, in order
    last_number = 0
    for i, event in enumerate(page_events):
        bitmap, w, h = pages[confirmed]  # SpanDSP sends its pages in order, resending after RTN
        assert (event.width, event.x_dpi, event.y_dpi, event.compression) == (w, x_dpi, y_dpi, coding)
        if isinstance(event, PageReceived):
            assert event.ecm == ecm and event.ifp_loss_gaps == 0  # confirmed pages are whole
            assert event.height == h and event.bitmap == bitmap, f"page {event.number} differs from its source"
            confirmed += 1
        else:
            # The best copy of a page with unrecovered image loss, never confirmed: SpanDSP
            # sends that page again or the call ends here.
            assert event.bitmap is not None and event.ifp_loss_gaps > 0 and event.rows_lost_estimate > 0
        # Numbers: a resend the engine recognises keeps the rejected page's number; one it
        # cannot tell from a new page (the rows before the loss were blank) gets the next
        # number, so the rejected copy is never taken for replaced.
        if i and isinstance(page_events[i - 1], PageRejected):
            assert event.number in (last_number, last_number + 1)
        else:
            assert event.number == last_number + 1
        last_number = event.number
    if rejected and isinstance(page_events[-1], PageRejected):
        # RTN to the last page's EOP (SpanDSP sends DCN), or no slower modem left.
        assert ended.result is T30Result.RX_DCNNORTN, ended
        assert outcome.sender_status in (T30_ERR_OK, T30_ERRORS["T30_ERR_CANNOT_TRAIN"]), outcome.sender_status
    else:
        assert confirmed == page_count
        assert ended.result is T30Result.OK and outcome.sender_status == T30_ERR_OK, (ended, outcome.sender_status)
    if rejected:
        # Before each resend SpanDSP retrained with a new DCS.
        dcs_sent = sum(1 for d, f in outcome.spandsp_frames if d == "tx" and f[2] & 0xFE == 0x82)
        assert dcs_sent >= 1 + sum(1 for i, e in enumerate(page_events[:-1]) if isinstance(e, PageRejected))
    assert outcome.wrong_deliveries == 0
    assert outcome.engine.finished
