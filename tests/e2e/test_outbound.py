"""Sending, end to end on real loopback sockets: ``t38gw serve`` queues a job from its API
(or ``t38gw send``), dials through an outbound trunk, and its T.30 engine sends to

- a SpanDSP T.38 receiver behind a hand-written SIP UAS (``tests.e2e.uas``): both initial
  offers, both re-INVITE directions, a digest challenge from the trunk;
- another ``t38gw serve`` (gateway to gateway): the receiver's archive holds the sender's
  pages, pixel for pixel;
- SIPp answering 486 twice: retried with back-off, then ``fax.send_failed``.

Also: a gateway killed while its call rings sends the job after the restart, from the
start; bad requests get their 4xx and queue nothing.
"""

from __future__ import annotations

import gzip
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from t38gw import webhooks
from tests.e2e.support import REPO, SECRET, GatewayProcess, WebhookReceiver, free_port, tiff_pages
from tests.e2e.uas import AnswerPlan, FarEndReceiver
from tests.interop.sipp.harness import SCENARIOS, sipp_binary

pytestmark = pytest.mark.realtime

T30_ERR_OK = 0
SEND_TIMEOUT = 120.0


def _testdata() -> Path:
    from tests.conftest import testdata_dir  # the one place that knows T38GW_TESTDATA

    return testdata_dir()


def chart_png(tmp_path: Path, number: int) -> Path:
    """An ITU T.24 chart as a PNG at fax fine resolution (what a scanner would give us)."""
    raw = gzip.decompress((_testdata() / "itu_t24_charts" / f"itu{number}.pbm.gz").read_bytes())
    path = tmp_path / f"itu{number}.png"
    src = tmp_path / f"itu{number}.pbm"
    src.write_bytes(raw)
    with Image.open(src) as image:
        image.save(path, dpi=(204, 196))
    return path


def two_page_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "letter.pdf"
    images = []
    for number in (2, 4):
        raw = gzip.decompress((_testdata() / "itu_t24_charts" / f"itu{number}.pbm.gz").read_bytes())
        src = tmp_path / f"p{number}.pbm"
        src.write_bytes(raw)
        images.append(Image.open(src).convert("L"))
    images[0].save(path, save_all=True, append_images=images[1:], resolution=200.0)
    return path


def post_job(gateway: GatewayProcess, files: list[Path], **fields: str) -> httpx.Response:
    parts = [("file", (f.name, f.read_bytes(), "application/octet-stream")) for f in files]
    return httpx.post(f"{gateway.api}/v1/faxes", files=parts, data=fields, timeout=60)


def wait_done(gateway: GatewayProcess, fax_id: str, timeout: float = SEND_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    meta: dict = {}
    while time.monotonic() < deadline:
        meta = gateway.meta(fax_id)
        if not meta.get("in_progress"):
            return meta
        time.sleep(0.3)
    raise AssertionError(f"job not done in {timeout} s: {meta}\n{gateway.log_text()[-4000:]}")


def sent_pages(gateway: GatewayProcess, meta: dict) -> list[tuple[bytes, int, int, float, float]]:
    return tiff_pages(gateway.folder(meta) / "fax.tif")


def trunk_config(port: int, *, username: str = "", password: str = "", extra: str = "") -> str:
    return f"""
[[sip.trunks]]
name = "carrier"
registrar = "sip:127.0.0.1:{port}"
username = "{username}"
password = "{password}"
outbound = true
{extra}
"""


@pytest.mark.parametrize("initial_offer, mode, challenge, ecm, reinvite_after", [
    ("t38", "t38", 407, True, 0.0),  # T.38 in the first INVITE, after a proxy challenge
    ("audio", "audio-reinvite", 401, False, -1.0),  # audio; the far end re-INVITEs to T.38; non-ECM
    ("audio", "audio-wait", None, True, 0.0),  # audio; our re-INVITE to T.38
])
def test_send_through_a_trunk_to_spandsp(tmp_path, initial_offer, mode, challenge, ecm, reinvite_after):
    webhook = WebhookReceiver().start()
    plan = AnswerPlan(mode=mode, challenge=challenge, username="gw", password="s3cret", ecm=ecm, ring_seconds=0.5)
    with FarEndReceiver(plan, tmp_path / "farend") as farend:
        (tmp_path / "gw").mkdir()
        gateway = GatewayProcess(tmp_path / "gw", webhook_url=webhook.url, reinvite_after=reinvite_after,
                                 extra_config=trunk_config(farend.port, username="gw", password="s3cret")
                                 + f'\n[send]\ninitial_offer = "{initial_offer}"\nretries = 0\n').start()
        try:
            response = post_job(gateway, [chart_png(tmp_path, 1)], to="+1 (555) 0200", header="false")
            assert response.status_code == 202, response.text
            fax_id = response.json()["id"]
            meta = wait_done(gateway, fax_id)
            result = farend.wait(timeout=60)
        finally:
            gateway.stop()
            webhook.stop()
    assert meta["status"] == "sent", (meta, gateway.log_text()[-4000:])
    assert meta["direction"] == "outbound" and meta["to"] == "+1 (555) 0200"
    assert meta["pages_sent"] == meta["pages_total"] == 1
    [attempt] = meta["attempts"]
    assert attempt["outcome"] == "sent" and attempt["sip_status"] == 200
    assert meta["sip"]["did"] == "+15550200" and meta["sip"]["trunk"] == "carrier"
    assert meta["t30"]["remote_ident"] == "+1 555 0200" and meta["t30"]["ecm"] is ecm
    assert result.phase_e_status == T30_ERR_OK, result
    assert result.remote_ident == "+1 555 0100"
    assert result.pages == 1
    if challenge:
        assert result.auth_ok is True and challenge in result.responses_sent, result.responses_sent
    assert result.media_sequence[-1] == "t38", result.media_sequence
    if initial_offer == "audio":
        assert result.media_sequence[0] == "audio", result.media_sequence
        assert (result.reinvites_sent if mode == "audio-reinvite" else result.reinvites_received) >= 1
    # What SpanDSP wrote is what we archived as sent (which is what we rasterised).
    received = tiff_pages(result.tiff)
    ours = sent_pages(gateway, meta)
    assert [(w, h) for _, w, h, _, _ in received] == [(w, h) for _, w, h, _, _ in ours]
    assert [bits for bits, *_ in received] == [bits for bits, *_ in ours]
    posts = webhook.wait_for(lambda posts: posts, timeout=1)
    [post] = [p for p in posts if json.loads(p.body)["data"]["id"] == fax_id]
    webhooks.verify(SECRET, post.headers, post.body, time.time())
    assert json.loads(post.body)["type"] == "fax.sent"


def test_gateway_to_gateway_with_the_cli(tmp_path):
    """One gateway sends a cover page and a 2-page PDF with ``t38gw send`` through its
    outbound trunk to another; both start on audio and both re-INVITE at once (glare,
    RFC 3261 14.1); the receiver's archive holds exactly the sender's pages."""
    (tmp_path / "rx").mkdir()
    (tmp_path / "tx").mkdir()
    receiver = GatewayProcess(tmp_path / "rx").start()
    try:
        sender = GatewayProcess(tmp_path / "tx", extra_config=trunk_config(receiver.sip_port)
                                + '\n[send]\nsender_name = "St Mary Cardiology"\n').start()
        try:
            document = two_page_pdf(tmp_path)
            cli = subprocess.run(
                [sys.executable, "-m", "t38gw.cli", "send", str(document), "--to", "5550200", "--note",
                 "Referral: please see the attached letter.", "--api", sender.api, "--timeout", str(SEND_TIMEOUT)],
                capture_output=True, text=True, timeout=SEND_TIMEOUT + 30, cwd=REPO)
            assert cli.returncode == 0, (cli.stdout, cli.stderr, sender.log_text()[-4000:])
            assert "sent: 3 pages" in cli.stdout, cli.stdout
            assert "sending: page" in cli.stdout, cli.stdout
            [sent] = [m for m in (sender.meta(f["id"]) for f in sender.faxes()) if m["direction"] == "outbound"]
            [received] = receiver.wait_for_faxes(1, timeout=20)
        finally:
            sender.stop()
    finally:
        receiver.stop()
    assert sent["status"] == "sent" and sent["pages_total"] == 3 and sent["send"]["cover"] is True
    assert received["status"] == "received", received
    assert received["t30"]["remote_ident"] == "+1 555 0100"
    assert received["sip"]["did"] == "5550200"
    theirs = tiff_pages(receiver.folder(received) / "fax.tif")
    ours = sent_pages(sender, sent)
    assert len(theirs) == len(ours) == 3
    for (their_bits, tw, th, tx, ty), (our_bits, ow, oh, ox, oy) in zip(theirs, ours, strict=True):
        assert (tw, th, round(tx), round(ty)) == (ow, oh, round(ox), round(oy))
        assert their_bits == our_bits
    assert [p["sha256"] for p in received["pages"]] == [p["sha256"] for p in sent["pages"]]


def test_busy_is_retried_with_back_off_then_reported(tmp_path):
    port = free_port()
    sipp = subprocess.Popen(
        [sipp_binary(), "-sf", str(SCENARIOS / "outbound_busy_uas.xml"), "-m", "2", "-i", "127.0.0.1", "-p", str(port),
         "-t", "u1", "-timeout", "40s", "-timeout_error", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    webhook = WebhookReceiver().start()
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", webhook_url=webhook.url,
                             extra_config="\n[send]\nallow_direct_uri = true\nretries = 1\nretry_after = 2\n").start()
    try:
        response = post_job(gateway, [chart_png(tmp_path, 5)], to=f"sip:5550300@127.0.0.1:{port}")
        assert response.status_code == 202, response.text
        fax_id = response.json()["id"]
        queued = gateway.meta(fax_id)
        assert queued["status"] in ("queued", "dialing"), queued
        meta = wait_done(gateway, fax_id, timeout=40)
        posts = webhook.wait_for(lambda posts: posts, timeout=15)
        output, _ = sipp.communicate(timeout=40)
    finally:
        gateway.stop()
        webhook.stop()
        if sipp.poll() is None:
            sipp.kill()
    assert sipp.returncode == 0, output.decode(errors="replace")
    assert meta["status"] == "failed", meta
    assert [(a["cause"], a["sip_status"]) for a in meta["attempts"]] == [("busy", 486), ("busy", 486)]
    first_end = time.mktime(time.strptime(meta["attempts"][0]["ended_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    second_start = time.mktime(time.strptime(meta["attempts"][1]["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert second_start - first_end >= 1, meta["attempts"]  # retry_after = 2 s (second granularity here)
    assert "busy" in meta["reason"] and "gave up after 2 attempts" in meta["reason"]
    [post] = posts
    body = json.loads(post.body)
    assert body["type"] == "fax.send_failed" and body["data"]["status"] == "failed"
    assert body["data"]["id"] == fax_id
    events = [e["event"] for e in gateway.log_events()]
    assert events.count("send_attempt_retry") == 1 and "send_job_finished" in events


def test_a_job_interrupted_by_a_kill_is_sent_after_the_restart(tmp_path):
    """kill -9 while the far end rings: the restarted gateway (its trunk now pointing at a
    far end that answers) sends the job from the start."""
    ringing = FarEndReceiver(AnswerPlan(mode="no-answer", max_seconds=60), tmp_path / "ringing").start()
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", extra_config=trunk_config(ringing.port)).start()
    try:
        response = post_job(gateway, [chart_png(tmp_path, 3)], to="5550400", cover="true")
        assert response.status_code == 202, response.text
        fax_id = response.json()["id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "call_progress" not in gateway.log_text():
            time.sleep(0.1)
        assert "call_progress" in gateway.log_text(), gateway.log_text()[-3000:]
        gateway.stop(signal.SIGKILL)
    finally:
        ringing.stop()
    with FarEndReceiver(AnswerPlan(mode="t38"), tmp_path / "answering") as answering:
        gateway.extra_config = trunk_config(answering.port)
        gateway.write_config()
        gateway.start()
        try:
            meta = wait_done(gateway, fax_id)
            result = answering.wait(timeout=60)
        finally:
            gateway.stop()
    assert meta["status"] == "sent", (meta, gateway.log_text()[-4000:])
    assert [a["cause"] for a in meta["attempts"]] == ["interrupted", "sent"], meta["attempts"]
    assert result.phase_e_status == T30_ERR_OK and result.pages == 2
    assert [bits for bits, *_ in tiff_pages(result.tiff)] == [bits for bits, *_ in sent_pages(gateway, meta)]
    assert "send_jobs_resumed" in gateway.log_text()


def test_bad_requests_get_4xx_and_queue_nothing(tmp_path):
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", extra_config=trunk_config(free_port())
                             + "\n[send]\nmax_pages_per_job = 2\n").start()
    try:
        png = chart_png(tmp_path, 1)
        text = tmp_path / "notes.pdf"
        text.write_text("this is not a PDF\n")
        three = [png, chart_png(tmp_path, 2), chart_png(tmp_path, 3)]
        cases = [
            (post_job(gateway, [text], to="5550100"), 422, "notes.pdf"),
            (post_job(gateway, three, to="5550100"), 413, "max_pages_per_job"),
            (post_job(gateway, [png, png], to="5550100", cover="true"), 413, "the cover included"),
            (post_job(gateway, [png], to="call me"), 422, "neither a number"),
            (post_job(gateway, [png], to="sip:5550100@192.0.2.1"), 422, "allow_direct_uri"),
            (post_job(gateway, [png], to="5550100", webhook="ehr"), 422, "no configured webhook"),
            (httpx.post(f"{gateway.api}/v1/faxes", data={"to": "5550100"}, timeout=10), 415, "multipart"),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (status, response.text)
            assert words in response.json()["detail"], response.text
        assert gateway.faxes() == []
        assert not list((tmp_path / "gw" / "archive").rglob("meta.json"))
    finally:
        gateway.stop()
    with sqlite3.connect(tmp_path / "gw" / "spool.db") as db:
        assert db.execute("SELECT count(*) FROM send_jobs").fetchone()[0] == 0
    assert "Traceback" not in gateway.log_text()


RING_THEN_BUSY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="180, 2 s of ringing, then 486">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <pause milliseconds="2000"/>
  <send><![CDATA[
      SIP/2.0 486 Busy Here
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <recv request="ACK"/>
</scenario>
"""


def test_one_call_at_a_time_on_a_trunk_limited_to_one(tmp_path):
    """``[send] max_calls_per_trunk = 1``: of two jobs queued together, the second is
    dialled only once the first call is over (SIPp rings 2 s, then answers 486; without
    the limit the two calls overlap)."""
    port = free_port()
    scenario = tmp_path / "ring_then_busy.xml"
    scenario.write_text(RING_THEN_BUSY)
    sipp = subprocess.Popen(
        [sipp_binary(), "-sf", str(scenario), "-m", "2", "-i", "127.0.0.1", "-p", str(port),
         "-t", "u1", "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", extra_config="\n[send]\nallow_direct_uri = true\nretries = 0\n"
                                                           "max_calls_per_trunk = 1\n").start()
    try:
        png = chart_png(tmp_path, 6)
        ids = [post_job(gateway, [png], to=f"sip:555030{n}@127.0.0.1:{port}").json()["id"] for n in (1, 2)]
        metas = [wait_done(gateway, fax_id, timeout=30) for fax_id in ids]
        output, _ = sipp.communicate(timeout=30)
    finally:
        gateway.stop()
        if sipp.poll() is None:
            sipp.kill()
    assert sipp.returncode == 0, output.decode(errors="replace")
    assert [m["attempts"][0]["cause"] for m in metas] == ["busy", "busy"]
    first, second = sorted((m["attempts"][0] for m in metas), key=lambda a: a["started_at"])
    assert second["started_at"] >= first["ended_at"], (first, second)  # RFC 3339 UTC strings sort as times
    events = gateway.log_events()
    starts = [e for e in events if e["event"] == "send_attempt_started"]
    ends = [e for e in events if e["event"] == "send_job_finished"]
    assert len(starts) == len(ends) == 2
    assert starts[1]["timestamp"] >= ends[0]["timestamp"]
