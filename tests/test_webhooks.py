"""Webhook signing (Standard Webhooks), the durable spool and the delivery worker,
against a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from t38gw.delivery import DeliveryWorker
from t38gw.ids import new_webhook_id, uuid7
from t38gw.spool import DeliveryState, Spool
from t38gw.webhooks import WebhookVerificationError, event_body, sign, verify

# Standard Webhooks' published test vector (standard-webhooks spec repository, README):
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_standard_webhooks_vector():
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_is_hmac_of_id_timestamp_body():
    key = base64.b64decode(SPEC_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{SPEC_ID}.{SPEC_TIMESTAMP}.".encode() + SPEC_BODY, hashlib.sha256).digest()
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == "v1," + base64.b64encode(digest).decode()


def test_verify_rejects_tampering_and_stale_timestamps():
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}
    verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    with pytest.raises(WebhookVerificationError):
        verify(SPEC_SECRET, headers, SPEC_BODY + b" ", now=SPEC_TIMESTAMP)
    with pytest.raises(WebhookVerificationError):
        verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 3600)
    with pytest.raises(WebhookVerificationError):
        verify(SPEC_SECRET, {**headers, "webhook-id": "msg_other"}, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_uuid7_sorts_by_time_and_has_version_7():
    rng = random.Random(1)
    ids = [uuid7(t, rng) for t in (1_700_000_000.000, 1_700_000_000.001, 1_700_000_100.0)]
    assert ids == sorted(ids)
    assert all(u.version == 7 for u in ids)


def test_spool_survives_reopen_and_backs_off_then_dies(tmp_path):
    path = tmp_path / "spool.db"
    spool = Spool(path, rng=random.Random(0), give_up_after=100.0)
    spool.enqueue(id="msg_1", webhook="default", url="http://127.0.0.1:1/", event_type="fax.received",
                  fax_id="f1", body=b"{}", now=1000.0)
    spool.close()
    spool = Spool(path, rng=random.Random(0), give_up_after=100.0)  # as after a kill -9 and restart
    assert [d.id for d in spool.due(1000.0)] == ["msg_1"]
    delays = []
    now = 1000.0
    while spool.mark_failed("msg_1", "HTTP 503", now) is DeliveryState.PENDING:
        next_at = spool.get("msg_1").next_attempt_at
        delays.append(next_at - now)
        assert spool.due(now) == []
        now = next_at
    assert delays[1] > delays[0] * 1.3  # exponential, with jitter
    assert spool.get("msg_1").state is DeliveryState.DEAD
    assert spool.depth() == 0


class _Receiver:
    """A real HTTP server on loopback that records webhooks; can answer 503 until told otherwise."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.status = 503
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fax"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_worker_retries_until_receiver_is_up_and_signature_verifies(tmp_path):
    receiver = _Receiver()
    clock = [2_000_000_000.0]
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    body = event_body("fax.received", "2033-05-18T03:33:20Z", {"id": "f1", "status": "received"}, None)
    msg_id = new_webhook_id(clock[0], random.Random(2))
    spool.enqueue(id=msg_id, webhook="default", url=receiver.url, event_type="fax.received",
                  fax_id="f1", body=body, now=clock[0])
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, wall_clock=lambda: clock[0], attempt_timeout=5.0)

    async def main():
        import httpx
        async with httpx.AsyncClient() as http:
            await worker.deliver_due(http)             # receiver answers 503
            assert worker.stats.failed_attempts == 1
            await worker.deliver_due(http)             # not due yet: nothing sent
            assert len(receiver.received) == 1
            receiver.status = 204
            clock[0] = spool.get(msg_id).next_attempt_at
            await worker.deliver_due(http)
    try:
        trio.run(main)
    finally:
        receiver.close()
    assert worker.stats.delivered == 1
    assert spool.get(msg_id).state is DeliveryState.DELIVERED
    assert [h["webhook-id"] for h, _ in receiver.received] == [msg_id, msg_id]
    headers, received_body = receiver.received[-1]
    verify(SPEC_SECRET, headers, received_body, now=clock[0])
    assert json.loads(received_body)["type"] == "fax.received"


def test_worker_counts_connection_refused_as_failure(tmp_path):
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    spool.enqueue(id="msg_x", webhook="default", url="http://127.0.0.1:9/", event_type="fax.failed",
                  fax_id="f2", body=b"{}", now=10.0)
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, wall_clock=lambda: 10.0, attempt_timeout=2.0)

    async def main():
        import httpx
        async with httpx.AsyncClient() as http:
            await worker.deliver_due(http)
    trio.run(main)
    delivery = spool.get("msg_x")
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 1
    assert "Connect" in delivery.last_error
