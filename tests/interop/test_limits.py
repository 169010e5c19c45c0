"""Hardening review item 3, proved with a real sender: a SpanDSP T.38 terminal sends 250
pages; our engine with the default ``[limits] max_pages_per_call`` (200) confirms 200, then
disconnects; the archive record keeps exactly those 200 pages and says ``partial`` with
the reason.  Simulated time (the whole call costs a few seconds of CPU)."""

from __future__ import annotations

import random
import time

from imaging import Page
from t38gw import archive
from t38gw.config import LimitsConfig, Route
from t38gw.faxrecord import InboundFax
from t38gw.t30 import CallEnded, PageReceived, ReceiverConfig, T30Result
from tests.peers.spandsp import T30_ERR_OK, make_fax_tiff, read_fax_tiff
from tests.t38gw.t30.harness import run_call
from tests.t38gw.t30.pages import random_page

SENT = 250
WIDTH, ROWS = 1728, 24  # short pages: the limit counts pages, not rows


def test_a_250_page_sender_stops_at_200_kept_and_partial(tmp_path):
    limit = LimitsConfig().max_pages_per_call
    assert limit == 200
    rng = random.Random(250)
    pages = [(random_page(rng, WIDTH, ROWS), WIDTH, ROWS) for _ in range(SENT)]
    source = tmp_path / "250.tif"
    make_fax_tiff(source, pages)
    outcome = run_call(source, ecm=True, compressions={"mmr"},
                       config=ReceiverConfig(local_ident="+1 555 0100", max_pages=limit), max_sim_seconds=3600)
    received = [e for e in outcome.events if isinstance(e, PageReceived)]
    assert [p.bitmap for p in received] == [bitmap for bitmap, _, _ in pages[:limit]]
    [ended] = [e for e in outcome.events if isinstance(e, CallEnded)]
    assert ended.result is T30Result.LIMIT_REACHED and ended.pages == limit
    assert outcome.sender_status != T30_ERR_OK  # SpanDSP was cut off after page 200
    assert outcome.sender_stats["pages_tx"] == limit

    # The record the gateway keeps for it, written page by page as the session does.
    record = InboundFax(fax_id="01a2146d-84a4-7fa0-abd0-a3c6c76a6329", started_at=time.time(), root=tmp_path / "a",
                        formats=("pdf", "tiff"), sip={"call_id": "c", "caller": "5550199"}, route_index=None,
                        route=Route())
    for page in received:
        record.add_page(Page(page.width, page.height, page.x_dpi, page.y_dpi, page.bitmap), page.bad_rows)
        record.write(*record.snapshot())
    record.finish("partial", f"T.30 {ended.result.value}: {ended.reason}", time.time())
    record.write(*record.snapshot())
    meta = archive.read_meta(record.folder)
    assert meta["status"] == "partial" and "page limit of 200 pages" in meta["reason"]
    assert len(meta["pages"]) == limit and meta["t30"]["pages"] == limit
    stored = read_fax_tiff(record.folder / "fax.tif")
    assert [bitmap for bitmap, *_ in stored] == [bitmap for bitmap, _, _ in pages[:limit]]
