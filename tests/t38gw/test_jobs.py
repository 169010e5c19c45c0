"""The outbound job table (``t38gw.jobs.JobStore``) on a real spool database file: what
the job runner reads (due jobs, attempts, back-off) and what survives a restart."""

from __future__ import annotations

import sqlite3

import pytest

from t38gw.jobs import JobState, JobStore, JobStoreError
from t38gw.spool import DeliveryState, Spool

T0 = 1_800_000_000.0


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "spool.db"


def open_store(path, *, retries: int = 3, retry_after: float = 60) -> tuple[Spool, JobStore]:
    spool = Spool(path)
    return spool, JobStore(spool, retries=retries, retry_after=retry_after)


@pytest.fixture
def store(db_path):
    spool, jobs = open_store(db_path)
    yield jobs
    spool.close()


def add(jobs: JobStore, id: str, now: float, to: str = "+15550100") -> None:
    jobs.add(id=id, to=to, trunk="carrier", folder=f"/archive/{id}", now=now)


def test_add_then_get_returns_the_job_as_queued(store):
    add(store, "fax-1", T0, to="+1 555 0100")
    job = store.get("fax-1")
    assert job is not None
    assert (job.id, job.to, job.trunk, job.folder) == ("fax-1", "+1 555 0100", "carrier", "/archive/fax-1")
    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert job.created_at == T0 and job.next_attempt_at == T0
    assert store.get("no-such-job") is None


def test_adding_the_same_id_twice_is_a_job_store_error(store):
    add(store, "fax-1", T0)
    with pytest.raises(JobStoreError, match="IntegrityError"):
        add(store, "fax-1", T0 + 1)
    assert store.get("fax-1").created_at == T0  # the first row is untouched


def test_due_lists_only_queued_jobs_whose_time_came_oldest_first(store):
    add(store, "newer", T0 + 10)
    add(store, "older", T0)
    add(store, "future", T0 + 1000)
    add(store, "running", T0 - 50)
    store.start_attempt("running", T0)
    add(store, "done", T0 - 60)
    store.finish("done", T0)
    add(store, "retry-later", T0 - 70)
    store.start_attempt("retry-later", T0)
    store.requeue("retry-later", T0 + 500)

    assert [job.id for job in store.due(T0 + 20)] == ["older", "newer"]
    assert [job.id for job in store.due(T0 + 20, limit=1)] == ["older"]
    assert [job.id for job in store.due(T0 + 600)] == ["older", "newer", "retry-later"]
    assert [job.id for job in store.due(T0 + 1000)] == ["older", "newer", "retry-later", "future"]
    assert store.due(T0 - 1) == []


def test_due_breaks_a_tie_by_creation_time(store):
    add(store, "b", T0 + 5)
    add(store, "a", T0)
    store.requeue("a", T0 + 5)  # both due at T0 + 5: the one created first goes first
    assert [job.id for job in store.due(T0 + 5)] == ["a", "b"]


def test_start_attempt_numbers_attempts_and_marks_the_job_running(store):
    add(store, "fax-1", T0)
    assert store.start_attempt("fax-1", T0) == 1
    assert store.get("fax-1").state is JobState.RUNNING
    store.requeue("fax-1", T0 + 60)
    assert store.start_attempt("fax-1", T0 + 60) == 2
    store.requeue("fax-1", T0 + 180)
    assert store.start_attempt("fax-1", T0 + 180) == 3
    assert store.get("fax-1").attempts == 3
    assert store.start_attempt("no-such-job", T0) == 0


def test_retry_at_doubles_from_retry_after_until_the_retries_are_used_up(store):
    # [send] retries = 3, retry_after = 60: the n-th failure waits 60 * 2**(n-1) s.
    assert store.retry_at(1, T0) == T0 + 60
    assert store.retry_at(2, T0) == T0 + 120
    assert store.retry_at(3, T0) == T0 + 240
    assert store.retry_at(4, T0) is None
    assert store.retry_at(9, T0) is None


def test_no_retries_means_the_first_failure_is_final(db_path):
    spool, jobs = open_store(db_path, retries=0, retry_after=5)
    try:
        assert jobs.retry_at(1, T0) is None
    finally:
        spool.close()


def test_requeue_finish_next_due_at_queued_and_unfinished_ids(store):
    assert store.next_due_at() is None
    assert store.queued() == 0
    assert store.unfinished_ids() == set()

    add(store, "a", T0 + 30)
    add(store, "b", T0 + 10)
    add(store, "c", T0 + 20)
    assert store.next_due_at() == T0 + 10
    assert store.queued() == 3

    store.start_attempt("b", T0 + 10)  # running: not waiting, so not the next due
    assert store.next_due_at() == T0 + 20
    assert store.queued() == 3  # running jobs are still unfinished
    store.requeue("b", T0 + 70)
    job = store.get("b")
    assert (job.state, job.next_attempt_at, job.attempts) == (JobState.QUEUED, T0 + 70, 1)

    store.finish("c", T0 + 25)
    assert store.get("c").state is JobState.DONE
    assert store.next_due_at() == T0 + 30
    assert store.queued() == 2
    assert store.unfinished_ids() == {"a", "b"}
    assert [job.id for job in store.due(T0 + 1000)] == ["a", "b"]

    store.finish("a", T0 + 40)
    store.finish("b", T0 + 80)
    assert store.next_due_at() is None
    assert store.queued() == 0
    assert store.unfinished_ids() == set()


def test_jobs_survive_closing_and_reopening_the_file(db_path):
    spool, jobs = open_store(db_path)
    add(jobs, "waiting", T0)
    add(jobs, "retrying", T0)
    jobs.start_attempt("retrying", T0)
    jobs.requeue("retrying", T0 + 60)
    add(jobs, "finished", T0)
    jobs.finish("finished", T0 + 5)
    spool.close()

    spool, jobs = open_store(db_path)
    try:
        assert jobs.unfinished_ids() == {"waiting", "retrying"}
        retrying = jobs.get("retrying")
        assert (retrying.state, retrying.attempts, retrying.next_attempt_at) == (JobState.QUEUED, 1, T0 + 60)
        assert jobs.get("finished").state is JobState.DONE
        assert [job.id for job in jobs.due(T0 + 60)] == ["waiting", "retrying"]
    finally:
        spool.close()


def test_a_job_left_running_by_a_killed_run_is_listed_as_interrupted(db_path):
    spool, jobs = open_store(db_path)
    add(jobs, "mid-call", T0)
    add(jobs, "waiting", T0)
    assert jobs.start_attempt("mid-call", T0) == 1
    assert jobs.interrupted()[0].id == "mid-call"
    spool.close()  # the process dies here: nobody requeues or finishes the attempt

    spool, jobs = open_store(db_path)
    try:
        interrupted = jobs.interrupted()
        assert [job.id for job in interrupted] == ["mid-call"]
        assert interrupted[0].attempts == 1
        # What the gateway does at start-up: send it again at once; the count carries on.
        jobs.requeue("mid-call", T0 + 100)
        assert jobs.interrupted() == []
        assert {job.id for job in jobs.due(T0 + 100)} == {"mid-call", "waiting"}
        assert jobs.start_attempt("mid-call", T0 + 100) == 2
    finally:
        spool.close()


def test_jobs_and_webhook_deliveries_share_the_spool_file(db_path):
    spool, jobs = open_store(db_path)
    add(jobs, "fax-out", T0)
    assert spool.enqueue(id="wh-1", webhook="default", url="https://ehr.example.org/fax",
                         event_type="fax.sent", fax_id="fax-out", body=b'{"x": 1}', now=T0)
    spool.close()

    with sqlite3.connect(db_path) as raw:
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"send_jobs", "deliveries"} <= tables

    spool, jobs = open_store(db_path)
    try:
        assert jobs.get("fax-out") is not None
        delivery = spool.get("wh-1")
        assert delivery is not None and delivery.state is DeliveryState.PENDING
        assert delivery.fax_id == "fax-out"
    finally:
        spool.close()


def every_call(jobs: JobStore):
    return {
        "add": lambda: add(jobs, "new", T0),
        "get": lambda: jobs.get("fax-1"),
        "due": lambda: jobs.due(T0),
        "next_due_at": jobs.next_due_at,
        "queued": jobs.queued,
        "start_attempt": lambda: jobs.start_attempt("fax-1", T0),
        "requeue": lambda: jobs.requeue("fax-1", T0 + 60),
        "finish": lambda: jobs.finish("fax-1", T0),
        "interrupted": jobs.interrupted,
        "unfinished_ids": jobs.unfinished_ids,
    }


def test_a_closed_connection_raises_job_store_error_never_sqlite_error(db_path):
    spool, jobs = open_store(db_path)
    add(jobs, "fax-1", T0)
    spool.close()
    for name, call in every_call(jobs).items():
        with pytest.raises(JobStoreError) as caught:
            call()
        assert not isinstance(caught.value, sqlite3.Error), name
        assert "ProgrammingError" in str(caught.value) and "closed" in str(caught.value), name


def test_a_database_that_cannot_be_written_raises_job_store_error(db_path):
    # As if the disk turned read-only under the gateway (chmod does not stop root, so
    # the connection is made read-only instead: SQLite answers as it does for a read-only file).
    spool, jobs = open_store(db_path)
    try:
        add(jobs, "fax-1", T0)
        spool._db.execute("PRAGMA query_only = ON")
        writes = {"add", "start_attempt", "requeue", "finish"}
        for name, call in every_call(jobs).items():
            if name not in writes:
                call()  # reading still works
                continue
            with pytest.raises(JobStoreError, match="readonly|read-only|query_only") as caught:
                call()
            assert not isinstance(caught.value, sqlite3.Error), name
            assert not spool._db.in_transaction, name  # the failed write was rolled back
        job = jobs.get("fax-1")
        assert (job.state, job.attempts) == (JobState.QUEUED, 0)  # nothing half-written
    finally:
        spool.close()


def test_a_job_store_on_a_closed_spool_cannot_be_created(db_path):
    spool = Spool(db_path)
    spool.close()
    with pytest.raises(JobStoreError):
        JobStore(spool, retries=3, retry_after=60)
