"""A tiny reader of classic libpcap files: UDP datagrams over Ethernet or Linux SLL (shared by the udptl and sip capture tests).

Enough for the captures in the shared test data: IPv4 (and IPv6) in Ethernet II (with
802.1Q tags) or Linux "cooked" (SLL) frames; nothing is reassembled.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    frame: int  # 1-based, as tshark numbers frames
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def _ip_text(raw: bytes) -> str:
    if len(raw) == 4:
        return ".".join(str(octet) for octet in raw)
    return ":".join(f"{raw[index]:02x}{raw[index + 1]:02x}" for index in range(0, 16, 2))


def read_udp(path: Path) -> list[UdpDatagram]:
    """Every UDP datagram in a classic pcap file, in capture order."""
    data = Path(path).read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nanoseconds = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL):
        raise ValueError(f"{path}: link type {linktype} not supported")
    datagrams = []
    offset = 24
    frame = 0
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        offset += 16
        packet = data[offset : offset + captured]
        offset += captured
        frame += 1
        if len(packet) < captured:
            break  # the file was cut short
        time = seconds + fraction / (1e9 if nanoseconds else 1e6)
        if linktype == LINKTYPE_ETHERNET:
            ethertype, position = struct.unpack(">H", packet[12:14])[0], 14
            while ethertype in (0x8100, 0x88A8) and len(packet) >= position + 4:
                ethertype, position = struct.unpack(">H", packet[position + 2 : position + 4])[0], position + 4
        else:
            ethertype, position = struct.unpack(">H", packet[14:16])[0], 16
        datagram = _udp(packet, position, ethertype)
        if datagram is not None:
            src, dst, sport, dport, payload = datagram
            datagrams.append(UdpDatagram(frame, time, src, sport, dst, dport, payload))
    return datagrams


def _udp(packet: bytes, position: int, ethertype: int):
    if ethertype == 0x0800 and len(packet) >= position + 20:
        header = packet[position] & 0x0F
        protocol = packet[position + 9]
        total = struct.unpack(">H", packet[position + 2 : position + 4])[0]
        fragment = struct.unpack(">H", packet[position + 6 : position + 8])[0]
        if protocol != 17 or fragment & 0x1FFF:
            return None
        src, dst = packet[position + 12 : position + 16], packet[position + 16 : position + 20]
        start = position + header * 4
        end = min(len(packet), position + total)
    elif ethertype == 0x86DD and len(packet) >= position + 40:
        if packet[position + 6] != 17:
            return None
        src, dst = packet[position + 8 : position + 24], packet[position + 24 : position + 40]
        start = position + 40
        end = min(len(packet), start + struct.unpack(">H", packet[position + 4 : position + 6])[0])
    else:
        return None
    if end < start + 8:
        return None
    sport, dport, length = struct.unpack(">HHH", packet[start : start + 6])
    payload = packet[start + 8 : min(end, start + length)]
    return _ip_text(src), _ip_text(dst), sport, dport, payload


SIP_STARTS = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ", b"PRACK ",
              b"UPDATE ", b"INFO ", b"NOTIFY ", b"SUBSCRIBE ", b"REFER ", b"MESSAGE ", b"SIP/2.0 ")


def sip_datagrams(path: Path) -> list[UdpDatagram]:
    """The datagrams whose payload starts like a SIP message."""
    return [d for d in read_udp(path) if d.payload.startswith(SIP_STARTS)]
