"""Record a G.711 u-law fax SENDER as RTP in a pcap: tests/vectors/g711u_fax_sender.pcap.

SpanDSP's audio fax terminal sending one page (``fax_init``, calling party, ECM off) runs
against SpanDSP's audio fax terminal receiving it (answering party), back to back through
G.711 u-law, in simulated time, 20 ms per step, over a line with 240 ms of delay each way
(see PATH_DELAY_TICKS for why); the receiver starts 1 s after the sender (an answering
gateway's first audio reaches the caller a moment after the call is answered).  Only the sender's audio is recorded: one RTP packet (RFC 3550 5.1 header, PT 0
PCMU, 160 octets, sequence +1, timestamp +160) every 20 ms, from the first packet until the
sender's T.30 reached phase E, each wrapped in Ethernet/IPv4/UDP headers built here and
stamped at 20 ms spacing in a libpcap file (magic a1b2c3d4, version 2.4, LINKTYPE_ETHERNET).

SIPp's ``play_pcap_audio`` replays it with that timing to the media address in the other
side's SDP (it rewrites addresses and ports).  The replay cannot listen: it works against
a receiver only when the receiver answers at the times SpanDSP's did (T.30's half-duplex
turn-taking), which is why the recording is non-ECM (one page, no per-block answers).

Usage (from the repository root; deterministic: SpanDSP uses no clock or randomness in
simulated time, so a rerun writes the same bytes)::

    .venv/bin/python tools/record_audio_fax_pcap.py [OUTPUT.pcap]
"""

from __future__ import annotations

import struct
from collections import deque
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal, make_fax_tiff, read_fax_tiff  # noqa: E402
from tests.peers.spandsp_audio import SpandspAudioTerminal  # noqa: E402
from tests.t38gw.t30.pages import chart_page  # noqa: E402

OUTPUT = REPO / "tests" / "vectors" / "g711u_fax_sender.pcap"
PAGE_WIDTH = 1728
PAGE_ROWS = 300  # the top of ITU-T T.24 chart 1 at 204x196 dpi: a short page
SENDER_IDENT = "+1 555 0199"
RECEIVER_IDENT = "+1 555 0100"
RECEIVER_ANSWERS_AFTER_TICKS = 50  # 1 s
# 240 ms one way (ITU-T G.114: under 400 ms is acceptable for planning): the recorded sender
# answers each of the receiver's responses (CFR, MCF) 480 ms later than on a zero-delay line.
# A replay cannot hear the gateway, so this is the gateway's margin: its responses come out
# through a 60 ms jitter buffer and paced modems, later than SpanDSP's own receiver's.  With
# no delay the replayed page starts while the gateway is still sending CFR: it misses the
# page's training, receives no image and answers EOP with RTN (measured: RX_DCNNORTN);
# with 160 ms and 300 ms the page arrives.
PATH_DELAY_TICKS = 12
TAIL_TICKS = 25  # 0.5 s of the sender's idle line after phase E
MAX_TICKS = 120 * 50  # 2 min of simulated time: a one-page fax takes well under one

TICK_USEC = 20_000
BLOCK = 160
PT_PCMU = 0
SSRC = 0x5EED0FAC
FIRST_SEQUENCE = 1000
FIRST_TIMESTAMP = 160_000
EPOCH = 1_700_000_000  # the pcap's first timestamp (any fixed second: SIPp uses only the spacing)

# Addresses in the recording (SIPp rewrites them; the UDP ports keep their spacing).
SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")
SRC_IP = bytes([192, 0, 2, 1])  # RFC 5737 documentation addresses
DST_IP = bytes([192, 0, 2, 2])
SRC_PORT = 40000
DST_PORT = 40002

_PCAP_GLOBAL = struct.Struct("<IHHiIII")  # pcap-savefile(5): magic, v2.4, thiszone, sigfigs, snaplen, linktype
_PCAP_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _checksum(data: bytes) -> int:
    """RFC 791 3.1 / RFC 768: the ones' complement of the ones' complement sum."""
    return ~_ones_complement_sum(data) & 0xFFFF


def rtp_packet(sequence: int, timestamp: int, payload: bytes, marker: bool) -> bytes:
    """RFC 3550 5.1 fixed header (V=2, no padding/extension/CSRC), PCMU."""
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | PT_PCMU, sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, SSRC) + payload


def udp_ipv4_ethernet(payload: bytes, identification: int) -> bytes:
    udp_length = 8 + len(payload)
    pseudo = SRC_IP + DST_IP + struct.pack("!BBH", 0, IPPROTO_UDP, udp_length)
    header = struct.pack("!HHHH", SRC_PORT, DST_PORT, udp_length, 0)
    udp_sum = _checksum(pseudo + header + payload) or 0xFFFF  # RFC 768: 0 means "none"
    udp = struct.pack("!HHHH", SRC_PORT, DST_PORT, udp_length, udp_sum) + payload
    # RFC 791 3.1: version 4, IHL 5, total length, DF set, TTL 64, protocol UDP.
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), identification & 0xFFFF, 0x4000, 64,
                     IPPROTO_UDP, 0, SRC_IP, DST_IP)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return DST_MAC + SRC_MAC + struct.pack("!H", ETHERTYPE_IPV4) + ip + udp


def record(workdir: Path, path_delay_ticks: int = PATH_DELAY_TICKS) -> tuple[list[bytes], dict]:
    """Run the fax; return the sender's 20 ms u-law blocks and a summary."""
    page = chart_page(1, PAGE_WIDTH, max_rows=PAGE_ROWS)
    tx_tiff = workdir / "page.tif"
    rx_tiff = workdir / "received.tif"
    make_fax_tiff(tx_tiff, [(page, PAGE_WIDTH, PAGE_ROWS)])
    blocks: list[bytes] = []
    silence = b"\xff" * BLOCK
    with SpandspAudioTerminal(calling_party=True, law="ulaw", ecm=False, tx_tiff=tx_tiff,
                              ident=SENDER_IDENT) as sender, \
            SpandspAudioTerminal(calling_party=False, law="ulaw", ecm=False, rx_tiff=rx_tiff,
                                 ident=RECEIVER_IDENT) as receiver:
        ended_at = None
        # A fixed one-way delay each way (a FIFO of 20 ms blocks, silence while it fills).
        to_receiver = deque([silence] * path_delay_ticks)
        to_sender = deque([silence] * path_delay_ticks)
        for tick in range(MAX_TICKS):
            from_sender = sender.tx_audio()
            blocks.append(from_sender)
            to_receiver.append(from_sender)
            answered = tick >= RECEIVER_ANSWERS_AFTER_TICKS
            arriving = to_receiver.popleft()
            if answered:
                receiver.rx_audio(arriving)
            to_sender.append(receiver.tx_audio() if answered else silence)
            sender.rx_audio(to_sender.popleft())
            if ended_at is None and sender.phase_e_status is not None:
                ended_at = tick
            if ended_at is not None and tick - ended_at >= TAIL_TICKS:
                break
        summary = {
            "sender_status": SpandspT38Terminal.completion_code_name(
                sender.phase_e_status if sender.phase_e_status is not None else -1),
            "receiver_status": SpandspT38Terminal.completion_code_name(
                receiver.phase_e_status if receiver.phase_e_status is not None else -1),
            "sender_events": list(sender.events),
            "seconds": len(blocks) * TICK_USEC / 1e6,
        }
        ok = sender.phase_e_status == T30_ERR_OK
    received = read_fax_tiff(rx_tiff) if rx_tiff.exists() else []
    if not ok or len(received) != 1 or received[0][0] != page:
        raise SystemExit(f"the recorded fax did not go through back to back: {summary}, {len(received)} pages")
    return blocks, summary


def write_pcap(path: Path, blocks: list[bytes]) -> None:
    out = bytearray(_PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
    for index, block in enumerate(blocks):
        rtp = rtp_packet(FIRST_SEQUENCE + index, FIRST_TIMESTAMP + BLOCK * index, block, marker=index == 0)
        frame = udp_ipv4_ethernet(rtp, index)
        usec = index * TICK_USEC
        out += _PCAP_RECORD.pack(EPOCH + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else OUTPUT
    with tempfile.TemporaryDirectory() as tmp:
        blocks, summary = record(Path(tmp))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(output, blocks)
    print(f"{output}: {len(blocks)} RTP packets, {summary['seconds']:.2f} s; sender {summary['sender_status']}, "
          f"receiver {summary['receiver_status']}; sender events {summary['sender_events']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
