"""SIPp sends a fax to `t38gw serve` as G.711 audio: ``audio_fax_pcap_refuses_t38.xml`` replays
tests/vectors/g711u_fax_sender.pcap (a SpanDSP audio fax sender, non-ECM, one page; made by
tools/record_audio_fax_pcap.py) with ``play_pcap_audio`` and refuses the gateway's
re-INVITE to T.38 with 488, so the fax must go on as audio (``[t38] audio_fallback``).

SIPp's exit status is the SIP verdict (answer with PCMU, re-INVITE offering T.38, ACK of
the 488, BYE at the end); the gateway's log and archive show what it did with the audio.
A replay cannot answer the gateway, so the page itself arrives only if the gateway answers
no later than the recorded receiver did (see ``test_the_replayed_page_arrives``).

``play_pcap_audio`` sends through a raw socket: SIPp needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.e2e.support import GatewayProcess, tiff_pages
from tests.interop.sipp.harness import REPO, Case, free_udp_port, sipp_cmd
from tests.t38gw.t30.pages import chart_page

pytestmark = pytest.mark.realtime

SCENARIO = "audio_fax_pcap_refuses_t38"
PCAP = REPO / "tests" / "vectors" / "g711u_fax_sender.pcap"
SIPP_WAIT = 100.0  # SIPp's -timeout below is 90 s; this only catches a hung SIPp
FAX_WAIT = 40.0  # after SIPp ends; a fax whose T.30 went wrong may take ~20 s more to give up
CALL_ID_PREFIX = f"sipp-{SCENARIO}-"
PAGE_ROWS = 300  # the page in the pcap: the top 300 rows of ITU-T chart 1 (tools/record_audio_fax_pcap.py)


@pytest.fixture(scope="module")
def replayed_call(tmp_path_factory):
    """One gateway, one SIPp call replaying the pcap: (SIPp rc, output, errors, gateway, meta)."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: install Debian's sip-tester (make test-deps)")
    tmp = tmp_path_factory.mktemp("sipp-audio")
    (tmp / "gw").mkdir()
    where = tmp / "sipp"
    where.mkdir()
    # The scenario names the pcap relative to SIPp's working directory.
    shutil.copy(PCAP, where / PCAP.name)
    # Audio fallback on (the default).  The re-INVITE to T.38 waits 0.5 s (default: at once):
    # SIPp takes a request only while its scenario stands at that <recv>, and right after the
    # ACK it is still on the <nop> that starts the replay; a re-INVITE landing there aborts
    # the call as "unexpected message" (seen 2 times in ~15 runs on a loaded 2-CPU box).
    gateway = GatewayProcess(tmp / "gw", reinvite_after=0.5).start()
    try:
        target = "{}:{}".format(*gateway.sip_address)
        cmd = [*sipp_cmd(Case(SCENARIO, "uac"), free_udp_port(), target),
               # Later on the command line than the harness's 30 s: it wins.  The fax is 20 s,
               # then T.30 ends and the gateway hangs up.
               "-timeout", "90s",
               "-mp", str(free_udp_port()),  # SIPp's media port: our own, not the shared 6000
               "-cid_str", CALL_ID_PREFIX + "%u-%p@%s"]
        sipp = subprocess.Popen(cmd, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            out, _ = sipp.communicate(timeout=SIPP_WAIT)
        except subprocess.TimeoutExpired:
            sipp.kill()
            out, _ = sipp.communicate(timeout=10)
        errors = "".join(p.read_text(errors="replace") for p in where.glob("*_errors.log"))
        try:
            metas = gateway.wait_for_faxes(1, FAX_WAIT)
        except AssertionError:
            metas = []  # the tests below fail with the whole story (_describe), not this fixture
        mine = [m for m in metas if str(m.get("sip", {}).get("call_id", "")).startswith(CALL_ID_PREFIX)]
        yield sipp.returncode, out.decode(errors="replace"), errors, gateway, mine
    finally:
        gateway.stop()


def _describe(call) -> str:
    rc, out, errors, gateway, metas = call
    # The call's own log lines (the API polling's audit lines would crowd them out).
    call_log = "\n".join(line for line in gateway.log_text().splitlines() if '"event": "audit"' not in line)
    return (f"sipp rc={rc}\n--- sipp errors\n{errors[-3000:]}\n--- sipp stdout tail\n{out[-3000:]}"
            f"\n--- metas\n{json.dumps(metas, indent=1)}\n--- gateway log\n{call_log[-6000:]}")


def _events(gateway: GatewayProcess, name: str) -> list[dict]:
    return [e for e in gateway.log_events()
            if e.get("event") == name and str(e.get("call_id", "")).startswith(CALL_ID_PREFIX)]


def test_sipp_call_refusing_t38_goes_on_as_g711(replayed_call):
    rc, _out, _errors, gateway, metas = replayed_call
    describe = _describe(replayed_call)
    # 0: answered with PCMU, re-INVITE offering m=image ... udptl t38 (0.5 s in), ACK of
    # SIPp's 488, the gateway's BYE within 60 s of that.
    assert rc == 0, describe
    assert len(metas) == 1, describe
    [meta] = metas
    assert meta["direction"] == "inbound" and meta["media"] == "g711u", describe
    # The replayed packets reached the gateway's RTP port (SIPp sends from its media port).
    assert meta["rtp"]["packets_received"] > 0, describe
    assert len(_events(gateway, "t38_reinvite_sent")) == 1, describe
    [refusal] = _events(gateway, "t38_reinvite_refused")
    assert refusal["status"] == 488, describe
    assert not _events(gateway, "t38_started"), describe


def test_the_replayed_page_arrives(replayed_call):
    """The replay cannot hear the gateway: the page arrives only because the recording leaves
    the gateway time to answer (tools/record_audio_fax_pcap.py, PATH_DELAY_TICKS: recorded
    over a 240 ms line; recorded without delay, the gateway misses the page's training and
    answers RTN)."""
    _rc, _out, _errors, gateway, metas = replayed_call
    assert len(metas) == 1, _describe(replayed_call)
    [meta] = metas
    assert meta["status"] == "received" and meta["t30"]["pages"] == 1, _describe(replayed_call)
    assert meta["t30"]["remote_ident"] == "+1 555 0199" and meta["t30"]["ecm"] is False, _describe(replayed_call)
    [(bitmap, width, height, x_dpi, y_dpi)] = tiff_pages(gateway.folder(meta) / "fax.tif")
    assert (width, height, round(x_dpi), round(y_dpi)) == (1728, PAGE_ROWS, 204, 196)
    assert bitmap == chart_page(1, 1728, max_rows=PAGE_ROWS)  # pixel-identical: no bad rows


def test_the_pcap_is_what_the_tool_records(tmp_path):
    """The checked-in vector is reproducible (SpanDSP in simulated time is deterministic)."""
    out = tmp_path / "again.pcap"
    subprocess.run([sys.executable, str(REPO / "tools" / "record_audio_fax_pcap.py"), str(out)],
                   check=True, timeout=120, capture_output=True, cwd=REPO)
    assert out.read_bytes() == PCAP.read_bytes()
