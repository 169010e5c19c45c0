"""Hardening end to end (real sockets, real time): a hostile host on the network, a
trunk-routed call re-routed after phase B, limits, and what is left on disk."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time

import httpx
import pytest

from tests.e2e.farend import CallPlan, FarEnd
from tests.e2e.support import GatewayProcess, WebhookReceiver
from tests.e2e.test_inbound import assert_pages_identical, run_calls, source_pages
from tests.peers.spandsp import T30_ERR_OK
from udptl.codec import UdptlPacket, encode_ifp, encode_udptl
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator

pytestmark = pytest.mark.realtime

ATTACKER = "127.0.0.2"


def attacker_datagrams() -> list[bytes]:
    """Valid UDPTL a hijacker would send: a V.21 preamble, then a DCN frame (T.30 5.3.6.1.8)
    that would end the call if it were believed, at sequence numbers a real stream uses."""
    preamble = encode_ifp(IfpPacket(T30Indicator.V21_PREAMBLE), 0)
    dcn = encode_ifp(IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, bytes((0xFF, 0x13, 0xFB))),
                                             DataField(FieldType.HDLC_FCS_OK_SIG_END))), 0)
    return [encode_udptl(UdptlPacket(seq, preamble if seq % 2 == 0 else dcn)) for seq in range(4096)]


def spray(sock: socket.socket, ports: tuple[int, int], stop: threading.Event, sent: list[int]) -> None:
    """From ``sock`` (on another loopback address), send valid UDPTL to every UDPTL port of
    the gateway every 2 ms until ``stop`` (bounded: at most 60 s)."""
    datagrams = attacker_datagrams()
    deadline = time.monotonic() + 60
    index = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for port in range(ports[0], ports[1] + 1):
            sock.sendto(datagrams[index % len(datagrams)], ("127.0.0.1", port))
            sent[0] += 1
        index += 1
        time.sleep(0.002)


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


def test_hijacker_on_another_address_gets_nothing_and_changes_nothing(tmp_path):
    """A host outside the call sprays valid UDPTL (with DCNs) at the call's port from before
    the call starts: the fax is pixel-identical, the datagrams are counted, nothing is sent
    to the attacker, and its source is logged once."""
    gateway = GatewayProcess(tmp_path, udptl_span=2).start()
    stop, sent = threading.Event(), [0]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            # The attacker listens on the socket it sprays from: it must never hear the gateway.
            attacker.bind((ATTACKER, 0))
            sprayer = threading.Thread(target=spray, args=(attacker, gateway.udptl_ports, stop, sent))
            sprayer.start()
            try:
                time.sleep(0.3)
                pages = source_pages(40, 2)
                [result] = run_calls(gateway, [CallPlan(pages=pages, ecm=True, caller="5550401", seed=40)], tmp_path)
            finally:
                stop.set()
                sprayer.join(70)
            assert result.invite_status == 200, result
            assert result.phase_e_status == T30_ERR_OK, (result, gateway.log_text()[-3000:])
            [meta] = gateway.wait_for_faxes(1, timeout=15)
            assert meta["status"] == "received", meta
            assert_pages_identical(gateway, meta, pages, 204, 196, tmp_path)
            assert sent[0] > 100
            attacker.setblocking(False)
            with pytest.raises(BlockingIOError):
                attacker.recvfrom(65535)  # nothing of the fax ever went to the attacker
            metrics = httpx.get(f"{gateway.api}/metrics", timeout=5).text
            [foreign] = [line for line in metrics.splitlines() if line.startswith("t38gw_udptl_foreign_datagrams_total ")]
            assert float(foreign.split()[1]) > 0, metrics
            logged = [e for e in gateway.log_events() if e.get("event") == "udptl_foreign_source"]
            assert len(logged) == 1 and logged[0]["source"].startswith(ATTACKER), logged
    finally:
        stop.set()
        gateway.stop()


ROUTES_BY_LINE = r"""
[[webhooks]]
name = "line"
url = "{url}"
secret = "{secret}"
[[routes]]
trunk = "udp"
archive_subdir = "udp-line"
webhook = "line"
[[routes]]
tsi = '^\+1 555 0199$'
archive_subdir = "by-tsi"
[[routes]]
"""


def test_trunk_routed_call_stays_on_its_route_after_phase_b(tmp_path, webhook_receiver):
    """The review's wrong-recipient bug: the TSI re-routing forgot the trunk, so a call that
    came in on the "udp" line went to the TSI's folder (and webhook)."""
    from tests.e2e.support import SECRET

    gateway = GatewayProcess(tmp_path, extra_config=ROUTES_BY_LINE.format(url=webhook_receiver.url, secret=SECRET))
    gateway.start()
    try:
        pages = source_pages(41, 1)
        [result] = run_calls(gateway, [CallPlan(pages=pages, ident="+1 555 0199", caller="5550402", seed=41)],
                             tmp_path)
        assert result.phase_e_status == T30_ERR_OK, result
        [meta] = gateway.wait_for_faxes(1, timeout=15)
        assert meta["route"] == "routes[0]", meta
        assert meta["sip"]["trunk"] == "udp"
        assert gateway.folder(meta).relative_to(gateway.workdir / "archive").parts[0] == "udp-line"
        [post] = webhook_receiver.wait_for(lambda posts: posts, timeout=20)
        assert json.loads(post.body)["data"]["route"] == "routes[0]"
    finally:
        gateway.stop()


def test_limits_max_calls_and_pages_and_files_are_private(tmp_path):
    """limits.max_calls = 1: a second caller during a fax gets 503; limits.max_pages_per_call
    = 2: the first caller's third page is never taken, its two pages are kept as partial;
    every file and folder the gateway wrote is private to its user."""
    gateway = GatewayProcess(tmp_path, extra_config="[limits]\nmax_calls = 1\nmax_pages_per_call = 2\n").start()
    try:
        first = CallPlan(pages=source_pages(42, 3), caller="5550403", seed=42)
        second = CallPlan(pages=source_pages(43, 1), caller="5550404", seed=43, max_seconds=15)
        results: list = [None, None]

        def call(index: int, plan: CallPlan, delay: float) -> None:
            time.sleep(delay)
            results[index] = FarEnd(gateway.sip_address, plan, tmp_path).run()

        threads = [threading.Thread(target=call, args=(0, first, 0.0)),
                   threading.Thread(target=call, args=(1, second, 2.0))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert results[1].invite_status == 503, results[1]
        assert results[0].invite_status == 200 and results[0].phase_e_status != T30_ERR_OK, results[0]
        [meta] = gateway.wait_for_faxes(1, timeout=15)
        assert meta["status"] == "partial" and "page limit of 2 pages" in meta["reason"], meta
        assert_pages_identical(gateway, meta, first.pages[:2], 204, 196, tmp_path)
        refused = [e for e in gateway.log_events() if e.get("event") == "call_refused"]
        assert refused and "max_calls" in refused[0]["reason"]
        folder = gateway.folder(meta)
        archive_root = gateway.workdir / "archive"
        for path in [folder, *folder.parents]:
            if path == archive_root.parent:
                break
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
        for path in folder.iterdir():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        for name in os.listdir(gateway.workdir):
            if name.startswith("spool.db"):
                assert stat.S_IMODE(os.stat(gateway.workdir / name).st_mode) == 0o600, name
    finally:
        gateway.stop()
