"""Logs are one JSON object per line on stderr, including what libraries log via stdlib."""

import json
import subprocess
import sys

SCRIPT = """
import logging, structlog
from t38gw.logs import configure_logging
configure_logging()
structlog.contextvars.bind_contextvars(call_id="c1", fax_id="f1")
structlog.get_logger().info("page_confirmed", number=1)
logging.getLogger("hypercorn.error").warning("Running on %s", "127.0.0.1:8080")
logging.getLogger("pikepdf._core").info("pikepdf C++ to Python logger bridge initialized")
"""


def test_every_stderr_line_is_json_with_call_context():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    lines = result.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # fails on any non-JSON line
    assert events[0]["event"] == "page_confirmed" and events[0]["call_id"] == "c1" and events[0]["fax_id"] == "f1"
    assert events[1]["logger"] == "hypercorn.error" and events[1]["level"] == "warning"
    assert len(events) == 2  # pikepdf's INFO chatter is dropped
