"""Documents to send -> fax pages on the far end's sheet (imaging.sendpages.pages_for_fax)."""

from __future__ import annotations

import pikepdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from imaging import DocumentError, Page
from imaging.libtiff import image_from_bitmap
from imaging.output import write_tiff
from imaging.sendpages import PAGE_LENGTHS, pages_for_fax
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart
from tests.peers.spandsp import T30_ERR_OK, make_fax_tiff, run_spandsp_fax

RESOLUTIONS = ((204, 98), (204, 196), (204, 391), (408, 391))
A4_PT = (595.28, 841.89)
LETTER_PT = (612, 792)


def width_for(x_dpi: float) -> int:
    return 1728 if x_dpi == 204 else 3456  # T.4 Table 1: A4 line at R8 and R16


def black_box(page: Page) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the black pels, exclusive right/bottom."""
    image = image_from_bitmap(page.bitmap, page.width, page.height)
    box = ImageOps.invert(image.convert("L")).getbbox()
    assert box is not None, "the page is blank"
    return box


def pdf_with_box(tmp_path, size_pt, box_pt, name="box.pdf", pages=1):
    """A PDF of ``pages`` pages of ``size_pt``, each a black rectangle (x, y, w, h) in PDF points."""
    pdf = pikepdf.new()
    for _ in range(pages):
        page = pdf.add_blank_page(page_size=size_pt)
        page.Contents = pdf.make_stream(b"0 0 0 rg %g %g %g %g re f" % box_pt)
    path = tmp_path / name
    pdf.save(path)
    return path


def expected_box(size_pt, box_pt, x_dpi, y_dpi, width, fit=None):
    """Where the rectangle must land: scaled by ``fit`` (default: to the line), centred."""
    width_in, height_in = size_pt[0] / 72, size_pt[1] / 72
    if fit is None:
        fit = min(1.0, width / x_dpi / width_in)
    offset = (width - round(width_in * fit * x_dpi)) // 2
    x, y, w, h = (v / 72 * fit for v in box_pt)
    top_in = height_in * fit - y - h
    return (offset + x * x_dpi, top_in * y_dpi, offset + (x + w) * x_dpi, (top_in + h) * y_dpi)


@pytest.mark.parametrize("x_dpi,y_dpi", RESOLUTIONS)
def test_a4_pdf_rectangle_lands_where_it_is_drawn_at_each_resolution(tmp_path, x_dpi, y_dpi):
    box_pt = (72, 144, 216, 108)  # 3 x 1.5 in, 1 in from the left, 2 in from the bottom
    path = pdf_with_box(tmp_path, A4_PT, box_pt)
    width = width_for(x_dpi)
    (page,) = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=width, page_length="a4")
    assert (page.width, page.height, page.x_dpi, page.y_dpi) == (width, round(297 / 25.4 * y_dpi), x_dpi, y_dpi)
    left, top, right, bottom = black_box(page)
    assert (left, top, right, bottom) == pytest.approx(expected_box(A4_PT, box_pt, x_dpi, y_dpi, width), abs=2)
    # Aspect at the target resolution: 3 in wide, 1.5 in high whatever the pel pitch.
    assert (right - left) / x_dpi == pytest.approx(3.0, abs=2 / x_dpi)
    assert (bottom - top) / y_dpi == pytest.approx(1.5, abs=2 / y_dpi)


@pytest.mark.parametrize("x_dpi,y_dpi", RESOLUTIONS)
def test_letter_pdf_on_an_a4_sheet_is_scaled_to_the_line_and_padded(tmp_path, x_dpi, y_dpi):
    box_pt = (72, 72, 144, 72)
    path = pdf_with_box(tmp_path, LETTER_PT, box_pt)
    width = width_for(x_dpi)
    (page,) = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=width, page_length="a4")
    assert page.height == round(297 / 25.4 * y_dpi)
    expected = expected_box(LETTER_PT, box_pt, x_dpi, y_dpi, width)
    assert black_box(page) == pytest.approx(expected, abs=2)
    # Padded below the 11 in of the Letter page, not stretched.
    fit = min(1.0, width / x_dpi / 8.5)
    assert expected[3] < round(11 * fit * y_dpi) <= page.height


def test_long_page_with_blank_bottom_is_cropped_not_scaled(tmp_path):
    legal = (612, 1008)  # 14 in, ink only in the top half
    box_pt = (72, 700, 144, 72)
    path = pdf_with_box(tmp_path, legal, box_pt)
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=196, width_px=1728, page_length="a4")
    assert page.height == round(297 / 25.4 * 196)
    assert black_box(page) == pytest.approx(expected_box(legal, box_pt, 204, 196, 1728), abs=2)


@pytest.mark.parametrize("x_dpi,y_dpi", [(204, 98), (204, 196)])
def test_long_page_with_ink_at_its_foot_is_shrunk_whole_to_the_sheet(tmp_path, x_dpi, y_dpi):
    legal = (612, 1008)
    box_pt = (72, 36, 288, 144)  # 4 x 2 in, half an inch above the foot of a 14 in page
    path = pdf_with_box(tmp_path, legal, box_pt)
    (page,) = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=1728, page_length="letter")
    assert page.height == round(11 * y_dpi)
    left, top, right, bottom = black_box(page)
    # Scaled to the 11 in sheet: nothing lost, and the box keeps its 2:1 shape in inches.
    fit = 11 / 14
    assert (left, top, right, bottom) == pytest.approx(expected_box(legal, box_pt, x_dpi, y_dpi, 1728, fit), abs=2)
    assert ((right - left) / x_dpi) / ((bottom - top) / y_dpi) == pytest.approx(2.0, rel=0.02)


def test_spandsp_fax_tiff_passes_through_pel_for_pel(tmp_path):
    path = tmp_path / "spandsp.tif"
    pages = [(chart(n), CHART_WIDTH, CHART_HEIGHT) for n in (1, 2, 5)]
    make_fax_tiff(path, pages, x_dpi=204, y_dpi=196, compression="group4")
    sent = pages_for_fax([path], x_dpi=204, y_dpi=196, width_px=1728, page_length="a4")
    # The charts are longer than A4 at 196 lpi (2376 > 2292 rows): kept whole, untouched.
    assert [(p.width, p.height, p.bitmap) for p in sent] == [(CHART_WIDTH, CHART_HEIGHT, chart(n)) for n in (1, 2, 5)]


@pytest.mark.parametrize("y_dpi", [98, 196])
def test_tiff_written_by_spandsp_receiving_a_fax_passes_through(tmp_path, y_dpi):
    # Re-sending a received fax: SpanDSP's t4_rx writes the TIFF (its own resolution tags,
    # R8 x 3.85 or 7.7 l/mm in pixels per metre), and the pages go out as they came in.
    tx_tiff, rx_tiff = tmp_path / "tx.tif", tmp_path / "rx.tif"
    pages = [(chart(n)[: 216 * 800], CHART_WIDTH, 800) for n in (2, 7)]
    make_fax_tiff(tx_tiff, pages, x_dpi=204, y_dpi=y_dpi)
    run = run_spandsp_fax(tx_tiff, rx_tiff, ecm=True, compressions={"mmr"}, max_sim_seconds=300)
    assert (run.sender_status, run.receiver_status) == (T30_ERR_OK, T30_ERR_OK)
    sent = pages_for_fax([rx_tiff], x_dpi=204, y_dpi=y_dpi, width_px=1728, page_length="a4")
    assert [(p.bitmap, p.width, p.height) for p in sent] == pages


@pytest.mark.parametrize("dpi", [(204, 98), (203.2, 97.79)])  # our names and R8's true pitch
def test_our_tiff_at_standard_resolution_passes_through(tmp_path, dpi):
    path = tmp_path / "ours.tif"
    write_tiff([Page(CHART_WIDTH, CHART_HEIGHT, dpi[0], dpi[1], chart(n)) for n in (3, 4)], path)
    sent = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728, page_length="letter")
    assert [p.bitmap for p in sent] == [chart(3), chart(4)]


def test_bilevel_tiff_at_another_resolution_is_resampled_not_passed_through(tmp_path):
    path = tmp_path / "fine.tif"
    make_fax_tiff(path, [(chart(1), CHART_WIDTH, CHART_HEIGHT)], x_dpi=204, y_dpi=196)
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728, page_length="unlimited")
    assert (page.width, page.height) == (1728, CHART_HEIGHT // 2)
    assert page.bitmap != chart(1)[: len(page.bitmap)]


def test_png_with_resolution_keeps_its_size_on_the_sheet(tmp_path):
    image = Image.new("L", (600, 600), 255)
    image.paste(0, (100, 200, 300, 300))  # 2 x 1 in at 100 dpi
    path = tmp_path / "a.png"
    image.save(path, dpi=(100, 100))
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728, page_length="a4")
    assert page.height == round(297 / 25.4 * 98)
    offset = (1728 - 6 * 204) // 2
    assert black_box(page) == pytest.approx((offset + 204, 2 * 98, offset + 3 * 204, 3 * 98), abs=2)


def test_jpeg_photograph_is_dithered_and_threshold_cuts_it(tmp_path):
    # A grey ramp from black (left) to white (right), a photograph's tones: 6 x 4 in at 100 dpi.
    ramp = Image.linear_gradient("L").rotate(90).transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((600, 400))
    path = tmp_path / "photo.jpg"
    ramp.convert("RGB").save(path, dpi=(100, 100), quality=95)
    (dithered,) = pages_for_fax([path], x_dpi=204, y_dpi=196, width_px=1728)
    (cut,) = pages_for_fax([path], x_dpi=204, y_dpi=196, width_px=1728, halftone="threshold")
    stride, left = 1728 // 8, (1728 - 1224) // 16
    rows = range(10, 780)

    def mixed_octets(page: Page, row: int) -> int:
        octets = page.bitmap[row * stride + left : row * stride + left + 1224 // 8]
        return sum(octet not in (0, 255) for octet in octets)

    # Dithering: ink in proportion to the grey (half of the ramp), spread along every row.
    ink = sum(bin(octet).count("1") for octet in dithered.bitmap[: 784 * stride])
    assert 0.4 < ink / (1224 * 784) < 0.6
    assert min(mixed_octets(dithered, row) for row in rows) > 50
    # Threshold: each row is black up to mid-grey, then white: one mixed octet at most.
    assert max(mixed_octets(cut, row) for row in rows) <= 1


def text_pdf(tmp_path, size=10):
    """An A4 page dense with small Helvetica text (60 lines), a grey box and two rules."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=A4_PT)
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    lines = [b"BT /F1 %d Tf %d TL 56 780 Td" % (size, size + 2)]
    lines += [b"(Line %d: Patient J. Doe, potassium 4.%d mmol/L, reference 3.5-5.1, reviewed.) '" % (n, n % 10) for n in range(60)]
    lines.append(b"ET 0.5 w 56 40 m 540 40 l S 0.6 g 400 600 120 80 re f")
    page.Contents = pdf.make_stream(b"\n".join(lines))
    path = tmp_path / "text.pdf"
    pdf.save(path)
    return path


@pytest.mark.parametrize("x_dpi,y_dpi", [(204, 98), (204, 196)])
def test_text_page_is_not_dithered(tmp_path, x_dpi, y_dpi):
    for path in (pdf_with_box(tmp_path, A4_PT, (72, 144, 216, 108)), text_pdf(tmp_path, 10), text_pdf(tmp_path, 7)):
        auto = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=1728)
        threshold = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=1728, halftone="threshold")
        assert auto[0].bitmap == threshold[0].bitmap


def test_grey_paper_scan_is_thresholded_to_white_paper(tmp_path):
    scan = Image.new("L", (850, 1100), 200)  # grey paper, black text block
    scan.paste(0, (100, 100, 500, 140))
    path = tmp_path / "scan.png"
    scan.save(path, dpi=(100, 100))
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728)
    left, top, right, bottom = black_box(page)
    assert (bottom - top) == pytest.approx(0.4 * 98, abs=2)  # only the text block is ink


def test_documents_in_order_and_max_pages_counted_across_them(tmp_path):
    first = pdf_with_box(tmp_path, A4_PT, (72, 72, 72, 72), "one.pdf", pages=2)
    second = tmp_path / "two.png"
    Image.new("L", (100, 100), 0).save(second, dpi=(100, 100))
    pages = pages_for_fax([first, second], x_dpi=204, y_dpi=98, width_px=1728, max_pages=3)
    assert len(pages) == 3
    assert black_box(pages[2])[1] == 0  # the PNG's square is at the top of the third page
    with pytest.raises(DocumentError, match="more than 2 pages"):
        pages_for_fax([first, second], x_dpi=204, y_dpi=98, width_px=1728, max_pages=2)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DocumentError, match="no document"):
        pages_for_fax([], x_dpi=204, y_dpi=98, width_px=1728)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DocumentError, match="notes.txt: this is not a document"):
        pages_for_fax([text], x_dpi=204, y_dpi=98, width_px=1728)
    secret = tmp_path / "secret.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(secret, encryption=pikepdf.Encryption(owner="o", user="u"))
    with pytest.raises(DocumentError, match="password-protected"):
        pages_for_fax([secret], x_dpi=204, y_dpi=98, width_px=1728)
    empty = tmp_path / "empty.pdf"
    pikepdf.new().save(empty)
    with pytest.raises(DocumentError, match="empty.pdf: the document has no pages"):
        pages_for_fax([empty], x_dpi=204, y_dpi=98, width_px=1728)
    with pytest.raises(ValueError, match="page_length"):
        pages_for_fax([text], x_dpi=204, y_dpi=98, width_px=1728, page_length="a5")
    with pytest.raises(ValueError, match="geometry"):
        pages_for_fax([text], x_dpi=204, y_dpi=98, width_px=1727)


@pytest.mark.parametrize("length", sorted(k for k, v in PAGE_LENGTHS.items() if v is not None))
def test_every_sheet_length(tmp_path, length):
    path = pdf_with_box(tmp_path, A4_PT, (72, 144, 216, 108))
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728, page_length=length)
    assert page.height == round(PAGE_LENGTHS[length] * 98)
    assert black_box(page)[2] < 1728


def test_b4_width(tmp_path):
    box_pt = (72, 144, 216, 108)
    path = pdf_with_box(tmp_path, A4_PT, box_pt)
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=196, width_px=2048, page_length="b4")
    assert (page.width, page.height) == (2048, round(353 / 25.4 * 196))
    # Not enlarged: A4 on a B4 line is centred at its own size.
    assert black_box(page) == pytest.approx(expected_box(A4_PT, box_pt, 204, 196, 2048), abs=2)


@settings(deadline=None, max_examples=25)
@given(
    header=st.sampled_from([b"%PDF-1.7\n", b"II*\x00", b"MM\x00*", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0"]),
    body=st.binary(max_size=300),
)
def test_fuzzed_files_raise_only_document_error(tmp_path_factory, header, body):
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(header + body)
    try:
        pages = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728)
    except DocumentError:
        return
    assert all(p.width == 1728 and len(p.bitmap) == p.height * 216 for p in pages)


@pytest.mark.parametrize("x_dpi,y_dpi", [(204, 98), (204, 196), (408, 391)])
def test_landscape_page_is_turned_to_be_sent_at_full_size(tmp_path, x_dpi, y_dpi):
    # A4 landscape (11.69 x 8.27 in); a 2 x 1 in box 1 in from the left and 1 in from the top.
    landscape = (A4_PT[1], A4_PT[0])
    pdf = pdf_with_box(tmp_path, landscape, (72, A4_PT[0] - 144, 144, 72))
    png = tmp_path / "landscape.png"
    image = Image.new("L", (1169, 827), 255)  # the same page at 100 dpi
    image.paste(0, (100, 100, 300, 200))
    image.save(png, dpi=(100, 100))
    width = width_for(x_dpi)
    long_in = A4_PT[1] / 72
    offset = (width - round(A4_PT[0] / 72 * x_dpi)) // 2
    # A quarter turn counter-clockwise: the top edge goes to the left, the right edge to the top.
    expected = (offset + 1 * x_dpi, (long_in - 3) * y_dpi, offset + 2 * x_dpi, (long_in - 1) * y_dpi)
    for path in (pdf, png):
        (page,) = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=width, page_length="a4")
        assert page.height == round(297 / 25.4 * y_dpi)
        assert black_box(page) == pytest.approx(expected, abs=3), path.name
    # Kept as it is, it must shrink to the line: 8.47 / 11.69 of its size.
    (kept,) = pages_for_fax([pdf], x_dpi=x_dpi, y_dpi=y_dpi, width_px=width, turn_landscape=False)
    left, top, right, bottom = black_box(kept)
    assert (right - left) / x_dpi == pytest.approx(2 * width / x_dpi / long_in, abs=2 / x_dpi)


def test_small_landscape_image_is_not_turned(tmp_path):
    path = tmp_path / "small.png"
    image = Image.new("L", (400, 300), 255)  # 4 x 3 in: fits the line as it is
    image.paste(0, (0, 0, 100, 50))
    image.save(path, dpi=(100, 100))
    (page,) = pages_for_fax([path], x_dpi=204, y_dpi=98, width_px=1728)
    offset = (1728 - 4 * 204) // 2
    assert black_box(page) == pytest.approx((offset, 0, offset + 204, 0.5 * 98), abs=2)


@pytest.mark.parametrize("x_dpi,y_dpi", [(204, 98), (204, 196)])
def test_thin_horizontal_strokes_survive_standard_resolution(tmp_path, x_dpi, y_dpi):
    # Twelve 0.5 pt rules (a table's lines, the foot of an "L" at 10 pt), 1/4 in apart.
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=A4_PT)
    page.Contents = pdf.make_stream(b"0.5 w " + b" ".join(b"72 %g m 500 %g l S" % (700 - 18 * n, 700 - 18 * n) for n in range(12)))
    path = tmp_path / "rules.pdf"
    pdf.save(path)
    (sent,) = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=1728)
    stride = 1728 // 8
    inked = [row for row in range(sent.height) if any(sent.bitmap[row * stride : (row + 1) * stride])]
    groups = sum(1 for n, row in enumerate(inked) if n == 0 or row != inked[n - 1] + 1)
    assert groups == 12
