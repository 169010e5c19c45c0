"""Real SIP bytes for the transaction/UA tests, built the way a peer puts them on the wire."""

from __future__ import annotations

from sip.parser import parse_message

CRLF = "\r\n"


def invite_bytes(branch: str = "z9hG4bKnashds8", *, cseq: int = 314159, to_tag: str | None = None,
                 call_id: str = "a84b4c76e66710@pc33.atlanta.example.com", body: bytes = b"",
                 sent_by: str = "pc33.atlanta.example.com", extra: str = "") -> bytes:
    # RFC 3261 24.2 F1-style INVITE from Alice.
    to = "Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"INVITE sip:bob@biloxi.example.com SIP/2.0{CRLF}"
        f"Via: SIP/2.0/UDP {sent_by};branch={branch}{CRLF}"
        f"Max-Forwards: 70{CRLF}"
        f"To: {to}{CRLF}"
        f"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774{CRLF}"
        f"Call-ID: {call_id}{CRLF}"
        f"CSeq: {cseq} INVITE{CRLF}"
        f"Contact: <sip:alice@pc33.atlanta.example.com>{CRLF}"
        f"{extra}"
        + (f"Content-Type: application/sdp{CRLF}" if body else "")
        + f"Content-Length: {len(body)}{CRLF}{CRLF}"
    )
    return head.encode() + body


def request_bytes(method: str, branch: str = "z9hG4bK776asdhds", *, cseq: int = 1, to_tag: str | None = None,
                  call_id: str = "a84b4c76e66710@pc33.atlanta.example.com",
                  sent_by: str = "pc33.atlanta.example.com") -> bytes:
    to = "Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:bob@biloxi.example.com SIP/2.0{CRLF}"
        f"Via: SIP/2.0/UDP {sent_by};branch={branch}{CRLF}"
        f"Max-Forwards: 70{CRLF}"
        f"To: {to}{CRLF}"
        f"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774{CRLF}"
        f"Call-ID: {call_id}{CRLF}"
        f"CSeq: {cseq} {method}{CRLF}"
        f"Content-Length: 0{CRLF}{CRLF}"
    ).encode()


def response_bytes(status: int, reason: str, request: bytes, *, to_tag: str | None = "a6c85cf") -> bytes:
    """A response a UAS would send for ``request`` (Via/From/To/Call-ID/CSeq copied)."""
    lines = request.split(b"\r\n\r\n", 1)[0].decode().split(CRLF)
    keep = []
    for line in lines[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name == "to" and to_tag and ";tag=" not in line:
            line = f"{line};tag={to_tag}"
        if name in ("via", "from", "to", "call-id", "cseq"):
            keep.append(line)
    return (f"SIP/2.0 {status} {reason}{CRLF}" + CRLF.join(keep) + f"{CRLF}Content-Length: 0{CRLF}{CRLF}").encode()


def msg(data: bytes):
    return parse_message(data)
