"""A ctypes binding to the real SpanDSP 0.0.6 (Debian ``libspandsp2``), used as a test peer.

SpanDSP is the reference T.30/T.38 implementation inside Asterisk and FreeSWITCH. The
tests and benches use it in three ways:

* :class:`SpandspT38Core` — a bare T.38 core, as an oracle for the IFP codec: it says
  which bytes SpanDSP emits for an indicator or data packet, and what SpanDSP makes of
  a given IFP.
* :class:`SpandspT38Terminal` — a whole T.38 fax terminal (T.30 + T.4) driven in
  simulated time; :func:`run_spandsp_fax` runs two of them against each other.
* :func:`spandsp_t4_encode` — a page coded by SpanDSP's T.4 transmitter (MH/MR/MMR).

Nothing here is product code; it only drives the library. Rules that keep it from
crashing: every ctypes callback object is stored on its Python owner for as long as C
may call it, and every ``*_init(NULL, ...)`` is paired with its ``*_free``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

__all__ = [
    "PeerMissing",
    "load_spandsp",
    "SpandspT38Core",
    "T38_INDICATORS",
    "T38_DATA_TYPES",
    "T38_FIELD_TYPES",
]

DEBIAN_LIBRARY_PATH = "/usr/lib/x86_64-linux-gnu/libspandsp.so.2"
INSTALL_HINT = "apt-get install libspandsp2 (make test does this)"


class PeerMissing(RuntimeError):
    """A peer program or library the tests drive is not installed."""


# t38_core.h enum t30_indicator_types_e, in order.
T38_INDICATORS = {
    name: value
    for value, name in enumerate(
        [
            "NO_SIGNAL", "CNG", "CED", "V21_PREAMBLE",
            "V27TER_2400_TRAINING", "V27TER_4800_TRAINING",
            "V29_7200_TRAINING", "V29_9600_TRAINING",
            "V17_7200_SHORT_TRAINING", "V17_7200_LONG_TRAINING",
            "V17_9600_SHORT_TRAINING", "V17_9600_LONG_TRAINING",
            "V17_12000_SHORT_TRAINING", "V17_12000_LONG_TRAINING",
            "V17_14400_SHORT_TRAINING", "V17_14400_LONG_TRAINING",
            "V8_ANSAM", "V8_SIGNAL", "V34_CNTL_CHANNEL_1200", "V34_PRI_CHANNEL",
            "V34_CC_RETRAIN", "V33_12000_TRAINING", "V33_14400_TRAINING",
        ]
    )
}
# t38_core.h enum t38_data_types_e (T38_DATA_NONE = -1 left out).
T38_DATA_TYPES = {
    name: value
    for value, name in enumerate(
        [
            "V21", "V27TER_2400", "V27TER_4800", "V29_7200", "V29_9600",
            "V17_7200", "V17_9600", "V17_12000", "V17_14400", "V8",
            "V34_PRI_RATE", "V34_CC_1200", "V34_PRI_CH", "V33_12000", "V33_14400",
        ]
    )
}
# t38_core.h enum t38_field_types_e.
T38_FIELD_TYPES = {
    name: value
    for value, name in enumerate(
        [
            "HDLC_DATA", "HDLC_SIG_END", "HDLC_FCS_OK", "HDLC_FCS_BAD",
            "HDLC_FCS_OK_SIG_END", "HDLC_FCS_BAD_SIG_END",
            "T4_NON_ECM_DATA", "T4_NON_ECM_SIG_END",
            "CM_MESSAGE", "JM_MESSAGE", "CI_MESSAGE", "V34RATE",
        ]
    )
}

# t38_core.h enum t38_packet_categories_e.
_CATEGORY_INDICATOR = 0
_CATEGORY_CONTROL_DATA = 1
# logging.h
SPAN_LOG_FLOW = 5
SPAN_LOG_SHOW_SEVERITY = 0x0400
SPAN_LOG_SHOW_PROTOCOL = 0x0800
SPAN_LOG_SHOW_TAG = 0x2000
# SpanDSP's t38_encode_data() builds packets in a 1000-byte stack buffer and does not
# check the length, so anything near that size would overrun it: refuse it here instead.
_MAX_ENCODE_PAYLOAD = 900
# t38_core_send_indicator() only sends on a change of indicator unless bit 0x100 is set.
_FORCE_INDICATOR = 0x100

# ---------------------------------------------------------------------------------------
# Library loading and prototypes

_TX_PACKET_HANDLER = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int
)
_RX_INDICATOR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_RX_DATA_HANDLER = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int
)
_RX_MISSING_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
_LOG_MESSAGE_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p)


class _T38DataField(ctypes.Structure):
    """t38_core.h ``t38_data_field_t``."""

    _fields_ = [
        ("field_type", ctypes.c_int),
        ("field", ctypes.c_void_p),
        ("field_len", ctypes.c_int),
    ]


_P = ctypes.c_void_p
_I = ctypes.c_int
_S = ctypes.c_char_p

# name: (restype, argtypes). Pointers to SpanDSP states are opaque c_void_p.
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "t38_core_init": (_P, [_P, _RX_INDICATOR_HANDLER, _RX_DATA_HANDLER, _RX_MISSING_HANDLER, _P,
                           _TX_PACKET_HANDLER, _P]),
    "t38_core_free": (_I, [_P]),
    "t38_core_restart": (_I, [_P]),
    "t38_core_send_indicator": (_I, [_P, _I]),
    "t38_core_send_data": (_I, [_P, _I, _I, _P, _I, _I]),
    "t38_core_send_data_multi_field": (_I, [_P, _I, ctypes.POINTER(_T38DataField), _I, _I]),
    "t38_core_rx_ifp_packet": (_I, [_P, _P, _I, ctypes.c_uint16]),
    "t38_core_get_logging_state": (_P, [_P]),
    "t38_set_t38_version": (None, [_P, _I]),
    "t38_set_pace_transmission": (None, [_P, _I]),
    "t38_set_redundancy_control": (None, [_P, _I, _I]),
    "t38_set_data_rate_management_method": (None, [_P, _I]),
    "t38_set_fastest_image_data_rate": (None, [_P, _I]),
    "t38_set_max_datagram_size": (None, [_P, _I]),
    "span_log_set_level": (_I, [_P, _I]),
    "span_log_set_tag": (_I, [_P, _S]),
    "span_log_set_message_handler": (None, [_P, _LOG_MESSAGE_HANDLER]),
}

_library: ctypes.CDLL | None = None


def load_spandsp() -> ctypes.CDLL:
    """Load libspandsp.so.2 once and declare the prototypes this module calls.

    Raises :class:`PeerMissing` (never skips) when the library is not installed.
    """
    global _library
    if _library is not None:
        return _library
    candidates = [os.environ.get("T38GW_LIBSPANDSP"), ctypes.util.find_library("spandsp"),
                  "libspandsp.so.2", DEBIAN_LIBRARY_PATH]
    errors = []
    for candidate in filter(None, candidates):
        try:
            library = ctypes.CDLL(candidate)
            break
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
    else:
        raise PeerMissing(f"libspandsp.so.2 not found ({'; '.join(errors) or 'no candidates'}); {INSTALL_HINT}")
    for name, (restype, argtypes) in _PROTOTYPES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    _library = library
    return library


class _SpanLog:
    """Routes one SpanDSP logging state to a Python sink (off unless asked for)."""

    def __init__(self, lib: ctypes.CDLL, sink) -> None:
        self._sink = sink
        self.handler = _LOG_MESSAGE_HANDLER(self._on_message)

    def _on_message(self, level: int, text: bytes) -> None:
        self._sink(level, text.decode("latin-1").rstrip("\n"))

    def attach(self, lib: ctypes.CDLL, logging_state: int, tag: str) -> None:
        lib.span_log_set_message_handler(logging_state, self.handler)
        lib.span_log_set_tag(logging_state, tag.encode())
        lib.span_log_set_level(logging_state, SPAN_LOG_FLOW | SPAN_LOG_SHOW_SEVERITY
                               | SPAN_LOG_SHOW_PROTOCOL | SPAN_LOG_SHOW_TAG)


def _print_log(level: int, text: str) -> None:
    print(text)


def _log_sink(log):
    """``log`` may be False (off), True (print) or a callable ``(level, text)``."""
    if not log:
        return None
    return log if callable(log) else _print_log


# ---------------------------------------------------------------------------------------
# A bare T.38 core: the IFP oracle


class SpandspT38Core:
    """A bare SpanDSP ``t38_core_state_t``: encode IFPs as SpanDSP does, decode them as it does.

    ``version`` is the T.38 version (0-3) given to ``t38_set_t38_version``; it changes
    the field-type encoding (version 0 packs field types in nibbles, T.38 Annex A's
    pre-2002 ASN.1) and whether extended indicators/data types may be sent.

    Pacing is off, so encoding sends nothing but the packet asked for. Every packet is
    counted as sent, so SpanDSP's transmit sequence number advances with each call.
    """

    def __init__(self, version: int = 0, *, log=False) -> None:
        self._lib = load_spandsp()
        self.version = version
        self._sent: list[tuple[bytes, int]] = []
        self._received: list[tuple] = []
        # The callback objects must outlive the C state, so they live on self.
        self._tx_handler = _TX_PACKET_HANDLER(self._on_tx_packet)
        self._rx_indicator_handler = _RX_INDICATOR_HANDLER(self._on_rx_indicator)
        self._rx_data_handler = _RX_DATA_HANDLER(self._on_rx_data)
        self._rx_missing_handler = _RX_MISSING_HANDLER(self._on_rx_missing)
        self._state = self._lib.t38_core_init(
            None, self._rx_indicator_handler, self._rx_data_handler, self._rx_missing_handler, None,
            self._tx_handler, None,
        )
        if not self._state:
            raise MemoryError("t38_core_init returned NULL")
        self._lib.t38_set_t38_version(self._state, version)
        self._lib.t38_set_pace_transmission(self._state, 0)
        sink = _log_sink(log)
        self._log = None
        if sink is not None:
            self._log = _SpanLog(self._lib, sink)
            self._log.attach(self._lib, self._lib.t38_core_get_logging_state(self._state), f"core-v{version}")

    # C callbacks -------------------------------------------------------------------
    def _on_tx_packet(self, _s, _user, buf, length, count) -> int:
        self._sent.append((ctypes.string_at(buf, length), count))
        return 0

    def _on_rx_indicator(self, _s, _user, indicator) -> int:
        self._received.append(("indicator", indicator))
        return 0

    def _on_rx_data(self, _s, _user, data_type, field_type, buf, length) -> int:
        data = ctypes.string_at(buf, length) if buf and length > 0 else b""
        self._received.append(("data", data_type, field_type, data))
        return 0

    def _on_rx_missing(self, _s, _user, rx_seq_no, expected_seq_no) -> int:
        self._received.append(("missing", rx_seq_no, expected_seq_no))
        return 0

    # Encoding ----------------------------------------------------------------------
    def _take_first_sent(self, what: str) -> bytes:
        sent, self._sent = self._sent, []
        if not sent:
            raise ValueError(f"SpanDSP refused to encode {what}")
        return sent[0][0]

    def encode_indicator(self, indicator: int) -> bytes:
        """The IFP SpanDSP sends for ``indicator`` (a T38_INDICATORS value).

        Raises ValueError when SpanDSP refuses (e.g. a V.8/V.34/V.33 indicator at version 0).
        """
        self._check_open()
        self._sent.clear()
        # Force the send: SpanDSP otherwise suppresses an indicator equal to the last one.
        self._lib.t38_core_send_indicator(self._state, indicator | _FORCE_INDICATOR)
        return self._take_first_sent(f"indicator {indicator}")

    def encode_data(self, data_type: int, field_type: int, data: bytes) -> bytes:
        """The IFP SpanDSP sends for one data field (``data`` may be empty: no field-data)."""
        return self.encode_data_multi(data_type, [(field_type, data)], _single=True)

    def encode_data_multi(self, data_type: int, fields: list[tuple[int, bytes]], *, _single: bool = False) -> bytes:
        """The IFP SpanDSP sends for several ``(field_type, data)`` fields of one data type."""
        self._check_open()
        if sum(len(data) + 3 for _, data in fields) + 4 > _MAX_ENCODE_PAYLOAD:
            raise ValueError("too much data for SpanDSP's 1000-byte encode buffer")
        buffers = [ctypes.create_string_buffer(bytes(data), max(len(data), 1)) for _, data in fields]
        self._sent.clear()
        if _single:
            (field_type, data), = fields
            self._lib.t38_core_send_data(self._state, data_type, field_type, buffers[0], len(data),
                                         _CATEGORY_CONTROL_DATA)
        else:
            array = (_T38DataField * max(len(fields), 1))()
            for slot, (field_type, data), buffer in zip(array, fields, buffers):
                slot.field_type = field_type
                slot.field = ctypes.cast(buffer, ctypes.c_void_p)
                slot.field_len = len(data)
            self._lib.t38_core_send_data_multi_field(self._state, data_type, array, len(fields),
                                                     _CATEGORY_CONTROL_DATA)
        return self._take_first_sent(f"data type {data_type} fields {[f for f, _ in fields]}")

    # Decoding ----------------------------------------------------------------------
    def decode(self, ifp: bytes, seq: int) -> list[tuple]:
        """Feed one IFP with UDPTL sequence number ``seq`` to ``t38_core_rx_ifp_packet``.

        Returns what SpanDSP's receive callbacks reported, in order:
        ``("indicator", indicator)``, ``("data", data_type, field_type, data)`` (one per
        field; ``data`` is ``b""`` when the field has no field-data) and
        ``("missing", rx_seq_no, expected_seq_no)`` when ``seq`` skips ahead. SpanDSP
        silently drops a packet whose ``seq`` is a repeat or is late. When SpanDSP
        returns -1 (a malformed packet, or trailing bytes after a whole IFP) a final
        ``("rejected",)`` entry is appended: callbacks may still have fired before it.
        """
        self._check_open()
        self._received.clear()
        buffer = ctypes.create_string_buffer(bytes(ifp), max(len(ifp), 1))
        result = self._lib.t38_core_rx_ifp_packet(self._state, buffer, len(ifp), seq & 0xFFFF)
        received, self._received = self._received, []
        if result < 0:
            received.append(("rejected",))
        return received

    def restart(self) -> None:
        """Forget receive/transmit history (expected sequence number, last indicator)."""
        self._check_open()
        self._lib.t38_core_restart(self._state)

    # Lifetime ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._state:
            raise ValueError("SpandspT38Core is closed")

    def close(self) -> None:
        """Free the SpanDSP state (idempotent)."""
        if self._state:
            self._lib.t38_core_free(self._state)
            self._state = None

    def __enter__(self) -> SpandspT38Core:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
