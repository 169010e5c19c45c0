"""Cover pages from a replaceable template and the header line stamped on each sent page."""

from __future__ import annotations

import datetime

import pytest
from PIL import Image, ImageChops

from imaging import Page
from imaging.libtiff import image_from_bitmap
from t38gw.cover import (
    HEADER_BAND_MM,
    HEADER_FONT_MM,
    CoverFields,
    CoverTemplateError,
    add_header_line,
    cover_page,
    default_cover_template,
    header_font_mm,
    load_cover_template,
    parse_cover_template,
)
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart

WHEN = datetime.datetime(2026, 12, 6, 14, 5, tzinfo=datetime.UTC)
FIELDS = CoverFields(
    when=WHEN, pages=4, sender="St Elsewhere Hospital", sender_number="+44 20 7946 0000",
    recipient="Dr A. Example", recipient_number="+44 161 496 0000", note="Discharge letter for J. Doe.",
)
RESOLUTIONS = ((204, 98), (204, 196), (204, 391), (408, 391))


def image(page: Page) -> Image.Image:
    return image_from_bitmap(page.bitmap, page.width, page.height).convert("L")


def ink_box(page: Page) -> tuple[int, int, int, int] | None:
    return ImageChops.invert(image(page)).getbbox()


def difference_box(a: Page, b: Page) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(image(a), image(b)).getbbox()


@pytest.mark.parametrize("x_dpi,y_dpi", RESOLUTIONS)
@pytest.mark.parametrize("length,inches", [("a4", 297 / 25.4), ("letter", 11.0)])
def test_cover_page_size(x_dpi, y_dpi, length, inches):
    width = 1728 if x_dpi == 204 else 3456
    page = cover_page(FIELDS, x_dpi=x_dpi, y_dpi=y_dpi, width_px=width, page_length=length)
    assert (page.width, page.height, page.x_dpi, page.y_dpi) == (width, round(inches * y_dpi), x_dpi, y_dpi)
    assert ink_box(page) is not None


@pytest.mark.parametrize("x_dpi,y_dpi", [(204, 98), (204, 196), (408, 391)])
@pytest.mark.parametrize("field", ["sender", "sender_number", "recipient", "recipient_number", "note"])
def test_each_field_is_drawn_where_the_template_puts_it(x_dpi, y_dpi, field):
    width = 1728 if x_dpi == 204 else 3456
    (item,) = [t for t in default_cover_template().texts if t.text == "{" + field + "}"]
    blank = CoverFields(**{**FIELDS.__dict__, field: ""})
    with_field = cover_page(FIELDS, x_dpi=x_dpi, y_dpi=y_dpi, width_px=width)
    without = cover_page(blank, x_dpi=x_dpi, y_dpi=y_dpi, width_px=width)
    box = difference_box(with_field, without)
    assert box is not None, f"{field} left no ink"
    left, top, right, bottom = box
    # The text starts at the item's x and just below its y (the ascender line), in mm.
    assert left / x_dpi * 25.4 == pytest.approx(item.x_mm, abs=1.0)
    assert item.y_mm - 0.5 <= top / y_dpi * 25.4 <= item.y_mm + item.size_pt / 72 * 25.4 * 0.5
    # ...and stays on its line (or wrapped paragraph) and inside the page.
    assert bottom / y_dpi * 25.4 < item.y_mm + item.size_pt / 72 * 25.4 * 1.5
    assert right < width


def test_page_count_and_date_are_drawn():
    three = cover_page(CoverFields(**{**FIELDS.__dict__, "pages": 3}), x_dpi=204, y_dpi=196)
    nine = cover_page(CoverFields(**{**FIELDS.__dict__, "pages": 9}), x_dpi=204, y_dpi=196)
    (pages_item,) = [t for t in default_cover_template().texts if t.text.startswith("{pages}")]
    box = difference_box(three, nine)
    assert box is not None and box[1] / 196 * 25.4 == pytest.approx(pages_item.y_mm, abs=2)
    later = cover_page(CoverFields(**{**FIELDS.__dict__, "when": WHEN + datetime.timedelta(days=1)}), x_dpi=204, y_dpi=196)
    (date_item,) = [t for t in default_cover_template().texts if t.text == "{date}"]
    box = difference_box(three, later)
    assert box is not None and box[1] / 196 * 25.4 == pytest.approx(date_item.y_mm, abs=2)


def test_a_replaced_template_is_used(tmp_path):
    path = tmp_path / "ours.toml"
    path.write_text(
        '[[text]]\nx = 100\ny = 200\nsize = 20\ntext = "{recipient} {when:%d.%m.%Y}"\n\n'
        "[[rule]]\nx = 30\ny = 150\nwidth = 50\nthickness = 2\n"
    )
    template = load_cover_template(path)
    page = cover_page(FIELDS, template, x_dpi=204, y_dpi=196)
    left, top, right, bottom = ink_box(page) or (0, 0, 0, 0)
    mm_x, mm_y = 25.4 / 204, 25.4 / 196
    # The rule is the top-left of all ink; the text is at (100, 200) mm; nothing else.
    assert (left * mm_x, top * mm_y) == pytest.approx((30, 150), abs=0.3)
    text = image(page).crop((0, round(190 / mm_y), page.width, page.height))
    text_box = ImageChops.invert(text).getbbox()
    assert text_box is not None and text_box[0] * mm_x == pytest.approx(100, abs=1)
    assert bottom * mm_y < 200 + 20 / 72 * 25.4 * 1.3
    default = cover_page(FIELDS, x_dpi=204, y_dpi=196)
    assert page.bitmap != default.bitmap


def test_long_note_wraps_within_its_width():
    note = " ".join(["word"] * 300)
    page = cover_page(CoverFields(**{**FIELDS.__dict__, "note": note}), x_dpi=204, y_dpi=196)
    (item,) = [t for t in default_cover_template().texts if t.text == "{note}"]
    band = image(page).crop((0, round(item.y_mm / 25.4 * 196), page.width, round(250 / 25.4 * 196)))
    box = ImageChops.invert(band).getbbox()
    assert box is not None
    assert item.width_mm is not None and box[2] / 204 * 25.4 <= item.x_mm + item.width_mm + 0.5
    assert box[3] / 196 * 25.4 > 30  # several lines, not one running off the page


@pytest.mark.parametrize(
    "source,says",
    [
        ("[[text]\n", "not valid TOML"),
        ('[[text]]\nx = 1\ny = 1\nsize = 10\ntext = "{patient}"\n', "unknown placeholder"),
        ('[[text]]\nx = 1\ny = 1\nsize = 10\ntext = "{sender.__class__}"\n', "unknown placeholder"),
        ('[[text]]\nx = 1\ny = 1\nsize = 10\ntext = "{pages:%Y}"\n', "bad placeholder format"),
        ('[[text]]\nx = 1\ny = 1\nsize = 10\ntext = "a"\ncolour = "red"\n', "unknown key"),
        ('[[text]]\nx = -5\ny = 1\nsize = 10\ntext = "a"\n', "x must be a number"),
        ('[[text]]\nx = 1\ny = 1\ntext = "a"\n', "size must be a number"),
        ('[[text]]\nx = 1\ny = 1\nsize = 10\ntext = "a"\nalign = "middle"\n', "align"),
        ("[[rule]]\nx = 1\ny = 1\n", "width must be a number"),
        ("[page]\nsize = 1\n", "unknown section"),
    ],
)
def test_template_errors_are_found_when_loading(source, says):
    with pytest.raises(CoverTemplateError, match=says):
        parse_cover_template(source, name="mine.toml")


def test_unreadable_template_file(tmp_path):
    with pytest.raises(CoverTemplateError, match="cannot be read"):
        load_cover_template(tmp_path / "missing.toml")


def chart_page(y_dpi: float) -> Page:
    return Page(CHART_WIDTH, CHART_HEIGHT, 204, y_dpi, chart(1))


@pytest.mark.parametrize("y_dpi", [98, 196, 391])
def test_header_line_stamps_the_top_band_and_leaves_the_rest(y_dpi):
    page = chart_page(y_dpi)
    stamped = add_header_line(page, ident="+44 20 7946 0000", when=WHEN, page_no=2, pages=5, name="St Elsewhere")
    band = round(HEADER_BAND_MM / 25.4 * y_dpi)
    stride = page.width // 8
    assert (stamped.width, stamped.height, stamped.x_dpi, stamped.y_dpi) == (page.width, page.height, 204, y_dpi)
    assert stamped.bitmap[band * stride :] == page.bitmap[band * stride :]
    header = Page(page.width, band, 204, y_dpi, stamped.bitmap[: band * stride])
    left, top, right, bottom = ink_box(header) or (0, 0, 0, 0)
    # Ink across the line (date at the left, page number at the right), inside 2 mm margins,
    # not touching the band's edges, several rows tall (legible).
    assert 1.5 <= left / 204 * 25.4 <= 3 and 1.5 <= (page.width - right) / 204 * 25.4 <= 3
    assert top > 0 and bottom < band and (bottom - top) >= 0.4 * band
    # Each part is its own: a different page number changes only the right end.
    other = add_header_line(page, ident="+44 20 7946 0000", when=WHEN, page_no=3, pages=5, name="St Elsewhere")
    changed = difference_box(stamped, other)
    assert changed is not None and changed[0] > page.width * 0.75 and changed[3] <= band


def test_longest_header_fits_the_a4_line_at_full_size():
    # TSI is at most 20 characters (T.30 5.3.6.2.4); a long name and two-digit page counts.
    parts = ["2026-12-06 14:05", "St Elsewhere University Hospital Trust  +44 20 7946 0000 12", "page 199/200"]
    assert header_font_mm(parts, 1728, 204) == HEADER_FONT_MM
    # A name far too long for the line makes the font smaller, never past the minimum.
    squeezed = header_font_mm([parts[0], "X" * 120, parts[2]], 1728, 204)
    assert squeezed < HEADER_FONT_MM
    page = chart_page(98)
    stamped = add_header_line(page, ident="X" * 20, when=WHEN, page_no=199, pages=200, name="N" * 100)
    band = round(HEADER_BAND_MM / 25.4 * 98)
    header = Page(page.width, band, 204, 98, stamped.bitmap[: band * page.width // 8])
    left, _, right, _ = ink_box(header) or (0, 0, 0, 0)
    assert left > 0 and right < page.width


def test_header_on_a_page_shorter_than_the_band():
    page = Page(1728, 5, 204, 98, bytes(216 * 5))
    stamped = add_header_line(page, ident="1", when=WHEN, page_no=1, pages=1)
    assert stamped.height == 5 and len(stamped.bitmap) == len(page.bitmap)


def test_names_with_accents_are_drawn_in_letters_the_font_has():
    # The built-in font is ASCII: "Müller" must come out as "Muller", never as an empty box.
    accented = CoverFields(**{**FIELDS.__dict__, "recipient": "Dr Zoë Müller-Łęcka", "note": "½ dose – see “notes”"})
    plain = CoverFields(**{**FIELDS.__dict__, "recipient": "Dr Zoe Muller-Lecka", "note": '1/2 dose - see "notes"'})
    assert cover_page(accented, x_dpi=204, y_dpi=98).bitmap == cover_page(plain, x_dpi=204, y_dpi=98).bitmap
    page = chart_page(196)
    assert (
        add_header_line(page, ident="+33 1", when=WHEN, page_no=1, pages=1, name="Hôpital Saint-Émilion").bitmap
        == add_header_line(page, ident="+33 1", when=WHEN, page_no=1, pages=1, name="Hopital Saint-Emilion").bitmap
    )
    # Other scripts become "?", which the font draws (the same ink as a typed "?").
    russian = CoverFields(**{**FIELDS.__dict__, "recipient": "Иван"})
    asked = CoverFields(**{**FIELDS.__dict__, "recipient": "????"})
    assert cover_page(russian, x_dpi=204, y_dpi=98).bitmap == cover_page(asked, x_dpi=204, y_dpi=98).bitmap
