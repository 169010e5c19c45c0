"""Pages coded by the real SpanDSP decode to their source image.

Two sources: SpanDSP's t4_tx (through tests/peers/spandsp.py) for whole pages, and the T.38
IFP traces of SpanDSP-to-SpanDSP faxes in tests/vectors/spandsp_ifp (real line data, fed to
the decoder field by field as it would arrive). The traces also settle the bit order: T.38
carries the line bits MSB first (BitOrder.MSB_FIRST), for non-ECM data and ECM frames alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imaging import BitOrder, Coding, StreamingDecoder
from imaging.bits import reverse_bits
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart
from tests.peers.spandsp import T38_FIELD_TYPES, spandsp_t4_encode

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "spandsp_ifp"
NON_ECM_DATA = T38_FIELD_TYPES["T4_NON_ECM_DATA"]
NON_ECM_SIG_END = T38_FIELD_TYPES["T4_NON_ECM_SIG_END"]
HDLC_DATA = T38_FIELD_TYPES["HDLC_DATA"]
HDLC_FRAME_ENDS = {T38_FIELD_TYPES[n] for n in ("HDLC_FCS_OK", "HDLC_FCS_OK_SIG_END")}
V21 = 0
FCD = 0x60  # T.30 FCD (0x06) as the octet appears in T.38 HDLC data: bit-reversed


def decode(pieces, coding: Coding, order: BitOrder, width: int = CHART_WIDTH):
    decoder = StreamingDecoder(coding, width, bit_order=order)
    for piece in pieces:
        decoder.feed(piece)
    return decoder, decoder.finish()


@pytest.mark.parametrize(
    ("number", "coding", "y_dpi"),
    [(1, "mh", 196), (4, "mh", 98), (1, "mr", 196), (7, "mr", 98), (2, "mmr", 196), (4, "mmr", 196), (8, "mmr", 98)],
)
def test_spandsp_t4_tx_pages_decode_to_the_chart(number, coding, y_dpi):
    bitmap = chart(number)
    coded = spandsp_t4_encode(bitmap, CHART_WIDTH, CHART_HEIGHT, coding, y_dpi=y_dpi)
    ours = Coding[coding.upper()]
    # As t4_tx emits it (LSB first), in T.38-sized pieces...
    decoder, page = decode([coded[i : i + 180] for i in range(0, len(coded), 180)], ours, BitOrder.LSB_FIRST)
    assert decoder.page_ended
    assert (page.height, page.bad_rows, page.bitmap) == (CHART_HEIGHT, 0, bitmap)
    # ...and as T.38 carries it (every octet bit-reversed, MSB first).
    _, page = decode([reverse_bits(coded)], ours, BitOrder.MSB_FIRST)
    assert (page.height, page.bad_rows, page.bitmap) == (CHART_HEIGHT, 0, bitmap)


def sender_fields(name: str):
    with open(VECTORS / f"{name}.jsonl") as lines:
        for line in lines:
            record = json.loads(line)
            if record["dir"] != "sender->receiver":
                continue
            for field in record["decoded"]:
                if field[0] == "data":
                    yield field[1], field[2], bytes.fromhex(field[3])


@pytest.mark.parametrize(("name", "coding"), [("v0_nonecm_mh", Coding.MH), ("v3_nonecm_mr", Coding.MR)])
def test_non_ecm_t38_page_decodes_as_it_arrives(name, coding):
    messages: list[list[bytes]] = [[]]
    for data_type, field_type, data in sender_fields(name):
        if data_type != V21 and field_type in (NON_ECM_DATA, NON_ECM_SIG_END):
            messages[-1].append(data)
            if field_type == NON_ECM_SIG_END:
                messages.append([])
    tcf, page_fields = messages[0], messages[1]  # T.30: TCF first, then the page
    assert tcf and page_fields
    decoder, page = decode(page_fields, coding, BitOrder.MSB_FIRST)
    assert decoder.page_ended
    # The trace's page: the top 400 rows of chart 1 (see the vectors' README).
    assert (page.height, page.bad_rows, page.longest_bad_run) == (400, 0, 0)
    assert page.bitmap == chart(1)[: 400 * CHART_WIDTH // 8]
    # The other bit order is wrong: it gives no clean page.
    _, wrong = decode(page_fields, coding, BitOrder.LSB_FIRST)
    assert wrong.bitmap != page.bitmap


@pytest.mark.parametrize("name", ["v0_ecm_mmr", "v3_ecm_mmr_unpaced"])
def test_ecm_t38_frames_carry_an_mmr_page(name):
    frames, frame = [], b""
    for data_type, field_type, data in sender_fields(name):
        if data_type == V21 or field_type in (NON_ECM_DATA, NON_ECM_SIG_END):
            continue  # T.30 control frames, and TCF (sent as non-ECM data even with ECM)
        frame += data
        if field_type in HDLC_FRAME_ENDS:
            frames.append(frame)
            frame = b""
    # T.30 A.3.6: address, control, FCD, frame number, then the frame's share of the page.
    blocks = [f[4:] for f in frames if len(f) > 4 and f[2] == FCD]
    assert blocks
    decoder, page = decode(blocks, Coding.MMR, BitOrder.MSB_FIRST)
    assert decoder.page_ended
    assert (page.height, page.bad_rows) == (400, 0)
    assert page.bitmap == chart(1)[: 400 * CHART_WIDTH // 8]


def wide_page(width: int, rows: int = 600) -> bytes:
    """Rows of charts 1 and 4 side by side, cut to ``width`` pels (an R16-wide page)."""
    stride = CHART_WIDTH // 8
    left, right = chart(1), chart(4)
    out = []
    for row in range(rows):
        line = left[row * stride : (row + 1) * stride] + right[row * stride : (row + 1) * stride] * 2
        out.append(line[: width // 8])
    return b"".join(out)


@pytest.mark.parametrize(("width", "coding", "y_dpi"), [(2432, "mr", 391), (3456, "mh", 391), (4864, "mmr", 391), (2048, "mr", 300)])
def test_spandsp_wide_and_high_resolution_pages(width, coding, y_dpi):
    bitmap = wide_page(width)
    coded = spandsp_t4_encode(bitmap, width, 600, coding, x_dpi=408 if y_dpi == 391 else 300, y_dpi=y_dpi)
    decoder, page = decode([coded[i : i + 97] for i in range(0, len(coded), 97)], Coding[coding.upper()], BitOrder.LSB_FIRST, width)
    assert decoder.page_ended
    assert (page.width, page.height, page.bad_rows, page.bitmap) == (width, 600, 0, bitmap)
