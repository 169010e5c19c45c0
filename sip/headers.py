"""SIP header names (canonical spellings, compact forms) and the ``Headers`` collection
(RFC 3261 7.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import LocalProtocolError
from .grammar import split_list
from .uri import TOKEN_CHARS

__all__ = [
    "COMPACT_FORMS",
    "HEADER_TABLE",
    "LIST_HEADERS",
    "SINGLE_HEADERS",
    "Headers",
    "canonical_name",
    "header_key",
]

# RFC 3261 7.3.3 and the compact forms registered since (IANA "Header Fields" registry).
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

KNOWN_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "History-Info",
    "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE",
    "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
    "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Remote-Party-ID",
    "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
]
CANONICAL_NAMES = {name.lower(): name for name in KNOWN_NAMES}
for _short, _long in COMPACT_FORMS.items():
    CANONICAL_NAMES[_short] = _long
# Spelling on the wire -> (lookup key, canonical name); exact spellings hit first.
HEADER_TABLE = {lower: (canonical.lower(), canonical) for lower, canonical in CANONICAL_NAMES.items()}
HEADER_TABLE.update({canonical: (canonical.lower(), canonical) for canonical in KNOWN_NAMES})
HEADER_TABLE.update({short.upper(): entry for short, entry in list(HEADER_TABLE.items()) if len(short) == 1})

# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1: such headers may be
# combined into one line, or split over several, without changing the meaning).
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding",
        "Content-Language", "Error-Info", "History-Info", "In-Reply-To",
        "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Proxy-Require", "Reason",
        "Record-Route", "Reject-Contact", "Require", "Route", "Security-Client",
        "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported",
        "Via", "Warning",
    )
)

# Headers that may appear at most once (RFC 3261 20, table 2; RFC 4475 3.3.2 multi01, mcl01).
SINGLE_HEADERS = frozenset(
    ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known names cased."""
    return CANONICAL_NAMES.get(name.lower(), name)


def header_key(name: str) -> str:
    lower = name.lower()
    canonical = CANONICAL_NAMES.get(lower)
    return canonical.lower() if canonical is not None else lower


class Headers:
    """Ordered, case-insensitive SIP headers. Compact names are stored expanded.

    Iterating yields ``(name, value)`` in wire order. ``get_all`` splits comma-joined
    values of list headers (Via, Contact, Route, Supported...).
    """

    __slots__ = ("entries", "version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.entries: list[tuple[str, str, str]] = []
        # Bumped by every change, so a message can tell its cached parses are current
        # without looking the header up again.
        self.version = 0
        for name, value in items:
            self.add(name, value)

    @classmethod
    def from_entries(cls, items: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers.entries = items
        headers.version = 0
        return headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self.entries:
            yield name, value

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self.entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self.entries] == [(k, v) for k, _, v in other.entries]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers.from_entries(list(self.entries))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (as on the wire, not split), or ``default``."""
        key = header_key(name)
        for k, _, value in self.entries:
            if k == key:
                return value
        return default

    def first_by_key(self, key: str) -> str | None:
        for k, _, value in self.entries:
            if k == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are also split at commas."""
        key = header_key(name)
        values = [value for k, _, value in self.entries if k == key]
        if key in LIST_HEADERS:
            return [item for value in values for item in split_list(value)]
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header line (after any others)."""
        self.entries.append(self._check(name, value))
        self.version += 1

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line at the top (a new Via goes above the others, RFC 3261 8.1.1.7)."""
        self.entries.insert(0, self._check(name, value))
        self.version += 1

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one, where the first was (or at the end)."""
        item = self._check(name, value)
        key = item[0]
        self.version += 1
        for index, (k, _, _) in enumerate(self.entries):
            if k == key:
                self.entries[index] = item
                self.entries[index + 1 :] = [it for it in self.entries[index + 1 :] if it[0] != key]
                return
        self.entries.append(item)

    def remove(self, name: str) -> None:
        """Remove every ``name`` line (no error if there is none)."""
        key = header_key(name)
        self.entries = [item for item in self.entries if item[0] != key]
        self.version += 1

    @staticmethod
    def _check(name: str, value: str) -> tuple[str, str, str]:
        if not name or not TOKEN_CHARS.issuperset(name):
            raise LocalProtocolError(f"bad header name {name!r}")
        value = str(value)
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"header value with CR/LF: {name}: {value!r}")
        canonical = canonical_name(name)
        return canonical.lower(), canonical, value.strip()
