"""Retention and legal hold on real fax folders, a real index and a real webhook spool, with a fake clock."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from imaging import Page
from t38gw import archive
from t38gw.config import Route
from t38gw.faxrecord import InboundFax
from t38gw.index import ArchiveIndex
from t38gw.retention import (
    FaxInProgressError,
    candidates_from_folders,
    cutoff_for,
    delete_spool_rows,
    expired,
    meta_lock,
    pending_deletions,
    place_hold,
    release_hold,
    sweep,
)
from t38gw.spool import Spool
from tests.t38gw.t30.pages import random_page

DAY = 86400.0
NOW = 1_800_000_000.0  # the fake clock
KEEP_DAYS = 30


def received_fax(root, fax_id: str, *, age_days: float, finish: bool = True, subdir: str = "") -> InboundFax:
    """A fax received ``age_days`` before NOW, written as the gateway writes it."""
    started = NOW - age_days * DAY
    rng = random.Random(fax_id)
    record = InboundFax(fax_id=fax_id, started_at=started, root=root, formats=("pdf", "tiff"),
                        sip={"call_id": fax_id, "caller": "5550199"}, route_index=None,
                        route=Route(archive_subdir=subdir))
    record.add_page(Page(1728, 48, 204, 196, random_page(rng, 1728, 48)), bad_rows=0)
    record.write(*record.snapshot())
    if finish:
        record.finish("received", "", started + 120)
        record.write(*record.snapshot())
    return record


class Archive:
    """An archive root with its index, its spool, and what the callbacks saw."""

    def __init__(self, tmp_path) -> None:
        self.root = tmp_path / "archive"
        self.index = ArchiveIndex(tmp_path / "index.db")
        self.spool_path = tmp_path / "spool.db"
        self.spool = Spool(self.spool_path, rng=random.Random(1))
        self.deleted: list[tuple[str, dict]] = []

    def add(self, fax_id: str, **kwargs) -> InboundFax:
        record = received_fax(self.root, fax_id, **kwargs)
        self.index.upsert(archive.read_meta(record.folder), record.folder)
        body = b'{"fax": "' + fax_id.encode() + b'", "secret": "BODY-OF-' + fax_id.encode() + b'"}'
        assert self.spool.enqueue(id=f"wh-{fax_id}", webhook="default", url="http://127.0.0.1:9/", event_type="fax.received",
                                  fax_id=fax_id, body=body, now=NOW)
        return record

    def on_deleted(self, fax_id: str, meta: dict) -> None:
        self.index.delete(fax_id)  # idempotent: a resumed deletion may find the row gone
        self.deleted.append((fax_id, meta))

    def sweep(self, candidates, *, dry_run: bool = False):
        return sweep(candidates, keep_days=KEEP_DAYS, now=NOW, dry_run=dry_run,
                     delete_spool=lambda fax_id: delete_spool_rows(self.spool_path, fax_id),
                     on_deleted=self.on_deleted)

    def candidates(self):
        return self.index.expired_candidates(cutoff=cutoff_for(KEEP_DAYS, NOW))


@pytest.fixture
def store(tmp_path):
    store = Archive(tmp_path)
    yield store
    store.spool.close()
    store.index.close()


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_expired_by_ended_at_else_started_at_never_held_in_progress_or_forever():
    meta = {"started_at": archive.rfc3339(NOW - 40 * DAY), "ended_at": archive.rfc3339(NOW - 29 * DAY)}
    assert not expired(meta, keep_days=30, now=NOW)  # started long ago, ended within the 30 days
    assert expired(meta, keep_days=28, now=NOW)
    assert expired({"started_at": archive.rfc3339(NOW - 31 * DAY), "ended_at": None}, keep_days=30, now=NOW)
    assert not expired({"started_at": archive.rfc3339(NOW - 29 * DAY)}, keep_days=30, now=NOW)
    old = {"started_at": archive.rfc3339(NOW - 400 * DAY), "ended_at": archive.rfc3339(NOW - 400 * DAY)}
    assert expired(old, keep_days=30, now=NOW)
    assert not expired(old, keep_days=0, now=NOW)
    assert not expired(dict(old, in_progress=True), keep_days=30, now=NOW)
    assert not expired(dict(old, hold={"reason": "litigation", "placed_at": "x", "by": "t"}), keep_days=30, now=NOW)
    assert not expired({"started_at": "garbage"}, keep_days=30, now=NOW)
    assert not expired({}, keep_days=30, now=NOW)
    with pytest.raises(ValueError):
        expired(old, keep_days=-1, now=NOW)


def test_sweep_deletes_exactly_the_expired_unheld_faxes_and_dry_run_lists_the_same(store):
    for fax_id, age in (("a-old", 400), ("b-old", 31), ("c-young", 29), ("d-new", 1)):
        store.add(fax_id, age_days=age)
    held = store.add("e-held", age_days=400)
    place_hold(held.folder, reason="litigation 2026-17", by="token:legal", now=NOW - DAY)
    store.index.upsert(archive.read_meta(held.folder), held.folder)
    running = store.add("f-running", age_days=400, finish=False)
    before = tree(store.root)

    # Without the index: the day folders up to the cutoff; the sweep decides on meta.json.
    walked = candidates_from_folders(store.root, cutoff_for(KEEP_DAYS, NOW))
    assert sorted(p.name for p in walked) == ["a-old", "b-old", "e-held", "f-running"]
    rehearsal = store.sweep(walked, dry_run=True)
    assert {i.fax_id: i.skipped for i in rehearsal} == {"a-old": None, "b-old": None, "e-held": "held",
                                                         "f-running": "in progress"}
    assert not any(i.deleted for i in rehearsal)
    assert tree(store.root) == before and store.deleted == []  # a dry run touches nothing

    items = store.sweep(store.candidates())
    assert sorted((i.fax_id, i.deleted, i.skipped) for i in items) == [("a-old", True, None), ("b-old", True, None)]
    assert {i.fax_id for i in items if i.deleted} == {i.fax_id for i in rehearsal if i.skipped is None}
    assert [fax_id for fax_id, _ in store.deleted] == [i.fax_id for i in items]
    assert store.deleted[0][1]["id"] == items[0].fax_id and items[0].ended_at == store.deleted[0][1]["ended_at"]
    remaining = sorted(p.name for p in archive.iter_faxes(store.root))
    assert remaining == ["c-young", "d-new", "e-held", "f-running"]
    for fax_id in ("a-old", "b-old"):
        assert store.index.get_row(fax_id) is None and store.spool.for_fax(fax_id) == []
    for fax_id in remaining:
        assert store.index.get_row(fax_id) is not None and len(store.spool.for_fax(fax_id)) == 1
    assert not list(store.root.rglob(".deleting-*"))
    assert archive.read_meta(running.folder)["in_progress"]
    # The deleted bodies are gone from the spool's files, not merely unreferenced.
    spool_bytes = b"".join(p.read_bytes() for p in store.spool_path.parent.glob("spool.db*"))
    assert b"BODY-OF-a-old" not in spool_bytes and b"BODY-OF-c-young" in spool_bytes
    assert store.sweep(store.candidates()) == []


def test_a_hold_placed_after_the_candidates_were_listed_still_wins(store):
    record = store.add("a-old", age_days=400)
    store.add("b-old", age_days=400)
    candidates = store.candidates()  # the index says: both expired and unheld
    assert sorted(p.name for p in candidates) == ["a-old", "b-old"]
    place_hold(record.folder, reason="subpoena", by="token:legal", now=NOW)  # index not updated yet
    items = store.sweep(candidates)
    assert {i.fax_id: (i.deleted, i.skipped) for i in items} == {"a-old": (False, "held"), "b-old": (True, None)}
    assert archive.read_meta(record.folder)["hold"]["reason"] == "subpoena"
    assert store.spool.for_fax("a-old") and store.index.get_row("a-old") is not None


def test_a_hold_waiting_for_the_sweeps_lock_fails_instead_of_recreating_the_folder(store):
    record = store.add("a-old", age_days=400)
    outcome: list[BaseException | dict] = []

    def hold() -> None:
        try:
            outcome.append(place_hold(record.folder, reason="too late", by="token:legal", now=NOW))
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            outcome.append(exc)

    # Take the lock as the sweep does, start the hold (it waits), then delete while holding it.
    with meta_lock(record.folder):
        worker = threading.Thread(target=hold)
        worker.start()
        time.sleep(0.2)
        assert outcome == []  # the hold is waiting for the lock
        os.rename(record.folder, record.folder.with_name(".deleting-a-old"))
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], FileNotFoundError)
    assert not record.folder.exists()  # no folder holding only a meta.json


@pytest.mark.parametrize("crash_after", ["rename", "spool_and_files", "index_row"])
def test_a_deletion_a_crash_interrupted_is_finished_by_the_next_sweep(store, crash_after):
    record = store.add("a-old", age_days=400)
    store.add("b-old", age_days=400)
    doomed = record.folder.with_name(".deleting-a-old")
    # The sweep's first step (the decision), then what it did before the crash.
    os.rename(record.folder, doomed)
    if crash_after in ("spool_and_files", "index_row"):
        assert delete_spool_rows(store.spool_path, "a-old") == 1
        (doomed / "fax.pdf").unlink()
        (doomed / "fax.tif").unlink()
    if crash_after == "index_row":
        store.index.delete("a-old")
    assert pending_deletions(store.root) == [doomed]
    walked = candidates_from_folders(store.root, cutoff_for(KEEP_DAYS, NOW))
    assert doomed in walked

    candidates = store.candidates() if crash_after != "index_row" else pending_deletions(store.root)
    rehearsal = store.sweep(candidates, dry_run=True)
    assert [(i.fax_id, i.deleted, i.skipped, i.resumed) for i in rehearsal if i.fax_id == "a-old"] == \
        [("a-old", False, None, True)]
    assert doomed.is_dir()

    items = store.sweep(candidates)
    assert [(i.fax_id, i.deleted, i.resumed) for i in items if i.fax_id == "a-old"] == [("a-old", True, True)]
    assert not doomed.exists() and not record.folder.exists()
    assert store.spool.for_fax("a-old") == [] and store.index.get_row("a-old") is None
    assert [meta["id"] for fax_id, meta in store.deleted if fax_id == "a-old"] == ["a-old"]
    assert pending_deletions(store.root) == []


def test_a_candidate_whose_folder_is_gone_is_reported_not_deleted(store):
    record = store.add("a-old", age_days=400)
    moved = record.folder.with_name("elsewhere")
    os.rename(record.folder, moved)
    [item] = store.sweep([record.folder])
    assert (item.deleted, item.skipped) == (False, "missing")
    assert store.index.get_row("a-old") is not None and store.deleted == []


def test_route_subfolders_are_walked_and_later_days_not_listed(store):
    store.add("a-old", age_days=400, subdir="sales")
    store.add("b-young", age_days=2, subdir="sales")
    store.add("c-old", age_days=45)
    walked = candidates_from_folders(store.root, cutoff_for(KEEP_DAYS, NOW))
    assert [p.name for p in walked] == ["a-old", "c-old"]  # oldest day first
    assert walked[0].parts[-5] == "sales"


def test_place_and_release_hold_write_meta_and_history(store):
    record = store.add("a-old", age_days=400)
    meta = place_hold(record.folder, reason="  litigation hold #17 ", by="token:legal", now=NOW)
    on_disk = archive.read_meta(record.folder)
    assert on_disk == meta
    assert meta["hold"] == {"reason": "litigation hold #17", "placed_at": archive.rfc3339(NOW), "by": "token:legal"}
    store.index.upsert(meta, record.folder)
    assert [f["id"] for f in store.index.search(held=True)[0]] == ["a-old"]
    assert store.candidates() == []

    meta = release_hold(record.folder, by="token:admin", now=NOW + 60)
    assert "hold" not in meta and archive.read_meta(record.folder) == meta
    assert meta["hold_history"] == [
        {"action": "placed", "at": archive.rfc3339(NOW), "by": "token:legal", "reason": "litigation hold #17"},
        {"action": "released", "at": archive.rfc3339(NOW + 60), "by": "token:admin", "reason": "litigation hold #17"},
    ]
    # The rest of meta.json is untouched (add, never rename).
    assert {k: v for k, v in meta.items() if k != "hold_history"} == \
        {k: v for k, v in json.loads(json.dumps(on_disk)).items() if k not in ("hold", "hold_history")}
    stamp = (record.folder / "meta.json").stat().st_mtime_ns
    assert release_hold(record.folder, by="token:admin", now=NOW + 120) == meta  # not held: a no-op
    assert (record.folder / "meta.json").stat().st_mtime_ns == stamp
    store.index.upsert(meta, record.folder)
    assert [i.fax_id for i in store.sweep(store.candidates()) if i.deleted] == ["a-old"]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "bad\x00reason", None])
def test_a_hold_needs_a_reason(store, reason):
    record = store.add("a-old", age_days=400)
    before = (record.folder / "meta.json").read_bytes()
    with pytest.raises(ValueError):
        place_hold(record.folder, reason=reason, by="token:legal", now=NOW)
    with pytest.raises(ValueError):
        place_hold(record.folder, reason="ok", by="", now=NOW)
    assert (record.folder / "meta.json").read_bytes() == before
    assert place_hold(record.folder, reason="x" * 500, by="t", now=NOW)["hold"]["reason"] == "x" * 500


def test_a_fax_in_progress_cannot_be_held_and_a_deleted_one_is_not_found(store):
    running = store.add("a-running", age_days=1, finish=False)
    with pytest.raises(FaxInProgressError):
        place_hold(running.folder, reason="litigation", by="t", now=NOW)
    with pytest.raises(FileNotFoundError):
        place_hold(running.folder.with_name("no-such-fax"), reason="litigation", by="t", now=NOW)


def test_delete_spool_rows_counts_and_leaves_other_faxes(store):
    store.add("a-old", age_days=400)
    store.add("b-old", age_days=400)
    assert store.spool.enqueue(id="wh-a-old-2", webhook="other", url="http://127.0.0.1:9/", event_type="fax.received",
                               fax_id="a-old", body=b"{}", now=NOW)
    assert delete_spool_rows(store.spool_path, "a-old") == 2
    assert delete_spool_rows(store.spool_path, "a-old") == 0
    assert [d.id for d in store.spool.for_fax("b-old")] == ["wh-b-old"]
    assert store.spool.healthy and store.spool.depth() == 1
    with pytest.raises(Exception):  # noqa: B017 - sqlite3.OperationalError: not a new empty database
        delete_spool_rows(store.spool_path.with_name("missing.db"), "a-old")
    assert not store.spool_path.with_name("missing.db").exists()
