"""A small reader for classic libpcap files: Ethernet/Linux-SLL, IPv4, UDP payloads.

Used to take the SIP messages out of the shared captures at test time (the captures are
never copied into the repository).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UdpDatagram:
    frame: int
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def udp_datagrams(path: Path) -> list[UdpDatagram]:
    """Every unfragmented IPv4/UDP datagram in the file, with its 1-based frame number."""
    data = path.read_bytes()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path} is not a classic pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset = 24
    frame = 0
    out: list[UdpDatagram] = []
    while offset + 16 <= len(data):
        seconds, micros, captured, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        offset += 16
        packet = data[offset : offset + captured]
        offset += captured
        frame += 1
        if linktype == 1:  # Ethernet
            ethertype = struct.unpack(">H", packet[12:14])[0]
            ip_start = 14
            if ethertype == 0x8100:  # 802.1Q
                ethertype = struct.unpack(">H", packet[16:18])[0]
                ip_start = 18
        elif linktype == 113:  # Linux cooked
            ethertype = struct.unpack(">H", packet[14:16])[0]
            ip_start = 16
        else:
            raise ValueError(f"unsupported link type {linktype}")
        if ethertype != 0x0800 or len(packet) < ip_start + 20:
            continue
        ip = packet[ip_start:]
        header_length = (ip[0] & 0x0F) * 4
        total_length = struct.unpack(">H", ip[2:4])[0]
        flags_fragment = struct.unpack(">H", ip[6:8])[0]
        if ip[9] != 17 or flags_fragment & 0x3FFF:
            continue
        udp = ip[header_length:total_length]
        src_port, dst_port, udp_length = struct.unpack(">HHH", udp[:6])
        out.append(
            UdpDatagram(
                frame,
                seconds + micros / 1e6,
                (_ip(ip[12:16]), src_port),
                (_ip(ip[16:20]), dst_port),
                bytes(udp[8:udp_length]),
            )
        )
    return out


SIP_STARTS = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ", b"PRACK ",
              b"UPDATE ", b"INFO ", b"NOTIFY ", b"SUBSCRIBE ", b"REFER ", b"MESSAGE ", b"SIP/2.0 ")


def sip_datagrams(path: Path) -> list[UdpDatagram]:
    """The datagrams whose payload starts like a SIP message."""
    return [d for d in udp_datagrams(path) if d.payload.startswith(SIP_STARTS)]
