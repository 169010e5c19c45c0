"""NonEcmPageDecoder answers exactly as StreamingDecoder fed the same pieces.

The oracle is StreamingDecoder fed the same pieces side by side, as T30Receiver feeds a
non-ECM page (nothing more once ``page_ended``): after every piece ``page_ended`` and
``rows`` must agree (the receiver acts on them during the page), and the finished pages
must be equal in every field (bitmap, height, bad rows, longest bad run, ended).  Clean
pages (ITU-T T.24 charts coded by SpanDSP, libtiff and our encoder; SpanDSP's own IFP
trace) must take the libtiff path, else the CPU saving is silently lost; damaged ones
(bit flips, cuts, lost or repeated pieces) must give the same page, and one with a bad
row must not have come from libtiff.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imaging.wholepage
from imaging import BitOrder, Coding, DecodedPage, StreamingDecoder, encode_page
from imaging.bits import reverse_bits
from imaging.decoder import EOL
from imaging.decoder import MAX_LINE_BITS
from imaging.libtiff import encode_with_libtiff, rtc_after_strip
from imaging.nonecm import NonEcmPageDecoder
from tests.imaging.charts import CHART_WIDTH, chart
from tests.peers.spandsp import T38_FIELD_TYPES, spandsp_t4_encode

MSB = BitOrder.MSB_FIRST  # as T.38 carries non-ECM data
STRIDE = CHART_WIDTH // 8
IFP_OCTETS = 36  # a T.38 IFP's image data at 14400 bit/s, 20 ms
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "spandsp_ifp"


def pieces_of(data: bytes, size: int = IFP_OCTETS) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    pieces = []
    start = 0
    while start < len(data):
        size = rng.choice([1, 2, 7, 36, 36, 36, 100, 500])
        pieces.append(data[start : start + size])
        start += size
    return pieces


def receive_both(pieces: list[bytes], coding: Coding, *, width: int = CHART_WIDTH, order: BitOrder = MSB,
                 max_rows: int | None = None, loss_at: int | None = None) -> tuple[DecodedPage, str | None]:
    """Both decoders fed ``pieces`` as T30Receiver feeds them; checks they agree throughout.
    ``loss_at``: the receiver notes a loss before that piece.  Returns the page and the path."""
    streaming = StreamingDecoder(coding, width, bit_order=order)
    kept = (NonEcmPageDecoder(coding, width, bit_order=order) if max_rows is None
            else NonEcmPageDecoder(coding, width, bit_order=order, max_rows=max_rows))
    for index, piece in enumerate(pieces):
        if streaming.page_ended:
            break  # T30Receiver._page_data: nothing is fed after RTC
        if index == loss_at:
            kept.note_loss()
        streaming.feed(piece)
        kept.feed(piece)
        assert (kept.page_ended, kept.rows) == (streaming.page_ended, streaming.rows), f"after piece {index}"
    expected = streaming.finish()
    got = kept.finish()
    assert got == expected
    assert kept.finish() is got  # finishing twice gives the same page
    if expected.bad_rows or not expected.ended:
        assert kept.path == "streaming", "a page with bad rows or no RTC must not come from libtiff"
    return got, kept.path


def standard(bitmap: bytes) -> bytes:
    """Every other row: the chart at 98 lines per inch."""
    return b"".join(bitmap[row * STRIDE : (row + 1) * STRIDE] for row in range(0, len(bitmap) // STRIDE, 2))


# --- clean pages: the fast path, the same page ---


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
@pytest.mark.parametrize("number", range(1, 9))
def test_itu_charts_coded_by_our_encoder(number, coding):
    bitmap = chart(number)
    data = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=MSB)
    page, path = receive_both(pieces_of(data), coding)
    assert path == "libtiff" and page.bitmap == bitmap and page.bad_rows == 0


@pytest.mark.parametrize("coding, k", [(Coding.MH, 2), (Coding.MR, 2), (Coding.MR, 4)])
@pytest.mark.parametrize("number", [2, 5, 8])
def test_itu_charts_coded_by_libtiff(number, coding, k):
    bitmap = chart(number)
    height = len(bitmap) // STRIDE
    data = encode_with_libtiff(bitmap, CHART_WIDTH, height, coding, bit_order=MSB, k=k)
    data += rtc_after_strip(coding, bit_order=MSB)
    page, path = receive_both(pieces_of(data), coding)
    assert path == "libtiff" and page.bitmap == bitmap


@pytest.mark.parametrize("y_dpi", [98, 196])
@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
@pytest.mark.parametrize("number", [1, 4, 7])
def test_itu_charts_coded_by_spandsp(number, coding, y_dpi):
    bitmap = chart(number) if y_dpi == 196 else standard(chart(number))
    coded = spandsp_t4_encode(bitmap, CHART_WIDTH, len(bitmap) // STRIDE, coding.value, y_dpi=y_dpi)
    # As T.38 carries it: each octet bit-reversed (SpanDSP's t38_terminal.c), MSB first.
    page, path = receive_both(pieces_of(reverse_bits(coded)), coding)
    assert path == "libtiff" and page.bitmap == bitmap


def spandsp_page_pieces(name: str) -> list[bytes]:
    """The image data fields of the last non-ECM carrier (the page; TCF came before) that a
    SpanDSP sender emitted, one piece per IFP field as the receiver gets them."""
    carriers: list[list[bytes]] = []
    data_fields = (T38_FIELD_TYPES["T4_NON_ECM_DATA"], T38_FIELD_TYPES["T4_NON_ECM_SIG_END"])
    for line in (VECTORS / name).read_text().splitlines():
        ifp = json.loads(line)
        if ifp["dir"] != "sender->receiver":
            continue
        for field in ifp["decoded"]:
            if field[0] == "indicator":
                carriers.append([])
            elif field[2] in data_fields and field[3]:
                carriers[-1].append(bytes.fromhex(field[3]))
    return [piece for piece in carriers if piece][-1]


@pytest.mark.parametrize("name, coding", [("v0_nonecm_mh.jsonl", Coding.MH), ("v3_nonecm_mr.jsonl", Coding.MR)])
def test_spandsp_ifp_trace(name, coding):
    # Real SpanDSP bytes as its T.38 terminal put them into IFPs: the top 400 rows of chart 1.
    pieces = spandsp_page_pieces(name)
    page, path = receive_both(pieces, coding)
    assert path == "libtiff" and page.bitmap == chart(1)[: 400 * STRIDE]


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_any_piece_sizes_and_data_after_rtc(coding):
    bitmap = chart(3)[: 500 * STRIDE]
    # Fill before the EOLs, training-like zeros before the page, garbage after RTC.
    data = bytes(50) + encode_page(bitmap, CHART_WIDTH, coding, k=4, min_row_bits=600, bit_order=MSB)
    data += bytes(range(256)) * 4
    for pieces in (pieces_of(data, 1), pieces_of(data, 3), random_pieces(data, random.Random(5))):
        page, path = receive_both(pieces, coding)
        assert path == "libtiff" and page.bitmap == bitmap


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_bits_before_the_first_eol(coding):
    # Not image data (T.4 4.1.3: the first EOL starts the page), 1 bits included: the
    # segmentation must start after that EOL however the pieces fall (found by Hypothesis:
    # a piece holding the first EOL and no other kept the bits before it).
    bitmap = chart(2)[: 60 * STRIDE]
    clean = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=MSB)
    for junk in (b"\xa5\x5a", b"\x00\x81\x80", b"\xff" * 40):  # no EOL in them
        for size in (1, 2, 3, 5, 36):
            page, _path = receive_both(pieces_of(junk + clean, size), coding)
            assert page.height == 60


# --- what the fast path must not take: the same page through StreamingDecoder ---


def to_bit_string(data: bytes) -> str:
    return format(int.from_bytes(data, "big"), f"0{len(data) * 8}b")


def from_bit_string(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int("1" + bits, 2).to_bytes(len(bits) // 8 + 1, "big")[1:]


def with_bits_before_eols(data: bytes, rng: random.Random, count: int) -> bytes:
    """A few random bits put after rows, before their EOL: a row that reaches the width
    with something after it, which libtiff's decoder skips silently (a noisy line can do
    it) and StreamingDecoder counts bad."""
    bits = to_bit_string(data)
    eols = []
    position = bits.find("000000000001")
    while position >= 0:
        eols.append(position)
        position = bits.find("000000000001", position + 12)
    for eol in sorted(rng.sample(eols[2:-8], count), reverse=True):
        extra = "".join(rng.choice("01") for _ in range(rng.randrange(1, 24)))
        bits = bits[:eol] + extra + bits[eol:]
    return from_bit_string(bits)


def damaged(rng: random.Random, coding: Coding, *, flips: int, cut: bool, inserts: int = 0) -> bytes:
    start = rng.randrange(0, 2000)
    bitmap = chart(1 + rng.randrange(8))[start * STRIDE : (start + 200) * STRIDE]
    data = bytearray(encode_page(bitmap, CHART_WIDTH, coding, k=rng.choice([2, 4]), bit_order=MSB))
    for _ in range(flips):
        position = rng.randrange(len(data) * 8)
        data[position // 8] ^= 1 << rng.randrange(8)
    if cut:
        start = rng.randrange(len(data))
        del data[start : start + rng.randrange(1, 300)]
    return with_bits_before_eols(bytes(data), rng, inserts) if inserts else bytes(data)


@settings(deadline=None, max_examples=80)
@given(coding=st.sampled_from([Coding.MH, Coding.MR]), seed=st.integers(0, 2**32), flips=st.integers(0, 6),
       cut=st.booleans(), inserts=st.integers(0, 3), random_sizes=st.booleans())
def test_damaged_pages_same_as_streaming(coding, seed, flips, cut, inserts, random_sizes):
    rng = random.Random(seed)
    data = damaged(rng, coding, flips=flips, cut=cut, inserts=inserts)
    pieces = random_pieces(data, rng) if random_sizes else pieces_of(data)
    _page, path = receive_both(pieces, coding)
    if not flips and not cut and not inserts:
        assert path == "libtiff"


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_rows_with_bits_after_them_are_bad_rows(coding):
    # The damage libtiff alone would pass over (see with_bits_before_eols), every kind once.
    rng = random.Random(11)
    for _ in range(20):
        page, path = receive_both(pieces_of(damaged(rng, coding, flips=0, cut=False, inserts=2)), coding)
        assert path == "streaming" or page.bad_rows == 0


@settings(deadline=None, max_examples=40)
@given(coding=st.sampled_from([Coding.MH, Coding.MR]), seed=st.integers(0, 2**32), lost=st.integers(1, 5),
       repeated=st.integers(0, 2))
def test_lost_and_repeated_ifps(coding, seed, lost, repeated):
    # UDPTL gave up on some IFPs (their pieces never arrive) or passed one twice.
    rng = random.Random(seed)
    pieces = pieces_of(damaged(rng, coding, flips=0, cut=False))
    first = rng.randrange(1, len(pieces))
    gone = pieces[first : first + lost]
    pieces = pieces[:first] + pieces[first + lost :]
    for _ in range(repeated):
        where = rng.randrange(len(pieces))
        pieces.insert(where, pieces[where])
    _page, path = receive_both(pieces, coding, loss_at=first)
    assert path == "streaming" or not any(gone)  # a loss noted: never libtiff
    # The decoder alone (no loss noted): whatever path, the same page.
    receive_both(pieces, coding)


def test_every_bit_of_the_page_end_flipped():
    # RTC decides page_ended, which the receiver acts on mid-page (no more feeding; a loss
    # after it loses no row): every flip in the last rows and RTC, every answer the same.
    bitmap = chart(1)[1000 * STRIDE : 1030 * STRIDE]
    for coding in (Coding.MH, Coding.MR):
        clean = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=MSB)
        for position in range(len(clean) * 8 - 200, len(clean) * 8):
            data = bytearray(clean)
            data[position // 8] ^= 0x80 >> (position % 8)
            receive_both(pieces_of(bytes(data), 7), coding)


# Bit patterns around EOLs: back-to-back EOLs with and without MR's tag bit, fill, lone
# 1 bits and short runs - where a segment is empty or holds one 1 bit.
_EOL_TOKENS = [EOL, EOL + "1", EOL + "0", "0" * 5, "0" * 11, "0" * 20, "1", "0", "10", "0011", "111"]


@settings(deadline=None, max_examples=300)
@given(coding=st.sampled_from([Coding.MH, Coding.MR]),
       tokens=st.lists(st.sampled_from(_EOL_TOKENS), min_size=1, max_size=120),
       sizes=st.lists(st.sampled_from([1, 2, 3, 5, 8, 13, 40]), min_size=1, max_size=8))
def test_rows_and_page_end_counted_as_streaming_counts_them_around_eols(coding, tokens, sizes):
    """Segments cut at EOLs, empty or not, in pieces of any size: NonEcmPageDecoder counts
    rows (a whole piece's at once where no segment in it is empty) and ends the page
    exactly where StreamingDecoder does, after every piece."""
    bits = "".join(tokens)
    bits += "0" * (-len(bits) % 8)
    data = int("1" + bits, 2).to_bytes(len(bits) // 8 + 1, "big")[1:]
    streaming = StreamingDecoder(coding, CHART_WIDTH, bit_order=MSB)
    kept = NonEcmPageDecoder(coding, CHART_WIDTH, bit_order=MSB)
    start = 0
    for index in range(len(data)):
        if start >= len(data) or streaming.page_ended:
            break
        piece = data[start : start + sizes[index % len(sizes)]]
        start += len(piece)
        streaming.feed(piece)
        kept.feed(piece)
        assert (kept.page_ended, kept.rows) == (streaming.page_ended, streaming.rows), f"after piece {index}"


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_page_without_rtc_goes_to_the_streaming_decoder(coding):
    data = encode_page(chart(2), CHART_WIDTH, coding, k=4, bit_order=MSB)
    page, path = receive_both(pieces_of(data[: len(data) // 2]), coding)
    assert path == "streaming" and not page.ended and page.height > 0


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_empty_segments_inside_the_page(coding):
    # Empty segments that are not RTC (four EOLs in a row, one short of the end): the page
    # goes on, as StreamingDecoder has it.
    bitmap = chart(4)[: 100 * STRIDE]
    eol = "000000000001" + ("1" if coding is Coding.MR else "")
    head = to_bit_string(encode_page(bitmap[: 50 * STRIDE], CHART_WIDTH, coding, k=4, bit_order=MSB))
    head = head.rstrip("0")[: -6 * len(eol)]  # without its padding and RTC (T.4 4.1.4)
    tail = to_bit_string(encode_page(bitmap[50 * STRIDE :], CHART_WIDTH, coding, k=4, bit_order=MSB))
    bits = head + eol * 3 + tail  # tail begins with an EOL: four in a row
    page, _path = receive_both(pieces_of(from_bit_string(bits)), coding)
    assert page.height == 100 and page.ended and page.bitmap == bitmap


@pytest.mark.parametrize("coding", [Coding.MH, Coding.MR])
def test_line_longer_than_max_line_bits_hands_over(coding):
    # StreamingDecoder cuts a line without EOL after MAX_LINE_BITS where a piece ends and
    # counts a bad row for it: piece boundaries matter, so the streaming decoder takes over.
    bitmap = chart(6)[: 200 * STRIDE]
    clean = encode_page(bitmap, CHART_WIDTH, coding, k=4, bit_order=MSB)
    garbage = b"\xff" * (MAX_LINE_BITS // 8 + 5000)
    middle = len(clean) // 2
    data = clean[:middle] + garbage + clean[middle:]
    for size in (36, 4000):
        page, path = receive_both(pieces_of(data, size), coding)
        assert path == "streaming" and page.bad_rows > 0


def test_page_over_max_rows_goes_to_the_streaming_decoder():
    bitmap = chart(7)[: 300 * STRIDE]
    data = encode_page(bitmap, CHART_WIDTH, Coding.MR, k=4, bit_order=MSB)
    page, path = receive_both(pieces_of(data), Coding.MR, max_rows=299)
    assert path == "streaming" and page.bitmap == bitmap
    page, path = receive_both(pieces_of(data), Coding.MR, max_rows=300)
    assert path == "libtiff" and page.bitmap == bitmap


def test_noted_loss_goes_to_the_streaming_decoder():
    bitmap = chart(8)[: 300 * STRIDE]
    pieces = pieces_of(encode_page(bitmap, CHART_WIDTH, Coding.MH, bit_order=MSB))
    page, path = receive_both(pieces, Coding.MH, loss_at=len(pieces) // 2)
    assert path == "streaming" and page.bitmap == bitmap  # nothing was really lost here


def test_lsb_first_and_other_widths():
    rng = random.Random(3)
    for width in (2048, 2432):
        bitmap = bytes(rng.getrandbits(8) & rng.getrandbits(8) & rng.getrandbits(8) for _ in range(width // 8 * 40))
        for coding in (Coding.MH, Coding.MR):
            data = encode_page(bitmap, width, coding, k=2, bit_order=BitOrder.LSB_FIRST)
            page, path = receive_both(pieces_of(data), coding, width=width, order=BitOrder.LSB_FIRST)
            assert path == "libtiff" and page.bitmap == bitmap


def test_empty_pieces_and_feeding_after_the_end_are_ignored():
    data = encode_page(chart(1)[: 20 * STRIDE], CHART_WIDTH, Coding.MH, bit_order=MSB)
    kept = NonEcmPageDecoder(Coding.MH, CHART_WIDTH, bit_order=MSB)
    kept.feed(b"")
    kept.feed(data)
    assert kept.page_ended and kept.rows == 20
    kept.feed(encode_page(chart(2)[: 20 * STRIDE], CHART_WIDTH, Coding.MH, bit_order=MSB))
    page = kept.finish()
    assert kept.path == "libtiff" and page.bitmap == chart(1)[: 20 * STRIDE]
    kept.feed(data)  # after finish: nothing changes
    assert kept.finish() is page


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        NonEcmPageDecoder(Coding.MMR, CHART_WIDTH, bit_order=MSB)  # T.6 comes with ECM only
    with pytest.raises(ValueError):
        NonEcmPageDecoder(Coding.MH, 1000 + 4, bit_order=MSB)


# --- the checks above can fail ---


def test_a_fast_path_without_its_proof_would_be_caught(monkeypatch):
    # The mutation "trust libtiff when it decodes without complaint" (the canonical-coding
    # proof skipped): on these damaged pages libtiff decodes the full height silently where
    # StreamingDecoder counts bad rows, and receive_both must notice.
    monkeypatch.setattr(imaging.wholepage, "_coded_canonically", lambda *args: True)
    caught = 0
    rng = random.Random(20261206)
    for attempt in range(60):
        coding = (Coding.MH, Coding.MR)[attempt % 2]
        data = damaged(rng, coding, flips=0, cut=False, inserts=1)
        try:
            receive_both(pieces_of(data), coding)
        except AssertionError:
            caught += 1
    assert caught >= 3, caught
