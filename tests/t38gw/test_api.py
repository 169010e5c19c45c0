"""The HTTP API over a real archive folder (starlette's test client drives the ASGI app)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import ssl
import stat
import subprocess

import httpx
import pytest
import structlog
import trio
from starlette.testclient import TestClient

from t38gw import archive
from t38gw.api import AuditLog, api_base_url, create_app, hypercorn_tls, token_id, verify_audit_log
from t38gw.index import ArchiveIndex
from t38gw.config import HttpConfig
from t38gw.ids import new_fax_id
from t38gw.metrics import GatewayMetrics


@pytest.fixture
def archive_root(tmp_path):
    rng = random.Random(5)
    for n, started in enumerate((1_764_000_000.0, 1_764_000_100.0)):
        fax_id = new_fax_id(started, rng)
        folder = archive.fax_folder(tmp_path, fax_id, started, "cardiology" if n else "")
        archive.write_meta(folder, {"id": fax_id, "direction": "inbound", "status": "received", "reason": "",
                                    "started_at": archive.rfc3339(started), "ended_at": archive.rfc3339(started + 60),
                                    "pages": [{"number": 1}]})
        archive.write_atomic(folder / "fax.pdf", b"%PDF-1.4 test")
    return tmp_path


def indexed(root) -> ArchiveIndex:
    """The search index of the archive at ``root`` (built from its folders, as a start does)."""
    index = ArchiveIndex(root / ".test-index.db")
    index.rebuild(root)
    return index


def client(root, tokens=(), host="127.0.0.1", audit_log=None):
    metrics = GatewayMetrics(spool_depth=lambda: 3)
    metrics.calls.labels(result="received").inc()
    return TestClient(create_app(indexed(root), metrics, tokens, audit_log=audit_log), client=(host, 50000))


def test_health_and_metrics(archive_root):
    c = client(archive_root)
    assert c.get("/healthz").json() == {"status": "ok"}
    text = c.get("/metrics").text
    assert 't38gw_calls_total{result="received"} 1.0' in text
    assert "t38gw_webhook_spool_depth 3.0" in text


def test_list_get_and_download(archive_root):
    c = client(archive_root)
    faxes = c.get("/v1/faxes").json()["faxes"]
    assert len(faxes) == 2 and faxes[0]["id"] > faxes[1]["id"]
    fax_id = faxes[0]["id"]
    assert c.get(f"/v1/faxes/{fax_id}").json()["status"] == "received"
    pdf = c.get(f"/v1/faxes/{fax_id}/document.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert c.get(f"/v1/faxes/{fax_id}/document.tif").status_code == 404
    assert c.get(f"/v1/faxes/{fax_id}/document.exe").status_code == 404
    assert c.get("/v1/faxes/../../etc/passwd").status_code == 404


def test_no_tokens_means_loopback_only(archive_root):
    assert client(archive_root, host="192.0.2.7").get("/v1/faxes").status_code == 403
    assert client(archive_root, host="192.0.2.7").get("/healthz").status_code == 200


TOKEN = "tok_3f9a1c0e5b7d2468ace13579bdf02468"  # 36 characters, as config requires (>= 32)


def test_bearer_tokens(archive_root):
    c = client(archive_root, tokens=(TOKEN,), host="192.0.2.7")
    assert c.get("/v1/faxes").status_code == 401
    assert c.get("/v1/faxes", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/faxes", headers={"authorization": "Bearer"}).status_code == 401
    assert c.get("/v1/faxes", headers={"authorization": "Bearer "}).status_code == 401
    assert c.get("/v1/faxes", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_an_empty_token_never_lets_a_bare_bearer_in(archive_root):
    # Issue 9 item 6: tokens = [""] used to accept "Authorization: Bearer" from anywhere.
    for header in ("Bearer", "Bearer ", "bearer  "):
        c = client(archive_root, tokens=("",), host="192.0.2.7")
        assert c.get("/v1/faxes", headers={"authorization": header}).status_code == 403


def test_a_gateway_that_does_not_send_says_so(archive_root):
    response = client(archive_root).post("/v1/faxes")
    assert response.status_code == 501
    assert "does not send" in response.json()["detail"]


def _send_client(root, handler):
    app = create_app(indexed(root), GatewayMetrics(), (), handler)
    return TestClient(app, client=("127.0.0.1", 50000))


def test_post_fax_reads_the_multipart_form(archive_root):
    seen = []

    async def handler(options, files):
        seen.append((options, files))
        return "01a249a3-ba61-7f54-8357-001a503aa445"

    c = _send_client(archive_root, handler)
    response = c.post("/v1/faxes", data={"to": " 5550100 ", "cover_note": "Referral", "header": "no",
                                         "webhook": "ehr"},
                      files=[("file", ("letter.pdf", b"%PDF-1", "application/pdf")),
                             ("file", ("scan.tif", b"II*\x00", "image/tiff"))])
    assert response.status_code == 202, response.text
    assert response.json() == {"id": "01a249a3-ba61-7f54-8357-001a503aa445"}
    assert response.headers["location"] == "/v1/faxes/01a249a3-ba61-7f54-8357-001a503aa445"
    (options, files), = seen
    assert (options.to, options.cover, options.cover_note, options.header, options.webhook) == \
        ("5550100", True, "Referral", False, "ehr")  # a note asks for the cover
    assert files == [("letter.pdf", b"%PDF-1"), ("scan.tif", b"II*\x00")]


@pytest.mark.parametrize("form, files, status, words", [
    ({}, [("to", (None, "5550100"))], 400, "no `file`"),  # multipart, a text field only
    ({}, [("file", ("a.pdf", b"%PDF", "application/pdf"))], 400, "`to` is missing"),
    ({"to": "1", "cover": "perhaps"}, [("file", ("a.pdf", b"%PDF", "application/pdf"))], 400, "true or false"),
    ({"to": "1", "priority": "high"}, [("file", ("a.pdf", b"%PDF", "application/pdf"))], 400, "unknown field"),
    ({"to": "1"}, [("file", ("a.pdf", b"", "application/pdf"))], 422, "empty"),
])
def test_a_bad_send_request_is_refused_before_the_handler(archive_root, form, files, status, words):
    calls = []

    async def handler(options, files):
        calls.append(options)
        return "x"

    response = _send_client(archive_root, handler).post("/v1/faxes", data=form, files=files)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert calls == []


def test_post_fax_needs_multipart(archive_root):
    async def handler(options, files):
        raise AssertionError("not reached")

    response = _send_client(archive_root, handler).post("/v1/faxes", json={"to": "1"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


def test_every_read_of_patient_data_is_audited(archive_root, tmp_path):
    path = tmp_path / "var" / "audit.jsonl"
    audit = AuditLog(path)
    c = client(archive_root, tokens=(TOKEN,), host="192.0.2.7", audit_log=audit)
    auth = {"authorization": f"Bearer {TOKEN}"}
    with structlog.testing.capture_logs() as events:
        faxes = c.get("/v1/faxes?limit=5", headers=auth).json()["faxes"]
        fax_id = faxes[0]["id"]
        c.get(f"/v1/faxes/{fax_id}", headers=auth)
        c.get(f"/v1/faxes/{fax_id}/document.pdf", headers=auth)
        c.get(f"/v1/faxes/{fax_id}/document.tif", headers=auth)          # 404: no TIFF
        c.get(f"/v1/faxes/{fax_id}", headers={"authorization": "Bearer not-the-token"})  # 401
        c.get("/healthz")                                                # not patient data
    audit.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["method"], e["path"], e["fax_id"], e["status"]) for e in lines] == [
        ("GET", "/v1/faxes", None, 200),
        ("GET", f"/v1/faxes/{fax_id}", fax_id, 200),
        ("GET", f"/v1/faxes/{fax_id}/document.pdf", fax_id, 200),
        ("GET", f"/v1/faxes/{fax_id}/document.tif", fax_id, 404),
        ("GET", f"/v1/faxes/{fax_id}", fax_id, 401),
    ]
    assert lines[0]["fax_ids"] == [f["id"] for f in faxes] and lines[0]["query"] == "limit=5"
    assert {e["client"] for e in lines} == {"192.0.2.7"}
    our_id = hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert [e["token_id"] for e in lines] == [our_id] * 4 + [token_id("not-the-token")]
    assert all(e["time"].endswith("Z") for e in lines)
    assert TOKEN not in path.read_text()
    audit_events = [e for e in events if e["event"] == "audit"]
    assert [(e["path"], e["status"]) for e in audit_events] == [(e["path"], e["status"]) for e in lines]
    assert verify_audit_log(path) == (5, None)


def test_the_audit_chain_survives_a_restart_and_shows_tampering(archive_root, tmp_path):
    path = tmp_path / "audit.jsonl"
    for _ in range(2):  # two gateway runs append to the same log
        audit = AuditLog(path)
        client(archive_root, audit_log=audit).get("/v1/faxes")
        audit.close()
    assert verify_audit_log(path) == (2, None)
    assert json.loads(path.read_text().splitlines()[0])["token_id"] == "loopback"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace('"status":200', '"status":404'), lines[1]]) + "\n")
    assert verify_audit_log(path) == (2, 2)


def test_a_read_that_cannot_be_audited_is_refused(archive_root, tmp_path):
    import errno

    audit = AuditLog(tmp_path / "audit.jsonl")

    def disk_full(line: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    audit._append = disk_full  # the trail's own write fails, as on a full disk
    response = client(archive_root, audit_log=audit).get("/v1/faxes")
    assert response.status_code == 503 and "faxes" not in response.json()
    audit.close()


def test_api_base_url_and_tls_settings():
    assert api_base_url(HttpConfig(listen=("127.0.0.1", 8080))) == "http://127.0.0.1:8080"
    assert api_base_url(HttpConfig(listen=("::1", 8443), certificate="c.pem", private_key="k.pem")) == \
        "https://[::1]:8443"
    assert hypercorn_tls(HttpConfig()) == {}
    assert hypercorn_tls(HttpConfig(certificate="c.pem", private_key="k.pem")) == {"certfile": "c.pem",
                                                                                 "keyfile": "k.pem"}


def self_signed(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: it makes the TLS test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_is_served_with_the_configured_pair(archive_root, tmp_path):
    """hypercorn with ``hypercorn_tls()`` serves the API over TLS; a client that trusts the
    certificate reads the list, a plain-HTTP client gets nothing."""
    from hypercorn.config import Config as HyperConfig
    from hypercorn.trio import serve

    cert, key = self_signed(tmp_path)
    http = HttpConfig(listen=("127.0.0.1", 0), certificate=str(cert), private_key=str(key))
    hyper = HyperConfig()
    hyper.bind = ["127.0.0.1:0"]
    hyper.accesslog = hyper.errorlog = None
    for name, value in hypercorn_tls(http).items():
        setattr(hyper, name, value)
    app = create_app(indexed(archive_root), GatewayMetrics(spool_depth=lambda: 0))

    async def main():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                [bound] = await nursery.start(serve, app, hyper)
                port = int(bound.rsplit(":", 1)[1])
                async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as secure:
                    response = await secure.get(f"https://127.0.0.1:{port}/v1/faxes")
                    assert response.status_code == 200 and len(response.json()["faxes"]) == 2
                async with httpx.AsyncClient() as plain:
                    with pytest.raises(httpx.HTTPError):
                        (await plain.get(f"http://127.0.0.1:{port}/v1/faxes")).raise_for_status()
                nursery.cancel_scope.cancel()
    trio.run(main)


def test_list_filters_pages_with_a_cursor_and_names_a_bad_parameter(tmp_path):
    rng = random.Random(9)
    started = 1_764_000_000.0
    for n in range(7):
        fax_id = new_fax_id(started + n * 60, rng)
        folder = archive.fax_folder(tmp_path, fax_id, started + n * 60)
        archive.write_meta(folder, {"id": fax_id, "direction": "outbound" if n % 2 else "inbound",
                                    "status": "received" if n % 3 else "failed", "reason": "",
                                    "started_at": archive.rfc3339(started + n * 60), "ended_at": None,
                                    "sip": {"caller": f"+1555010{n}", "did": "5550100"},
                                    "t30": {"remote_ident": "ST MARY" if n == 4 else ""}, "pages": []})
    c = client(tmp_path)
    first = c.get("/v1/faxes", params={"limit": 3}).json()
    assert len(first["faxes"]) == 3 and first["next_cursor"]
    second = c.get("/v1/faxes", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    third = c.get("/v1/faxes", params={"limit": 3, "cursor": second["next_cursor"]}).json()
    ids = [f["id"] for page in (first, second, third) for f in page["faxes"]]
    assert len(ids) == 7 == len(set(ids)) and ids == sorted(ids, reverse=True) and third["next_cursor"] is None
    assert [f["caller"] for f in c.get("/v1/faxes", params={"caller": "0104"}).json()["faxes"]] == ["+15550104"]
    assert {f["direction"] for f in c.get("/v1/faxes", params={"direction": "outbound"}).json()["faxes"]} == \
        {"outbound"}
    assert [f["remote_ident"] for f in c.get("/v1/faxes", params={"remote_ident": "mary"}).json()["faxes"]] == \
        ["ST MARY"]
    for params, param in (({"limit": "x"}, "limit"), ({"since": "yesterday"}, "since"),
                          ({"cursor": "???"}, "cursor"), ({"colour": "red"}, "colour")):
        response = c.get("/v1/faxes", params=params)
        assert response.status_code == 400 and response.json()["param"] == param, response.text


def test_a_hold_is_placed_shown_and_released_and_audited(archive_root, tmp_path):
    from t38gw.audit import history

    audit = AuditLog(tmp_path / "audit" / "trail.jsonl")
    c = client(archive_root, audit_log=audit)
    fax_id = c.get("/v1/faxes").json()["faxes"][0]["id"]
    assert c.post(f"/v1/faxes/{fax_id}/hold", json={}).json()["param"] == "reason"
    assert c.post(f"/v1/faxes/{fax_id}/hold", json={"reason": "  "}).status_code == 422
    placed = c.post(f"/v1/faxes/{fax_id}/hold", json={"reason": "litigation 2026-17"})
    assert placed.status_code == 200 and placed.json()["hold"]["reason"] == "litigation 2026-17"
    meta = c.get(f"/v1/faxes/{fax_id}").json()
    assert meta["hold"]["by"] == "loopback" and meta["hold_history"][0]["action"] == "placed"
    released = c.delete(f"/v1/faxes/{fax_id}/hold")
    assert released.status_code == 200 and released.json()["hold"] is None
    assert "hold" not in c.get(f"/v1/faxes/{fax_id}").json()
    assert c.post("/v1/faxes/01a249a3-ba61-7f54-8357-001a503aa445/hold", json={"reason": "x"}).status_code == 404
    audit.close()
    events = [entry["event"] for entry in history(tmp_path / "audit" / "trail.jsonl", fax_id)]
    assert "hold_placed" in events and "hold_released" in events


def test_a_call_indexed_before_its_first_write_reads_as_in_progress(tmp_path):
    from t38gw.faxrecord import InboundFax
    from t38gw.config import Route

    record = InboundFax(fax_id=new_fax_id(1_764_000_000.0, random.Random(3)), started_at=1_764_000_000.0,
                        root=tmp_path, formats=("pdf",), sip={"call_id": "c9", "caller": "5550199", "did": "5550100"},
                        route_index=None, route=Route())
    index = ArchiveIndex(tmp_path / "index.db")
    index.upsert(record.meta, record.folder)  # the gateway's order: the row first, meta.json at the first write
    c = TestClient(create_app(index, GatewayMetrics()), client=("127.0.0.1", 50000))
    [listed] = c.get("/v1/faxes").json()["faxes"]
    meta = c.get(f"/v1/faxes/{listed['id']}").json()
    assert meta["in_progress"] is True and meta["pages"] == [] and meta["sip"]["caller"] == "5550199"
    assert c.get(f"/v1/faxes/{listed['id']}/document.pdf").status_code == 404
