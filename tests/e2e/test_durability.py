"""Webhooks survive a receiver outage and the gateway being SIGKILLed; so do confirmed pages."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from t38gw import webhooks
from tests.e2e.farend import CallPlan, FarEnd
from tests.e2e.support import SECRET, GatewayProcess, WebhookReceiver
from tests.e2e.test_inbound import assert_pages_identical, source_pages
from tests.peers.spandsp import T30_ERR_OK

pytestmark = pytest.mark.realtime


def test_receiver_outage_and_sigkill_lose_nothing(tmp_path):
    receiver = WebhookReceiver().start()
    receiver.status = 503
    gateway = GatewayProcess(tmp_path, webhook_url=receiver.url).start()
    try:
        # 1. The receiver answers 503, then recovers: the same webhook-id arrives again.
        pages_a = source_pages(11, 1)
        result = FarEnd(gateway.sip_address, CallPlan(pages=pages_a, caller="5550401", seed=11), tmp_path).run()
        assert result.phase_e_status == T30_ERR_OK, result
        first = receiver.wait_for(lambda posts: posts, timeout=20)
        assert first and first[0].answered == 503
        msg_id = first[0].headers["webhook-id"]
        receiver.status = 200
        posts = receiver.wait_for(lambda posts: any(p.answered == 200 for p in posts), timeout=20)
        delivered = [p for p in posts if p.answered == 200]
        assert [p.headers["webhook-id"] for p in delivered] == [msg_id]
        webhooks.verify(SECRET, delivered[0].headers, delivered[0].body, time.time())
        meta_a = gateway.wait_for_faxes(1, timeout=10)[0]
        assert meta_a["deliveries"][0]["state"] == "delivered" and meta_a["deliveries"][0]["attempts"] == 2

        # 2. The receiver is down when the next fax ends, and the gateway is killed.
        receiver.stop()
        pages_b = source_pages(12, 2)
        result = FarEnd(gateway.sip_address, CallPlan(pages=pages_b, caller="5550402", seed=12), tmp_path).run()
        assert result.phase_e_status == T30_ERR_OK, result
        metas = gateway.wait_for_faxes(2, timeout=10)
        [meta_b] = [m for m in metas if m["sip"]["caller"] == "5550402"]
        [planned] = meta_b["deliveries"]
        assert planned["state"] == "pending"

        # 3. Killed mid-document, right after the first page was confirmed.
        abort = threading.Event()
        pages_c = source_pages(13, 3, rows=600)
        plan_c = CallPlan(pages=pages_c, caller="5550403", seed=13, abort=abort, max_seconds=60)
        far_c = threading.Thread(target=FarEnd(gateway.sip_address, plan_c, tmp_path).run)
        far_c.start()
        deadline = time.monotonic() + 45
        meta_c = None
        while time.monotonic() < deadline and meta_c is None:
            for fax in gateway.faxes():
                meta = gateway.meta(fax["id"])
                if meta["sip"]["caller"] == "5550403" and len(meta["pages"]) >= 1:
                    meta_c = meta
            time.sleep(0.05)
        assert meta_c is not None and meta_c["in_progress"], gateway.log_text()[-3000:]
        gateway.stop(signal.SIGKILL)
        abort.set()
        far_c.join(30)
        assert not far_c.is_alive()

        # 4. Restart with the receiver back: both webhooks arrive, b's with its planned id.
        receiver = WebhookReceiver(receiver.port).start()
        gateway.start()
        # b's delivery keeps the back-off it earned while the receiver was down (up to
        # 5 + 10 + 20 s by now), so allow for that.
        posts = receiver.wait_for(lambda posts: len({p.headers["webhook-id"] for p in posts}) >= 2, timeout=75)
        by_caller = {json.loads(p.body)["data"]["sip"]["caller"]: p for p in posts}
        assert set(by_caller) == {"5550402", "5550403"}, gateway.log_text()[-3000:]
        assert by_caller["5550402"].headers["webhook-id"] == planned["id"]
        for post in posts:
            webhooks.verify(SECRET, post.headers, post.body, time.time())
        body_c = json.loads(by_caller["5550403"].body)
        assert body_c["type"] == "fax.received"
        assert body_c["data"]["status"] == "partial"
        assert body_c["data"]["reason"] == "the gateway stopped during the call"
        metas = gateway.wait_for_faxes(3, timeout=10)
        [meta_c] = [m for m in metas if m["sip"]["caller"] == "5550403"]
        assert len(meta_c["pages"]) >= 1
        assert_pages_identical(gateway, meta_c, pages_c[:len(meta_c["pages"])], 204, 196, tmp_path)
        [meta_b] = [m for m in metas if m["sip"]["caller"] == "5550402"]
        assert_pages_identical(gateway, meta_b, pages_b, 204, 196, tmp_path)
    finally:
        gateway.stop()
        receiver.stop()


def test_sigterm_finishes_running_fax_and_refuses_new_calls(tmp_path):
    receiver = WebhookReceiver().start()
    gateway = GatewayProcess(tmp_path, webhook_url=receiver.url).start()
    try:
        pages = source_pages(21, 2)
        outcome: dict = {}
        running = threading.Thread(target=lambda: outcome.setdefault(
            "result", FarEnd(gateway.sip_address, CallPlan(pages=pages, caller="5550501", seed=21), tmp_path).run()))
        running.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "t30_phase_b" not in gateway.log_text():
            time.sleep(0.05)
        gateway.proc.send_signal(signal.SIGTERM)
        while time.monotonic() < deadline and "shutdown_started" not in gateway.log_text():
            time.sleep(0.05)
        refused = FarEnd(gateway.sip_address, CallPlan(pages=source_pages(22, 1), caller="5550502", seed=22,
                                                       max_seconds=10), tmp_path).run()
        assert refused.invite_status == 503, refused
        running.join(90)
        assert outcome["result"].phase_e_status == T30_ERR_OK, outcome
        assert gateway.proc.wait(60) == 0
        [meta_path] = list((tmp_path / "archive").rglob("meta.json"))
        meta = json.loads(meta_path.read_text())
        assert meta["status"] == "received" and meta["sip"]["caller"] == "5550501"
        assert_pages_identical(gateway, meta, pages, 204, 196, tmp_path)
        # The spool was flushed before the process exited.
        assert [p.headers["webhook-id"] for p in receiver.posts if p.answered == 200] == [meta["deliveries"][0]["id"]]
        assert meta["deliveries"][0]["state"] == "delivered"
    finally:
        gateway.stop()
        receiver.stop()
