"""The HTTP API over a real archive folder (starlette's test client drives the ASGI app)."""

from __future__ import annotations

import json
import random

import pytest
from starlette.testclient import TestClient

from t38gw import archive
from t38gw.api import FaxIndex, create_app
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


def client(root, tokens=(), host="127.0.0.1"):
    metrics = GatewayMetrics(spool_depth=lambda: 3)
    metrics.calls.labels(result="received").inc()
    return TestClient(create_app(FaxIndex(root), metrics, tokens), client=(host, 50000))


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


def test_bearer_tokens(archive_root):
    c = client(archive_root, tokens=("s3cret",), host="192.0.2.7")
    assert c.get("/v1/faxes").status_code == 401
    assert c.get("/v1/faxes", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/faxes", headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_sending_says_not_built(archive_root):
    response = client(archive_root).post("/v1/faxes")
    assert response.status_code == 501
    assert "not built" in response.json()["detail"]
