"""SpanDSP's T.38 terminal faxes to our T.30 engine, across the whole matrix.

Every cell is one call in simulated time (tests/t30/harness.py): SpanDSP 0.0.6 sends a
TIFF, the IFPs go through our UDPTL sender, a seeded impairment and our UDPTL receiver,
and our engine receives.  A cell passes when SpanDSP reports T30_ERR_OK in phase E, our
engine ends with OK and every page it confirmed is pixel-identical to its source page.

Axes: ECM on/off x MH/MR/MMR (MMR needs ECM) x 204x98 / 204x196 / 204x391 / 300x300 x
A4 / B4 / A3 width (1728 / 2048 / 2432 pixels at 204 dpi; 2592 / 3072 / 3648 at 300 dpi,
T.4 Table 1 - SpanDSP re-scales a 1728-pixel page to 2592 at 300 dpi) x 1, 3 and 10
pages x no loss / 10 % loss with redundancy 3 / burst loss with parity FEC.  Most cells
use short random pages; the cells on one diagonal of the matrix (which meets every value
of every axis) send ITU-T T.24 charts instead.
"""

from __future__ import annotations

import random
import zlib

import pytest

from t38gw.t30 import PageQuality, PageReceived, T30Result
from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal, make_fax_tiff
from tests.support.impairment import Impairment
from tests.t30.harness import run_call
from tests.t30.pages import chart_page, random_page

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

    assert outcome.sender_status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.sender_status or -1)
    ended = outcome.call_ended
    assert ended is not None and ended.result is T30Result.OK, ended
    received = [e for e in outcome.events if isinstance(e, PageReceived)]
    assert [p.number for p in received] == list(range(1, page_count + 1))
    for page, (bitmap, w, h) in zip(received, pages):
        assert page.compression == coding and page.ecm == ecm
        assert (page.width, page.x_dpi, page.y_dpi) == (w, x_dpi, y_dpi)
        if page.ifp_loss_gaps:
            # Non-ECM has no retransmission: when UDPTL could not recover an IFP its rows
            # are gone.  The engine must know and say so (RTP, never a clean MCF).
            assert not ecm and page.quality is not PageQuality.GOOD
            continue
        assert page.height == h and page.bitmap == bitmap, f"page {page.number} differs from its source"
    assert outcome.sender_stats["pages_tx"] == page_count
    assert outcome.wrong_deliveries == 0
    assert outcome.engine.finished
