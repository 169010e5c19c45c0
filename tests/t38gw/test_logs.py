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


REDACT_SCRIPT = """
import structlog, sys
from t38gw.logs import configure_logging
configure_logging(redact_numbers=sys.argv[1] == "on")
structlog.contextvars.bind_contextvars(call_id="c1", did="+15550100123")
structlog.get_logger().info("call_incoming", caller="sip:+15557654321@203.0.113.5:5060",
                            source="203.0.113.5:5060", trunk="carrier", fax_id="0190f3b2-aaaa-7bbb-8ccc-123456789012")
structlog.get_logger().info("t30_phase_b", remote_ident="+1 555 765 4321", local_ident="+1 555 0100", bit_rate=14400,
                            sip={"from": "<sip:5557654321@203.0.113.5>;tag=9", "did": "5550100123"})
"""


def run_script(script: str, *args: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stderr.splitlines()]


def test_redact_numbers_masks_all_but_the_last_4_digits():
    incoming, phase_b = run_script(REDACT_SCRIPT, "on")
    assert incoming["did"] == "+*******0123"
    assert incoming["caller"] == "sip:+*******4321@203.0.113.5:5060"  # the host stays readable
    assert incoming["source"] == "203.0.113.5:5060" and incoming["fax_id"].endswith("123456789012")
    assert phase_b["remote_ident"] == "+* *** *** 4321"
    assert phase_b["local_ident"] == "+1 555 0100" and phase_b["bit_rate"] == 14400  # ours / not a number of a party
    assert phase_b["sip"] == {"from": "<sip:******4321@203.0.113.5>;tag=9", "did": "******0123"}


def test_numbers_are_logged_whole_by_default():
    incoming, phase_b = run_script(REDACT_SCRIPT, "off")
    assert incoming["did"] == "+15550100123" and phase_b["remote_ident"] == "+1 555 765 4321"


HTTPX_SCRIPT = """
import sys, threading, logging, httpx, structlog
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from t38gw.logs import configure_logging

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
configure_logging(level=sys.argv[1])
url = f"http://hook-user:pw-SECRET-1@127.0.0.1:{server.server_address[1]}/fax?token=SECRET-2"
assert httpx.post(url, content=b"{}", timeout=10).status_code == 204
# A library line that does carry a URL is redacted too, and so is one of ours.
logging.getLogger("hypercorn.error").warning("could not reach %s", url)
structlog.get_logger().warning("webhook_attempt_failed", error=f"ConnectError: {url}")
server.shutdown()
"""


def test_webhook_urls_never_reach_the_log_with_credentials_or_query():
    for level in ("info", "debug"):
        result = subprocess.run([sys.executable, "-c", HTTPX_SCRIPT, level], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert "SECRET" not in result.stderr and "hook-user" not in result.stderr
        events = [json.loads(line) for line in result.stderr.splitlines()]
        assert not [e for e in events if e.get("logger") == "httpx"]  # the per-request INFO line is gone
        [library] = [e for e in events if e.get("logger") == "hypercorn.error"]
        assert library["event"].startswith("could not reach http://***@127.0.0.1:") and "/fax?***" in library["event"]
        [ours] = [e for e in events if e["event"] == "webhook_attempt_failed"]
        assert "/fax?***" in ours["error"]


SHARED_STDERR_SCRIPT = """
import structlog, sys
from t38gw.logs import configure_logging
configure_logging()
log = structlog.get_logger()
for number in range(int(sys.argv[1])):
    log.info("page_confirmed", worker=sys.argv[2], number=number, quality="GOOD")
"""


def test_workers_sharing_one_stderr_never_split_each_others_lines(tmp_path):
    """`t38gw serve` workers inherit the supervisor's stderr: a line must reach it in one
    write, or another process's line lands between an event and its newline."""
    lines_each = 4000
    path = tmp_path / "gateway.log"
    with open(path, "wb") as shared:
        workers = [subprocess.Popen([sys.executable, "-c", SHARED_STDERR_SCRIPT, str(lines_each), str(worker)],
                                    stderr=shared) for worker in range(3)]
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    events = [json.loads(line) for line in path.read_text().splitlines()]  # fails on a split line
    assert sorted((e["worker"], e["number"]) for e in events) == [
        (str(w), n) for w in range(3) for n in range(lines_each)]
