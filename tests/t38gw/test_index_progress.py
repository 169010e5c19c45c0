"""In-progress index rows after page writes (``Gateway._index_progress_rows``): they wait
while page writes are queued (our MCFs wait for those, nobody waits for the rows), go in
one transaction, and never undo a fax's final row (issue 14)."""

from __future__ import annotations

import random

import trio
import trio.testing

from imaging import Page
from t38gw.config import ArchiveConfig, Config, HttpConfig, Route
from t38gw.faxrecord import InboundFax
from t38gw.gateway import PAGE_WRITES_FIRST_POLL, Gateway, PageWritesFirst
from tests.t38gw.t30.pages import random_page


def make_gateway(tmp_path) -> Gateway:
    config = Config(archive=ArchiveConfig(dir=str(tmp_path / "archive"), audit_log=str(tmp_path / "audit.jsonl"),
                                          index=str(tmp_path / "index.db")),
                    spool=str(tmp_path / "spool.db"), http=HttpConfig(listen=("127.0.0.1", 9)))
    return Gateway(config, rng=random.Random(1))


def fax_with_a_page(gateway: Gateway, number: int) -> InboundFax:
    record = InboundFax(fax_id=f"01a21438-6359-7817-b310-{number:012d}", started_at=1_764_000_000.0 + number,
                        root=gateway.archive_root, formats=("pdf", "tiff"),
                        sip={"call_id": f"c{number}", "caller": "5550199"}, route_index=None, route=Route(),
                        local_ident="+1 555 0100")
    record.add_page(Page(1728, 40, 204, 98, random_page(random.Random(number), 1728, 40)), bad_rows=0)
    return record


def test_rows_of_faxes_in_progress_go_in_together_and_never_undo_a_final_row(tmp_path):
    gateway = make_gateway(tmp_path)
    try:
        first, second = fax_with_a_page(gateway, 1), fax_with_a_page(gateway, 2)
        for record in (first, second):
            assert gateway._write_record_now(record, *record.snapshot(), False)
        stale = first.snapshot()[1]  # the in-progress meta a queued row would carry
        gateway._index_progress([(first, stale), (second, second.snapshot()[1])])
        for record in (first, second):
            row = gateway.index.get_row(record.fax_id)
            assert row is not None and row["in_progress"], row
        first.finish("received", "", 1_764_000_050.0)
        assert gateway._write_record_now(first, *first.snapshot())  # the final meta.json and row
        gateway._index_progress([(first, stale)])  # came too late: skipped
        row = gateway.index.get_row(first.fax_id)
        assert row is not None and not row["in_progress"] and row["status"] == "received", row
    finally:
        gateway.spool.close()
        gateway.index.close()


def test_rows_wait_while_page_writes_are_queued(tmp_path):
    gateway = make_gateway(tmp_path)
    record = fax_with_a_page(gateway, 3)
    assert gateway._write_record_now(record, *record.snapshot(), False)

    async def scenario() -> None:
        limiter = gateway.page_threads
        release = trio.Event()

        async def page_write(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with limiter:
                task_status.started()
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gateway._index_progress_rows)
            for _ in range(int(limiter.total_tokens)):
                await nursery.start(page_write)
            nursery.start_soon(page_write)  # one more, waiting for a thread
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            gateway._index_pending[record.fax_id] = (record, record.snapshot()[1])
            gateway._index_pending_added.set()
            await trio.sleep(20 * PAGE_WRITES_FIRST_POLL)
            assert gateway.index.get_row(record.fax_id) is None  # still waiting its turn
            release.set()
            with trio.fail_after(10):
                while gateway.index.get_row(record.fax_id) is None:
                    await trio.sleep(PAGE_WRITES_FIRST_POLL)
            nursery.cancel_scope.cancel()

    try:
        trio.run(scenario)
    finally:
        gateway.spool.close()
        gateway.index.close()


def test_work_waits_for_queued_page_writes_with_one_sleeper_and_a_cap():
    async def scenario() -> None:
        limiter = trio.CapacityLimiter(1)
        gate = PageWritesFirst(limiter, poll=0.05, max_defer=2.0)
        release = trio.Event()
        done: list[float] = []

        async def page_write(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with limiter:
                task_status.started()
                await release.wait()

        async def after_call() -> None:
            await gate.wait()
            done.append(trio.current_time())

        class Steps(trio.abc.Instrument):
            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                if "after_call" in task.name:
                    steps.append(task)

        steps: list[trio.lowlevel.Task] = []
        trio.lowlevel.add_instrument(Steps())

        await gate.wait()  # nothing queued: at once
        async with trio.open_nursery() as nursery:
            await nursery.start(page_write)
            nursery.start_soon(page_write)  # queued behind it
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(50):
                nursery.start_soon(after_call)
            await trio.testing.wait_all_tasks_blocked()
            steps.clear()
            await trio.sleep(0.5)
            assert done == []  # a page write still waits for the thread
            # Fifty waiters: one looks every 50 ms, the others sleep until the queue is empty.
            assert 5 <= len(steps) <= 15, len(steps)
            release.set()
            with trio.fail_after(1):
                while len(done) < 50:
                    await trio.sleep(0.05)
        # Never starved: with page writes queued for good, the cap lets the work go.
        async with trio.open_nursery() as nursery:
            release = trio.Event()
            await nursery.start(page_write)
            nursery.start_soon(page_write)
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()
            await gate.wait()
            assert 2.0 - 1e-9 <= trio.current_time() - started < 2.5
            release.set()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0.01))


def test_a_response_held_for_its_pages_is_measured(tmp_path):
    gateway = make_gateway(tmp_path)
    try:
        async def held() -> None:
            gateway._page_write_held(0.03)
            gateway._page_write_held(3.2)  # past the sender's T4: admission hears of it too
            gateway.overload.sample(trio.current_time(), 0.0, 0.0, 0)

        trio.run(held)
        text = gateway.metrics.exposition().decode()
        assert "t38gw_page_write_wait_seconds_count 2.0" in text
        assert 't38gw_page_write_wait_seconds_bucket{le="0.05"} 1.0' in text
        assert 't38gw_page_write_wait_seconds_bucket{le="3.0"} 1.0' in text
        assert 't38gw_page_write_wait_seconds_bucket{le="5.0"} 2.0' in text
        assert gateway.overload.refusal(0).startswith("a confirmed page waited 3.2 s")
    finally:
        gateway.spool.close()
        gateway.index.close()
