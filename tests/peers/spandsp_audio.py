"""SpanDSP's AUDIO fax terminal (``fax_state_t``: T.30 + V.21/V.27ter/V.29/V.17 modems)
as a test peer, and the whole audio chain to our engine in simulated time.

The chain a call over a G.711 trunk takes (both directions)::

    SpandspAudioTerminal <-G.711 160 octets/20 ms, loss + delay-> AudioFaxGateway
                                              <-IFP, in-process, paced-> T30Receiver / T30Transmitter

:func:`run_audio_fax` drives it tick by tick (20 ms), no sockets.  Lost audio packets
are bridged with fill-in on both sides (``fax_rx_fillin`` / ``receive_missing``), as a
jitter buffer that knows a packet is missing does; jitter is modelled as the fixed
playout delay a jitter buffer adds (``delay_ticks``).

Nothing here is product code; it reuses tests/peers/spandsp.py's loader and TIFF helpers.
"""

from __future__ import annotations

import ctypes
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import imaging
from t38gw.audiofax import BLOCK_OCTETS, AudioFaxGateway
from t38gw.t30 import CallEnded, Event, PageReceived, ReceiverConfig, T30Receiver
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig
from tests.peers.spandsp import (
    T30_ERR_OK,
    T30_STATS_FIELDS,
    T30_SUPPORT_MODEMS,
    _PHASE_B_D_HANDLER,
    _PHASE_E_HANDLER,
    SpandspT38Terminal,
    _log_sink,
    _OwnsSpandspState,
    _SpanLog,
    load_spandsp,
)
from udptl.codec import decode_ifp, encode_ifp

__all__ = ["AudioRun", "SpandspAudioTerminal", "run_audio_fax", "TICK", "MODEM_NAMES"]

TICK = 0.02
MODEM_NAMES = {"V.27ter": "V27TER", "V.29": "V29", "V.17": "V17"}
_G711_MODES = {"alaw": 0, "ulaw": 1}

_P = ctypes.c_void_p
_I = ctypes.c_int
_AUDIO_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "fax_init": (_P, [_P, _I]),
    "fax_free": (_I, [_P]),
    "fax_rx": (_I, [_P, _P, _I]),
    "fax_rx_fillin": (_I, [_P, _I]),
    "fax_tx": (_I, [_P, _P, _I]),
    "fax_set_transmit_on_idle": (None, [_P, _I]),
    "fax_get_t30_state": (_P, [_P]),
    "fax_get_logging_state": (_P, [_P]),
    "g711_init": (_P, [_P, _I]),
    "g711_free": (_I, [_P]),
    "g711_decode": (_I, [_P, _P, _P, _I]),
    "g711_encode": (_I, [_P, _P, _P, _I]),
}


def _audio_library() -> ctypes.CDLL:
    lib = load_spandsp()
    if not getattr(lib, "_t38gw_audio_prototypes", False):
        for name, (restype, argtypes) in _AUDIO_PROTOTYPES.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
        lib._t38gw_audio_prototypes = True
    return lib


class SpandspAudioTerminal(_OwnsSpandspState):
    """A SpanDSP audio fax terminal speaking G.711 (``law`` "ulaw" / "alaw"), 160 octets a tick.

    ``modems`` restricts its fast modems ({"V.27ter", "V.29", "V.17"}); ``tx_tiff`` makes it
    send, ``rx_tiff`` receive.  :attr:`phase_e_status` is None until phase E.
    """

    def __init__(self, *, calling_party: bool, law: str = "ulaw", ecm: bool = True,
                 modems=frozenset(MODEM_NAMES), tx_tiff=None, rx_tiff=None, ident: str = "", log=False) -> None:
        self._lib = lib = _audio_library()
        self.phase_e_status: int | None = None
        self.events: list[tuple[str, int]] = []
        self._phase_b_handler = _PHASE_B_D_HANDLER(self._on_phase_b)
        self._phase_d_handler = _PHASE_B_D_HANDLER(self._on_phase_d)
        self._phase_e_handler = _PHASE_E_HANDLER(self._on_phase_e)
        self._linear = (ctypes.c_int16 * BLOCK_OCTETS)()
        self._octets = ctypes.create_string_buffer(BLOCK_OCTETS)
        self._g711_in = self._g711_out = None
        self._state = lib.fax_init(None, int(calling_party))
        if not self._state:
            raise MemoryError("fax_init returned NULL")
        self._g711_in = lib.g711_init(None, _G711_MODES[law])
        self._g711_out = lib.g711_init(None, _G711_MODES[law])
        lib.fax_set_transmit_on_idle(self._state, 1)
        t30 = self.t30_state = lib.fax_get_t30_state(self._state)
        mask = 0
        for name in modems:
            mask |= T30_SUPPORT_MODEMS[MODEM_NAMES[name]]
        lib.t30_set_supported_modems(t30, mask)
        lib.t30_set_ecm_capability(t30, int(ecm))
        if ident:
            lib.t30_set_tx_ident(t30, ident.encode("ascii"))
        self._tx_tiff = os.fsencode(tx_tiff) if tx_tiff is not None else None
        self._rx_tiff = os.fsencode(rx_tiff) if rx_tiff is not None else None
        if self._tx_tiff is not None:
            lib.t30_set_tx_file(t30, self._tx_tiff, -1, -1)
        if self._rx_tiff is not None:
            lib.t30_set_rx_file(t30, self._rx_tiff, -1)
        lib.t30_set_phase_b_handler(t30, self._phase_b_handler, None)
        lib.t30_set_phase_d_handler(t30, self._phase_d_handler, None)
        lib.t30_set_phase_e_handler(t30, self._phase_e_handler, None)
        self._log = None
        sink = _log_sink(log)
        if sink is not None:
            self._log = _SpanLog(sink)
            role = "audio-caller" if calling_party else "audio-answerer"
            self._log.attach(lib, lib.t30_get_logging_state(t30), f"{role}-t30")
            self._log.attach(lib, lib.fax_get_logging_state(self._state), f"{role}-fax")

    def _on_phase_b(self, _s, _user, result) -> int:
        self.events.append(("phase_b", result))
        return T30_ERR_OK

    def _on_phase_d(self, _s, _user, result) -> int:
        self.events.append(("phase_d", result))
        return T30_ERR_OK

    def _on_phase_e(self, _s, _user, code) -> None:
        self.events.append(("phase_e", code))
        self.phase_e_status = code

    def rx_audio(self, g711: bytes) -> None:
        self._check_open()
        self._octets.raw = g711
        self._lib.g711_decode(self._g711_in, self._linear, self._octets, BLOCK_OCTETS)
        self._lib.fax_rx(self._state, self._linear, BLOCK_OCTETS)

    def rx_missing(self) -> None:
        self._check_open()
        self._lib.fax_rx_fillin(self._state, BLOCK_OCTETS)

    def tx_audio(self) -> bytes:
        self._check_open()
        produced = self._lib.fax_tx(self._state, self._linear, BLOCK_OCTETS)
        for i in range(max(produced, 0), BLOCK_OCTETS):
            self._linear[i] = 0
        self._lib.g711_encode(self._g711_out, self._octets, self._linear, BLOCK_OCTETS)
        return self._octets.raw

    def stats(self) -> dict[str, int]:
        self._check_open()
        buffer = (ctypes.c_int * 64)()  # oversized: 0.0.6's t30_stats_t differs from newer headers
        self._lib.t30_get_transfer_statistics(self.t30_state, buffer)
        return dict(zip(T30_STATS_FIELDS, buffer[: len(T30_STATS_FIELDS)]))

    def _check_open(self) -> None:
        if not self._state:
            raise ValueError("SpandspAudioTerminal is closed")

    def close(self) -> None:
        if getattr(self, "_state", None):
            self._lib.fax_free(self._state)
            self._state = None
            self.t30_state = None
        for name in ("_g711_in", "_g711_out"):
            if getattr(self, name, None):
                self._lib.g711_free(getattr(self, name))
                setattr(self, name, None)


# ---------------------------------------------------------------------------------------
# The whole chain in simulated time


class _AudioPath:
    """One direction of RTP audio: seeded loss, then a fixed playout delay (jitter buffer)."""

    def __init__(self, loss: float, rng: random.Random, delay_ticks: int) -> None:
        self.loss = loss
        self.rng = rng
        # None marks a block the jitter buffer knows is missing (lost).
        self.line: deque[bytes | None] = deque([b""] * delay_ticks)
        self.sent = 0
        self.lost = 0

    def carry(self, block: bytes) -> bytes | None:
        """Put this tick's block in; get the block due out now (b"" while filling, None lost)."""
        self.sent += 1
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            self.line.append(None)
        else:
            self.line.append(block)
        return self.line.popleft()


@dataclass
class AudioRun:
    direction: str  # "receive" (SpanDSP sends to our T30Receiver) or "send" (our T30Transmitter)
    spandsp_status: int | None
    events: list[Event]
    received_tiff_pages: list = field(default_factory=list)  # "send": what SpanDSP wrote
    sim_seconds: float = 0.0
    chain_cpu_seconds: float = 0.0  # G.711 + t38_gateway + our engine (+ IFP codec), not the far end
    blocks_lost: int = 0
    gateway_stats: object = None
    spandsp_stats: dict = field(default_factory=dict)
    spandsp_events: list = field(default_factory=list)

    @property
    def ended(self) -> CallEnded | None:
        found = [e for e in self.events if isinstance(e, CallEnded)]
        return found[-1] if found else None

    @property
    def pages(self) -> list[PageReceived]:
        return [e for e in self.events if isinstance(e, PageReceived)]

    @property
    def spandsp_status_name(self) -> str:
        return SpandspT38Terminal.completion_code_name(self.spandsp_status if self.spandsp_status is not None else -1)


def run_audio_fax(
    tmp_path,
    *,
    direction: str,
    pages_tiff=None,
    pages: list[imaging.Page] | None = None,
    law: str = "ulaw",
    ecm: bool = True,
    spandsp_modems=frozenset(MODEM_NAMES),
    receiver_config: ReceiverConfig | None = None,
    transmitter_config: TransmitterConfig | None = None,
    loss: float = 0.0,
    delay_ticks: int = 1,
    seed: int = 1,
    t38_version: int = 0,
    max_sim_seconds: float = 600.0,
    measure_cpu: bool = False,
    tamper: Callable[[bytes, float], bytes | None] | None = None,
    log=False,
) -> AudioRun:
    """One whole audio fax call.  ``direction`` "receive": SpanDSP's audio terminal sends
    ``pages_tiff`` to our ``T30Receiver``; "send": our ``T30Transmitter`` sends ``pages``
    to SpanDSP, which writes a TIFF (read back into ``received_tiff_pages``).

    ``loss`` drops audio blocks (each way, seeded); ``delay_ticks`` is the one-way delay in
    20 ms ticks (2 = a 40 ms jitter buffer).  ``tamper(raw_ifp, now)`` may drop (None) or
    rewrite an IFP the gateway hands to our engine.  Each ``OutgoingIfp`` of our engine is
    given to the gateway once, at its time (``repeat`` guards UDPTL loss, which is absent).
    """
    if direction not in ("receive", "send"):
        raise ValueError(direction)
    rng = random.Random(seed)
    to_gateway = _AudioPath(loss, random.Random(rng.random()), delay_ticks)
    to_terminal = _AudioPath(loss, random.Random(rng.random()), delay_ticks)
    rx_tiff = tmp_path / f"audio-rx-{seed}-{rng.randrange(1 << 30)}.tif"
    if direction == "receive":
        engine: T30Receiver | T30Transmitter = T30Receiver(receiver_config or ReceiverConfig(local_ident="+1 555 0100"))
        terminal = SpandspAudioTerminal(calling_party=True, law=law, ecm=ecm, modems=spandsp_modems,
                                        tx_tiff=pages_tiff, ident="+1 555 0199", log=log)
    else:
        engine = T30Transmitter(transmitter_config or TransmitterConfig(local_ident="+1 555 0199"), pages or [])
        terminal = SpandspAudioTerminal(calling_party=False, law=law, ecm=ecm, modems=spandsp_modems,
                                        rx_tiff=rx_tiff, ident="+1 555 0100", log=log)
    events: list[Event] = []
    clock = time.process_time if measure_cpu else None
    cpu = 0.0
    seq = 0
    now = 0.0
    gateway_log = _log_sink(log)
    with terminal, AudioFaxGateway(law=law, t38_version=t38_version, log=gateway_log) as gateway:
        started = clock() if clock else 0.0
        # The gateway reports no CNG/CED: our engine starts on answer.
        events.extend(engine.start(0.0))
        if clock:
            cpu += clock() - started
        for tick in range(int(max_sim_seconds / TICK)):
            now = tick * TICK
            # The far end's 20 ms of audio (its own cost is not the chain's).
            far_block = to_gateway.carry(terminal.tx_audio())
            started = clock() if clock else 0.0
            if far_block is None:
                gateway.receive_missing()
            elif far_block:
                gateway.receive_audio(far_block)
            else:
                gateway.receive_audio(bytes([0xFF if law == "ulaw" else 0xD5]) * BLOCK_OCTETS)
            for raw in gateway.take_ifps():
                data = tamper(raw, now) if tamper is not None else raw
                if data is None:
                    events.extend(engine.ifps_lost(1, now))
                    continue
                events.extend(engine.ifp_received(decode_ifp(data, t38_version), now))
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                events.extend(engine.handle_timer(now))
            for out in engine.ifps_to_send(now):
                gateway.receive_ifp(encode_ifp(out.packet, t38_version), seq)
                seq += 1
            block = gateway.send_audio()
            if clock:
                cpu += clock() - started
            near_block = to_terminal.carry(block)
            if near_block is None:
                terminal.rx_missing()
            elif near_block:
                terminal.rx_audio(near_block)
            if engine.finished and terminal.phase_e_status is not None:
                break
        gateway_stats = gateway.stats()
        status = terminal.phase_e_status
        spandsp_stats = terminal.stats()
        spandsp_events = list(terminal.events)
    received = []
    if direction == "send" and rx_tiff.exists():
        from tests.peers.spandsp import read_fax_tiff

        received = read_fax_tiff(rx_tiff)
    return AudioRun(direction, status, events, received, now, cpu, to_gateway.lost + to_terminal.lost,
                    gateway_stats, spandsp_stats, spandsp_events)
