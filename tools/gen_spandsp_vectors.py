"""Generate the SpanDSP IFP vectors in tests/vectors/spandsp_ifp/.

Runs SpanDSP T.38 terminal against SpanDSP T.38 terminal (tests.peers.spandsp.run_spandsp_fax)
over a perfect simulated link and writes every IFP either side emitted as one JSON line:

    {"t": 1.02, "dir": "sender->receiver", "seq": 5, "count": 3, "ifp": "<hex>",
     "decoded": [["indicator", 3]] | [["data", data_type, field_type, "<hex>"], ...]}

``decoded`` is what SpanDSP's own t38_core (same T.38 version) reported when fed the IFP:
the fields SpanDSP meant. Usage (from the repository root):

    .venv/bin/python tools/gen_spandsp_vectors.py [OUTPUT_DIR]

The output is deterministic: SpanDSP's T.30 and T.38 code use no clock or randomness when
driven in simulated time, so a rerun reproduces the SHA-256 sums in the README.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import testdata_dir  # noqa: E402
from tests.peers.spandsp import (  # noqa: E402
    T38_TERMINAL_OPTIONS,
    SpandspT38Core,
    make_fax_tiff,
    read_pbm,
    run_spandsp_fax,
)

# Short faxes: the top 400 rows (letterhead and first lines) of ITU-T T.24 chart 1.
PAGE_ROWS = 400
# Unpaced (T38_TERMINAL_OPTION_NO_PACING, SpanDSP's TCP mode) merges each HDLC frame's
# data with its FCS-OK / sig-end into one multi-field IFP and sends every packet once.
UNPACED = {"config": T38_TERMINAL_OPTIONS["NO_PACING"]}
CASES = [
    # name, T.38 version, ECM, compressions, terminal options (both sides)
    ("v0_ecm_mmr", 0, True, {"mmr"}, {}),
    ("v0_nonecm_mh", 0, False, {"mh"}, {}),
    ("v3_ecm_mmr", 3, True, {"mmr"}, {}),
    ("v3_nonecm_mr", 3, False, {"mr"}, {}),
    ("v0_ecm_mmr_unpaced", 0, True, {"mmr"}, UNPACED),
    ("v3_ecm_mmr_unpaced", 3, True, {"mmr"}, UNPACED),
]


def short_page() -> tuple[bytes, int, int]:
    chart = testdata_dir() / "itu_t24_charts" / "itu1.pbm.gz"
    bitmap, width, _ = read_pbm(gzip.decompress(chart.read_bytes()))
    stride = (width + 7) // 8
    return bitmap[: stride * PAGE_ROWS], width, PAGE_ROWS


def generate(output: Path) -> dict[str, str]:
    """Write one .jsonl per case into ``output``; return {file name: SHA-256}."""
    output.mkdir(parents=True, exist_ok=True)
    sums = {}
    with tempfile.TemporaryDirectory(prefix="t38gw-vectors-") as folder:
        tx_tiff = Path(folder) / "tx.tif"
        make_fax_tiff(tx_tiff, [short_page()])
        for name, version, ecm, compressions, options in CASES:
            run = run_spandsp_fax(tx_tiff, Path(folder) / f"{name}.tif", ecm=ecm, version=version,
                                  compressions=compressions, max_sim_seconds=300,
                                  sender_options=options, receiver_options=options)
            if not run.ok:
                raise SystemExit(f"{name}: SpanDSP fax failed: {run.sender_status}/{run.receiver_status}")
            lines = []
            decoders = {}
            try:
                for packet in run.trace:
                    decoder = decoders.setdefault(packet.direction, SpandspT38Core(version))
                    decoded = [
                        [item[0], *item[1:3], item[3].hex()] if item[0] == "data" else list(item)
                        for item in decoder.decode(packet.ifp, packet.seq)
                    ]
                    lines.append(json.dumps({
                        "t": round(packet.time, 3), "dir": packet.direction, "seq": packet.seq,
                        "count": packet.count, "ifp": packet.ifp.hex(), "decoded": decoded,
                    }, separators=(", ", ": ")))
            finally:
                for decoder in decoders.values():
                    decoder.close()
            data = ("\n".join(lines) + "\n").encode()
            (output / f"{name}.jsonl").write_bytes(data)
            sums[f"{name}.jsonl"] = hashlib.sha256(data).hexdigest()
            print(f"{name}.jsonl: {len(lines)} IFPs, {run.sim_seconds:.2f} s simulated, "
                  f"status {run.sender_status}/{run.receiver_status}, sha256 {sums[f'{name}.jsonl']}")
    return sums


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "vectors" / "spandsp_ifp"
    generate(target)
