"""SIP dialogs (RFC 3261 section 12), sans-IO.

A dialog is the peer-to-peer relationship an INVITE sets up: Call-ID, our tag and the
peer's tag identify it; it remembers the CSeq numbers in both directions, the route set
(from Record-Route) and the peer's current target (its Contact).  This module only
holds that state and builds in-dialog requests from it; call-level behaviour (answer,
re-INVITE, glare, BYE, session timers) lives in ``sip.ua``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sip.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sip.message import Headers, Request, Response, parse_name_addr
from sip.uri import parse_uri


def with_tag(party: str, tag: str) -> str:
    """A From/To header value with ``;tag=`` set (the value is kept as received)."""
    addr = parse_name_addr(party)
    if addr.tag == tag:
        return party
    if addr.tag is not None:
        raise LocalProtocolError(f"{party!r} already carries another tag")
    return f"{party};tag={tag}"


def header(message: Request | Response, name: str) -> str:
    """The first ``name`` header of a message; ``SipParseError`` when it has none."""
    value = message.headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value


def contact_uri(message: Request | Response) -> str | None:
    """The URI of the first Contact of a message, or None."""
    contacts = message.headers.get_all("Contact")
    if not contacts:
        return None
    return str(parse_name_addr(contacts[0]).uri)


@dataclass
class Dialog:
    """State of one dialog (RFC 3261 12.1).

    ``is_caller`` is True when we sent the dialog-creating INVITE; the caller generated
    the Call-ID and so "owns" it for the glare back-off of RFC 3261 14.1.
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str
    remote_party: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    is_caller: bool = False
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation -------------------------------------------------------------

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, *, secure: bool = False) -> Dialog:
        """The dialog a UAS creates when it answers ``request`` (RFC 3261 12.1.1)."""
        remote_target = contact_uri(request)
        if remote_target is None:
            raise RemoteProtocolError("INVITE without Contact", 400)
        remote = request.from_
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local_party=with_tag(header(request, "To"), local_tag),
            remote_party=header(request, "From"),
            remote_target=remote_target,
            # 12.1.1: the route set is the Record-Route list in order.
            route_set=list(request.headers.get_all("Record-Route")),
            local_seq=0,
            remote_seq=request.cseq[0],
            is_caller=False,
            secure=secure,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The dialog a UAC creates from a 2xx (or tagged 1xx) to ``request`` (12.1.2)."""
        remote_target = contact_uri(response) or str(request.uri)
        remote = response.to
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote.tag or "",
            local_party=header(request, "From"),
            remote_party=header(response, "To"),
            remote_target=remote_target,
            # 12.1.2: the route set is the Record-Route list in reverse order.
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_seq=request.cseq[0],
            remote_seq=None,
            is_caller=True,
            secure=secure,
        )

    # -- requests we send -----------------------------------------------------

    def next_cseq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for a new request (RFC 3261 12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if getattr(first, "lr", False):
            return self.remote_target, list(self.route_set)
        # Strict router: it goes in the Request-URI, the remote target at the end of Route.
        return str(first), list(self.route_set[1:]) + [f"<{self.remote_target}>"]

    def build_request(
        self,
        method: str,
        *,
        via: str,
        contact: str | None,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """A request inside this dialog.  ``cseq`` defaults to the next local number."""
        uri, routes = self.request_target()
        headers = Headers()
        headers.add("Via", via)
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", self.local_party)
        headers.add("To", self.remote_party)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.next_cseq() if cseq is None else cseq} {method}")
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra_headers:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(method, parse_uri(uri), headers, body)

    # -- requests we receive --------------------------------------------------

    def check_remote_cseq(self, request: Request) -> bool:
        """RFC 3261 12.2.2: a CSeq lower than the last one is out of order (answer 500).

        Returns True and records the number when the request is acceptable.  ACK and
        CANCEL carry the CSeq of the request they belong to, so they are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq[0]
        if self.remote_seq is not None and number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """Take the Contact of a target-refresh request or its 2xx (12.2.2, 12.2.1.2)."""
        target = contact_uri(message)
        if target is not None:
            self.remote_target = target
