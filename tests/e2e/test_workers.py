"""``[server] workers = 2``: one SIP port, two gateway processes, one gateway to the outside
(issue 14): calls spread by Call-ID, the API, webhooks and /metrics see every call, and a
worker killed mid-fax loses no confirmed page while the other worker's call goes on."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from t38gw.workers import owner_of
from tests.e2e.farend import CallPlan, FarEnd
from tests.e2e.support import GatewayProcess, WebhookReceiver
from tests.e2e.test_inbound import assert_pages_identical, fax_by_caller, source_pages
from tests.peers.spandsp import T30_ERR_OK

pytestmark = pytest.mark.realtime


def call_id_for(worker: int, tag: str) -> str:
    """A Call-ID the supervisor hands to ``worker`` (of 2)."""
    for n in range(10_000):
        call_id = f"{tag}{n}@farend"
        if owner_of(call_id, 2) == worker:
            return call_id
    raise AssertionError("no Call-ID found")


def far_end(gateway: GatewayProcess, plan: CallPlan, worker: int, tmp_path) -> FarEnd:
    far = FarEnd(gateway.sip_address, plan, tmp_path)
    far.call_id = call_id_for(worker, f"w{worker}-{plan.caller}-")
    return far


def run_all(fars: list[FarEnd]) -> list:
    results: list = [None] * len(fars)

    def one(index: int) -> None:
        try:
            results[index] = fars[index].run()
        except BaseException as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(fars))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert not any(thread.is_alive() for thread in threads)
    return results


def wait_for_log(gateway: GatewayProcess, predicate, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = gateway.log_events()
        if predicate(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"log condition not met within {timeout} s:\n{gateway.log_text()[-4000:]}")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head = line.split(" ")[0]
            if head.split("{")[0] == name:
                total += float(line.split(" ")[-1])
    return total


def test_two_workers_carry_calls_as_one_gateway_and_survive_a_killed_worker(tmp_path):
    receiver = WebhookReceiver().start()
    gateway = GatewayProcess(tmp_path, webhook_url=receiver.url, extra_config="\n[server]\nworkers = 2\n").start()
    try:
        events = wait_for_log(gateway, lambda ev: any(e["event"] == "workers_started" for e in ev), 60)
        pids = {e["worker"]: e["pid"] for e in events if e["event"] == "worker_started"}
        assert set(pids) == {0, 1} and len(set(pids.values())) == 2

        # 1. Four concurrent calls, two owned by each worker: every one arrives intact,
        #    each in the process that owns its Call-ID.
        pages = {f"55507{n:02d}": source_pages(40 + n, 1) for n in range(4)}
        fars = [far_end(gateway, CallPlan(pages=p, caller=caller, seed=40 + n), n % 2, tmp_path)
                for n, (caller, p) in enumerate(pages.items())]
        results = run_all(fars)
        for result in results:
            assert not isinstance(result, BaseException) and result.phase_e_status == T30_ERR_OK, result
        metas = gateway.wait_for_faxes(4, timeout=20)  # worker 0's API sees worker 1's faxes
        for caller, sent in pages.items():
            meta = fax_by_caller(metas, caller)
            assert meta["status"] == "received"
            assert_pages_identical(gateway, meta, sent, 204, 196, tmp_path)
        by_call = {e["call_id"]: e["worker"] for e in gateway.log_events() if "call_id" in e and "worker" in e}
        for n, far in enumerate(fars):
            assert by_call.get(far.call_id) == n % 2, (far.call_id, by_call)
        # Every fax's webhook arrives (the spool is shared), sent by the worker that received
        # the fax: the POSTs use both cores (issue 14).
        posts = receiver.wait_for(lambda posts: len(posts) >= 4, timeout=30)
        assert sorted(json.loads(p.body)["data"]["sip"]["caller"] for p in posts) == sorted(pages)
        events = wait_for_log(gateway, lambda ev: sum(e["event"] == "webhook_delivered" for e in ev) >= 4, 10)
        fax_worker = {e["fax_id"]: e["worker"] for e in events if e["event"] == "call_incoming"}
        sent_by = {e["fax_id"]: e["worker"] for e in events if e["event"] == "webhook_delivered"}
        assert sent_by == {fax: fax_worker[fax] for fax in sent_by} and set(sent_by.values()) == {0, 1}, \
            (sent_by, fax_worker)
        # /metrics adds the workers up (each writes its figures every second).
        time.sleep(1.5)
        text = httpx.get(f"{gateway.api}/metrics", timeout=5).text
        assert metric(text, "t38gw_pages_total") == sum(len(p) for p in pages.values()), text
        # Each call's T.30 turn-arounds (CFR after TCF, MCF after each PPS), from both
        # workers, well inside T.30's 3 s.
        assert metric(text, "t38gw_t30_response_seconds_count") >= 4 * 2, text
        assert metric(text, "t38gw_t30_response_seconds_bucket", le="1.0") == metric(
            text, "t38gw_t30_response_seconds_count"), text

        # 2. Worker 1 is killed after the first page of its call was confirmed; a call on
        #    worker 0 runs meanwhile and is not disturbed.
        long_pages = source_pages(60, 2, rows=600)
        abort = threading.Event()
        doomed = far_end(gateway, CallPlan(pages=long_pages, caller="5550777", seed=60, abort=abort,
                                           max_seconds=60), 1, tmp_path)
        other_pages = source_pages(61, 2, rows=400)
        survivor = far_end(gateway, CallPlan(pages=other_pages, caller="5550778", seed=61), 0, tmp_path)
        outcome: dict[str, object] = {}
        threads = [threading.Thread(target=lambda: outcome.setdefault("doomed", doomed.run())),
                   threading.Thread(target=lambda: outcome.setdefault("survivor", survivor.run()))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        confirmed = None
        while time.monotonic() < deadline and confirmed is None:
            for fax in gateway.faxes():
                meta = gateway.meta(fax["id"])
                if meta["sip"]["caller"] == "5550777" and len(meta["pages"]) >= 1:
                    confirmed = meta
            time.sleep(0.05)
        assert confirmed is not None and confirmed["in_progress"], gateway.log_text()[-3000:]
        os.kill(pids[1], signal.SIGKILL)
        abort.set()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert outcome["survivor"].phase_e_status == T30_ERR_OK, outcome["survivor"]

        # The supervisor starts worker 1 again; it closes what it left, keeping the page.
        events = wait_for_log(gateway, lambda ev: sum(e["event"] == "gateway_started" for e in ev) >= 3, 60)
        assert any(e["event"] == "worker_died" and e["worker"] == 1 for e in events)
        metas = gateway.wait_for_faxes(6, timeout=30)
        doomed_meta = fax_by_caller(metas, "5550777")
        assert doomed_meta["status"] == "partial" and not doomed_meta["in_progress"], doomed_meta
        assert doomed_meta["reason"] == "the gateway stopped during the call"
        assert_pages_identical(gateway, doomed_meta, long_pages[:len(doomed_meta["pages"])], 204, 196, tmp_path)
        survivor_meta = fax_by_caller(metas, "5550778")
        assert survivor_meta["status"] == "received"
        assert_pages_identical(gateway, survivor_meta, other_pages, 204, 196, tmp_path)
        posts = receiver.wait_for(lambda posts: {"5550777", "5550778"} <= {
            json.loads(p.body)["data"]["sip"]["caller"] for p in posts}, timeout=40)

        # 3. The restarted worker takes calls again.
        again_pages = source_pages(62, 1)
        [again] = run_all([far_end(gateway, CallPlan(pages=again_pages, caller="5550779", seed=62), 1, tmp_path)])
        assert again.phase_e_status == T30_ERR_OK, again
        meta = fax_by_caller(gateway.wait_for_faxes(7, timeout=20), "5550779")
        assert_pages_identical(gateway, meta, again_pages, 204, 196, tmp_path)
    finally:
        status = gateway.stop()
        receiver.stop()
    assert status == 0, gateway.log_text()[-3000:]
    assert any(e["event"] == "workers_stopped" for e in gateway.log_events())
