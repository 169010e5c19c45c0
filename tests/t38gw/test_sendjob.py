"""An outbound job's request checks, pages and folder (``t38gw.sendjob``) with a config read
the way the gateway reads it and real documents rasterised by ``imaging.sendpages``."""

from __future__ import annotations

import datetime
import json
import os

import pytest
from PIL import Image, ImageDraw

from t38gw import archive
from t38gw.config import load_config
from t38gw.cover import HEADER_BAND_MM
from t38gw.sendjob import (
    SEND_WIDTH_PX,
    SEND_X_DPI,
    SEND_Y_DPI,
    JobPages,
    SendOptions,
    SendRequestError,
    check_request,
    create_job_folder,
    initial_meta,
    render_pages,
)

WHEN = datetime.datetime(2026, 12, 6, 9, 30, tzinfo=datetime.UTC)
CREATED = WHEN.timestamp()
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OUTBOUND_TRUNK = """
[[sip.trunks]]
name = "carrier"
registrar = "sip:sip.carrier.example:5070"
username = "acct42"
password = "pa55word"
outbound = true
"""
WEBHOOKS = f"""
[[webhooks]]
name = "default"
url = "https://ehr.example.org/fax"
secret = "{SECRET}"

[[webhooks]]
name = "inbound-only"
url = "https://ehr.example.org/received"
secret = "{SECRET}"
events = ["fax.received", "fax.failed"]

[[webhooks]]
name = "failures"
url = "https://ehr.example.org/failed"
secret = "{SECRET}"
events = ["fax.send_failed"]
"""
HEADER_ROWS = round(HEADER_BAND_MM / 25.4 * SEND_Y_DPI)
ROW_BYTES = SEND_WIDTH_PX // 8


def make_config(tmp_path, text: str = "", *, send: str = ""):
    path = tmp_path / "t38gw.toml"
    path.write_text(f'[fax]\nlocal_ident = "+1 555 0100"\n[send]\nsender_name = "Cardiology"\n{send}\n{text}')
    return load_config(path, environ={})


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path, OUTBOUND_TRUNK + WEBHOOKS)


def drawing(label: int, size: tuple[int, int] = (170, 240)) -> Image.Image:
    """A small page (about A4's shape at 20 dpi: cheap to rasterise) with ink all over it,
    different for each ``label``, so lost or swapped rows show."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 2, size[0] - 10, 6), fill=0)  # ink in the header band too
    draw.rectangle((15, 30, 15 + 20 * label, 60), fill=0)
    draw.line((0, size[1] - 1, size[0] - 1, 40), fill=0, width=3)
    draw.ellipse((40, 120, 130, 200), outline=0, width=4)
    return image


@pytest.fixture
def documents(tmp_path):
    """A 2-page PDF and a PNG: 3 pages."""
    pdf = tmp_path / "letter.pdf"
    first, second = drawing(1), drawing(2)
    first.save(pdf, save_all=True, append_images=[second], resolution=20.0)
    png = tmp_path / "scan.png"
    drawing(3).save(png, dpi=(20, 20))
    return [pdf, png]


def number_target(config):
    return check_request(SendOptions(to="+1 555 0199", cover=False), config)


# -- check_request -------------------------------------------------------------------------

def test_a_number_with_an_outbound_trunk_is_dialled_at_the_registrar_host(config):
    target = check_request(SendOptions(to="+1 (555) 0199", cover=False), config)
    assert target.uri == "sip:+15550199@sip.carrier.example:5070"
    assert target.number == "+15550199"
    assert target.trunk == "carrier"


def test_a_number_without_an_outbound_trunk_is_a_bad_destination(tmp_path):
    config = make_config(tmp_path, OUTBOUND_TRUNK.replace("outbound = true", "outbound = false"))
    with pytest.raises(SendRequestError) as caught:
        check_request(SendOptions(to="+15550199", cover=False), config)
    assert (caught.value.status, caught.value.code) == (422, "bad_destination")
    assert "outbound = true" in caught.value.detail


def test_a_sip_uri_is_refused_unless_direct_uris_are_allowed(tmp_path):
    refusing = make_config(tmp_path, OUTBOUND_TRUNK)
    with pytest.raises(SendRequestError) as caught:
        check_request(SendOptions(to="sip:fax@192.0.2.7", cover=False), refusing)
    assert (caught.value.status, caught.value.code) == (422, "bad_destination")
    assert "allow_direct_uri" in caught.value.detail

    allowing = make_config(tmp_path, OUTBOUND_TRUNK, send="allow_direct_uri = true")
    target = check_request(SendOptions(to="sip:fax@192.0.2.7", cover=False), allowing)
    assert (target.uri, target.trunk, target.number) == ("sip:fax@192.0.2.7", "", "")


@pytest.mark.parametrize("to", ["", "call my GP", "+1555x0199", "12;34"])
def test_garbage_is_a_bad_destination(config, to):
    with pytest.raises(SendRequestError) as caught:
        check_request(SendOptions(to=to, cover=False), config)
    assert (caught.value.status, caught.value.code) == (422, "bad_destination")


def test_a_webhook_must_be_configured_and_take_send_events(config):
    with pytest.raises(SendRequestError) as caught:
        check_request(SendOptions(to="+15550199", cover=False, webhook="nope"), config)
    assert (caught.value.status, caught.value.code) == (422, "unknown_webhook")
    assert "'nope'" in caught.value.detail and "default" in caught.value.detail

    with pytest.raises(SendRequestError) as caught:
        check_request(SendOptions(to="+15550199", cover=False, webhook="inbound-only"), config)
    assert caught.value.status == 422
    assert caught.value.code == "webhook_without_send_events"
    assert "inbound-only" in caught.value.detail

    # One of the two outbound events is enough (failures only), and so is the default.
    for name in ("failures", "default", ""):
        check_request(SendOptions(to="+15550199", cover=False, webhook=name), config)


def test_a_webhook_named_when_none_is_configured_says_so(tmp_path):
    config = make_config(tmp_path, OUTBOUND_TRUNK)
    with pytest.raises(SendRequestError) as caught:
        check_request(SendOptions(to="+15550199", cover=False, webhook="default"), config)
    assert caught.value.code == "unknown_webhook" and "none is configured" in caught.value.detail


def test_with_defaults_takes_the_header_from_the_config(tmp_path):
    on = make_config(tmp_path, OUTBOUND_TRUNK)
    off = make_config(tmp_path, OUTBOUND_TRUNK, send="header_line = false")
    asked = SendOptions(to="+15550199", cover=True, cover_note="urgent", webhook="default")
    assert asked.with_defaults(on).header is True
    assert asked.with_defaults(off).header is False
    explicit = SendOptions(to="+15550199", cover=False, header=True)
    assert explicit.with_defaults(off).header is True
    assert SendOptions(to="x", cover=False, header=False).with_defaults(on).header is False
    kept = asked.with_defaults(on)
    assert (kept.to, kept.cover, kept.cover_note, kept.webhook) == ("+15550199", True, "urgent", "default")


# -- render_pages --------------------------------------------------------------------------

def render(documents, config, **options):
    send = SendOptions(to="+15550199", cover=options.pop("cover", False), header=options.pop("header", False),
                       **options)
    return render_pages(documents, send, config, number_target(config), WHEN)


@pytest.fixture
def plain_pages(documents, config):
    return render(documents, config)


def test_documents_become_fine_a4_wide_pages(plain_pages):
    assert len(plain_pages) == 3
    for page in plain_pages:
        assert (page.width, page.x_dpi, page.y_dpi) == (SEND_WIDTH_PX, SEND_X_DPI, SEND_Y_DPI)
        assert page.height == round(297 / 25.4 * SEND_Y_DPI)  # laid on an A4 sheet
        assert any(page.bitmap)  # the drawing's ink made it
    assert len({page.bitmap for page in plain_pages}) == 3  # each page is its own


def test_a_cover_page_comes_first(documents, config, plain_pages):
    pages = render(documents, config, cover=True)
    assert len(pages) == 4
    assert [page.bitmap for page in pages[1:]] == [page.bitmap for page in plain_pages]
    assert pages[0].bitmap not in {page.bitmap for page in plain_pages}
    assert (pages[0].width, pages[0].x_dpi, pages[0].y_dpi) == (SEND_WIDTH_PX, SEND_X_DPI, SEND_Y_DPI)


def test_the_header_line_changes_only_the_top_band(documents, config, plain_pages):
    stamped = render(documents, config, header=True)
    assert len(stamped) == len(plain_pages)
    band = HEADER_ROWS * ROW_BYTES
    for number, (with_header, without) in enumerate(zip(stamped, plain_pages, strict=True), 1):
        assert (with_header.width, with_header.height) == (without.width, without.height)
        assert with_header.bitmap[band:] == without.bitmap[band:], f"page {number} changed below the band"
        assert with_header.bitmap[:band] != without.bitmap[:band], f"page {number} has no header line"
    # "page n/m" differs from page to page, so the bands do too.
    assert len({page.bitmap[:band] for page in stamped}) == 3


def test_more_pages_than_max_pages_per_job_is_413_naming_the_limit(tmp_path, documents):
    config = make_config(tmp_path, OUTBOUND_TRUNK, send="max_pages_per_job = 2")
    with pytest.raises(SendRequestError) as caught:
        render(documents, config)
    assert (caught.value.status, caught.value.code) == (413, "too_many_pages")
    assert "max_pages_per_job = 2" in caught.value.detail

    # The cover counts: two document pages and a cover are three.
    with pytest.raises(SendRequestError) as caught:
        render(documents[:1], config, cover=True)
    assert (caught.value.status, caught.value.code) == (413, "too_many_pages")
    assert "cover included" in caught.value.detail
    assert len(render(documents[:1], config)) == 2


def test_a_limit_that_leaves_no_room_for_the_cover_is_too_many_pages(tmp_path, documents):
    config = make_config(tmp_path, OUTBOUND_TRUNK, send="max_pages_per_job = 1")
    with pytest.raises(SendRequestError) as caught:
        render(documents[1:], config, cover=True)
    assert (caught.value.status, caught.value.code) == (413, "too_many_pages")
    assert "max_pages_per_job = 1" in caught.value.detail


def test_a_text_file_named_pdf_is_not_a_document(tmp_path, config, documents):
    fake = tmp_path / "referral.pdf"
    fake.write_text("Dear colleague, please see the attached.\n")
    with pytest.raises(SendRequestError) as caught:
        render([documents[1], fake], config)
    assert (caught.value.status, caught.value.code) == (422, "not_a_document")
    assert "referral.pdf" in caught.value.detail


def test_a_bad_file_whose_name_says_more_than_is_still_not_a_document(tmp_path, config):
    fake = tmp_path / "more than one page.pdf"
    fake.write_text("not a PDF\n")
    with pytest.raises(SendRequestError) as caught:
        render([fake], config)
    assert (caught.value.status, caught.value.code) == (422, "not_a_document")
    assert "more than one page.pdf" in caught.value.detail


# -- the job folder ------------------------------------------------------------------------

def test_the_job_folder_holds_the_pages_bit_for_bit_and_a_queued_meta(tmp_path, documents, config):
    options = SendOptions(to="+1 555 0199", cover=True, header=True, webhook="default")
    target = check_request(options, config)
    pages = render_pages(documents, options, config, target, WHEN)
    meta = initial_meta("fax-out-1", CREATED, options, target, config, pages)
    root = tmp_path / "archive"
    folder = create_job_folder(root, "fax-out-1", CREATED, pages, meta, formats=("pdf",))

    assert folder == root / "2026" / "12" / "06" / "fax-out-1"
    tiff, pdf, meta_file = folder / "fax.tif", folder / "fax.pdf", folder / "meta.json"
    for path in (tiff, pdf, meta_file):
        assert os.stat(path).st_mode & 0o077 == 0, f"{path.name} is readable by others"
    assert pdf.read_bytes().startswith(b"%PDF-")

    stored = JobPages(tiff)
    assert len(stored) == len(pages) == 4
    for number, (read, made) in enumerate(zip(stored, pages, strict=True), 1):
        assert (read.width, read.height) == (made.width, made.height), f"page {number}"
        assert (read.x_dpi, read.y_dpi) == (SEND_X_DPI, SEND_Y_DPI), f"page {number}"
        assert read.bitmap == made.bitmap, f"page {number} changed in the G4 round trip"
    assert stored[-1].bitmap == pages[3].bitmap
    assert [page.bitmap for page in stored[1:3]] == [pages[1].bitmap, pages[2].bitmap]
    with pytest.raises(IndexError):
        stored[4]

    written = json.loads(meta_file.read_text())
    assert written["status"] == "queued" and written["in_progress"] is True
    assert written["direction"] == "outbound"
    assert written["to"] == "+1 555 0199"
    assert written["pages_total"] == 4 and written["pages_sent"] == 0
    assert written["attempts"] == []
    assert written["sip"]["to"] == "sip:+15550199@sip.carrier.example:5070"
    assert written["sip"]["trunk"] == "carrier"
    assert written["files"] == {"tiff": "fax.tif", "pdf": "fax.pdf"}
    assert written["send"] == {"cover": True, "header": True, "webhook": "default"}
    assert [entry["number"] for entry in written["pages"]] == [1, 2, 3, 4]
    for entry, page in zip(written["pages"], pages, strict=True):
        assert entry["sha256"] == archive.page_sha256(page.bitmap)
        assert (entry["width_px"], entry["height_px"]) == (page.width, page.height)
        assert (entry["x_dpi"], entry["y_dpi"]) == (SEND_X_DPI, SEND_Y_DPI)
        assert entry["sent"] is False


def test_the_job_folder_without_pdf_has_only_the_tiff(tmp_path, documents, config):
    options = SendOptions(to="+15550199", cover=False, header=False)
    target = check_request(options, config)
    pages = render_pages(documents[1:], options, config, target, WHEN)
    meta = initial_meta("fax-out-2", CREATED, options, target, config, pages)
    folder = create_job_folder(tmp_path / "archive", "fax-out-2", CREATED, pages, meta, formats=())
    assert sorted(path.name for path in folder.iterdir()) == ["fax.tif", "meta.json"]
    assert json.loads((folder / "meta.json").read_text())["files"] == {"tiff": "fax.tif"}
    assert [page.bitmap for page in JobPages(folder / "fax.tif")] == [pages[0].bitmap]
