"""PageWork: a fax's final write lets the page work senders' MCFs wait for go first."""

from __future__ import annotations

import trio
import trio.testing

from t38gw.session import PageWork


def test_idle_returns_at_once_when_no_page_work_runs():
    async def main() -> float:
        work = PageWork()
        started = trio.current_time()
        await work.idle(5.0)
        return trio.current_time() - started

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 0.0


def test_idle_waits_until_every_page_write_and_decode_is_done():
    async def main() -> list[tuple[str, float]]:
        work = PageWork()
        seen: list[tuple[str, float]] = []

        async def page_write(seconds: float) -> None:
            with work.running():
                await trio.sleep(seconds)
            seen.append(("written", trio.current_time()))

        async def final_write() -> None:
            await trio.sleep(0.1)  # a fax ends while two pages are being written
            await work.idle(10.0)
            seen.append(("final", trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(page_write, 1.0)
            nursery.start_soon(page_write, 2.5)
            nursery.start_soon(final_write)
        return seen

    seen = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [name for name, _ in seen] == ["written", "written", "final"]
    assert seen[2][1] == seen[1][1] == 2.5


def test_idle_never_starves_the_final_write():
    async def main() -> float:
        work = PageWork()

        async def endless_page_work(offset: float) -> None:
            # Two of these, overlapping: some page work always runs.
            await trio.sleep(offset)
            while True:
                with work.running():
                    await trio.sleep(0.5)
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(endless_page_work, 0.0)
            nursery.start_soon(endless_page_work, 0.3)
            await trio.sleep(0.1)
            started = trio.current_time()
            await work.idle(3.0)
            waited = trio.current_time() - started
            nursery.cancel_scope.cancel()
        return waited

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 3.0
