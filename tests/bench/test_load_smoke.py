"""CI check that the load bench still works (issue 14): bench/load.py with N=20 ECM calls.

The bench starts a real ``t38gw serve`` and bench/replayer.py in its own process on
127.0.0.1, replays the recorded SpanDSP sender 20 times, and compares every archived page
with the source page pixel by pixel.  Here its printed figures and its ``--json`` rows are
read back: all 20 answered, 20 pages identical, every T.30 turn answered, every MCF seen
and matched to a webhook POST, and the CPU/RSS/latency figures present and sane.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.realtime

CALLS = 20


def test_captures_are_what_the_bench_replays(testdata) -> None:
    """The vectors read back: libpcap UDP 40000 -> 40002, the datagram count and turns of the
    JSON, and the stored page is chart 1's top 2286 rows (what the recording sent)."""
    sys.path.insert(0, str(REPO))
    from bench.replayer import load_capture
    from tests.t38gw.t30.pages import chart_page
    from tools.record_t38_capture import PAGE_PATH, read_page_png

    assert read_page_png(PAGE_PATH) == (chart_page(1, 1728, max_rows=2286), 1728, 2286)
    for name, ecm in (("ecm_mmr", True), ("nonecm_mr", False)):
        capture = load_capture(name)
        assert capture.meta["ecm"] is ecm and capture.meta["bit_rate"] == 14400
        assert len(capture.datagrams) == capture.meta["datagrams"] > 400
        assert capture.offsets == sorted(capture.offsets) and 20 < capture.seconds < 40
        # At least TCF -> CFR and the page's end -> MCF.
        assert len(capture.turns) >= 2 and capture.turns[-1] > len(capture.datagrams) * 0.8
        raw = (REPO / "tests" / "vectors" / f"t38_{name}_sender.pcap").read_bytes()
        first_frame = raw[24 + 16:]
        ihl = (first_frame[14] & 0x0F) * 4
        assert struct.unpack_from("!HH", first_frame, 14 + ihl) == (40000, 40002)


def test_load_bench_20_ecm_calls(tmp_path, testdata) -> None:
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--calls", str(CALLS), "--mode", "ecm",
                          "--ramp", "2", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [row] = json.loads(out.read_text())["rows"]
    detail = json.dumps(row, indent=1)[:4000]
    assert row["answered"] == CALLS and row["refused_503"] == 0 and row["failed"] == 0, detail
    assert row["received"] == row["identical"] == CALLS, detail
    # Every call's two turns (TCF -> CFR, PPS-EOP -> MCF) were answered by the gateway.
    assert row["t30_samples"] == 2 * CALLS and row["unanswered_turns"] == 0, detail
    assert 0.001 < row["t30_p50"] <= row["t30_p99"] < 5.0, detail
    assert row["mcf_seen"] == row["webhook_samples"] == CALLS, detail
    # The webhook leaves when the gateway decides MCF to EOP (the record is finished then),
    # before the MCF's 1 s V.21 preamble has reached the sender: it may come first.
    assert -3.0 < row["webhook_p50"] <= row["webhook_p99"] < 30.0, detail
    assert 0 < row["cpu_per_fax"] < 5.0 and 0 < row["replayer_loop_cpu"], detail
    # The same-run reference (our cores alone, in-process) costs less than the whole service.
    assert 0 < row["engine_ref"] < row["cpu_per_fax"], detail
    # Every fax's webhook time from the gateway's log: from its last page confirmed to the
    # fax archived, and to the POST received.
    assert 0 <= row["archived_p50"] <= row["archived_p99"] < 30.0, detail
    assert 0 < row["posted_p50"] <= row["posted_p99"] < 30.0, detail
    assert row["rss_peak_kib"] > row["rss_idle_kib"] > 0, detail
    # The gateway's CPU split by the run's phases (INVITEs, page data, page ends): each
    # lasted, the three together used no more than the gateway did over the whole run.
    phases = row["cpu_phases"]
    assert list(phases) == ["invites", "pages", "page_ends"], detail
    assert all(seconds > 0 and used >= 0 for seconds, used in phases.values()), detail
    assert phases["pages"][0] > 10 and phases["pages"][1] > 0, detail  # ~20 s of page data
    assert sum(used for _, used in phases.values()) <= row["gw_cpu_total"] + 1.0, detail
    # The printed table carries the same figures.
    line = next(line for line in run.stdout.splitlines() if line.startswith("ecm_mmr") and f" {CALLS} " in line)
    assert f"{CALLS}/0/0" in line and f"{CALLS}/{CALLS}" in line, run.stdout
