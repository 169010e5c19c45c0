"""Webhook delivery outcomes reach meta.json ``deliveries`` and the metrics: delivered and dead."""

from __future__ import annotations

import json
import random

import httpx
import trio

from t38gw import archive, webhooks
from t38gw.config import ArchiveConfig, Config, HttpConfig, Route, Webhook
from t38gw.faxrecord import InboundFax, enqueue_planned, plan_deliveries
from t38gw.gateway import Gateway

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="
NOW = 1_764_000_000.0


def gateway_with_one_fax(tmp_path, give_up_after: float):
    config = Config(webhooks=(Webhook("default", "http://127.0.0.1:9/fax", SECRET),),
                    archive=ArchiveConfig(dir=str(tmp_path / "archive")), spool=str(tmp_path / "spool.db"),
                    http=HttpConfig(listen=("127.0.0.1", 9)))
    gateway = Gateway(config, rng=random.Random(1))
    gateway.spool.give_up_after = give_up_after
    record = InboundFax(fax_id="01a21438-6359-7817-b310-bde014280622", started_at=NOW,
                        root=gateway.archive_root, formats=("pdf",), sip={"call_id": "c1"}, route_index=None,
                        route=Route())
    record.finish("failed", "T.30 T1_EXPIRED", NOW + 40)
    plan_deliveries(record.meta, config.webhooks, NOW + 40, random.Random(2))
    record.write(*record.snapshot())
    gateway.index.upsert(record.meta, record.folder)
    enqueue_planned(gateway.spool, record.folder, record.meta, config, NOW + 40)
    gateway.worker.wall_clock = lambda: NOW + 41
    return gateway, record


def deliver_once(gateway, answer) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await gateway.worker.deliver_due(client)

    trio.run(main)
    return seen


def test_delivered_is_recorded(tmp_path):
    gateway, record = gateway_with_one_fax(tmp_path, give_up_after=24 * 3600)
    [request] = deliver_once(gateway, lambda request: httpx.Response(204))
    webhooks.verify(SECRET, dict(request.headers), request.content, NOW + 41)
    assert json.loads(request.content)["type"] == "fax.failed"
    [delivery] = archive.read_meta(record.folder)["deliveries"]
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)
    spooled = gateway.spool.get(delivery["id"])  # the record stays, the patient data goes (issue 9 item 4)
    assert spooled.state.value == "delivered" and spooled.body == b""
    assert 't38gw_webhook_deliveries_total{result="delivered"} 1.0' in gateway.metrics.exposition().decode()
    gateway.spool.close()


def test_dead_letter_is_recorded(tmp_path):
    gateway, record = gateway_with_one_fax(tmp_path, give_up_after=0)
    [request] = deliver_once(gateway, lambda request: httpx.Response(500))
    [delivery] = archive.read_meta(record.folder)["deliveries"]
    assert (delivery["state"], delivery["last_error"]) == ("dead", "HTTP 500")
    text = gateway.metrics.exposition().decode()
    assert 't38gw_webhook_deliveries_total{result="dead"} 1.0' in text
    assert "t38gw_webhook_spool_depth 0.0" in text
    assert deliver_once(gateway, lambda request: httpx.Response(200)) == []  # dead stays dead
    gateway.spool.close()
