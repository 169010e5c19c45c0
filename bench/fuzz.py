"""The long fuzz run (t38gw issue #14), outside CI: a fast mutation loop over real seeds.

    .venv/bin/python bench/fuzz.py --target all --inputs 1000000          # every target in turn
    .venv/bin/python bench/fuzz.py --target sip --seconds 60 --seed 7
    .venv/bin/python bench/fuzz.py --target udptl --atheris --inputs 200000  # coverage-guided

Targets and their seeds are in tests/fuzz/__init__.py (shared with the Hypothesis tests):
sip, sip_ua, sdp, udptl, t30, rtp, t4, wholepage.  Each input is a few byte-level edits
of a seed (or of an earlier input the target accepted; a crude stand-in for coverage
feedback) drawn from a seeded RNG, so a run is reproducible from ``--seed``.

"No crash": an exception the target does not document is a bug; "no hang": an input
slower than ``PER_INPUT_SECONDS`` is one; both are saved under ``--crashes``
(<target>/<kind>-<crc>-<len>.bin, the traceback beside it), one per distinct place.
"Bounded memory": every ``--memory-every``-th input (and every input over 16 KiB) runs
under tracemalloc; the peak and the worst peak per input octet are reported, and an input
whose peak passes ``--memory-limit`` plus the target's allowance per input octet (256;
the decoders more, they make a row per input bit) is saved as well.

The report: inputs, inputs/s, documented errors by type, bugs by type, the slowest input
and its size, the tracemalloc peaks, and the process's maximum RSS.  ``--json`` writes it
as JSON too.  Run it niced (``nice -n 10``): it takes one core.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import traceback
import tracemalloc
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz import PER_INPUT_SECONDS, TARGETS, FuzzFailure, Target, input_id, mutate  # noqa: E402

DEFAULT_CRASHES = Path("/tmp/t38gw-fuzz-crashes")
_KEEP_ACCEPTED = 2000  # accepted inputs kept as extra mutation bases
# Only small ones: kept big inputs breed big inputs, and the decoders' cost is per bit
# (growth to tens of KiB still happens in every mutation, now and then).
_KEEP_ACCEPTED_OCTETS = 4096


def _where(exc: BaseException) -> str:
    """The innermost frame of ``exc`` in our code: what makes two crashes the same bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if str(REPO) in f.filename and "/.venv/" not in f.filename] or frames
    last = ours[-1] if ours else None
    return f"{Path(last.filename).name}:{last.lineno}" if last else "?"


def _save(crashes: Path, target: str, kind: str, data: bytes, text: str) -> Path:
    folder = crashes / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{input_id(data)}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(text)
    return path


def _timed(run: object, data: bytes) -> float:
    start = time.perf_counter()
    try:
        run(data)  # type: ignore[operator]
    except Exception:
        pass
    return time.perf_counter() - start


def fuzz_target(target: Target, *, inputs: int, seconds: float | None, seed: int, crashes: Path,
                memory_every: int, memory_limit: int, progress: bool) -> dict[str, object]:
    rng = random.Random(f"{seed}:{target.name}")
    seeds = list(target.seeds())
    accepted: list[bytes] = []
    documented: Counter[str] = Counter()
    bugs: Counter[str] = Counter()
    bug_places: dict[str, str] = {}
    saved: list[str] = []
    slowest = (0.0, 0)
    slowest_input = b""
    peak_max = (0, 0)
    peak_ratio = (0.0, 0)
    hangs = 0
    memory_outliers = 0
    total_octets = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds else None
    last_report = start
    done = 0
    run, allowed = target.run, target.allowed
    clock = time.perf_counter
    # Seeds first, as they are; then mutants.
    plan = iter(seeds)
    while done < inputs:
        data = next(plan, None)
        if data is None:
            base = rng.choice(accepted) if accepted and rng.random() < 0.3 else rng.choice(seeds)
            data = mutate(rng, base, seeds, target.tokens, target.max_input)
        total_octets += len(data)
        measure = memory_every > 0 and (done % memory_every == 0 or (len(data) > 16384 and done % 10 == 0))
        if measure:
            tracemalloc.start()
        t0 = clock()
        failure: BaseException | None = None
        ok = False
        try:
            run(data)
            ok = True
        except allowed as exc:
            documented[type(exc).__name__] += 1
        except Exception as exc:  # the finding this loop is for
            failure = exc
        elapsed = clock() - t0
        if measure:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            if peak > peak_max[0]:
                peak_max = (peak, len(data))
            ratio = peak / (len(data) + 1)
            if ratio > peak_ratio[0] and len(data) >= 64:
                peak_ratio = (ratio, len(data))
            if peak > memory_limit + target.memory_per_octet * len(data):
                memory_outliers += 1
                if memory_outliers <= 5:
                    saved.append(str(_save(crashes, target.name, "memory", data,
                                           f"tracemalloc peak {peak} octets for {len(data)} input octets\n")))
        done += 1
        if ok and len(data) <= _KEEP_ACCEPTED_OCTETS and len(accepted) < _KEEP_ACCEPTED and rng.random() < 0.05:
            accepted.append(data)
        if elapsed > PER_INPUT_SECONDS or measure:
            # Timed under tracemalloc (several times slower) or on a busy machine: time it
            # again untraced, the best of two, before calling it slow.
            elapsed = min(_timed(run, data) for _ in range(2 if elapsed > PER_INPUT_SECONDS else 1))
        if elapsed > slowest[0]:
            slowest, slowest_input = (elapsed, len(data)), data
        if elapsed > PER_INPUT_SECONDS:
            hangs += 1
            if hangs <= 5:
                saved.append(str(_save(crashes, target.name, "slow", data, f"{elapsed:.3f} s for {len(data)} octets\n")))
        if failure is not None:
            kind = type(failure).__name__
            bugs[kind] += 1
            place = f"{kind}@{_where(failure)}"
            if isinstance(failure, FuzzFailure):
                place += f" {str(failure)[:40]}"  # one check raises for several different findings
            if place not in bug_places:
                text = "".join(traceback.format_exception(failure))
                bug_places[place] = str(_save(crashes, target.name, kind, data, text))
                saved.append(bug_places[place])
                print(f"[{target.name}] {place}: {str(failure)[:200]!r} -> {bug_places[place]}", flush=True)
        now = clock()
        if progress and now - last_report > 30:
            last_report = now
            print(f"[{target.name}] {done} inputs, {done / (now - start):.0f}/s, bugs {dict(bugs)}", flush=True)
        if deadline is not None and now > deadline:
            break
    elapsed = clock() - start
    # The slowest input once more, three times: a GC pause or a busy machine is not the
    # parser's doing, a slow path is.
    retimed = [_timed(run, slowest_input) for _ in range(3)]
    return {
        "target": target.name,
        "inputs": done,
        "seconds": round(elapsed, 1),
        "inputs_per_s": round(done / elapsed),
        "mean_input_octets": round(total_octets / max(done, 1)),
        "documented_errors": dict(documented.most_common()),
        "bugs": dict(bugs),
        "bug_places": bug_places,
        "slowest_s": round(slowest[0], 4),
        "slowest_input_octets": slowest[1],
        "slowest_retimed_s": round(min(retimed), 4),
        "slow_inputs": hangs,
        "tracemalloc_peak_max": {"octets": peak_max[0], "input_octets": peak_max[1]},
        "tracemalloc_peak_per_input_octet_max": {"ratio": round(peak_ratio[0], 1), "input_octets": peak_ratio[1]},
        "memory_outliers": memory_outliers,
        "saved": saved,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_atheris(target: Target, *, inputs: int, seconds: float | None, crashes: Path) -> None:
    """Coverage-guided (libFuzzer via atheris) run of one target; exits when done."""
    import tempfile

    import atheris

    corpus = Path(tempfile.mkdtemp(prefix=f"t38gw-fuzz-{target.name}-"))
    for n, seed in enumerate(target.seeds()):
        (corpus / f"seed{n:04d}").write_bytes(seed)
    folder = crashes / target.name
    folder.mkdir(parents=True, exist_ok=True)
    run, allowed = target.run, target.allowed

    def one_input(data: bytes) -> None:
        try:
            run(data)
        except allowed:
            pass

    atheris.instrument_all()
    args = [sys.argv[0], str(corpus), f"-runs={inputs}", f"-artifact_prefix={folder}/", f"-max_len={target.max_input}",
            f"-timeout={max(1, int(PER_INPUT_SECONDS * 5))}", "-rss_limit_mb=2048", "-print_final_stats=1"]
    if seconds:
        args.append(f"-max_total_time={int(seconds)}")
    print(f"[{target.name}] atheris corpus {corpus}", flush=True)
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="all", help=f"one of {', '.join(TARGETS)}, or all")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seconds", type=float, default=None, help="time budget per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crashes", type=Path, default=DEFAULT_CRASHES)
    parser.add_argument("--memory-every", type=int, default=1000, help="tracemalloc every N-th input (0: never)")
    parser.add_argument("--memory-limit", type=int, default=8 << 20, help="peak allowed besides the target's allowance per input octet")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided run of one target with atheris")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    names = list(TARGETS) if args.target == "all" else args.target.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    if args.atheris:
        if len(names) != 1:
            parser.error("--atheris runs one target")
        run_atheris(TARGETS[names[0]], inputs=args.inputs, seconds=args.seconds, crashes=args.crashes)
        return 0
    reports = []
    for name in names:
        report = fuzz_target(TARGETS[name], inputs=args.inputs, seconds=args.seconds, seed=args.seed,
                             crashes=args.crashes, memory_every=args.memory_every, memory_limit=args.memory_limit,
                             progress=not args.quiet)
        reports.append(report)
        print(f"{name:10s} {report['inputs']:>9} inputs {report['seconds']:>8} s {report['inputs_per_s']:>7}/s  "
              f"bugs {report['bugs'] or 0}  slowest {report['slowest_s']} s ({report['slowest_input_octets']} B, "
              f"re-timed {report['slowest_retimed_s']} s)  "
              f"peak {report['tracemalloc_peak_max']}  errors {report['documented_errors']}", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(reports, indent=1))
    return 1 if any(r["bugs"] or r["slow_inputs"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
