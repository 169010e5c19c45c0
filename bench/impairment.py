"""Fax success against UDPTL impairment, in simulated time (t38gw issue #14).

Each call is a whole fax between SpanDSP 0.0.6's T.38 terminal (tests/peers/spandsp.py)
and our T.30 engine, every IFP through our UDPTL sender, a seeded ``udptl.impairment``
model (one per direction, independent seeds) and our UDPTL receiver:

* ``receive``: SpanDSP sends (tests/t38gw/t30/harness.py ``run_call``), our ``T30Receiver``
  receives;
* ``transmit``: our ``T30Transmitter`` sends, SpanDSP receives and writes a TIFF.

The matrix: ECM / non-ECM x both directions x UDPTL error correction (redundancy 0-5 and
T.38 clause 9 parity FEC, span 3 x 3 entries) x path (random loss 0-20 %, Gilbert-Elliott
bursts of mean 2, 4 and 8 datagrams at 10 % long-run loss; and at no loss: duplication,
reordering, jitter), ``--seeds`` calls per cell, each a 1-3 page fax of random text-like
pages (1728 wide, 40-160 rows).  Loss applies to both directions of the call.

A call is ``ok`` when both ends report success (SpanDSP T30_ERR_OK, our engine OK) and
every source page arrived pixel-identical, in order; ``partial`` when it is not ok but
at least one page was confirmed (or, receiving, a rejected page's best copy was kept, as
the gateway archives it); ``failed`` otherwise.

The invariant (counted, printed, must be 0): every page confirmed is whole -

* receiving: each page our engine confirmed (MCF/RTP: ``PageReceived``) is
  pixel-identical to a source page (what the gateway archives);
* transmitting with ECM: each page SpanDSP confirmed to us (``PageSent.confirmed``)
  is in SpanDSP's TIFF pixel-identical.  Without ECM there is no retransmission, and
  SpanDSP may confirm a page with image data UDPTL lost (its own quality call): such
  pages are counted apart (``peer-kept damaged``), not as a violation of ours.

Run: ``.venv/bin/python bench/impairment.py`` (``--seeds 10``, ``--jobs 2``,
``--direction receive``, ``--ecm on``, ``--ec red3,fec``, ``--links loss10,ge4``,
``--verbose`` for every call's result).  One call: ``--only 'receive ecm red3 loss10 7'``
(direction, ecm|noecm, error correction, link, seed) prints its events.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from udptl.impairment import GilbertElliott, Impairment  # noqa: E402

MAX_SIM_SECONDS = 600.0
#: Transmitting: how long SpanDSP may stay in its call after our engine ended before the
#: gateway's BYE ends it (t30_terminate).
HANG_UP_AFTER = 15.0

ERROR_CORRECTIONS = ["red0", "red1", "red2", "red3", "red4", "red5", "fec"]
LOSS_LINKS = ["loss0", "loss1", "loss2", "loss5", "loss10", "loss15", "loss20", "ge2", "ge4", "ge8"]
#: At no loss: each must be 100 % (the receiver's reorder window and timer absorb them).
CLEAN_PATH_LINKS = ["dup10", "reorder5", "jitter30", "jitterexp20", "mixed"]
CLEAN_PATH_ERROR_CORRECTIONS = ["red0", "red3", "fec"]


def make_path(link: str, rng: random.Random) -> Impairment:
    """The impairment model named ``link``, drawing from ``rng``."""
    if link.startswith("loss"):
        return Impairment(rng, loss=int(link[4:]) / 100)
    if link.startswith("ge"):
        return Impairment(rng, burst_loss=GilbertElliott.from_mean_burst(int(link[2:]), 0.10))
    if link.startswith("burst"):  # burstNN: GE, mean burst 4, NN % long-run loss
        return Impairment(rng, burst_loss=GilbertElliott.from_mean_burst(4, int(link[5:]) / 100))
    if link == "dup10":
        return Impairment(rng, duplicate=0.10)
    if link == "reorder5":
        return Impairment(rng, reorder=0.05, reorder_positions=3)
    if link == "jitter30":
        return Impairment(rng, jitter=0.03)
    if link == "jitterexp20":
        return Impairment(rng, jitter=0.02, jitter_distribution="exponential")
    if link == "mixed":
        return Impairment(rng, duplicate=0.05, reorder=0.05, jitter=0.02, reorder_delay=0.06)
    raise ValueError(f"unknown link {link!r}")


def error_correction(name: str) -> tuple[int, bool]:
    """(redundancy depth, fec) for ``red<N>`` / ``fec``."""
    if name == "fec":
        return 0, True
    if name.startswith("red"):
        return int(name[3:]), False
    raise ValueError(f"unknown error correction {name!r}")


@dataclass(frozen=True)
class Cell:
    direction: str  # receive | transmit
    ecm: bool
    ec: str
    link: str

    @property
    def label(self) -> str:
        return f"{self.direction} {'ecm' if self.ecm else 'noecm'} {self.ec} {self.link}"


@dataclass
class CallResult:
    cell: Cell
    seed: int
    outcome: str  # ok | partial | failed
    pages: int
    confirmed: int
    violations: int = 0  # confirmed pages not pixel-identical (ours to keep whole)
    peer_kept_damaged: int = 0  # transmit non-ECM: SpanDSP confirmed a page UDPTL lost data of
    wrong_deliveries: int = 0  # UDPTL delivered an IFP under another's sequence number
    why: str = ""
    cpu: float = 0.0
    sim_seconds: float = 0.0
    detail: list[str] = field(default_factory=list)


def source_pages(seed: int) -> list[tuple[bytes, int, int]]:
    from tests.t38gw.t30.pages import random_page

    rng = random.Random(seed * 7919 + 1)
    count = 1 + seed % 3
    pages = []
    for _ in range(count):
        height = rng.randrange(40, 161)
        pages.append((random_page(rng, 1728, height), 1728, height))
    return pages


def _paths(cell: Cell, seed: int) -> tuple[Impairment, Impairment]:
    rng = random.Random(f"{cell.label} {seed}")
    return (make_path(cell.link, random.Random(rng.random())), make_path(cell.link, random.Random(rng.random())))


def run_receive(cell: Cell, seed: int, workdir: Path, *, verbose: bool = False) -> CallResult:
    """SpanDSP sends ``source_pages(seed)``, our engine receives."""
    from t38gw.t30 import PageReceived, PageRejected, T30Result
    from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal, make_fax_tiff
    from tests.t38gw.t30.harness import run_call

    pages = source_pages(seed)
    tiff = workdir / f"tx-{os.getpid()}-{seed}.tif"
    make_fax_tiff(tiff, pages, x_dpi=204, y_dpi=196)
    to_engine, to_sender = _paths(cell, seed)
    redundancy, fec = error_correction(cell.ec)
    compressions = frozenset({"mh", "mr", "mmr"} if cell.ecm else {"mh", "mr"})
    started = time.process_time()
    outcome = run_call(tiff, ecm=cell.ecm, compressions=compressions, seed=seed, to_engine=to_engine.transmit,
                       to_sender=to_sender.transmit, redundancy=redundancy, fec=fec, max_sim_seconds=MAX_SIM_SECONDS)
    cpu = time.process_time() - started
    tiff.unlink()
    sources = {bitmap for bitmap, _, _ in pages}
    confirmed = [e for e in outcome.events if isinstance(e, PageReceived)]
    kept_rejected = [e for e in outcome.events if isinstance(e, PageRejected) and e.bitmap is not None]
    violations = sum(1 for page in confirmed if page.bitmap not in sources)
    ended = outcome.call_ended
    whole = [page.bitmap for page in confirmed] == [bitmap for bitmap, _, _ in pages]
    ok = outcome.sender_status == T30_ERR_OK and ended is not None and ended.result is T30Result.OK and whole
    why = ""
    if not ok:
        spandsp = SpandspT38Terminal.completion_code_name(outcome.sender_status) \
            if outcome.sender_status is not None else "no phase E"
        why = f"engine {ended.result.value if ended else 'not ended'}, SpanDSP {spandsp}"
        if ended is not None and ended.result is T30Result.OK and not whole:
            why += f", {len(confirmed)}/{len(pages)} pages confirmed"
    detail = [repr(e) for e in outcome.events] if verbose else []
    return CallResult(cell, seed, "ok" if ok else ("partial" if confirmed or kept_rejected else "failed"),
                      len(pages), len(confirmed), violations, 0, outcome.wrong_deliveries, why, cpu,
                      outcome.sim_seconds, detail)


def run_transmit(cell: Cell, seed: int, workdir: Path, *, verbose: bool = False) -> CallResult:
    """Our engine sends ``source_pages(seed)``, SpanDSP receives: tests/interop/test_t30_transmit.py
    ``send_to_spandsp`` over this cell's paths, SpanDSP's call ended (BYE) once it is still going
    ``HANG_UP_AFTER`` s after ours."""
    import imaging
    from t38gw.t30 import CallEnded, T30Result
    from t38gw.t30.dcs import Compression
    from t38gw.t30.events import PageSent
    from t38gw.t30.transmitter import TransmitterConfig
    from tests.interop.test_t30_transmit import send_to_spandsp
    from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal

    pages = source_pages(seed)
    to_spandsp_path, to_engine_path = _paths(cell, seed)
    redundancy, fec = error_correction(cell.ec)
    compressions = frozenset(Compression) if cell.ecm else frozenset({Compression.MH, Compression.MR})
    config = TransmitterConfig(local_ident="+1 555 0199", ecm=cell.ecm, compressions=compressions)
    spandsp_log: list[str] = []

    def log(now: float, level: int, text: str) -> None:
        spandsp_log.append(f"{now:7.2f} SpanDSP {text}")

    outcome = send_to_spandsp(workdir, [imaging.Page(w, h, 204, 196, bitmap) for bitmap, w, h in pages],
                              config=config, redundancy=redundancy, fec=fec, seed=seed,
                              paths=(to_spandsp_path.transmit, to_engine_path.transmit),
                              max_sim_seconds=MAX_SIM_SECONDS, receiver_options={"ecm": cell.ecm},
                              hang_up_after=HANG_UP_AFTER, log=log if verbose else None)
    events, status, received = outcome.events, outcome.status, outcome.received
    received_bitmaps = [(bitmap, w, h) for bitmap, w, h, _, _ in received]
    confirmed_numbers = sorted({e.number for e in events if isinstance(e, PageSent) and e.confirmed})
    missing = [n for n in confirmed_numbers if pages[n - 1] not in received_bitmaps]
    violations = peer_kept_damaged = 0
    if cell.ecm or not outcome.unrecovered_to_spandsp:
        violations = len(missing)
    else:
        peer_kept_damaged = len(missing)
    ended_events = [e for e in events if isinstance(e, CallEnded)]
    ended = ended_events[-1] if ended_events else None
    whole = received_bitmaps == pages
    # The far end wrote every page whole and we ended OK.  SpanDSP 0.0.6 keeps a status it
    # set mid-call (e.g. "T2 expired" when it went back to phase B and the fax then went
    # on to the end): the pages it wrote are what counts.
    ok = ended is not None and ended.result is T30Result.OK and whole
    why = ""
    if not ok:
        spandsp_result = SpandspT38Terminal.completion_code_name(status) if status is not None else "no phase E"
        why = f"engine {ended.result.value if ended else 'not ended'}, SpanDSP {spandsp_result}"
        if outcome.hung_up:
            why += f" (SpanDSP still in its call {HANG_UP_AFTER:g} s after ours ended: BYE)"
        if status == T30_ERR_OK and not whole:
            why += f", {len(received)} pages written, {len(received) - len(set(received_bitmaps) - set(pages))} whole"
    detail = [repr(e) for e in events] + spandsp_log if verbose else []
    return CallResult(cell, seed, "ok" if ok else ("partial" if confirmed_numbers else "failed"), len(pages),
                      len(confirmed_numbers), violations, peer_kept_damaged,
                      outcome.wrong_deliveries, why, outcome.cpu, outcome.sim_seconds, detail)


def run_one(job: tuple[Cell, int, bool]) -> CallResult:
    cell, seed, verbose = job
    with tempfile.TemporaryDirectory(prefix="t38gw-impair-") as workdir:
        runner = run_receive if cell.direction == "receive" else run_transmit
        return runner(cell, seed, Path(workdir), verbose=verbose)


def cells(directions: Iterable[str], ecms: Iterable[bool], ecs: list[str], links: list[str],
          clean_links: list[str]) -> list[Cell]:
    out = []
    for direction, ecm in itertools.product(directions, ecms):
        out += [Cell(direction, ecm, ec, link) for ec in ecs for link in links]
        out += [Cell(direction, ecm, ec, link) for ec in ecs if ec in CLEAN_PATH_ERROR_CORRECTIONS
                for link in clean_links]
    return out


def run_matrix(jobs_wanted: list[tuple[Cell, int, bool]], processes: int,
               progress: Callable[[int, int], None] | None = None) -> list[CallResult]:
    results: list[CallResult] = []
    if processes <= 1:
        for index, job in enumerate(jobs_wanted):
            results.append(run_one(job))
            if progress:
                progress(index + 1, len(jobs_wanted))
        return results
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for index, result in enumerate(pool.imap_unordered(run_one, jobs_wanted, chunksize=4)):
            results.append(result)
            if progress:
                progress(index + 1, len(jobs_wanted))
    return results


def print_tables(results: list[CallResult], ecs: list[str], links: list[str]) -> None:
    by_cell: dict[Cell, list[CallResult]] = defaultdict(list)
    for result in results:
        by_cell[result.cell].append(result)
    groups = sorted({(c.direction, c.ecm) for c in by_cell}, key=lambda g: (g[0], not g[1]))
    for direction, ecm in groups:
        present_links = [link for link in links if any(Cell(direction, ecm, ec, link) in by_cell for ec in ecs)]
        print(f"\n## {direction}, {'ECM' if ecm else 'non-ECM'}: ok % (partial count) over seeds")
        print("| link | " + " | ".join(ecs) + " |")
        print("|---|" + "---|" * len(ecs))
        for link in present_links:
            row = []
            for ec in ecs:
                calls = by_cell.get(Cell(direction, ecm, ec, link))
                if not calls:
                    row.append("")
                    continue
                ok = sum(1 for c in calls if c.outcome == "ok")
                partial = sum(1 for c in calls if c.outcome == "partial")
                row.append(f"{100 * ok / len(calls):.0f}" + (f" ({partial}p)" if partial else ""))
            print(f"| {link} | " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="calls per cell (seeds 1..N)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--direction", choices=["receive", "transmit", "both"], default="both")
    parser.add_argument("--ecm", choices=["on", "off", "both"], default="both")
    parser.add_argument("--ec", default=",".join(ERROR_CORRECTIONS), help="comma-separated: red0..red5, fec")
    parser.add_argument("--links", default=",".join(LOSS_LINKS),
                        help="comma-separated: lossNN, geN (GE mean burst N at 10 %%), burstNN (GE burst 4 at NN %%)")
    parser.add_argument("--clean-links", default=",".join(CLEAN_PATH_LINKS),
                        help="no-loss cells (for red0, red3, fec); empty for none")
    parser.add_argument("--only", help="one call: 'direction ecm|noecm ec link seed'; prints its events")
    parser.add_argument("--verbose", action="store_true", help="every call's result line")
    args = parser.parse_args(argv)

    if args.only:
        direction, ecm_word, ec, link, seed = args.only.split()
        result = run_one((Cell(direction, ecm_word == "ecm", ec, link), int(seed), True))
        for line in result.detail:
            print(line)
        print(result)
        return 0

    directions = ["receive", "transmit"] if args.direction == "both" else [args.direction]
    ecms = {"on": [True], "off": [False], "both": [True, False]}[args.ecm]
    ecs = [e for e in args.ec.split(",") if e]
    links = [link for link in args.links.split(",") if link]
    clean_links = [link for link in args.clean_links.split(",") if link]
    matrix = cells(directions, ecms, ecs, links, clean_links)
    wanted = [(cell, seed, False) for cell in matrix for seed in range(1, args.seeds + 1)]
    # Interleave so that the slow (lossy) cells spread over the workers.
    random.Random(0).shuffle(wanted)
    print(f"{len(matrix)} cells x {args.seeds} seeds = {len(wanted)} calls, {args.jobs} process(es)", flush=True)

    wall = time.monotonic()
    cpu_start = os.times()
    last_report = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last_report[0] > 30 or done == total:
            last_report[0] = time.monotonic()
            print(f"  {done}/{total} calls, {time.monotonic() - wall:.0f} s", file=sys.stderr, flush=True)

    results = run_matrix(wanted, args.jobs, progress)
    cpu_end = os.times()
    cpu = (cpu_end.user - cpu_start.user + cpu_end.system - cpu_start.system
           + cpu_end.children_user - cpu_start.children_user + cpu_end.children_system - cpu_start.children_system)
    results.sort(key=lambda r: (r.cell.label, r.seed))

    print_tables(results, ecs, links + clean_links)
    violations = sum(r.violations for r in results)
    wrong = sum(r.wrong_deliveries for r in results)
    peer_damaged = sum(r.peer_kept_damaged for r in results)
    print(f"\ninvariant: confirmed pages not pixel-identical = {violations} (must be 0); "
          f"UDPTL wrong deliveries = {wrong} (must be 0)")
    print(f"transmit non-ECM: pages SpanDSP confirmed with image data lost in UDPTL (its call) = {peer_damaged}")
    for r in results:
        if r.violations or r.wrong_deliveries:
            print(f"  VIOLATION {r.cell.label} seed {r.seed}: {r.violations} pages, {r.wrong_deliveries} IFPs; {r.why}")
    reasons: Counter[tuple[str, str, str]] = Counter()
    for r in results:
        if r.outcome != "ok":
            reasons[(r.cell.direction, "ecm" if r.cell.ecm else "noecm", r.why)] += 1
    if reasons:
        print("\nwhy calls were not ok (direction, ECM, count):")
        for (direction, ecm_word, why), count in reasons.most_common(25):
            print(f"  {count:5d}  {direction} {ecm_word}: {why}")
    if args.verbose:
        for r in results:
            print(f"{r.cell.label} seed {r.seed}: {r.outcome} {r.confirmed}/{r.pages} {r.why} "
                  f"cpu {r.cpu:.3f} s sim {r.sim_seconds:.0f} s")
    call_cpu = sum(r.cpu for r in results)
    print(f"\n{len(results)} calls in {time.monotonic() - wall:.0f} s wall, {cpu:.0f} s CPU "
          f"({call_cpu / max(1, len(results)):.3f} s CPU per call inside the simulation; "
          f"mean simulated call {sum(r.sim_seconds for r in results) / max(1, len(results)):.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
