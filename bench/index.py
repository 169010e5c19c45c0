"""The archive index (t38gw/index.py) at a million faxes: build, search latency, rebuild, open.

A synthetic index of BENCH_ROWS (default 1,000,000) faxes over two years is bulk-loaded
in time order through ``upsert_many`` (the code path ``rebuild`` uses, 50,000 per
transaction); callers
are drawn from 200,000 random ten-digit numbers, remote idents from 20,000 names of two
words of a 4,000-word vocabulary (a word is in ~0.05 % of faxes) and, as a common word,
"Clinic" in a third of them.  Each query kind is timed over BENCH_QUERIES (200) random
instances, first page of 100, and p50/p99 printed (wall time, the database warm in the page
cache as it is in a running gateway):

* no filter; a one-day date range; a status and a one-week range; caller trailing
  4 digits; did whole number; q one rare word; q one common word; q two words;
  remote_ident substring (not indexed: a scan in date order until the page is full);
* the next page: 200 pages followed one after the other from the first, by cursor.

Also: ``rebuild()`` over a 2,000-fax folder archive (faxes/s), and opening the index
(``ArchiveIndex(path)`` + ``count()``), the start-up cost.  The references measured in the
same run are what the API does today: sorting every fax id per ``GET /v1/faxes``
and walking every folder at start (what the gateway did before the index).
Files go to a temporary folder under ./var (a real disk, not tmpfs).
Run: .venv/bin/python bench/index.py
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t38gw import archive  # noqa: E402
from t38gw.ids import new_fax_id  # noqa: E402
from t38gw.index import ArchiveIndex  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
FOLDERS = int(os.environ.get("BENCH_FOLDERS", "2000"))
BATCH = 50_000
START = 1_735_689_600.0  # 2025-01-01
SPAN = 2 * 365 * 86400.0
ms = 1000.0


class Synthetic:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.numbers = [f"+1{rng.randrange(10**9, 10**10)}" for _ in range(200_000)]
        self.dids = [f"+1555{rng.randrange(10**6, 10**7)}" for _ in range(200)]
        self.vocabulary = [_word(rng) for _ in range(4000)]
        self.idents = [f"{rng.choice(self.vocabulary).title()} {rng.choice(self.vocabulary).title()}"
                       + (" Clinic" if rng.random() < 1 / 3 else "") for _ in range(20_000)]

    def meta(self, started_at: float) -> dict[str, Any]:
        rng = self.rng
        direction = "inbound" if rng.random() < 0.7 else "outbound"
        status = rng.choice(("received", "received", "received", "partial", "failed") if direction == "inbound"
                            else ("sent", "sent", "sent", "partial", "failed"))
        number = rng.choice(self.numbers)
        meta: dict[str, Any] = {
            "id": new_fax_id(started_at, rng), "direction": direction, "status": status,
            "reason": "" if status in ("received", "sent") else rng.choice(("t30_rx_dcn", "busy", "no_answer")),
            "started_at": archive.rfc3339(started_at), "ended_at": archive.rfc3339(started_at + 60),
            "in_progress": False, "media": "t38",
            "sip": {"caller": number if direction == "inbound" else "+15550100",
                    "did": rng.choice(self.dids) if direction == "inbound" else number, "trunk": "carrier"},
            "t30": {"remote_ident": rng.choice(self.idents), "local_ident": "+1 555 0100"},
            "pages": [{}] * rng.randint(1, 5), "route": rng.choice(("default", "routes[0]", "routes[1]")),
        }
        if direction == "outbound":
            meta["to"] = number
        return meta


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def timed(make_args: Callable[[], dict[str, Any]], index: ArchiveIndex) -> tuple[float, float, float]:
    samples, found = [], 0
    for _ in range(QUERIES):
        args = make_args()
        began = time.perf_counter()
        rows, _ = index.search(**args)
        samples.append(time.perf_counter() - began)
        found += len(rows)
    p50, p99 = percentiles(samples)
    return p50, p99, found / QUERIES


def build(index: ArchiveIndex, synthetic: Synthetic, folder: Path) -> list[float]:
    rng = synthetic.rng
    # In order of time, as an archive grows and as rebuild() walks it (ids sort by time).
    starts = sorted(round(START + rng.random() * SPAN, 3) for _ in range(ROWS))

    began = time.perf_counter()
    done = 0
    while done < ROWS:
        size = min(BATCH, ROWS - done)
        index.upsert_many((synthetic.meta(at), folder) for at in starts[done:done + size])
        done += size
        print(f"\r  loaded {done:,}/{ROWS:,}", end="", flush=True)
    elapsed = time.perf_counter() - began
    print(f"\rbuild: {ROWS:,} rows in {elapsed:.1f} s = {ROWS / elapsed:,.0f} rows/s "
          f"(upsert_many, {BATCH:,} per transaction, synthetic metas made in the loop)")
    return starts


def main() -> None:
    base = Path("var")
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-index-", dir=base))
    rng = random.Random(15)
    try:
        synthetic = Synthetic(rng)
        path = work / "index.db"
        index = ArchiveIndex(path)
        starts = build(index, synthetic, work / "folder")
        began = time.perf_counter()
        index._db().execute("PRAGMA optimize")  # what rebuild() ends with
        print(f"PRAGMA optimize after the load: {(time.perf_counter() - began) * ms:.0f} ms; "
              f"file {os.path.getsize(path) / 2**20:.0f} MiB")
        index.close()

        began = time.perf_counter()
        index = ArchiveIndex(path)
        count = index.count()
        opened = time.perf_counter() - began
        assert count == ROWS

        caller_numbers = synthetic.numbers
        queries: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("no filter", lambda: {}),
            ("date range (1 day)", lambda: _day(rng)),
            ("status + 1 week", lambda: {"status": rng.choice(("partial", "failed"))} | _day(rng, 7)),
            ("caller trailing 4 digits", lambda: {"caller": rng.choice(caller_numbers)[-4:]}),
            ("did whole number", lambda: {"did": rng.choice(caller_numbers)}),
            ("q rare word", lambda: {"q": rng.choice(synthetic.vocabulary)}),
            ("q common word (Clinic)", lambda: {"q": "clinic"}),
            ("q two words", lambda: {"q": rng.choice(synthetic.idents)}),
            ("q common word + status", lambda: {"q": "clinic", "status": rng.choice(("partial", "failed"))}),
            ("q rare word + direction", lambda: {"q": rng.choice(synthetic.vocabulary), "direction": "outbound"}),
            ("q number (7 digits)", lambda: {"q": rng.choice(caller_numbers)[-7:]}),
            ("remote_ident substring", lambda: {"remote_ident": rng.choice(synthetic.vocabulary)[:5]}),
        ]
        print(f"\n{'query (first page of 100)':28} {'p50 ms':>8} {'p99 ms':>8} {'rows/page':>10}")
        for name, make in queries:
            p50, p99, per_page = timed(make, index)
            print(f"{name:28} {p50 * ms:8.2f} {p99 * ms:8.2f} {per_page:10.1f}")

        samples = []
        _, cursor = index.search(limit=100)
        for _ in range(QUERIES):
            began = time.perf_counter()
            rows, cursor = index.search(limit=100, cursor=cursor)
            samples.append(time.perf_counter() - began)
        p50, p99 = percentiles(samples)
        print(f"{'next page by cursor':28} {p50 * ms:8.2f} {p99 * ms:8.2f} {len(rows):10.1f}  "
              f"(pages 2..{QUERIES + 1} in turn)")

        ids = [new_fax_id(at, rng) for at in starts]
        began = time.perf_counter()
        newest = sorted(ids, reverse=True)[:100]
        sort_s = time.perf_counter() - began
        assert len(newest) == 100
        print(f"{'reference: sort all ids':28} {sort_s * ms:8.2f} {'':>8} {'':>10}  "
              f"(today's GET /v1/faxes, every request, {ROWS:,} ids)")

        print(f"\nopen: ArchiveIndex(path) + count() = {opened * ms:.1f} ms at {ROWS:,} rows")
        index.close()

        root = work / "archive"
        for _ in range(FOLDERS):
            started_at = round(START + rng.random() * SPAN, 3)
            meta = synthetic.meta(started_at)
            archive.write_meta(archive.fax_folder(root, meta["id"], started_at), meta)
        small = ArchiveIndex(work / "small.db")
        began = time.perf_counter()
        assert small.rebuild(root) == FOLDERS
        rebuild_s = time.perf_counter() - began
        began = time.perf_counter()
        again = small.rebuild(root)
        unchanged_s = time.perf_counter() - began
        began = time.perf_counter()
        # The start-up of earlier versions: walk every folder of the archive.
        scanned = sorted(folder.name for folder in archive.iter_faxes(root))
        scan_s = time.perf_counter() - began
        assert again == FOLDERS and len(scanned) == FOLDERS
        print(f"rebuild: {FOLDERS:,} folders in {rebuild_s * ms:.0f} ms = {FOLDERS / rebuild_s:,.0f} faxes/s "
              f"(again, nothing changed: {FOLDERS / unchanged_s:,.0f} faxes/s; meta.json files in the page cache)")
        print(f"reference: the old start-up walk of the same folders: {scan_s * ms:.0f} ms = "
              f"{FOLDERS / scan_s:,.0f} faxes/s (at {ROWS:,} faxes: ~{ROWS / FOLDERS * scan_s:.0f} s)")
        small.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _day(rng: random.Random, days: int = 1) -> dict[str, Any]:
    since = START + rng.random() * (SPAN - days * 86400.0)
    return {"since": archive.rfc3339(since), "until": archive.rfc3339(since + days * 86400.0)}


if __name__ == "__main__":
    main()
