"""What a caller may put into the record: numbers and idents as numbers and idents.

The calling and called numbers come from SIP headers and the remote ident from the T.30
TSI; both are the caller's to choose.  meta.json and webhooks feed hospital systems that
may render them (HTML, HL7, CSV), so what is stored is restricted to the characters a
number or an ident can hold; anything else is replaced by ``_``.  When something was
replaced, the exact value is kept percent-encoded (RFC 3986 2.1) under ``raw``: nothing
is lost, and nothing raw reaches a consumer that did not ask for it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

# A dialled or presented number: digits, a leading +, the DTMF * and #, and the visual
# separators people write (RFC 3966 5.1.1 visual-separator: - . ( ) and space are dropped
# by dialers but harmless).  SIP user parts that are names ("fax", "alice") stay readable.
_NUMBER_CHAR = re.compile(r"[^0-9A-Za-z+*#.\-() ]")
# T.30 5.3.6.2.4 / Table 3: the ident is digits, "+" and space; real machines also send
# letters (a clinic's name), which are kept: only what no ident holds is replaced.
_IDENT_CHAR = re.compile(r"[^0-9A-Za-z+ .\-()/&,']")
# A header value (From/To) is kept as text, but never with control or non-ASCII bytes.
_HEADER_CHAR = re.compile(r"[^\x20-\x7e]")
_MAX_NUMBER = 64
_MAX_HEADER = 512


def _clean(value: str, pattern: re.Pattern[str], limit: int) -> str:
    return pattern.sub("_", value[:limit])


def clean_number(value: str) -> str:
    """``value`` with every character a number cannot hold replaced (at most 64 kept)."""
    return _clean(value, _NUMBER_CHAR, _MAX_NUMBER)


def clean_ident(value: str) -> str:
    """A T.30 ident (TSI/CSI, at most 20 characters on the wire) fit for the record."""
    return _clean(value, _IDENT_CHAR, _MAX_NUMBER)


def _raw(value: str) -> str:
    return quote(value, safe="")


def call_identity(*, call_id: str, from_: str, to: str, did: str, caller: str, remote_addr: str,
                  trunk: str) -> dict[str, object]:
    """meta.json's ``sip`` part, with ``raw`` holding the exact values that were cleaned."""
    cleaned = {
        "call_id": _clean(call_id, _HEADER_CHAR, _MAX_HEADER),
        "from": _clean(from_, _HEADER_CHAR, _MAX_HEADER),
        "to": _clean(to, _HEADER_CHAR, _MAX_HEADER),
        "did": clean_number(did),
        "caller": clean_number(caller),
        "remote_addr": remote_addr,
        "trunk": trunk,
    }
    originals = {"call_id": call_id, "from": from_, "to": to, "did": did, "caller": caller}
    raw = {key: _raw(value) for key, value in originals.items() if cleaned[key] != value}
    if raw:
        cleaned["raw"] = raw
    return cleaned


def original(sip_meta: dict, key: str) -> str:
    """The exact value of ``sip_meta[key]`` as the INVITE carried it (undoing the cleaning)."""
    raw = sip_meta.get("raw", {}).get(key)
    return unquote(raw) if raw is not None else str(sip_meta.get(key, ""))
