"""The webhook spool holds patient data: private files, bodies purged from the file and
its WAL once delivered or dead, and SQLite errors that never escape (issue 9, items 4-5)."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import time

import pytest

from t38gw.spool import ADOPT_AFTER_SECONDS, DeliveryState, Spool

# A recognisable marker inside an otherwise incompressible "PDF": if any copy of it is
# left in the database file or its WAL, the raw bytes contain it.
MARKER = b"PATIENT-DOE-JOHN-1961-03-07-MARKER"


def body(rng: random.Random, size: int = 60_000) -> bytes:
    filler = rng.randbytes(size)
    return b'{"document":"%PDF-1.4 ' + MARKER + filler + MARKER + b'"}'


def raw_files(path) -> dict[str, bytes]:
    found = {}
    for suffix in ("", "-wal", "-shm"):
        name = f"{path}{suffix}"
        if os.path.exists(name):
            with open(name, "rb") as handle:
                found[suffix or "db"] = handle.read()
    return found


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """A umask that would make files world-readable: the spool must not rely on the umask."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_database_wal_and_shm_are_0600_whatever_the_umask(tmp_path, open_umask):
    path = tmp_path / "var" / "spool.db"
    spool = Spool(path, rng=random.Random(0))
    assert spool.enqueue(id="msg_1", webhook="w", url="https://x/", event_type="fax.received", fax_id="f1",
                         body=b"{}", now=1.0)
    for suffix in ("", "-wal", "-shm"):
        assert os.path.exists(f"{path}{suffix}"), suffix
        assert mode(f"{path}{suffix}") == 0o600, suffix
    assert mode(path.parent) == 0o700
    spool.close()


def test_an_existing_world_readable_spool_is_made_private(tmp_path, open_umask):
    path = tmp_path / "spool.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    Spool(path).close()
    assert mode(path) == 0o600


@pytest.mark.parametrize("outcome", ["delivered", "dead"])
def test_a_finished_deliverys_body_is_gone_from_the_file_and_its_wal(tmp_path, outcome):
    rng = random.Random(7)
    path = tmp_path / "spool.db"
    spool = Spool(path, rng=random.Random(0), give_up_after=0.0)
    spool.enqueue(id="msg_done", webhook="w", url="https://x/", event_type="fax.received", fax_id="f1",
                  body=body(rng), now=1.0)
    # A larger pending body keeps the file from being vacuumed: the purge itself is under test.
    other = b'{"other": "' + rng.randbytes(300_000) + b'"}'
    spool.enqueue(id="msg_other", webhook="w", url="https://x/", event_type="fax.received", fax_id="f2",
                  body=other, now=1.0)
    before = raw_files(path)
    assert any(MARKER in data for data in before.values())  # the test can see the bytes
    if outcome == "delivered":
        spool.mark_delivered("msg_done", 2.0)
    else:
        assert spool.mark_failed("msg_done", "HTTP 500", 2.0) is DeliveryState.DEAD
    after = raw_files(path)
    assert len(after["db"]) > 300_000  # not vacuumed: secure_delete zeroed the freed pages
    for name, data in after.items():
        assert MARKER not in data, f"patient data left in {name}"
    assert len(after.get("-wal", b"")) == 0  # checkpointed and truncated
    kept = spool.get("msg_done")
    assert kept.state.value == outcome and kept.body == b"" and kept.fax_id == "f1"  # the record stays
    assert spool.get("msg_other").body == other
    spool.close()
    for name, data in raw_files(path).items():
        assert MARKER not in data, f"patient data left in {name} after close"


def test_bodies_left_by_an_older_spool_are_purged_on_open(tmp_path):
    path = tmp_path / "spool.db"
    spool = Spool(path)
    spool.enqueue(id="msg_old", webhook="w", url="https://x/", event_type="fax.received", fax_id="f1",
                  body=body(random.Random(1)), now=1.0)
    spool.close()
    # As the spool of an older version left it: delivered, body still there.
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE deliveries SET state = 'delivered' WHERE id = 'msg_old'")
    db.close()
    assert any(MARKER in data for data in raw_files(path).values())
    spool = Spool(path)
    assert all(MARKER not in data for data in raw_files(path).values())
    assert spool.get("msg_old").state is DeliveryState.DELIVERED
    spool.close()


def test_the_file_is_vacuumed_once_it_has_shrunk_a_lot(tmp_path):
    rng = random.Random(3)
    path = tmp_path / "spool.db"
    spool = Spool(path)
    for n in range(40):
        spool.enqueue(id=f"msg_{n}", webhook="w", url="https://x/", event_type="fax.received", fax_id=f"f{n}",
                      body=body(rng, 100_000), now=1.0)
    spool.mark_delivered("msg_0", 2.0)  # checkpoint: the file now holds every body
    full = os.path.getsize(path)
    assert full > 40 * 100_000
    for n in range(1, 40):
        spool.mark_delivered(f"msg_{n}", 2.0)
    small = os.path.getsize(path)
    assert small < full / 10, (full, small)
    assert spool.depth() == 0 and len(spool.for_fax("f5")) == 1
    spool.close()


def test_a_full_disk_never_raises_marks_the_spool_unhealthy_and_loses_nothing(tmp_path):
    path = tmp_path / "spool.db"
    spool = Spool(path, rng=random.Random(0))
    assert spool.enqueue(id="msg_kept", webhook="w", url="https://x/", event_type="fax.received", fax_id="f1",
                         body=b'{"kept": true}', now=1.0)
    assert spool.healthy
    # SQLite's own size cap gives the same SQLITE_FULL as a full disk, through the same code.
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    assert spool.enqueue(id="msg_big", webhook="w", url="https://x/", event_type="fax.received", fax_id="f2",
                         body=random.Random(1).randbytes(200_000), now=2.0) is False
    assert not spool.healthy and "full" in spool.last_error
    # Reads still answer; what was committed is intact and still due.
    assert [d.id for d in spool.due(3.0)] == ["msg_kept"]
    assert spool.depth() == 1 and spool.get("msg_big") is None
    spool._db.execute("PRAGMA max_page_count = 1073741823")
    assert spool.probe(4.0) and spool.healthy and spool.last_error == ""
    assert spool.enqueue(id="msg_big", webhook="w", url="https://x/", event_type="fax.received", fax_id="f2",
                         body=b"{}", now=5.0)
    assert spool.depth() == 2
    spool.close()


def test_a_lock_held_elsewhere_is_an_error_not_a_hang_nor_a_crash(tmp_path):
    path = tmp_path / "spool.db"
    spool = Spool(path, rng=random.Random(0))
    spool.enqueue(id="msg_1", webhook="w", url="https://x/", event_type="fax.received", fax_id="f1",
                  body=b"{}", now=1.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an operator's sqlite3 shell holding the write lock
    started = time.monotonic()
    assert spool.mark_failed("msg_1", "HTTP 503", 2.0) is DeliveryState.PENDING
    assert time.monotonic() - started < 5.0
    assert not spool.healthy and "locked" in spool.last_error
    assert spool.get("msg_1").attempts == 0  # nothing half-written
    other.execute("ROLLBACK")
    other.close()
    assert spool.probe(3.0) and spool.healthy
    assert spool.mark_failed("msg_1", "HTTP 503", 4.0) is DeliveryState.PENDING
    assert spool.get("msg_1").attempts == 1
    spool.close()


# -- several worker processes share one spool (issue 14) ---------------------------------------

def enqueue(spool: Spool, id: str, now: float) -> None:
    spool.enqueue(id=id, webhook="w", url="https://x/", event_type="fax.received", fax_id=f"fax-{id}",
                  body=b"{}", now=now)


def test_each_worker_sends_the_deliveries_it_spooled(tmp_path):
    path = tmp_path / "spool.db"
    first, second = Spool(path, owner=0, owners=2), Spool(path, owner=1, owners=2)
    enqueue(first, "msg_a", 100.0)
    enqueue(second, "msg_b", 101.0)
    enqueue(second, "msg_c", 150.0)
    assert [d.id for d in first.due(110.0)] == ["msg_a"]
    assert [d.id for d in second.due(110.0)] == ["msg_b"]
    # Each process's deadline is its own earliest delivery (worker 0's: its own, or another's
    # that its owner has left ADOPT_AFTER_SECONDS overdue).
    assert second.next_due_at() == 101.0
    first.mark_delivered("msg_a", 110.0)
    assert first.next_due_at() == 101.0 + ADOPT_AFTER_SECONDS
    # One process sees every delivery, whoever spooled it.
    alone = Spool(path)
    assert [d.id for d in alone.due(200.0)] == ["msg_b", "msg_c"]
    assert alone.next_due_at() == 101.0
    for spool in (first, second, alone):
        spool.close()


def test_worker_0_sends_what_another_worker_left_long_overdue(tmp_path):
    path = tmp_path / "spool.db"
    first, second = Spool(path, owner=0, owners=2), Spool(path, owner=1, owners=2)
    enqueue(second, "msg_b", 100.0)
    assert first.due(100.0 + ADOPT_AFTER_SECONDS - 1) == []  # worker 1 is expected to send it
    assert [d.id for d in first.due(100.0 + ADOPT_AFTER_SECONDS)] == ["msg_b"]
    # A delivery spooled by a worker the configuration no longer has (3 -> 2 workers).
    third_of_three = Spool(path, owner=2, owners=3)
    enqueue(third_of_three, "msg_c", 100.0)
    assert [d.id for d in first.due(100.5)] == ["msg_c"]
    for spool in (first, second, third_of_three):
        spool.close()


def test_a_spool_from_before_owners_is_opened_and_its_deliveries_are_worker_0s(tmp_path):
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    with db:  # the table as the spool of an older version made it
        db.execute("CREATE TABLE deliveries (id TEXT PRIMARY KEY, webhook TEXT NOT NULL, url TEXT NOT NULL,"
                   " event_type TEXT NOT NULL, fax_id TEXT NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL,"
                   " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,"
                   " state TEXT NOT NULL DEFAULT 'pending', last_error TEXT NOT NULL DEFAULT '', finished_at REAL)")
        db.execute("INSERT INTO deliveries (id, webhook, url, event_type, fax_id, body, created_at, next_attempt_at)"
                   " VALUES ('msg_old', 'w', 'https://x/', 'fax.received', 'f1', X'7b7d', 5.0, 5.0)")
    db.close()
    first, second = Spool(path, owner=0, owners=2), Spool(path, owner=1, owners=2)
    assert [d.id for d in first.due(6.0)] == ["msg_old"]
    assert second.due(6.0) == []
    enqueue(second, "msg_new", 7.0)
    assert [d.id for d in second.due(8.0)] == ["msg_new"]
    first.close()
    second.close()


def test_an_owner_outside_the_workers_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Spool(tmp_path / "spool.db", owner=2, owners=2)
