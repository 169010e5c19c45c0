"""Record a real SpanDSP T.38 fax SENDER against a real ``t38gw serve``, for blind replay.

Writes, for each flavour (ECM with MMR, non-ECM with MR; 14.4k; 1728 x 2286 pels at
204 x 196 dpi, the top of ITU-T T.24 chart 1):

- ``tests/vectors/t38_<flavour>_sender.pcap``: the sender's UDPTL datagrams, exactly the
  bytes it sent (T.38 clause 9.1 packets with its redundancy), each wrapped in
  Ethernet/IPv4/UDP from the fixed port 40000 to 40002 (RFC 5737 addresses) and stamped
  with the time it was sent, relative to the moment the far end received the gateway's
  200 OK to its T.38 INVITE (and sent the ACK): the first pcap record's time is the
  EPOCH plus that offset.  libpcap format (magic a1b2c3d4, v2.4, LINKTYPE_ETHERNET), so
  SIPp's ``play_pcap_image`` and Wireshark read it too.
- ``tests/vectors/t38_<flavour>_sender.json``: what a replayer needs besides the bytes:
  the page the fax carries (``tests/vectors/t38_sender_page.png``), the sender's "turns"
  (the datagrams ending a command the gateway answered: see ``find_turns``), and what the
  recording saw (the gateway's answer delays, the commit of the gateway recorded against).

The sender is ``tests/e2e/farend.py``'s raw-SIP UAC with SpanDSP's T.38 terminal, ticked
in real time (20 ms), calling a ``t38gw serve`` started from ``tests/e2e/support.py``: so
the recorded gaps between the sender's commands are what our gateway actually needed to
answer (a blind replay cannot wait for an answer; it sends at these times).  A recording
is kept only when the call ended OK on both sides and the archived page is identical to
the page sent.

Usage (from the repository root, real time ~30-40 s per flavour)::

    .venv/bin/python tools/record_t38_capture.py [ecm_mmr|nonecm_mr ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.farend import CallPlan, FarEnd  # noqa: E402
from tests.e2e.support import GatewayProcess, tiff_pages  # noqa: E402
from tests.t38gw.t30.pages import chart_page  # noqa: E402
from tools.record_audio_fax_pcap import (  # noqa: E402
    _PCAP_GLOBAL, _PCAP_RECORD, EPOCH, LINKTYPE_ETHERNET, udp_ipv4_ethernet)
from udptl.codec import decode_ifp, decode_udptl  # noqa: E402
from udptl.ifp import FieldType  # noqa: E402

VECTORS = REPO / "tests" / "vectors"
PAGE_PATH = VECTORS / "t38_sender_page.png"
PAGE_WIDTH = 1728
PAGE_ROWS = 2286  # as the capacity measurements in issue 14: 1728 x 2286, fine resolution
X_DPI, Y_DPI = 204, 196
FLAVOURS = {"ecm_mmr": True, "nonecm_mr": False}  # name -> ECM (SpanDSP then picks MMR / MR)
SENDER_IDENT = "+1 555 0199"
# T.38 clause 7.4: these field types end a modem burst (the end of a command, or of the page).
SIG_END = {FieldType.HDLC_SIG_END, FieldType.HDLC_FCS_OK_SIG_END, FieldType.HDLC_FCS_BAD_SIG_END,
           FieldType.T4_NON_ECM_SIG_END}


def capture_path(flavour: str) -> Path:
    return VECTORS / f"t38_{flavour}_sender.pcap"


def meta_path(flavour: str) -> Path:
    return VECTORS / f"t38_{flavour}_sender.json"


def source_page() -> tuple[bytes, int, int]:
    """The page every capture carries, as packed rows (1 = black, MSB first)."""
    return chart_page(1, PAGE_WIDTH, max_rows=PAGE_ROWS), PAGE_WIDTH, PAGE_ROWS


def write_page_png(path: Path, page: tuple[bytes, int, int]) -> None:
    from PIL import Image

    bitmap, width, height = page
    # PIL's mode "1" raw "1;I": 1 bits are black, as in a fax bitmap.
    Image.frombytes("1", (width, height), bitmap, "raw", "1;I").save(path, optimize=True)


def read_page_png(path: Path) -> tuple[bytes, int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("1").tobytes("raw", "1;I"), image.width, image.height


class RecordingFarEnd(FarEnd):
    """The e2e far end, keeping every UDPTL datagram sent and received with its time
    since the gateway's 200 OK (``t38_started_at``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[float, bytes]] = []
        self.received: list[tuple[float, bytes]] = []

    def _on_ifp(self, ifp: bytes, count: int) -> None:
        if self.sender is None or self.media_remote is None or self.t38_started_at is None:
            return
        for _ in range(max(count, 1)):
            datagram = self.sender.datagram_for(ifp)
            self.sent.append((time.monotonic() - self.t38_started_at, datagram))
            self.udptl.sendto(datagram, self.media_remote)

    def _on_udptl(self, data: bytes, fax) -> None:
        if self.t38_started_at is not None:
            self.received.append((time.monotonic() - self.t38_started_at, data))
        super()._on_udptl(data, fax)


def primary_ifp(datagram: bytes):
    return decode_ifp(decode_udptl(datagram).primary, 0)


def ends_burst(datagram: bytes) -> bool:
    packet = primary_ifp(datagram)
    return any(f.field_type in SIG_END for f in packet.fields or ())


def find_turns(sent: list[tuple[float, bytes]], received: list[tuple[float, bytes]]) -> list[dict]:
    """The sender datagrams ending a command the gateway answered.

    A turn is the last sender datagram whose primary IFP ends a modem burst (a *-sig-end
    field: the end of TCF, of a frame sequence such as EOP or PPS, or of a non-ECM page),
    when the next datagram on the line (either way) that is not a bare indicator from
    the sender is the gateway's.  So DCS (followed by the sender's own TCF) is no turn,
    TCF (answered by CFR) and EOP (answered by MCF) are.  ``recorded_answer_s`` is how
    long the recorded gateway took: from that datagram to its first datagram after it.
    """
    events = [(t, "tx", i, d) for i, (t, d) in enumerate(sent)] + [(t, "rx", i, d) for i, (t, d) in enumerate(received)]
    events.sort(key=lambda e: (e[0], e[1] == "rx"))
    turns: list[dict] = []
    candidate: tuple[float, int] | None = None
    for at, direction, index, datagram in events:
        if direction == "tx":
            packet = primary_ifp(datagram)
            if any(f.field_type in SIG_END for f in packet.fields or ()):
                candidate = (at, index)
            elif not packet.is_indicator:
                candidate = None  # the sender talks on: the burst's end was not a turn
        elif candidate is not None:
            turns.append({"index": candidate[1], "at": round(candidate[0], 6),
                          "recorded_answer_s": round(at - candidate[0], 6)})
            candidate = None
    return turns


def write_pcap(path: Path, sent: list[tuple[float, bytes]]) -> None:
    out = bytearray(_PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
    for index, (at, datagram) in enumerate(sent):
        usec = round(at * 1e6)
        frame = udp_ipv4_ethernet(datagram, index)
        out += _PCAP_RECORD.pack(EPOCH + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """(seconds since the answer, UDP payload) of every record of a capture written here."""
    import struct

    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = _PCAP_GLOBAL.unpack_from(data, 0)
    if magic != 0xA1B2C3D4 or linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: not a little-endian microsecond Ethernet pcap")
    pos = _PCAP_GLOBAL.size
    out = []
    while pos < len(data):
        seconds, usec, length, _ = _PCAP_RECORD.unpack_from(data, pos)
        pos += _PCAP_RECORD.size
        frame = data[pos:pos + length]
        pos += length
        ihl = (frame[14] & 0x0F) * 4  # RFC 791 3.1: IHL in 32-bit words
        udp = frame[14 + ihl:]
        (udp_length,) = struct.unpack_from("!H", udp, 4)
        out.append((seconds - EPOCH + usec / 1e6, bytes(udp[8:udp_length])))
    return out


def record(flavour: str, workdir: Path) -> dict:
    page = source_page()
    gateway = GatewayProcess(workdir)
    gateway.start()
    try:
        plan = CallPlan(pages=[page], x_dpi=X_DPI, y_dpi=Y_DPI, ecm=FLAVOURS[flavour], ident=SENDER_IDENT,
                        max_seconds=120)
        far = RecordingFarEnd(gateway.sip_address, plan, workdir)
        result = far.run()
        if result.invite_status != 200 or result.phase_e_status != 0 or result.pages_sent_confirmed != 1:
            raise SystemExit(f"{flavour}: the call did not go through: {result}\n{gateway.log_text()[-3000:]}")
        [meta] = gateway.wait_for_faxes(1, timeout=60)
        archived = tiff_pages(gateway.folder(meta) / "fax.tif")
        if meta.get("status") != "received" or [(b, w, h) for b, w, h, _, _ in archived] != [page]:
            raise SystemExit(f"{flavour}: the archived page differs from the page sent: {meta}")
        t30 = meta.get("t30") or {}
        if t30.get("bit_rate") != 14400 or t30.get("ecm") != FLAVOURS[flavour]:
            raise SystemExit(f"{flavour}: negotiated {t30}, not 14.4k with ECM {FLAVOURS[flavour]}")
        compression = t30.get("compression")
    finally:
        gateway.stop()
    turns = find_turns(far.sent, far.received)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "flavour": flavour, "ecm": FLAVOURS[flavour], "compression": compression, "bit_rate": t30.get("bit_rate"), "modem": t30.get("modem"),
        "page": PAGE_PATH.name, "page_size": [PAGE_WIDTH, PAGE_ROWS], "dpi": [X_DPI, Y_DPI],
        "sender_ident": SENDER_IDENT, "t38_version": 0, "error_correction": "t38UDPRedundancy",
        "datagrams": len(far.sent), "seconds": round(far.sent[-1][0], 3),
        "gateway_datagrams_recorded": len(far.received),
        "turns": turns, "recorded_against_commit": commit,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sent": far.sent,
    }


def main(argv: list[str]) -> int:
    flavours = argv[1:] or list(FLAVOURS)
    VECTORS.mkdir(parents=True, exist_ok=True)
    write_page_png(PAGE_PATH, source_page())
    if read_page_png(PAGE_PATH) != source_page():
        raise SystemExit(f"{PAGE_PATH} does not read back as the page")
    for flavour in flavours:
        with tempfile.TemporaryDirectory(prefix="t38gw-record-") as tmp:
            info = record(flavour, Path(tmp))
        sent = info.pop("sent")
        write_pcap(capture_path(flavour), sent)
        back = read_pcap(capture_path(flavour))
        if [d for _, d in back] != [d for _, d in sent] or max(abs(a - b) for (a, _), (b, _) in zip(back, sent)) > 2e-6:
            raise SystemExit("the pcap does not read back")
        meta_path(flavour).write_text(json.dumps(info, indent=1) + "\n")
        print(f"{capture_path(flavour).relative_to(REPO)}: {info['datagrams']} datagrams over {info['seconds']:.1f} s, "
              f"{info['compression']}, turns {[(t['index'], t['recorded_answer_s']) for t in info['turns']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
