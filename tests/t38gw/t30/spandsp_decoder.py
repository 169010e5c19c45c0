"""SpanDSP's own T.4/T.6 receiver (``t4_rx``) behind the engine's page-decoder interface.

A test adapter, not product code: it lets the engine be checked against a second,
independent decoder (and ran the first interop calls before ``imaging`` landed).  The
engine hands decoders T.38-order octets (first transmitted bit = MSB); ``t4_rx`` wants
them LSB-first, as SpanDSP's ``t38_terminal.c`` reverses them before ``t30_non_ecm_put``.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass

from t38gw.t30.dcs import Compression
from t38gw.t30.frames import REVERSE_BITS
from tests.peers.spandsp import load_spandsp, read_fax_tiff

_ENCODINGS = {Compression.MH: 1, Compression.MR: 2, Compression.MMR: 3}


class _T4Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "pages_transferred", "pages_in_file", "width", "length", "bad_rows",
        "longest_bad_row_run", "x_resolution", "y_resolution", "encoding", "line_image_size")]


@dataclass(frozen=True)
class SpandspDecodedPage:
    width: int
    height: int
    bitmap: bytes
    bad_rows: int
    longest_bad_run: int


class SpandspPageDecoder:
    """``feed(bytes)``, ``page_ended``, ``rows``, ``finish()`` over SpanDSP's t4_rx."""

    def __init__(self, compression: Compression, width: int) -> None:
        lib = self._lib = load_spandsp()
        lib.t4_rx_init.restype = ctypes.c_void_p
        lib.t4_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        for name in ("t4_rx_set_rx_encoding", "t4_rx_set_image_width", "t4_rx_start_page",
                     "t4_rx_end_page", "t4_rx_free", "t4_rx_put_chunk", "t4_rx_get_transfer_statistics"):
            getattr(lib, name).argtypes = None
        self._folder = tempfile.TemporaryDirectory(prefix="t38gw-t4rx-")
        self._path = os.path.join(self._folder.name, "page.tif")
        self._state = ctypes.c_void_p(lib.t4_rx_init(None, os.fsencode(self._path), 3))
        if not self._state:
            raise RuntimeError("t4_rx_init failed")
        lib.t4_rx_set_rx_encoding(self._state, _ENCODINGS[compression])
        lib.t4_rx_set_image_width(self._state, width)
        lib.t4_rx_start_page(self._state)
        self.width = width
        self.page_ended = False
        self.rows = 0

    def feed(self, data: bytes) -> None:
        if self.page_ended:
            return
        buffer = ctypes.create_string_buffer(data.translate(REVERSE_BITS), len(data))
        if self._lib.t4_rx_put_chunk(self._state, buffer, len(data)):
            self.page_ended = True
        self.rows = max(self.rows, 1 if data.strip(b"\x00") else 0)

    def finish(self) -> SpandspDecodedPage:
        lib = self._lib
        lib.t4_rx_end_page(self._state)
        stats = _T4Stats()
        lib.t4_rx_get_transfer_statistics(self._state, ctypes.byref(stats))
        lib.t4_rx_free(self._state)
        self._state = None
        try:
            pages = read_fax_tiff(self._path)
        finally:
            self._folder.cleanup()
        bitmap, width, height, _, _ = pages[-1]
        return SpandspDecodedPage(width, height, bitmap, stats.bad_rows, stats.longest_bad_row_run)
