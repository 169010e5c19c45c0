"""One outbound fax attempt's media side: UDPTL endpoint <-> T.30 transmit engine.

It is the inbound ``FaxSession`` with the other engine: the same task shape (wait for
T.38, then drive the engine from datagrams and deadlines, never on a fixed tick; the
same bounds - ``max_call_seconds``, the T.38 wait the call core enforces - and the same
media latching), with ``T30Transmitter`` sending the job's pages
(``t38gw.sendjob.JobPages``: decoded one at a time).

What it records is the attempt, in the job's ``meta.json`` (``OutboundRecord``): the
far end's capabilities at phase B (``status`` turns ``sending``), each page the receiver
confirmed (MCF, or RTP: T.30 5.3.6.2) as ``sent`` with ``pages_sent``; each change is
written by the session's writer task while the engine carries on, so ``GET
/v1/faxes/{id}`` follows the pages as they go.  Whether the job is done, retried or
given up is the gateway's decision (``t38gw.gateway``), from ``outcome()``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging import Page

from t38gw.session import FaxSession
from t38gw.t30 import CallEnded, PageSent, PhaseBCompleted, ProtocolEventLogged, T30Result
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig


@dataclass
class OutboundRecord:
    """The job's ``meta.json`` while an attempt runs (see ``t38gw.sendjob``)."""

    fax_id: str
    folder: Path
    meta: dict[str, Any]
    sip: dict[str, Any] = field(default_factory=dict)

    @property
    def pages(self) -> list[dict[str, Any]]:
        """The pages the receiver confirmed in this attempt."""
        return [p for p in self.meta["pages"] if p.get("sent")]

    def snapshot(self) -> tuple[tuple[()], dict[str, Any]]:
        return (), copy.deepcopy(self.meta)

    def forget_written(self) -> None:
        pass


class OutboundSession(FaxSession):
    """See the module docstring.  ``write_record(record, (), meta)`` writes meta.json."""

    def __init__(self, *, record: OutboundRecord, endpoint, pages: Sequence[Page],
                 transmitter_config: TransmitterConfig, t38_settings, rng, write_record: Callable,
                 metrics=None, max_call_seconds: float, audio_ticks: Callable | None = None,
                 jitter_ms: int = 60) -> None:
        async def nothing(session: FaxSession) -> None:
            return None

        super().__init__(record=record, endpoint=endpoint, receiver_config=None, t38_settings=t38_settings, rng=rng,
                         write_record=write_record, finish_record=nothing, metrics=metrics,
                         max_call_seconds=max_call_seconds, audio_ticks=audio_ticks, jitter_ms=jitter_ms,
                         ecm=transmitter_config.ecm)
        self.record: OutboundRecord = record  # type: ignore[assignment]
        self.pages = pages
        self.transmitter_config = transmitter_config
        self.confirmed: set[int] = set()
        self.phase_b_done = False

    def _log_without_t38(self, bound) -> None:
        # Busy, no answer...: the call core already logged why (call_failed); the job
        # runner decides about a retry.
        bound.info("attempt_without_t38", reason=self.failure or self.sip_end_reason)

    def _new_engine(self) -> T30Transmitter:
        return T30Transmitter(self.transmitter_config, self.pages)

    def _submit_pages(self) -> None:
        # Progress only: nothing waits for it (the image data must keep its pace).
        self._page_send.send_nowait(self.record.snapshot())

    def _handle_events(self, events, bound) -> None:
        meta = self.record.meta
        for event in events:
            if isinstance(event, PhaseBCompleted):
                self.phase_b_done = True
                meta["t30"].update(remote_ident=event.remote_ident, ecm=event.ecm, bit_rate=event.bit_rate,
                                   modem=event.modem, compression=event.compression)
                meta["status"] = "sending"
                self._submit_pages()
                bound.info("t30_phase_b", remote_ident=event.remote_ident, modem=event.modem,
                           bit_rate=event.bit_rate, ecm=event.ecm, compression=event.compression,
                           resolution=f"{event.x_dpi}x{event.y_dpi}", width_px=event.width_px)
            elif isinstance(event, PageSent):
                if event.confirmed:
                    first = not self.confirmed
                    self.confirmed.add(event.number)
                    if 1 <= event.number <= len(meta["pages"]):
                        meta["pages"][event.number - 1]["sent"] = True
                    meta["pages_sent"] = len(self.confirmed)
                    meta["t30"]["pages"] = len(self.confirmed)
                    self._submit_pages()
                    if first:
                        self.endpoint.freeze_latch()  # as for a received fax (issue 9 item 1)
                    if self.metrics is not None:
                        self.metrics.pages.labels(direction="outbound").inc()
                    bound.info("page_sent", page=event.number, of=len(self.pages), response=event.response,
                               attempt=event.attempt)
                else:
                    bound.warning("page_not_confirmed", page=event.number, response=event.response,
                                  attempt=event.attempt)
            elif isinstance(event, CallEnded):
                self.ended_result = event
                bound.info("t30_ended", result=event.result.value, pages=event.pages, reason=event.reason)
            elif isinstance(event, ProtocolEventLogged):
                bound.debug("t30_protocol_event", state=event.state, what=event.what)

    def outcome(self) -> tuple[str, str]:
        """(status, reason) of this attempt: ``sent`` when every page was confirmed and
        T.30 ended well; else ``partial`` (some pages confirmed) or ``failed``."""
        total, sent = len(self.pages), len(self.confirmed)
        ended = self.ended_result
        if ended is not None and ended.result is T30Result.OK and sent == total:
            return "sent", ""
        reason = self._failure_reason(peer="the far end", call="the call")
        reason = f"{reason} ({sent} of {total} pages confirmed)"
        return ("partial" if sent else "failed"), reason

    async def _finish(self, bound) -> None:
        self.record.meta.update(self.media_meta())
        receiver = self.endpoint.receiver
        if receiver is not None:
            stats = receiver.stats
            self.record.meta["t38"].update(
                packets_received=stats.received, packets_lost=stats.lost,
                packets_recovered=stats.recovered_redundancy + stats.recovered_fec)
        status, reason = self.outcome()
        bound.info("fax_attempt_finished", status=status, reason=reason, pages_sent=len(self.confirmed),
                   pages_total=len(self.pages), udptl_received=self.record.meta["t38"]["packets_received"],
                   udptl_lost=self.record.meta["t38"]["packets_lost"],
                   udptl_foreign=self.endpoint.stats.foreign_source)
