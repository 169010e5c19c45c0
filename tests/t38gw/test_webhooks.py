"""Webhook signing (Standard Webhooks), the durable spool and the delivery worker,
against a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from t38gw.delivery import DeliveryWorker
from t38gw.ids import new_webhook_id, uuid7
from t38gw.spool import Delivery, DeliveryState, Spool, pending_delivery
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


def _with_worker_running(worker: DeliveryWorker, receiver: _Receiver, script) -> None:
    """Run ``worker.run`` beside ``await script()`` (bounded), then stop it and the receiver."""
    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                await script()
                nursery.cancel_scope.cancel()
    try:
        trio.run(main)
    finally:
        receiver.close()


async def _until(condition, seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds (trio.TooSlowError after ``seconds``)."""
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)


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


def test_a_delivery_that_raises_is_retried_and_the_worker_lives(tmp_path):
    """Issue 9 item 5: a secret that does not decode (``whsec_abc``: sign() raises) and a URL
    httpx refuses (not an httpx.HTTPError) each fail their own attempt; the worker keeps
    delivering the others and retries them once they can work."""
    receiver = _Receiver()
    receiver.status = 204
    clock = [2_000_000_000.0]
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    bad_port_url = receiver.url.replace(f":{receiver.server.server_address[1]}/", ":abc/")
    for msg_id, webhook, url in (("msg_badsecret", "bad", receiver.url), ("msg_badurl", "good", bad_port_url),
                                 ("msg_good", "good", receiver.url)):
        spool.enqueue(id=msg_id, webhook=webhook, url=url, event_type="fax.received", fax_id="f1",
                      body=b'{"n": 1}', now=clock[0])
    worker = DeliveryWorker(spool, {"bad": "whsec_abc", "good": SPEC_SECRET}, wall_clock=lambda: clock[0],
                            attempt_timeout=5.0)

    async def wait_for(condition):
        while not condition():
            await trio.sleep(0.02)

    async def main():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                await wait_for(lambda: spool.get("msg_good").state is DeliveryState.DELIVERED)
                await wait_for(lambda: spool.get("msg_badurl").attempts == 1)
                bad = spool.get("msg_badsecret")
                assert bad.state is DeliveryState.PENDING and bad.attempts == 1
                assert bad.last_error.startswith("ValueError") and "whsec_abc" not in bad.last_error
                assert spool.get("msg_badurl").last_error.startswith("InvalidURL")
                # The operator fixes the secret and the URL; the same worker, still running,
                # delivers both at their next attempt.
                worker.secrets = {"bad": SPEC_SECRET, "good": SPEC_SECRET}
                spool._db.execute("UPDATE deliveries SET url = ? WHERE id = 'msg_badurl'", (receiver.url,))
                clock[0] = max(spool.get(i).next_attempt_at for i in ("msg_badsecret", "msg_badurl"))
                worker.nudge()
                await wait_for(lambda: spool.depth() == 0)
                nursery.cancel_scope.cancel()
    try:
        trio.run(main)
    finally:
        receiver.close()
    assert worker.stats.delivered == 3 and worker.stats.failed_attempts == 2
    assert {h["webhook-id"] for h, _ in receiver.received} == {"msg_good", "msg_badsecret", "msg_badurl"}
    for headers, received_body in receiver.received:
        verify(SPEC_SECRET, headers, received_body, now=clock[0])


def test_worker_probes_an_unhealthy_spool_and_reports_recovery(tmp_path):
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    assert not spool.enqueue(id="msg_1", webhook="w", url="https://x/", event_type="fax.received", fax_id="f1",
                             body=random.Random(1).randbytes(100_000), now=1.0)
    recovered = []
    worker = DeliveryWorker(spool, {}, wall_clock=lambda: 10.0, on_spool_recovered=lambda: recovered.append(1),
                            spool_probe_interval=0.05)

    async def main():
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                await trio.sleep(0.2)
                assert not spool.healthy and recovered == []  # probed, still full
                spool._db.execute("PRAGMA max_page_count = 1073741823")  # space again
                while not recovered:
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
    trio.run(main)
    assert spool.healthy and recovered == [1]


def test_document_is_inline_up_to_the_cap_and_a_link_above_it(tmp_path):
    from t38gw.config import HttpConfig
    from t38gw.webhooks import document_member, document_url, event_body

    pdf = tmp_path / "fax.pdf"
    pdf.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 4)
    size = pdf.stat().st_size
    fax_id = "0190f3b2-aaaa-7bbb-8ccc-123456789012"
    url = document_url(HttpConfig(listen=("127.0.0.1", 8443), certificate="c", private_key="k").base_url, fax_id, "pdf")
    assert url == f"https://127.0.0.1:8443/v1/faxes/{fax_id}/document.pdf"
    inline = document_member("application/pdf", f"{fax_id}.pdf", pdf, size, url)
    assert base64.b64decode(inline["data_base64"]) == pdf.read_bytes() and "url" not in inline
    linked = document_member("application/pdf", f"{fax_id}.pdf", pdf, size - 1, url)
    assert linked == {"content_type": "application/pdf", "filename": f"{fax_id}.pdf", "url": url}
    body = json.loads(event_body("fax.received", "2026-12-06T00:00:00Z", {"id": fax_id}, linked))
    assert body["document"]["url"] == url and "data_base64" not in body["document"]


def test_worker_sends_nothing_while_outcomes_cannot_be_recorded(tmp_path):
    """A failed attempt whose outcome cannot be written stays due: without care the worker
    would POST it again at once, in a loop.  It waits for the spool instead."""
    receiver = _Receiver()  # answers 503
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    spool.enqueue(id="msg_1", webhook="default", url=receiver.url, event_type="fax.received", fax_id="f1",
                  body=b"{}", now=10.0)
    spool._db.execute("PRAGMA query_only = ON")  # every write now fails inside SQLite, as on a dead disk
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, wall_clock=lambda: 10.0, attempt_timeout=5.0,
                            spool_probe_interval=0.1)

    async def script():
        await trio.sleep(1.0)
        assert len(receiver.received) == 1 and not spool.healthy
        spool._db.execute("PRAGMA query_only = OFF")
        await _until(lambda: spool.get("msg_1").attempts != 0, 20)
    _with_worker_running(worker, receiver, script)
    assert spool.healthy and len(receiver.received) == 2  # the unrecorded attempt, then the recorded one


class _SlowFirstReceiver(_Receiver):
    """Answers 204, but holds the answer to ``slow_id`` until ``release`` is set."""

    def __init__(self, slow_id: str):
        super().__init__()
        self.status = 204
        self.release = threading.Event()
        self.arrived: list[str] = []  # webhook-ids, as each POST comes in (before its answer)
        handler = self.server.RequestHandlerClass
        outer = self
        plain_post = handler.do_POST

        def do_post(request):
            outer.arrived.append(request.headers.get("webhook-id"))
            if request.headers.get("webhook-id") == slow_id:
                outer.release.wait(10)
            plain_post(request)

        handler.do_POST = do_post


def test_run_sends_a_new_delivery_while_an_earlier_one_still_waits_for_its_answer(tmp_path):
    # Under a burst of fax ends the worker must not hold a new webhook until every one of
    # the batch it read earlier is answered and recorded (the pass-at-a-time loop did).
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    rng = random.Random(3)
    now = time.time()  # the worker's own clock: both are due at once
    first, second = new_webhook_id(now, rng), new_webhook_id(now, rng)
    receiver = _SlowFirstReceiver(first)
    body = event_body("fax.received", "2033-05-18T03:33:20Z", {"id": "f1", "status": "received"}, None)
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, attempt_timeout=15.0)
    spool.enqueue(id=first, webhook="default", url=receiver.url, event_type="fax.received", fax_id="f1",
                  body=body, now=now)

    async def script():
        await _until(lambda: receiver.arrived)  # the first POST is in, its answer held
        spool.enqueue(id=second, webhook="default", url=receiver.url, event_type="fax.received",
                      fax_id="f2", body=body, now=time.time())
        worker.nudge()
        await _until(lambda: spool.get(second).state is DeliveryState.DELIVERED, 5)
        assert spool.get(first).state is DeliveryState.PENDING  # still unanswered
        receiver.release.set()
        await _until(lambda: spool.get(first).state is DeliveryState.DELIVERED)
    try:
        _with_worker_running(worker, receiver, script)
    finally:
        receiver.release.set()
    assert receiver.arrived == [first, second]
    assert [h["webhook-id"] for h, _ in receiver.received] == [second, first]  # in the order answered
    assert worker.stats.delivered == 2


def test_run_retries_a_failed_delivery_when_it_is_due_again(tmp_path):
    receiver = _Receiver()  # 503 first
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    clock = [2_000_000_000.0]
    msg_id = new_webhook_id(clock[0], random.Random(4))
    body = event_body("fax.received", "2033-05-18T03:33:20Z", {"id": "f1", "status": "received"}, None)
    spool.enqueue(id=msg_id, webhook="default", url=receiver.url, event_type="fax.received", fax_id="f1",
                  body=body, now=clock[0])
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, wall_clock=lambda: clock[0], attempt_timeout=5.0)

    async def script():
        await _until(lambda: worker.stats.failed_attempts >= 1)
        receiver.status = 204
        # The retry's time comes (the worker's clock jumps there); the worker, asleep
        # until then, is woken as it would be by its timer.
        clock[0] = spool.get(msg_id).next_attempt_at
        worker.nudge()
        await _until(lambda: worker.stats.delivered >= 1)
    _with_worker_running(worker, receiver, script)
    assert [h["webhook-id"] for h, _ in receiver.received] == [msg_id, msg_id]
    assert spool.get(msg_id).state is DeliveryState.DELIVERED


class _ReadCountingSpool(Spool):
    """The real spool, counting the reads the worker makes of it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []

    def due(self, *args, **kwargs):
        self.reads.append("due")
        return super().due(*args, **kwargs)

    def next_due_at(self):
        self.reads.append("next_due_at")
        return super().next_due_at()


def _spooled(spool: Spool, fax_id: str, url: str) -> Delivery:
    """Commit a delivery to the spool, and the Delivery the enqueuer hands the worker."""
    now = time.time()
    msg_id = new_webhook_id(now, random.Random(fax_id))
    body = event_body("fax.received", "2033-05-18T03:33:20Z", {"id": fax_id, "status": "received"}, None)
    delivery = pending_delivery(id=msg_id, webhook="default", url=url, event_type="fax.received", fax_id=fax_id,
                                body=body, now=now)
    assert spool.enqueue_delivery(delivery)
    return delivery


def test_an_offered_delivery_is_sent_without_reading_the_spool_back(tmp_path):
    """The gateway hands each fax's freshly spooled webhooks to the worker (offer): they go
    out and are recorded without a spool read per fax (issue 14); a nudge still reads it."""
    receiver = _Receiver()
    receiver.status = 204
    spool = _ReadCountingSpool(tmp_path / "spool.db", rng=random.Random(0))
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, attempt_timeout=5.0)
    sent: list[str] = []

    async def script():
        await _until(lambda: spool.reads == ["due", "next_due_at"])  # the worker's first look
        offered = [_spooled(spool, f"f{n}", receiver.url) for n in range(5)]
        sent.extend(d.id for d in offered)
        worker.offer(offered)
        await _until(lambda: all(spool.get(d.id).state is DeliveryState.DELIVERED for d in offered))
        await trio.sleep(0.2)
        assert spool.reads == ["due", "next_due_at"]
        # Spooled by someone else (a recovery, an outbound job): nudged, read.
        other = _spooled(spool, "f9", receiver.url)
        sent.append(other.id)
        worker.nudge()
        await _until(lambda: spool.get(other.id).state is DeliveryState.DELIVERED)
        assert spool.reads[2:4] == ["due", "next_due_at"]
    _with_worker_running(worker, receiver, script)
    assert sorted(h["webhook-id"] for h, _ in receiver.received) == sorted(sent) and len(sent) == 6
    assert worker.stats.delivered == 6
    for headers, received_body in receiver.received:
        verify(SPEC_SECRET, headers, received_body, now=time.time())


def test_a_delivery_offered_and_also_read_from_the_spool_is_sent_once(tmp_path):
    receiver = _Receiver()
    receiver.status = 204
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, attempt_timeout=5.0)

    async def script():
        await trio.sleep(0.2)
        delivery = _spooled(spool, "f1", receiver.url)
        worker.offer([delivery])
        worker.nudge()  # the same wake-up also reads the spool, which holds it too
        await _until(lambda: spool.get(delivery.id).state is DeliveryState.DELIVERED)
        await trio.sleep(0.3)
    _with_worker_running(worker, receiver, script)
    assert len(receiver.received) == 1 and worker.stats.delivered == 1


def test_outcomes_that_wait_together_are_recorded_in_one_thread_job(tmp_path):
    """While one batch of outcomes waits its turn (before_thread: page writes first), the
    others answered meanwhile join it: one spool transaction and one on_outcomes call."""
    receiver = _Receiver()
    receiver.status = 204
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    told: list[list[str]] = []
    count = 6

    async def page_writes_queued():
        await _until(lambda: len(worker._outcomes) == count)  # everyone answered and waiting

    worker = DeliveryWorker(spool, {"default": SPEC_SECRET}, attempt_timeout=5.0, before_thread=page_writes_queued,
                            on_outcomes=lambda outcomes: told.append([d.fax_id for d, _, _ in outcomes]))
    offered = [_spooled(spool, f"f{n}", receiver.url) for n in range(count)]

    async def script():
        worker.offer(offered)
        await _until(lambda: worker.stats.delivered == count)
    _with_worker_running(worker, receiver, script)
    assert len(told) == 1 and sorted(told[0]) == [f"f{n}" for n in range(count)]
    assert all(spool.get(d.id).state is DeliveryState.DELIVERED for d in offered)
    assert all(spool.get(d.id).body == b"" for d in offered)


def test_spool_due_leaves_out_the_deliveries_a_worker_holds(tmp_path):
    spool = Spool(tmp_path / "spool.db", rng=random.Random(0))
    rng = random.Random(5)
    ids = [new_webhook_id(1_000.0 + n, rng) for n in range(3)]
    for n, msg_id in enumerate(ids):
        spool.enqueue(id=msg_id, webhook="default", url="http://127.0.0.1:9/", event_type="fax.received",
                      fax_id=f"f{n}", body=b"{}", now=1_000.0 + n)
    assert [d.id for d in spool.due(2_000.0)] == ids
    assert [d.id for d in spool.due(2_000.0, exclude={ids[0], ids[2]})] == [ids[1]]
    assert spool.due(2_000.0, exclude=set(ids)) == []
    assert [d.id for d in spool.due(2_000.0, limit=1, exclude={ids[0]})] == [ids[1]]
