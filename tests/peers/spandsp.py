"""A ctypes binding to the real SpanDSP 0.0.6 (Debian ``libspandsp2``), used as a test peer.

SpanDSP is the reference T.30/T.38 implementation inside Asterisk and FreeSWITCH. The
tests and benches use it in three ways:

* :class:`SpandspT38Core` — a bare T.38 core, as an oracle for the IFP codec: it says
  which bytes SpanDSP emits for an indicator or data packet, and what SpanDSP makes of
  a given IFP.
* :class:`SpandspT38Terminal` — a whole T.38 fax terminal (T.30 + T.4) driven in
  simulated time; :func:`run_spandsp_fax` runs two of them against each other.
* :func:`spandsp_t4_encode` — a page coded by SpanDSP's T.4 transmitter (MH/MR/MMR).

Driving a terminal from a test (our side produces/consumes the IFPs)::

    to_us = []
    with SpandspT38Terminal(calling_party=False, on_ifp=lambda ifp, count: to_us.append(ifp),
                            rx_tiff=tmp_path / "rx.tif", version=3, ecm=True) as spandsp:
        for step in range(bounded_number_of_steps):      # one step = 20 ms simulated
            ...deliver our IFPs in order: spandsp.rx_ifp(ifp, seq)...
            spandsp.advance(160)
            if spandsp.phase_e_status is not None:
                break
    assert spandsp.phase_e_status == T30_ERR_OK

Nothing here is product code; it only drives the library. Rules that keep it from
crashing: every ctypes callback object is stored on its Python owner for as long as C
may call it, and every ``*_init(NULL, ...)`` is paired with its ``*_free``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import itertools
import os
import tempfile
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "PeerMissing",
    "load_spandsp",
    "SpandspT38Core",
    "SpandspT38Terminal",
    "FaxRun",
    "TracedIfp",
    "run_spandsp_fax",
    "perfect_link",
    "make_fax_tiff",
    "read_fax_tiff",
    "read_pbm",
    "spandsp_t4_encode",
    "coded_page_tiff",
    "T30_ERRORS",
    "T30_ERR_OK",
    "T38_TERMINAL_OPTIONS",
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


_PHASE_B_D_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_PHASE_E_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_REAL_TIME_FRAME_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int
)

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
    "t38_terminal_init": (_P, [_P, _I, _TX_PACKET_HANDLER, _P]),
    "t38_terminal_free": (_I, [_P]),
    "t38_terminal_set_config": (None, [_P, _I]),
    "t38_terminal_send_timeout": (_I, [_P, _I]),
    "t38_terminal_get_t30_state": (_P, [_P]),
    "t38_terminal_get_t38_core_state": (_P, [_P]),
    "t38_terminal_get_logging_state": (_P, [_P]),
    "t30_set_tx_ident": (_I, [_P, _S]),
    "t30_get_rx_ident": (_S, [_P]),
    "t30_set_tx_file": (None, [_P, _S, _I, _I]),
    "t30_set_rx_file": (None, [_P, _S, _I]),
    "t30_set_ecm_capability": (_I, [_P, _I]),
    "t30_set_supported_modems": (_I, [_P, _I]),
    "t30_set_supported_compressions": (_I, [_P, _I]),
    "t30_set_supported_resolutions": (_I, [_P, _I]),
    "t30_set_supported_image_sizes": (_I, [_P, _I]),
    "t30_set_minimum_scan_line_time": (_I, [_P, _I]),
    "t30_set_rx_encoding": (_I, [_P, _I]),
    "t30_set_phase_b_handler": (None, [_P, _PHASE_B_D_HANDLER, _P]),
    "t30_set_phase_d_handler": (None, [_P, _PHASE_B_D_HANDLER, _P]),
    "t30_set_phase_e_handler": (None, [_P, _PHASE_E_HANDLER, _P]),
    "t30_set_real_time_frame_handler": (None, [_P, _REAL_TIME_FRAME_HANDLER, _P]),
    "t30_get_transfer_statistics": (None, [_P, _P]),
    "t30_get_logging_state": (_P, [_P]),
    "t30_call_active": (_I, [_P]),
    "t30_terminate": (None, [_P]),
    "t30_completion_code_to_str": (_S, [_I]),
    "t30_frametype": (_S, [ctypes.c_uint8]),
    "t4_tx_init": (_P, [_P, _S, _I, _I]),
    "t4_tx_free": (_I, [_P]),
    "t4_tx_set_tx_encoding": (None, [_P, _I]),
    "t4_tx_set_min_bits_per_row": (None, [_P, _I]),
    "t4_tx_start_page": (_I, [_P]),
    "t4_tx_end_page": (_I, [_P]),
    "t4_tx_get_bit": (_I, [_P]),
    "t4_tx_get_chunk": (_I, [_P, _P, _I]),
    "t4_tx_get_pages_in_file": (_I, [_P]),
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

    def __init__(self, sink) -> None:
        self._sink = sink
        self.handler = _LOG_MESSAGE_HANDLER(self._on_message)
        # span_log_set_tag keeps the pointer, not a copy: the tag strings live here.
        self._tags: list[ctypes.Array] = []

    def _on_message(self, level: int, text: bytes) -> None:
        self._sink(level, text.decode("latin-1").rstrip("\n"))

    def attach(self, lib: ctypes.CDLL, logging_state: int, tag: str) -> None:
        lib.span_log_set_message_handler(logging_state, self.handler)
        tag_buffer = ctypes.create_string_buffer(tag.encode())
        self._tags.append(tag_buffer)
        lib.span_log_set_tag(logging_state, tag_buffer)
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


class _OwnsSpandspState:
    """Context manager and finaliser around ``close()``, which frees the C state (idempotent)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class SpandspT38Core(_OwnsSpandspState):
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
            self._log = _SpanLog(sink)
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

    def _on_rx_missing(self, _s, _user, expected_seq_no, received_seq_no) -> int:
        # t38_core.c passes (expected, received), whatever the header's parameter names say.
        self._received.append(("missing", expected_seq_no, received_seq_no))
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
        """The IFP SpanDSP sends for one data field (``data`` may be empty: no field-data).

        Uses ``t38_core_send_data``. Raises ValueError when SpanDSP refuses (a type the
        version cannot carry) or the data would overrun SpanDSP's encode buffer.
        """
        return self._encode_fields(data_type, [(field_type, data)], multi=False)

    def encode_data_multi(self, data_type: int, fields: list[tuple[int, bytes]]) -> bytes:
        """The IFP SpanDSP sends for several ``(field_type, data)`` fields of one data type.

        Uses ``t38_core_send_data_multi_field``; raises like :meth:`encode_data`.
        """
        return self._encode_fields(data_type, fields, multi=True)

    def _encode_fields(self, data_type: int, fields: list[tuple[int, bytes]], *, multi: bool) -> bytes:
        self._check_open()
        if sum(len(data) + 3 for _, data in fields) + 4 > _MAX_ENCODE_PAYLOAD:
            raise ValueError("too much data for SpanDSP's 1000-byte encode buffer")
        buffers = [ctypes.create_string_buffer(bytes(data), max(len(data), 1)) for _, data in fields]
        self._sent.clear()
        if multi:
            array = (_T38DataField * max(len(fields), 1))()
            for slot, (field_type, data), buffer in zip(array, fields, buffers):
                slot.field_type = field_type
                slot.field = ctypes.cast(buffer, ctypes.c_void_p)
                slot.field_len = len(data)
            self._lib.t38_core_send_data_multi_field(self._state, data_type, array, len(fields),
                                                     _CATEGORY_CONTROL_DATA)
        else:
            (field_type, data), = fields
            self._lib.t38_core_send_data(self._state, data_type, field_type, buffers[0], len(data),
                                         _CATEGORY_CONTROL_DATA)
        return self._take_first_sent(f"data type {data_type} fields {[f for f, _ in fields]}")

    # Decoding ----------------------------------------------------------------------
    def decode(self, ifp: bytes, seq: int) -> list[tuple]:
        """Feed one IFP with UDPTL sequence number ``seq`` to ``t38_core_rx_ifp_packet``.

        Returns what SpanDSP's receive callbacks reported, in order:
        ``("indicator", indicator)``, ``("data", data_type, field_type, data)`` (one per
        field; ``data`` is ``b""`` when the field has no field-data) and
        ``("missing", first_missing_seq, seq)`` when ``seq`` skips ahead (``(-1, -1)``
        when SpanDSP sees a wild jump and restarts its count). SpanDSP
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


# ---------------------------------------------------------------------------------------
# T.30 constants (t30.h), hard-listed; tests check them against the installed header.

# t30.h: T.30 protocol completion codes, at phase E (T30_ERR_OK = 0, then in order).
T30_ERRORS: dict[str, int] = {
    name: value
    for value, name in enumerate(
        [
            "T30_ERR_OK", "T30_ERR_CEDTONE", "T30_ERR_T0_EXPIRED", "T30_ERR_T1_EXPIRED",
            "T30_ERR_T3_EXPIRED", "T30_ERR_HDLC_CARRIER", "T30_ERR_CANNOT_TRAIN",
            "T30_ERR_OPER_INT_FAIL", "T30_ERR_INCOMPATIBLE", "T30_ERR_RX_INCAPABLE",
            "T30_ERR_TX_INCAPABLE", "T30_ERR_NORESSUPPORT", "T30_ERR_NOSIZESUPPORT",
            "T30_ERR_UNEXPECTED", "T30_ERR_TX_BADDCS", "T30_ERR_TX_BADPG", "T30_ERR_TX_ECMPHD",
            "T30_ERR_TX_GOTDCN", "T30_ERR_TX_INVALRSP", "T30_ERR_TX_NODIS", "T30_ERR_TX_PHBDEAD",
            "T30_ERR_TX_PHDDEAD", "T30_ERR_TX_T5EXP", "T30_ERR_RX_ECMPHD", "T30_ERR_RX_GOTDCS",
            "T30_ERR_RX_INVALCMD", "T30_ERR_RX_NOCARRIER", "T30_ERR_RX_NOEOL", "T30_ERR_RX_NOFAX",
            "T30_ERR_RX_T2EXPDCN", "T30_ERR_RX_T2EXPD", "T30_ERR_RX_T2EXPFAX", "T30_ERR_RX_T2EXPMPS",
            "T30_ERR_RX_T2EXPRR", "T30_ERR_RX_T2EXP", "T30_ERR_RX_DCNWHY", "T30_ERR_RX_DCNDATA",
            "T30_ERR_RX_DCNFAX", "T30_ERR_RX_DCNPHD", "T30_ERR_RX_DCNRRD", "T30_ERR_RX_DCNNORTN",
            "T30_ERR_FILEERROR", "T30_ERR_NOPAGE", "T30_ERR_BADTIFF", "T30_ERR_BADPAGE",
            "T30_ERR_BADTAG", "T30_ERR_BADTIFFHDR", "T30_ERR_NOMEM", "T30_ERR_RETRYDCN",
            "T30_ERR_CALLDROPPED", "T30_ERR_NOPOLL", "T30_ERR_IDENT_UNACCEPTABLE",
            "T30_ERR_SUB_UNACCEPTABLE", "T30_ERR_SEP_UNACCEPTABLE", "T30_ERR_PSA_UNACCEPTABLE",
            "T30_ERR_SID_UNACCEPTABLE", "T30_ERR_PWD_UNACCEPTABLE", "T30_ERR_TSA_UNACCEPTABLE",
            "T30_ERR_IRA_UNACCEPTABLE", "T30_ERR_CIA_UNACCEPTABLE", "T30_ERR_ISP_UNACCEPTABLE",
            "T30_ERR_CSA_UNACCEPTABLE",
        ]
    )
}
T30_ERR_OK = T30_ERRORS["T30_ERR_OK"]
T30_ERROR_NAMES: dict[int, str] = {value: name for name, value in T30_ERRORS.items()}

# t30.h T30_SUPPORT_* bit masks.
T30_SUPPORT_MODEMS = {"V27TER": 0x01, "V29": 0x02, "V17": 0x04, "V34HDX": 0x08, "IAF": 0x10}
T30_SUPPORT_COMPRESSIONS = {"mh": 0x02, "mr": 0x04, "mmr": 0x08}  # T4_1D, T4_2D, T6
T30_SUPPORT_ALL_RESOLUTIONS = (
    0x01 | 0x02 | 0x04  # standard, fine, superfine
    | 0x10000 | 0x20000 | 0x40000  # R4, R8, R16
    | 0x100000 | 0x200000 | 0x400000 | 0x800000  # 300x300 .. 1200x1200
    | 0x1000000 | 0x2000000 | 0x4000000  # 300x600, 400x800, 600x1200
)
T30_SUPPORT_ALL_IMAGE_SIZES = (
    0x01 | 0x02 | 0x04  # 215, 255, 303 mm wide
    | 0x10000 | 0x20000 | 0x40000 | 0x80000 | 0x100000  # unlimited, A4, B4, letter, legal
)
# t38_terminal.h T38_TERMINAL_OPTION_* bits for the ``config`` argument.
T38_TERMINAL_OPTIONS = {
    "NO_PACING": 0x01,
    "REGULAR_INDICATORS": 0x02,
    "2S_REPEATING_INDICATORS": 0x04,
    "NO_INDICATORS": 0x08,
}
# t4_rx.h enum: T4_COMPRESSION_ITU_T4_1D = 1, T4_2D = 2, T6 = 3.
T4_COMPRESSIONS = {"mh": 1, "mr": 2, "mmr": 3}
# t38_core.h t38_data_rate_management_types_e
_LOCAL_TCF = 1
_TRANSFERRED_TCF = 2
# t30.h t30_stats_t in 0.0.6: 15 ints, in this order (resolutions in pixels per metre).
T30_STATS_FIELDS = (
    "bit_rate", "error_correcting_mode", "pages_tx", "pages_rx", "pages_in_file",
    "x_resolution", "y_resolution", "width", "length", "image_size", "encoding",
    "bad_rows", "longest_bad_row_run", "error_correcting_mode_retries", "current_status",
)
SAMPLE_RATE = 8000


def _modems_for_bitrate(max_bitrate: int) -> int:
    """T.30 modems a terminal may use so that it never trains faster than ``max_bitrate``.

    SpanDSP starts at the top rate of the fastest modem allowed (V.17 14400, V.29 9600,
    V.27ter 4800) and only falls back after a failed training, so the cap has modem
    granularity: 12000 allows V.29 at most. Below 4800 there is nothing to allow.
    """
    if max_bitrate >= 14400:
        return T30_SUPPORT_MODEMS["V27TER"] | T30_SUPPORT_MODEMS["V29"] | T30_SUPPORT_MODEMS["V17"]
    if max_bitrate >= 9600:
        return T30_SUPPORT_MODEMS["V27TER"] | T30_SUPPORT_MODEMS["V29"]
    if max_bitrate >= 4800:
        return T30_SUPPORT_MODEMS["V27TER"]
    raise ValueError(f"max_bitrate {max_bitrate}: SpanDSP cannot be held below 4800 bit/s")


def _compression_mask(compressions) -> int:
    unknown = set(compressions) - set(T30_SUPPORT_COMPRESSIONS)
    if unknown or not compressions:
        raise ValueError(f"compressions must be a non-empty subset of {sorted(T30_SUPPORT_COMPRESSIONS)}")
    mask = 0
    for name in compressions:
        mask |= T30_SUPPORT_COMPRESSIONS[name]
    return mask


class SpandspT38Terminal(_OwnsSpandspState):
    """A whole SpanDSP T.38 fax terminal (``t38_terminal_state_t``: T.30 + T.4 over T.38).

    ``on_ifp(ifp, count)`` receives every IFP SpanDSP wants sent; ``count`` is how many
    times SpanDSP asks for it to be transmitted (its redundancy for that packet category).
    Time only passes when :meth:`advance` is called: call it every 20-30 ms of simulated
    time. Received IFPs go in through :meth:`rx_ifp`, in sequence order (SpanDSP's core
    drops late packets; recover them before feeding).

    ``tx_tiff`` makes it a sender (pages from that TIFF), ``rx_tiff`` a receiver (pages
    written there). ``config`` takes T38_TERMINAL_OPTIONS bits (0: SpanDSP's paced UDP
    mode, indicators and end-of-data packets sent 3 times). ``min_scan_line_time_ms``
    is what a receiver announces in its DIS (T.30 Table 2); ``supported_resolutions`` and
    ``supported_image_sizes`` are T30_SUPPORT_* masks (default: everything). ``log`` is False (off), True (print) or a callable ``(level, text)``
    that receives SpanDSP's T.30/T.38 log lines — for debugging.

    Raises ValueError for impossible options; :attr:`phase_e_status` is ``None`` until
    SpanDSP reports the end of the call, then a T30_ERR_* code (0 = T30_ERR_OK).
    """

    def __init__(
        self,
        *,
        calling_party: bool,
        on_ifp,
        version: int = 0,
        ecm: bool = True,
        compressions=frozenset({"mh", "mr", "mmr"}),
        ident: str = "",
        tx_tiff: str | os.PathLike | None = None,
        rx_tiff: str | os.PathLike | None = None,
        max_bitrate: int = 14400,
        transferred_tcf: bool = True,
        config: int = 0,
        min_scan_line_time_ms: int | None = None,
        supported_resolutions: int = T30_SUPPORT_ALL_RESOLUTIONS,
        supported_image_sizes: int = T30_SUPPORT_ALL_IMAGE_SIZES,
        log=False,
    ) -> None:
        self._lib = lib = load_spandsp()
        self._on_ifp = on_ifp
        self.phase_e_status: int | None = None
        # IFPs t38_core_rx_ifp_packet refused (-1): malformed, or trailing bytes.
        self.rx_rejected = 0
        # ("phase_b", fcf) / ("phase_d", fcf) / ("phase_e", code), in the order they happened.
        self.events: list[tuple[str, int]] = []
        # T.30 HDLC frames as SpanDSP saw them: ("rx" | "tx", frame bytes from the address octet).
        self.frames: list[tuple[str, bytes]] = []
        self._callback_error: BaseException | None = None
        self._tx_handler = _TX_PACKET_HANDLER(self._on_tx_packet)
        self._phase_b_handler = _PHASE_B_D_HANDLER(self._on_phase_b)
        self._phase_d_handler = _PHASE_B_D_HANDLER(self._on_phase_d)
        self._phase_e_handler = _PHASE_E_HANDLER(self._on_phase_e)
        self._frame_handler = _REAL_TIME_FRAME_HANDLER(self._on_frame)
        compression_mask = _compression_mask(compressions)
        modems = _modems_for_bitrate(max_bitrate)

        self._state = lib.t38_terminal_init(None, int(calling_party), self._tx_handler, None)
        if not self._state:
            raise MemoryError("t38_terminal_init returned NULL")
        self.t30_state = lib.t38_terminal_get_t30_state(self._state)
        self.t38_core_state = lib.t38_terminal_get_t38_core_state(self._state)
        # t38_terminal_set_config() resets the per-category repeat counts: it goes first.
        lib.t38_terminal_set_config(self._state, config)
        lib.t38_set_t38_version(self.t38_core_state, version)
        lib.t38_set_data_rate_management_method(self.t38_core_state,
                                                _TRANSFERRED_TCF if transferred_tcf else _LOCAL_TCF)
        lib.t38_set_fastest_image_data_rate(self.t38_core_state, max_bitrate)

        t30 = self.t30_state
        lib.t30_set_supported_modems(t30, modems)
        lib.t30_set_supported_compressions(t30, compression_mask)
        lib.t30_set_supported_resolutions(t30, supported_resolutions)
        lib.t30_set_supported_image_sizes(t30, supported_image_sizes)
        lib.t30_set_ecm_capability(t30, int(ecm))
        if min_scan_line_time_ms is not None:
            lib.t30_set_minimum_scan_line_time(t30, min_scan_line_time_ms)
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
        lib.t30_set_real_time_frame_handler(t30, self._frame_handler, None)

        self._log = None
        sink = _log_sink(log)
        if sink is not None:
            self._log = _SpanLog(sink)
            role = "caller" if calling_party else "answerer"
            self._log.attach(lib, lib.t30_get_logging_state(t30), f"{role}-t30")
            self._log.attach(lib, lib.t38_core_get_logging_state(self.t38_core_state), f"{role}-t38")
            self._log.attach(lib, lib.t38_terminal_get_logging_state(self._state), f"{role}-t38t")

    # C callbacks: never let a Python exception unwind into C; keep it for later.
    def _on_tx_packet(self, _s, _user, buf, length, count) -> int:
        try:
            self._on_ifp(ctypes.string_at(buf, length), count)
        except BaseException as exc:  # re-raised by _raise_callback_error
            self._callback_error = self._callback_error or exc
            return -1
        return 0

    def _on_phase_b(self, _s, _user, result) -> int:
        self.events.append(("phase_b", result))
        return T30_ERR_OK

    def _on_phase_d(self, _s, _user, result) -> int:
        self.events.append(("phase_d", result))
        return T30_ERR_OK

    def _on_phase_e(self, _s, _user, completion_code) -> None:
        self.events.append(("phase_e", completion_code))
        self.phase_e_status = completion_code

    def _on_frame(self, _s, _user, incoming, msg, length) -> None:
        self.frames.append(("rx" if incoming else "tx", ctypes.string_at(msg, length)))

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    # Driving ------------------------------------------------------------------------
    def rx_ifp(self, ifp: bytes, seq: int) -> None:
        """Give SpanDSP one received IFP with its UDPTL sequence number (in order)."""
        self._check_open()
        buffer = ctypes.create_string_buffer(bytes(ifp), max(len(ifp), 1))
        if self._lib.t38_core_rx_ifp_packet(self.t38_core_state, buffer, len(ifp), seq & 0xFFFF) < 0:
            self.rx_rejected += 1
        self._raise_callback_error()

    def advance(self, samples: int = 160) -> None:
        """Let ``samples`` at 8 kHz of simulated time pass (t38_terminal_send_timeout)."""
        self._check_open()
        self._lib.t38_terminal_send_timeout(self._state, samples)
        self._raise_callback_error()

    def terminate(self) -> None:
        """Abort the call as if the line dropped (t30_terminate): phase E follows."""
        self._check_open()
        self._lib.t30_terminate(self.t30_state)
        self._raise_callback_error()

    @property
    def call_active(self) -> bool:
        self._check_open()
        return bool(self._lib.t30_call_active(self.t30_state))

    @property
    def remote_ident(self) -> str:
        """The far end's TSI/CSI as SpanDSP received it."""
        self._check_open()
        return (self._lib.t30_get_rx_ident(self.t30_state) or b"").decode("latin-1")

    def stats(self) -> dict[str, int]:
        """t30_get_transfer_statistics as a dict of the 15 ``t30_stats_t`` fields."""
        self._check_open()
        # Oversized buffer: a library built with more fields must not overwrite our memory.
        buffer = (ctypes.c_int * 64)()
        self._lib.t30_get_transfer_statistics(self.t30_state, buffer)
        return dict(zip(T30_STATS_FIELDS, buffer[: len(T30_STATS_FIELDS)]))

    @staticmethod
    def completion_code_name(code: int) -> str:
        """SpanDSP's own text for a T30_ERR_* code (t30_completion_code_to_str)."""
        text = load_spandsp().t30_completion_code_to_str(code)
        return text.decode("latin-1") if text else f"code {code}"

    # Lifetime ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._state:
            raise ValueError("SpandspT38Terminal is closed")

    def close(self) -> None:
        """Free the SpanDSP state (idempotent). The rx TIFF is already complete at phase E."""
        if self._state:
            self._lib.t38_terminal_free(self._state)
            self._state = None
            self.t30_state = None
            self.t38_core_state = None


# ---------------------------------------------------------------------------------------
# SpanDSP sender <-> SpanDSP receiver in simulated time


class TracedIfp(NamedTuple):
    """One IFP a terminal emitted: when, who sent it, its UDPTL sequence number, bytes, repeats."""

    time: float
    direction: str  # "sender->receiver" or "receiver->sender"
    seq: int
    ifp: bytes
    count: int


@dataclass(frozen=True)
class FaxRun:
    """The outcome of :func:`run_spandsp_fax`."""

    sender_status: int | None
    receiver_status: int | None
    sender_stats: dict[str, int]
    receiver_stats: dict[str, int]
    trace: list[TracedIfp]
    sim_seconds: float
    sender_events: list[tuple[str, int]] = field(default_factory=list)
    receiver_events: list[tuple[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sender_status == T30_ERR_OK and self.receiver_status == T30_ERR_OK


SENDER_TO_RECEIVER = "sender->receiver"
RECEIVER_TO_SENDER = "receiver->sender"
DEFAULT_LINK_DELAY = 0.01


def perfect_link(ifp: bytes, seq: int, now: float) -> list[tuple[float, bytes, int]]:
    """The default channel: every copy arrives, in order, ``DEFAULT_LINK_DELAY`` later."""
    return [(now + DEFAULT_LINK_DELAY, ifp, seq)]


def run_spandsp_fax(
    tx_tiff,
    rx_tiff,
    *,
    ecm: bool = True,
    version: int = 0,
    compressions=frozenset({"mh", "mr", "mmr"}),
    channel=None,
    max_sim_seconds: float = 600.0,
    tick_seconds: float = 0.02,
    max_bitrate: int = 14400,
    transferred_tcf: bool = True,
    sender_ident: str = "SPANDSP SENDER",
    receiver_ident: str = "SPANDSP RECEIVER",
    first_seq: int = 0,
    sender_options: dict | None = None,
    receiver_options: dict | None = None,
    log=False,
) -> FaxRun:
    """Fax ``tx_tiff`` from a SpanDSP T.38 terminal to another that writes ``rx_tiff``.

    Simulated time advances in ``tick_seconds`` steps (both terminals are advanced each
    step) until both report phase E or ``max_sim_seconds`` passes. Each IFP is given a
    UDPTL sequence number per direction (from ``first_seq``) and, for each of the
    ``count`` copies SpanDSP asks for, passed through ``channel(ifp, seq, now)`` which
    returns ``[(deliver_time, ifp, seq), ...]`` — drop, delay, duplicate or corrupt as
    you like. ``channel`` may also be a pair ``(to_receiver, to_sender)``. Deliveries due
    by a tick are fed in time order before the terminals advance; SpanDSP itself drops
    repeats and late packets. Runs in a fraction of a second of CPU per page.

    ``sender_options`` / ``receiver_options`` are extra :class:`SpandspT38Terminal`
    keyword arguments for one side (they override the shared ones, e.g.
    ``receiver_options={"ecm": False}``).
    """
    if channel is None:
        channels = (perfect_link, perfect_link)
    elif callable(channel):
        channels = (channel, channel)
    else:
        channels = tuple(channel)
    trace: list[TracedIfp] = []
    pending: list[tuple[float, int, str, bytes, int]] = []
    order = itertools.count()
    next_seq = {SENDER_TO_RECEIVER: first_seq, RECEIVER_TO_SENDER: first_seq}
    now = 0.0

    def emitter(direction: str, link):
        def on_ifp(ifp: bytes, count: int) -> None:
            seq = next_seq[direction]
            next_seq[direction] = (seq + 1) & 0xFFFF
            trace.append(TracedIfp(now, direction, seq, ifp, count))
            for _ in range(max(count, 1)):
                for deliver_time, data, data_seq in link(ifp, seq, now):
                    heapq.heappush(pending, (deliver_time, next(order), direction, data, data_seq))

        return on_ifp

    common = dict(version=version, ecm=ecm, compressions=compressions, max_bitrate=max_bitrate,
                  transferred_tcf=transferred_tcf, log=log)
    sender_kwargs = {**common, "ident": sender_ident, "tx_tiff": tx_tiff, **(sender_options or {})}
    receiver_kwargs = {**common, "ident": receiver_ident, "rx_tiff": rx_tiff, **(receiver_options or {})}
    with SpandspT38Terminal(calling_party=True, on_ifp=emitter(SENDER_TO_RECEIVER, channels[0]),
                            **sender_kwargs) as sender, \
            SpandspT38Terminal(calling_party=False, on_ifp=emitter(RECEIVER_TO_SENDER, channels[1]),
                               **receiver_kwargs) as receiver:
        samples_per_tick = round(tick_seconds * SAMPLE_RATE)
        ticks = int(max_sim_seconds / tick_seconds)
        for tick in range(ticks):
            now = tick * tick_seconds
            while pending and pending[0][0] <= now:
                _, _, direction, data, data_seq = heapq.heappop(pending)
                target = receiver if direction == SENDER_TO_RECEIVER else sender
                if target.phase_e_status is None:
                    target.rx_ifp(data, data_seq)
            if sender.phase_e_status is not None and receiver.phase_e_status is not None:
                break
            sender.advance(samples_per_tick)
            receiver.advance(samples_per_tick)
        return FaxRun(
            sender_status=sender.phase_e_status,
            receiver_status=receiver.phase_e_status,
            sender_stats=sender.stats(),
            receiver_stats=receiver.stats(),
            trace=trace,
            sim_seconds=now,
            sender_events=list(sender.events),
            receiver_events=list(receiver.events),
        )


# ---------------------------------------------------------------------------------------
# Fax TIFFs and SpanDSP's T.4 coder

_TIFF_COMPRESSIONS = {"group4", "group3", "raw"}


def _bitmap_to_image(bitmap: bytes, width: int, height: int):
    """A Pillow mode "1" image whose *stored bits* are ``bitmap`` (1 = black).

    Pillow reads a 1 bit as white, so the image looks inverted to Pillow; that is on
    purpose: saved without a photometric tag it stores these bits verbatim (fast), and
    :func:`_mark_min_is_white` then makes the file say what the bits mean. (Asking
    Pillow for MinIsWhite instead inverts the page pixel by pixel in Python: 0.4 s/page.)
    """
    from PIL import Image

    stride = (width + 7) // 8
    if len(bitmap) != stride * height:
        raise ValueError(f"bitmap is {len(bitmap)} bytes; {width}x{height} needs {stride * height}")
    return Image.frombytes("1", (width, height), bytes(bitmap), "raw", "1")


def _mark_min_is_white(path) -> None:
    """Rewrite PhotometricInterpretation to 0 (MinIsWhite) in every IFD of a TIFF file."""
    import struct

    with open(path, "r+b") as tiff:
        header = tiff.read(8)
        endian = {b"II": "<", b"MM": ">"}[header[:2]]
        (offset,) = struct.unpack(endian + "I", header[4:8])
        for _ in range(10_000):  # bounded walk of the IFD chain
            if offset == 0:
                return
            tiff.seek(offset)
            (count,) = struct.unpack(endian + "H", tiff.read(2))
            entries = tiff.read(12 * count)
            for index in range(count):
                tag, kind = struct.unpack_from(endian + "HH", entries, 12 * index)
                if tag == 262 and kind == 3:
                    tiff.seek(offset + 2 + 12 * index + 8)
                    tiff.write(struct.pack(endian + "H", 0))
            tiff.seek(offset + 2 + 12 * count)
            (offset,) = struct.unpack(endian + "I", tiff.read(4))
        raise ValueError(f"{path}: TIFF IFD chain does not end")


def make_fax_tiff(path, pages, *, x_dpi: float = 204, y_dpi: float = 196, compression: str = "group4") -> None:
    """Write ``pages`` — ``[(bitmap, width, height), ...]`` — as a multi-page fax TIFF.

    Bitmaps are packed rows, MSB first, 1 = black, each row padded to a whole byte
    (padding bits are not kept: they read back as 0).
    The TIFF is what SpanDSP's ``t4_tx`` reads: 1 bit per sample, one strip per page,
    PhotometricInterpretation MinIsWhite (SpanDSP inverts anything else), X/YResolution
    in pixels per inch (SpanDSP maps them to the nearest T.30 resolution within 5 %).
    ``compression`` is "group4" (T.6), "group3" (T.4 MH) or "raw".
    """
    from PIL import TiffImagePlugin

    if compression not in _TIFF_COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(_TIFF_COMPRESSIONS)}")
    if not pages:
        raise ValueError("a fax needs at least one page")
    images = [_bitmap_to_image(bitmap, width, height) for bitmap, width, height in pages]
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[296] = 2  # ResolutionUnit: inch
    # One strip per page: Pillow would otherwise cut pages into small strips.
    tags[278] = max(height for _, _, height in pages)
    images[0].save(
        os.fspath(path), format="TIFF", compression=None if compression == "raw" else compression,
        dpi=(x_dpi, y_dpi), tiffinfo=tags, save_all=True, append_images=images[1:],
    )
    _mark_min_is_white(path)


def read_fax_tiff(path) -> list[tuple[bytes, int, int, float, float]]:
    """Read every page of a (fax) TIFF: ``[(bitmap, width, height, x_dpi, y_dpi), ...]``.

    Bitmaps are packed rows, MSB first, 1 = black (whatever the file's photometric).
    """
    from PIL import Image, ImageSequence

    pages = []
    with Image.open(os.fspath(path)) as image:
        for frame in ImageSequence.Iterator(image):
            page = frame.convert("1") if frame.mode != "1" else frame
            x_dpi, y_dpi = (float(v) for v in frame.info.get("dpi", (0.0, 0.0)))
            pages.append((page.tobytes("raw", "1;I"), page.width, page.height, x_dpi, y_dpi))
    return pages


def read_pbm(data: bytes) -> tuple[bytes, int, int]:
    """Parse a raw (P4) PBM — e.g. an ITU T.24 chart — into ``(bitmap, width, height)``.

    PBM P4 rows are already our bitmap convention: MSB first, 1 = black, byte-padded.
    """
    if data[:2] != b"P4":
        raise ValueError("not a raw PBM (P4)")
    fields: list[bytes] = []
    position = 2
    while len(fields) < 2:
        while data[position:position + 1].isspace():
            position += 1
        if data[position:position + 1] == b"#":
            position = data.index(b"\n", position) + 1
            continue
        start = position
        while not data[position:position + 1].isspace():
            position += 1
        fields.append(data[start:position])
    position += 1  # the single whitespace byte before the raster
    width, height = int(fields[0]), int(fields[1])
    size = (width + 7) // 8 * height
    bitmap = data[position:position + size]
    if len(bitmap) != size:
        raise ValueError("PBM raster is truncated")
    return bitmap, width, height


def spandsp_t4_encode(bitmap: bytes, width: int, height: int, coding: str, *,
                      x_dpi: float = 204, y_dpi: float = 196) -> bytes:
    """The page coded exactly as SpanDSP's ``t4_tx`` puts it on the line.

    ``coding`` is "mh" (T.4 1-D), "mr" (T.4 2-D, K from ``y_dpi``: 2 at standard, 4 at
    fine) or "mmr" (T.6). Minimum row bits are 0, so there is no fill. MH/MR pages start
    each row with an EOL and end with RTC (6 EOLs); MMR ends with EOFB. The last byte is
    padded with 1 bits.

    Bit order: LSB first — the first bit on the line is the least significant bit of
    the first byte (TIFF FillOrder 2, as SpanDSP's t4_tx/t30 keep it). T.38 carries the
    other order: SpanDSP's t38_terminal.c bit-reverses every octet before it goes into an
    IFP, so T.38 non-ECM data is these bytes with each byte's bits reversed (MSB first).
    """
    if coding not in T4_COMPRESSIONS:
        raise ValueError(f"coding must be one of {sorted(T4_COMPRESSIONS)}")
    lib = load_spandsp()
    with tempfile.TemporaryDirectory(prefix="t38gw-t4-") as folder:
        tiff_path = os.path.join(folder, "page.tif")
        make_fax_tiff(tiff_path, [(bitmap, width, height)], x_dpi=x_dpi, y_dpi=y_dpi, compression="group4")
        state = lib.t4_tx_init(None, os.fsencode(tiff_path), -1, -1)
        if not state:
            raise RuntimeError(f"SpanDSP t4_tx_init could not open {tiff_path}")
        try:
            lib.t4_tx_set_tx_encoding(state, T4_COMPRESSIONS[coding])
            lib.t4_tx_set_min_bits_per_row(state, 0)
            if lib.t4_tx_start_page(state) != 0:
                raise RuntimeError("SpanDSP t4_tx_start_page failed")
            chunks = []
            buffer = ctypes.create_string_buffer(65536)
            # Bounded: a page can never exceed an uncompressed-size worst case of chunks.
            for _ in range(1 + (width * height) // 8 // len(buffer) * 4 + 64):
                got = lib.t4_tx_get_chunk(state, buffer, len(buffer))
                if got <= 0:
                    break
                chunks.append(buffer.raw[:got])
            else:
                raise RuntimeError("SpanDSP t4_tx_get_chunk did not reach the end of the page")
            lib.t4_tx_end_page(state)
        finally:
            lib.t4_tx_free(state)
    return b"".join(chunks)


def coded_page_tiff(coded: bytes, width: int, height: int, coding: str, *,
                    x_dpi: float = 204, y_dpi: float = 196, fill_order: int = 2) -> bytes:
    """A minimal one-page TIFF around an already coded T.4/T.6 page, for libtiff to decode.

    ``coded`` is the page as :func:`spandsp_t4_encode` returns it (``fill_order`` 2:
    LSB first). Nothing is re-encoded: the strip is ``coded`` verbatim, so decoding the
    TIFF checks the coder's output.
    """
    import struct
    from fractions import Fraction

    if coding not in T4_COMPRESSIONS:
        raise ValueError(f"coding must be one of {sorted(T4_COMPRESSIONS)}")
    compression = 4 if coding == "mmr" else 3
    entries = [
        (256, 4, width), (257, 4, height), (258, 3, 1),
        (259, 3, compression), (262, 3, 0), (266, 3, fill_order),
        (273, 4, 0),  # StripOffsets, patched below
        (277, 3, 1), (278, 4, height), (279, 4, len(coded)),
        (282, 5, Fraction(x_dpi).limit_denominator(1000)),
        (283, 5, Fraction(y_dpi).limit_denominator(1000)),
        (296, 3, 2),
        (292 if compression == 3 else 293, 4, 1 if coding == "mr" else 0),  # T4Options / T6Options
    ]
    entries.sort()
    header_size = 8
    ifd_size = 2 + 12 * len(entries) + 4
    rationals_offset = header_size + ifd_size
    data_offset = rationals_offset + 8 * sum(1 for _, kind, _ in entries if kind == 5)
    ifd = struct.pack("<H", len(entries))
    rationals = b""
    for tag, kind, value in entries:
        if tag == 273:
            value = data_offset
        if kind == 5:
            ifd += struct.pack("<HHII", tag, kind, 1, rationals_offset + len(rationals))
            rationals += struct.pack("<II", value.numerator, value.denominator)
        elif kind == 3:
            ifd += struct.pack("<HHIHH", tag, kind, 1, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, 1, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", header_size) + ifd + rationals + coded
