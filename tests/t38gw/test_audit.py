"""The audit trail (issue 15): a hash chain across rotated files, fsync per line, torn-line
recovery, and every kind of tampering found at the line where the chain breaks."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading

import pytest

from t38gw.audit import GENESIS, AuditTrail, history, rotated_files, verify_audit_log, verify_trail

FAX_A = "0190f3b2-aaaa-7bbb-8ccc-00000000000a"
FAX_B = "0190f3b2-aaaa-7bbb-8ccc-00000000000b"


def sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def raw_lines(path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def fill(trail: AuditTrail, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        trail.record("fax_stored", fax_id=FAX_A if n % 2 else FAX_B, n=n)


def test_a_new_trail_starts_from_genesis_private_and_chained(tmp_path):
    path = tmp_path / "var" / "lib" / "audit.jsonl"
    with AuditTrail(path, clock=lambda: 1_796_536_475.1234) as trail:
        first = trail.record("fax_stored", fax_id=FAX_A, pages=3)
        trail.record("webhook_delivered", fax_id=FAX_A, url_id="w1", status=204)
    assert first == {"time": "2026-12-06T05:54:35.123Z", "event": "fax_stored", "fax_id": FAX_A, "pages": 3,
                     "prev": GENESIS}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "var").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "var" / "lib").st_mode) == 0o700
    lines = raw_lines(path)
    assert json.loads(lines[0]) == first  # key order kept: time, event, fields, prev
    assert lines[0].startswith(b'{"time":"2026-12-06T05:54:35.123Z","event":"fax_stored"')
    assert json.loads(lines[1])["prev"] == sha(lines[0])
    assert verify_trail(path).first_broken is None and verify_trail(path).lines == 2


def test_the_chain_runs_across_rotated_files(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, max_bytes=400) as trail:
        fill(trail, 30)
        head = trail.head
    rotated = rotated_files(path)
    assert [p.name for p in rotated] == [f"audit.jsonl.{n}" for n in range(1, len(rotated) + 1)]
    assert len(rotated) >= 5
    files = rotated + [path]
    assert all(0 < p.stat().st_size <= 400 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    everything = [line for p in files for line in raw_lines(p)]
    assert [json.loads(line)["n"] for line in everything] == list(range(30))
    prev = GENESIS
    for line in everything:  # one chain, file boundaries included
        assert json.loads(line)["prev"] == prev
        prev = sha(line)
    assert head == prev
    result = verify_trail(path)
    assert (result.lines, result.first_broken, result.problems) == (30, None, [])
    assert result.files == [str(p) for p in files]
    assert verify_audit_log(path) == (30, None)


def test_history_of_one_fax_across_files(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, max_bytes=300) as trail:
        fill(trail, 12)
        trail.write({"client": "127.0.0.1", "token_id": "loopback", "method": "GET", "path": "/v1/faxes",
                     "query": "", "fax_id": None, "status": 200, "fax_ids": [FAX_A, FAX_B]})
        trail.record("fax_deleted", fax_id=FAX_A, reason="retention")
    assert len(rotated_files(path)) >= 2
    about_a = history(path, FAX_A)
    assert [e.get("n") for e in about_a] == [1, 3, 5, 7, 9, 11, None, None]
    assert [e["event"] for e in about_a[-2:]] == ["api_read", "fax_deleted"]
    assert about_a[-2]["fax_ids"] == [FAX_A, FAX_B] and about_a[-2]["status"] == 200
    assert len(history(path, FAX_B)) == 7
    assert history(path, "0190f3b2-aaaa-7bbb-8ccc-00000000000c") == []


def test_reopening_continues_the_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    for run in range(3):  # three gateway runs
        with AuditTrail(path, max_bytes=500) as trail:
            fill(trail, 7, start=run * 7)
    assert verify_trail(path).first_broken is None and verify_trail(path).lines == 21
    assert len(rotated_files(path)) >= 2


def test_reopening_after_a_rotation_was_cut_short(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path) as trail:
        fill(trail, 3)
    os.link(path, f"{path}.1")  # crash between the link and the unlink
    with AuditTrail(path) as trail:
        fill(trail, 2, start=3)
    assert not os.path.samefile(path, f"{path}.1")
    assert len(raw_lines(path)) == 2
    os.rename(path, f"{path}.2")  # crash after the unlink, before the new file
    with AuditTrail(path) as trail:
        fill(trail, 1, start=5)
    result = verify_trail(path)
    assert (result.lines, result.first_broken, result.problems) == (6, None, [])


def test_concurrent_writers_keep_one_valid_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path, max_bytes=4096)
    start = threading.Barrier(8)

    def writer(thread: int) -> None:
        start.wait(timeout=10)
        for n in range(60):
            trail.record("api_read", fax_id=FAX_A, thread=thread, n=n, padding="x" * (n % 17))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    trail.close()
    result = verify_trail(path)
    assert (result.lines, result.first_broken, result.problems) == (480, None, [])
    assert len(result.files) > 2
    seen = sorted((e["thread"], e["n"]) for e in history(path, FAX_A))
    assert seen == [(t, n) for t in range(8) for n in range(60)]


def test_every_record_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    synced: list[tuple[int, int]] = []  # (fd, file size when fsync was called)
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append((fd, os.fstat(fd).st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    for n in range(5):
        before = len(synced)
        trail.record("hold_placed", fax_id=FAX_A, n=n)
        file_fsyncs = [size for fd, size in synced[before:] if fd == trail._fd]
        assert file_fsyncs == [path.stat().st_size]  # once, after the whole line was written
    trail.close()


def test_lines_recorded_together_are_the_lines_recorded_one_by_one_with_one_fsync(tmp_path, monkeypatch):
    events = [("fax_stored", {"fax_id": FAX_A, "pages": 1}), ("webhook_delivered", {"fax_id": FAX_B, "attempts": 1}),
              ("webhook_dead", {"fax_id": FAX_A, "attempts": 9})]
    with AuditTrail(tmp_path / "one.jsonl", clock=lambda: 1_796_536_475.0) as trail:
        trail.record("hold_placed", fax_id=FAX_B)
        singly = [trail.record(event, **fields) for event, fields in events]
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    with AuditTrail(tmp_path / "many.jsonl", clock=lambda: 1_796_536_475.0) as trail:
        trail.record("hold_placed", fax_id=FAX_B)
        monkeypatch.setattr(os, "fsync", counting_fsync)
        together = trail.record_many(events)
        assert synced == [trail._fd]
        assert trail.record_many([]) == [] and synced == [trail._fd]
    assert together == singly
    assert (tmp_path / "many.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert verify_trail(tmp_path / "many.jsonl").first_broken is None


def test_lines_recorded_together_rotate_where_one_by_one_would(tmp_path):
    events = [("fax_stored", {"fax_id": FAX_A if n % 2 else FAX_B, "n": n}) for n in range(30)]
    with AuditTrail(tmp_path / "one.jsonl", max_bytes=400, clock=lambda: 1_796_536_475.0) as trail:
        for event, fields in events:
            trail.record(event, **fields)
    with AuditTrail(tmp_path / "many.jsonl", max_bytes=400, clock=lambda: 1_796_536_475.0) as trail:
        trail.record_many(events[:4])
        trail.record_many(events[4:])
    one, many = rotated_files(tmp_path / "one.jsonl"), rotated_files(tmp_path / "many.jsonl")
    assert len(many) == len(one) >= 5
    assert [p.read_bytes() for p in many] == [p.read_bytes() for p in one]
    assert (tmp_path / "many.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert verify_trail(tmp_path / "many.jsonl").lines == 30


def test_a_batch_with_a_refused_event_writes_nothing(tmp_path):
    with AuditTrail(tmp_path / "audit.jsonl") as trail:
        trail.record("hold_placed", fax_id=FAX_A)
        size = (tmp_path / "audit.jsonl").stat().st_size
        with pytest.raises(TypeError):
            trail.record_many([("fax_stored", {"fax_id": FAX_A}), ("fax_stored", {"when": object()})])
        with pytest.raises(ValueError):
            trail.record_many([("fax_stored", {"fax_id": FAX_A}), ("fax_stored", {"prev": GENESIS})])
        assert (tmp_path / "audit.jsonl").stat().st_size == size
        trail.record("hold_released", fax_id=FAX_A)
    assert verify_trail(tmp_path / "audit.jsonl").first_broken is None


def test_a_failed_fsync_refuses_and_the_next_record_recovers(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    fill(trail, 2)
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        trail.record("api_read", fax_id=FAX_A)
    monkeypatch.setattr(os, "fsync", real_fsync)
    fill(trail, 2, start=2)
    trail.close()
    result = verify_trail(path)
    assert (result.lines, result.first_broken) == (5, None)  # the refused action's line is on disk, chained


def test_a_short_write_is_refused_then_recorded_as_torn(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    fill(trail, 2)
    real_write = os.write

    def half_write(fd: int, data: bytes) -> int:  # a full disk takes only part of the line
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_write)
    with pytest.raises(OSError):
        trail.record("api_read", fax_id=FAX_A)
    monkeypatch.setattr(os, "write", real_write)
    trail.record("api_read", fax_id=FAX_B)
    trail.close()
    lines = raw_lines(path)
    recovery = json.loads(lines[3])
    assert recovery["event"] == "trail_recovered" and recovery["torn_line"] == 3
    assert recovery["torn_sha256"] == sha(lines[2]) and recovery["prev"] == sha(lines[1])
    result = verify_trail(path)
    assert (result.lines, result.first_broken) == (5, None)
    assert len(result.problems) == 1 and "line 3: cut short" in result.problems[0]


def make_trail(path, count=6, max_bytes=1 << 20):
    with AuditTrail(path, max_bytes=max_bytes) as trail:
        fill(trail, count)


def rewrite(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_an_edited_field_breaks_the_chain_at_the_next_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path)
    lines = raw_lines(path)
    assert b'"n":2,' in lines[2]
    lines[2] = lines[2].replace(b'"n":2,', b'"n":9,')
    rewrite(path, lines)
    result = verify_trail(path)
    assert result.first_broken == (str(path), 4) and "line 4" in result.problems[0]
    assert len(result.problems) == 1
    assert verify_audit_log(path) == (6, 4)


def test_a_deleted_line_is_found(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path)
    lines = raw_lines(path)
    rewrite(path, lines[:2] + lines[3:])
    assert verify_trail(path).first_broken == (str(path), 3)
    rewrite(path, lines[1:])  # the oldest line removed
    result = verify_trail(path)
    assert result.first_broken == (str(path), 1) and "genesis" in result.problems[0]


def test_swapped_lines_are_found(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path)
    lines = raw_lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    rewrite(path, lines)
    result = verify_trail(path)
    assert result.first_broken == (str(path), 3)
    assert len(result.problems) == 3  # lines 3, 4 and 5 each follow the wrong line


def test_a_line_that_is_not_json_is_found(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path)
    lines = raw_lines(path)
    lines[1] = b"garbage"
    rewrite(path, lines)
    result = verify_trail(path)
    assert result.first_broken == (str(path), 2) and "not a JSON object" in result.problems[0]


def test_a_deleted_rotated_file_breaks_the_next_files_first_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path, count=30, max_bytes=400)
    rotated = rotated_files(path)
    assert len(rotated) >= 4
    os.unlink(rotated[1])
    result = verify_trail(path)
    assert result.first_broken == (str(rotated[2]), 1)
    assert "audit.jsonl.2" in result.problems[0] and "missing" in result.problems[0]
    assert "a rotated file was removed" in result.problems[1]
    os.unlink(rotated[0])  # the oldest too: the trail no longer starts at genesis
    assert verify_trail(path).first_broken == (str(rotated[2]), 1)
    os.unlink(rotated[-1])  # the newest rotated file: the current file's first line breaks
    later = verify_trail(path)
    assert any(f"{path} line 1:" in p for p in later.problems)


def test_a_truncated_last_line_is_found_and_then_recovered_by_the_writer(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path)
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # a crash in the middle of the sixth line
    torn = raw_lines(path)[-1] if data[:-25].endswith(b"\n") else data[:-25].rsplit(b"\n", 1)[1]
    result = verify_trail(path)
    assert result.first_broken == (str(path), 6) and "cut short" in result.problems[0]
    with AuditTrail(path) as trail:  # the gateway restarts
        trail.record("fax_stored", fax_id=FAX_A, n=6)
    lines = raw_lines(path)
    assert lines[5] == torn
    recovery = json.loads(lines[6])
    assert recovery["event"] == "trail_recovered" and recovery["torn_line"] == 6
    assert recovery["prev"] == sha(lines[4]) and json.loads(lines[7])["prev"] == sha(lines[6])
    result = verify_trail(path)
    assert (result.lines, result.first_broken) == (8, None)
    assert result.problems == [f"{path} line 6: cut short by an interrupted write; the writer recorded that at line 7"]
    lines[5] = lines[5][:-3]  # the torn line edited afterwards: its recorded hash no longer matches
    rewrite(path, lines)
    assert verify_trail(path).first_broken == (str(path), 6)


def test_a_whole_line_missing_only_its_newline_is_closed_not_chained_onto(tmp_path):
    path = tmp_path / "audit.jsonl"
    make_trail(path, count=3)
    path.write_bytes(path.read_bytes()[:-1])
    result = verify_trail(path)
    assert result.first_broken is None and "no newline" in result.problems[0]
    with AuditTrail(path) as trail:
        trail.record("fax_stored", fax_id=FAX_A)
    result = verify_trail(path)
    assert (result.lines, result.first_broken) == (5, None) and "line 3: cut short" in result.problems[0]


def test_a_missing_trail_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        verify_trail(tmp_path / "nothing.jsonl")


def test_record_refuses_fields_the_trail_sets(tmp_path):
    with AuditTrail(tmp_path / "audit.jsonl") as trail:
        with pytest.raises(ValueError):
            trail.record("fax_stored", prev="0" * 64)
        with pytest.raises(TypeError):
            trail.record("fax_stored", when=object())
    assert (tmp_path / "audit.jsonl").read_bytes() == b""


def test_two_processes_writing_one_trail_keep_one_chain(tmp_path):
    # The gateway and `t38gw archive sweep` may both record: each chains onto the file as it is.
    import subprocess
    import sys

    path = tmp_path / "audit.jsonl"
    script = ("import sys; from t38gw.audit import AuditTrail\n"
              "trail = AuditTrail(sys.argv[1])\n"
              "for n in range(150): trail.record('fax_stored', fax_id=f'{sys.argv[2]}-{n}')\n"
              "trail.close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    result = verify_trail(path)
    assert result.first_broken is None and result.lines == 300, result


def test_a_writer_after_another_writers_line_reads_only_the_end_of_the_trail(tmp_path, monkeypatch):
    # Workers share the trail: each line after the other's re-reads where the chain ends.
    # Reading the whole file for that grew with the trail (33 MB after an hour's soak).
    from t38gw import audit

    path = tmp_path / "audit.jsonl"
    with AuditTrail(path) as trail:
        for n in range(2000):
            trail.record("fax_stored", fax_id=f"old-{n}")
    whole_scans = []
    real_scan = audit._scan
    monkeypatch.setattr(audit, "_scan", lambda file: whole_scans.append(file) or real_scan(file))
    first, second = AuditTrail(path), AuditTrail(path)
    for n in range(20):
        (first if n % 2 else second).record("webhook_delivered", fax_id=f"new-{n}")
    first.close()
    second.close()
    assert whole_scans == []
    result = verify_trail(path)
    assert (result.lines, result.first_broken) == (2020, None), result


@pytest.mark.parametrize("content", [
    b"", b"\n", b"\n\n", b"a", b"a\n", b"a\nb", b"a\nb\n", b"a\n\n", b"\nb",
    b"x" * 20000, b"x" * 20000 + b"\n", b"y\n" + b"x" * 20000 + b"\n", b"y\n" + b"x" * 20000,
    b"y\n" + b"x" * 8191 + b"\n" + b"z" * 8190, b"\n".join(b"line %d" % n for n in range(5000)) + b"\ntorn",
])
def test_the_end_of_a_trail_read_backwards_is_what_a_whole_scan_finds(tmp_path, content):
    from t38gw.audit import _ending, _scan

    path = tmp_path / "trail"
    path.write_bytes(content)
    scan = _scan(path)
    assert _ending(path) == (scan.last_whole, scan.torn)
