"""Gateway configuration: TOML file, embedded defaults, ``T38GW_<SECTION>_<KEY>`` overrides.

Every key has a default (DESIGN.md "Configuration"), so ``t38gw serve`` with no file
runs.  A bad configuration is refused whole with one ``ConfigError`` naming the key
and why: a half-working gateway (one listener up, routing broken) would lose faxes
silently, which is worse than not starting.

How it works: each key is declared once, as a field of the dataclass the rest of the
gateway reads, with a ``setting(default, doc, ...)`` that carries its range, choices,
rules on its own value, whether it is secret, and, for the few keys whose TOML text is
not their attribute (``listen = "udp:HOST:PORT"``, ``udptl_ports = "LOW-HIGH"``), the
functions that parse and render it.  Everything else is derived from those fields:

* ``load_config`` walks the dataclasses: unknown keys (with a did-you-mean), types,
  ranges, choices and one-value rules, each error naming the dotted key;
* environment overrides are coerced by the key's declared TOML type;
* error messages, ``describe`` (``t38gw check-config``) and ``to_toml`` show a secret as
  ``***`` (``redacted``);
* ``reference()`` prints the README's configuration block, a test holds the two equal.

Rules that relate keys to one another (a tls: listener needs a certificate, a route's
trunk and webhook must exist, a PEM pair must load, a webhook secret must decode) run
after that pass, in ``_check_relations``.

To add a key: add a field to its section's dataclass with a ``setting(...)``, then run
``python -m t38gw.config --reference`` and paste its output into README.md.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import ipaddress
import json
import math
import os
import re
import socket
import ssl
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from t38gw import webhooks as _webhooks


class ConfigError(Exception):
    """A configuration value is wrong.  ``key`` is the dotted key, e.g. ``t38.max_datagram``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


_NO_EXAMPLE: Any = object()


@dataclass(frozen=True)
class Setting:
    """What the schema knows about one key (see ``setting``)."""

    doc: str = ""
    min: float | None = None
    max: float | None = None
    unit: str = ""  # after a range in its error: "must be 60..86400 seconds"
    choices: tuple[Any, ...] = ()  # for a list: the values its items may take
    nonempty: bool = False
    unique: bool = False  # a list holds each item at most once
    check: Callable[[Any], str | None] | None = None  # a rule on this value alone: the problem, or None
    toml: str = ""  # the TOML type when the attribute's is not it: "str", "list[str]"
    parse: Callable[[Any, str], Any] | None = None  # (TOML value, dotted key) -> attribute value
    render: Callable[[Any], Any] | None = None  # attribute value -> TOML value
    secret: bool = False  # shown as "***" in errors, check-config and dumps
    mask: Callable[[Any], Any] | None = None  # how a non-secret sensitive value is shown (URLs)
    example: Any = _NO_EXAMPLE  # the README's value for a key of a repeatable table
    table: type | None = None  # a [section.key] table of this dataclass
    tables: type | None = None  # a [[section.key]] array of tables of this dataclass


def setting(default: Any = MISSING, doc: str = "", **spec: Any) -> Any:
    """A dataclass field that is a configuration key: its default, its README line, its rules."""
    return field(default=default, metadata={"setting": Setting(doc, **spec)})


# -- one-value rules and the keys whose TOML text differs from their attribute ---------------

# T.30 Table 3: the identity (CSI/TSI) is up to 20 characters of digits, space and "+".
_T30_IDENT = re.compile(r"^[0-9+ ]{0,20}$")
_LISTEN = re.compile(r"^(udp|tcp|tls):(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})$")
_WEBHOOK_EVENTS = ("fax.received", "fax.failed", "fax.sent", "fax.send_failed")
_LATCHING = ("strict", "learn")
MIN_TOKEN_CHARS = 32


@dataclass(frozen=True)
class Listener:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def _parse_listener(text: str, key: str) -> Listener:
    match = _LISTEN.match(text)
    if not match:
        raise ConfigError(key, f"{text!r} is not 'udp|tcp|tls:HOST:PORT'")
    transport, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
    if not 0 < port < 65536:
        raise ConfigError(key, f"port {port} is out of range 1-65535")
    return Listener(transport, host, port)


def _parse_listeners(texts: tuple[str, ...], key: str) -> tuple[Listener, ...]:
    return tuple(_parse_listener(text, key) for text in texts)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_networks(texts: tuple[str, ...], key: str) -> tuple[Network, ...]:
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(key, f"{text!r} is not an address or CIDR network") from None
    return tuple(networks)


def _parse_port_range(text: str, key: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(key, f"must be 'LOW-HIGH', got {text!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if not (1024 <= low <= high <= 65535):
        raise ConfigError(key, f"range {low}-{high} must lie within 1024-65535 with LOW <= HIGH")
    return low, high


def _parse_host_port(text: str, key: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError(key, f"must be 'HOST:PORT', got {text!r}")
    return host.strip("[]"), int(port)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _t30_ident(text: str) -> str | None:
    return None if _T30_IDENT.match(text) else f"T.30 identities are up to 20 digits, spaces or '+', got {text!r}"


def _has_mh(compressions: tuple[str, ...]) -> str | None:
    return None if "mh" in compressions else f"must include 'mh' (T.30 mandates it), got {list(compressions)}"


def _sip_uri(text: str) -> str | None:
    return None if text.startswith(("sip:", "sips:")) else f"must be a sip: or sips: URI, got {text!r}"


def _proxy_uri(text: str) -> str | None:
    """"" or a sip:/sips: URI with an optional ;transport=udp|tcp|tls."""
    if not text:
        return None
    problem = _sip_uri(text)
    if problem is not None:
        return problem
    match = re.search(r";transport=([^;?]*)", text, re.IGNORECASE)
    if match and match.group(1).lower() not in ("udp", "tcp", "tls"):
        return f"transport must be udp, tcp or tls, got {match.group(1)!r}"
    return None


def _regex(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}"
    return None


def _relative_path(text: str) -> str | None:
    if text and (Path(text).is_absolute() or ".." in Path(text).parts):
        return "must be a relative path inside the archive"
    return None


def _web_url(url: str) -> str | None:
    """http(s) with a host; whether plain http is allowed depends on ``allow_plain_http``."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"must be an https:// URL, got {_webhooks.redact_url(url)!r}"
    return None


def _api_tokens(tokens: tuple[str, ...]) -> str | None:
    for number, token in enumerate(tokens, 1):
        # The token is never repeated in the message: check-config output ends up in tickets.
        if len(token) < MIN_TOKEN_CHARS or token != token.strip() or any(c.isspace() for c in token):
            return (f"token #{number} is {len(token)} characters; tokens must be at least {MIN_TOKEN_CHARS}"
                    " characters without spaces (e.g. the output of"
                    " `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return None


# -- the schema: the dataclasses the gateway reads -------------------------------------------

@dataclass(frozen=True)
class Trunk:
    name: str = setting(doc="referred to by [[routes]] trunk", nonempty=True, example="carrier")
    registrar: str = setting(doc="where we REGISTER", check=_sip_uri, example="sip:sip.example.net")
    username: str = setting("")
    password: str = setting("", secret=True)
    expires: int = setting(600, "s, asked of the registrar", min=60, max=86400, unit=" seconds")
    media_latching: str = setting(
        "", '"" = [sip] media_latching; "strict" | "learn" for calls from this trunk', choices=("", *_LATCHING))
    outbound: bool = setting(False, "true: numbers in POST /v1/faxes `to` are dialled through this trunk")
    proxy: str = setting("", 'where INVITEs go, e.g. "sip:sbc.example.net:5060;transport=tcp"; "" = the registrar',
                         check=_proxy_uri)
    from_user: str = setting("", "user part of our From on outbound calls; \"\" = username")
    from_domain: str = setting("", "host part of our From on outbound calls; \"\" = the registrar's host")


@dataclass(frozen=True)
class SipUser:
    """Digest credentials a peer outside ``allow_from`` may use (RFC 3261 22.4)."""

    username: str = setting(nonempty=True, example="")
    password: str = setting(secret=True, nonempty=True, example="")


@dataclass(frozen=True)
class TlsConfig:
    certificate: str = setting("", "PEM files, for tls: listeners")
    private_key: str = setting("", secret=True)


@dataclass(frozen=True)
class SipConfig:
    listen: tuple[Listener, ...] = setting(
        (Listener("udp", "0.0.0.0", 5060), Listener("tcp", "0.0.0.0", 5060)),
        '"tls:0.0.0.0:5061" needs [sip.tls]',
        toml="list[str]", parse=_parse_listeners, render=lambda ls: [str(lst) for lst in ls], nonempty=True)
    public_address: str = setting("", "advertised in Contact/SDP when behind NAT")
    allow_from: tuple[Network, ...] = setting(
        (ipaddress.ip_network("127.0.0.0/8"),), "peers allowed to send INVITE without auth",
        toml="list[str]", parse=_parse_networks, render=lambda ns: [str(n) for n in ns])
    t38_reinvite_after: float = setting(0.0, "s after answering audio before our T.38 re-INVITE; <0: wait for the peer")
    # Well inside the 180 s after which the UA gives up on an unanswered INVITE (480).
    answer_after: float = setting(0.0, "s of ringing (180) before answering (0..60); a CANCEL meanwhile leaves no fax",
                                  min=0.0, max=60.0, unit=" seconds of ringing")
    trunks: tuple[Trunk, ...] = setting((), "optional, repeatable", tables=Trunk)
    tls: TlsConfig = setting(TlsConfig(), table=TlsConfig)
    media_latching: str = setting(
        "strict", '"strict": UDPTL only from the SDP\'s host (port learnt); "learn": may move\n'
                  "after 4 in-sequence datagrams from a new source, never after the first page", choices=_LATCHING)
    # RFC 8760 2.4: the challenges are offered in this order.
    auth_algorithms: tuple[str, ...] = setting(
        ("SHA-256", "MD5"), "digest challenges to peers outside allow_from, in this order",
        choices=("SHA-256", "MD5"), nonempty=True, unique=True)
    users: tuple[SipUser, ...] = setting(
        (), "optional, repeatable: digest credentials for peers outside allow_from", tables=SipUser)


@dataclass(frozen=True)
class T38Config:
    udptl_ports: tuple[int, int] = setting(
        (40000, 40999), "UDP ports for media, one per call", toml="str", parse=_parse_port_range,
        render=lambda ports: f"{ports[0]}-{ports[1]}")
    error_correction: str = setting("redundancy", '"redundancy" | "fec" | "none" (offered; the answer may downgrade)',
                                    choices=("redundancy", "fec", "none"))
    redundancy_depth: int = setting(3, "earlier IFPs repeated in each datagram", min=0, max=7)
    fec_span: int = setting(3, "IFPs each FEC entry covers", min=1, max=15)
    fec_entries: int = setting(3, "FEC entries in each datagram", min=1, max=15)
    # Below ~100 octets no HDLC frame with redundancy fits; T.38 D.2.3 lets the peer
    # state its receive limit, ours must be sane.
    max_datagram: int = setting(400, "octets: T38FaxMaxDatagram we announce", min=100, max=65535)
    versions: tuple[int, ...] = setting((0, 1, 2, 3), "T.38 versions we support; the highest is offered", choices=(0, 1, 2, 3), nonempty=True)
    max_bitrate: int = setting(14400, "bit/s: T38MaxBitRate (at most 14400) and the modems\nin DIS (V.29 from 9600, V.17 from 14400)",
                               choices=(2400, 4800, 7200, 9600, 12000, 14400, 33600))
    audio_fallback: bool = setting(
        True, "a call on G.711 that never turns T.38 carries the fax as audio\n(SpanDSP's modems; needs libspandsp2)")


@dataclass(frozen=True)
class AudioConfig:
    jitter_ms: int = setting(100, "ms of RTP buffered before playout (audio fax)", min=20, max=300)


@dataclass(frozen=True)
class FaxConfig:
    local_ident: str = setting("", "our CSI: up to 20 digits, spaces or +", check=_t30_ident)
    ecm: bool = setting(True, "offer error correction mode in DIS (T.30 Annex A)")
    compressions: tuple[str, ...] = setting(("mh", "mr", "mmr"), "offered in DIS; mh is mandatory",
                                            choices=("mh", "mr", "mmr"), check=_has_mh)


@dataclass(frozen=True)
class ArchiveConfig:
    dir: str = setting("var/archive", "root of the fax folders", nonempty=True)
    formats: tuple[str, ...] = setting(("pdf", "tiff"), "documents written for each fax",
                                       choices=("pdf", "tiff"), nonempty=True)
    audit_log: str = setting("var/audit.jsonl", "one JSON line per event that touches a fax (stored, read, webhook,\n"
                                                "hold, deletion); 0600, hash-chained")
    index: str = setting("var/index.db", "the search index (SQLite, rebuilt from the folders by `t38gw archive reindex`)")


@dataclass(frozen=True)
class RetentionConfig:
    keep_days: int = setting(3650, "days a finished fax is kept; 0 = forever; held faxes are never deleted",
                             min=0, max=36500)


@dataclass(frozen=True)
class LimitsConfig:
    max_calls: int = setting(500, "calls (ringing or running) beyond which a new INVITE gets 503", min=1, max=100000)
    # T.30 counts pages in one octet per block in ECM, but nothing bounds a call's pages;
    # 200 is a long document, and a bound keeps one caller from filling the disk.
    max_pages_per_call: int = setting(
        200, "the page that reaches it is confirmed, then the call ends (partial)", min=1, max=10000)
    max_page_rows: int = setting(32768, "a taller page is not confirmed; the call ends", min=100, max=65535)
    max_call_seconds: int = setting(7200, "the call ends; confirmed pages are kept", min=60, max=86400, unit=" seconds")
    # Issue 14: admission by measured load, so a new call never damages the running ones.
    max_event_loop_lag: float = setting(
        0.15, "s: a new INVITE gets 503 while the event loop lags more than this a quarter of the time over 2 s (0: off)",
        min=0.0, max=10.0, unit=" seconds")
    max_cpu: float = setting(
        0.85, "share of one core a gateway process may use: 503 above it, or when one more call\n"
              "would need more (the cost of a call is learnt as calls run; 0: off)", min=0.0, max=1.0)
    overload_retry_after: int = setting(10, "s: the Retry-After of a 503 for load", min=1, max=3600,
                                        unit=" seconds")


@dataclass(frozen=True)
class LogsConfig:
    redact_numbers: bool = setting(
        False, "true: numbers and fax idents in log lines keep only their last 4 digits (never in meta.json)")


@dataclass(frozen=True)
class Webhook:
    name: str = setting(doc='referred to by [[routes]] webhook; the first one is "default" unless named',
                        nonempty=True, example="default")
    url: str = setting(doc="https://, or http:// to loopback", check=_web_url, mask=_webhooks.redact_url,
                       example="https://ehr.example.org/fax")
    secret: str = setting(doc='whsec_ + base64 of at least 24 random bytes: "whsec_" + $(openssl rand -base64 32)',
                          secret=True, example="whsec_…")
    attach: str = setting("pdf", '"pdf" | "tiff" | "none"', choices=("pdf", "tiff", "none"))
    events: tuple[str, ...] = setting(_WEBHOOK_EVENTS, "which events are sent here",
                                      choices=_WEBHOOK_EVENTS)
    allow_plain_http: bool = setting(False, "http:// is refused except to loopback hosts unless true")
    max_attachment_bytes: int = setting(
        20 * 1024 * 1024, 'larger documents: "document" carries {"content_type", "filename", "url"} (the API URL)',
        min=0, max=2**31)

    @property
    def key(self) -> bytes:
        """The HMAC key: the base64-decoded part of the secret after ``whsec_``."""
        return base64.b64decode(self.secret.removeprefix("whsec_"))


@dataclass(frozen=True)
class Route:
    did: str = setting("", "regex on the called number (Request-URI user)", check=_regex)
    caller: str = setting("", "regex on the calling number", check=_regex)
    tsi: str = setting("", "regex on the remote fax ident: steers delivery only (known after phase B)", check=_regex)
    # A route's ``trunk`` names a [[sip.trunks]] entry or a listener's transport ("udp",
    # "tcp", "tls": the "line" a call came in on when no trunk matched its source).
    trunk: str = setting("", 'the trunk ([[sip.trunks]] name) or listener ("udp", "tcp", "tls") the call came\n'
                             "in on; naming neither is a config error. Kept for routing after phase B.")
    webhook: str = setting("", "the [[webhooks]] name that gets this fax", example="default")
    archive_subdir: str = setting("", "a folder under archive.dir", check=_relative_path)
    reject: bool = setting(False, "true: answer 603 before any media")


@dataclass(frozen=True)
class HttpConfig:
    listen: tuple[str, int] = setting(("127.0.0.1", 8080), "HOST:PORT of the API, /healthz and /metrics",
                                      toml="str", parse=_parse_host_port, render=lambda hp: _host_port(*hp))
    tokens: tuple[str, ...] = setting(
        (), "bearer tokens for /v1, each >= 32 characters; none: loopback clients only,\n"
            "and then listen must be a loopback address", secret=True, check=_api_tokens)
    certificate: str = setting("", "PEM certificate and unencrypted key, both or neither: the API serves HTTPS")
    private_key: str = setting("", secret=True)

    @property
    def base_url(self) -> str:
        """Where the API is reached: ``http[s]://HOST:PORT`` from ``listen`` (https with a
        certificate); a wildcard address is replaced by this host's name."""
        host, port = self.listen
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.certificate else 'http'}://{host}:{port}"


@dataclass(frozen=True)
class SendConfig:
    allow_direct_uri: bool = setting(False, "true: `to` may be a sip:/sips: URI dialled as is (not through a trunk)")
    initial_offer: str = setting("audio", '"audio" | "t38": what our first INVITE offers', choices=("audio", "t38"))
    header_line: bool = setting(True, 'our ident, date/time, "page n/m" on each page')
    retries: int = setting(3, "attempts after the first on busy, no answer or 5xx", min=0, max=20)
    retry_after: int = setting(60, "s before the first retry, doubling", min=1, max=86400, unit=" seconds")
    max_pages_per_job: int = setting(200, "a longer document is refused (4xx)", min=1, max=10000)
    max_calls_per_trunk: int = setting(0, "outbound calls at once on one trunk; 0 = no limit but limits.max_calls",
                                       min=0, max=100000)
    ring_timeout: int = setting(60, "s of ringing before we give up (CANCEL): no answer", min=5, max=600,
                                unit=" seconds")
    sender_name: str = setting("", "our name on the cover page and in the header line")
    cover_template: str = setting("", 'a cover page template (TOML, see t38gw/templates/cover.toml); "" = the shipped one')


def _parse_workers(value: Any, key: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1  # one trio process per core
    if isinstance(value, int) and 1 <= value <= 64:
        return value
    if isinstance(value, str) and value.isdigit() and 1 <= int(value) <= 64:
        return int(value)
    raise ConfigError(key, f'must be "auto" or 1..64, got {value!r}')


@dataclass(frozen=True)
class ServerConfig:
    # Issue 14: one trio process is one core.  N > 1: one process receives SIP and hands
    # each call (by Call-ID) to one of N worker processes (t38gw.workers).
    workers: int = setting(1, '"auto" (one per core) or 1..64 gateway processes sharing the SIP port',
                           toml="int|str", parse=_parse_workers, render=lambda n: n)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = setting(ServerConfig(), table=ServerConfig)
    sip: SipConfig = setting(SipConfig(), table=SipConfig)
    t38: T38Config = setting(T38Config(), table=T38Config)
    fax: FaxConfig = setting(FaxConfig(), table=FaxConfig)
    archive: ArchiveConfig = setting(ArchiveConfig(), table=ArchiveConfig)
    webhooks: tuple[Webhook, ...] = setting((), "optional, repeatable", tables=Webhook)
    routes: tuple[Route, ...] = setting((), "optional, repeatable; first match wins", tables=Route)
    http: HttpConfig = setting(HttpConfig(), table=HttpConfig)
    spool: str = setting("var/spool.db", "top-level key: the webhook spool (SQLite)")
    limits: LimitsConfig = setting(LimitsConfig(), table=LimitsConfig)
    logs: LogsConfig = setting(LogsConfig(), table=LogsConfig)
    send: SendConfig = setting(SendConfig(), table=SendConfig)
    audio: AudioConfig = setting(AudioConfig(), table=AudioConfig)
    retention: RetentionConfig = setting(RetentionConfig(), table=RetentionConfig)


# -- reading: the schema pass ----------------------------------------------------------------

def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML; None means embedded defaults), apply env overrides, validate.

    Raises ``ConfigError`` naming the first bad key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("", f"config file {str(path)!r} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"cannot read config file {str(path)!r}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            hint = ""
            if "Expected newline" in str(exc) and ";" in Path(path).read_text(encoding="utf-8", errors="replace"):
                hint = " (TOML separates keys with newlines, not ';')"
            raise ConfigError("", f"{path} is not valid TOML: {exc}{hint}") from None
    _apply_env(raw, os.environ if environ is None else environ)
    hooks = raw.get("webhooks")
    if isinstance(hooks, list) and hooks and isinstance(hooks[0], dict):
        hooks[0] = {"name": "default", **hooks[0]}  # the first webhook is "default" unless named
    config = _read(Config, raw, "")
    _check_relations(config)
    return config


_T = TypeVar("_T")


def _setting(f: Field[Any]) -> Setting:
    spec = f.metadata.get("setting")
    if not isinstance(spec, Setting):
        raise TypeError(f"configuration field {f.name!r} is not declared with setting()")
    return spec


_ANNOTATION_KINDS = {"str": "str", "bool": "bool", "int": "int", "float": "float",
                     "tuple[str, ...]": "list[str]", "tuple[int, ...]": "list[int]"}


def _kind(f: Field[Any]) -> str:
    """The key's TOML type: str, bool, int, float, list[str], list[int], table or tables."""
    spec = _setting(f)
    if spec.table is not None:
        return "table"
    if spec.tables is not None:
        return "tables"
    return spec.toml or _ANNOTATION_KINDS[str(f.type)]


def _read(cls: type[_T], table: Any, prefix: str) -> _T:
    """One TOML table as ``cls``: unknown keys, types, then each key's own rules, in field order."""
    if not isinstance(table, dict):
        raise ConfigError(prefix, "must be a table")
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for name in table:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(_dotted(prefix, name), ("unknown key" if prefix else "unknown section")
                              + (f"; did you mean {hint[0]!r}?" if hint else ""))
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in table:
            if f.default is MISSING:
                raise ConfigError(_dotted(prefix, f.name), "must be set")
            continue
        values[f.name] = _value(f, table[f.name], _dotted(prefix, f.name))
    return cls(**values)


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _value(f: Field[Any], value: Any, key: str) -> Any:
    spec, kind = _setting(f), _kind(f)
    if kind == "table":
        return _read(spec.table, value, key)  # type: ignore[arg-type]
    if kind == "tables":
        if not isinstance(value, list):
            raise ConfigError(key, f"must be an array of tables ([[{key}]])")
        return tuple(_read(spec.tables, entry, f"{key}[{index}]")  # type: ignore[arg-type]
                     for index, entry in enumerate(value))
    value = _typed(value, kind, key, spec)
    if spec.parse is not None:
        value = spec.parse(value, key)
    _check(value, key, spec)
    return value


_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "list[str]": "a list of strings", "list[int]": "a list of integers",
               "int|str": "an integer or a string"}


def _typed(value: Any, kind: str, key: str, spec: Setting) -> Any:
    """``value`` if it has the TOML type ``kind`` (an int is a float, a list a tuple, "a, b" a list of strings)."""
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}")
        return float(value)
    if kind == "int|str" and isinstance(value, int | str) and not isinstance(value, bool):
        return value
    if kind == "list[str]" and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    item = {"str": str, "int": int, "bool": bool, "list[str]": str, "list[int]": int}.get(kind)
    if kind.startswith("list["):
        if isinstance(value, list) and all(isinstance(v, item) and not isinstance(v, bool) for v in value):  # type: ignore[arg-type]
            return tuple(value)
    elif item is not None and isinstance(value, item) and (item is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(key, f"must be {_KIND_NAMES[kind]}, got {_shown(value, spec)}")


def _check(value: Any, key: str, spec: Setting) -> None:
    """The key's own rules: non-empty, choices, unique, range, then its ``check``."""
    shown = _shown(value, spec)
    if isinstance(value, tuple):
        if ((spec.nonempty and not value) or (spec.choices and any(v not in spec.choices for v in value))
                or (spec.unique and len(set(value)) != len(value))):
            rule = "a non-empty list" if spec.nonempty else "a list"
            if spec.choices:
                rule += " drawn from " + ", ".join(map(repr, spec.choices))
            if spec.unique:
                rule += ", each at most once"
            raise ConfigError(key, f"must be {rule}, got {shown}")
    else:
        if spec.nonempty and value == "":
            raise ConfigError(key, "must not be empty")
        if spec.choices and value not in spec.choices:
            raise ConfigError(key, f"must be {_alternatives(spec.choices)}, got {shown}")
        low, high = spec.min, spec.max
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                bound = f"{_number(low)}..{_number(high)}"
            else:
                bound = f"at least {_number(low)}" if low is not None else f"at most {_number(high)}"
            raise ConfigError(key, f"must be {bound}{spec.unit}, got {_number(value)}")
    if spec.check is not None and (problem := spec.check(value)):
        raise ConfigError(key, problem)


def _shown(value: Any, spec: Setting) -> str:
    """``value`` as an error message may show it: a secret never is."""
    if spec.secret:
        return "***"
    if spec.mask is not None and isinstance(value, str):
        value = spec.mask(value)
    return repr(list(value) if isinstance(value, tuple) else value)


def _alternatives(choices: tuple[Any, ...]) -> str:
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- rules between keys ----------------------------------------------------------------------

def _check_relations(config: Config) -> None:
    """What no single key can check: names that must exist or be unique, pairs, files, secrets."""
    sip, http = config.sip, config.http
    if any(lst.transport == "tls" for lst in sip.listen) and not (sip.tls.certificate and sip.tls.private_key):
        raise ConfigError("sip.tls", "a tls: listener needs sip.tls.certificate and sip.tls.private_key")
    if len({t.name for t in sip.trunks}) != len(sip.trunks):
        raise ConfigError("sip.trunks", "trunk names must be unique")
    if len({u.username for u in sip.users}) != len(sip.users):
        raise ConfigError("sip.users", "usernames must be unique")
    for index, hook in enumerate(config.webhooks):
        host = urllib.parse.urlsplit(hook.url).hostname or ""
        if hook.url.startswith("http:") and not hook.allow_plain_http and not is_loopback_host(host):
            # The body is patient data.
            raise ConfigError(f"webhooks[{index}].url", "plain http:// would send patient data unencrypted; use"
                              " https://, or set allow_plain_http = true on this webhook (loopback hosts are allowed)")
        try:
            _webhooks.secret_key(hook.secret, min_bytes=_webhooks.MIN_KEY_BYTES)
        except ValueError as exc:
            raise ConfigError(f"webhooks[{index}].secret", str(exc)) from None
    webhook_names = {w.name for w in config.webhooks}
    if len(webhook_names) != len(config.webhooks):
        raise ConfigError("webhooks", "webhook names must be unique")
    # A route's trunk is a [[sip.trunks]] name or a listener's transport (see Route.trunk).
    trunk_names = {t.name for t in sip.trunks} | {lst.transport for lst in sip.listen}
    for index, route in enumerate(config.routes):
        if route.trunk and route.trunk not in trunk_names:
            raise ConfigError(f"routes[{index}].trunk",
                              f"names no configured trunk or listener (have: {sorted(trunk_names)})")
        if route.webhook and route.webhook not in webhook_names:
            raise ConfigError(f"routes[{index}].webhook",
                              f"names no configured webhook (have: {sorted(webhook_names) or 'none'})")
    if not http.tokens and not is_loopback_host(http.listen[0]):
        raise ConfigError("http.listen", f"{_host_port(*http.listen)!r} is not a loopback address and http.tokens"
                                         " is empty: the API would be open to the network; set http.tokens or"
                                         " listen on 127.0.0.1")
    if bool(http.certificate) != bool(http.private_key):
        missing = "http.private_key" if http.certificate else "http.certificate"
        raise ConfigError(missing, "http.certificate and http.private_key go together (a PEM pair serves HTTPS)")
    if http.certificate:
        check_pem_pair(http.certificate, http.private_key, "http")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1 (no name resolution)."""
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_pem_pair(certificate: str, private_key: str, section: str) -> None:
    """Raise ``ConfigError`` naming ``<section>.certificate``/``.private_key`` unless they load as a pair."""
    for name, path in (("certificate", certificate), ("private_key", private_key)):
        try:
            with open(path, "rb") as handle:
                head = handle.read(1 << 16)
        except OSError as exc:
            raise ConfigError(f"{section}.{name}", f"cannot read {path!r}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in head:
            raise ConfigError(f"{section}.{name}", f"{path!r} is not a PEM file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key would make OpenSSL prompt on the terminal: refuse it instead.
        context.load_cert_chain(certificate, private_key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{section}.certificate", f"{certificate!r} and {private_key!r} do not load as a"
                                                    f" certificate and its private key: {exc}") from None


# -- environment overrides -------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``T38GW_<SECTION>_<KEY>`` overrides a scalar or list key (``T38GW_SPOOL`` the top-level one).

    The text is coerced by the key's declared type, never guessed from its look:
    ``T38GW_FAX_LOCAL_IDENT=5550100`` is the string "5550100", ``T38GW_FAX_ECM=0`` is
    false, ``T38GW_T38_VERSIONS=0,1`` is ``[0, 1]``.  Lists are JSON or comma-separated.
    A key of a sub-table joins its names: ``T38GW_SIP_TLS_CERTIFICATE`` sets ``[sip.tls]``.
    """
    sections = {f.name: f for f in fields(Config)}
    for name, text in environ.items():
        if not name.startswith("T38GW_"):
            continue
        section, _, key = name[len("T38GW_"):].lower().partition("_")
        top = sections.get(section)
        if top is None:
            continue  # not a config override (e.g. T38GW_TESTDATA)
        if _kind(top) != "table":
            if not key and _kind(top) != "tables":
                raw[section] = _coerce_env(text, _kind(top), section, name, _setting(top))
            continue
        if not key:
            continue
        f, table, dotted = _env_target(raw, section, _setting(top).table, key, name)  # type: ignore[arg-type]
        table[f.name] = _coerce_env(text, _kind(f), dotted, name, _setting(f))


def _env_target(raw: dict[str, Any], section: str, cls: type, key: str,
                variable: str) -> tuple[Field[Any], dict[str, Any], str]:
    """What ``T38GW_<SECTION>_<KEY>`` sets: the key's field, the raw table that holds it, its dotted name."""
    dotted = f"{section}.{key}"
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(section, "must be a table")
    for f in fields(cls):
        kind = _kind(f)
        if f.name == key:
            if kind in ("table", "tables"):
                raise ConfigError(dotted, f"is a table: set it in the TOML file, not with {variable}")
            return f, table, dotted
        if kind == "table" and key.startswith(f.name + "_"):
            for g in fields(_setting(f).table):  # type: ignore[arg-type]
                if g.name == key[len(f.name) + 1:]:
                    sub = table.setdefault(f.name, {})
                    if not isinstance(sub, dict):
                        raise ConfigError(f"{section}.{f.name}", "must be a table")
                    return g, sub, dotted
    raise ConfigError(dotted, f"unknown key (set by environment variable {variable})")


def _coerce_env(text: str, kind: str, key: str, variable: str, spec: Setting) -> Any:
    """Turn an environment variable's text into a value of ``kind`` or name both in the error."""
    def bad(why: str) -> ConfigError:
        return ConfigError(key, f"environment variable {variable}={'***' if spec.secret else repr(text)}: {why}")

    stripped = text.strip()
    if kind in ("str", "int|str"):
        return stripped if kind == "int|str" else text
    if kind == "bool":
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise bad("must be true/false, yes/no, on/off or 1/0")
    if kind == "int":
        if not re.fullmatch(r"[+-]?[0-9]+", stripped):
            raise bad("must be an integer")
        return int(stripped)
    if kind == "float":
        try:
            number = float(stripped)
        except ValueError:
            raise bad("must be a number") from None
        if not math.isfinite(number):
            raise bad("must be a finite number")
        return number
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise bad(f"is not a JSON list: {exc}") from None
        if not isinstance(items, list):
            raise bad("is not a JSON list")
    else:
        items = [part.strip() for part in stripped.split(",") if part.strip()]
    if kind == "list[str]":
        if not all(isinstance(v, str) for v in items):
            raise bad("must be a list of strings")
        return items
    values = []
    for v in items:
        if isinstance(v, str) and re.fullmatch(r"[+-]?[0-9]+", v.strip()):
            values.append(int(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            values.append(v)
        else:
            raise bad(f"must be a list of integers, {v!r} is not one")
    return values


# -- showing: redaction, TOML, the README reference, check-config -----------------------------

def redacted(config: _T) -> _T:
    """A copy of ``config`` (or of any schema dataclass) fit to print: every secret is ``***``
    (an empty one stays empty, so "none" still reads as none) and URLs lose credentials and query."""
    changes: dict[str, Any] = {}
    for f in fields(config):  # type: ignore[arg-type]
        spec, value = _setting(f), getattr(config, f.name)
        if spec.table is not None:
            changes[f.name] = redacted(value)
        elif spec.tables is not None:
            changes[f.name] = tuple(redacted(entry) for entry in value)
        elif spec.secret:
            changes[f.name] = tuple("***" for _ in value) if isinstance(value, tuple) else ("***" if value else "")
        elif spec.mask is not None:
            changes[f.name] = spec.mask(value)
    return replace(config, **changes)  # type: ignore[type-var]


def to_toml(config: Any, *, comments: bool = False) -> str:
    """``config`` as TOML that ``load_config`` reads back to it (run it through ``redacted``
    first to print it).  ``comments`` adds each key's description."""
    lines: list[str] = []
    _toml_table(config, "", comments, lines)
    return "\n".join(lines).strip("\n") + "\n"


def reference() -> str:
    """The README's configuration block: every key with its default and description; each
    repeatable table shown once with example values."""
    return to_toml(Config(), comments=True)


_COMMENT_COLUMN = 34


def _toml_table(obj: Any, prefix: str, comments: bool, lines: list[str]) -> None:
    subtables = []
    for f in fields(obj):
        spec, value = _setting(f), getattr(obj, f.name)
        if spec.table is not None or spec.tables is not None:
            subtables.append((f, spec, value))
            continue
        rendered = spec.render(value) if spec.render is not None else value
        _toml_line(f"{f.name} = {_toml_value(rendered)}", spec.doc if comments else "", lines)
    for f, spec, value in subtables:
        name = prefix + f.name
        if spec.table is not None:
            lines.append("")
            _toml_line(f"[{name}]", spec.doc if comments else "", lines)
            _toml_table(value, name + ".", comments, lines)
            continue
        entries = value
        if not entries and comments:
            entries = (_example(spec.tables),)  # type: ignore[arg-type]
        for entry in entries:
            lines.append("")
            _toml_line(f"[[{name}]]", spec.doc if comments else "", lines)
            _toml_table(entry, name + ".", comments, lines)


def _toml_line(text: str, doc: str, lines: list[str]) -> None:
    if not doc:
        lines.append(text)
        return
    first, *rest = doc.split("\n")
    pad = text.ljust(_COMMENT_COLUMN) if len(text) < _COMMENT_COLUMN else text + "   "
    lines.append(f"{pad}# {first}")
    lines.extend(" " * _COMMENT_COLUMN + f"# {more}" for more in rest)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _example(cls: type[_T]) -> _T:
    """An entry of a repeatable table as the README shows it."""
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        spec = _setting(f)
        values[f.name] = spec.example if spec.example is not _NO_EXAMPLE else f.default
    return cls(**values)


def describe(config: Config) -> str:
    """A human summary of what a configuration means (for ``t38gw check-config``).

    It is written from ``redacted(config)``: passwords, webhook secrets and API tokens
    print as ``***``, webhook URLs lose their credentials and query string.
    """
    config = redacted(config)
    sip, t38, fax, http, limits = config.sip, config.t38, config.fax, config.http, config.limits
    trunks = [f"{t.name} ({t.registrar}, user {t.username or '-'}, password {t.password or 'none'}"
              + (f", media latching {t.media_latching}" if t.media_latching else "") + ")" for t in sip.trunks]
    lines = [
        "SIP listeners: " + ", ".join(map(str, sip.listen)),
        "INVITEs accepted without auth from: " + ", ".join(map(str, sip.allow_from)),
        "Digest users for other peers: "
        + (", ".join(f"{u.username} (password {u.password})" for u in sip.users) or "none (other peers are refused)"),
        f"Answer after: {sip.answer_after:g} s of ringing (180)" if sip.answer_after else "Answer: at once",
        "T.38 re-INVITE after answering audio: "
        + ("never (wait for the peer)" if sip.t38_reinvite_after < 0 else f"{sip.t38_reinvite_after:g} s"),
        f"Media latching: {sip.media_latching}"
        + (" (media only from the SDP/SIP address)" if sip.media_latching == "strict" else " (NAT latching)"),
        f"Trunks: {'; '.join(trunks) or 'none'}",
        f"UDPTL ports {t38.udptl_ports[0]}-{t38.udptl_ports[1]} "
        f"({t38.udptl_ports[1] - t38.udptl_ports[0] + 1} concurrent calls at most)",
        f"T.38 error correction offered: {t38.error_correction}"
        + (f" (depth {t38.redundancy_depth})" if t38.error_correction == "redundancy" else "")
        + (f" (span {t38.fec_span}, entries {t38.fec_entries})" if t38.error_correction == "fec" else ""),
        f"T.38 versions {list(t38.versions)}, max bit rate {t38.max_bitrate}, max datagram {t38.max_datagram}",
        f"Fax: ident {fax.local_ident!r}, ECM {'on' if fax.ecm else 'off'}, compressions {', '.join(fax.compressions)}",
        f"Limits: {limits.max_calls} calls (then 503), {limits.max_pages_per_call} pages per call,"
        f" {limits.max_page_rows} rows per page, {limits.max_call_seconds} s per call",
        f"Archive: {config.archive.dir} as {', '.join(config.archive.formats)}",
        f"Audit log of API reads: {config.archive.audit_log}",
        f"Spool: {config.spool}",
        "Webhooks: " + (", ".join(
            f"{w.name} -> {w.url} (secret {w.secret or 'none'}, attach {w.attach},"
            f" inline up to {w.max_attachment_bytes} bytes{', plain http allowed' if w.allow_plain_http else ''})"
            for w in config.webhooks) or "none"),
        f"Routes: {len(config.routes)} (first match wins)" + ("" if config.routes else "; every accepted call uses the default route"),
        f"HTTP API: {'https' if http.certificate else 'http'}://{_host_port(*http.listen)}"
        + (f", {len(http.tokens)} bearer token(s) {' '.join(http.tokens)}" if http.tokens else ", no tokens: loopback clients only"),
        f"Logs: numbers and idents {'masked to their last 4 digits' if config.logs.redact_numbers else 'in full'}",
    ]
    return "\n".join(lines)


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m t38gw.config", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", action="store_true", help="print the README's configuration block")
    args = parser.parse_args()
    if args.reference:
        print(reference(), end="")
    else:
        parser.print_usage()


if __name__ == "__main__":
    _main()
