"""Pages decoded ahead of their post-page command (T30Receiver.page_decode_ahead).

SpanDSP 0.0.6 sends T.24 charts to our engine in simulated time (tests/t38gw/t30/harness.py),
which hands each page's libtiff decode out when the page's data is whole (RCP, or RTC) and
takes the result back as the gateway's session does after a thread ran it.  The pages must
come out pixel-identical, and the decode at the post-page command must be saved: every
libtiff attempt made in the call is one of those handed out.  A result that comes back too
late changes nothing but the saving.
"""

from __future__ import annotations

import pytest

from imaging import wholepage
from t38gw.t30 import PageReceived, T30Result
from tests.peers.spandsp import T30_ERR_OK, make_fax_tiff
from tests.t38gw.t30.harness import run_call
from tests.t38gw.t30.pages import chart_page

WIDTH = 1728


@pytest.fixture
def attempts_run(monkeypatch):
    """Counts LibtiffAttempt.run calls: the harness's ahead and the page decoders' own."""
    runs = []
    original = wholepage.LibtiffAttempt.run

    def counted(self):
        runs.append(len(self.data))
        return original(self)

    monkeypatch.setattr(wholepage.LibtiffAttempt, "run", counted)
    return runs


def _send(tmp_path, ecm: bool, coding: str, *, pages: int = 3, **kwargs):
    bitmaps = [chart_page(1 + 3 * i % 8, WIDTH) for i in range(pages)]
    tiff = tmp_path / "tx.tif"
    make_fax_tiff(tiff, [(b, WIDTH, len(b) // (WIDTH // 8)) for b in bitmaps], x_dpi=204, y_dpi=196)
    outcome = run_call(tiff, ecm=ecm, compressions={coding}, max_sim_seconds=900, **kwargs)
    received = [e for e in outcome.events if isinstance(e, PageReceived)]
    assert outcome.sender_status == T30_ERR_OK
    assert outcome.call_ended is not None and outcome.call_ended.result is T30Result.OK
    assert [e.bitmap for e in received] == bitmaps
    return outcome


@pytest.mark.parametrize("ecm,coding", [(True, "mmr"), (True, "mr"), (False, "mr"), (False, "mh")])
def test_every_page_is_decoded_ahead_once_and_not_again(tmp_path, attempts_run, ecm, coding):
    outcome = _send(tmp_path, ecm, coding, decode_ahead=0.1)
    # At least one attempt per page (an ECM page of several blocks gets one per block's
    # RCP); the engine made none of its own at the post-page commands.
    assert outcome.decoded_ahead >= 3
    assert len(attempts_run) == outcome.decoded_ahead


def test_ecm_page_with_frames_resent_after_ppr(tmp_path, attempts_run):
    # Two of SpanDSP's image-data IFPs dropped (no redundancy): their frames fail, the block
    # gets PPR, and is handed out only once whole (RCP after the resent frames).
    image_ifps = []

    def drop_two(ifp: bytes, now: float) -> bytes | None:
        if len(ifp) > 40:  # HDLC image data (V.21 control frames here are shorter)
            image_ifps.append(ifp)
            if len(image_ifps) in (200, 201):
                return None
        return ifp

    outcome = _send(tmp_path, True, "mmr", decode_ahead=0.1, tamper=drop_two)
    assert outcome.engine.counters["ppr_sent"] > 0
    assert len(attempts_run) == outcome.decoded_ahead >= 3


def test_results_too_late_are_not_needed(tmp_path, attempts_run):
    # Results that come back after the post-page command (here: never within the call):
    # the engine decodes each page itself, exactly as without decoding ahead.
    outcome = _send(tmp_path, True, "mmr", decode_ahead=10_000.0)
    assert outcome.decoded_ahead >= 3
    assert len(attempts_run) == outcome.decoded_ahead + 3
