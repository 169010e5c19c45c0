"""``t38gw serve`` over a big archive index: start-up time and ``GET /v1/faxes`` latency.

Builds an index of BENCH_ROWS (default 1,000,000) synthetic faxes with ``bench/index.py``'s
generator, starts a real ``t38gw serve`` on it (an empty archive folder: start-up must not
walk the archive, only read the index), times the start until ``gateway_started``, then
times BENCH_QUERIES HTTP requests of each kind over the loopback API: the first page with
no filter, a date range, ``caller`` by trailing digits, ``q`` full text, and the next page
by cursor (p50/p99, milliseconds, including HTTP and JSON).  Goals (issue 15): start < 2 s,
p99 < 50 ms.  Prints figures; asserts nothing.

Run: .venv/bin/python bench/serve_index.py   (BENCH_ROWS=200000 for a quicker run)
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from t38gw import archive  # noqa: E402
from t38gw.index import ArchiveIndex  # noqa: E402
from bench.index import SPAN, START, Synthetic  # noqa: E402
from tests.e2e.support import GatewayProcess  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
BATCH = 50_000


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-serve-index-"))
    try:
        rng = random.Random(1)
        synthetic = Synthetic(rng)
        index_path = work / "index.db"
        index = ArchiveIndex(index_path)
        folder = work / "archive" / "synthetic"
        starts = sorted(round(START + rng.random() * SPAN, 3) for _ in range(ROWS))
        began = time.perf_counter()
        for done in range(0, ROWS, BATCH):
            index.upsert_many((synthetic.meta(at), folder) for at in starts[done:done + BATCH])
            print(f"\r  loaded {min(done + BATCH, ROWS):,}/{ROWS:,}", end="", flush=True)
        print(f"\rindex: {ROWS:,} rows built in {time.perf_counter() - began:.0f} s")
        index.close()
        (work / "archive").mkdir(exist_ok=True)
        gateway = GatewayProcess(work, extra_config=f'\n[archive]\nindex = "{index_path}"\n'
                                                    f'dir = "{work / "archive"}"\n')
        # GatewayProcess writes its own [archive] table first: keep one, pointing at ours.
        text = gateway.config_path.read_text().replace(f'[archive]\ndir = "{work / "archive"}"\n', "", 1)
        gateway.config_path.write_text(text)
        began = time.perf_counter()
        gateway.start()
        startup = time.perf_counter() - began
        try:
            print(f"t38gw serve start-up with a {ROWS:,}-fax index: {startup:.2f} s to gateway_started "
                  "(process start, imports, index open, recovery of in-progress/recent rows, binds)")
            api = f"{gateway.api}/v1/faxes"
            with httpx.Client(timeout=30) as http:
                kinds = {
                    "no filter, first page of 100": lambda: {},
                    "date range (1 day)": lambda: {"since": archive.rfc3339(t := START + rng.random() * (SPAN - 86400)),
                                                   "until": archive.rfc3339(t + 86400)},
                    "caller, last 4 digits": lambda: {"caller": rng.choice(synthetic.numbers)[-4:]},
                    "q full text (a word)": lambda: {"q": rng.choice(synthetic.vocabulary)},
                }
                print(f"{'GET /v1/faxes (HTTP, loopback)':36} {'p50 ms':>8} {'p99 ms':>8}")
                for name, make in kinds.items():
                    samples = []
                    for _ in range(QUERIES):
                        params = make()
                        t0 = time.perf_counter()
                        response = http.get(api, params=params)
                        samples.append(time.perf_counter() - t0)
                        assert response.status_code == 200, response.text
                    p50, p99 = percentiles(samples)
                    print(f"{name:36} {p50:8.2f} {p99:8.2f}")
                samples = []
                cursor = http.get(api).json()["next_cursor"]
                for _ in range(QUERIES):
                    t0 = time.perf_counter()
                    page = http.get(api, params={"cursor": cursor}).json()
                    samples.append(time.perf_counter() - t0)
                    cursor = page["next_cursor"]
                p50, p99 = percentiles(samples)
                print(f"{'next page by cursor':36} {p50:8.2f} {p99:8.2f}")
        finally:
            gateway.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
