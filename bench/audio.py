"""CPU per audio call-second: G.711 <-> SpanDSP t38_gateway <-> our T.30 engine.

Whole faxes in simulated time (tests/peers/spandsp_audio.py): a SpanDSP audio fax terminal
sends to our ``T30Receiver`` and receives from our ``T30Transmitter`` through
``AudioFaxGateway``.  Only the chain's own calls are timed (process CPU): G.711 decode and
encode, ``t38_gateway_rx/rx_fillin/tx``, the IFP codec and our engine - not the far-end
terminal, which in production is someone else's fax machine.  The cost is divided by the
simulated call length (every 20 ms of call costs one block each way whether or not a
carrier is on), best of ``--repeat`` runs.

Then the memory of one gateway state: VmRSS (/proc/self/status) before and after creating
100 ``AudioFaxGateway`` objects.

Run: ``.venv/bin/python bench/audio.py`` (``--repeat N``, ``--pages N``).  No assertions.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import imaging  # noqa: E402
from t38gw.audiofax import AudioFaxGateway  # noqa: E402
from t38gw.t30 import TransmitterConfig  # noqa: E402
from tests.peers.spandsp import make_fax_tiff  # noqa: E402
from tests.peers.spandsp_audio import run_audio_fax  # noqa: E402
from tests.t38gw.t30.pages import random_page  # noqa: E402

CASES = [
    # (direction, ecm, modem)
    ("receive", True, "V.17"),
    ("receive", False, "V.17"),
    ("receive", True, "V.29"),
    ("receive", True, "V.27ter"),
    ("send", True, "V.17"),
    ("send", True, "V.29"),
    ("send", False, "V.29"),
]


def vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def pages_for(count: int) -> list[imaging.Page]:
    rng = random.Random(5)
    # Letter-like text density at fine resolution, 400 rows (~ a fifth of an A4 page).
    return [imaging.Page(1728, 400, 204, 196, random_page(rng, 1728, 400)) for _ in range(count)]


def one_run(folder: Path, direction: str, ecm: bool, modem: str, pages: list[imaging.Page]):
    options = dict(ecm=ecm, spandsp_modems=frozenset({modem}), measure_cpu=True, law="alaw")
    if direction == "receive":
        tiff = folder / "tx.tif"
        make_fax_tiff(tiff, [(p.bitmap, p.width, p.height) for p in pages])
        return run_audio_fax(folder, direction="receive", pages_tiff=tiff, **options)
    config = TransmitterConfig(local_ident="+1 555 0199", ecm=ecm)
    return run_audio_fax(folder, direction="send", pages=pages, transmitter_config=config, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=2)
    args = parser.parse_args()
    pages = pages_for(args.pages)
    print(f"{args.pages} page(s) of 1728x400 per fax, best of {args.repeat}; chain = G.711 + t38_gateway + engine")
    print(f"{'direction':9} {'mode':7} {'modem':8} {'result':7} {'call s':>7} {'chain CPU ms':>13} "
          f"{'CPU/call-s':>11} {'calls/core':>10}")
    totals = [0.0, 0.0]
    with tempfile.TemporaryDirectory(prefix="t38gw-bench-audio-") as folder:
        for direction, ecm, modem in CASES:
            best = None
            for _ in range(args.repeat):
                run = one_run(Path(folder), direction, ecm, modem, pages)
                if best is None or run.chain_cpu_seconds < best.chain_cpu_seconds:
                    best = run
            assert best is not None
            ok = "OK" if best.ended is not None and best.ended.result.value == "OK" else "FAIL"
            per_second = best.chain_cpu_seconds / best.sim_seconds
            totals[0] += best.chain_cpu_seconds
            totals[1] += best.sim_seconds
            print(f"{direction:9} {'ECM' if ecm else 'non-ECM':7} {modem:8} {ok:7} {best.sim_seconds:7.1f} "
                  f"{best.chain_cpu_seconds * 1000:13.1f} {per_second * 1000:9.2f}ms {1 / per_second:10.0f}")
    overall = totals[0] / totals[1]
    print(f"all cases: {overall * 1000:.2f} ms CPU per call-second -> one core carries ~{1 / overall:.0f} "
          "concurrent audio calls (chain only; RTP/jitter buffer/trio not included)")

    count = 100
    before = vm_rss_kib()
    gateways = [AudioFaxGateway(law="ulaw") for _ in range(count)]
    after = vm_rss_kib()
    print(f"RSS: {count} AudioFaxGateway states add {after - before} KiB "
          f"= {(after - before) / count:.1f} KiB each (VmRSS {before} -> {after} KiB)")
    for gateway in gateways:
        gateway.close()


if __name__ == "__main__":
    main()
