"""libtiff (through Pillow) as the oracle: our coding decodes in libtiff and libtiff's in ours."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging import BitOrder, Coding, StreamingDecoder, encode_page
from imaging.libtiff import decode_with_libtiff, encode_with_libtiff
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
