"""The call session on a real loopback socket: our MCF waits until the page is on disk."""

from __future__ import annotations

import random
import socket

import trio

from t38gw import archive
from t38gw.config import Route, T38Config
from t38gw.faxrecord import InboundFax
from t38gw.session import FaxSession, T38Session
from t38gw.t30 import Fcf, ReceiverConfig, T30Frame
from t38gw.t30.dcs import Compression, Modulation
from tests.t30 import scripted as s
from tests.t30.pages import random_page
from udptl.codec import encode_ifp
from udptl.endpoint import PortPool
from udptl.ifp import FieldType
from udptl.receiver import IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender
from tests.support.ports import free_range

WRITE_SECONDS = 2.0  # longer than the 1 s V.21 preamble before our MCF frame


def run_one_page_call(tmp_path, write_record) -> tuple[list[float], FaxSession]:
    """A scripted sender sends one MH page and EOP to a session on a real socket; returns
    when our MCF was seen (if ever) and the session."""
    bitmap = random_page(random.Random(3), 1728, 100)
    coded = s.coded_page(bitmap, 1728, 100, Compression.MH)
    mcf_at: list[float] = []
    sessions: list[FaxSession] = []

    async def finish(session) -> None:
        pass

    async def main() -> None:
        low, high = free_range(20)
        endpoint = await PortPool(low, high, host="127.0.0.1").open()
        peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await peer.bind(("127.0.0.1", 0))
        record = InboundFax(fax_id="01a21438-6359-7817-b310-bde014280622", started_at=1_764_000_000.0,
                            root=tmp_path, formats=("tiff",), sip={"call_id": "c1"}, route_index=None, route=Route())
        session = FaxSession(record=record, endpoint=endpoint,
                             receiver_config=ReceiverConfig(local_ident="+1 555 0100", send_ced=False),
                             t38_settings=T38Config(), rng=random.Random(1), write_record=write_record,
                             finish_record=finish)
        sessions.append(session)
        session.t38_ready(T38Session(remote=peer.getsockname(), version=0, max_bitrate=14400, error_correction="none",
                                     rate_management="transferredTCF", peer_max_datagram=1400))
        sender = UdptlSender(error_correction="none", max_datagram=1400)
        receiver = UdptlReceiver(0)
        mcf = T30Frame(Fcf.MCF)

        async def listen() -> None:
            while True:
                data = await peer.recv(2048)
                for item in receiver.datagram_received(data, trio.current_time()):
                    if not isinstance(item, IfpReceived) or item.packet is None:
                        continue
                    for field in item.packet.fields or ():
                        if field.field_type is FieldType.HDLC_DATA and T30Frame.from_wire(field.data).fcf == mcf.fcf:
                            mcf_at.append(trio.current_time())
                            session.sip_ended("test over")

        async def send(packets) -> None:
            for packet in packets:
                await peer.sendto(sender.datagram_for(encode_ifp(packet, 0)), ("127.0.0.1", endpoint.port))
                await trio.sleep(0.01)

        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run)
                nursery.start_soon(listen)
                await trio.sleep(1.5)  # our DIS goes out
                await send(s.dcs_sequence(Modulation.V17_14400))
                await send(s.tcf(Modulation.V17_14400))
                await trio.sleep(1.5)  # CFR
                await send(s.image_carrier(Modulation.V17_14400, coded))
                await send(s.control(s.frame(Fcf.EOP)))
                await session.done.wait()
                nursery.cancel_scope.cancel()
        peer.close()

    trio.run(main)
    return mcf_at, sessions[0]


def test_mcf_leaves_only_after_the_page_is_written(tmp_path):
    written_at: list[float] = []

    async def slow_write(record, pages, meta) -> None:
        await trio.sleep(WRITE_SECONDS)  # a slow disk
        await trio.to_thread.run_sync(record.write, pages, meta)
        written_at.append(trio.current_time())

    mcf_at, _ = run_one_page_call(tmp_path, slow_write)
    assert written_at and mcf_at, (written_at, mcf_at)
    assert mcf_at[0] >= written_at[0]
    # The confirmed page is in the page journal (fax.tif appears when the fax is finished).
    assert len(list(tmp_path.rglob(archive.JOURNAL_NAME))) == 1


def test_a_page_that_cannot_be_stored_is_never_confirmed(tmp_path):
    async def failing_write(record, pages, meta) -> None:
        raise OSError(28, "No space left on device")

    mcf_at, session = run_one_page_call(tmp_path, failing_write)
    assert mcf_at == []
    assert "archive write failed" in session.failure and "not confirmed" in session.failure


def test_ifps_are_split_to_fit_a_small_t38faxmaxdatagram():
    """A peer declaring T38FaxMaxDatagram 72 gets HDLC frames in several hdlc-data chunks
    (T.38 clause 7), never an IFP larger than the sender's max_ifp."""
    from udptl.codec import decode_ifp, encode_ifp
    from udptl.ifp import DataField, FieldType, IfpPacket, T30Data
    from udptl.sender import UdptlSender
    from t38gw.t30.t38_io import split_to_fit

    sender = UdptlSender(error_correction="redundancy", redundancy_depth=3, max_datagram=72)
    frame = bytes([0xFF, 0x13, 0x3D]) + bytes(range(32))  # a PPR: FCF + 32-octet frame map
    packet = IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, frame), DataField(FieldType.HDLC_FCS_OK)))
    pieces = split_to_fit(packet, 0, sender.max_ifp)
    assert len(pieces) > 1 and all(len(p) <= sender.max_ifp for p in pieces)
    decoded = [decode_ifp(p, 0) for p in pieces]
    assert b"".join(f.data for d in decoded for f in d.fields if f.field_type is FieldType.HDLC_DATA) == frame
    assert decoded[-1].fields[-1].field_type is FieldType.HDLC_FCS_OK
    assert all(len(sender.datagram_for(p)) <= 72 for p in pieces)
    small = IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, frame[:5]),))
    assert split_to_fit(small, 0, sender.max_ifp) == [encode_ifp(small, 0)]
