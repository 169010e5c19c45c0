"""The ITU-T T.24 test charts (third-party data, read from the shared test data folder)."""

from __future__ import annotations

import functools
import gzip

from tests.conftest import testdata_dir

CHART_WIDTH = 1728
CHART_HEIGHT = 2376


@functools.cache
def chart(number: int) -> bytes:
    """Packed rows (1 = black) of ITU chart ``number`` (1..8), parsed from its PBM P4 file."""
    path = testdata_dir() / "itu_t24_charts" / f"itu{number}.pbm.gz"
    raw = gzip.decompress(path.read_bytes())
    magic, width, height, rest = raw.split(maxsplit=3)
    assert magic == b"P4" and (int(width), int(height)) == (CHART_WIDTH, CHART_HEIGHT), path
    bitmap = rest
    assert len(bitmap) == CHART_WIDTH // 8 * CHART_HEIGHT
    return bitmap
