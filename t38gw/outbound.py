"""The dial plan of an outbound fax, as pure functions: what a job's ``to`` becomes.

``to`` is a number or a ``sip:``/``sips:`` URI (issue 12, "Outbound calls"):

- A **number** (digits with an optional leading ``+``; spaces, dots, dashes and
  parentheses are dropped) is dialled through the first ``[[sip.trunks]]`` with
  ``outbound = true``: the Request-URI is ``sip:<number>@<the registrar's host[:port]>``,
  the INVITE is sent to the trunk's ``proxy`` (else to its registrar, with the registrar's
  ``;transport=``), our From is ``from_user@from_domain`` (defaults: the trunk's username,
  the registrar's host), and a 401/407 from the trunk is answered with the trunk's
  username and password (RFC 3261 22.2).
- A **URI** is dialled as is only when ``[send] allow_direct_uri = true``: by default an
  API client must not be able to make the gateway call an arbitrary host.

Anything else raises :class:`DialPlanError`, whose message names the problem for the
API's 4xx; nothing is dialled.  ``t38gw.call.CallControl.dial`` takes the
:class:`DialTarget` this returns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sip.errors import SipParseError
from sip.uri import SipUri, parse_uri

_NUMBER = re.compile(r"^\+?[0-9]{1,32}$")
_SEPARATORS = re.compile(r"[\s.\-()/]")


class DialPlanError(ValueError):
    """``to`` cannot be dialled: the message says why (for a 4xx; nothing is queued)."""


class OutboundTrunk(Protocol):
    """The ``[[sip.trunks]]`` keys the dial plan reads (``t38gw.config.Trunk``)."""

    @property
    def name(self) -> str: ...
    @property
    def registrar(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def outbound(self) -> bool: ...
    @property
    def proxy(self) -> str: ...
    @property
    def from_user(self) -> str: ...
    @property
    def from_domain(self) -> str: ...


@dataclass(frozen=True)
class DialTarget:
    """Where and how to place one outbound call (``UserAgent.invite`` arguments)."""

    to: str  # what the job asked for
    uri: str  # the Request-URI
    number: str  # the dialled number ("" for a direct URI): the call's "did"
    trunk: str  # the trunk's name; "" for a direct URI
    proxy: str = ""  # where the INVITE goes ("": the Request-URI's host)
    from_user: str | None = None
    from_domain: str | None = None
    credentials: tuple[str, str] | None = None  # (username, password) for a 401/407

    def __repr__(self) -> str:  # the password never reaches a log line
        return (f"DialTarget(to={self.to!r}, uri={self.uri!r}, trunk={self.trunk!r}, proxy={self.proxy!r},"
                f" credentials={'***' if self.credentials else None})")


def normalise_number(to: str) -> str | None:
    """``to`` as a dialable number (digits, optional leading +), or None if it is not one."""
    number = _SEPARATORS.sub("", to.strip())
    return number if _NUMBER.match(number) else None


def _hostport(uri: SipUri) -> str:
    host = f"[{uri.host}]" if ":" in uri.host and not uri.host.startswith("[") else uri.host
    return f"{host}:{uri.port}" if uri.port else host


def plan_dial(to: str, trunks: Sequence[OutboundTrunk], *, allow_direct_uri: bool) -> DialTarget:
    """The :class:`DialTarget` for ``to``.  Raises :class:`DialPlanError`."""
    text = to.strip()
    if not text:
        raise DialPlanError("`to` is empty: give a number or a sip: URI")
    if text.lower().startswith(("sip:", "sips:")):
        if not allow_direct_uri:
            raise DialPlanError(f"`to` is a SIP URI ({text!r}) and [send] allow_direct_uri is false:"
                                " give a number, dialled through an outbound trunk")
        try:
            uri = parse_uri(text)
        except (SipParseError, ValueError) as exc:
            raise DialPlanError(f"`to` is not a valid SIP URI: {exc}") from None
        if not isinstance(uri, SipUri) or not uri.host:
            raise DialPlanError(f"`to` is not a sip:/sips: URI with a host: {text!r}")
        return DialTarget(to=to, uri=str(uri), number="", trunk="")
    number = normalise_number(text)
    if number is None:
        raise DialPlanError(f"`to` is neither a number (digits, an optional leading +) nor a sip: URI: {text!r}")
    trunk = next((t for t in trunks if t.outbound), None)
    if trunk is None:
        raise DialPlanError("no [[sip.trunks]] has outbound = true: a number cannot be dialled")
    registrar = parse_uri(trunk.registrar)
    if not isinstance(registrar, SipUri):
        raise DialPlanError(f"sip.trunks {trunk.name!r}: the registrar is not a sip:/sips: URI")
    request_uri = f"{registrar.scheme}:{number}@{_hostport(registrar)}"
    credentials = (trunk.username, trunk.password) if trunk.username else None
    return DialTarget(
        to=to, uri=request_uri, number=number, trunk=trunk.name, proxy=trunk.proxy or trunk.registrar,
        from_user=trunk.from_user or trunk.username or None,
        from_domain=trunk.from_domain or registrar.host,
        credentials=credentials)
