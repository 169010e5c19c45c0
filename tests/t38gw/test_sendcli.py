"""``t38gw send`` against a real HTTP server on loopback that plays the gateway's API.

The server (http.server in a thread) implements ``POST /v1/faxes`` and ``GET /v1/faxes/{id}``
as the API contract says, answering each GET with the next record of a script. The multipart
body the CLI sent is parsed with the standard library's email parser, not with httpx, so the
test checks the bytes on the wire rather than the client's own idea of them.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from t38gw import sendcli
from t38gw.cli import main

from tests.conftest import REPO

TOKEN = "api-token-" + "c3" * 16
FAX_ID = "0190f3b2-aaaa-7bbb-8ccc-0000000000f1"
PDF_BYTES = b"%PDF-1.4\n% two pages of a referral\n" + bytes(range(256)) + b"\n%%EOF\n"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(255, -1, -1))


@dataclass
class ReceivedPost:
    headers: dict[str, str]
    fields: dict[str, str]
    files: list[tuple[str, str, bytes]]  # (filename, content type, bytes) in order


@dataclass
class FakeGateway:
    """What the API answers: a scripted job, or a refusal."""
    script: list[dict[str, Any]] = field(default_factory=list)
    refuse: tuple[int, dict[str, str]] | None = None
    posts: list[ReceivedPost] = field(default_factory=list)
    gets: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_record(self) -> dict[str, Any]:
        with self.lock:
            self.gets += 1
            record = self.script[0] if len(self.script) == 1 else self.script.pop(0)
        return {"id": FAX_ID, "direction": "outbound", "to": "5550100", "reason": "", "attempts": [], **record}


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert message.is_multipart(), content_type
    fields: dict[str, str] = {}
    files = []
    for part in message.iter_parts():
        assert part.get_content_disposition() == "form-data"
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if name == "file":
            files.append((part.get_filename(), part.get_content_type(), payload))
        else:
            assert name not in fields, f"field {name} sent twice"
            fields[name] = payload.decode()
    return fields, files


def handler_for(gateway: FakeGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.answer(401, {"error": "unauthorized", "detail": "a valid bearer token is required"})
                return False
            return True

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not self.authorised():
                return
            if self.path != "/v1/faxes":
                self.answer(404, {"error": "not_found", "detail": self.path})
                return
            fields, files = parse_multipart(self.headers["Content-Type"], body)
            gateway.posts.append(ReceivedPost(dict(self.headers.items()), fields, files))
            if gateway.refuse is not None:
                self.answer(*gateway.refuse)
                return
            self.answer(202, {"id": FAX_ID})

        def do_GET(self) -> None:  # noqa: N802
            if not self.authorised():
                return
            if self.path != f"/v1/faxes/{FAX_ID}":
                self.answer(404, {"error": "not_found", "detail": "no such fax"})
                return
            self.answer(200, gateway.next_record())

    return Handler


@pytest.fixture
def gateway() -> Iterator[tuple[FakeGateway, str]]:
    fake = FakeGateway()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(fake))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sendcli, "POLL_INTERVAL_S", 0.02)
    monkeypatch.delenv("T38GW_API", raising=False)
    monkeypatch.delenv("T38GW_TOKEN", raising=False)


@pytest.fixture
def documents(tmp_path: Path) -> tuple[Path, Path]:
    pdf = tmp_path / "referral.pdf"
    pdf.write_bytes(PDF_BYTES)
    png = tmp_path / "Scan 2.PNG"
    png.write_bytes(PNG_BYTES)
    return pdf, png


def attempt(number: int = 1, ended: bool = False, **extra: Any) -> dict[str, Any]:
    # As the gateway writes it: ``number`` counts attempts; the record's ``to`` is dialled.
    return {"number": number, "started_at": "2026-12-06T04:40:00Z",
            "ended_at": "2026-12-06T04:40:30Z" if ended else None, "outcome": None, "cause": None,
            "reason": "", "sip_status": None, "pages_sent": 0, **extra}


def not_logs(text: str) -> list[str]:
    """The human lines of a stream, leaving out JSON log lines."""
    return [line for line in text.splitlines() if line and not line.startswith("{")]


SENT_SCRIPT = [
    {"status": "queued", "pages_total": 2},
    {"status": "dialing", "pages_total": 2, "attempts": [attempt()]},
    {"status": "sending", "pages_sent": 0, "pages_total": 2, "attempts": [attempt()]},
    {"status": "sending", "pages_sent": 0, "pages_total": 2, "attempts": [attempt()]},  # unchanged: no new line
    {"status": "sending", "pages_sent": 1, "pages_total": 2, "attempts": [attempt()]},
    {"status": "sent", "pages_sent": 2, "pages_total": 2, "attempts": [attempt(ended=True, outcome="sent")]},
]


def test_send_follows_the_job_to_sent_and_posts_the_files(gateway, documents, capsys):
    fake, api = gateway
    fake.script = list(SENT_SCRIPT)
    pdf, png = documents
    code = main(["send", str(pdf), str(png), "--to", "5550100", "--api", api, "--token", TOKEN])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not_logs(out) == [
        f"queued: {FAX_ID} (2 pages)",
        "dialing 5550100 (attempt 1)",
        "sending: page 1/2",
        "sending: page 2/2",
        "sent: 2 pages to 5550100",
    ]
    assert not_logs(err) == []
    [post] = fake.posts
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.fields == {"to": "5550100"}  # cover and header left to the gateway's defaults
    assert post.files == [("referral.pdf", "application/pdf", PDF_BYTES), ("Scan 2.PNG", "image/png", PNG_BYTES)]
    assert fake.gets == len(SENT_SCRIPT)


def test_cover_note_header_and_webhook_fields(gateway, documents, capsys):
    fake, api = gateway
    fake.script = [{"status": "sent", "pages_sent": 3, "pages_total": 3}]
    code = main(["send", str(documents[0]), "--to", "sip:+15550100@pbx.example.org", "--note", "Urgent: héllo",
                 "--no-header", "--webhook", "ehr", "--api", api + "/", "--token", TOKEN])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not_logs(out) == [f"queued: {FAX_ID} (3 pages)", "sent: 3 pages to 5550100"]
    assert fake.posts[0].fields == {"to": "sip:+15550100@pbx.example.org", "cover": "true",
                                    "cover_note": "Urgent: héllo", "header": "false", "webhook": "ehr"}


def test_no_cover_and_api_and_token_from_the_environment(gateway, documents, capsys, monkeypatch):
    fake, api = gateway
    fake.script = [{"status": "sent", "pages_sent": 1, "pages_total": 1}]
    monkeypatch.setenv("T38GW_API", api)
    monkeypatch.setenv("T38GW_TOKEN", TOKEN)
    assert main(["send", str(documents[1]), "--to", "5550100", "--no-cover"]) == 0
    assert fake.posts[0].fields == {"to": "5550100", "cover": "false"}
    assert not_logs(capsys.readouterr().out)[-1] == "sent: 1 page to 5550100"


def test_failed_job_prints_the_reason_on_stderr_and_exits_1(gateway, documents, capsys):
    fake, api = gateway
    busy = attempt(ended=True, outcome="busy", cause="busy", reason="the line was busy", sip_status=486)
    fake.script = [
        {"status": "dialing", "pages_total": 2, "attempts": [attempt()]},
        {"status": "queued", "pages_total": 2, "attempts": [busy], "next_attempt_at": "2026-12-06T04:45:00Z"},
        {"status": "dialing", "pages_total": 2, "attempts": [busy, attempt(2)]},
        {"status": "failed", "pages_total": 2, "reason": "the line was busy on all 2 attempts",
         "attempts": [busy, busy]},
    ]
    code = main(["send", str(documents[0]), "--to", "5550100", "--api", api, "--token", TOKEN])
    out, err = capsys.readouterr()
    assert code == 1
    assert not_logs(out) == [
        f"queued: {FAX_ID} (2 pages)",
        "dialing 5550100 (attempt 1)",
        "attempt 1 to 5550100: the line was busy; next attempt at 2026-12-06T04:45:00Z",
        "dialing 5550100 (attempt 2)",
    ]
    assert not_logs(err) == ["failed: the line was busy on all 2 attempts"]


def test_partial_job_exits_1(gateway, documents, capsys):
    fake, api = gateway
    fake.script = [{"status": "partial", "pages_sent": 1, "pages_total": 3,
                    "reason": "the far end hung up after page 1"}]
    code = main(["send", str(documents[0]), "--to", "5550100", "--api", api, "--token", TOKEN])
    out, err = capsys.readouterr()
    assert code == 1
    assert not_logs(err) == ["partial: 1/3 pages sent to 5550100: the far end hung up after page 1"]


def test_a_400_prints_the_detail_and_exits_2(gateway, documents, capsys):
    fake, api = gateway
    fake.refuse = (400, {"error": "bad_number", "detail": "'55-x' is neither a number nor a SIP URI"})
    code = main(["send", str(documents[0]), "--to", "55-x", "--api", api, "--token", TOKEN])
    out, err = capsys.readouterr()
    assert code == 2
    assert not_logs(out) == []
    assert not_logs(err) == ["t38gw send: the gateway refused the fax (400): '55-x' is neither a number nor a SIP URI"]
    assert fake.gets == 0


@pytest.mark.parametrize("token", [None, "wrong-token-" + "9" * 20])
def test_a_401_without_or_with_a_wrong_token_exits_2(gateway, documents, capsys, token):
    fake, api = gateway
    argv = ["send", str(documents[0]), "--to", "5550100", "--api", api]
    code = main(argv + (["--token", token] if token else []))
    err = capsys.readouterr().err
    assert code == 2
    assert not_logs(err) == ["t38gw send: the gateway refused the fax (401): a valid bearer token is required"]
    assert fake.posts == []


def test_no_wait_prints_the_id_and_does_not_follow(gateway, documents, capsys):
    fake, api = gateway
    fake.script = [{"status": "queued"}]
    code = main(["send", str(documents[0]), "--to", "5550100", "--api", api, "--token", TOKEN, "--no-wait"])
    assert code == 0
    assert not_logs(capsys.readouterr().out) == [FAX_ID]
    assert len(fake.posts) == 1 and fake.gets == 0


def test_timeout_gives_up_following_and_says_the_job_continues(gateway, documents, capsys):
    fake, api = gateway
    fake.script = [{"status": "dialing", "pages_total": 1, "attempts": [attempt()]}]
    code = main(["send", str(documents[0]), "--to", "5550100", "--api", api, "--token", TOKEN, "--timeout", "0.2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert not_logs(out) == [f"queued: {FAX_ID} (1 page)", "dialing 5550100 (attempt 1)"]
    [line] = not_logs(err)
    assert "stopped following after 0.2 s" in line and f"fax {FAX_ID} continues in the gateway" in line


def test_missing_or_unsupported_file_is_a_usage_error_and_nothing_is_posted(gateway, documents, tmp_path, capsys):
    fake, api = gateway
    missing = tmp_path / "nope.pdf"
    assert main(["send", str(documents[0]), str(missing), "--to", "5550100", "--api", api, "--token", TOKEN]) == 2
    assert not_logs(capsys.readouterr().err) == [f"t38gw send: {missing}: no such file"]
    odd = tmp_path / "letter.docx"
    odd.write_bytes(b"PK\x03\x04")
    assert main(["send", str(odd), "--to", "5550100", "--api", api, "--token", TOKEN]) == 2
    assert "not a document the gateway can send" in capsys.readouterr().err
    assert main(["send", str(documents[0]), "--to", "5550100", "--no-cover", "--note", "hi", "--api", api]) == 2
    assert "cannot go with --no-cover" in capsys.readouterr().err
    assert fake.posts == []


def test_cli_usage_errors_exit_2(documents, capsys):
    assert main(["send", str(documents[0])]) == 2  # no --to
    assert main(["send", str(documents[0]), "--to", "1", "--cover", "--no-cover"]) == 2


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_gateway_unreachable_is_one_line_and_exit_1(documents):
    # A real process, so that the exit status and the absence of a traceback are the user's.
    result = subprocess.run(
        [sys.executable, "-m", "t38gw.cli", "send", str(documents[0]), "--to", "5550100",
         "--api", f"http://127.0.0.1:{closed_port()}"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = not_logs(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("t38gw send: cannot reach the gateway at http://127.0.0.1:"), \
        result.stderr
    assert "Traceback" not in result.stderr


def test_form_fields_leave_unchosen_options_to_the_gateway():
    assert sendcli.form_fields("5550100") == {"to": "5550100"}
    assert sendcli.form_fields("5550100", cover=True, header=False) == {"to": "5550100", "cover": "true",
                                                                       "header": "false"}
    assert sendcli.form_fields("5550100", note="") == {"to": "5550100", "cover": "true", "cover_note": ""}
    with pytest.raises(sendcli.SendUsageError):
        sendcli.form_fields("  ")


def test_exit_code_for_each_status():
    assert [sendcli.exit_code_for(s) for s in ["queued", "dialing", "sending", "sent", "partial", "failed"]] == \
        [None, None, None, 0, 1, 1]


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1/", "http://[::1"])
def test_an_unusable_api_url_is_a_usage_error(documents, capsys, url):
    assert main(["send", str(documents[0]), "--to", "5550100", "--api", url]) == 2
    [line] = not_logs(capsys.readouterr().err)
    assert line.startswith(f"t38gw send: --api {url}: ")
