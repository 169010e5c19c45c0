"""The fax record on disk: pages as confirmed, final meta, planned webhooks, crash recovery."""

from __future__ import annotations

import json
import random

from imaging import Page
from t38gw import archive, webhooks
from t38gw.config import Config, Route, Webhook
from t38gw.faxrecord import INTERRUPTED_REASON, InboundFax, enqueue_planned, plan_deliveries, recover_archive
from t38gw.spool import Spool
from tests.peers.spandsp import read_fax_tiff
from tests.t30.pages import random_page

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="
CONFIG = Config(webhooks=(Webhook("default", "http://127.0.0.1:9/fax", SECRET),))


def new_record(root, rng) -> InboundFax:
    return InboundFax(fax_id="01a21438-6359-7817-b310-bde014280622", started_at=1_764_000_000.0, root=root,
                      formats=("pdf", "tiff"), sip={"call_id": "c1", "caller": "5550199"}, route_index=None,
                      route=Route(), local_ident="+1 555 0100")


def test_pages_written_as_confirmed_then_recovered_after_a_crash(tmp_path):
    rng = random.Random(3)
    record = new_record(tmp_path, rng)
    bitmap = random_page(rng, 1728, 120)
    record.add_page(Page(1728, 120, 204, 98, bitmap), bad_rows=0)
    record.write(*record.snapshot())
    meta = archive.read_meta(record.folder)
    assert meta["in_progress"] and meta["status"] == "partial"
    assert meta["pages"][0]["sha256"] == archive.page_sha256(bitmap)
    [(tif_bitmap, width, height, x_dpi, y_dpi)] = read_fax_tiff(record.folder / "fax.tif")
    assert (tif_bitmap, width, height, round(x_dpi), round(y_dpi)) == (bitmap, 1728, 120, 204, 98)

    # The gateway died here.  A restart closes the record and spools its webhook, once.
    spool = Spool(tmp_path / "spool.db", rng=rng)
    counts = recover_archive(tmp_path, spool, CONFIG, now=1_764_000_100.0, rng=rng)
    assert counts == {"closed": 1, "requeued": 1}
    meta = archive.read_meta(record.folder)
    assert (meta["status"], meta["reason"], meta["in_progress"]) == ("partial", INTERRUPTED_REASON, False)
    [planned] = meta["deliveries"]
    delivery = spool.get(planned["id"])
    body = json.loads(delivery.body)
    assert body["type"] == "fax.received" and body["data"]["status"] == "partial"
    assert body["document"]["filename"] == f"{record.fax_id}.pdf"
    assert recover_archive(tmp_path, spool, CONFIG, now=1_764_000_200.0, rng=rng) == {"closed": 0, "requeued": 0}
    assert spool.depth() == 1
    # The stored body is what gets signed and sent; a consumer can verify it.
    headers = webhooks.signed_headers(SECRET, delivery.id, 1_764_000_300, delivery.body)
    webhooks.verify(SECRET, headers, delivery.body, 1_764_000_300)


def test_crash_between_meta_and_spool_requeues_the_same_id(tmp_path):
    rng = random.Random(4)
    record = new_record(tmp_path, rng)
    record.finish("failed", "T.30 T1_EXPIRED: no DCS", 1_764_000_050.0)
    plan_deliveries(record.meta, CONFIG.webhooks, 1_764_000_050.0, rng)
    record.write(*record.snapshot())  # step 1 done; "killed" before step 2
    planned_id = record.meta["deliveries"][0]["id"]
    spool = Spool(tmp_path / "spool.db", rng=rng)
    assert recover_archive(tmp_path, spool, CONFIG, now=1_764_000_060.0) == {"closed": 0, "requeued": 1}
    delivery = spool.get(planned_id)
    assert delivery is not None and delivery.event_type == "fax.failed"
    assert "document" not in json.loads(delivery.body)  # no page, nothing to attach
    assert enqueue_planned(spool, record.folder, record.meta, CONFIG, 1_764_000_070.0) == 0
