"""T.4 Annex A / T.30 Annex A error-correction blocks: frames in, PPR maps out.

A partial page (block) is up to 256 FCD frames of 64 or 256 octets, numbered 0-255
(T.4 A.3.6.1), sent on the image modem and closed by three RCP frames.  The sender
then asks PPS-x on V.21 carrying [post-page FCF, page, block, frames-1] (T.30 A.4.1).
The receiver answers MCF when every frame 0..frames-1 arrived with a good FCS,
otherwise PPR whose 256-bit FIF has bit ``n`` set for each frame ``n`` still missing
(T.30 A.4.2; bit 1 of the first octet is frame 0).  The sender resends only those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: T.30 A.4.2: the PPR map covers frames 0..255 in 32 octets.
PPR_MAP_OCTETS = 32
MAX_FRAMES = 256


@dataclass
class EcmBlock:
    """One partial page being assembled."""

    page: int
    block: int
    frame_size: int
    frames: dict[int, bytes] = field(default_factory=dict)
    frame_count: int | None = None
    ppr_count: int = 0

    def frame_received(self, number: int, data: bytes) -> bool:
        """A good FCD frame; a repeat of one we hold just replaces it (same content).

        T.4 A.3.6.1: an FCD carries ``frame_size`` octets (only a block's last frame may
        carry fewer).  A longer one cannot be a frame as sent - e.g. the octets of a frame
        cut short on an audio line joined to the next one's, closed by that one's good
        FCS - and is not kept (it stays in the PPR map).  Returns whether it was kept."""
        if not data or len(data) > self.frame_size:
            return False
        self.frames[number] = data
        return True

    def set_frame_count(self, count: int) -> None:
        """Record the count a PPS reports.

        T.30 A.4.1 calls it the number of frames in the block, but SpanDSP and others
        send the number in the last *burst* (smaller after a retransmission), so only the
        largest count seen is believed, as SpanDSP's t30.c does.
        """
        if self.frame_count is None or count > self.frame_count:
            self.frame_count = count

    def missing(self) -> list[int]:
        """Frame numbers 0..count-1 we do not hold (empty when the block is whole).

        A frame shorter than ``frame_size`` that is not the block's last was cut short
        (T.4 A.3.6.1): it is dropped here and asked for again, never decoded."""
        count = self.frame_count or 0
        for n in range(count - 1):
            data = self.frames.get(n)
            if data is not None and len(data) != self.frame_size:
                del self.frames[n]
        return [n for n in range(count) if n not in self.frames]

    def ppr_map(self) -> bytes:
        """The 32-octet PPR FIF: bit ``n`` set for every frame 0-255 we do not hold.

        Frames beyond the block's count are flagged too, as SpanDSP's receiver does
        (t30.c builds the map over all 256 frames; TSB-85 OREN02/OREN03 expect exactly
        that map) - senders resend only frames they sent, so the extra bits are harmless.
        """
        bitmap = bytearray(PPR_MAP_OCTETS)
        for n in range(MAX_FRAMES):
            if n not in self.frames:
                bitmap[n >> 3] |= 1 << (n & 7)
        return bytes(bitmap)

    def data(self) -> bytes:
        """The block's image octets in frame order (only meaningful when whole)."""
        return b"".join(self.frames[n] for n in range(self.frame_count or 0) if n in self.frames)


def frames_in_ppr_map(bitmap: bytes) -> list[int]:
    """Inverse of ``EcmBlock.ppr_map``: the frame numbers a PPR FIF asks for."""
    return [n for n in range(min(len(bitmap), PPR_MAP_OCTETS) * 8) if bitmap[n >> 3] & (1 << (n & 7))]
