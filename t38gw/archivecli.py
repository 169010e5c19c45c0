"""``t38gw archive reindex | search | sweep | verify`` (issue 15): the archive from a shell.

Every command takes ``--config FILE`` to find the archive, its index and the spool, as
``serve`` does, and can run while the gateway runs (SQLite serialises the writers; the
sweep re-reads each meta.json before it deletes anything).

Exit codes (t38gw.cli): 0 ok, 1 a problem found or a runtime failure (``verify`` found a
damaged fax, the index cannot be written), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from t38gw import archive
from t38gw.config import Config, ConfigError, load_config
from t38gw.index import ArchiveIndex, ArchiveIndexError, IndexQueryError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
SEARCH_COLUMNS = (("started_at", 24), ("direction", 8), ("status", 8), ("caller", 16), ("did", 14),
                  ("remote_ident", 20), ("pages", 5), ("id", 36))


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("archive", help="the fax archive: rebuild its index, search, retention, integrity")
    actions = parser.add_subparsers(dest="archive_action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML configuration (default: embedded defaults)")
    actions.add_parser("reindex", parents=[common], help="rebuild the search index from the archive's folders")
    search = actions.add_parser("search", parents=[common], help="find faxes (newest first), as GET /v1/faxes")
    for name in ("since", "until", "status", "direction", "caller", "did", "remote_ident", "route", "q"):
        search.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper())
    search.add_argument("--limit", type=int, default=50, help="rows to show (1-1000, default 50)")
    search.add_argument("--cursor", help="the next page: the cursor printed under the last one")
    sweep = actions.add_parser("sweep", parents=[common],
                               help="delete faxes older than [retention] keep_days (held ones never)")
    sweep.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    verify = actions.add_parser("verify", parents=[common],
                                help="re-hash every page against meta.json (bit rot, tampering)")
    verify.add_argument("--since", help="only faxes started since this date/time (RFC 3339 or YYYY-MM-DD)")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"t38gw: bad configuration in {args.config or 'the environment'}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        index = ArchiveIndex(config.archive.index)
    except ArchiveIndexError as exc:
        print(f"t38gw: cannot open the archive index {config.archive.index}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        action = args.archive_action
        if action == "reindex":
            return _reindex(config, index)
        if action == "search":
            return _search(index, args)
        if action == "sweep":
            return _sweep(config, index, dry_run=args.dry_run)
        return _verify(index, config, args.since)
    except ArchiveIndexError as exc:
        print(f"t38gw: the archive index failed: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        index.close()


def _reindex(config: Config, index: ArchiveIndex) -> int:
    root = Path(config.archive.dir)
    total = sum(1 for _ in archive.iter_faxes(root))
    started = time.monotonic()
    interactive = sys.stderr.isatty()

    def progress(done: int) -> None:
        if interactive or done == total:
            width = 30
            filled = width * done // max(total, 1)
            print(f"\rreindex [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr)

    count = index.rebuild(root, progress)
    print(file=sys.stderr)
    seconds = time.monotonic() - started
    print(f"{count} faxes indexed from {root} in {seconds:.1f} s ({count / max(seconds, 1e-9):,.0f}/s)")
    return EXIT_OK


def _search(index: ArchiveIndex, args: argparse.Namespace) -> int:
    filters = {name: getattr(args, name) for name in ("since", "until", "status", "direction", "caller", "did",
                                                       "remote_ident", "route", "q", "cursor")
               if getattr(args, name) is not None}
    try:
        rows, next_cursor = index.search(limit=args.limit, **filters)
    except IndexQueryError as exc:
        print(f"t38gw: --{exc.param.replace('_', '-')}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    print("  ".join(name.ljust(width) for name, width in SEARCH_COLUMNS).rstrip())
    for row in rows:
        print("  ".join(str(row.get(name) or "")[:width].ljust(width) for name, width in SEARCH_COLUMNS).rstrip())
    print(f"({len(rows)} fax{'es' if len(rows) != 1 else ''}"
          + (f"; more: --cursor {next_cursor})" if next_cursor else ")"))
    return EXIT_OK


def _sweep(config: Config, index: ArchiveIndex, *, dry_run: bool) -> int:
    from t38gw import retention

    keep_days = config.retention.keep_days
    if keep_days == 0:
        print("[retention] keep_days = 0: faxes are kept forever; nothing to sweep")
        return EXIT_OK
    now = time.time()
    candidates = index.expired_candidates(cutoff=now - keep_days * 86400.0)
    items = retention.sweep(candidates, keep_days=keep_days, now=now, dry_run=dry_run,
                            delete_spool=lambda fax_id: retention.delete_spool_rows(config.spool, fax_id),
                            on_deleted=lambda fax_id, meta: index.delete(fax_id))
    deleted = [item for item in items if item.deleted]
    for item in items:
        verb = "would delete" if dry_run and not item.skipped else ("deleted" if item.deleted else "kept")
        why = f" ({item.skipped})" if item.skipped else ""
        print(f"{verb}  {item.fax_id}  ended {item.ended_at}{why}")
    would = len([item for item in items if not item.skipped])
    print(f"{would if dry_run else len(deleted)} fax(es) {'would be ' if dry_run else ''}deleted "
          f"(kept {keep_days} days)")
    return EXIT_OK


def _verify(index: ArchiveIndex, config: Config, since: str | None) -> int:
    from t38gw import integrity

    try:
        folders: list[Path] = []
        cursor = None
        while True:
            rows, cursor = index.search(since=since, limit=1000, cursor=cursor)
            folders += [folder for row in rows if (folder := index.get_folder(row["id"])) is not None]
            if cursor is None:
                break
    except IndexQueryError as exc:
        print(f"t38gw: --{exc.param}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    damaged = 0
    for fax_id, problems in integrity.verify_archive(folders):
        if problems:
            damaged += 1
            for problem in problems:
                print(f"{fax_id}: {problem}")
    print(f"{len(folders)} fax(es) checked, {damaged} with problems")
    return EXIT_RUNTIME if damaged else EXIT_OK
