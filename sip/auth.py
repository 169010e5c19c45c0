"""HTTP Digest authentication for SIP (RFC 3261 22.4, RFC 7616, RFC 8760).

Client side: ``parse_challenge`` reads a ``WWW-Authenticate``/``Proxy-Authenticate``
value; ``DigestClient.authorize`` answers it with an ``Authorization`` /
``Proxy-Authorization`` value (MD5, SHA-256, SHA-512-256 and their ``-sess`` forms,
qop ``auth`` or ``auth-int``, a cnonce from an injected ``random.Random``, nonce counts per
nonce). ``DigestClient.should_retry`` says whether a second challenge is worth answering
(RFC 7616 3.3: only when ``stale=true``; otherwise the credentials were refused).

Server side: ``DigestServer`` issues challenges (one per algorithm, SHA-256 first, RFC 8760 2.4)
with nonces that carry their issue time and an HMAC, so they need no storage, and
verifies credentials, telling an expired nonce (answer again with ``stale=true``) from a
wrong password. Time comes in as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import base64
import re
import hashlib
import hmac
import random
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from collections.abc import Callable, Iterable, Mapping

from .errors import LocalProtocolError, SipParseError
from .grammar import read_quoted, split_outside_quotes
from .message import Response
from .uri import TOKEN_CHARS

__all__ = [
    "AuthOutcome",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "Verdict",
    "digest_response",
    "parse_challenge",
    "parse_credentials",
]

# RFC 7616 3.2 / RFC 8760 2.2: algorithm name -> hashlib name.
_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def _hash_name(algorithm: str) -> tuple[str, bool]:
    upper = algorithm.upper()
    session = upper.endswith("-SESS")
    base = upper[:-5] if session else upper
    name = _HASHES.get(base)
    if name is None:
        raise SipParseError(f"unsupported digest algorithm {algorithm!r}", 401)
    return name, session


def _h(hash_name: str, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.new(hash_name, data).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value of RFC 7616 3.4.1 (RFC 2617 3.2.2.1 when ``qop`` is None).

    A1 = username:realm:password, or for ``-sess`` H(that):nonce:cnonce (3.4.2);
    A2 = method:uri, with :H(body) for ``auth-int`` (3.4.3).
    """
    hash_name, session = _hash_name(algorithm)
    ha1 = _h(hash_name, f"{username}:{realm}:{password}")
    if session:
        if cnonce is None:
            raise LocalProtocolError("a -sess algorithm needs a cnonce")
        ha1 = _h(hash_name, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _h(hash_name, f"{method}:{uri}:{_h(hash_name, body)}")
    else:
        ha2 = _h(hash_name, f"{method}:{uri}")
    if qop is None:
        return _h(hash_name, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise LocalProtocolError("qop needs nc and cnonce")
    return _h(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _parse_auth_params(text: str, context: str) -> dict[str, str]:
    """``name=value, name="quoted"`` -> dict with names lower-cased and quotes removed."""
    params: dict[str, str] = {}
    for item in split_outside_quotes(text, ",", angle=False):
        item = item.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if not eq or not name or not TOKEN_CHARS.issuperset(name) or not value:
            raise SipParseError(f"bad auth parameter {item!r} in {context!r}", 400)
        if value[0] == '"':
            unquoted, end = read_quoted(value, 0)
            if end != len(value):
                raise SipParseError(f"junk after quoted auth parameter {item!r}", 400)
            params[name] = unquoted
        else:
            if not _BARE_VALUE_CHARS.issuperset(value):
                raise SipParseError(f"bad auth parameter value {item!r}", 400)
            params[name] = value
    return params


# RFC 7616 3.3 values are tokens or quoted; some servers send bare values with these too.
_BARE_VALUE_CHARS = TOKEN_CHARS | frozenset("/=:@")


def _split_scheme(value: str) -> tuple[str, str]:
    text = value.strip()
    parts = text.split(None, 1)
    if not parts or not TOKEN_CHARS.issuperset(parts[0]):
        raise SipParseError(f"bad auth header {value!r}", 400)
    return parts[0], parts[1] if len(parts) > 1 else ""


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 7616 3.3)."""

    scheme: str
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    domain: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"


def challenge_in(response: Response) -> tuple[Challenge, str] | None:
    """The Digest challenge of a 401/407 response and the header that answers it
    (``Authorization`` for 401, ``Proxy-Authorization`` for 407); None when the response
    carries no usable challenge (RFC 3261 22.2/22.3)."""
    header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    value = response.headers.get(header)
    if value is None:
        return None
    try:
        challenge = parse_challenge(value)
    except SipParseError:
        return None
    return challenge, "Authorization" if response.status == 401 else "Proxy-Authorization"


def parse_challenge(value: str) -> Challenge:
    """Parse a Digest challenge. Raises ``SipParseError`` for a malformed value or a
    non-Digest scheme (status hint 401: challenge again or give up)."""
    scheme, rest = _split_scheme(value)
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported auth scheme {scheme!r}", 401)
    params = _parse_auth_params(rest, value)
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None or nonce is None:
        raise SipParseError(f"Digest challenge without realm or nonce: {value!r}", 401)
    algorithm = params.get("algorithm", "MD5")
    _hash_name(algorithm)
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        scheme=scheme,
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        userhash=params.get("userhash", "").lower() == "true",
        domain=params.get("domain"),
        params=params,
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` value (RFC 7616 3.4)."""

    scheme: str
    params: Mapping[str, str]
    token68: str | None = None  # RFC 7235 2.1, e.g. Basic credentials

    def get(self, name: str) -> str | None:
        return self.params.get(name)


_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def parse_credentials(value: str) -> Credentials:
    """Parse credentials of any scheme (RFC 4475 3.3.7 regaut01 has an unknown one)."""
    scheme, rest = _split_scheme(value)
    rest = rest.strip()
    if scheme.lower() != "digest" and _TOKEN68.fullmatch(rest) and "=" not in rest.rstrip("="):
        return Credentials(scheme, {}, rest)
    return Credentials(scheme, _parse_auth_params(rest, value))


def _quote(text: str) -> str:
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class DigestClient:
    """Answers Digest challenges for one account.

    ``rng`` supplies cnonces (inject a seeded ``random.Random`` for a replayable test;
    use ``random.SystemRandom()`` in service).
    """

    def __init__(self, username: str, password: str, *, rng: random.Random) -> None:
        self.username = username
        self.password = password
        self._rng = rng
        self._nonce_counts: dict[str, int] = {}

    def should_retry(self, challenge: Challenge, *, already_answered: bool) -> bool:
        """Whether to answer ``challenge`` on a request that already carried our credentials.

        RFC 7616 3.3: ``stale=true`` means the digest was right but the nonce expired, so
        retry with the new nonce; without it the server refused the credentials, and
        RFC 3261 22.2 forbids resending them.
        """
        if not challenge.is_digest:
            return False
        return challenge.stale or not already_answered

    def authorize(
        self, challenge: Challenge, method: str, uri: str, body: bytes = b"", *, cnonce: str | None = None
    ) -> str:
        """The ``Authorization`` (or ``Proxy-Authorization``) value answering ``challenge``
        for a request ``method uri`` with ``body``.

        Prefers qop ``auth``; uses ``auth-int`` when it is the only one offered. Counts
        requests per nonce (``nc``, RFC 7616 3.4). ``cnonce`` overrides the random one
        (for reproducing published examples).
        """
        if not challenge.is_digest:
            raise LocalProtocolError(f"cannot answer a {challenge.scheme} challenge")
        qop: str | None = None
        if challenge.qop:
            if "auth" in challenge.qop:
                qop = "auth"
            elif "auth-int" in challenge.qop:
                qop = "auth-int"
            else:
                raise SipParseError(f"no supported qop in {challenge.qop}", 401)
        _, session = _hash_name(challenge.algorithm)
        nc = None
        if qop is not None or session:
            if cnonce is None:
                cnonce = f"{self._rng.getrandbits(128):032x}"
        if qop is not None:
            count = self._nonce_counts.get(challenge.nonce, 0) + 1
            self._nonce_counts[challenge.nonce] = count
            nc = f"{count:08x}"
        if len(self._nonce_counts) > 64:
            # Keep counts only for recent nonces; an old nonce will be challenged as stale.
            for old in list(self._nonce_counts)[:-32]:
                del self._nonce_counts[old]
        username = self.username
        if challenge.userhash:
            # RFC 7616 3.4.4: username = H(username:realm), userhash=true.
            username = _h(_hash_name(challenge.algorithm)[0], f"{self.username}:{challenge.realm}")
        response = digest_response(
            algorithm=challenge.algorithm,
            username=self.username,
            realm=challenge.realm,
            password=self.password,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        parts = [
            f"username={_quote(username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop is not None:
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc}")
        if challenge.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


class AuthOutcome(Enum):
    ACCEPTED = "accepted"
    STALE = "stale"  # right password, expired nonce: challenge again with stale=true
    REJECTED = "rejected"  # wrong or missing credentials: challenge again (or 403)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: AuthOutcome
    username: str | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome is AuthOutcome.ACCEPTED


class DigestServer:
    """Challenges requests and verifies Digest credentials for one realm.

    ``passwords`` maps a username to its password (a mapping or a callable returning None
    for an unknown user). Nonces are ``base64(issued_at | random | HMAC)`` under a secret
    drawn from ``rng``: any of our nonces verifies without storage, and one older than
    ``nonce_lifetime`` seconds is answered as stale. Nonce counts are remembered for the
    most recent ``max_tracked_nonces`` nonces so a replayed ``nc`` is refused.
    """

    def __init__(
        self,
        realm: str,
        passwords: Mapping[str, str] | Callable[[str], str | None],
        *,
        rng: random.Random,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonce_lifetime: float = 300.0,
        max_tracked_nonces: int = 4096,
    ) -> None:
        self.realm = realm
        self._lookup = passwords.get if isinstance(passwords, Mapping) else passwords
        self._rng = rng
        self._secret = rng.getrandbits(256).to_bytes(32, "big")
        self.algorithms = tuple(algorithms)
        for algorithm in self.algorithms:
            _hash_name(algorithm)
        self.nonce_lifetime = nonce_lifetime
        self._max_tracked = max_tracked_nonces
        self._last_nc: OrderedDict[str, int] = OrderedDict()
        self.opaque = f"{rng.getrandbits(64):016x}"

    def _make_nonce(self, now: float) -> str:
        stamp = struct.pack(">dQ", now, self._rng.getrandbits(64))
        mac = hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(stamp + mac).decode("ascii").rstrip("=")

    def _nonce_time(self, nonce: str) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 32:
            return None
        stamp, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16]):
            return None
        issued: float = struct.unpack(">dQ", stamp)[0]
        return issued

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm in preference order (RFC 8760 2.4)."""
        nonce = self._make_nonce(now)
        values = []
        for algorithm in self.algorithms:
            value = (
                f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
                f"opaque={_quote(self.opaque)}, algorithm={algorithm}, qop=\"auth\""
            )
            if stale:
                value += ", stale=true"
            values.append(value)
        return values

    def verify(
        self, authorization: str | None, method: str, now: float, *, request_uri: str | None = None, body: bytes = b""
    ) -> Verdict:
        """Check an ``Authorization`` value for a request ``method`` (with ``body`` for
        auth-int). ``request_uri``, if given, must equal the credentials' ``uri``
        (RFC 7616 3.4.6). Never raises for bad input: a malformed value is REJECTED.
        """
        if authorization is None:
            return Verdict(AuthOutcome.REJECTED, reason="no credentials")
        try:
            credentials = parse_credentials(authorization)
        except SipParseError as exc:
            return Verdict(AuthOutcome.REJECTED, reason=str(exc))
        if credentials.scheme.lower() != "digest":
            return Verdict(AuthOutcome.REJECTED, reason=f"scheme {credentials.scheme}")
        p = credentials.params
        username, realm, nonce, uri, response = (p.get(k) for k in ("username", "realm", "nonce", "uri", "response"))
        if username is None or realm is None or nonce is None or uri is None or response is None:
            return Verdict(AuthOutcome.REJECTED, reason="incomplete credentials")
        if realm != self.realm:
            return Verdict(AuthOutcome.REJECTED, username, "wrong realm")
        if request_uri is not None and uri != request_uri:
            return Verdict(AuthOutcome.REJECTED, username, "uri does not match the Request-URI")
        algorithm = p.get("algorithm", "MD5")
        if algorithm.upper() not in (a.upper() for a in self.algorithms):
            return Verdict(AuthOutcome.REJECTED, username, f"algorithm {algorithm} not offered")
        issued = self._nonce_time(nonce)
        if issued is None:
            return Verdict(AuthOutcome.REJECTED, username, "not our nonce")
        qop = p.get("qop")
        nc = p.get("nc")
        cnonce = p.get("cnonce")
        if qop not in ("auth", "auth-int") or nc is None or cnonce is None:
            return Verdict(AuthOutcome.REJECTED, username, "qop=auth required")
        try:
            count = int(nc, 16)
        except ValueError:
            return Verdict(AuthOutcome.REJECTED, username, "bad nc")
        password = self._lookup(username)
        if password is None:
            return Verdict(AuthOutcome.REJECTED, username, "unknown user")
        try:
            expected = digest_response(
                algorithm=algorithm, username=username, realm=realm, password=password, nonce=nonce,
                method=method, uri=uri, qop=qop, nc=nc, cnonce=cnonce, body=body,
            )
        except (SipParseError, LocalProtocolError) as exc:
            return Verdict(AuthOutcome.REJECTED, username, str(exc))
        if not hmac.compare_digest(expected, response.lower()):
            return Verdict(AuthOutcome.REJECTED, username, "wrong response")
        if now - issued > self.nonce_lifetime or now < issued - 1.0:
            return Verdict(AuthOutcome.STALE, username, "nonce expired")
        last = self._last_nc.get(nonce, 0)
        if count <= last:
            return Verdict(AuthOutcome.REJECTED, username, "nonce count replayed")
        self._last_nc[nonce] = count
        self._last_nc.move_to_end(nonce)
        while len(self._last_nc) > self._max_tracked:
            self._last_nc.popitem(last=False)
        return Verdict(AuthOutcome.ACCEPTED, username)
