"""End to end on loopback in real time: a raw-SIP + SpanDSP far end calls `t38gw serve`."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import threading
import time

import httpx
import pytest

from t38gw import webhooks
from t38gw.audit import verify_trail
from tests.e2e.farend import CallPlan, FarEnd, parse_sip
from tests.e2e.support import SECRET, GatewayProcess, WebhookReceiver, pdf_page_sizes, pdf_pages, tiff_pages
from tests.peers.spandsp import T30_ERR_OK
from tests.t38gw.t30.pages import chart_page, random_page

pytestmark = pytest.mark.realtime


def source_pages(seed: int, count: int, rows: int = 300) -> list[tuple[bytes, int, int]]:
    rng = random.Random(seed)
    pages = [(chart_page(1, 1728, max_rows=rows), 1728, rows)]
    pages += [(random_page(rng, 1728, rows), 1728, rows) for _ in range(count - 1)]
    return pages


def run_calls(gateway: GatewayProcess, plans: list[CallPlan], tmp_path) -> list:
    """Run far ends concurrently (one thread each, every wait inside bounded)."""
    results: list = [None] * len(plans)

    def one(index: int) -> None:
        try:
            results[index] = FarEnd(gateway.sip_address, plans[index], tmp_path).run()
        except BaseException as exc:  # reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(plan.max_seconds for plan in plans) + 30)
    assert all(not thread.is_alive() for thread in threads)
    for result in results:
        assert not isinstance(result, BaseException), result
    return results


def after_pages(pages: int, delay: float):
    """A far-end trigger: true ``delay`` s after the sender heard ``pages`` pages confirmed."""
    seen: dict[str, float] = {}

    def trigger(fax, elapsed: float) -> bool:
        if sum(1 for kind, _ in fax.events if kind == "phase_d") >= pages:
            seen.setdefault("at", elapsed)
            return elapsed - seen["at"] >= delay
        return False

    return trigger


def after_cfr(fax, elapsed: float) -> bool:
    """True once the sender heard CFR (SpanDSP's FCF 0x84 with the X bit masked)."""
    return any(direction == "rx" and len(frame) > 2 and frame[2] & 0xFE == 0x84 for direction, frame in fax.frames)


def fax_by_caller(metas: list[dict], caller: str) -> dict:
    [meta] = [m for m in metas if m["sip"]["caller"] == caller]
    return meta


def assert_pages_identical(gateway: GatewayProcess, meta: dict, pages, x_dpi, y_dpi, tmp_path) -> None:
    folder = gateway.folder(meta)
    tif = tiff_pages(folder / "fax.tif")
    assert [(w, h) for _, w, h, _, _ in tif] == [(w, h) for _, w, h in pages]
    for (bitmap, _, _, tx, ty), (source, _, _) in zip(tif, pages):
        assert bitmap == source
        assert (round(tx), round(ty)) == (x_dpi, y_dpi)
    # meta.json's pages[].sha256: of each page's packed rows (DESIGN.md, the archive), however
    # the gateway worked it out (on the thread that decoded the page ahead, or at its end).
    assert [p["sha256"] for p in meta["pages"]] == [hashlib.sha256(source).hexdigest() for source, _, _ in pages]
    # True physical size: 1728 pels at 204 dpi are 8.47 in wide, rows / y_dpi tall.
    sizes = pdf_page_sizes(folder / "fax.pdf")
    expected = [(w * 72 / x_dpi, h * 72 / y_dpi) for _, w, h in pages]
    assert len(sizes) == len(expected)
    for size, want in zip(sizes, expected):
        assert size == pytest.approx(want, abs=0.01)
    pdf = pdf_pages(folder / "fax.pdf", [(w, h, x_dpi, y_dpi) for _, w, h in pages], tmp_path)
    assert len(pdf) == len(pages)
    for (bitmap, w, h), source in zip(pdf, pages):
        assert (bitmap, w, h) == source


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def gateway(tmp_path, webhook_receiver):
    # Offering FEC lets the answer keep whichever of FEC and redundancy each caller offers.
    gw = GatewayProcess(tmp_path, webhook_url=webhook_receiver.url, extra_config=ROUTES,
                        # audio_fallback off: these far ends speak T.38 only, and a caller that
                        # refuses T.38 must fail fast (the audio path: test_audio_fax.py).
                        t38_extra='error_correction = "fec"\naudio_fallback = false').start()
    yield gw
    gw.stop()


# First match wins: 5550666 is refused before any media; 5550777 is filed under cardiology;
# a sender whose TSI is +1 555 0299 under radiology (known only after T.30 phase B).
ROUTES = r"""
[[routes]]
did = "^5550666$"
reject = true
[[routes]]
did = "^5550777$"
archive_subdir = "cardiology"
webhook = "default"
[[routes]]
tsi = '^\+1 555 0299$'
archive_subdir = "radiology"
[[routes]]
"""


def test_t38_in_first_invite_ecm_pages_archived_and_webhook(gateway, webhook_receiver, tmp_path):
    pages = source_pages(1, 2)
    result = FarEnd(gateway.sip_address, CallPlan(pages=pages, ecm=True), tmp_path).run()
    assert result.invite_status == 200, result
    assert result.phase_e_status == T30_ERR_OK, result

    [meta] = gateway.wait_for_faxes(1, timeout=15)
    assert meta["status"] == "received", meta
    assert meta["t30"]["ecm"] is True and meta["t30"]["pages"] == 2
    assert meta["t30"]["remote_ident"] == "+1 555 0199"
    assert meta["sip"]["did"] == "5550100" and meta["sip"]["caller"] == "5550199"
    assert meta["t38"]["packets_received"] > 0
    assert [p["height_px"] for p in meta["pages"]] == [300, 300]
    assert_pages_identical(gateway, meta, pages, 204, 196, tmp_path)

    posts = webhook_receiver.wait_for(lambda posts: posts, timeout=20)
    assert posts, gateway.log_text()[-3000:]
    post = posts[0]
    webhooks.verify(SECRET, post.headers, post.body, time.time())
    body = json.loads(post.body)
    assert body["type"] == "fax.received"
    assert body["data"]["id"] == meta["id"]
    pdf = base64.b64decode(body["document"]["data_base64"])
    assert body["document"]["content_type"] == "application/pdf"
    assert pdf == (gateway.folder(meta) / "fax.pdf").read_bytes()
    delivered = gateway.wait_for_faxes(1, timeout=10)[0]["deliveries"]
    assert [d["state"] for d in delivered] == ["delivered"]
    assert delivered[0]["id"] == post.headers["webhook-id"]
    # The audit trail (written in batches, off the call's path): the fax stored, then its
    # webhook delivered, in one intact chain among the API's read lines.
    trail = gateway.workdir / "var" / "audit.jsonl"
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in trail.read_text().splitlines()]
        events = [line["event"] for line in lines
                  if line.get("fax_id") == meta["id"] and line["event"] in ("fax_stored", "webhook_delivered")]
        if len(events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert events == ["fax_stored", "webhook_delivered"], events
    assert verify_trail(trail).first_broken is None


def test_concurrent_calls_non_ecm_reinvite_loss_and_nat(gateway, webhook_receiver, tmp_path):
    """Ten calls at once: non-ECM; audio answered then our re-INVITE to T.38; ECM with 5 %
    loss each way over redundancy, and over parity FEC; a caller behind NAT (SDP names a port it never sends from) at standard resolution
    (204x98: true size in the PDF);
    a DID routed to an archive sub-folder; a TSI routed to another; SIP over TCP; a DID a route rejects (603, no fax); a caller that
    refuses our re-INVITE to T.38 (488: failed, hung up)."""
    plans = {
        "5550201": CallPlan(pages=source_pages(2, 1), ecm=False, caller="5550201", seed=2),
        "5550202": CallPlan(pages=source_pages(3, 2), mode="audio-wait", caller="5550202", seed=3),
        "5550203": CallPlan(pages=source_pages(4, 2), loss=0.05, caller="5550203", seed=4),
        "5550204": CallPlan(pages=source_pages(5, 1), nat=True, caller="5550204", seed=5, y_dpi=98),
    }
    plans["5550205"] = CallPlan(pages=source_pages(10, 1), did="5550777", caller="5550205", seed=10)
    plans["5550208"] = CallPlan(pages=source_pages(14, 2), loss=0.05, error_correction="t38UDPFEC",
                                caller="5550208", seed=14)
    plans["5550210"] = CallPlan(pages=source_pages(16, 1), mode="audio-wait", transport="tcp", caller="5550210",
                                seed=16)
    plans["5550209"] = CallPlan(pages=source_pages(15, 1), ident="+1 555 0299", caller="5550209", seed=15)
    plans["5550206"] = CallPlan(pages=source_pages(10, 1), did="5550666", caller="5550206", seed=11, max_seconds=10)
    plans["5550207"] = CallPlan(pages=source_pages(10, 1), mode="audio-wait", refuse_t38=True, caller="5550207",
                                seed=12, max_seconds=20)
    results = dict(zip(plans, run_calls(gateway, list(plans.values()), tmp_path)))
    assert results.pop("5550206").invite_status == 603
    del plans["5550206"]
    refused = results.pop("5550207")
    del plans["5550207"]
    assert refused.gateway_reinvite and refused.bye_from_gateway, refused
    for caller, result in results.items():
        assert result.invite_status == 200, (caller, result)
        assert result.phase_e_status == T30_ERR_OK, (caller, result, gateway.log_text()[-3000:])
    assert results["5550202"].gateway_reinvite and results["5550210"].gateway_reinvite
    metas = gateway.wait_for_faxes(9, timeout=20)
    assert len(metas) == 9  # the call refused by a route left no fax
    no_t38 = fax_by_caller(metas, "5550207")
    assert no_t38["status"] == "failed" and "refused our T.38 re-INVITE (488" in no_t38["reason"], no_t38
    metas.remove(no_t38)
    routed = fax_by_caller(metas, "5550205")
    assert routed["route"] == "routes[1]"
    assert gateway.folder(routed).relative_to(gateway.workdir / "archive").parts[0] == "cardiology"
    assert fax_by_caller(metas, "5550201")["route"] == "routes[3]"
    by_tsi = fax_by_caller(metas, "5550209")
    assert by_tsi["route"] == "routes[2]" and by_tsi["t30"]["remote_ident"] == "+1 555 0299"
    assert gateway.folder(by_tsi).relative_to(gateway.workdir / "archive").parts[0] == "radiology"
    for caller, plan in plans.items():
        meta = fax_by_caller(metas, caller)
        assert meta["status"] == "received", meta
        assert_pages_identical(gateway, meta, plan.pages, plan.x_dpi, plan.y_dpi, tmp_path)
    assert fax_by_caller(metas, "5550201")["t30"]["ecm"] is False
    lossy = fax_by_caller(metas, "5550203")["t38"]
    assert lossy["packets_recovered"] > 0 and lossy["error_correction"] == "redundancy"
    lossy_fec = fax_by_caller(metas, "5550208")["t38"]
    assert lossy_fec["packets_recovered"] > 0 and lossy_fec["error_correction"] == "fec"
    posts = webhook_receiver.wait_for(lambda posts: len(posts) >= 9, timeout=20)
    events = {json.loads(p.body)["data"]["sip"]["caller"]: json.loads(p.body)["type"] for p in posts}
    assert events == {caller: "fax.received" for caller in plans} | {"5550207": "fax.failed"}
    metrics = httpx.get(f"{gateway.api}/metrics", timeout=5).text
    assert 't38gw_calls_total{result="received"} 8.0' in metrics
    assert "t38gw_active_calls 0.0" in metrics
    assert 't38gw_webhook_deliveries_total{result="delivered"} 9.0' in metrics
    assert 't38gw_calls_total{result="refused_603"} 1.0' in metrics
    assert 't38gw_pages_total{direction="inbound"} 11.0' in metrics


@pytest.fixture
def waiting_gateway(tmp_path, webhook_receiver):
    gw = GatewayProcess(tmp_path, webhook_url=webhook_receiver.url, reinvite_after=-1).start()
    yield gw
    gw.stop()


def bad_sdp_invite(number: int, sock: socket.socket) -> bytes:
    """A well-formed INVITE whose T.38 SDP is not (T38FaxVersion is not a number)."""
    port = sock.getsockname()[1]
    body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=image 40000 udptl t38\r\na=T38FaxVersion:abc\r\na=T38FaxMaxDatagram:-5\r\n")
    return (f"INVITE sip:5550100@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKjunk{number};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:junk@127.0.0.1>;tag=j{number}\r\nTo: <sip:5550100@127.0.0.1>\r\n"
            f"Call-ID: junk-{number}@sprayer\r\nCSeq: 1 INVITE\r\nContact: <sip:junk@127.0.0.1:{port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def spray_garbage(gateway: GatewayProcess, stop: threading.Event) -> int:
    """Send junk to the SIP port and to every UDPTL port until ``stop``; returns datagrams sent."""
    rng = random.Random(99)
    junk = [b"\x00\xff" * 20, b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n", b"SIP/2.0 200\r\n\r\n",
            bytes(rng.randrange(256) for _ in range(300)), b"\x00\x01\x02", b"\r\n\r\n"]
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for round_number in range(300):  # bounded
            if stop.wait(0.1):
                break
            if round_number % 10 == 0:
                sock.sendto(bad_sdp_invite(round_number, sock), gateway.sip_address)
            for data in junk:
                sock.sendto(data, gateway.sip_address)
                port = rng.randrange(gateway.udptl_ports[0], gateway.udptl_ports[1] + 1)
                sock.sendto(data, ("127.0.0.1", port))
                sent += 2
    return sent


def test_peer_reinvite_bye_mid_page_silence_and_garbage(waiting_gateway, webhook_receiver, tmp_path):
    """With t38_reinvite_after < 0: the peer re-INVITEs to T.38; a BYE mid-document keeps the
    confirmed page as partial; a line gone quiet ends failed; junk on the ports changes nothing."""
    gateway = waiting_gateway
    stop = threading.Event()
    sprayer = threading.Thread(target=spray_garbage, args=(gateway, stop))
    sprayer.start()
    plans = {
        "5550301": CallPlan(pages=source_pages(6, 2), mode="audio-reinvite", reinvite_after=0.5,
                            caller="5550301", seed=6),
        "5550302": CallPlan(pages=source_pages(7, 3, rows=600), caller="5550302", seed=7, bye_when=after_pages(1, 1.0)),
        "5550303": CallPlan(pages=source_pages(8, 1), caller="5550303", seed=8, silent_when=after_cfr),
    }
    try:
        results = dict(zip(plans, run_calls(gateway, list(plans.values()), tmp_path)))
    finally:
        stop.set()
        sprayer.join(30)
    assert results["5550301"].phase_e_status == T30_ERR_OK, results["5550301"]
    assert not results["5550301"].gateway_reinvite
    assert results["5550302"].bye_sent
    assert results["5550303"].bye_from_gateway  # the gateway gave up and hung up
    metas = gateway.wait_for_faxes(3, timeout=30)

    peer = fax_by_caller(metas, "5550301")
    assert peer["status"] == "received"
    assert_pages_identical(gateway, peer, plans["5550301"].pages, 204, 196, tmp_path)

    partial = fax_by_caller(metas, "5550302")
    assert partial["status"] == "partial" and "hung up" in partial["reason"], partial
    assert len(partial["pages"]) == 1
    assert_pages_identical(gateway, partial, plans["5550302"].pages[:1], 204, 196, tmp_path)

    silent = fax_by_caller(metas, "5550303")
    assert silent["status"] == "failed" and silent["reason"].startswith("T.30 RX_T2EXP"), silent
    assert silent["pages"] == [] and "pdf" not in silent["files"]

    posts = webhook_receiver.wait_for(lambda posts: len(posts) >= 3, timeout=20)
    types = {json.loads(p.body)["data"]["sip"]["caller"]: json.loads(p.body)["type"] for p in posts}
    assert types == {"5550301": "fax.received", "5550302": "fax.received", "5550303": "fax.failed"}
    # Still serving after all that junk.
    [after] = run_calls(gateway, [CallPlan(pages=source_pages(9, 1), mode="audio-reinvite", reinvite_after=0.2,
                                           caller="5550304", seed=9)], tmp_path)
    assert after.phase_e_status == T30_ERR_OK


def test_caller_outside_allow_from_is_refused(tmp_path):
    gateway = GatewayProcess(tmp_path, sip_extra='allow_from = ["10.0.0.0/8"]').start()
    try:
        result = FarEnd(gateway.sip_address, CallPlan(pages=source_pages(30, 1), max_seconds=10), tmp_path).run()
        assert result.invite_status == 403
        assert gateway.faxes() == []
    finally:
        gateway.stop()


def test_trunk_registers_with_its_registrar(tmp_path):
    """A [[sip.trunks]] entry sends REGISTER; a hand-written registrar answers 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as registrar:
        registrar.bind(("127.0.0.1", 0))
        registrar.settimeout(10)
        trunk = f"""
[[sip.trunks]]
name = "carrier"
registrar = "sip:127.0.0.1:{registrar.getsockname()[1]}"
username = "fax"
expires = 600
"""
        gateway = GatewayProcess(tmp_path, sip_extra=trunk).start()
        try:
            data, source = registrar.recvfrom(65535)
            first, headers, _ = parse_sip(data)
            assert first.startswith("REGISTER sip:127.0.0.1")
            response = "\r\n".join(
                ["SIP/2.0 200 OK"] + [f"Via: {v}" for v in headers["via"]]
                + [f"From: {headers['from'][0]}", f"To: {headers['to'][0]};tag=reg1",
                   f"Call-ID: {headers['call-id'][0]}", f"CSeq: {headers['cseq'][0]}",
                   f"Contact: {headers['contact'][0]};expires=600", "Expires: 600", "Content-Length: 0"]) + "\r\n\r\n"
            registrar.sendto(response.encode(), source)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "registration_ok" not in gateway.log_text():
                time.sleep(0.05)
            [event] = [e for e in gateway.log_events() if e["event"] == "registration_ok"]
            assert event["trunk"] == "carrier" and event["expires"] > 0
        finally:
            gateway.stop()
