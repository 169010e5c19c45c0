"""Test pages: short random pages and the ITU-T T.24 charts, as packed 1-bit rows."""

from __future__ import annotations

import gzip
import random
from functools import lru_cache

from tests.conftest import testdata_dir
from tests.peers.spandsp import read_pbm


def random_page(rng: random.Random, width: int, height: int) -> bytes:
    """Rows of a few black runs each: compresses like text, differs in every row."""
    stride = width // 8
    page = bytearray(stride * height)
    for y in range(height):
        base = y * stride
        for _ in range(rng.randrange(0, 7)):
            start = rng.randrange(stride)
            length = rng.randrange(1, 24)
            end = min(stride, start + length)
            page[base + start:base + end] = b"\xff" * (end - start)
            page[base + start] = rng.randrange(256)
        if rng.random() < 0.1:  # an isolated dot: the coders' hardest case
            x = rng.randrange(width)
            page[base + (x >> 3)] ^= 0x80 >> (x & 7)
    return bytes(page)


@lru_cache(maxsize=8)
def itu_chart(number: int) -> tuple[bytes, int, int]:
    path = testdata_dir() / "itu_t24_charts" / f"itu{number}.pbm.gz"
    if not path.is_file():
        raise FileNotFoundError(f"ITU chart {path} not found; set T38GW_TESTDATA to the shared/testdata folder")
    return read_pbm(gzip.decompress(path.read_bytes()))


def chart_page(number: int, width: int, max_rows: int | None = None) -> bytes:
    """Chart ``number`` (1728 wide) placed at the left of a ``width``-pixel page."""
    bitmap, chart_width, height = itu_chart(number)
    if max_rows is not None:
        height = min(height, max_rows)
    stride, chart_stride = width // 8, chart_width // 8
    pad = bytes(stride - chart_stride)
    return b"".join(bitmap[y * chart_stride:(y + 1) * chart_stride] + pad for y in range(height))
