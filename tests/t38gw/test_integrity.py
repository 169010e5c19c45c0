"""Archive integrity: real fax folders written by the record code, then damaged on disk."""

from __future__ import annotations

import datetime
import json
import random

from imaging import Page
from imaging.libtiff import decode_with_libtiff
from imaging.tiff import iter_coded_pages
from t38gw import archive
from t38gw.config import Config, Route
from t38gw.faxrecord import InboundFax
from t38gw.integrity import (
    MISSING_FILE,
    MISSING_META,
    PAGE_COUNT,
    PAGE_MISMATCH,
    UNREADABLE_META,
    Problem,
    verify_archive,
    verify_fax,
)
from t38gw.outbound import DialTarget
from t38gw.sendjob import SendOptions, create_job_folder, initial_meta
from tests.t38gw.t30.pages import random_page

STARTED = 1_764_000_000.0


def received_fax(root, fax_id: str, pages: int, *, started: float = STARTED, seed: int = 1,
                 finish: bool = True) -> InboundFax:
    """A received fax as the gateway writes it: pages journaled, then closed into fax.tif/fax.pdf."""
    rng = random.Random(seed)
    record = InboundFax(fax_id=fax_id, started_at=started, root=root, formats=("pdf", "tiff"),
                        sip={"call_id": fax_id, "caller": "5550199"}, route_index=None, route=Route())
    for _ in range(pages):
        record.add_page(Page(1728, 64, 204, 196, random_page(rng, 1728, 64)), bad_rows=0)
        record.write(*record.snapshot())
    if finish:
        record.finish("received" if pages else "failed", "", started + 60)
        record.write(*record.snapshot())
    return record


def strip_span(tiff, page: int) -> tuple[int, int]:
    """(file offset, length) of page ``page``'s (1-based) coded strip."""
    data = tiff.read_bytes()
    with open(tiff, "rb") as handle:
        coded = list(iter_coded_pages(handle))[page - 1]
    offset = data.find(coded.data)
    assert offset > 0 and data.count(coded.data) == 1
    return offset, len(coded.data)


def decoded_pages(tiff) -> list[bytes]:
    with open(tiff, "rb") as handle:
        return [decode_with_libtiff(c.data, c.width, c.height, c.coding, bit_order=c.bit_order)
                for c in iter_coded_pages(handle)]


def test_a_clean_archive_passes(tmp_path):
    faxes = [received_fax(tmp_path, f"fax-{n}", n, seed=n) for n in (1, 2, 3)]
    failed = received_fax(tmp_path, "fax-0", 0)  # a failed call: no pages, no documents
    results = dict(verify_archive(archive.iter_faxes(tmp_path)))
    assert results == {"fax-0": [], "fax-1": [], "fax-2": [], "fax-3": []}
    assert archive.read_meta(failed.folder)["files"] == {}
    assert len(archive.read_meta(faxes[2].folder)["pages"]) == 3


def test_one_flipped_byte_in_a_page_strip_names_that_page(tmp_path):
    record = received_fax(tmp_path, "fax-rot", 3)
    tiff = record.folder / "fax.tif"
    before = decoded_pages(tiff)
    offset, length = strip_span(tiff, 2)
    data = bytearray(tiff.read_bytes())
    data[offset + length // 2] ^= 0x10  # one bit, in the middle of page 2's G4 data
    tiff.write_bytes(bytes(data))
    after = decoded_pages(tiff)
    # The flip is visible to a decoder: page 2's pixels changed, pages 1 and 3 did not.
    assert after[1] != before[1] and (after[0], after[2]) == (before[0], before[2])

    problems = verify_fax(record.folder)
    assert [(p.kind, p.page) for p in problems] == [(PAGE_MISMATCH, 2)]
    assert archive.page_sha256(after[1]) in problems[0].detail


def test_a_tampered_meta_hash_is_a_mismatch_too(tmp_path):
    record = received_fax(tmp_path, "fax-meta", 2)
    meta = archive.read_meta(record.folder)
    meta["pages"][0]["sha256"] = "0" * 64
    archive.write_meta(record.folder, meta)
    assert [(p.kind, p.page) for p in verify_fax(record.folder)] == [(PAGE_MISMATCH, 1)]


def test_missing_files_are_reported(tmp_path):
    pdf_gone = received_fax(tmp_path, "fax-nopdf", 1)
    (pdf_gone.folder / "fax.pdf").unlink()
    assert verify_fax(pdf_gone.folder) == [Problem(MISSING_FILE, "fax.pdf is missing (meta.json files names it)")]

    tif_gone = received_fax(tmp_path, "fax-notif", 2, seed=2)
    (tif_gone.folder / "fax.tif").unlink()
    assert [p.kind for p in verify_fax(tif_gone.folder)] == [MISSING_FILE]
    assert "fax.tif" in verify_fax(tif_gone.folder)[0].detail

    meta_gone = received_fax(tmp_path, "fax-nometa", 1, seed=3)
    (meta_gone.folder / "meta.json").unlink()
    assert [p.kind for p in verify_fax(meta_gone.folder)] == [MISSING_META]

    garbled = received_fax(tmp_path, "fax-garbled", 1, seed=4)
    (garbled.folder / "meta.json").write_bytes(b'{"id": "fax-garbled", "pages": [')
    assert [p.kind for p in verify_fax(garbled.folder)] == [UNREADABLE_META]


def test_a_page_more_or_less_than_meta_lists_is_a_page_count_problem(tmp_path):
    record = received_fax(tmp_path, "fax-count", 3)
    meta = archive.read_meta(record.folder)
    meta["pages"].pop()
    archive.write_meta(record.folder, meta)
    assert [p.kind for p in verify_fax(record.folder)] == [PAGE_COUNT]
    meta["pages"].extend([dict(meta["pages"][0], number=3), dict(meta["pages"][0], number=4)])
    archive.write_meta(record.folder, meta)
    assert [p.kind for p in verify_fax(record.folder)] == [PAGE_MISMATCH, PAGE_COUNT]


def test_a_call_in_progress_is_not_checked_but_a_queued_outbound_job_is(tmp_path):
    running = received_fax(tmp_path, "fax-running", 2, finish=False)
    assert archive.read_meta(running.folder)["in_progress"]
    assert verify_fax(running.folder) == []  # its pages are in the live journal

    rng = random.Random(7)
    pages = [Page(1728, 64, 204, 196, random_page(rng, 1728, 64)) for _ in range(2)]
    options = SendOptions(to="5550123", cover=False, header=False)
    target = DialTarget(to="5550123", uri="sip:5550123@127.0.0.1", number="5550123", trunk="", from_user="")
    meta = initial_meta("fax-out", STARTED, options, target, Config(), pages)
    folder = create_job_folder(tmp_path, "fax-out", STARTED, pages, meta, formats=("pdf",))
    assert verify_fax(folder) == []
    offset, length = strip_span(folder / "fax.tif", 1)
    data = bytearray((folder / "fax.tif").read_bytes())
    data[offset + length // 2] ^= 0x01
    (folder / "fax.tif").write_bytes(bytes(data))
    assert [(p.kind, p.page) for p in verify_fax(folder)] == [(PAGE_MISMATCH, 1)]


def test_since_skips_older_faxes_and_deleting_folders(tmp_path):
    received_fax(tmp_path, "fax-old", 1, started=STARTED)
    new = received_fax(tmp_path, "fax-new", 1, started=STARTED + 10 * 86400)
    (new.folder / "fax.pdf").unlink()
    since = datetime.datetime.fromtimestamp(STARTED + 86400, tz=datetime.UTC).isoformat()
    results = list(verify_archive(archive.iter_faxes(tmp_path), since=since))
    assert [(fax_id, [p.kind for p in problems]) for fax_id, problems in results] == [("fax-new", [MISSING_FILE])]
    assert [fax_id for fax_id, _ in verify_archive(archive.iter_faxes(tmp_path), since=STARTED)] == \
        ["fax-new", "fax-old"]
    doomed = new.folder.with_name(".deleting-fax-new")
    new.folder.rename(doomed)
    assert [fax_id for fax_id, _ in verify_archive([doomed])] == []
    assert json.loads((doomed / "meta.json").read_text())["id"] == "fax-new"
