"""Audio fax over G.711: a SpanDSP AUDIO fax terminal <-> G.711 <-> AudioFaxGateway <-> IFP <-> our engine.

Each cell is one whole call in simulated time (tests/peers/spandsp_audio.py, 20 ms ticks, no
sockets): SpanDSP's ``fax_state_t`` (its own V.21/V.27ter/V.29/V.17 modems) sends or receives
160-octet u-law/A-law blocks; our ``AudioFaxGateway`` (SpanDSP's ``t38_gateway``) turns them
into IFPs for our ``T30Receiver`` / ``T30Transmitter`` and back.  A cell passes when SpanDSP
reports T30_ERR_OK at phase E, our engine ends with OK and every page is pixel-identical.

Known gap (t38gw/t30, not this chain): after CFR our transmitter announces a page on V.17
with a LONG training indicator.  The gateway trains its modem as told, while SpanDSP's
audio receiver expects the short training V.17 uses after a good TCF, and takes the tail of
the long training as data: the first rows of a non-ECM V.17 page are lost (SpanDSP still
answers MCF).  In ECM the damaged frames are fetched again with PPR, so ECM passes.
"""

from __future__ import annotations

import random

import pytest

import imaging
from t38gw.t30 import PageReceived, T30Result, TransmitterConfig
from tests.peers.spandsp import T30_ERR_OK, make_fax_tiff
from tests.peers.spandsp_audio import run_audio_fax
from tests.t38gw.t30.pages import random_page

MODEMS = {"V.17": 14400, "V.29": 9600, "V.27ter": 4800}
WIDTH = 1728


def source_pages(count: int, seed: int, height: int = 64) -> list[imaging.Page]:
    rng = random.Random(seed)
    return [imaging.Page(WIDTH, height, 204, 196, random_page(rng, WIDTH, height)) for _ in range(count)]


def spandsp_sends(tmp_path, pages: list[imaging.Page], **options):
    tiff = tmp_path / "tx.tif"
    make_fax_tiff(tiff, [(p.bitmap, p.width, p.height) for p in pages])
    return run_audio_fax(tmp_path, direction="receive", pages_tiff=tiff, **options)


def we_send(tmp_path, pages: list[imaging.Page], *, ecm: bool, **options):
    config = TransmitterConfig(local_ident="+1 555 0199", ecm=ecm)
    return run_audio_fax(tmp_path, direction="send", pages=pages, transmitter_config=config, ecm=ecm, **options)


def assert_receive_ok(run, pages: list[imaging.Page]) -> None:
    assert run.spandsp_status == T30_ERR_OK, run.spandsp_status_name
    assert run.ended is not None and run.ended.result is T30Result.OK, run.ended
    got = run.pages
    assert [p.number for p in got] == list(range(1, len(pages) + 1))
    for event, page in zip(got, pages):
        assert (event.width, event.height) == (page.width, page.height)
        assert event.bitmap == page.bitmap, f"page {event.number} differs from its source"


def assert_send_ok(run, pages: list[imaging.Page]) -> None:
    assert run.spandsp_status == T30_ERR_OK, run.spandsp_status_name
    assert run.ended is not None and run.ended.result is T30Result.OK, run.ended
    assert len(run.received_tiff_pages) == len(pages)
    for (bitmap, width, height, _x, _y), page in zip(run.received_tiff_pages, pages):
        assert (width, height) == (page.width, page.height)
        assert bitmap == page.bitmap


def _cells():
    index = 0
    for direction in ("receive", "send"):
        for ecm in (True, False):
            for modem in MODEMS:
                for page_count in (1, 3):
                    law = ("ulaw", "alaw")[index % 2]
                    index += 1
                    # (Sending non-ECM V.17 failed until our transmitter used V.17's short
                    # training for image data after CFR: SpanDSP lost the first rows.)
                    yield pytest.param(direction, ecm, modem, page_count, law,
                                       id=f"{direction}-{'ecm' if ecm else 'noecm'}-{modem}-p{page_count}-{law}")


@pytest.mark.parametrize(("direction", "ecm", "modem", "page_count", "law"), list(_cells()))
def test_matrix(tmp_path, direction, ecm, modem, page_count, law) -> None:
    pages = source_pages(page_count, seed=page_count * 31 + len(modem))
    options = dict(ecm=ecm, law=law, spandsp_modems=frozenset({modem}))
    if direction == "receive":
        run = spandsp_sends(tmp_path, pages, **options)
        assert_receive_ok(run, pages)
    else:
        run = we_send(tmp_path, pages, **options)
        assert_send_ok(run, pages)
    # The fast modem SpanDSP was restricted to is the one the gateway trained.
    assert run.gateway_stats.bit_rate == MODEMS[modem]
    assert run.gateway_stats.ecm is ecm
    assert run.gateway_stats.pages_transferred == page_count


# ------------------------------------------------------------------ audio packet loss
# Lost 20 ms blocks are bridged with fill-in on both sides; jitter is the 40 ms playout
# delay of a jitter buffer (delay_ticks=2).  ECM repairs what the loss garbles (PPR).

ECM_LOSS_SEEDS = (1, 2, 3, 4)


@pytest.mark.parametrize("seed", ECM_LOSS_SEEDS)
@pytest.mark.parametrize("direction", ["receive", "send"])
def test_ecm_passes_at_0_1_percent_loss_with_40ms_jitter(tmp_path, direction, seed) -> None:
    pages = source_pages(2, seed=seed)
    options = dict(ecm=True, loss=0.001, delay_ticks=2, seed=seed, law="alaw" if seed % 2 else "ulaw")
    if direction == "receive":
        assert_receive_ok(spandsp_sends(tmp_path, pages, **options), pages)
    else:
        assert_send_ok(we_send(tmp_path, pages, **options), pages)


def test_non_ecm_pages_arrive_at_0_5_percent_loss(tmp_path) -> None:
    """Non-ECM cannot repair: we only ask that a call ends and what was confirmed is kept whole."""
    pages = source_pages(2, seed=11)
    run = spandsp_sends(tmp_path, pages, ecm=False, loss=0.005, delay_ticks=2, seed=11)
    assert run.ended is not None
    for event in run.pages:
        assert isinstance(event, PageReceived) and event.ifp_loss_gaps == 0
