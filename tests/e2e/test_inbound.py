"""End to end on loopback in real time: a raw-SIP + SpanDSP far end calls `t38gw serve`."""

from __future__ import annotations

import base64
import json
import random
import time

import pytest

from t38gw import webhooks
from tests.e2e.farend import CallPlan, FarEnd
from tests.e2e.support import SECRET, GatewayProcess, WebhookReceiver, pdf_page_sizes, pdf_pages, tiff_pages
from tests.peers.spandsp import T30_ERR_OK
from tests.t30.pages import chart_page, random_page

pytestmark = pytest.mark.realtime


def source_pages(seed: int, count: int, rows: int = 300) -> list[tuple[bytes, int, int]]:
    rng = random.Random(seed)
    pages = [(chart_page(1, 1728, max_rows=rows), 1728, rows)]
    pages += [(random_page(rng, 1728, rows), 1728, rows) for _ in range(count - 1)]
    return pages


def assert_pages_identical(gateway: GatewayProcess, meta: dict, pages, x_dpi, y_dpi, tmp_path) -> None:
    folder = gateway.folder(meta)
    tif = tiff_pages(folder / "fax.tif")
    assert [(w, h) for _, w, h, _, _ in tif] == [(w, h) for _, w, h in pages]
    for (bitmap, _, _, tx, ty), (source, _, _) in zip(tif, pages):
        assert bitmap == source
        assert (round(tx), round(ty)) == (x_dpi, y_dpi)
    # True physical size: 1728 pels at 204 dpi are 8.47 in wide, rows / y_dpi tall.
    sizes = pdf_page_sizes(folder / "fax.pdf")
    expected = [(w * 72 / x_dpi, h * 72 / y_dpi) for _, w, h in pages]
    assert len(sizes) == len(expected)
    for size, want in zip(sizes, expected):
        assert size == pytest.approx(want, abs=0.01)
    pdf = pdf_pages(folder / "fax.pdf", [(w, h, x_dpi, y_dpi) for _, w, h in pages], tmp_path)
    assert len(pdf) == len(pages)
    for (bitmap, w, h), source in zip(pdf, pages):
        assert (bitmap, w, h) == source


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def gateway(tmp_path, webhook_receiver):
    gw = GatewayProcess(tmp_path, webhook_url=webhook_receiver.url).start()
    yield gw
    gw.stop()


def test_t38_in_first_invite_ecm_pages_archived_and_webhook(gateway, webhook_receiver, tmp_path):
    pages = source_pages(1, 2)
    result = FarEnd(gateway.sip_address, CallPlan(pages=pages, ecm=True), tmp_path).run()
    assert result.invite_status == 200, result
    assert result.phase_e_status == T30_ERR_OK, result

    [meta] = gateway.wait_for_faxes(1, timeout=15)
    assert meta["status"] == "received", meta
    assert meta["t30"]["ecm"] is True and meta["t30"]["pages"] == 2
    assert meta["t30"]["remote_ident"] == "+1 555 0199"
    assert meta["sip"]["did"] == "5550100" and meta["sip"]["caller"] == "5550199"
    assert meta["t38"]["packets_received"] > 0
    assert [p["height_px"] for p in meta["pages"]] == [300, 300]
    assert_pages_identical(gateway, meta, pages, 204, 196, tmp_path)

    posts = webhook_receiver.wait_for(lambda posts: posts, timeout=20)
    assert posts, gateway.log_text()[-3000:]
    post = posts[0]
    webhooks.verify(SECRET, post.headers, post.body, time.time())
    body = json.loads(post.body)
    assert body["type"] == "fax.received"
    assert body["data"]["id"] == meta["id"]
    pdf = base64.b64decode(body["document"]["data_base64"])
    assert body["document"]["content_type"] == "application/pdf"
    assert pdf == (gateway.folder(meta) / "fax.pdf").read_bytes()
    delivered = gateway.wait_for_faxes(1, timeout=10)[0]["deliveries"]
    assert [d["state"] for d in delivered] == ["delivered"]
    assert delivered[0]["id"] == post.headers["webhook-id"]
