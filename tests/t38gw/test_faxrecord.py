"""The fax record on disk: pages as confirmed, final meta, planned webhooks, crash recovery,
file modes, and memory that does not grow with the page count."""

from __future__ import annotations

import gc
import json
import os
import random
import stat
import tracemalloc
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from imaging import Page, syscalls
from imaging.libtiff import bitmap_from_image
from imaging.tiff import page_block
from t38gw import archive, webhooks
from t38gw.config import Config, Route, Webhook
from t38gw.faxrecord import INTERRUPTED_REASON, InboundFax, enqueue_planned, plan_deliveries, recover_archive
from t38gw.spool import Spool
from tests.imaging.charts import CHART_HEIGHT, CHART_WIDTH, chart
from tests.peers.spandsp import read_fax_tiff
from tests.t38gw.t30.pages import random_page

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="
CONFIG = Config(webhooks=(Webhook("default", "http://127.0.0.1:9/fax", SECRET),))


def new_record(root, rng, route=Route(), formats=("pdf", "tiff")) -> InboundFax:
    return InboundFax(fax_id="01a21438-6359-7817-b310-bde014280622", started_at=1_764_000_000.0, root=root,
                      formats=formats, sip={"call_id": "c1", "caller": "5550199"}, route_index=None,
                      route=route, local_ident="+1 555 0100")


def pdf_pixels(path) -> list[tuple[bytes, int, int]]:
    """Each PDF page's image as decoded by qpdf/pikepdf's CCITT decoder (1 = black)."""
    out = []
    with pikepdf.open(path) as pdf:
        for page in pdf.pages:
            image = pikepdf.PdfImage(page.Resources.XObject.Im0).as_pil_image()
            out.append((bitmap_from_image(image.convert("1")), image.width, image.height))
    return out


def test_pages_written_as_confirmed_then_recovered_after_a_crash(tmp_path):
    rng = random.Random(3)
    record = new_record(tmp_path, rng)
    bitmap = random_page(rng, 1728, 120)
    record.add_page(Page(1728, 120, 204, 98, bitmap), bad_rows=0)
    record.write(*record.snapshot())
    meta = archive.read_meta(record.folder)
    assert meta["in_progress"] and meta["status"] == "partial"
    assert meta["pages"][0]["sha256"] == archive.page_sha256(bitmap)
    assert meta["pages"][0]["complete"] is True and meta["pages"][0]["rows_lost"] == 0
    assert meta["incomplete_pages"] == 0
    # In progress: the page is in the journal (a valid TIFF); no final document exists yet,
    # so nobody can read half a fax.
    assert meta["files"] == {}
    assert not (record.folder / "fax.tif").exists() and not (record.folder / "fax.pdf").exists()
    [(tif_bitmap, width, height, x_dpi, y_dpi)] = read_fax_tiff(record.folder / archive.JOURNAL_NAME)
    assert (tif_bitmap, width, height, round(x_dpi), round(y_dpi)) == (bitmap, 1728, 120, 204, 98)

    # The gateway died here.  A restart closes the record and spools its webhook, once.
    spool = Spool(tmp_path / "spool.db", rng=rng)
    counts = recover_archive(tmp_path, spool, CONFIG, now=1_764_000_100.0, rng=rng)
    assert counts == {"closed": 1, "requeued": 1}
    meta = archive.read_meta(record.folder)
    assert (meta["status"], meta["reason"], meta["in_progress"]) == ("partial", INTERRUPTED_REASON, False)
    assert meta["files"] == {"pdf": "fax.pdf", "tiff": "fax.tif"}
    assert not (record.folder / archive.JOURNAL_NAME).exists()
    [(tif_bitmap, *_)] = read_fax_tiff(record.folder / "fax.tif")
    assert tif_bitmap == bitmap
    assert pdf_pixels(record.folder / "fax.pdf") == [(bitmap, 1728, 120)]
    [planned] = meta["deliveries"]
    delivery = spool.get(planned["id"])
    body = json.loads(delivery.body)
    assert body["type"] == "fax.received" and body["data"]["status"] == "partial"
    assert body["document"]["filename"] == f"{record.fax_id}.pdf"
    assert recover_archive(tmp_path, spool, CONFIG, now=1_764_000_200.0, rng=rng) == {"closed": 0, "requeued": 0}
    assert spool.depth() == 1
    # The stored body is what gets signed and sent; a consumer can verify it.
    headers = webhooks.signed_headers(SECRET, delivery.id, 1_764_000_300, delivery.body)
    webhooks.verify(SECRET, headers, delivery.body, 1_764_000_300)


def confirmed_pages(tmp_path, count: int, seed: int = 5) -> tuple[InboundFax, list[bytes]]:
    rng = random.Random(seed)
    record = new_record(tmp_path, rng)
    bitmaps = []
    for _ in range(count):
        bitmap = random_page(rng, 1728, 80)
        bitmaps.append(bitmap)
        record.add_page(Page(1728, 80, 204, 196, bitmap), bad_rows=0)
        record.write(*record.snapshot())
    return record, bitmaps


@pytest.mark.parametrize("window", ["page_data_half_written", "page_appended_meta_not_yet"])
def test_a_crash_in_any_window_of_an_append_keeps_exactly_the_confirmed_pages(tmp_path, window):
    record, bitmaps = confirmed_pages(tmp_path, 2)
    journal = record.folder / archive.JOURNAL_NAME
    extra = random_page(random.Random(9), 1728, 80)
    if window == "page_data_half_written":
        # Killed while page 3's strip and IFD were being written: nothing points at them.
        from imaging.output import coded_page
        block = page_block(coded_page(Page(1728, 80, 204, 196, extra)), journal.stat().st_size, 2, 0)
        with open(journal, "ab") as handle:
            handle.write(block.data[: len(block.data) // 2])
    else:
        # Killed after page 3 was appended (and linked) but before meta.json named it: the
        # page was never confirmed (our MCF waits for meta.json), so it must not appear.
        record.add_page(Page(1728, 80, 204, 196, extra), bad_rows=0)
        pages, _ = record.snapshot()
        record._journal.append(pages[-1].coded_page())
    assert [p[0] for p in read_fax_tiff(journal)][:2] == bitmaps  # still a valid TIFF
    assert len(archive.read_meta(record.folder)["pages"]) == 2
    spool = Spool(tmp_path / "spool.db", rng=random.Random(1))
    recover_archive(tmp_path, spool, CONFIG, now=1_764_000_100.0)
    assert [p[0] for p in read_fax_tiff(record.folder / "fax.tif")] == bitmaps
    assert [p[0] for p in pdf_pixels(record.folder / "fax.pdf")] == bitmaps
    assert Image.open(record.folder / "fax.tif").tag_v2[297] == (0, 2)  # PageNumber: page 0 of 2


def test_a_crash_after_the_journal_became_fax_tif_is_finished_by_the_restart(tmp_path):
    record, bitmaps = confirmed_pages(tmp_path, 3)
    # The end of the call got as far as renaming the journal; fax.pdf and the final
    # meta.json were never written.
    archive.finish_documents(record.folder, ("tiff",), 3)
    assert not (record.folder / "fax.pdf").exists()
    spool = Spool(tmp_path / "spool.db", rng=random.Random(1))
    recover_archive(tmp_path, spool, CONFIG, now=1_764_000_100.0)
    meta = archive.read_meta(record.folder)
    assert meta["files"] == {"pdf": "fax.pdf", "tiff": "fax.tif"} and meta["status"] == "partial"
    assert [p[0] for p in read_fax_tiff(record.folder / "fax.tif")] == bitmaps
    assert [p[0] for p in pdf_pixels(record.folder / "fax.pdf")] == bitmaps


def test_a_finished_fax_has_its_documents_and_no_journal(tmp_path):
    record, bitmaps = confirmed_pages(tmp_path, 3)
    record.finish("received", "", 1_764_000_050.0)
    record.write(*record.snapshot())
    meta = archive.read_meta(record.folder)
    assert (meta["status"], meta["files"], meta["in_progress"]) == ("received", {"pdf": "fax.pdf", "tiff": "fax.tif"},
                                                                    False)
    assert sorted(p.name for p in record.folder.iterdir()) == ["fax.pdf", "fax.tif", "meta.json"]
    assert [p[0] for p in read_fax_tiff(record.folder / "fax.tif")] == bitmaps
    with Image.open(record.folder / "fax.tif") as image:
        numbers = []
        for index in range(3):
            image.seek(index)
            numbers.append(image.tag_v2[297])
    assert numbers == [(0, 3), (1, 3), (2, 3)]
    assert [p[0] for p in pdf_pixels(record.folder / "fax.pdf")] == bitmaps


@pytest.mark.parametrize("formats", [("pdf", "tiff"), ("pdf",), ("tiff",)])
def test_a_short_fax_finished_in_memory_matches_the_streamed_documents(tmp_path, monkeypatch, formats):
    """A journal up to FINISH_IN_MEMORY_BYTES is finished in memory (its documents kept for
    the webhook); the files are byte for byte those the streamed way writes."""
    finished = {}
    for way, limit in (("memory", archive.FINISH_IN_MEMORY_BYTES), ("streamed", 0)):
        monkeypatch.setattr(archive, "FINISH_IN_MEMORY_BYTES", limit)
        record, bitmaps = confirmed_pages(tmp_path / way, 3)
        record.formats = formats
        record.finish("received", "", 1_764_000_050.0)
        record.write(*record.snapshot())
        files = {name: (record.folder / name).read_bytes() for name in ("fax.pdf", "fax.tif")
                 if (record.folder / name).exists()}
        assert sorted(p.name for p in record.folder.iterdir()) == sorted([*files, "meta.json"])
        finished[way] = (files, dict(record.documents))
        if "tiff" in formats:
            assert [p[0] for p in read_fax_tiff(record.folder / "fax.tif")] == bitmaps
    (memory, kept), (streamed, none_kept) = finished["memory"], finished["streamed"]
    assert memory == streamed and len(memory) == len(formats)
    assert none_kept == {}
    assert {archive.FILE_NAMES[fmt]: data for fmt, data in kept.items()} == memory


def test_the_documents_renames_are_durable_before_meta_json_names_them(tmp_path, monkeypatch):
    """In memory, fax.pdf and the journal (as fax.tif) are renamed, then one folder fsync
    makes both durable; only then is the final meta.json written (it lists them)."""
    record, _ = confirmed_pages(tmp_path, 2)
    events: list[str] = []
    real_rename, real_fsync_dir = syscalls.rename, archive._fsync_dir

    def noting_rename(source, target):
        events.append(f"rename {Path(target).name}")
        return real_rename(source, target)

    def noting_fsync_dir(folder):
        events.append("fsync folder")
        return real_fsync_dir(folder)

    monkeypatch.setattr(syscalls, "rename", noting_rename)
    monkeypatch.setattr(archive, "_fsync_dir", noting_fsync_dir)
    record.finish("received", "", 1_764_000_050.0)
    record.write(*record.snapshot())
    assert events == ["rename fax.pdf", "rename fax.tif", "fsync folder", "rename meta.json", "fsync folder"]
    assert record.documents["pdf"] == (record.folder / "fax.pdf").read_bytes()


def test_the_webhook_attaches_the_pdf_as_written_without_reading_it_back(tmp_path, monkeypatch):
    record, _ = confirmed_pages(tmp_path, 1)
    record.finish("received", "", 1_764_000_050.0)
    plan_deliveries(record.meta, CONFIG.webhooks, 1_764_000_050.0, random.Random(3))
    pages, meta = record.snapshot()
    record.write(pages, meta)
    pdf = (record.folder / "fax.pdf").read_bytes()

    def no_read(self):
        raise AssertionError(f"{self} read back")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    spool = Spool(tmp_path / "spool.db", rng=random.Random(1))
    assert enqueue_planned(spool, record.folder, meta, CONFIG, 1_764_000_051.0, record.documents) == 1
    body = json.loads(spool.get(meta["deliveries"][0]["id"]).body)
    monkeypatch.undo()
    assert webhooks_document_bytes(body) == pdf


def test_pdf_only_archive_keeps_no_tiff(tmp_path):
    record = new_record(tmp_path, random.Random(2), formats=("pdf",))
    bitmap = random_page(random.Random(2), 1728, 50)
    record.add_page(Page(1728, 50, 204, 98, bitmap), bad_rows=0)
    record.write(*record.snapshot())
    record.finish("received", "", 1_764_000_050.0)
    record.write(*record.snapshot())
    assert sorted(p.name for p in record.folder.iterdir()) == ["fax.pdf", "meta.json"]
    assert archive.read_meta(record.folder)["files"] == {"pdf": "fax.pdf"}
    # Killed after the journal was dropped, before meta.json said so: the restart finds
    # the finished PDF.
    assert archive.finish_documents(record.folder, ("pdf",), 1) == {"pdf": "fax.pdf"}


def test_an_incomplete_page_is_marked_and_makes_the_fax_partial(tmp_path):
    record = new_record(tmp_path, random.Random(6))
    good = random_page(random.Random(6), 1728, 60)
    short = random_page(random.Random(7), 1728, 40)
    record.add_page(Page(1728, 60, 204, 98, good), bad_rows=0)
    record.add_page(Page(1728, 40, 204, 98, short), bad_rows=2, complete=False, rows_lost=20)
    record.finish("partial", "page 2 incomplete", 1_764_000_050.0)
    record.write(*record.snapshot())
    meta = archive.read_meta(record.folder)
    assert meta["incomplete_pages"] == 1
    assert [(p["number"], p["complete"], p["rows_lost"], p["bad_rows"]) for p in meta["pages"]] == [
        (1, True, 0, 0), (2, False, 20, 2)]
    assert [p[0] for p in read_fax_tiff(record.folder / "fax.tif")] == [good, short]


def test_archive_folders_are_0700_files_0600_whatever_the_umask(tmp_path):
    previous = os.umask(0)  # a careless service manager: modes must not depend on it
    try:
        root = tmp_path / "archive"
        record = new_record(root, random.Random(8), route=Route(archive_subdir="cardiology"))
        record.add_page(Page(1728, 40, 204, 98, random_page(random.Random(8), 1728, 40)), bad_rows=0)
        record.write(*record.snapshot())
        journal_mode = stat.S_IMODE(os.stat(record.folder / archive.JOURNAL_NAME).st_mode)
        record.finish("received", "", 1_764_000_050.0)
        record.write(*record.snapshot())
    finally:
        os.umask(previous)
    assert journal_mode == 0o600
    folder = record.folder
    created = [folder]
    while created[-1] != root:
        created.append(created[-1].parent)
    assert len(created) == 6  # archive, cardiology, YYYY, MM, DD, fax id
    for path in created:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    for name in ("fax.pdf", "fax.tif", "meta.json"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name


def test_new_archive_folders_are_fsynced_up_to_the_root(tmp_path, monkeypatch):
    """A power loss after the MCF must not lose the fax folder: every folder the archive
    creates is made durable in its parent (the real fsync runs; we note what it got)."""
    root = tmp_path / "archive"
    root.mkdir()
    synced: list[str] = []
    real_fsync = os.fsync

    def noting_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    record = new_record(root, random.Random(8), route=Route(archive_subdir="cardiology"))
    record.add_page(Page(1728, 40, 204, 98, random_page(random.Random(8), 1728, 40)), bad_rows=0)
    record.write(*record.snapshot())
    folder = record.folder
    for path in (folder, folder.parent, folder.parent.parent, folder.parent.parent.parent, root / "cardiology",
                 root):
        assert str(path) in synced, path
    # The new folder itself, then the journal's entry and the meta.json rename, durable
    # in it - with meta.json's fsync, after the journal's data.
    assert synced.count(str(folder)) >= 2
    journal, meta = str(folder / archive.JOURNAL_NAME), str(folder)
    last_journal_sync = max(i for i, path in enumerate(synced) if path == journal)
    assert any(path == meta for path in synced[last_journal_sync + 1:])


def test_a_new_fax_folder_looks_no_further_up_than_its_day_folder(tmp_path, monkeypatch):
    # Each look was a system call letting go of the GIL before the first page's MCF (issue 14).
    root = tmp_path / "archive"
    first = new_record(root, random.Random(8))
    first.add_page(Page(1728, 40, 204, 98, random_page(random.Random(8), 1728, 40)), bad_rows=0)
    first.write(*first.snapshot())
    looked: list[Path] = []
    real = syscalls.is_directory

    def noting(path):
        looked.append(Path(path))
        return real(path)

    monkeypatch.setattr(syscalls, "is_directory", noting)
    second = first.folder.parent / "01a21438-6359-7817-b310-bde014280623"  # the same day's next fax
    archive.make_folders(second)
    assert looked == [second, second.parent]
    assert stat.S_IMODE(os.stat(second).st_mode) == 0o700


def test_a_file_where_a_folder_belongs_is_an_error_not_a_lost_page(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    (root / "2026").write_bytes(b"not a folder")
    with pytest.raises(NotADirectoryError):
        archive.make_folders(root / "2026" / "12" / "07" / "fax")


def test_memory_stays_flat_over_a_long_fax(tmp_path):
    """Pages are coded G4 and leave memory once on disk: 30 chart pages (500 KB of
    bitmap each) grow the record by far less than 2 MiB."""
    record = new_record(tmp_path, random.Random(1), formats=("tiff",))
    stride = CHART_WIDTH // 8
    source = chart(1)
    gc.collect()
    tracemalloc.start()
    try:
        for number in range(30):
            shift = number * 7 * stride
            bitmap = source[shift:] + source[:shift]  # a fresh page every time
            record.add_page(Page(CHART_WIDTH, CHART_HEIGHT, 204, 196, bitmap), bad_rows=0)
            del bitmap
            record.write(*record.snapshot())
            if number == 0:
                gc.collect()
                baseline = tracemalloc.get_traced_memory()[0]
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 2 * 1024 * 1024, grown
    assert len(read_fax_tiff(record.folder / archive.JOURNAL_NAME)) == 30


def test_crash_between_meta_and_spool_requeues_the_same_id(tmp_path):
    rng = random.Random(4)
    record = new_record(tmp_path, rng)
    record.finish("failed", "T.30 T1_EXPIRED: no DCS", 1_764_000_050.0)
    plan_deliveries(record.meta, CONFIG.webhooks, 1_764_000_050.0, rng)
    record.write(*record.snapshot())  # step 1 done; "killed" before step 2
    planned_id = record.meta["deliveries"][0]["id"]
    spool = Spool(tmp_path / "spool.db", rng=rng)
    assert recover_archive(tmp_path, spool, CONFIG, now=1_764_000_060.0) == {"closed": 0, "requeued": 1}
    delivery = spool.get(planned_id)
    assert delivery is not None and delivery.event_type == "fax.failed"
    assert "document" not in json.loads(delivery.body)  # no page, nothing to attach
    assert enqueue_planned(spool, record.folder, record.meta, CONFIG, 1_764_000_070.0) == 0


def test_a_document_over_max_attachment_bytes_is_sent_as_its_api_url(tmp_path):
    """The spool never holds a document larger than the webhook's cap: the body links to it."""
    rng = random.Random(5)
    small = Webhook("small", "http://127.0.0.1:9/fax", SECRET, max_attachment_bytes=100)
    large = Webhook("default", "http://127.0.0.1:9/fax", SECRET)
    config = Config(webhooks=(large, small))
    record = new_record(tmp_path, rng)
    record.add_page(Page(1728, 120, 204, 98, random_page(rng, 1728, 120)), bad_rows=0)
    record.write(*record.snapshot())
    record.finish("received", "", 1_764_000_050.0)
    plan_deliveries(record.meta, [large, small], 1_764_000_050.0, rng)
    record.write(*record.snapshot())
    spool = Spool(tmp_path / "spool.db", rng=rng)
    assert enqueue_planned(spool, record.folder, record.meta, config, 1_764_000_051.0) == 2
    bodies = {d["webhook"]: json.loads(spool.get(d["id"]).body) for d in record.meta["deliveries"]}
    pdf = (record.folder / "fax.pdf").read_bytes()
    assert len(pdf) > 100
    assert webhooks_document_bytes(bodies["default"]) == pdf
    linked = bodies["small"]["document"]
    assert "data_base64" not in linked
    assert linked["url"] == f"http://127.0.0.1:8080/v1/faxes/{record.fax_id}/document.pdf"
    assert linked["content_type"] == "application/pdf" and linked["filename"] == f"{record.fax_id}.pdf"


def webhooks_document_bytes(body: dict) -> bytes:
    import base64

    return base64.b64decode(body["document"]["data_base64"])


def test_a_page_write_that_comes_after_the_final_write_changes_nothing(tmp_path):
    # Under load a page write can wait in its thread pool's queue longer than our MCF waits
    # for it; the fax then ends, and the final write (another pool) goes first.  The late
    # page write must not put an in-progress meta.json back over the final one, nor open
    # a new page journal beside fax.tif (bench/load.py at 1,000 calls found both).
    rng = random.Random(5)
    record = new_record(tmp_path, rng)
    bitmaps = [random_page(rng, 1728, 90), random_page(rng, 1728, 60)]
    record.add_page(Page(1728, 90, 204, 98, bitmaps[0]), bad_rows=0)
    late = record.snapshot()  # queued for the page writer, not written yet
    record.add_page(Page(1728, 60, 204, 98, bitmaps[1]), bad_rows=0)
    record.finish("received", "", 1_764_000_040.0)
    assert record.write(*record.snapshot()) is True
    final = (record.folder / archive.META_NAME).read_bytes()
    assert record.write(*late) is False
    assert (record.folder / archive.META_NAME).read_bytes() == final
    meta = json.loads(final)
    assert meta["in_progress"] is False and meta["status"] == "received" and len(meta["pages"]) == 2
    assert not (record.folder / archive.JOURNAL_NAME).exists()
    assert [page[0] for page in read_fax_tiff(record.folder / "fax.tif")] == bitmaps
