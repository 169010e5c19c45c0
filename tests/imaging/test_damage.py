"""Damaged line data: bad rows are counted (and replaced), decoding resynchronises, nothing raises.

Expected counts come from tests/imaging/reference_t4.py, a plain pel-by-pel decoder, applied
to the same damaged bits.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaging import BitOrder, Coding, StreamingDecoder, encode_page
from imaging.bits import from_bits, to_bits, unpack_pixels
from tests.imaging.charts import CHART_WIDTH, chart
from tests.imaging.reference_t4 import decode_t4_page

ROWS = 120  # a band of chart 1 with text in it keeps the plain decoder quick
BAND_START = 400


def band() -> bytes:
    stride = CHART_WIDTH // 8
    return chart(1)[BAND_START * stride : (BAND_START + ROWS) * stride]


def decode(data: bytes, coding: Coding, order: BitOrder = BitOrder.MSB_FIRST, chunk: int = 50):
    decoder = StreamingDecoder(coding, CHART_WIDTH, bit_order=order)
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
    return decoder, decoder.finish()


def rows_of(bitmap: bytes) -> list[list[int]]:
    pels = unpack_pixels(bitmap)
    return [[int(c) for c in pels[i : i + CHART_WIDTH]] for i in range(0, len(pels), CHART_WIDTH)]


def check_against_reference(bits: str, coding: Coding) -> None:
    data = from_bits(bits, BitOrder.MSB_FIRST)
    _, page = decode(data, coding)
    rows, bad, longest = decode_t4_page(to_bits(data, BitOrder.MSB_FIRST), CHART_WIDTH, coding is Coding.MR)
    assert (page.height, page.bad_rows, page.longest_bad_run) == (len(rows), bad, longest)
    assert rows_of(page.bitmap) == rows


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_undamaged_band_agrees_with_plain_decoder(coding):
    bits = to_bits(encode_page(band(), CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
    check_against_reference(bits, coding)


@settings(deadline=None, max_examples=25)
@given(coding=st.sampled_from([Coding.MH, Coding.MR]), seed=st.integers(0, 2**32), flips=st.integers(1, 6))
def test_flipped_bits(coding, seed, flips):
    rng = random.Random(seed)
    bits = list(to_bits(encode_page(band(), CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST))
    for _ in range(flips):
        where = rng.randrange(len(bits))
        bits[where] = "1" if bits[where] == "0" else "0"
    check_against_reference("".join(bits), coding)


@settings(deadline=None, max_examples=25)
@given(coding=st.sampled_from([Coding.MH, Coding.MR]), seed=st.integers(0, 2**32), drops=st.integers(1, 4))
def test_dropped_bytes(coding, seed, drops):
    rng = random.Random(seed)
    data = bytearray(encode_page(band(), CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST))
    for _ in range(drops):
        del data[rng.randrange(len(data)) : rng.randrange(len(data)) + rng.randint(1, 8)]
    check_against_reference(to_bits(bytes(data), BitOrder.MSB_FIRST), coding)


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_a_cut_line_is_one_bad_row_and_the_next_line_resynchronises(coding):
    page_bits = to_bits(encode_page(band(), CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
    lines = page_bits.split("000000000001")
    # The longest coded line (lines[0] is what precedes the first EOL) loses its second half.
    row = max(range(1, ROWS - 1), key=lambda r: len(lines[r + 1]))
    lines[row + 1] = lines[row + 1][: len(lines[row + 1]) // 2]
    _, page = decode(from_bits("000000000001".join(lines), BitOrder.MSB_FIRST), coding)
    original = rows_of(band())
    got = rows_of(page.bitmap)
    assert (page.height, page.bad_rows, page.longest_bad_run) == (ROWS, 1, 1)
    assert got[row] == got[row - 1] == original[row - 1]
    assert got[:row] == original[:row]
    # MH resumes at the next line; MR's 2-D lines refer to the replaced row until the next
    # 1-D line (every k=4th).
    resumes = row + 1 if coding is Coding.MH else (row // 4 + 1) * 4
    assert got[resumes:] == original[resumes:]


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_consecutive_bad_rows_give_the_longest_run(coding):
    page_bits = to_bits(encode_page(band(), CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
    lines = page_bits.split("000000000001")
    for row in (10, 11, 12, 30, 31):
        tag = lines[row + 1][:1] if coding is Coding.MR else ""
        lines[row + 1] = tag + "0000000001"  # nine zeros then 1: no code, and no EOL
    _, page = decode(from_bits("000000000001".join(lines), BitOrder.MSB_FIRST), coding)
    assert (page.height, page.bad_rows, page.longest_bad_run) == (ROWS, 5, 3)


@pytest.mark.parametrize("coding", list(Coding))
@pytest.mark.parametrize("order", list(BitOrder))
def test_truncated_page_keeps_the_rows_received(coding, order):
    bitmap = band()
    data = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=order)
    original = rows_of(bitmap)
    for cut in (0, 1, len(data) // 3, len(data) // 2, len(data) - 11):  # -11: no RTC/EOFB left
        decoder, page = decode(data[:cut], coding, order)
        assert not decoder.page_ended
        got = rows_of(page.bitmap)
        assert page.height <= ROWS
        # Every row but the last one received (which may be cut) is exact.
        assert got[: max(page.height - 1, 0)] == original[: max(page.height - 1, 0)]
        assert page.bad_rows <= 1


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32), order=st.sampled_from(BitOrder))
def test_mmr_damage_ends_the_page_cleanly(seed, order):
    rng = random.Random(seed)
    bitmap = band()
    data = bytearray(encode_page(bitmap, CHART_WIDTH, Coding.MMR, bit_order=order))
    where = rng.randrange(len(data) - 3)
    data[where] ^= 1 << rng.randrange(8)
    decoder, page = decode(bytes(data), Coding.MMR, order, chunk=rng.randint(1, 100))
    original = rows_of(bitmap)
    got = rows_of(page.bitmap)
    # Rows wholly coded before the damaged octet are exact.
    intact = sum(
        1 for r in range(1, ROWS + 1)
        if len(encode_page(bitmap[: r * CHART_WIDTH // 8], CHART_WIDTH, Coding.MMR, bit_order=order)) - 3 <= where
    )
    assert got[:intact] == original[:intact]
    if page.damaged:
        # A flipped bit can turn later codes into other valid rows before decoding fails
        # (an all-V0 row costs one bit), so extra rows are possible; only the bits after
        # the damage can have made them.
        assert page.bad_rows == 1 and page.height <= ROWS + 1 + 8 * (len(data) - where)
    else:  # the flip happened to give other valid codes; the page still decodes to its end
        assert page.bad_rows == 0


def test_mmr_damage_then_eofb_still_ends_the_page():
    bitmap = band()
    bits = to_bits(encode_page(bitmap, CHART_WIDTH, Coding.MMR, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
    # Where row 60 starts, put an extension code (T.6 2.2.4; we support none) and zeros.
    head = to_bits(encode_page(bitmap[: 60 * CHART_WIDTH // 8], CHART_WIDTH, Coding.MMR, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
    start = head.rindex("000000000001000000000001")
    assert bits[:start] == head[:start]
    damaged = bits[:start] + "0000001111" + "0" * 40 + bits[start:]
    decoder, page = decode(from_bits(damaged, BitOrder.MSB_FIRST), Coding.MMR)
    assert page.damaged and page.bad_rows == 1 and page.height == 61
    assert rows_of(page.bitmap)[:60] == rows_of(bitmap)[:60]
    assert decoder.page_ended


@settings(deadline=None, max_examples=40)
@given(coding=st.sampled_from(Coding), order=st.sampled_from(BitOrder), garbage=st.binary(max_size=3000))
def test_garbage_never_raises(coding, order, garbage):
    decoder = StreamingDecoder(coding, CHART_WIDTH, bit_order=order)
    decoder.feed(garbage)
    page = decoder.finish()
    assert len(page.bitmap) == page.height * CHART_WIDTH // 8
    assert page.bad_rows <= page.height
