"""StreamingDecoder behaviour: framing (EOL, fill, RTC, EOFB), streaming, the h11 test."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from imaging import BitOrder, Coding, StreamingDecoder, encode_page
from imaging.bits import from_bits, to_bits
from imaging.tiff import read_strips
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart

EOL = "000000000001"
STRIDE = CHART_WIDTH // 8


def band(rows: int = 200, number: int = 1) -> bytes:
    return chart(number)[600 * STRIDE : (600 + rows) * STRIDE]


def feed_all(data: bytes, coding: Coding, order: BitOrder = BitOrder.MSB_FIRST, chunk: int | None = None):
    decoder = StreamingDecoder(coding, CHART_WIDTH, bit_order=order)
    if chunk is None:
        decoder.feed(data)
    else:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start : start + chunk])
    return decoder


@pytest.mark.parametrize("coding", list(Coding))
@pytest.mark.parametrize("order", list(BitOrder))
def test_whole_byte_by_byte_and_with_trailing_garbage(coding, order):
    bitmap = band()
    data = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=order)
    for variant, chunk in ((data, None), (data, 1), (data + bytes(range(256)) * 3, 13)):
        decoder = feed_all(variant, coding, order, chunk)
        assert decoder.page_ended
        page = decoder.finish()
        assert (page.height, page.bad_rows, page.ended, page.damaged) == (200, 0, True, False)
        assert page.bitmap == bitmap


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_rows_come_out_while_data_arrives(coding):
    data = encode_page(band(), CHART_WIDTH, coding, k=2, bit_order=BitOrder.MSB_FIRST)
    decoder = StreamingDecoder(coding, CHART_WIDTH, bit_order=BitOrder.MSB_FIRST)
    seen = []
    for start in range(0, len(data), 100):
        decoder.feed(data[start : start + 100])
        seen.append(decoder.rows)
    assert seen == sorted(seen) and 0 < seen[len(seen) // 2] < 200 and seen[-1] == 200
    assert decoder.page_ended


def test_mmr_rows_come_out_while_data_arrives():
    data = encode_page(band(), CHART_WIDTH, Coding.MMR, bit_order=BitOrder.LSB_FIRST)
    decoder = StreamingDecoder(Coding.MMR, CHART_WIDTH, bit_order=BitOrder.LSB_FIRST)
    decoder.feed(data[: len(data) // 2])
    assert 0 < decoder.rows < 200 and not decoder.page_ended
    decoder.feed(data[len(data) // 2 :])
    assert decoder.rows == 200 and decoder.page_ended


@pytest.mark.parametrize(("coding", "options"), [(Coding.MH, 4), (Coding.MR, 5)])
@pytest.mark.parametrize("fill_order", [1, 2])
def test_libtiff_byte_aligned_eols(coding, options, fill_order):
    # T4Options bit 2: libtiff pads with fill so every EOL ends on an octet boundary.
    bitmap = band()
    buffer = io.BytesIO()
    Image.frombytes("1", (CHART_WIDTH, 200), bitmap, "raw", "1").save(
        buffer, "TIFF", compression="group3", tiffinfo={278: 200, 292: options, 266: fill_order}
    )
    strip = read_strips(buffer.getvalue())
    order = BitOrder.LSB_FIRST if fill_order == 2 else BitOrder.MSB_FIRST
    bits = to_bits(strip, order)
    eol_ends = [i + 12 for i in range(len(bits)) if bits.startswith(EOL, i)]
    assert all(end % 8 == 0 for end in eol_ends)  # really byte-aligned
    page = feed_all(strip, coding, order, chunk=7).finish()
    assert (page.height, page.bad_rows, page.bitmap) == (200, 0, bitmap)


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
@pytest.mark.parametrize("min_row_bits", [0, 96, 1000, 4321])
def test_minimum_row_bits_are_met_with_fill(coding, min_row_bits):
    bitmap = band(60)
    data = encode_page(bitmap, CHART_WIDTH, coding, k=2, min_row_bits=min_row_bits, bit_order=BitOrder.MSB_FIRST)
    bits = to_bits(data, BitOrder.MSB_FIRST)
    starts = [i for i in range(len(bits)) if bits.startswith(EOL, i)]
    rows = starts[:60]
    lengths = [b - a for a, b in zip(rows, starts[1:61])]
    assert min(lengths) >= min_row_bits
    if min_row_bits > 2000:
        assert max(lengths) == min_row_bits  # fill made every line exactly that long
    page = feed_all(data, coding, chunk=50).finish()
    assert (page.height, page.bad_rows, page.bitmap) == (60, 0, bitmap)


def test_mr_k_sets_the_one_dimensional_lines():
    bitmap = band(12)
    for k in (1, 2, 4):
        bits = to_bits(encode_page(bitmap, CHART_WIDTH, Coding.MR, k=k, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
        tags = [bits[i + 12] for i in range(len(bits) - 12) if bits.startswith(EOL, i)][:12]
        assert tags == ["1" if row % k == 0 else "0" for row in range(12)]


@pytest.mark.parametrize(("eols", "ends"), [(6, True), (5, True), (4, False)])
def test_rtc_needs_five_eols(eols, ends):
    bitmap = band(10)
    coded = to_bits(encode_page(bitmap, CHART_WIDTH, Coding.MH, bit_order=BitOrder.MSB_FIRST), BitOrder.MSB_FIRST)
    body = coded.rstrip("0")[: -6 * 12]  # without RTC (and the octet padding after it)
    # The first EOL of RTC also ends the last line (T.4 4.1.4).
    decoder = feed_all(from_bits(body + EOL * eols + "0000", BitOrder.MSB_FIRST) + b"\x00" * 4, Coding.MH)
    assert decoder.page_ended is ends
    assert decoder.finish().height == 10


def test_bits_before_the_first_eol_are_not_page_data():
    bitmap = band(10)
    data = encode_page(bitmap, CHART_WIDTH, Coding.MH, bit_order=BitOrder.MSB_FIRST)
    # Line noise with no EOL in it (no eleven 0s followed by a 1), then fill zeros.
    noise = from_bits("1" * 40 + "1101001" * 50 + "0000000000", BitOrder.MSB_FIRST)
    page = feed_all(noise + data, Coding.MH, chunk=3).finish()
    assert (page.height, page.bad_rows, page.bitmap) == (10, 0, bitmap)


def test_unlimited_length_page():
    rows = 3 * CHART_HEIGHT
    bitmap = chart(5) * 3
    for coding in Coding:
        data = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=BitOrder.MSB_FIRST)
        page = feed_all(data, coding, chunk=4096).finish()
        assert (page.height, page.bad_rows, page.bitmap == bitmap) == (rows, 0, True)


def test_finish_is_stable_and_later_feeds_are_ignored():
    decoder = feed_all(encode_page(band(5), CHART_WIDTH, Coding.MH, bit_order=BitOrder.MSB_FIRST), Coding.MH)
    first = decoder.finish()
    decoder.feed(b"\xff" * 10)
    assert decoder.finish() == first


@pytest.mark.parametrize("width", [0, 7, 1729, 4872, -8])
def test_bad_width_is_our_error(width):
    with pytest.raises(ValueError):
        StreamingDecoder(Coding.MH, width, bit_order=BitOrder.MSB_FIRST)
    with pytest.raises(ValueError):
        encode_page(b"", width, Coding.MH, bit_order=BitOrder.MSB_FIRST)


@settings(deadline=None, max_examples=30)
@given(coding=st.sampled_from(Coding), order=st.sampled_from(BitOrder), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_any_split_gives_the_same_page(coding, order, cuts):
    bitmap = band(40, number=4)
    data = encode_page(bitmap, CHART_WIDTH, coding, k=2, bit_order=order)
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder = StreamingDecoder(coding, CHART_WIDTH, bit_order=order)
    for start, end in zip([0] + points, points + [len(data)]):
        decoder.feed(data[start:end])
    page = decoder.finish()
    assert (page.height, page.bad_rows, page.bitmap) == (40, 0, bitmap)


def test_mr_k_follows_the_vertical_resolution():
    from imaging import mr_k

    assert [mr_k(y) for y in (98, 100, 196, 200, 300, 391, 400, 600, 800, 1200)] == [2, 2, 4, 4, 6, 8, 8, 12, 16, 24]


def test_min_row_bits_from_scan_line_time():
    from imaging import min_row_bits

    assert [min_row_bits(9600, ms) for ms in (0, 5, 10, 20, 40)] == [0, 48, 96, 192, 384]
    assert min_row_bits(14400, 10) == 144 and min_row_bits(2400, 5) == 12 and min_row_bits(7200, 2.5) == 18
