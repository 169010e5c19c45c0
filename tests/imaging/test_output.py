"""TIFF-F, PDF and PNG outputs, checked with libtiff's tiffinfo, Pillow and poppler."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess

import pikepdf
import pytest
from PIL import Image

from imaging import Page
from imaging.libtiff import bitmap_from_image, image_from_bitmap
from imaging.output import TiffAppender, coded_page, write_pdf, write_pdf_coded, write_png, write_tiff
from imaging.tiff import iter_coded_pages, page_block
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install libtiff-tools / poppler-utils (make test-deps)")
    return path


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


def pages() -> list[Page]:
    stride = CHART_WIDTH // 8
    return [
        Page(CHART_WIDTH, CHART_HEIGHT, 204, 196, chart(1)),
        Page(CHART_WIDTH, 1188, 204, 98, chart(2)[: 1188 * stride]),
        Page(CHART_WIDTH, 600, 300, 600, chart(3)[: 600 * stride]),  # inch-based, taller than wide dpi
    ]


def test_tiff_is_class_f_g4_min_is_white_with_true_resolution(tmp_path):
    path = tmp_path / "fax.tif"
    write_tiff(pages(), path, bad_rows=[0, 3, 0], longest_bad_runs=[0, 2, 0])
    info = run(tool("tiffinfo"), str(path))
    directories = info.split("=== TIFF directory")[1:]
    assert len(directories) == 3
    for directory, page in zip(directories, pages()):
        assert "Compression Scheme: CCITT Group 4" in directory
        assert "Photometric Interpretation: min-is-white" in directory
        assert f"Image Width: {page.width} Image Length: {page.height}" in directory
        assert f"Rows/Strip: {page.height}" in directory
        assert re.search(rf"Resolution: {page.x_dpi}, {page.y_dpi} pixels/inch", directory)
    assert "Fax Data: clean" in directories[0]
    assert "Bad Fax Lines: 3" in directories[1] and "Consecutive Bad Fax Lines: 2" in directories[1]
    assert "Fax Data: receiver regenerated" in directories[1]
    with Image.open(path) as image:
        for index, page in enumerate(pages()):
            image.seek(index)
            assert image.size == (page.width, page.height)
            assert bitmap_from_image(image) == page.bitmap


def test_pdf_pages_have_true_size_and_pixels(tmp_path):
    path = tmp_path / "fax.pdf"
    write_pdf(pages(), path)
    info = run(tool("pdfinfo"), "-f", "1", "-l", "3", str(path))
    sizes = [tuple(map(float, m)) for m in re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", info)]
    expected = [(p.width * 72 / p.x_dpi, p.height * 72 / p.y_dpi) for p in pages()]
    assert len(sizes) == len(expected)
    for size, want in zip(sizes, expected):
        assert size == pytest.approx(want, abs=0.01)
    assert sizes[1][0] / 72 == pytest.approx(8.47, abs=0.005)  # 1728 pels at 204 dpi
    for number, page in enumerate(pages(), start=1):
        # pdftoppm draws the page; it smooths the image, so compare 8x8-block greys.
        out = tmp_path / f"page{number}"
        run(tool("pdftoppm"), "-f", str(number), "-l", str(number), "-scale-to-x", str(page.width),
            "-scale-to-y", str(page.height), "-gray", "-singlefile", str(path), str(out))
        with Image.open(f"{out}.pgm") as rendered:
            assert rendered.size == (page.width, page.height)
            blocks = (page.width // 8, page.height // 8)
            drawn = rendered.resize(blocks, Image.Resampling.BOX).tobytes()
        source = image_from_bitmap(page.bitmap, page.width, page.height).convert("L")
        wanted = source.resize(blocks, Image.Resampling.BOX).tobytes()
        off = sum(1 for a, b in zip(drawn, wanted) if abs(a - b) > 48)
        assert off <= len(wanted) // 1000
        # pdfimages hands out the image as poppler's CCITT decoder sees it: exact.
        run(tool("pdfimages"), "-f", str(number), "-l", str(number), str(path), str(tmp_path / f"img{number}"))
        with Image.open(tmp_path / f"img{number}-000.pbm") as extracted:
            assert bitmap_from_image(extracted.convert("1")) == page.bitmap


def test_pdf_embeds_the_g4_stream_without_re_encoding(tmp_path):
    path = tmp_path / "fax.pdf"
    write_pdf(pages()[:1], path)
    with pikepdf.open(path) as pdf:
        image = pdf.pages[0].Resources.XObject.Im0
        assert image.Filter == pikepdf.Name.CCITTFaxDecode
        assert image.DecodeParms.K == -1
        assert image.Width == CHART_WIDTH and image.Height == CHART_HEIGHT


def test_png_preview_has_square_pixels(tmp_path):
    for page in pages():
        path = tmp_path / "p.png"
        write_png(page, path)
        with Image.open(path) as image:
            assert image.size == (page.width, round(page.height * page.x_dpi / page.y_dpi))
            assert image.info["dpi"] == pytest.approx((page.x_dpi, page.x_dpi), abs=0.1)


def test_png_preview_of_standard_resolution_repeats_rows(tmp_path):
    page = pages()[1]
    path = tmp_path / "p.png"
    write_png(page, path)
    with Image.open(path) as image:
        stretched = bitmap_from_image(image.convert("1"))
    stride = page.width // 8
    preview_height = round(page.height * 204 / 98)
    assert len(stretched) == preview_height * stride
    # Nearest neighbour: preview row r shows the source row under its centre.
    for row in (0, 500, 1000, 2000, preview_height - 1):
        source = int((row + 0.5) * page.height / preview_height)
        assert stretched[row * stride : (row + 1) * stride] == page.bitmap[source * stride : (source + 1) * stride]


def test_empty_input_is_refused(tmp_path):
    with pytest.raises(ValueError):
        write_tiff([], tmp_path / "x.tif")
    with pytest.raises(ValueError):
        write_pdf([Page(1728, 0, 204, 98, b"")], tmp_path / "x.pdf")


def test_tiff_appender_is_a_valid_tiff_of_the_pages_before_at_every_crash_point(tmp_path):
    """TIFF 6.0: a reader follows the IFD chain.  The appender writes a page's strip and IFD
    first and links it last, so whatever prefix of an append reached the disk, the file
    holds exactly the earlier pages; after finish PageNumber says n of N."""
    source = pages()
    path = tmp_path / "journal.tif"
    appender = TiffAppender(path, mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for count, page in enumerate(source, start=1):
        before = path.read_bytes()
        block = page_block(coded_page(page), len(before), count - 1, 0)
        # Every prefix of the unlinked block: still the earlier pages (tiffinfo agrees).
        for cut in sorted({0, 1, len(block.data) // 2, len(block.data) - 1, len(block.data)}):
            crashed = tmp_path / "crashed.tif"
            crashed.write_bytes(before + block.data[:cut])
            with open(crashed, "rb") as handle:
                assert [p.data for p in iter_coded_pages(handle)] == [coded_page(p).data for p in source[:count - 1]]
            if count > 1:
                assert run(tool("tiffinfo"), str(crashed)).count("=== TIFF directory") == count - 1
        appender.append(coded_page(page))
        with Image.open(path) as image:
            assert image.n_frames == count
            image.seek(count - 1)
            assert bitmap_from_image(image) == page.bitmap
    appender.finish()
    info = run(tool("tiffinfo"), str(path))
    assert [f"Page Number: {n}-{len(source)}" in d for n, d in enumerate(info.split("=== TIFF directory")[1:])] == \
        [True] * len(source)
    with open(path, "rb") as handle:
        assert [(p.width, p.height, p.x_dpi, p.y_dpi) for p in iter_coded_pages(handle)] == \
            [(p.width, p.height, p.x_dpi, p.y_dpi) for p in source]
    # The same pages written whole are byte for byte what the appender wrote.
    whole = tmp_path / "whole.tif"
    write_tiff(source, whole)
    assert whole.read_bytes() == path.read_bytes()


def test_streamed_pdf_from_the_journal_is_clean_and_exact(tmp_path):
    path = tmp_path / "journal.tif"
    appender = TiffAppender(path)
    for page in pages():
        appender.append(coded_page(page))
    pdf_path = tmp_path / "fax.pdf"
    with open(path, "rb") as handle:
        assert write_pdf_coded(iter_coded_pages(handle), pdf_path) == 3
    with pikepdf.open(pdf_path) as pdf:
        assert pdf.check_pdf_syntax() == []  # qpdf finds nothing to repair
        assert len(pdf.pages) == 3
        for pdf_page, page in zip(pdf.pages, pages()):
            image = pikepdf.PdfImage(pdf_page.Resources.XObject.Im0).as_pil_image()
            assert bitmap_from_image(image.convert("1")) == page.bitmap
    run(tool("pdfinfo"), str(pdf_path))  # poppler parses it without repair
    with pytest.raises(ValueError):
        write_pdf_coded(iter(()), tmp_path / "none.pdf")


def test_a_failed_append_leaves_the_earlier_pages_and_can_be_retried(tmp_path):
    """A disk that fills up mid-page (here RLIMIT_FSIZE: the kernel refuses the write with
    EFBIG, as it would with ENOSPC): the append raises, the file is still the earlier
    pages, and the next append cuts the debris off."""
    import resource
    import signal

    big, _, small = pages()
    path = tmp_path / "journal.tif"
    appender = TiffAppender(path)
    appender.append(coded_page(big))
    limit = path.stat().st_size + len(coded_page(big).data) // 2  # a second big page does not fit
    assert limit - path.stat().st_size > len(coded_page(small).data) + 400  # more debris than a small page
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
        with pytest.raises(OSError):
            appender.append(coded_page(big))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.stat().st_size == limit  # half a page is on disk, unreferenced
    with Image.open(path) as image:
        assert image.n_frames == 1
    appender.append(coded_page(small))
    appender.finish()
    whole = tmp_path / "whole.tif"
    write_tiff([big, small], whole)
    assert path.read_bytes() == whole.read_bytes()  # no debris left


def test_archive_g4_is_the_octets_libtiff_codes_through_pillow():
    # coded_page calls libtiff directly (imaging.wholepage) for speed; what it stores must
    # be the very octets libtiff codes when Pillow drives it (the reference), for the T.24
    # charts and a blank page.
    from imaging.libtiff import encode_with_libtiff
    from imaging.model import BitOrder, Coding

    blank = Page(CHART_WIDTH, 50, 204, 98, bytes(CHART_WIDTH // 8 * 50))
    for page in [*pages(), blank]:
        reference = encode_with_libtiff(page.bitmap, page.width, page.height, Coding.MMR,
                                        bit_order=BitOrder.MSB_FIRST)
        assert coded_page(page).data == reference
