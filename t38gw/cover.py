"""The pages we add to a fax we send: a cover page from a template, a header line on every page.

**Cover page.** A template is plain TOML that a user may replace (the default,
``t38gw/templates/cover.toml``, documents the format): ``[[text]]`` items placed in
millimetres from the page's top-left corner, sized in points, with ``{placeholders}`` for the
fax's service data (``COVER_PLACEHOLDERS``), and ``[[rule]]`` lines. A template is checked
whole when loaded (unknown keys or placeholders, bad numbers), so a broken one fails at
start-up, not on a patient's fax. Text is drawn with Pillow's built-in scalable font
(``ImageFont.load_default(size=...)``, FreeType) on a square grid at the finer of the two
resolutions, then resampled to the page's pel pitch and cut at mid-grey, so the letters keep
their shape at 204 x 98 as at 408 x 391.

**Header line.** Fax machines print the sender's identification, the date and time and the
page number across the top of each page they send. In the US this is a legal requirement
(47 CFR 68.318(d): date and time, the sender's name and number, on each page or the first).
T.30 does not code it: it is part of the image. We do as SpanDSP's t4_tx does with
``header_overlays_image``: the top ``HEADER_BAND_MM`` of the page is replaced by a white band
carrying the text (documents keep a wider top margin than that), and the page keeps its
length. Date and time on the left, name and ident in the middle, "page n/m" on the right; if
they would not fit the line the font is made smaller, never the text cut, down to
``HEADER_MIN_MM``.

**Letters.** The built-in font draws ASCII only, so field text is made drawable before it is
drawn, as fax machines' ASCII headers do: accents are dropped (Müller -> Muller, José ->
Jose), a few letters are spelt out (ß -> ss, Æ -> AE, Ø -> O, Ł -> L), and anything else
(other scripts) becomes "?" rather than an empty box.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
import string
import tomllib
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from imaging import Page
from imaging.libtiff import bitmap_from_image
from imaging.sendpages import PAGE_LENGTHS

COVER_PLACEHOLDERS = frozenset({"sender", "sender_number", "recipient", "recipient_number", "pages", "date", "note", "when"})
HEADER_BAND_MM = 4.5
HEADER_FONT_MM = 3.0
HEADER_MIN_MM = 2.0
_MARGIN_MM = 2.0
_THRESHOLD = [0] * 128 + [255] * 128
# Where rows are merged (98 lpi from a 204 grid), a thin stroke (a hyphen, the bar of an "e")
# becomes a half-grey row that a mid-grey cut would drop: cut lighter there.
_THRESHOLD_MERGED = [0] * 192 + [255] * 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MAX_FIELD = 2000


_SPELT_OUT = str.maketrans({
    "ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe", "Ł": "L", "ł": "l",
    "Đ": "D", "đ": "d", "Þ": "Th", "þ": "th", "Ð": "D", "ð": "d", "ı": "i",
    "‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "‐": "-", "−": "-",
    "€": "EUR", "£": "GBP", "…": "...", "\u00a0": " ", "•": "*", "·": "-", "×": "x", "°": "o", "⁄": "/",
})


class CoverTemplateError(ValueError):
    """A cover page template is not usable; the message says where and why."""


@dataclass(frozen=True, kw_only=True)
class CoverFields:
    """What a cover page says. ``pages`` counts every page sent, the cover included."""

    when: datetime.datetime
    pages: int
    sender: str = ""
    sender_number: str = ""
    recipient: str = ""
    recipient_number: str = ""
    note: str = ""


@dataclass(frozen=True)
class CoverText:
    x_mm: float
    y_mm: float
    size_pt: float
    text: str
    width_mm: float | None = None
    align: str = "left"


@dataclass(frozen=True)
class CoverRule:
    x_mm: float
    y_mm: float
    width_mm: float
    thickness_mm: float = 0.5


@dataclass(frozen=True)
class CoverTemplate:
    texts: tuple[CoverText, ...]
    rules: tuple[CoverRule, ...] = ()


def parse_cover_template(source: str, *, name: str = "cover template") -> CoverTemplate:
    """A CoverTemplate from TOML text; CoverTemplateError naming ``name`` and the item if unusable."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        raise CoverTemplateError(f"{name}: not valid TOML ({error})") from None
    unknown = set(data) - {"text", "rule"}
    if unknown:
        raise CoverTemplateError(f"{name}: unknown section(s) {sorted(unknown)}; use [[text]] and [[rule]]")
    texts = tuple(_text_item(item, f"{name}: text {n}") for n, item in enumerate(_items(data, "text", name), 1))
    rules = tuple(_rule_item(item, f"{name}: rule {n}") for n, item in enumerate(_items(data, "rule", name), 1))
    return CoverTemplate(texts, rules)


def load_cover_template(path: str | os.PathLike[str]) -> CoverTemplate:
    """The template in the TOML file ``path``; CoverTemplateError if unreadable or unusable."""
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise CoverTemplateError(f"{os.fspath(path)}: cannot be read ({error})") from None
    return parse_cover_template(source, name=os.fspath(path))


@functools.cache
def default_cover_template() -> CoverTemplate:
    """The template shipped in ``t38gw/templates/cover.toml``."""
    source = resources.files("t38gw").joinpath("templates/cover.toml").read_text(encoding="utf-8")
    return parse_cover_template(source, name="t38gw/templates/cover.toml")


def cover_page(
    fields: CoverFields,
    template: CoverTemplate | None = None,
    *,
    x_dpi: float,
    y_dpi: float,
    width_px: int = 1728,
    page_length: str = "a4",
) -> Page:
    """The cover page for ``fields`` drawn from ``template`` (default: the shipped one).

    The page is ``width_px`` pels at ``x_dpi`` x ``y_dpi`` and as long as the ``page_length``
    sheet (``imaging.sendpages.PAGE_LENGTHS``; "unlimited" draws an A4 page).
    """
    template = template or default_cover_template()
    length_in = PAGE_LENGTHS[page_length] or PAGE_LENGTHS["a4"]
    assert length_in is not None
    grid = max(x_dpi, y_dpi)
    canvas = Image.new("L", (round(width_px / x_dpi * grid), round(length_in * grid)), 255)
    draw = ImageDraw.Draw(canvas)
    values = _values(fields)

    def px(mm: float) -> float:
        return mm / 25.4 * grid

    for rule in template.rules:
        draw.rectangle((px(rule.x_mm), px(rule.y_mm), px(rule.x_mm + rule.width_mm), px(rule.y_mm + rule.thickness_mm)), fill=0)
    for item in template.texts:
        font = ImageFont.load_default(size=item.size_pt / 72 * grid)
        text = _clean(string.Formatter().vformat(item.text, (), values))
        lines = _wrap(text, font, None if item.width_mm is None else px(item.width_mm))
        step = item.size_pt / 72 * grid * 1.25
        anchor = {"left": "la", "centre": "ma", "right": "ra"}[item.align]
        for number, line in enumerate(lines):
            draw.text((px(item.x_mm), px(item.y_mm) + number * step), line, fill=0, font=font, anchor=anchor)
    return _bilevel(canvas, width_px, round(length_in * y_dpi), x_dpi, y_dpi)


def add_header_line(
    page: Page, *, ident: str, when: datetime.datetime, page_no: int, pages: int, name: str = ""
) -> Page:
    """``page`` with the fax header line in its top ``HEADER_BAND_MM``: date/time, name and
    ident, "page n/m". The rest of the page is unchanged; so are its size and resolution."""
    parts = [f"{when:%Y-%m-%d %H:%M}", "  ".join(p for p in (name, ident) if p.strip()), f"page {page_no}/{pages}"]
    parts = [_clean(part).replace("\n", " ") for part in parts]
    grid = max(page.x_dpi, page.y_dpi)
    width = round(page.width / page.x_dpi * grid)
    band = Image.new("L", (width, round(HEADER_BAND_MM / 25.4 * grid)), 255)
    draw = ImageDraw.Draw(band)
    margin = _MARGIN_MM / 25.4 * grid
    size_mm = header_font_mm(parts, page.width, page.x_dpi)
    font = ImageFont.load_default(size=size_mm / 25.4 * grid)
    middle = band.height / 2  # anchors "?m": halfway between ascender and descender
    draw.text((margin, middle), parts[0], fill=0, font=font, anchor="lm")
    draw.text((width / 2, middle), parts[1], fill=0, font=font, anchor="mm")
    draw.text((width - margin, middle), parts[2], fill=0, font=font, anchor="rm")
    rows = min(page.height, round(HEADER_BAND_MM / 25.4 * page.y_dpi))
    stamped = _bilevel(band, page.width, rows, page.x_dpi, page.y_dpi)
    return Page(page.width, page.height, page.x_dpi, page.y_dpi, stamped.bitmap + page.bitmap[len(stamped.bitmap) :])


def header_font_mm(parts: list[str], width_px: int, x_dpi: float) -> float:
    """The font size (mm) the header's three parts are drawn at on a ``width_px`` line: the
    largest from HEADER_FONT_MM down to HEADER_MIN_MM at which left, centre and right parts
    do not touch (at least 2 mm apart)."""
    line_mm = width_px / x_dpi * 25.4
    size = HEADER_FONT_MM
    while size > HEADER_MIN_MM:
        if _header_fits(parts, line_mm, size):
            break
        size = round(size - 0.1, 1)
    return max(size, HEADER_MIN_MM)


def _header_fits(parts: list[str], line_mm: float, size_mm: float) -> bool:
    scale = 100  # measure at 100 px per mm
    font = ImageFont.load_default(size=size_mm * scale)
    left, middle, right = (font.getlength(part) / scale for part in parts)
    gap = 2.0
    return (
        _MARGIN_MM + left + gap <= line_mm / 2 - middle / 2
        and line_mm / 2 + middle / 2 + gap <= line_mm - _MARGIN_MM - right
    )


def _bilevel(canvas: Image.Image, width: int, rows: int, x_dpi: float, y_dpi: float) -> Page:
    threshold = _THRESHOLD
    if canvas.size != (width, rows):
        threshold = _THRESHOLD_MERGED if rows < canvas.height * 0.75 else _THRESHOLD
        canvas = canvas.resize((width, rows), Image.Resampling.BOX)
    return Page(width, rows, x_dpi, y_dpi, bitmap_from_image(canvas.point(threshold, "1")))


def _values(fields: CoverFields) -> dict[str, Any]:
    when = fields.when
    zone = when.tzname() or ""
    return {
        "sender": _clean(fields.sender),
        "sender_number": _clean(fields.sender_number),
        "recipient": _clean(fields.recipient),
        "recipient_number": _clean(fields.recipient_number),
        "pages": fields.pages,
        "date": f"{when:%Y-%m-%d %H:%M} {zone}".strip(),
        "note": _clean(fields.note),
        "when": when,
    }


def _clean(text: str) -> str:
    """Field text as drawn: ASCII the font has (see the module docstring), no control
    characters (newlines kept), bounded length."""
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n")[:_MAX_FIELD]).translate(_SPELT_OUT)
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    base = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_SPELT_OUT)
    return "".join(c if c.isascii() else "?" for c in base)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float | None) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if width is None:
            lines.append(paragraph)
            continue
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _items(data: dict[str, Any], key: str, name: str) -> list[dict[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise CoverTemplateError(f"{name}: {key} must be a list of [[{key}]] tables")
    return items


def _number(item: dict[str, Any], key: str, where: str, *, default: float | None = None, low: float = 0.0) -> float:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 1000:
        raise CoverTemplateError(f"{where}: {key} must be a number from {low:g} to 1000 (millimetres or points)")
    return float(value)


def _text_item(item: dict[str, Any], where: str) -> CoverText:
    unknown = set(item) - {"x", "y", "size", "text", "width", "align"}
    if unknown:
        raise CoverTemplateError(f"{where}: unknown key(s) {sorted(unknown)}")
    text = item.get("text")
    if not isinstance(text, str):
        raise CoverTemplateError(f"{where}: text must be a string")
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as error:
        raise CoverTemplateError(f"{where}: bad placeholder in {text!r} ({error})") from None
    bad = {field for field in names if field not in COVER_PLACEHOLDERS}
    if bad:
        raise CoverTemplateError(f"{where}: unknown placeholder(s) {sorted(bad)}; use {sorted(COVER_PLACEHOLDERS)}")
    sample = _values(CoverFields(when=datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC), pages=1))
    try:
        string.Formatter().vformat(text, (), sample)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise CoverTemplateError(f"{where}: bad placeholder format in {text!r} ({error})") from None
    align = item.get("align", "left")
    if align not in ("left", "centre", "right"):
        raise CoverTemplateError(f"{where}: align must be left, centre or right")
    width = None if "width" not in item else _number(item, "width", where, low=1)
    return CoverText(_number(item, "x", where), _number(item, "y", where), _number(item, "size", where, low=4), text, width, align)


def _rule_item(item: dict[str, Any], where: str) -> CoverRule:
    unknown = set(item) - {"x", "y", "width", "thickness"}
    if unknown:
        raise CoverTemplateError(f"{where}: unknown key(s) {sorted(unknown)}")
    return CoverRule(
        _number(item, "x", where), _number(item, "y", where), _number(item, "width", where, low=0.1),
        _number(item, "thickness", where, default=0.5, low=0.1),
    )
