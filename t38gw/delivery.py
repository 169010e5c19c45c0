"""The trio loop that drains the webhook spool: the only I/O around ``t38gw.spool``.

One worker task: take due deliveries, POST each signed with a fresh timestamp, record
the outcome in the spool, then sleep until the next one is due or ``nudge()`` says a
new one was enqueued.  A connection error, a timeout and any non-2xx answer are all
failures that the spool schedules again with back-off.

Under a burst (hundreds of faxes ending within seconds) a delivery must not wait for
others' bookkeeping: the worker hands each due delivery to its own task as soon as one
of ``CONCURRENT_DELIVERIES`` POSTs is free, without waiting for the whole batch it
read; a delivery gives its POST slot back once answered, while its outcome is recorded
in a thread, and stays "in flight" (never read as due again) until it is.  The outcomes
waiting meanwhile are recorded together, in one thread job (one spool transaction, one
audit-trail fsync).  A delivery just committed to the spool by this process is handed
over in memory (``offer``) rather than read back: no spool read per fax (issue 14).  The
spool is read (in a thread: its lock is held by the threads committing other faxes)
when ``nudge()`` says something else changed it, when a retry falls due, and every
REREAD_SECONDS in case another process's delivery is left for us.

Nothing one delivery does can stop the worker: any exception while signing or sending
(a secret that does not decode, a URL httpx refuses, a bug) marks that attempt failed,
is logged, and the delivery is retried later like any other failure.  While the spool
cannot be written the worker probes it every few seconds and, once it can, calls
``on_spool_recovered`` so the gateway can spool again what meta.json still plans.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx
import structlog
import trio

from t38gw.spool import Delivery, DeliveryState, Spool
from t38gw.webhooks import redact_urls, signed_headers

ATTEMPT_TIMEOUT_SECONDS = 15.0
# Deliveries in flight at once: a burst of faxes ending together (hundreds under load)
# must not queue behind one another's round trips (issue 14: MCF -> webhook latency).
CONCURRENT_DELIVERIES = 8
SPOOL_PROBE_SECONDS = 5.0
#: The spool is read at least this often while the worker is idle: a delivery another
#: worker process left (``Spool`` adopts them after ADOPT_AFTER_SECONDS) is found then.
REREAD_SECONDS = 30.0
log = structlog.get_logger("t38gw.delivery")


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0


@dataclass
class _Outcome:
    """One attempt's result, waiting to be recorded (``DeliveryWorker._recorded``)."""

    delivery: Delivery
    status: int
    error: str
    bound: Any  # the delivery's bound logger
    recorded: trio.Event = field(default_factory=trio.Event)


@dataclass
class DeliveryWorker:
    spool: Spool
    secrets: Mapping[str, str]                      # webhook name -> whsec_ secret
    wall_clock: Callable[[], float] = time.time
    attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    # Told the outcomes recorded together, each (delivery as it was before the attempt,
    # new state, error), in the recording thread, after the spool has them.
    on_outcomes: Callable[[list[tuple[Delivery, DeliveryState, str]]], None] | None = None
    # Called (in the worker task) when an unhealthy spool can be written again.
    on_spool_recovered: Callable[[], None] | None = None
    spool_probe_interval: float = SPOOL_PROBE_SECONDS
    #: The threads recording outcomes (None: trio's default; the gateway passes its
    #: ``bookkeeping_threads``).
    thread_limiter: trio.CapacityLimiter | None = None
    #: Awaited before an outcome is recorded (the gateway: page writes go first).
    before_thread: Callable[[], Awaitable[None]] | None = None
    _wakeup: trio.Event = field(default_factory=trio.Event)
    #: Deliveries handed to a task whose outcome is not recorded yet (not read as due again).
    _in_flight: set[str] = field(default_factory=set)
    _awaiting_flight: bool = False  # run() waits for an in-flight delivery to finish
    #: Offered (``offer``), not yet started: by id, in order.  A spool read skips them.
    _offered: dict[str, Delivery] = field(default_factory=dict)
    _reread: bool = True  # the spool must be read again (nudge, a retry, start)
    _next_due_at: float | None = None  # from the last read
    #: Outcomes waiting to be recorded, and the batch being recorded now (its end).
    _outcomes: list[_Outcome] = field(default_factory=list)
    _recording: trio.Event | None = None

    def nudge(self) -> None:
        """Wake the worker and make it read the spool: something was enqueued, or is due."""
        self._reread = True
        self._wakeup.set()

    def offer(self, deliveries: Iterable[Delivery]) -> None:
        """Deliveries this process has just committed to the spool: start them as they
        are, without reading them back (the spool has them should we crash first)."""
        for delivery in deliveries:
            self._offered[delivery.id] = delivery
        self._wakeup.set()

    async def run(self, client: httpx.AsyncClient | None = None) -> None:
        """Deliver until cancelled."""
        slots = trio.CapacityLimiter(CONCURRENT_DELIVERIES)
        async with (client or httpx.AsyncClient(timeout=self.attempt_timeout)) as http, \
                trio.open_nursery() as deliveries:
            while True:
                if not self.spool.healthy:
                    self._probe_spool()
                self._wakeup = trio.Event()
                if self.spool.healthy:
                    await self._start_offered(http, deliveries, slots)
                if self.spool.healthy and (self._reread or (self._next_due_at is not None
                                                            and self._next_due_at <= self.wall_clock())):
                    self._reread = False
                    await self._dispatch(http, deliveries, slots)
                    if self.spool.healthy:
                        self._next_due_at = await trio.to_thread.run_sync(self.spool.next_due_at)
                        # Due now and not started: in flight (the first of those to finish
                        # nudges us), or more than one read brought (read again at once).
                        self._awaiting_flight = (self._next_due_at is not None and bool(self._in_flight)
                                                 and self._next_due_at <= self.wall_clock())
                        if self._awaiting_flight:
                            self._next_due_at = None
                if self.spool.healthy:
                    next_at = self._next_due_at
                    delay = REREAD_SECONDS if next_at is None else max(0.0, min(REREAD_SECONDS,
                                                                                next_at - self.wall_clock()))
                else:
                    # An outcome that cannot be recorded would be sent again at once, in a
                    # loop: deliver nothing until the spool can be written.
                    delay = self.spool_probe_interval
                with trio.move_on_after(delay) as waited:
                    await self._wakeup.wait()
                if waited.cancelled_caught:
                    self._reread = True  # a retry fell due, or it is time to look again

    def _probe_spool(self) -> None:
        if not self.spool.probe(self.wall_clock()) or self.on_spool_recovered is None:
            return
        try:
            self.on_spool_recovered()
        except Exception as exc:  # noqa: BLE001 -- the worker must outlive its callbacks
            log.error("spool_recovery_callback_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)

    async def deliver_due(self, http: httpx.AsyncClient) -> None:
        """One pass over what is due now, ``CONCURRENT_DELIVERIES`` at a time, until every
        one's outcome is recorded."""
        async with trio.open_nursery() as deliveries:
            slots = trio.CapacityLimiter(CONCURRENT_DELIVERIES)
            await self._start_offered(http, deliveries, slots)
            await self._dispatch(http, deliveries, slots)

    async def _dispatch(self, http: httpx.AsyncClient, deliveries: trio.Nursery,
                        slots: trio.CapacityLimiter) -> None:
        """Start a task for each due delivery not in flight, as POST slots free up."""
        due = await trio.to_thread.run_sync(self.spool.due, self.wall_clock(), 100,
                                            frozenset(self._in_flight) | self._offered.keys())
        for delivery in due:
            if not await self._start(http, deliveries, slots, delivery):
                break

    async def _start_offered(self, http: httpx.AsyncClient, deliveries: trio.Nursery,
                             slots: trio.CapacityLimiter) -> None:
        """Start the offered deliveries, in order, as POST slots free up."""
        while self._offered:
            delivery = next(iter(self._offered.values()))
            if not await self._start(http, deliveries, slots, delivery):
                self._offered.clear()  # the spool holds them: read again once it can be written
                self._reread = True
                return

    async def _start(self, http: httpx.AsyncClient, deliveries: trio.Nursery, slots: trio.CapacityLimiter,
                     delivery: Delivery) -> bool:
        """Start ``delivery`` in its own task once a POST slot is free, unless it is in flight
        already (started by another path meanwhile); false if the spool cannot be written."""
        if delivery.id not in self._in_flight:
            await slots.acquire_on_behalf_of(delivery.id)
            if not self.spool.healthy:
                slots.release_on_behalf_of(delivery.id)
                return False  # outcomes cannot be recorded; the rest waits for the spool (run probes it)
            if delivery.id in self._in_flight:  # started while we waited for the slot
                slots.release_on_behalf_of(delivery.id)
            else:
                self._in_flight.add(delivery.id)
                deliveries.start_soon(self._deliver_one, http, delivery, slots)
        self._offered.pop(delivery.id, None)
        return True

    async def _deliver_one(self, http: httpx.AsyncClient, delivery: Delivery, slots: trio.CapacityLimiter) -> None:
        retry = True  # unless recorded delivered: its next attempt is due some time
        bound = log.bind(webhook_id=delivery.id, fax_id=delivery.fax_id, webhook=delivery.webhook,
                         event_type=delivery.event_type, attempt=delivery.attempts + 1)
        try:
            try:
                status, error = await self._attempt(http, delivery)
            except Exception as exc:  # noqa: BLE001 -- one delivery must never stop the others
                status, error = 0, f"{type(exc).__name__}: {redact_urls(str(exc))}"
                bound.error("webhook_attempt_crashed", error=error, exc_info=True)
            finally:
                slots.release_on_behalf_of(delivery.id)  # the next POST need not wait for our disk
            # The outcome is written (spool, meta.json, audit trail: each fsynced) in a
            # worker thread, so the event loop carrying the calls never waits on the disk.
            await self._recorded(_Outcome(delivery, status, error, bound))
            retry = bool(error)
        finally:
            self._in_flight.discard(delivery.id)
            if retry or self._awaiting_flight:
                self.nudge()  # run() works out when the next attempt is due

    async def _recorded(self, outcome: _Outcome) -> None:
        """Record ``outcome`` with the others waiting: whoever finds no batch being recorded
        records every outcome waiting, in one thread job; the others wait for theirs."""
        self._outcomes.append(outcome)
        while not outcome.recorded.is_set():
            if self._recording is not None:
                await self._recording.wait()  # maybe ours; if not, the next batch's
                continue
            batch_done = self._recording = trio.Event()
            try:
                if self.before_thread is not None:
                    await self.before_thread()
                batch, self._outcomes = self._outcomes, []
                try:
                    await trio.to_thread.run_sync(self._record, batch, limiter=self.thread_limiter)
                finally:
                    for item in batch:
                        item.recorded.set()
            finally:
                self._recording = None
                batch_done.set()

    def _record(self, batch: list[_Outcome]) -> None:
        now = self.wall_clock()
        delivered = [item.delivery.id for item in batch if not item.error]
        if delivered:
            self.spool.mark_delivered(delivered, now)
        told: list[tuple[Delivery, DeliveryState, str]] = []
        for item in batch:
            delivery, error, bound = item.delivery, item.error, item.bound
            if not error:
                self.stats.delivered += 1
                bound.info("webhook_delivered", status=item.status)
                told.append((delivery, DeliveryState.DELIVERED, ""))
                continue
            state = self.spool.mark_failed(delivery.id, error, now)
            self.stats.failed_attempts += 1
            if state is DeliveryState.DEAD:
                self.stats.dead += 1
                bound.error("webhook_dead", error=error)
            else:
                bound.warning("webhook_attempt_failed", error=error)
            told.append((delivery, state, error))
        self._tell(told)

    async def _attempt(self, http: httpx.AsyncClient, delivery: Delivery) -> tuple[int, str]:
        """POST one delivery: (HTTP status, "") on 2xx, else (status or 0, why it failed)."""
        secret = self.secrets.get(delivery.webhook)
        if secret is None:
            return 0, f"webhook {delivery.webhook!r} is no longer configured"
        timestamp = int(self.wall_clock())
        headers = signed_headers(secret, delivery.id, timestamp, delivery.body)
        try:
            response = await http.post(delivery.url, content=delivery.body, headers=headers,
                                       timeout=self.attempt_timeout)
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {redact_urls(str(exc))}"
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        return response.status_code, f"HTTP {response.status_code}"

    def _tell(self, outcomes: list[tuple[Delivery, DeliveryState, str]]) -> None:
        if self.on_outcomes is not None and outcomes:
            try:
                self.on_outcomes(outcomes)
            except Exception as exc:  # noqa: BLE001 -- recording the outcome must not stop deliveries
                log.error("webhook_outcome_not_recorded", webhook_ids=[d.id for d, _, _ in outcomes],
                          error=f"{type(exc).__name__}: {exc}")

    async def flush(self) -> None:
        """One last pass over what is due (graceful shutdown); what fails stays spooled."""
        async with httpx.AsyncClient(timeout=self.attempt_timeout) as http:
            await self.deliver_due(http)
