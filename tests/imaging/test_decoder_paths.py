"""The decoder's shortcuts: packed rows built from changing elements, the per-page line cache,
rows repeating their reference, and zero-length runs, checked against the plain decoder."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaging import BitOrder, Coding, StreamingDecoder, encode_page, t4codes
from imaging.bits import from_bits, unpack_pixels
from tests.imaging.reference_t4 import decode_t4_page

EOL = t4codes.EOL
WIDTH = 1728


def white(run: int) -> str:
    return t4codes.WHITE_RUN_CODE[run]


def black(run: int) -> str:
    return t4codes.BLACK_RUN_CODE[run]


def decode_bits(bits: str, coding: Coding, width: int = WIDTH, chunk: int = 7):
    data = from_bits(bits, BitOrder.MSB_FIRST)
    decoder = StreamingDecoder(coding, width, bit_order=BitOrder.MSB_FIRST)
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
    return decoder.finish()


def rows_of(page) -> list[list[int]]:
    pels = unpack_pixels(page.bitmap)
    return [[int(c) for c in pels[i : i + page.width]] for i in range(0, len(pels), page.width)]


def check_against_plain(bits: str, coding: Coding) -> None:
    page = decode_bits(bits, coding)
    rows, bad, longest = decode_t4_page(bits, WIDTH, coding is Coding.MR)
    assert (page.height, page.bad_rows, page.longest_bad_run) == (len(rows), bad, longest)
    assert rows_of(page) == rows


# One-dimensional lines (T.4 4.1.1) spelling the same row in different ways: zero-length runs
# are legal codes, and a 2-D line after them must see the row's true changing elements.
PLAIN = white(100) + black(20) + white(WIDTH - 120)
ZERO_WHITE_INSIDE = white(100) + black(10) + white(0) + black(10) + white(WIDTH - 120)
ZERO_BLACK_INSIDE = white(50) + black(0) + white(50) + black(20) + white(WIDTH - 120)
BLACK_FIRST = white(0) + black(30) + white(WIDTH - 30)
BLACK_LAST = white(WIDTH - 8) + black(8)
ZERO_BLACK_FIRST = white(0) + black(0) + white(20) + black(20) + white(WIDTH - 40)


@pytest.mark.parametrize("line", [PLAIN, ZERO_WHITE_INSIDE, ZERO_BLACK_INSIDE, BLACK_FIRST, BLACK_LAST, ZERO_BLACK_FIRST])
@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_one_dimensional_spellings_then_two_dimensional_lines(line, coding):
    tag1, tag2 = ("1", "0") if coding is Coding.MR else ("", "")
    lines = [tag1 + line, tag1 + line]  # the second one comes from the line cache
    if coding is Coding.MR:
        # All V0 (the reference again), then each change moved right by one, then all V0.
        changes = decode_t4_page(EOL + "1" + line + EOL * 6, WIDTH, True)[0][0]
        edges = sum(1 for x in range(WIDTH) if changes[x] != (changes[x - 1] if x else 0))
        lines += [tag2 + "1" * (edges + 1), tag2 + t4codes.VERTICAL[1] * edges + "1", tag2 + "1" * (edges + 1)]
    bits = EOL + EOL.join(lines) + EOL * 6
    check_against_plain(bits, coding)


def test_a_repeated_bad_line_counts_every_time():
    # The line cache remembers that a line is bad; each copy is still a bad row.
    bad = white(100) + black(20)  # 120 pels, not 1728
    bits = EOL + EOL.join([PLAIN, bad, bad, bad, PLAIN, bad]) + EOL * 6
    page = decode_bits(bits, Coding.MH)
    assert (page.height, page.bad_rows, page.longest_bad_run) == (6, 4, 3)
    check_against_plain(bits, Coding.MH)


@st.composite
def pages(draw):
    width = draw(st.sampled_from([8, 16, 1728, 2048, 4864]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    height = draw(st.integers(1, 12))
    rows = []
    for _ in range(height):
        kind = rng.random()
        if kind < 0.3 and rows:
            rows.append(rows[-1])  # a repeated row: all V0, or a line cache hit
        elif kind < 0.5:
            rows.append(bytes(width // 8))
        else:
            density = rng.choice([0.01, 0.2, 0.5, 0.9])
            pels = "".join("1" if rng.random() < density else "0" for _ in range(width))
            rows.append(int(pels, 2).to_bytes(width // 8, "big"))
    return width, b"".join(rows)


@settings(deadline=None, max_examples=40)
@given(page=pages(), coding=st.sampled_from(Coding), order=st.sampled_from(BitOrder), k=st.integers(1, 4))
def test_any_page_of_any_width_comes_back_exactly(page, coding, order, k):
    width, bitmap = page
    data = encode_page(bitmap, width, coding, k=k, bit_order=order)
    decoder = StreamingDecoder(coding, width, bit_order=order)
    for start in range(0, len(data), 37):
        decoder.feed(data[start : start + 37])
    got = decoder.finish()
    assert (got.bitmap, got.bad_rows, got.ended) == (bitmap, 0, True)


def test_row_masks_are_kept_for_a_few_widths_only():
    from imaging import decoder as module

    for width in range(8, 8 * 40, 8):
        StreamingDecoder(Coding.MMR, width, bit_order=BitOrder.MSB_FIRST)
    assert len(module._SUFFIX_MASKS) <= 8
