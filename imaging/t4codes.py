"""The code tables of ITU-T T.4 (clause 4.1.2, Tables 2/T.4 and 3/T.4, 4/T.4) and T.6.

Everything here is data plus lookup structures derived from it once at import. Codes are
written as strings of '0'/'1' in transmission order, which is how the decoder sees the
line too (see ``imaging.bits``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# T.4 Table 2: terminating codes, run lengths 0..63 (white, black).
WHITE_TERMINATING = (
    "00110101 000111 0111 1000 1011 1100 1110 1111 10011 10100 00111 01000 001000 000011 "
    "110100 110101 101010 101011 0100111 0001100 0001000 0010111 0000011 0000100 0101000 "
    "0101011 0010011 0100100 0011000 00000010 00000011 00011010 00011011 00010010 00010011 "
    "00010100 00010101 00010110 00010111 00101000 00101001 00101010 00101011 00101100 "
    "00101101 00000100 00000101 00001010 00001011 01010010 01010011 01010100 01010101 "
    "00100100 00100101 01011000 01011001 01011010 01011011 01001010 01001011 00110010 "
    "00110011 00110100"
).split()
BLACK_TERMINATING = (
    "0000110111 010 11 10 011 0011 0010 00011 000101 000100 0000100 0000101 0000111 "
    "00000100 00000111 000011000 0000010111 0000011000 0000001000 00001100111 00001101000 "
    "00001101100 00000110111 00000101000 00000010111 00000011000 000011001010 000011001011 "
    "000011001100 000011001101 000001101000 000001101001 000001101010 000001101011 "
    "000011010010 000011010011 000011010100 000011010101 000011010110 000011010111 "
    "000001101100 000001101101 000011011010 000011011011 000001010100 000001010101 "
    "000001010110 000001010111 000001100100 000001100101 000001010010 000001010011 "
    "000000100100 000000110111 000000111000 000000100111 000000101000 000001011000 "
    "000001011001 000000101011 000000101100 000001011010 000001100110 000001100111"
).split()
# T.4 Table 3: make-up codes, run lengths 64..1728 in steps of 64.
WHITE_MAKEUP = (
    "11011 10010 010111 0110111 00110110 00110111 01100100 01100101 01101000 01100111 "
    "011001100 011001101 011010010 011010011 011010100 011010101 011010110 011010111 "
    "011011000 011011001 011011010 011011011 010011000 010011001 010011010 011000 010011011"
).split()
BLACK_MAKEUP = (
    "0000001111 000011001000 000011001001 000001011011 000000110011 000000110100 "
    "000000110101 0000001101100 0000001101101 0000001001010 0000001001011 0000001001100 "
    "0000001001101 0000001110010 0000001110011 0000001110100 0000001110101 0000001110110 "
    "0000001110111 0000001010010 0000001010011 0000001010100 0000001010101 0000001011010 "
    "0000001011011 0000001100100 0000001100101"
).split()
# T.4 Table 4 (T.6 Table 3): extended make-up codes 1792..2560, shared by both colours.
EXTENDED_MAKEUP = (
    "00000001000 00000001100 00000001101 000000010010 000000010011 000000010100 "
    "000000010101 000000010110 000000010111 000000011100 000000011101 000000011110 "
    "000000011111"
).split()

EOL = "000000000001"  # T.4 4.1.2: eleven 0s then a 1; never occurs inside valid line data
EOFB = EOL + EOL  # T.6 2.4.1: end of facsimile block
MAX_MAKEUP = 2560

# T.4 4.2.1.3.2 / Table 5: two-dimensional mode codes.
PASS = "0001"
HORIZONTAL = "001"
VERTICAL = {0: "1", 1: "011", 2: "000011", 3: "0000011", -1: "010", -2: "000010", -3: "0000010"}


def _run_codes(terminating: list[str], makeup: list[str]) -> dict[str, int]:
    codes = {code: run for run, code in enumerate(terminating)}
    codes.update({code: 64 * (i + 1) for i, code in enumerate(makeup)})
    codes.update({code: 1792 + 64 * i for i, code in enumerate(EXTENDED_MAKEUP)})
    return codes


WHITE_CODES = _run_codes(WHITE_TERMINATING, WHITE_MAKEUP)
BLACK_CODES = _run_codes(BLACK_TERMINATING, BLACK_MAKEUP)


def _check_prefix_free(codes: dict[str, int]) -> None:
    ordered = sorted(codes)
    for shorter, longer in zip(ordered, ordered[1:]):
        assert not longer.startswith(shorter), (shorter, longer)


_check_prefix_free(WHITE_CODES)
_check_prefix_free(BLACK_CODES)
_check_prefix_free({PASS: 0, HORIZONTAL: 0, **{c: 0 for c in VERTICAL.values()}, "0000001": 0})

# --- Encoder side: the full code string for every run length up to the widest line. ---
MAX_WIDTH = 4864


def _full_run_code(run: int, terminating: list[str], makeup: list[str]) -> str:
    # T.4 4.1.2: runs of 2624 and more use make-up 2560 as often as needed, then one
    # make-up code (if the rest is >= 64) and always a terminating code.
    parts = []
    while run > MAX_MAKEUP + 63:
        parts.append(EXTENDED_MAKEUP[-1])
        run -= MAX_MAKEUP
    if run >= 64:
        hundreds = run // 64 * 64
        parts.append(makeup[hundreds // 64 - 1] if hundreds <= 1728 else EXTENDED_MAKEUP[(hundreds - 1792) // 64])
        run -= hundreds
    parts.append(terminating[run])
    return "".join(parts)


WHITE_RUN_CODE = [_full_run_code(r, WHITE_TERMINATING, WHITE_MAKEUP) for r in range(MAX_WIDTH + 1)]
BLACK_RUN_CODE = [_full_run_code(r, BLACK_TERMINATING, BLACK_MAKEUP) for r in range(MAX_WIDTH + 1)]

# --- Decoder side ---
# Run tables keyed by the next 13 bits (the longest run code is 13 bits): (run, code length).
LOOKAHEAD = 13


def _prefix_table(codes: dict[str, int]) -> dict[str, tuple[int, int]]:
    table: dict[str, tuple[int, int]] = {}
    for code, value in codes.items():
        free = LOOKAHEAD - len(code)
        for tail in range(1 << free):
            key = code + (format(tail, f"0{free}b") if free else "")
            table[key] = (value, len(code))
    return table


WHITE_TABLE = _prefix_table(WHITE_CODES)
BLACK_TABLE = _prefix_table(BLACK_CODES)

# Mode codes keyed by the next 7 bits: (kind, code length, vertical offset).
MODE_PASS, MODE_HORIZONTAL, MODE_VERTICAL = 0, 1, 2
MODE_LOOKAHEAD = 7
_MODE_CODES: dict[str, tuple[int, int]] = {PASS: (MODE_PASS, 0), HORIZONTAL: (MODE_HORIZONTAL, 0)}
_MODE_CODES.update({code: (MODE_VERTICAL, offset) for offset, code in VERTICAL.items()})
MODE_TABLE: dict[str, tuple[int, int, int]] = {}
for _code, (_kind, _offset) in _MODE_CODES.items():
    _free = MODE_LOOKAHEAD - len(_code)
    for _tail in range(1 << _free):
        MODE_TABLE[_code + (format(_tail, f"0{_free}b") if _free else "")] = (_kind, len(_code), _offset)


def _trie_regex(codes: Iterable[str]) -> str:
    """A regular expression matching exactly one code of a prefix-free set, as a binary trie.

    sre walks a trie alternation with one comparison per bit, where a flat alternation of
    ~100 literals would try them one by one.
    """
    ordered = sorted(codes)

    def build(prefix_codes: list[str], depth: int) -> str:
        if len(prefix_codes) == 1 and len(prefix_codes[0]) == depth:
            return ""
        branches = []
        for bit in "01":
            sub = [c for c in prefix_codes if len(c) > depth and c[depth] == bit]
            if sub:
                branches.append(bit + build(sub, depth + 1))
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return build(ordered, 0)


_WHITE_MAKEUP_RE = _trie_regex(c for c, r in WHITE_CODES.items() if r >= 64)
_WHITE_TERM_RE = _trie_regex(c for c, r in WHITE_CODES.items() if r < 64)
_BLACK_MAKEUP_RE = _trie_regex(c for c, r in BLACK_CODES.items() if r >= 64)
_BLACK_TERM_RE = _trie_regex(c for c, r in BLACK_CODES.items() if r < 64)
# One token of a one-dimensional line: a white run followed (unless the line ends) by a
# black run, each being make-up codes and a terminating code (T.4 4.1.1). A line's trailing
# zeros (fill, T.4 4.1.3) are one token; any other bit that starts no code is its own token,
# so a damaged line always shows a one-character token.
# The codes being prefix-free, backtracking can never find another parse: the group is
# atomic and the repeats possessive, which spares sre its backtracking bookkeeping.
MH_PAIR_TOKEN = re.compile(
    f"(?>(?:{_WHITE_MAKEUP_RE})*+{_WHITE_TERM_RE}(?:(?:{_BLACK_MAKEUP_RE})*+{_BLACK_TERM_RE})?)|0+\\Z|[01]"
)


def decode_mh_token_runs(token: str) -> tuple[int, ...] | None:
    """Run lengths of one MH_PAIR_TOKEN: (white,) or (white, black) as coded, zero-length
    runs included; () for fill; None if it is no code."""
    if token.strip("0") == "":
        return ()
    if len(token) == 1:
        return None
    runs = []
    position = 0
    for codes in (WHITE_CODES, BLACK_CODES):
        if position == len(token):
            break
        run = 0
        while position < len(token):
            for length in range(2, 14):
                value = codes.get(token[position : position + length])
                if value is not None:
                    break
            else:  # the token regex only matches whole codes
                return None
            position += length
            run += value
            if value < 64:
                break
        runs.append(run)
    return tuple(runs)


def decode_mh_token(token: str) -> str | None:
    """Pixels ('0' white, '1' black) of one MH_PAIR_TOKEN; '' for fill; None if it is no code."""
    runs = decode_mh_token_runs(token)
    if runs is None:
        return None
    return "".join(pixel * run for pixel, run in zip("01", runs))
