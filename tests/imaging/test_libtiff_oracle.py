"""libtiff (through Pillow) as the oracle: our coding decodes in libtiff and libtiff's in ours."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging import BitOrder, Coding, StreamingDecoder, encode_page
from imaging.libtiff import LIBTIFF_MR_K, decode_with_libtiff, encode_with_libtiff, rtc_after_strip
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart

ALL = [(coding, order) for coding in Coding for order in BitOrder]


def decode_ours(data: bytes, width: int, coding: Coding, order: BitOrder, chunk: int | None = None):
    decoder = StreamingDecoder(coding, width, bit_order=order)
    if chunk is None:
        decoder.feed(data)
    else:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start : start + chunk])
    return decoder.finish()


@pytest.mark.parametrize("number", range(1, 9))
@pytest.mark.parametrize(("coding", "order"), ALL, ids=lambda v: v.name)
def test_libtiff_coding_of_chart_decodes_in_ours(number, coding, order):
    bitmap = chart(number)
    coded = encode_with_libtiff(bitmap, CHART_WIDTH, CHART_HEIGHT, coding, bit_order=order)
    page = decode_ours(coded, CHART_WIDTH, coding, order)
    assert (page.width, page.height) == (CHART_WIDTH, CHART_HEIGHT)
    assert page.bad_rows == 0
    assert page.bitmap == bitmap


@pytest.mark.parametrize("number", range(1, 9))
@pytest.mark.parametrize(("coding", "order"), ALL, ids=lambda v: v.name)
def test_our_coding_of_chart_decodes_in_libtiff(number, coding, order):
    bitmap = chart(number)
    coded = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=order)
    assert decode_with_libtiff(coded, CHART_WIDTH, CHART_HEIGHT, coding, bit_order=order) == bitmap


@st.composite
def bitmaps(draw):
    """Random pages: noise of a random density, or blocks of runs, at any fax width."""
    width = draw(st.sampled_from([8, 64, 1728, 2048, 2432, 3456, 4096, 4864]))
    height = draw(st.integers(1, 24))
    rng = random.Random(draw(st.integers(0, 2**32)))
    style = draw(st.sampled_from(["noise", "runs", "blank", "black"]))
    stride = width // 8
    if style == "noise":
        density = rng.random()
        pixels = "".join("1" if rng.random() < density else "0" for _ in range(width * height))
        return width, height, int(pixels, 2).to_bytes(stride * height, "big")
    if style == "blank":
        return width, height, bytes(stride * height)
    if style == "black":
        return width, height, b"\xff" * (stride * height)
    rows = []
    for _ in range(height):
        row, colour = [], rng.choice("01")
        while len(row) < width:
            row.append(colour * rng.choice([1, 2, 3, 7, 63, 64, 65, 200, 1791, 2561, 2700]))
            colour = "1" if colour == "0" else "0"
        rows.append("".join(row)[:width])
    return width, height, int("".join(rows), 2).to_bytes(stride * height, "big")


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(page=bitmaps(), coding=st.sampled_from(Coding), order=st.sampled_from(BitOrder), k=st.sampled_from([1, 2, 4]))
def test_random_pages_round_trip_through_libtiff_both_ways(page, coding, order, k):
    width, height, bitmap = page
    ours = encode_page(bitmap, width, coding, k=k, bit_order=order)
    assert decode_with_libtiff(ours, width, height, coding, bit_order=order) == bitmap
    assert decode_ours(ours, width, coding, order).bitmap == bitmap
    theirs = encode_with_libtiff(bitmap, width, height, coding, bit_order=order)
    decoded = decode_ours(theirs, width, coding, order, chunk=7)
    assert (decoded.height, decoded.bad_rows, decoded.bitmap) == (height, 0, bitmap)


# ---------------------------------------------------------------------- MR for transmission
_MR_RTC = "0000000000011" * 6  # T.4 4.1.4: six EOLs, each with tag bit 1


def bits_of(data: bytes, order: BitOrder) -> str:
    """The line bits of ``data`` in the order they go on the line."""
    if order is BitOrder.LSB_FIRST:
        return "".join(f"{octet:08b}"[::-1] for octet in data)
    return "".join(f"{octet:08b}" for octet in data)


def mr_lines_then_rtc_from_octet(encoded: bytes, order: BitOrder) -> str:
    """``encode_page``'s MR page (lines, RTC, zeros to the octet) as a transmitter must send
    libtiff's strip: the same lines, fill zeros to the octet boundary, then RTC in whole
    octets (78 bits, 2 more fill zeros first; T.4 4.1.3 lets fill precede any EOL)."""
    bits = bits_of(encoded, order).rstrip("0")
    assert bits.endswith(_MR_RTC)
    lines = bits[: -len(_MR_RTC)]
    return lines + "0" * (-len(lines) % 8) + "00" + _MR_RTC


def mr_tag_bits(data: bytes, order: BitOrder) -> str:
    """The bit after each EOL of T.4 2-D data (T.4 4.2.1.3.4: 1 = next line 1-D): eleven
    or more zeros then a 1 never occur inside line data (T.4 4.1.2), only as EOL with fill."""
    return "".join(match.group(1) for match in re.finditer("0{11,}1([01])", bits_of(data, order)))


@pytest.mark.parametrize("order", BitOrder, ids=lambda v: v.name)
@pytest.mark.parametrize("k", LIBTIFF_MR_K)
@pytest.mark.parametrize("number", range(1, 9))
def test_libtiff_mr_strip_with_rtc_is_our_coding_and_decodes_in_both(number, k, order):
    """libtiff's MR strip with K 2 (YResolution 98) or 4 (196) plus rtc_after_strip: the
    lines our encoder codes bit for bit, then fill to the octet and RTC; every line's tag
    bit follows K; libtiff and our decoder give the chart back."""
    bitmap = chart(number)
    coded = encode_with_libtiff(bitmap, CHART_WIDTH, CHART_HEIGHT, Coding.MR, bit_order=order, k=k)
    coded += rtc_after_strip(Coding.MR, bit_order=order)
    assert mr_tag_bits(coded, order) == "".join("0" if row % k else "1" for row in range(CHART_HEIGHT)) + "1" * 6
    assert bits_of(coded, order) == mr_lines_then_rtc_from_octet(encode_page(bitmap, CHART_WIDTH, Coding.MR, k=k,
                                                                            bit_order=order), order)
    page = decode_ours(coded, CHART_WIDTH, Coding.MR, order, chunk=1000)
    assert (page.height, page.bad_rows, page.ended, page.bitmap) == (CHART_HEIGHT, 0, True, bitmap)
    assert decode_with_libtiff(coded, CHART_WIDTH, CHART_HEIGHT, Coding.MR, bit_order=order) == bitmap


def test_rtc_after_strip_is_six_eols_from_an_octet_boundary():
    # T.4 4.1.4: RTC; MR's EOLs carry tag bit 1; 78 bits take 10 octets, fill zeros first.
    assert rtc_after_strip(Coding.MH, bit_order=BitOrder.MSB_FIRST) == int("000000000001" * 6, 2).to_bytes(9, "big")
    assert rtc_after_strip(Coding.MR, bit_order=BitOrder.MSB_FIRST) == int("0000000000011" * 6, 2).to_bytes(10, "big")
    assert rtc_after_strip(Coding.MR, bit_order=BitOrder.LSB_FIRST) == bytes(
        int(f"{octet:08b}"[::-1], 2) for octet in rtc_after_strip(Coding.MR, bit_order=BitOrder.MSB_FIRST))


def test_libtiff_cannot_code_mr_above_k_4():
    with pytest.raises(ValueError, match="K"):
        encode_with_libtiff(bytes(216 * 8), 1728, 8, Coding.MR, bit_order=BitOrder.MSB_FIRST, k=8)
