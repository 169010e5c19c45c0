"""decode_whole_page gives exactly StreamingDecoder's page, through libtiff where it can.

The oracle is StreamingDecoder fed the same whole data; ``try_libtiff_decode`` is checked
to take the fast path on clean pages (else the speed-up would silently be lost) and to
decline damaged ones or give the same answer.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaging import BitOrder, Coding, StreamingDecoder, decode_whole_page, encode_page
from imaging.t4codes import EOL
from imaging import wholepage
from imaging.wholepage import _to_bits, first_eol, try_libtiff_decode
from tests.imaging.charts import CHART_WIDTH, chart
from tests.peers.spandsp import spandsp_t4_encode

CODINGS = [Coding.MH, Coding.MR, Coding.MMR]


def streaming(data: bytes, coding: Coding, width: int, order: BitOrder):
    decoder = StreamingDecoder(coding, width, bit_order=order)
    decoder.feed(data)
    return decoder.finish()


def check_same(data: bytes, coding: Coding, width: int, order: BitOrder, *, fast: bool | None):
    expected = streaming(data, coding, width, order)
    quick = try_libtiff_decode(data, coding, width, bit_order=order)
    if fast is True:
        assert quick is not None, "a clean page should be decoded by libtiff"
    if fast is False:
        assert quick is None
    if quick is not None:
        assert quick == expected
    if coding is not Coding.MMR:
        # With the height NonEcmPageDecoder counted (the streaming rows), or a wrong one:
        # the same answer or none, never another page.
        for rows in {expected.height, expected.height - 1, expected.height + 1}:
            hinted = try_libtiff_decode(data, coding, width, bit_order=order, rows=rows)
            assert hinted is None or hinted == expected
            if fast is True and rows == expected.height:
                assert hinted is not None
    page = decode_whole_page(data, coding, width, bit_order=order)
    assert page == expected
    return page


@pytest.mark.parametrize("order", list(BitOrder))
@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("number", range(1, 9))
def test_itu_charts(number, coding, order):
    bitmap = chart(number)
    data = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=order)
    page = check_same(data, coding, CHART_WIDTH, order, fast=True)
    assert page.bitmap == bitmap and page.bad_rows == 0


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("number", [1, 4, 7])
def test_spandsp_coded_charts(number, coding):
    bitmap = chart(number)
    height = len(bitmap) // (CHART_WIDTH // 8)
    data = spandsp_t4_encode(bitmap, CHART_WIDTH, height, coding.value)
    page = check_same(data, coding, CHART_WIDTH, BitOrder.LSB_FIRST, fast=True)
    assert page.bitmap == bitmap
    # As T.38 carries it (each octet bit-reversed, MSB first).
    reversed_data = bytes(int(f"{b:08b}"[::-1], 2) for b in data)
    check_same(reversed_data, coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=True)


def random_page(rng: random.Random, width: int, height: int, density: float) -> bytes:
    stride = width // 8
    rows = []
    for _ in range(height):
        kind = rng.random()
        if kind < 0.3:
            rows.append(bytes(stride))
        elif kind < 0.4 and rows:
            rows.append(rows[-1])
        else:
            pels = [1 if rng.random() < density else 0 for _ in range(width)]
            # runs rather than noise, now and then
            if rng.random() < 0.5:
                start, length = rng.randrange(width), rng.randrange(width)
                pels[start : start + length] = [1] * len(pels[start : start + length])
            rows.append(int("".join(map(str, pels)), 2).to_bytes(stride, "big"))
    return b"".join(rows)


@settings(deadline=None, max_examples=40)
@given(
    coding=st.sampled_from(CODINGS),
    order=st.sampled_from(list(BitOrder)),
    width=st.sampled_from([1728, 2048, 2432, 3456]),
    height=st.one_of(st.integers(1, 12), st.integers(13, 300), st.just(5000)),
    density=st.sampled_from([0.0, 0.02, 0.5]),
    seed=st.integers(0, 2**32),
    k=st.sampled_from([2, 4]),
)
def test_random_pages(coding, order, width, height, density, seed, k):
    rng = random.Random(seed)
    if height == 5000:
        bitmap = bytes(width // 8 * height)  # a tall all-white page: beyond the first guess
    else:
        bitmap = random_page(rng, width, height, density)
    data = encode_page(bitmap, width, coding, k=k, bit_order=order)
    page = check_same(data, coding, width, order, fast=True)
    assert page.bitmap == bitmap


@settings(deadline=None, max_examples=60)
@given(
    coding=st.sampled_from(CODINGS),
    order=st.sampled_from(list(BitOrder)),
    seed=st.integers(0, 2**32),
    flips=st.integers(0, 4),
    cut=st.booleans(),
)
def test_damaged_data_same_as_streaming(coding, order, seed, flips, cut):
    rng = random.Random(seed)
    stride = CHART_WIDTH // 8
    start = rng.randrange(0, 2000)
    bitmap = chart(1 + seed % 8)[start * stride : (start + 200) * stride]
    data = bytearray(encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=order))
    for _ in range(flips):
        position = rng.randrange(len(data) * 8)
        data[position // 8] ^= 1 << rng.randrange(8)
    if cut:  # an ECM frame lost (EOR): octets missing from the middle
        start = rng.randrange(len(data))
        del data[start : start + rng.randrange(1, 300)]
    check_same(bytes(data), coding, CHART_WIDTH, order, fast=None if flips or cut else True)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_mr_with_other_one_dimensional_row_patterns(k):
    bitmap = chart(5)[: 400 * (CHART_WIDTH // 8)]
    data = encode_page(bitmap, CHART_WIDTH, Coding.MR, k=k, bit_order=BitOrder.MSB_FIRST)
    page = check_same(data, Coding.MR, CHART_WIDTH, BitOrder.MSB_FIRST, fast=True)
    assert page.bitmap == bitmap


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_fill_before_eols_is_allowed(coding):
    bitmap = chart(6)[: 300 * (CHART_WIDTH // 8)]
    data = encode_page(bitmap, CHART_WIDTH, coding, k=4, min_row_bits=2000, bit_order=BitOrder.MSB_FIRST)
    page = check_same(data, coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=True)
    assert page.bitmap == bitmap


@pytest.mark.parametrize("order", list(BitOrder))
@pytest.mark.parametrize("coding", CODINGS)
def test_every_bit_of_the_page_end_flipped(coding, order):
    # RTC / EOFB and the last rows: where the height comes from (found by Hypothesis, MR
    # seed 48694: a flip in the fifth EOL of RTC).
    bitmap = chart(1)[1000 * (CHART_WIDTH // 8) : 1040 * (CHART_WIDTH // 8)]
    clean = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=order)
    for position in range(max(0, len(clean) * 8 - 160), len(clean) * 8):
        data = bytearray(clean)
        data[position // 8] ^= (0x80 >> (position % 8)) if order is BitOrder.MSB_FIRST else (1 << (position % 8))
        check_same(bytes(data), coding, CHART_WIDTH, order, fast=None)


@pytest.mark.parametrize("coding", CODINGS)
def test_truncated_page_falls_back(coding):
    data = encode_page(chart(2), CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST)
    page = check_same(data[: len(data) // 2], coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=False)
    assert not page.ended


@pytest.mark.parametrize("coding", CODINGS)
def test_trailing_garbage_after_page_end_is_ignored(coding):
    bitmap = chart(3)[: 300 * (CHART_WIDTH // 8)]
    data = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST) + bytes(range(256))
    page = check_same(data, coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=True)
    assert page.bitmap == bitmap


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_a_clean_page_is_proven_without_splitting_its_bits_as_text(coding, k, monkeypatch):
    # The page-decoding thread holds the GIL for text work (issue 14): a page without fill
    # is proven by comparing integers; the row-segment split is for the others.
    def text_split(*args, **kwargs):
        raise AssertionError("the clean page was split into row segments as text")

    monkeypatch.setattr(wholepage, "_t4_rows", text_split)
    for number in (1, 4, 8):
        bitmap = chart(number)
        data = encode_page(bitmap, CHART_WIDTH, coding, k=k, bit_order=BitOrder.MSB_FIRST)
        for rows in (None, len(bitmap) // (CHART_WIDTH // 8)):
            page = try_libtiff_decode(data, coding, CHART_WIDTH, bit_order=BitOrder.MSB_FIRST, rows=rows)
            assert page is not None and page.bitmap == bitmap


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_every_bit_of_a_short_page_flipped(coding):
    # Each flip anywhere in the page (fill before the first EOL, a row, a tag bit, an EOL,
    # RTC): the integer comparison and the text path give StreamingDecoder's page or none.
    bitmap = chart(3)[1500 * (CHART_WIDTH // 8) : 1503 * (CHART_WIDTH // 8)]
    clean = b"\0" + encode_page(bitmap, CHART_WIDTH, coding, k=2, bit_order=BitOrder.MSB_FIRST)
    check_same(clean, coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=True)
    for position in range(len(clean) * 8):
        data = bytearray(clean)
        data[position // 8] ^= 0x80 >> (position % 8)
        check_same(bytes(data), coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=None)


def test_empty_data():
    for coding in CODINGS:
        check_same(b"", coding, CHART_WIDTH, BitOrder.MSB_FIRST, fast=False)


def test_bad_width_is_refused():
    with pytest.raises(ValueError):
        decode_whole_page(b"", Coding.MH, 1730, bit_order=BitOrder.MSB_FIRST)


@pytest.mark.parametrize("order", list(BitOrder))
@pytest.mark.parametrize("number", [1, 4, 7])
def test_proven_mmr_page_brings_the_archives_g4_coding(number, order):
    # The MMR proof codes the decoded rows with libtiff; the archive stores that very coding
    # (imaging.output.coded_page), so the page brings it and is not coded twice.  SpanDSP
    # codes the page here: what libtiff codes must be what the archive would have stored.
    from imaging.output import coded_page
    from imaging.model import Page

    bitmap = chart(number)
    height = len(bitmap) // (CHART_WIDTH // 8)
    data = spandsp_t4_encode(bitmap, CHART_WIDTH, height, Coding.MMR.value)
    if order is BitOrder.MSB_FIRST:
        data = bytes(int(f"{b:08b}"[::-1], 2) for b in data)
    page = try_libtiff_decode(data, Coding.MMR, CHART_WIDTH, bit_order=order)
    assert page is not None and page.bitmap == bitmap
    assert page.g4 == coded_page(Page(CHART_WIDTH, height, 204, 196, bitmap)).data
    # MH and MR pages bring none: their proof codes T.4, not T.6.
    mh = try_libtiff_decode(encode_page(bitmap, CHART_WIDTH, Coding.MH, k=4, bit_order=order), Coding.MH,
                            CHART_WIDTH, bit_order=order)
    assert mh is not None and mh.g4 is None


def test_libtiff_complaints_are_counted_per_thread():
    # No lock around libtiff: its warning handler is one per process, so a damaged page
    # decoded in one thread must not cost the fast path of clean pages coded and decoded
    # at the same time in others (nor the other way round).
    import threading

    bitmap = chart(4)
    clean = encode_page(bitmap, CHART_WIDTH, Coding.MMR, k=4, bit_order=BitOrder.MSB_FIRST)
    damaged = bytearray(clean)
    damaged[len(damaged) // 3] ^= 0x5A
    expected_damaged = streaming(bytes(damaged), Coding.MMR, CHART_WIDTH, BitOrder.MSB_FIRST)
    results: dict[str, list] = {"clean": [], "damaged": []}
    failures: list[BaseException] = []

    def run(kind: str, data: bytes) -> None:
        try:
            for _ in range(25):
                results[kind].append(decode_whole_page(data, Coding.MMR, CHART_WIDTH, bit_order=BitOrder.MSB_FIRST))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=("clean", clean)),
               threading.Thread(target=run, args=("damaged", bytes(damaged)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and not any(thread.is_alive() for thread in threads)
    assert all(page.bitmap == bitmap and page.g4 is not None for page in results["clean"])
    assert all(page == expected_damaged for page in results["damaged"])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.binary(max_size=64), st.integers(0, 3))
def test_first_eol_is_where_the_bits_as_text_have_it(data, zero_runs):
    """first_eol (big-integer arithmetic) finds the EOL the text search over the bits finds;
    runs of zero octets make EOLs (and near misses) likely."""
    for _ in range(zero_runs):
        data = data[: len(data) // 2] + bytes(len(data) % 3 + 1) + data[len(data) // 2 :]
    assert first_eol(data) == _to_bits(data).find(EOL)


def test_first_eol_at_every_offset():
    for offset in range(40):
        bits = "1" * offset + EOL + "1" * 13
        bits += "0" * (-len(bits) % 8)
        data = int(bits, 2).to_bytes(len(bits) // 8, "big")
        assert first_eol(data) == offset
        assert first_eol(data[: (offset + 11) // 8]) == -1  # cut before the EOL's 1


def test_decoding_and_proving_leave_no_descriptor_open():
    """The in-memory files libtiff reads and writes (memfds opened through libc) are closed,
    on success and on failure alike."""
    import os

    bitmap = random_page(random.Random(5), 1728, 200, 0.02)
    good = encode_page(bitmap, 1728, Coding.MMR, bit_order=BitOrder.MSB_FIRST)
    damaged = good[:100] + bytes(b ^ 0x5A for b in good[100:140]) + good[140:]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        page = try_libtiff_decode(good, Coding.MMR, 1728, bit_order=BitOrder.MSB_FIRST)
        assert page is not None and page.bitmap == bitmap
        try_libtiff_decode(damaged, Coding.MMR, 1728, bit_order=BitOrder.MSB_FIRST)
    assert len(os.listdir("/proc/self/fd")) == before
