"""Logging set-up: structlog, configured once, JSON lines on stderr.

Per-call context (call_id, fax_id, ...) is bound with ``structlog.contextvars``
so that concurrent calls running in separate trio tasks never see each other's
context: trio copies the contextvars context into every task it spawns.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]

_configured = False


def configure_logging(log_format: LogFormat = "json", level: str = "info") -> None:
    """Configure structlog (and the stdlib root logger) once per process.

    ``log_format`` "json" writes one JSON object per line on stderr; "console"
    writes coloured key=value lines for humans.  Calling again reconfigures.
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the stdlib (hypercorn, httpx, pikepdf) go through the same
    # renderer, so stderr stays one JSON object per line.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # pikepdf announces its logger bridge at INFO on first use; that is noise in a call log.
    logging.getLogger("pikepdf").setLevel(max(numeric_level, logging.WARNING))
    _configured = True


def get_logger(**initial_context: object) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger with ``initial_context`` bound."""
    return structlog.get_logger(**initial_context)
