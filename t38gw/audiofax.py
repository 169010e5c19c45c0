"""Audio fax over G.711: SpanDSP's T.38 gateway between RTP audio and our T.30 engine.

When a trunk will not do T.38, the fax comes as G.711 audio over RTP.  This module is the
synchronous core of that path (the runtime edge - RTP, jitter buffer, trio - is
elsewhere)::

    RTP (PCMU/PCMA, 20 ms) <-> jitter buffer <-> AudioFaxGateway <-> IFP <-> T30Receiver
                                                  (G.711 + SpanDSP t38_gateway:
                                                   V.21/V.27ter/V.29/V.17 modems)

One ``AudioFaxGateway`` per call.  Every 20 ms of the call::

    gateway.receive_audio(payload)       # 160 octets of G.711 from the far end...
    gateway.receive_missing()            # ...or this when the packet is lost (fill-in)
    for raw in gateway.take_ifps():      # IFPs the modems produced -> our engine
        events += engine.ifp_received(decode_ifp(raw, version), now)
    for out in engine.ifps_to_send(now): # our IFPs, at the time a modem would send them
        gateway.receive_ifp(encode_ifp(out.packet, version), next_seq())
    rtp_payload = gateway.send_audio()   # 160 octets of G.711 towards the far end

What this path needs (learnt from a prototype that passed):

* The gateway never reports CNG/CED as indicators, so our engine starts on answer.
* IFPs towards the gateway are delivered at the time a modem would send them (the
  engines' ``ifps_to_send(now)`` already paces); nothing is lost in-process, so each
  ``OutgoingIfp`` is given once - its ``repeat`` only guards UDPTL loss.
* A missing audio packet is replaced by ``receive_missing`` (t38_gateway_rx_fillin):
  with fill-in 9/10 ECM faxes passed at 0.1 % loss, with silence 5/10.
* ``transmit_on_idle`` is on: ``send_audio`` always returns a full 20 ms block
  (silence between carriers), as an RTP stream needs.

The binding is ctypes over Debian's libspandsp2 0.0.6.  Every ctypes callback object lives
on its owner until the C state is freed (C would otherwise call freed memory).  When the
library is missing, ``load_spandsp()`` returns None and ``spandsp_unavailable_reason()``
says why: the gateway then refuses the audio fallback with that reason in its log line
and keeps serving T.38.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

from udptl.codec import decode_ifp
from udptl.errors import RemoteProtocolError
from udptl.ifp import FieldType, T30Data

__all__ = [
    "BLOCK_OCTETS",
    "DEFAULT_MODEMS",
    "AudioFaxClosed",
    "AudioFaxGateway",
    "AudioFaxUnavailable",
    "GatewayIfp",
    "GatewayStats",
    "load_spandsp",
    "spandsp_unavailable_reason",
]

#: 20 ms of 8 kHz G.711: one RTP packet (RFC 3551 4.5.14, PCMU/PCMA default ptime).
BLOCK_OCTETS = 160
SAMPLE_RATE = 8000
DEFAULT_MODEMS: frozenset[str] = frozenset({"V.27ter", "V.29", "V.17"})

DEBIAN_LIBRARY_PATH = "/usr/lib/x86_64-linux-gnu/libspandsp.so.2"
LIBRARY_ENV = "T38GW_LIBSPANDSP"

# g711.h enum: G711_ALAW = 0, G711_ULAW = 1.
_G711_MODES = {"alaw": 0, "ulaw": 1}
# t30.h T30_SUPPORT_* modem bits (what t38_gateway_set_supported_modems takes).
_MODEM_BITS = {"V.27ter": 0x01, "V.29": 0x02, "V.17": 0x04}
# logging.h: SPAN_LOG_FLOW plus severity/protocol/tag prefixes.
_SPAN_LOG_FLOW_WITH_PREFIXES = 5 | 0x0400 | 0x0800 | 0x2000
# t38_gateway.h t38_stats_t in 0.0.6: bit_rate, error_correcting_mode, pages_transferred.
# Read into an oversized buffer: a newer library with more fields must not overrun ours.
_STATS_FIELDS = ("bit_rate", "error_correcting_mode", "pages_transferred")
_STATS_BUFFER_INTS = 64
_MAX_IFP_OCTETS = 65535

_P = ctypes.c_void_p
_I = ctypes.c_int
_TX_PACKET_HANDLER = ctypes.CFUNCTYPE(_I, _P, _P, _P, _I, _I)
_LOG_MESSAGE_HANDLER = ctypes.CFUNCTYPE(None, _I, ctypes.c_char_p)

# name: (restype, argtypes).  SpanDSP states are opaque pointers.
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "t38_gateway_init": (_P, [_P, _TX_PACKET_HANDLER, _P]),
    "t38_gateway_free": (_I, [_P]),
    "t38_gateway_rx": (_I, [_P, _P, _I]),
    "t38_gateway_rx_fillin": (_I, [_P, _I]),
    "t38_gateway_tx": (_I, [_P, _P, _I]),
    "t38_gateway_set_ecm_capability": (None, [_P, _I]),
    "t38_gateway_set_transmit_on_idle": (None, [_P, _I]),
    "t38_gateway_set_supported_modems": (None, [_P, _I]),
    "t38_gateway_get_transfer_statistics": (None, [_P, _P]),
    "t38_gateway_get_t38_core_state": (_P, [_P]),
    "t38_gateway_get_logging_state": (_P, [_P]),
    "t38_core_rx_ifp_packet": (_I, [_P, _P, _I, ctypes.c_uint16]),
    "t38_core_get_logging_state": (_P, [_P]),
    "t38_set_t38_version": (None, [_P, _I]),
    "g711_init": (_P, [_P, _I]),
    "g711_free": (_I, [_P]),
    "g711_decode": (_I, [_P, _P, _P, _I]),
    "g711_encode": (_I, [_P, _P, _P, _I]),
    "span_log_set_level": (_I, [_P, _I]),
    "span_log_set_tag": (_I, [_P, ctypes.c_char_p]),
    "span_log_set_message_handler": (None, [_P, _LOG_MESSAGE_HANDLER]),
}

_library: ctypes.CDLL | None = None
_unavailable_reason: str | None = None


class AudioFaxUnavailable(RuntimeError):
    """libspandsp is not installed (or lacks the gateway): no audio fax fallback."""


class AudioFaxClosed(RuntimeError):
    """The gateway was used after ``close()``."""


def load_spandsp() -> ctypes.CDLL | None:
    """libspandsp.so.2 with the prototypes this module calls, or None (see the reason).

    Tried in order: ``$T38GW_LIBSPANDSP``, the linker's ``spandsp``, ``libspandsp.so.2``
    and Debian's path.  The outcome is cached, success or failure.
    """
    global _library, _unavailable_reason
    if _library is not None or _unavailable_reason is not None:
        return _library
    candidates = [os.environ.get(LIBRARY_ENV), ctypes.util.find_library("spandsp"), "libspandsp.so.2",
                  DEBIAN_LIBRARY_PATH]
    errors: list[str] = []
    for candidate in dict.fromkeys(filter(None, candidates)):
        try:
            library = ctypes.CDLL(candidate)
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
            continue
        try:
            for name, (restype, argtypes) in _PROTOTYPES.items():
                function = getattr(library, name)
                function.restype = restype
                function.argtypes = argtypes
        except AttributeError as exc:
            errors.append(f"{candidate}: {exc}")
            continue
        _library = library
        return library
    _unavailable_reason = (f"libspandsp.so.2 not usable ({'; '.join(errors) or 'no candidates'}); "
                           "install libspandsp2 for audio (G.711) fax")
    return None


def spandsp_unavailable_reason() -> str | None:
    """Why ``load_spandsp()`` returned None (None when it loaded or was never tried)."""
    return _unavailable_reason


class GatewayIfp(NamedTuple):
    """One IFP the gateway produced; ``times`` is how often SpanDSP asks for it to be sent
    (its per-category redundancy, the ``count`` of t38_tx_packet_handler_t)."""

    raw: bytes
    times: int


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """``t38_gateway_get_transfer_statistics``: the fast modem's rate (0 before any
    training), whether the call is in ECM, pages passed so far; plus our own counters."""

    bit_rate: int
    ecm: bool
    pages_transferred: int
    blocks_in: int
    blocks_missing: int
    blocks_out: int
    ifps_in: int
    ifps_out: int
    ifps_refused: int


class AudioFaxGateway:
    """SpanDSP's ``t38_gateway`` with G.711 on the audio side: one per call, synchronous.

    ``law`` is the RTP payload ("ulaw" = PCMU, "alaw" = PCMA).  ``ecm`` False makes the
    gateway strip ECM from the DIS it passes on.  ``modems`` restricts the fast modems the
    gateway lets the terminals use (T.30 DIS bits).  ``t38_version`` is the version of
    the IFPs exchanged with our engine (encode/decode ours with the same one).
    ``log`` receives SpanDSP's log lines ``(level, text)`` (off when None).

    Raises AudioFaxUnavailable when libspandsp is missing, ValueError for bad options,
    AudioFaxClosed when used after ``close()``.
    """

    def __init__(
        self,
        *,
        law: str,
        ecm: bool = True,
        modems: frozenset[str] = DEFAULT_MODEMS,
        t38_version: int = 0,
        hold_v21_frames: bool = True,
        log: Callable[[int, str], None] | None = None,
    ) -> None:
        if law not in _G711_MODES:
            raise ValueError(f"law must be one of {sorted(_G711_MODES)}, not {law!r}")
        unknown = set(modems) - set(_MODEM_BITS)
        if unknown or not modems:
            raise ValueError(f"modems must be a non-empty subset of {sorted(_MODEM_BITS)}")
        if t38_version not in range(4):
            raise ValueError(f"t38_version must be 0..3, not {t38_version}")
        lib = load_spandsp()
        if lib is None:
            raise AudioFaxUnavailable(_unavailable_reason or "libspandsp not available")
        self._lib = lib
        self.law = law
        self.t38_version = t38_version
        self._ifps: list[GatewayIfp] = []
        self.hold_v21_frames = hold_v21_frames
        self._held: list[tuple[bytes, int]] = []
        self._callback_error: BaseException | None = None
        self._counters = {"blocks_in": 0, "blocks_missing": 0, "blocks_out": 0, "ifps_in": 0, "ifps_out": 0,
                          "ifps_refused": 0}
        # Reused buffers: one 20 ms block each way.
        self._linear = (ctypes.c_int16 * BLOCK_OCTETS)()
        self._octets = ctypes.create_string_buffer(BLOCK_OCTETS)
        # The callback objects must outlive the C states: they live on self until close().
        self._tx_handler = _TX_PACKET_HANDLER(self._on_tx_packet)
        self._log_handler: Any = None
        self._log_tags: list[ctypes.Array[ctypes.c_char]] = []
        self._gateway: int | None = None
        self._core: int | None = None
        self._g711_decoder: int | None = None
        self._g711_encoder: int | None = None
        try:
            self._gateway = lib.t38_gateway_init(None, self._tx_handler, None)
            if not self._gateway:
                raise MemoryError("t38_gateway_init returned NULL")
            self._core = lib.t38_gateway_get_t38_core_state(self._gateway)
            self._g711_decoder = lib.g711_init(None, _G711_MODES[law])
            self._g711_encoder = lib.g711_init(None, _G711_MODES[law])
            if not self._g711_decoder or not self._g711_encoder:
                raise MemoryError("g711_init returned NULL")
            lib.t38_set_t38_version(self._core, t38_version)
            # Always a full block out, silence between carriers: RTP wants a packet every 20 ms.
            lib.t38_gateway_set_transmit_on_idle(self._gateway, 1)
            modem_mask = 0
            for name in modems:
                modem_mask |= _MODEM_BITS[name]
            lib.t38_gateway_set_supported_modems(self._gateway, modem_mask)
            lib.t38_gateway_set_ecm_capability(self._gateway, int(ecm))
            if log is not None:
                self._attach_log(log)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ C callbacks
    def _on_tx_packet(self, _core: int | None, _user: int | None, buf: int | None, length: int, count: int) -> int:
        # Never let a Python exception unwind into C: keep it, raise it after the call.
        try:
            if buf is None or length <= 0:
                return 0
            self._ifps.append(GatewayIfp(ctypes.string_at(buf, length), count))
            self._counters["ifps_out"] += 1
        except BaseException as exc:
            self._callback_error = self._callback_error or exc
            return -1
        return 0

    def _attach_log(self, sink: Callable[[int, str], None]) -> None:
        def on_message(level: int, text: bytes | None) -> None:
            try:
                sink(level, (text or b"").decode("latin-1").rstrip("\n"))
            except BaseException as exc:
                self._callback_error = self._callback_error or exc

        self._log_handler = _LOG_MESSAGE_HANDLER(on_message)
        lib = self._lib
        for state, tag in ((lib.t38_gateway_get_logging_state(self._gateway), b"gateway"),
                           (lib.t38_core_get_logging_state(self._core), b"gateway-t38")):
            # span_log_set_tag keeps the pointer, not a copy: the tag buffer lives on self.
            tag_buffer = ctypes.create_string_buffer(tag)
            self._log_tags.append(tag_buffer)
            lib.span_log_set_message_handler(state, self._log_handler)
            lib.span_log_set_tag(state, tag_buffer)
            lib.span_log_set_level(state, _SPAN_LOG_FLOW_WITH_PREFIXES)

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    def _open_gateway(self) -> int:
        if not self._gateway:
            raise AudioFaxClosed("AudioFaxGateway is closed")
        return self._gateway

    # ------------------------------------------------------------------ audio side
    def receive_audio(self, g711: bytes) -> None:
        """20 ms of G.711 from the far end (exactly 160 octets) into the modems."""
        gateway = self._open_gateway()
        if len(g711) != BLOCK_OCTETS:
            raise ValueError(f"an audio block is {BLOCK_OCTETS} octets (20 ms), not {len(g711)}")
        self._octets.raw = g711
        self._lib.g711_decode(self._g711_decoder, self._linear, self._octets, BLOCK_OCTETS)
        self._lib.t38_gateway_rx(gateway, self._linear, BLOCK_OCTETS)
        self._counters["blocks_in"] += 1
        self._raise_callback_error()

    def receive_missing(self) -> None:
        """20 ms of far-end audio never arrived: let the modems bridge it (fill-in)."""
        gateway = self._open_gateway()
        self._lib.t38_gateway_rx_fillin(gateway, BLOCK_OCTETS)
        self._counters["blocks_missing"] += 1
        self._raise_callback_error()

    def send_audio(self) -> bytes:
        """The next 20 ms of G.711 towards the far end (always 160 octets)."""
        gateway = self._open_gateway()
        produced = self._lib.t38_gateway_tx(gateway, self._linear, BLOCK_OCTETS)
        if produced < BLOCK_OCTETS:
            # transmit_on_idle should make this impossible; pad with silence all the same.
            ctypes.memset(ctypes.addressof(self._linear) + 2 * max(produced, 0), 0,
                          2 * (BLOCK_OCTETS - max(produced, 0)))
        self._lib.g711_encode(self._g711_encoder, self._octets, self._linear, BLOCK_OCTETS)
        self._counters["blocks_out"] += 1
        self._raise_callback_error()
        return self._octets.raw

    # ------------------------------------------------------------------ IFP side
    def receive_ifp(self, raw: bytes, seq: int) -> None:
        """One IFP from our engine towards the modems; ``seq`` counts up by one per IFP
        (SpanDSP's T.38 core drops repeats and late packets by it).

        With ``hold_v21_frames`` the octets of a V.21 HDLC frame are held until the IFP
        that closes the frame (its FCS field) and then given together.  Our engines send
        a frame's octets when the frame starts and its FCS when it ends; SpanDSP's gateway
        streams V.21 octets to its modem as they come, so it runs dry mid-frame, closes
        the frame itself and drops the carrier when nothing follows at once: the next
        frame of the burst (DIS after CSI) never reaches the line.
        """
        self._open_gateway()
        if not 0 < len(raw) <= _MAX_IFP_OCTETS:
            raise ValueError(f"an IFP is 1..{_MAX_IFP_OCTETS} octets, not {len(raw)}")
        if self.hold_v21_frames:
            if self._is_v21_frame_octets(raw):
                self._held.append((bytes(raw), seq))
                return
            held, self._held = self._held, []
            for held_raw, held_seq in held:
                self._give_ifp(held_raw, held_seq)
        self._give_ifp(raw, seq)

    def _is_v21_frame_octets(self, raw: bytes) -> bool:
        try:
            packet = decode_ifp(raw, self.t38_version)
        except RemoteProtocolError:
            return False
        return (packet.msg is T30Data.V21 and bool(packet.fields)
                and all(f.field_type is FieldType.HDLC_DATA for f in packet.fields or ()))

    def _give_ifp(self, raw: bytes, seq: int) -> None:
        buffer = ctypes.create_string_buffer(raw, len(raw))
        if self._lib.t38_core_rx_ifp_packet(self._core, buffer, len(raw), seq & 0xFFFF) < 0:
            self._counters["ifps_refused"] += 1
        self._counters["ifps_in"] += 1
        self._raise_callback_error()

    def take_ifps(self) -> list[bytes]:
        """The IFPs the gateway produced since the last take, each once, in order."""
        return [ifp.raw for ifp in self.take_ifps_with_counts()]

    def take_ifps_with_counts(self) -> list[GatewayIfp]:
        """As ``take_ifps``, with how many times SpanDSP wants each sent (for UDPTL use)."""
        taken, self._ifps = self._ifps, []
        return taken

    # ------------------------------------------------------------------ state
    def stats(self) -> GatewayStats:
        gateway = self._open_gateway()
        buffer = (ctypes.c_int * _STATS_BUFFER_INTS)()
        self._lib.t38_gateway_get_transfer_statistics(gateway, buffer)
        values = dict(zip(_STATS_FIELDS, buffer[: len(_STATS_FIELDS)]))
        return GatewayStats(bit_rate=values["bit_rate"], ecm=bool(values["error_correcting_mode"]),
                            pages_transferred=values["pages_transferred"], **self._counters)

    @property
    def closed(self) -> bool:
        return not self._gateway

    def close(self) -> None:
        """Free the SpanDSP states (idempotent); the callbacks are released after them."""
        lib = self._lib if hasattr(self, "_lib") else None
        if lib is None:
            return
        if getattr(self, "_gateway", None):
            lib.t38_gateway_free(self._gateway)
        self._gateway = None
        self._core = None
        for name in ("_g711_decoder", "_g711_encoder"):
            state = getattr(self, name, None)
            if state:
                lib.g711_free(state)
            setattr(self, name, None)

    def __enter__(self) -> AudioFaxGateway:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
