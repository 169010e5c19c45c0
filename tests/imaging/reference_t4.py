"""A deliberately plain, pel-by-pel T.4/T.6 line decoder used as a second opinion in tests.

It follows T.4 4.1/4.2 literally on lists of pels, with no tables, caches or run tricks, so
its verdict on a damaged line (valid or bad) is independent of the decoder under test. The
acceptance rules are the ones imaging.decoder documents: a vertical-mode a1 must lie right
of a0 and within the line, horizontal runs must end within the line, and only zeros (fill)
may follow the last code of a T.4 line.
"""

from __future__ import annotations

from imaging import t4codes

EOL = t4codes.EOL


def _run(bits: str, p: int, codes: dict[str, int]) -> tuple[int, int] | None:
    total = 0
    while True:
        for n in range(2, 14):
            if bits[p : p + n] in codes and p + n <= len(bits):
                value = codes[bits[p : p + n]]
                p += n
                total += value
                break
        else:
            return None
        if value < 64:
            return total, p


def decode_1d(bits: str, p: int, width: int) -> tuple[list[int], int] | None:
    pels: list[int] = []
    colour = 0
    while len(pels) < width:
        got = _run(bits, p, t4codes.WHITE_CODES if colour == 0 else t4codes.BLACK_CODES)
        if got is None:
            return None
        run, p = got
        pels += [colour] * run
        colour ^= 1
    if len(pels) != width:
        return None
    return pels, p


_MODES = {t4codes.PASS: ("P", 0), t4codes.HORIZONTAL: ("H", 0)}
_MODES.update({code: ("V", offset) for offset, code in t4codes.VERTICAL.items()})


def decode_2d(bits: str, p: int, reference: list[int], width: int) -> tuple[list[int], int] | None:
    def is_change(line, x):
        return line[x] != (line[x - 1] if x > 0 else 0)

    def next_change(x, colour=None):
        for y in range(max(x, 0), width):
            if is_change(reference, y) and (colour is None or reference[y] == colour):
                return y
        return width

    pels: list[int] = []
    a0, colour = -1, 0
    while a0 < width:
        b1 = next_change(a0 + 1, 1 - colour)
        b2 = next_change(b1 + 1)
        for code, (mode, offset) in _MODES.items():  # noqa: B007 (used after the break)
            if bits.startswith(code, p):
                p += len(code)
                break
        else:
            return None
        start = max(a0, 0)
        if mode == "P":
            pels += [colour] * (b2 - start)
            a0 = b2
        elif mode == "V":
            a1 = b1 + offset
            if a1 <= a0 or a1 > width:
                return None
            pels += [colour] * (a1 - start)
            a0, colour = a1, 1 - colour
        else:
            first = _run(bits, p, t4codes.WHITE_CODES if colour == 0 else t4codes.BLACK_CODES)
            if first is None:
                return None
            second = _run(bits, first[1], t4codes.BLACK_CODES if colour == 0 else t4codes.WHITE_CODES)
            if second is None:
                return None
            p = second[1]
            a1 = start + first[0]
            a2 = a1 + second[0]
            if a2 > width:
                return None
            pels += [colour] * (a1 - start) + [1 - colour] * (a2 - a1)
            a0 = a2
    return pels[:width], p


def decode_t4_page(bits: str, width: int, two_d: bool) -> tuple[list[list[int]], int, int]:
    """Rows, bad rows and longest bad run of a T.4 page given as line bits, RTC-terminated."""
    white = [0] * width
    rows: list[list[int]] = []
    bad = run = longest = 0
    last_good = white
    parts = bits.split(EOL)[1:]  # what precedes the first EOL is not page data
    consecutive = 1
    for index, line in enumerate(parts):
        last = index == len(parts) - 1
        tag_2d = two_d and line[:1] == "0"
        data = line[1:] if two_d else line
        if "1" not in data:
            consecutive += 1
            if consecutive >= 5:
                break
            continue
        if last and "1" in data:
            pass  # a last line with no EOL after it: decoded like any other
        consecutive = 1
        got = decode_2d(data + "0" * 32, 0, rows[-1] if rows else white, width) if tag_2d else decode_1d(data + "0" * 32, 0, width)
        if got is None or got[1] > len(data) or "1" in data[got[1] :]:
            bad += 1
            run += 1
            longest = max(longest, run)
            rows.append(last_good)
        else:
            run = 0
            last_good = got[0]
            rows.append(got[0])
    return rows, bad, longest
