"""Fuzz: the T.4/T.6 StreamingDecoder and the whole-page (libtiff) path (issue #14).

``run_t4``: the decoder never raises, makes at most one row per input bit, and gives the
same page fed in random pieces as fed in one go.  ``run_wholepage``: decode_whole_page
gives the rows StreamingDecoder gives, as it documents.  Coding, bit order, width and
the cuts come from the first two octets of an input (``tests.fuzz.t4_config``).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imaging.decoder import StreamingDecoder
from imaging.encoder import encode_page
from imaging.model import BitOrder, Coding
from tests.fuzz import TARGETS, check, fuzz_settings, mutants, t4_config, t4_header

T4 = TARGETS["t4"]
WHOLEPAGE = TARGETS["wholepage"]

# Found by bench/fuzz.py, fixed in imaging/decoder.py (0947398): an MMR page damaged by a
# code error, then EOFB later in the same feed() call, was not ``ended``; fed in two pieces
# cut after the damage, it was.  MSB first: an EOL that is not EOFB (T.6 has no EOL
# between lines: damage), eight 1 bits, then EOFB (T.6 2.4.1).
MMR_EOFB_AFTER_DAMAGE = bytes.fromhex("001fff" "001001")


def test_seeds_are_chart_pages_and_spandsp_data():
    seeds = T4.seeds()
    assert len(seeds) >= 30
    for data in seeds:
        coding, bit_order, width, _, coded = t4_config(data)
        decoder = StreamingDecoder(coding, width, bit_order=bit_order)
        decoder.feed(coded)
        page = decoder.finish()
        assert page.height > 0
        check(T4, data)
        check(WHOLEPAGE, data)


def test_mmr_eofb_after_damage_ends_the_page_however_fed():
    whole = StreamingDecoder(Coding.MMR, 64, bit_order=BitOrder.MSB_FIRST)
    whole.feed(MMR_EOFB_AFTER_DAMAGE)
    in_two = StreamingDecoder(Coding.MMR, 64, bit_order=BitOrder.MSB_FIRST)
    in_two.feed(MMR_EOFB_AFTER_DAMAGE[:3])
    in_two.feed(MMR_EOFB_AFTER_DAMAGE[3:])
    assert in_two.finish().ended  # what the decoder does fed in pieces: EOFB ends the page
    assert whole.finish().ended


@fuzz_settings(500)
@given(mutants(T4, max_input=3000))
def test_streaming_decoder_mutants(data):
    check(T4, data)


@fuzz_settings(300)
@given(mutants(WHOLEPAGE, max_input=3000))
def test_whole_page_mutants(data):
    check(WHOLEPAGE, data)


@fuzz_settings(150)
@given(st.sampled_from(list(Coding)), st.sampled_from(list(BitOrder)), st.sampled_from([8, 64, 216]),
       st.lists(st.binary(min_size=1, max_size=27), min_size=1, max_size=12), st.integers(1, 255), st.data())
def test_random_pages_coded_then_damaged(coding, bit_order, width, rows, cut, data):
    """Real codes for random rows decode to those rows; then one octet changed:
    structure-aware inputs."""
    stride = width // 8
    bitmap = b"".join(row.ljust(stride, b"\0")[:stride] for row in rows)
    coded = bytearray(encode_page(bitmap, width, coding, k=2, bit_order=bit_order))
    intact = StreamingDecoder(coding, width, bit_order=bit_order)
    intact.feed(bytes(coded))
    page = intact.finish()
    assert (page.bitmap, page.bad_rows, page.ended) == (bitmap, 0, True)  # undamaged: the rows coded
    position = data.draw(st.integers(0, len(coded) - 1))
    coded[position] = data.draw(st.integers(0, 255))
    raw = t4_header(coding, bit_order, width, cut) + bytes(coded)
    check(T4, raw)
    check(WHOLEPAGE, raw)


@fuzz_settings(150)
@given(st.binary(max_size=400))
def test_decoders_bytes(data):
    check(T4, data)
    check(WHOLEPAGE, data)


# Found by bench/fuzz.py (reported to imaging/, not fixed here): a T.4 line longer than
# MAX_LINE_BITS (200,000 bits without an EOL) is one bad row fed whole, but two when a
# feed() ends inside it: the garbage is dropped at the cut and the 11 bits kept for a
# straddling EOL decode as a line of their own.
LONG_LINE_PAGE = bytes.fromhex("0010") + b"\xff" * 26000 + bytes.fromhex("001d9a80080080080080080080")


def test_long_t4_line_is_one_bad_row_however_fed():
    whole = StreamingDecoder(Coding.MH, 64, bit_order=BitOrder.MSB_FIRST)
    whole.feed(LONG_LINE_PAGE)
    in_two = StreamingDecoder(Coding.MH, 64, bit_order=BitOrder.MSB_FIRST)
    in_two.feed(LONG_LINE_PAGE[:26002])
    in_two.feed(LONG_LINE_PAGE[26002:])
    assert whole.finish().bad_rows == 1
    assert in_two.finish().bad_rows == 1


def test_a_tiny_mmr_input_cannot_make_a_huge_page():
    # bench/fuzz.py: in MMR one bit can be a whole row, so 64 KiB of 0xFF was 524,288 rows
    # (113 MB, 2.6 s in one feed()).  The decoder stops at MAX_ROWS, however it is fed.
    from imaging.decoder import MAX_ROWS

    whole = StreamingDecoder(Coding.MMR, 1728, bit_order=BitOrder.MSB_FIRST)
    whole.feed(b"\xff" * 65536)
    in_pieces = StreamingDecoder(Coding.MMR, 1728, bit_order=BitOrder.MSB_FIRST)
    for _ in range(16):
        in_pieces.feed(b"\xff" * 4096)
    assert whole.finish().height == in_pieces.finish().height == MAX_ROWS
    small = StreamingDecoder(Coding.MMR, 64, bit_order=BitOrder.MSB_FIRST, max_rows=100)
    small.feed(b"\xff" * 1000)
    assert small.finish().height == 100


def test_decode_whole_page_over_max_rows_is_the_streaming_decoders_page():
    # decode_whole_page leaves pages over max_rows to StreamingDecoder, whole (its
    # contract; the fuzz run caught a fallback cut at max_rows).
    from imaging.wholepage import decode_whole_page

    data = b"\xff" * 1000
    page = decode_whole_page(data, Coding.MMR, 64, bit_order=BitOrder.MSB_FIRST, max_rows=100)
    streaming = StreamingDecoder(Coding.MMR, 64, bit_order=BitOrder.MSB_FIRST)
    streaming.feed(data)
    assert page.height == streaming.finish().height > 100
