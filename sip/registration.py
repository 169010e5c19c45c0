"""Registration of our contact with a trunk's registrar (RFC 3261 section 10), sans-IO.

One :class:`Registration` per configured trunk keeps the REGISTER Call-ID and CSeq
(10.2: the same Call-ID for every refresh, CSeq incremented), answers digest challenges
(RFC 7616 through ``sip.auth``; a ``stale=true`` challenge is retried with the new nonce
without counting as a failure), and computes when to refresh (before the binding
expires) or, after a failure, when to try again (exponential back-off with jitter from
the injected rng).  ``Registration.on_response`` says what a response to our REGISTER
means (:class:`Resend`, :class:`Granted` or :class:`Refused`); ``sip.ua.UserAgent``
sends the requests, arms the timers and reports the outcome as events.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from sip.auth import Challenge, DigestClient, challenge_in
from sip.message import Headers, Request, Response
from sip.uri import SipUri, parse_uri


@dataclass(frozen=True)
class Trunk:
    """A configured registration: ``[[sip.trunks]]`` in the gateway config."""

    name: str
    registrar: str  # sip:host[:port][;transport=tcp]
    username: str = ""
    password: str = ""
    expires: int = 600
    transport: str | None = None
    domain: str = ""  # the AOR domain; defaults to the registrar host

    @property
    def contact_user(self) -> str:
        return self.username or "t38gw"


class RegistrationState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


@dataclass(frozen=True)
class Resend:
    """Send the REGISTER again now (with credentials, or a longer expiry)."""


@dataclass(frozen=True)
class Granted:
    """The registrar accepted the binding for ``expires`` s; refresh at ``refresh_at``."""

    expires: int
    refresh_at: float


@dataclass(frozen=True)
class Refused:
    """The registration failed; try again in ``retry_in`` s."""

    status: int | None
    reason: str
    retry_in: float


RegisterStep = Resend | Granted | Refused


# Back-off after a failed registration: 30 s doubling to 30 min, +-20 % jitter.
BACKOFF_FIRST = 30.0
BACKOFF_MAX = 1800.0


class Registration:
    """State of one registration (see the module docstring)."""

    def __init__(self, trunk: Trunk, rng: random.Random, *, call_id: str, local_tag: str) -> None:
        self.trunk = trunk
        self.rng = rng
        self.call_id = call_id
        self.local_tag = local_tag
        self.cseq = 0
        self.state = RegistrationState.UNREGISTERED
        self.expires_wanted = trunk.expires
        self.expires: int | None = None
        self.refresh_at: float | None = None
        self.failures = 0
        self._challenge: Challenge | None = None
        self._header = "Authorization"
        self._auth_rounds = 0
        self._digest: DigestClient | None = None

    def registrar(self) -> SipUri:
        """The registrar's URI (``Trunk.registrar``, checked by the config to be sip:/sips:)."""
        registrar = parse_uri(self.trunk.registrar)
        if not isinstance(registrar, SipUri):
            raise ValueError(f"registrar {self.trunk.registrar!r} is not a sip:/sips: URI")
        return registrar

    def aor(self, host: str) -> str:
        registrar = parse_uri(self.trunk.registrar)
        domain = self.trunk.domain or (registrar.host if isinstance(registrar, SipUri) else host)
        user = self.trunk.username or self.trunk.contact_user
        return f"sip:{user}@{domain}"

    def build_request(self, *, via: str, contact: str, host: str) -> Request:
        """The next REGISTER (RFC 3261 10.2), with credentials if we hold a challenge."""
        registrar = self.registrar()
        request_uri = f"{registrar.scheme}:{registrar.host}" + (f":{registrar.port}" if registrar.port else "")
        self.cseq += 1
        aor = self.aor(host)
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{aor}>;tag={self.local_tag}")
        headers.add("To", f"<{aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", contact)
        headers.add("Expires", str(self.expires_wanted))
        headers.add("User-Agent", "t38gw")
        request = Request("REGISTER", request_uri, headers)
        if self._challenge is not None:
            request.headers.add(self._header, self._authorization(self._challenge, request))
        if self.state is not RegistrationState.REGISTERED:
            self.state = RegistrationState.REGISTERING
        return request

    def _authorization(self, challenge: Challenge, request: Request) -> str:
        if self._digest is None:
            self._digest = DigestClient(self.trunk.username, self.trunk.password, rng=self.rng)
        return self._digest.authorize(challenge, request.method, str(request.uri), request.body)

    def on_response(self, response: Response, now: float) -> RegisterStep | None:
        """What a response to our REGISTER means (None for a provisional one)."""
        if response.status < 200:
            return None
        if response.status < 300:
            expires = self.succeeded(response, now)
            if expires <= 0:
                # A binding granted for 0 s is no registration; back off, do not hammer.
                return self.on_failure(response.status, "registrar granted expires=0", now)
            assert self.refresh_at is not None
            return Granted(expires, self.refresh_at)
        if response.status in (401, 407) and self.take_challenge(response):
            return Resend()
        if response.status == 423:
            min_expires = response.headers.get("Min-Expires", "") or ""
            if min_expires.isdigit() and self.raise_expires(int(min_expires)):
                return Resend()
        return self.on_failure(response.status, response.reason, now)

    def on_failure(self, status: int | None, reason: str, now: float) -> Refused:
        """The REGISTER failed (a final non-2xx, a timeout, a transport error)."""
        return Refused(status, reason, self.failed(now))

    def take_challenge(self, response: Response) -> bool:
        """Remember a 401/407 challenge; False when retrying would be pointless."""
        if not self.trunk.username:
            return False
        found = challenge_in(response)
        if found is None:
            return False
        challenge, answer_header = found
        stale = challenge.stale
        # RFC 3261 22.2 / RFC 7616 3.3: a new challenge after our credentials means they
        # were refused, unless the nonce was merely stale.
        if not stale:
            self._auth_rounds += 1
            if self._auth_rounds > 1:
                return False
        self._challenge = challenge
        self._header = answer_header
        return True

    def succeeded(self, response: Response, now: float) -> int:
        """Record a 2xx; returns the granted expiry and sets ``refresh_at``."""
        granted: int | None = None
        for contact in response.contacts:
            if contact.expires is not None:
                granted = contact.expires if granted is None else min(granted, contact.expires)
        if granted is None:
            granted = response.expires if response.expires is not None else self.expires_wanted
        self.expires = granted
        self.state = RegistrationState.REGISTERED
        self.failures = 0
        self._auth_rounds = 0
        # Refresh before expiry: at half-life for short bindings, 32 s early for long ones.
        lead = max(granted / 2, granted - 32) if granted > 0 else 0
        self.refresh_at = now + max(1.0, min(lead, granted - 1 if granted > 1 else 1))
        return granted

    def failed(self, now: float) -> float:
        """Record a failure; returns the seconds until the next attempt."""
        self.state = RegistrationState.FAILED
        self.failures += 1
        self._auth_rounds = 0
        delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
        delay *= self.rng.uniform(0.8, 1.2)
        self.refresh_at = now + delay
        return delay

    def raise_expires(self, minimum: int) -> bool:
        """RFC 3261 10.2.8: a 423 names the shortest expiry the registrar accepts."""
        if minimum <= self.expires_wanted or minimum > 86400:
            return False
        self.expires_wanted = minimum
        return True
