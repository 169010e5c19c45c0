"""The requests the UA originates outside a dialog (INVITE, OPTIONS, CANCEL), the
retries of a request (new branch, CSeq + 1; with digest credentials), and the Via and
Contact that name us. In-dialog requests are built by ``sip.dialog``.

Tags, branches and Call-IDs come from the injected rng (STYLE.md 4).
"""

from __future__ import annotations

import random

from sip.address import Address
from sip.auth import Challenge, DigestClient, challenge_in
from sip.call import Call
from sip.config import UAConfig
from sip.errors import LocalProtocolError
from sip.message import Headers, Request, Response
from sip.uri import SipUri, Uri

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE")
SUPPORTED_OPTIONS = ("timer",)


def host_ref(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 addresses in brackets (RFC 3261 25.1)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def uri_destination(uri: Uri, transport: str | None) -> Address:
    """Where a request to ``uri`` goes (RFC 3263 without DNS: the URI's host and port)."""
    if not isinstance(uri, SipUri):
        raise LocalProtocolError(f"cannot send a request to {uri}")
    chosen = (transport or uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    port = uri.port or (5061 if chosen == "tls" else 5060)
    return Address(chosen, uri.host_address, port)


def build_cancel(invite: Request) -> Request:
    """RFC 3261 9.1: same Request-URI, Call-ID, From, To, CSeq number, top Via, Route."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", invite.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
    return Request("CANCEL", invite.uri, headers)


def authorize(client: DigestClient, challenge: Challenge, request: Request) -> str:
    """The Authorization value ``client`` computes for ``request``."""
    return client.authorize(challenge, request.method, str(request.uri), request.body)


class RequestFactory:
    """Builds our requests from the UA's configuration and rng."""

    def __init__(self, config: UAConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng

    def local(self, transport: str) -> tuple[str, int]:
        """The (host, port) we are reachable at over ``transport``."""
        host, port = self.config.listen.get(transport) or next(iter(self.config.listen.values()))
        return (self.config.public_host or host), port

    def via(self, transport: str) -> str:
        host, port = self.local(transport)
        return f"SIP/2.0/{transport.upper()} {host_ref(host)}:{port};branch=z9hG4bK{self.random_hex(16)};rport"

    def contact(self, transport: str, user: str | None = None) -> str:
        host, port = self.local(transport)
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{user or self.config.user}@{host_ref(host)}:{port}{suffix}>"

    def new_tag(self) -> str:
        return self.random_hex(8)

    def new_call_id(self, host: str) -> str:
        """A fresh Call-ID (RFC 3261 8.1.1.4), one ``config.call_id_owner`` accepts."""
        owner = self.config.call_id_owner
        while True:
            call_id = f"{self.random_hex(16)}@{host}"
            if owner is None or owner(call_id):
                return call_id

    def random_hex(self, length: int) -> str:
        # One draw, not one per digit: with random.SystemRandom (the service's) each draw
        # is a getrandom(2) system call - 16 of them for every branch and Call-ID.
        return f"{self.rng.getrandbits(4 * length):0{length}x}"

    def invite(
        self, target: SipUri, destination: Address, sdp: bytes, *, local_tag: str, from_user: str | None,
        from_domain: str | None = None,
    ) -> Request:
        """A dialog-creating INVITE to ``target`` offering ``sdp`` (RFC 3261 8.1.1); the From
        names ``from_user@from_domain`` (defaults: our user, our host)."""
        config = self.config
        host, _ = self.local(destination.transport)
        call_id = self.new_call_id(host)
        headers = Headers()
        headers.add("Via", self.via(destination.transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{from_user or config.user}@{host_ref(from_domain or host)}>;tag={local_tag}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{self.rng.randint(1, 9999)} INVITE")
        headers.add("Contact", self.contact(destination.transport))
        headers.add("Allow", ", ".join(ALLOWED_METHODS))
        headers.add("Supported", ", ".join(SUPPORTED_OPTIONS))
        if config.session_expires:
            headers.add("Session-Expires", str(config.session_expires))
            headers.add("Min-SE", str(config.min_se))
        headers.add("User-Agent", config.user_agent)
        if sdp:
            headers.add("Content-Type", "application/sdp")
        return Request("INVITE", target, headers, sdp)

    def options(self, target: Uri, destination: Address) -> Request:
        """An out-of-dialog OPTIONS (RFC 3261 11.1)."""
        host, _ = self.local(destination.transport)
        headers = Headers()
        headers.add("Via", self.via(destination.transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{self.config.user}@{host_ref(host)}>;tag={self.new_tag()}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", self.new_call_id(host))
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", "application/sdp")
        return Request("OPTIONS", target, headers)

    def copy_for_retry(self, request: Request) -> Request:
        """A copy of ``request`` with a new branch and the CSeq number + 1 (RFC 3261 8.1.3.5)."""
        headers = request.headers.copy()
        transport = request.vias[0].transport.lower()
        headers.remove("Via")  # a UA's own requests carry exactly one Via
        headers.prepend("Via", self.via(transport))
        number, method = request.cseq
        headers.set("CSeq", f"{number + 1} {method}")
        return Request(request.method, request.uri, headers, request.body)

    def authenticated_copy(self, request: Request, response: Response, credentials: tuple[str, str], call: Call) -> Request | None:
        """``request`` again with credentials for the challenge in ``response``, or None.

        RFC 3261 22.2: a second challenge for the same credentials means they were wrong,
        unless the server marked the nonce stale (RFC 7616 3.3), which is retried silently.
        """
        found = challenge_in(response)
        if found is None:
            return None
        challenge, answer_header = found
        if request.headers.get(answer_header) is not None and not challenge.stale:
            return None  # our credentials were refused
        if call.auth_tries >= 5:
            return None
        call.auth_tries += 1
        if call.digest is None:
            call.digest = DigestClient(*credentials, rng=self.rng)
        retry = self.copy_for_retry(request)
        retry.headers.remove(answer_header)
        retry.headers.add(answer_header, authorize(call.digest, challenge, retry))
        return retry
