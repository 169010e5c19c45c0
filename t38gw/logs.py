"""Logging set-up: structlog, configured once, JSON lines on stderr.

Per-call context (call_id, fax_id, ...) is bound with ``structlog.contextvars``
so that concurrent calls running in separate trio tasks never see each other's
context: trio copies the contextvars context into every task it spawns.

What a log line may not carry: credentials and query strings of URLs (webhook URLs
often hold a token) are replaced by ``***`` in every line, ours and the libraries';
httpx's per-request INFO line is dropped altogether.  With ``redact_numbers`` the
telephone numbers and fax idents of ``NUMBER_KEYS`` keep only their last 4 digits
(logs only: ``meta.json`` keeps them whole, it is the record).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal
from collections.abc import MutableMapping

import structlog

from t38gw.webhooks import redact_urls

LogFormat = Literal["json", "console"]

_configured = False

# Keys whose values are telephone numbers or T.30 idents of the parties (at any depth of
# a logged mapping, e.g. ``sip={"from": ...}``).  Our own ``local_ident`` is not a party's.
NUMBER_KEYS = frozenset({
    "did", "caller", "callee", "called", "calling", "number", "from", "to", "from_uri", "to_uri",
    "p_asserted_identity", "remote_ident", "tsi", "csi", "cig", "remote_number", "caller_number",
})
_URI_USER = re.compile(r"((?:sips?|tel):)([^@;>\s]*)", re.IGNORECASE)
_DIGIT = re.compile(r"[0-9]")


def mask_number(text: str, keep: int = 4) -> str:
    """``text`` with every digit but the last ``keep`` replaced by ``*``.

    In a SIP/tel URI or name-addr only the user part is masked, so the host stays readable:
    ``"Dr <sip:+15557654321@203.0.113.5>"`` -> ``"Dr <sip:+*******4321@203.0.113.5>"``.
    """
    if _URI_USER.search(text):
        return _URI_USER.sub(lambda m: m.group(1) + mask_number(m.group(2), keep), text)
    total = len(_DIGIT.findall(text))
    seen = 0

    def one(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return match.group(0) if seen > total - keep else "*"
    return _DIGIT.sub(one, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_number(value)
    if isinstance(value, (list, tuple)):
        return [_mask_value(v) for v in value]
    if isinstance(value, dict):
        return _mask_mapping(value)
    return value


def _mask_mapping(mapping: dict) -> dict:
    return {k: _mask_value(v) if k in NUMBER_KEYS else _mask_mapping(v) if isinstance(v, dict) else v
            for k, v in mapping.items()}


def redact_numbers_processor(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the values of ``NUMBER_KEYS`` (``[logs] redact_numbers``)."""
    for key, value in list(event_dict.items()):
        if key in NUMBER_KEYS:
            event_dict[key] = _mask_value(value)
        elif isinstance(value, dict):
            event_dict[key] = _mask_mapping(value)
    return event_dict


def redact_urls_processor(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no credentials or query strings of URLs in any string value."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact_urls(value)
    return event_dict


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured
    (a replaced or closed stream - a test's capture, a daemon's redirect - never breaks
    logging for the rest of the process)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_CURRENT_STDERR = _CurrentStderr()


def configure_logging(log_format: LogFormat = "json", level: str = "info", *, redact_numbers: bool = False) -> None:
    """Configure structlog (and the stdlib root logger) once per process.

    ``log_format`` "json" writes one JSON object per line on stderr; "console"
    writes coloured key=value lines for humans.  ``redact_numbers`` masks the
    parties' numbers and idents (``[logs] redact_numbers``).  Calling again reconfigures.
    """
    global _configured
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.types.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    elif log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        raise ValueError(f"unknown log format {log_format!r}")
    redaction: list[structlog.types.Processor] = [redact_urls_processor]
    if redact_numbers:
        redaction.append(redact_numbers_processor)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *redaction,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per line: `print` (PrintLogger) writes the event and its newline in two
        # system calls on Python's write-through stderr, and `t38gw serve`'s workers share
        # the supervisor's stderr - another process's line landed between the two (72
        # split lines in a 1,000-call load run).  A line in one write(2) is never split.
        logger_factory=structlog.WriteLoggerFactory(file=_CURRENT_STDERR),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the stdlib (hypercorn, httpx, pikepdf) go through the same
    # renderer, so stderr stays one JSON object per line.
    handler = logging.StreamHandler(_CURRENT_STDERR)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *redaction,
        ],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # pikepdf announces its logger bridge at INFO on first use; that is noise in a call log.
    logging.getLogger("pikepdf").setLevel(max(numeric_level, logging.WARNING))
    # httpx logs every request at INFO with the full URL (a webhook's credentials and query
    # string); our own webhook_* events say what happened without it.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    _configured = True


def get_logger(**initial_context: object) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger with ``initial_context`` bound."""
    return structlog.get_logger(**initial_context)
