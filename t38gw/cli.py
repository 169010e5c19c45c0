"""Command line: ``t38gw serve | send | check-config | archive reindex|search|sweep|verify | audit verify|show``.

Exit codes (DESIGN.md): 0 ok, 2 usage or configuration error, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from t38gw import __version__
from t38gw.config import ConfigError, describe, load_config, redacted, to_toml
from t38gw.logs import configure_logging, get_logger

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t38gw", description="T.38 fax-over-IP gateway")
    parser.add_argument("--version", action="version", version=f"t38gw {__version__}")
    parser.add_argument("--log-format", choices=["json", "console"], default="json",
                        help="JSON lines on stderr (default) or human-readable console lines")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration (default: embedded defaults)")
    serve.add_argument("--worker", help=argparse.SUPPRESS)  # set by the supervisor (t38gw.workers)
    send = commands.add_parser("send", help="send a fax through the running gateway's API")
    send.add_argument("files", nargs="+", metavar="FILE", help="PDF, TIFF, PNG or JPEG documents, in page order")
    send.add_argument("--to", required=True, help="SIP URI or number")
    cover = send.add_mutually_exclusive_group()
    cover.add_argument("--cover", dest="cover", action="store_true", default=None,
                       help="add a cover page (default: the gateway's setting)")
    cover.add_argument("--no-cover", dest="cover", action="store_false", help="no cover page")
    send.add_argument("--note", metavar="TEXT", help="text for the cover page (implies --cover)")
    send.add_argument("--no-header", dest="header", action="store_false",
                      help="no header line (sender, date, page n/m) on the pages")
    send.add_argument("--webhook", metavar="NAME", help="the configured webhook to tell of the outcome")
    send.add_argument("--api", metavar="URL", help="the gateway's API (default: $T38GW_API, else http://127.0.0.1:8080)")
    send.add_argument("--token", metavar="T", help="API bearer token (default: $T38GW_TOKEN)")
    send.add_argument("--no-wait", action="store_true", help="print the fax id once accepted and exit 0")
    send.add_argument("--timeout", metavar="SECONDS", type=float, default=3600.0,
                      help="stop following after this long; the job continues in the gateway (default 3600)")
    check = commands.add_parser("check-config", help="validate a configuration file and print what it means")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--effective", action="store_true",
                       help="also print every key as TOML, defaults filled in and secrets as ***")
    from t38gw import archivecli

    archivecli.add_parser(commands)
    audit = commands.add_parser("audit", help="the audit trail: verify its hash chain, or show a fax's history")
    audit.add_argument("action", choices=["verify", "show"])
    audit.add_argument("--config", metavar="FILE", help="TOML configuration (default: embedded defaults)")
    audit.add_argument("--fax", metavar="ID", help="show: only the entries about this fax")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    configure_logging(args.log_format, args.log_level)
    log = get_logger()
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        return _check_config(args.file, effective=args.effective)
    if args.command == "serve":
        return _serve(args.config, args.log_format, args.log_level, worker=args.worker)
    if args.command == "audit":
        return _audit(args.action, args.config, args.fax)
    if args.command == "archive":
        from t38gw import archivecli

        return archivecli.run(args)
    if args.command == "send":
        from t38gw.sendcli import run_send

        return run_send(args)
    log.error("unknown_command", command=args.command)
    print(f"t38gw: unknown command {args.command!r}", file=sys.stderr)
    return EXIT_USAGE


PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make every file and folder this process creates private to its user; returns the old umask.

    Faxes, the spool and the audit log are patient data: 0600 files, 0700 folders
    (issue 9 item 4), whatever umask the service manager or shell handed us.
    """
    return os.umask(PRIVATE_UMASK)


def _serve(path: str | None, log_format: str = "json", log_level: str = "info", worker: str | None = None) -> int:
    """Validate the whole configuration first (naming the bad key), then run the gateway."""
    private_umask()  # before anything is created
    import trio

    from t38gw.gateway import serve, tune_interpreter

    try:
        config = load_config(path)
    except ConfigError as exc:
        get_logger().error("config_invalid", key=exc.key, problem=exc.problem, file=path or "(defaults)")
        print(f"t38gw: bad configuration in {path or 'the environment'}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(log_format, log_level, redact_numbers=config.logs.redact_numbers)
    from t38gw import workers

    tune_interpreter()  # every gateway process: the supervisor and each worker

    try:
        if worker is not None:
            role = workers.role_from_argument(worker)
            import structlog

            structlog.contextvars.bind_contextvars(worker=role.index)  # on every line of this process
            return trio.run(serve, config, role)
        if config.server.workers > 1:
            return trio.run(workers.supervise, config, path, ["--log-format", log_format, "--log-level", log_level])
        return trio.run(serve, config)
    except KeyboardInterrupt:
        return EXIT_OK


def _audit(action: str, path: str | None, fax_id: str | None) -> int:
    """``audit verify``: 0 if every line chains to the one before, 1 otherwise.
    ``audit show [--fax ID]``: the entries (about that fax) as JSON lines on stdout."""
    from t38gw.audit import history, iter_trail, verify_trail

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"t38gw: bad configuration in {path or 'the environment'}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log_path = config.archive.audit_log
    try:
        if action == "verify":
            result = verify_trail(log_path)
            for problem in result.problems:
                print(f"{log_path}: {problem}", file=sys.stderr)
            if result.first_broken is not None:
                file, line = result.first_broken
                print(f"{file}: line {line} does not chain to the line before it: the trail was edited, "
                      f"reordered or lines or files were removed ({result.lines} lines in "
                      f"{len(result.files)} file(s))", file=sys.stderr)
                return EXIT_RUNTIME
            print(f"{log_path}: {result.lines} entries in {len(result.files)} file(s), hash chain intact")
            return EXIT_OK
        if fax_id is not None:
            import json

            for entry in history(log_path, fax_id):
                print(json.dumps(entry, separators=(",", ":")))
            return EXIT_OK
        for line in iter_trail(log_path):
            print(line.raw.decode("utf-8", "replace"))
        return EXIT_OK
    except OSError as exc:
        print(f"t38gw: cannot read the audit log {log_path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME


def _check_config(path: str, quiet: bool = False, effective: bool = False) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        get_logger().error("config_invalid", key=exc.key, problem=exc.problem, file=path)
        print(f"t38gw: bad configuration in {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not quiet:
        print(f"{path}: OK")
        print(describe(config))
    if effective:
        print("\n# effective configuration (defaults filled in, secrets ***)")
        print(to_toml(redacted(config)), end="")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
