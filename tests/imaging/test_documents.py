"""Documents in: PDF (pypdfium2), TIFF, PNG, JPEG -> bilevel pages; bad files -> DocumentError."""

from __future__ import annotations

import io
import struct
import zlib

import pikepdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from imaging import DocumentError, Page
from imaging.documents import load_document
from imaging.libtiff import image_from_bitmap
from imaging.output import write_pdf, write_tiff
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart

FAX = dict(x_dpi=204, y_dpi=196, width=1728)


def black_box(page: Page) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the black pels, exclusive right/bottom."""
    image = image_from_bitmap(page.bitmap, page.width, page.height)
    from PIL import ImageOps

    return ImageOps.invert(image.convert("L")).getbbox()


def test_our_own_pdf_comes_back_pel_for_pel(tmp_path):
    path = tmp_path / "a.pdf"
    pages = [Page(CHART_WIDTH, CHART_HEIGHT, 200, 200, chart(n)) for n in (1, 2)]
    write_pdf(pages, path)
    loaded = load_document(path, x_dpi=200, y_dpi=200, width=CHART_WIDTH)
    assert [p.bitmap for p in loaded] == [p.bitmap for p in pages]


def test_pdf_page_is_scaled_to_the_line_and_keeps_its_geometry(tmp_path):
    # A US Letter page (8.5 x 11 in) with a 2 x 1 in black box whose corner is 1 in from the
    # left and 1 in from the bottom.
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(612, 792))
    page.Contents = pdf.make_stream(b"0 0 0 rg 72 72 144 72 re f")
    path = tmp_path / "letter.pdf"
    pdf.save(path)
    for x_dpi, y_dpi in ((204, 98), (204, 196), (408, 391), (300, 600)):
        width = 1728 if x_dpi == 204 else (3456 if x_dpi == 408 else 2432)
        (loaded,) = load_document(path, x_dpi=x_dpi, y_dpi=y_dpi, width=width)
        fit = min(1.0, width / x_dpi / 8.5)
        offset = (width - round(8.5 * fit * x_dpi)) // 2
        assert loaded.width == width
        assert loaded.height == round(11 * fit * y_dpi)
        left, top, right, bottom = black_box(loaded)
        expected = (offset + 1 * fit * x_dpi, (11 - 2) * fit * y_dpi, offset + 3 * fit * x_dpi, 10 * fit * y_dpi)
        assert (left, top, right, bottom) == pytest.approx(expected, abs=2)


def test_multi_page_tiff_g4_and_greyscale(tmp_path):
    g4 = tmp_path / "fax.tif"
    write_tiff([Page(CHART_WIDTH, CHART_HEIGHT, 204, 196, chart(n)) for n in (3, 4)], g4)
    loaded = load_document(g4, **FAX)
    assert [p.bitmap for p in loaded] == [chart(3), chart(4)]
    # The same pages as 8-bit LZW greyscale at 204x196 dpi: threshold gives them back.
    grey = tmp_path / "grey.tif"
    frames = [image_from_bitmap(chart(n), CHART_WIDTH, CHART_HEIGHT).convert("L") for n in (3, 4)]
    frames[0].save(grey, compression="tiff_lzw", save_all=True, append_images=frames[1:], dpi=(204, 196))
    assert [p.bitmap for p in load_document(grey, **FAX)] == [chart(3), chart(4)]


def test_png_without_resolution_spans_the_line(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (850, 1100), "white").save(path)
    (page,) = load_document(path, x_dpi=204, y_dpi=98, width=1728)
    assert (page.width, page.height) == (1728, round(1728 / 204 * 1100 / 850 * 98))
    assert not any(page.bitmap)


def test_png_with_resolution_keeps_its_physical_size_and_is_centred(tmp_path):
    path = tmp_path / "a.png"
    image = Image.new("L", (400, 200), 0)  # 4 x 2 in of black at 100 dpi
    image.save(path, dpi=(100, 100))
    (page,) = load_document(path, **FAX)
    assert page.height == 2 * 196
    left, top, right, bottom = black_box(page)
    assert (right - left, bottom - top) == (4 * 204, 2 * 196)
    assert left == (1728 - 4 * 204) // 2


def test_transparent_png_is_on_white(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (100, 100), (0, 0, 0, 0)).save(path)
    (page,) = load_document(path, **FAX)
    assert not any(page.bitmap)


def test_jpeg(tmp_path):
    path = tmp_path / "a.jpg"
    image = Image.new("RGB", (1700, 2200), "white")
    image.paste((0, 0, 0), (100, 100, 400, 300))
    image.save(path, dpi=(200, 200), quality=90)
    (page,) = load_document(path, **FAX)
    left, top, right, bottom = black_box(page)
    fit = 1728 / 204 / 8.5  # 8.5 in wide: shrunk to the 8.47 in line, no margin left
    assert (left, top, right, bottom) == pytest.approx((0.5 * fit * 204, 0.5 * fit * 196, 2 * fit * 204, 1.5 * fit * 196), abs=2)


def _png_claiming(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return bytes(data)


def encrypted_pdf(tmp_path):
    path = tmp_path / "secret.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(path, encryption=pikepdf.Encryption(owner="o", user="u"))
    return path


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"just some text, not a document\n", "not a document"),
        (b"", "empty"),
        (b"%PDF-1.4\n%garbage that is not a PDF at all\n", "damaged"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged"),
        (_png_claiming(60000, 60000), "too large"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "damaged"),
        (b"II*\x00\x08\x00\x00\x00\x00\x00", "damaged"),
    ],
)
def test_files_that_are_not_documents(tmp_path, content, says):
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    with pytest.raises(DocumentError, match=says):
        load_document(path, **FAX)


def test_encrypted_pdf(tmp_path):
    with pytest.raises(DocumentError, match="password"):
        load_document(encrypted_pdf(tmp_path), **FAX)


def test_pdf_with_no_pages(tmp_path):
    path = tmp_path / "empty.pdf"
    pikepdf.new().save(path)
    with pytest.raises(DocumentError, match="no pages"):
        load_document(path, **FAX)


def test_absurdly_long_page(tmp_path):
    path = tmp_path / "long.png"
    Image.new("1", (100, 40000), 1).save(path, dpi=(100, 100))  # 400 inches
    with pytest.raises(DocumentError, match="too long"):
        load_document(path, **FAX)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DocumentError, match="cannot be read"):
        load_document(tmp_path / "nope.pdf", **FAX)
    with pytest.raises(DocumentError, match="cannot be read"):
        load_document(tmp_path, **FAX)


@settings(deadline=None, max_examples=30)
@given(
    header=st.sampled_from([b"%PDF-1.7\n", b"II*\x00", b"MM\x00*", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0"]),
    body=st.binary(max_size=400),
)
def test_fuzzed_files_raise_only_document_error(tmp_path_factory, header, body):
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(header + body)
    try:
        pages = load_document(path, **FAX)
    except DocumentError:
        return
    assert all(p.width == 1728 and len(p.bitmap) == p.height * 216 for p in pages)


def test_text_pdf_is_drawn_where_the_text_is(tmp_path):
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))  # A4: narrower than the line, not scaled
    page.Resources = pikepdf.Dictionary(
        Font=pikepdf.Dictionary(F1=pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica))
    )
    page.Contents = pdf.make_stream(b"BT /F1 36 Tf 72 720 Td (Patient: Test) Tj ET")
    path = tmp_path / "text.pdf"
    pdf.save(path)
    (loaded,) = load_document(path, **FAX)
    assert loaded.height == round(842 / 72 * 196)
    left, top, right, bottom = black_box(loaded)
    margin = (1728 - round(595 / 72 * 204)) // 2  # centred across the line
    # The baseline is 720 pt up, 122 pt (1.69 in) from the top; Helvetica capitals at 36 pt
    # stand ~26 pt (0.36 in) above it, and no letter of this text descends.
    assert abs(left - (margin + 204)) < 10
    assert 1.25 * 196 < top < 1.42 * 196 and 1.6 * 196 < bottom < 1.75 * 196
    assert right - left > 2 * 204  # "Patient: Test" at 36 pt is over 2 inches long


@pytest.mark.parametrize(
    ("mode", "white", "black", "name"),
    [
        ("I;16", 65535, 0, "a.png"),
        ("I", 255, 0, "a.tif"),
        ("F", 255.0, 0.0, "a.tif"),
        ("LA", (255, 255), (0, 255), "a.png"),
        ("CMYK", (0, 0, 0, 0), (0, 0, 0, 255), "a.jpg"),
        ("P", 0, 1, "a.tif"),
        ("1", 1, 0, "a.png"),
        ("RGB", (255, 255, 255), (0, 0, 0), "a.webp"),
    ],
)
def test_every_image_mode_gives_the_same_page(tmp_path, mode, white, black, name):
    # A 0.5 x 0.5 in black square at (0.1 in, 0.1 in) on a 2 x 1 in image at 100 dpi.
    image = Image.new(mode, (200, 100), white)
    if mode == "P":
        image.putpalette([255, 255, 255, 0, 0, 0])
    image.paste(black, (10, 10, 60, 60))
    path = tmp_path / name
    image.save(path, dpi=(100, 100))
    if name.endswith(".webp"):
        with pytest.raises(DocumentError, match="not a document"):
            load_document(path, **FAX)
        return
    (page,) = load_document(path, x_dpi=204, y_dpi=98, width=1728)
    assert page.height == 98
    left, top, right, bottom = black_box(page)
    margin = (1728 - 408) // 2
    assert (left, top, right, bottom) == pytest.approx((margin + 20, 10, margin + 122, 59), abs=1)
