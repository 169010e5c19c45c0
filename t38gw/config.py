"""Gateway configuration: TOML file, embedded defaults, ``T38GW_<SECTION>_<KEY>`` overrides.

Every key has a default (DESIGN.md "Configuration"), so ``t38gw serve`` with no file
runs.  A bad configuration is refused whole with one ``ConfigError`` naming the key
and why: a half-working gateway (one listener up, routing broken) would lose faxes
silently, which is worse than not starting.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import json
import os
import re
import socket
import ssl
import tomllib
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from t38gw import webhooks as _webhooks


class ConfigError(Exception):
    """A configuration value is wrong.  ``key`` is the dotted key, e.g. ``t38.max_datagram``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


# T.30 Table 3: the identity (CSI/TSI) is up to 20 characters of digits, space and "+".
_T30_IDENT = re.compile(r"^[0-9+ ]{0,20}$")
_LISTEN = re.compile(r"^(udp|tcp|tls):(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})$")


@dataclass(frozen=True)
class Listener:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class Trunk:
    name: str
    registrar: str
    username: str = ""
    password: str = ""
    expires: int = 600
    media_latching: str = ""  # "" = the [sip] media_latching default


@dataclass(frozen=True)
class SipUser:
    """Digest credentials a peer outside ``allow_from`` may use (RFC 3261 22.4)."""

    username: str
    password: str


@dataclass(frozen=True)
class TlsConfig:
    certificate: str = ""
    private_key: str = ""


@dataclass(frozen=True)
class SipConfig:
    listen: tuple[Listener, ...] = (Listener("udp", "0.0.0.0", 5060), Listener("tcp", "0.0.0.0", 5060))
    public_address: str = ""
    allow_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
    t38_reinvite_after: float = 0.0
    answer_after: float = 0.0
    trunks: tuple[Trunk, ...] = ()
    tls: TlsConfig = TlsConfig()
    media_latching: str = "strict"  # "strict" | "learn"
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # digest challenges offered, in order (RFC 8760 2.4)
    users: tuple[SipUser, ...] = ()


@dataclass(frozen=True)
class T38Config:
    udptl_ports: tuple[int, int] = (40000, 40999)
    error_correction: str = "redundancy"
    redundancy_depth: int = 3
    fec_span: int = 3
    fec_entries: int = 3
    max_datagram: int = 400
    versions: tuple[int, ...] = (0, 1, 2, 3)
    max_bitrate: int = 14400


@dataclass(frozen=True)
class FaxConfig:
    local_ident: str = ""
    ecm: bool = True
    compressions: tuple[str, ...] = ("mh", "mr", "mmr")


@dataclass(frozen=True)
class ArchiveConfig:
    dir: str = "var/archive"
    formats: tuple[str, ...] = ("pdf", "tiff")
    audit_log: str = "var/audit.jsonl"  # JSON lines: every /v1 read of a fax or document


@dataclass(frozen=True)
class LimitsConfig:
    max_calls: int = 500  # beyond it: 503
    max_pages_per_call: int = 200
    max_page_rows: int = 32768
    max_call_seconds: int = 7200


@dataclass(frozen=True)
class LogsConfig:
    redact_numbers: bool = False  # true: numbers and idents in logs keep only their last 4 digits


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    secret: str
    attach: str = "pdf"
    events: tuple[str, ...] = ("fax.received", "fax.failed")
    allow_plain_http: bool = False  # http:// is refused except to loopback unless true
    max_attachment_bytes: int = 20 * 1024 * 1024  # above it the webhook carries the document's API URL

    @property
    def key(self) -> bytes:
        """The HMAC key: the base64-decoded part of the secret after ``whsec_``."""
        return base64.b64decode(self.secret.removeprefix("whsec_"))


@dataclass(frozen=True)
class Route:
    did: str = ""
    caller: str = ""
    tsi: str = ""
    trunk: str = ""
    webhook: str = ""
    archive_subdir: str = ""
    reject: bool = False


@dataclass(frozen=True)
class HttpConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    tokens: tuple[str, ...] = ()
    certificate: str = ""  # PEM pair: serve HTTPS
    private_key: str = ""

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
class Config:
    sip: SipConfig = SipConfig()
    t38: T38Config = T38Config()
    fax: FaxConfig = FaxConfig()
    archive: ArchiveConfig = ArchiveConfig()
    webhooks: tuple[Webhook, ...] = ()
    routes: tuple[Route, ...] = ()
    http: HttpConfig = HttpConfig()
    spool: str = "var/spool.db"
    limits: LimitsConfig = LimitsConfig()
    logs: LogsConfig = LogsConfig()


_SECTIONS = {"sip", "t38", "fax", "archive", "webhooks", "routes", "http", "spool", "limits", "logs"}
_WEBHOOK_EVENTS = {"fax.received", "fax.failed", "fax.sent", "fax.send_failed"}


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
    return _build(raw)


_ENV_SECTIONS: dict[str, type] = {
    "sip": SipConfig, "t38": T38Config, "fax": FaxConfig, "archive": ArchiveConfig, "http": HttpConfig,
    "limits": LimitsConfig, "logs": LogsConfig,
}
# Keys whose TOML form differs from their dataclass type (the _build_* functions parse the text).
_ENV_TOML_KINDS = {
    "sip.listen": "list[str]", "sip.allow_from": "list[str]", "t38.udptl_ports": "str", "http.listen": "str",
    "sip.tls_certificate": "str", "sip.tls_private_key": "str",
}
# Tables of tables: only a TOML file can set them.
_NOT_FROM_ENV = {"sip.trunks", "sip.users", "sip.tls"}
# Keys whose value an error message must not repeat.
_SECRET_KEYS = {"http.tokens", "sip.tls_private_key"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_FIELD_KINDS = {"str": "str", "bool": "bool", "int": "int", "float": "float",
                "tuple[str, ...]": "list[str]", "tuple[int, ...]": "list[int]"}


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``T38GW_<SECTION>_<KEY>`` overrides a scalar or list key.

    The text is coerced by the key's declared type, never guessed from its look:
    ``T38GW_FAX_LOCAL_IDENT=5550100`` is the string "5550100", ``T38GW_FAX_ECM=0`` is
    false, ``T38GW_T38_VERSIONS=0,1`` is ``[0, 1]``.  Lists are JSON or comma-separated.
    ``T38GW_SIP_TLS_CERTIFICATE`` / ``_PRIVATE_KEY`` set ``[sip.tls]``.
    """
    for name, value in environ.items():
        if not name.startswith("T38GW_"):
            continue
        rest = name[len("T38GW_"):].lower()
        section, _, key = rest.partition("_")
        if section == "spool" and not key:
            raw["spool"] = value
            continue
        if section not in _ENV_SECTIONS or not key:
            continue  # not a config override (e.g. T38GW_TESTDATA)
        dotted = f"{section}.{key}"
        kind = _env_kind(section, key)
        if kind is None:
            if dotted in _NOT_FROM_ENV:
                raise ConfigError(dotted, f"is a table: set it in the TOML file, not with {name}")
            raise ConfigError(dotted, f"unknown key (set by environment variable {name})")
        coerced = _coerce_env(value, kind, dotted, name)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(section, "must be a table")
        if section == "sip" and key.startswith("tls_"):
            tls = table.setdefault("tls", {})
            if not isinstance(tls, dict):
                raise ConfigError("sip.tls", "must be a table")
            tls[key[len("tls_"):]] = coerced
        else:
            table[key] = coerced


def _env_kind(section: str, key: str) -> str | None:
    dotted = f"{section}.{key}"
    if dotted in _ENV_TOML_KINDS:
        return _ENV_TOML_KINDS[dotted]
    if dotted in _NOT_FROM_ENV:
        return None
    for f in fields(_ENV_SECTIONS[section]):
        if f.name == key:
            return _FIELD_KINDS.get(str(f.type))
    return None


def _coerce_env(text: str, kind: str, key: str, variable: str) -> Any:
    """Turn an environment variable's text into a value of ``kind`` or name both in the error."""
    def bad(why: str) -> ConfigError:
        shown = "" if key in _SECRET_KEYS else f" {text!r}"
        return ConfigError(key, f"environment variable {variable}={shown.strip() or '***'}: {why}")

    stripped = text.strip()
    if kind == "str":
        return text
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
        if number != number or number in (float("inf"), float("-inf")):
            raise bad("must be a finite number")
        return number
    item = kind[len("list["):-1]
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise bad(f"is not a JSON list: {exc}") from None
        if not isinstance(items, list):
            raise bad("is not a JSON list")
    else:
        items = [part.strip() for part in stripped.split(",") if part.strip()]
    if item == "str":
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


_SECRET_NAMES = {"password", "secret", "tokens"}


class _Reader:
    """Takes typed values out of one TOML table, naming the key in every error."""

    def __init__(self, table: Any, prefix: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(prefix, "must be a table")
        self.table = dict(table)
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def shown(self, name: str, value: Any) -> str:
        """``value`` as an error message may show it: secrets never are."""
        return "***" if name in _SECRET_NAMES else repr(value)

    def take(self, name: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        if name not in self.table:
            return default
        value = self.table.pop(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool and (not isinstance(kind, tuple) or bool not in kind):
            raise ConfigError(self.key(name), f"must be {_kind_name(kind)}, got {self.shown(name, value)}")
        if not isinstance(value, kind):
            raise ConfigError(self.key(name), f"must be {_kind_name(kind)}, got {self.shown(name, value)}")
        return value

    def take_list(self, name: str, default: tuple, item_kind: type) -> tuple:
        if name not in self.table:
            return default
        value = self.table.pop(name)
        if isinstance(value, str) and item_kind is str:
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, item_kind) and not isinstance(v, bool) for v in value):
            raise ConfigError(self.key(name), f"must be a list of {_kind_name(item_kind)}s, got {self.shown(name, value)}")
        return tuple(value)

    def finish(self, known: list[str]) -> None:
        for name in self.table:
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(self.key(name), f"unknown key{suggestion}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _build(raw: dict[str, Any]) -> Config:
    top = _Reader(raw, "")
    for name in raw:
        if name not in _SECTIONS:
            hint = difflib.get_close_matches(name, sorted(_SECTIONS), n=1)
            raise ConfigError(name, "unknown section" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    sip = _build_sip(top.table.pop("sip", {}))
    t38 = _build_t38(top.table.pop("t38", {}))
    fax = _build_fax(top.table.pop("fax", {}))
    archive = _build_archive(top.table.pop("archive", {}))
    webhooks = _build_webhooks(top.table.pop("webhooks", []))
    # A route's ``trunk`` names a [[sip.trunks]] entry or a listener's transport ("udp",
    # "tcp", "tls": the "line" a call came in on when no trunk matched its source).
    routes = _build_routes(top.table.pop("routes", []), {w.name for w in webhooks},
                           {t.name for t in sip.trunks} | {lst.transport for lst in sip.listen})
    http = _build_http(top.table.pop("http", {}))
    limits = _build_limits(top.table.pop("limits", {}))
    logs = _build_logs(top.table.pop("logs", {}))
    spool = top.take("spool", Config.spool, str)
    return Config(sip=sip, t38=t38, fax=fax, archive=archive, webhooks=webhooks, routes=routes, http=http, spool=spool,
                  limits=limits, logs=logs)


def _build_limits(table: Any) -> LimitsConfig:
    r = _Reader(table, "limits")
    config = LimitsConfig(
        max_calls=_bounded(r, "max_calls", LimitsConfig.max_calls, 1, 100000),
        # T.30 counts pages in one octet per block in ECM, but nothing bounds a call's
        # pages; 200 is a long document, and a bound keeps one caller from filling the disk.
        max_pages_per_call=_bounded(r, "max_pages_per_call", LimitsConfig.max_pages_per_call, 1, 10000),
        max_page_rows=_bounded(r, "max_page_rows", LimitsConfig.max_page_rows, 100, 65535),
        max_call_seconds=_bounded(r, "max_call_seconds", LimitsConfig.max_call_seconds, 60, 86400),
    )
    r.finish([f.name for f in fields(LimitsConfig)])
    return config


def _build_logs(table: Any) -> LogsConfig:
    r = _Reader(table, "logs")
    config = LogsConfig(redact_numbers=r.take("redact_numbers", False, bool))
    r.finish([f.name for f in fields(LogsConfig)])
    return config


_LATCHING = ("strict", "learn")


def _parse_listener(text: str, key: str) -> Listener:
    match = _LISTEN.match(text)
    if not match:
        raise ConfigError(key, f"{text!r} is not 'udp|tcp|tls:HOST:PORT'")
    transport, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
    if not 0 < port < 65536:
        raise ConfigError(key, f"port {port} is out of range 1-65535")
    return Listener(transport, host, port)


def _build_sip(table: Any) -> SipConfig:
    r = _Reader(table, "sip")
    listen = tuple(_parse_listener(t, "sip.listen") for t in r.take_list("listen", tuple(map(str, SipConfig.listen)), str))
    if not listen:
        raise ConfigError("sip.listen", "at least one listener is needed")
    allow = []
    for text in r.take_list("allow_from", ("127.0.0.0/8",), str):
        try:
            allow.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError("sip.allow_from", f"{text!r} is not an address or CIDR network") from None
    trunks = []
    tables = r.take("trunks", [], list)
    for index, t in enumerate(tables):
        tr = _Reader(t, f"sip.trunks[{index}]")
        name = tr.take("name", "", str)
        registrar = tr.take("registrar", "", str)
        if not name:
            raise ConfigError(tr.key("name"), "every trunk needs a name")
        if not registrar.startswith(("sip:", "sips:")):
            raise ConfigError(tr.key("registrar"), f"must be a sip: or sips: URI, got {registrar!r}")
        expires = tr.take("expires", 600, int)
        if not 60 <= expires <= 86400:
            raise ConfigError(tr.key("expires"), f"must be 60..86400 seconds, got {expires}")
        latching = tr.take("media_latching", "", str)
        if latching and latching not in _LATCHING:
            raise ConfigError(tr.key("media_latching"), f"must be 'strict' or 'learn', got {latching!r}")
        trunk = Trunk(name, registrar, tr.take("username", "", str), tr.take("password", "", str), expires, latching)
        tr.finish([f.name for f in fields(Trunk)])
        trunks.append(trunk)
    if len({t.name for t in trunks}) != len(trunks):
        raise ConfigError("sip.trunks", "trunk names must be unique")
    users = []
    for index, u in enumerate(r.take("users", [], list)):
        ur = _Reader(u, f"sip.users[{index}]")
        user = SipUser(ur.take("username", "", str), ur.take("password", "", str))
        if not user.username or not user.password:
            raise ConfigError(ur.key("username" if not user.username else "password"), "must not be empty")
        ur.finish([f.name for f in fields(SipUser)])
        users.append(user)
    if len({u.username for u in users}) != len(users):
        raise ConfigError("sip.users", "usernames must be unique")
    algorithms = r.take_list("auth_algorithms", SipConfig.auth_algorithms, str)
    if not algorithms or any(a not in ("SHA-256", "MD5") for a in algorithms) or len(set(algorithms)) != len(algorithms):
        raise ConfigError("sip.auth_algorithms", f"must list 'SHA-256' and/or 'MD5' once each, got {list(algorithms)}")
    latching = r.take("media_latching", "strict", str)
    if latching not in _LATCHING:
        raise ConfigError("sip.media_latching", f"must be 'strict' or 'learn', got {latching!r}")
    tls_table = r.take("tls", {}, dict)
    tr = _Reader(tls_table, "sip.tls")
    tls = TlsConfig(tr.take("certificate", "", str), tr.take("private_key", "", str))
    tr.finish(["certificate", "private_key"])
    if any(lst.transport == "tls" for lst in listen) and not (tls.certificate and tls.private_key):
        raise ConfigError("sip.tls", "a tls: listener needs sip.tls.certificate and sip.tls.private_key")
    config = SipConfig(
        listen=listen,
        public_address=r.take("public_address", "", str),
        allow_from=tuple(allow),
        t38_reinvite_after=r.take("t38_reinvite_after", 0.0, float),
        answer_after=r.take("answer_after", 0.0, float),
        trunks=tuple(trunks),
        tls=tls,
        media_latching=latching,
        users=tuple(users),
        auth_algorithms=tuple(algorithms),
    )
    if not 0.0 <= config.answer_after <= 60.0:
        # Well inside the 180 s after which the UA gives up on an unanswered INVITE (480).
        raise ConfigError("sip.answer_after", f"must be 0..60 seconds of ringing, got {config.answer_after:g}")
    r.finish([f.name for f in fields(SipConfig)])
    return config


def _build_t38(table: Any) -> T38Config:
    r = _Reader(table, "t38")
    ports_text = r.take("udptl_ports", "40000-40999", str)
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", ports_text)
    if not match:
        raise ConfigError("t38.udptl_ports", f"must be 'LOW-HIGH', got {ports_text!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if not (1024 <= low <= high <= 65535):
        raise ConfigError("t38.udptl_ports", f"range {low}-{high} must lie within 1024-65535 with LOW <= HIGH")
    error_correction = r.take("error_correction", "redundancy", str)
    if error_correction not in ("redundancy", "fec", "none"):
        raise ConfigError("t38.error_correction", f"must be 'redundancy', 'fec' or 'none', got {error_correction!r}")
    config = T38Config(
        udptl_ports=(low, high),
        error_correction=error_correction,
        redundancy_depth=_bounded(r, "redundancy_depth", 3, 0, 7),
        fec_span=_bounded(r, "fec_span", 3, 1, 15),
        fec_entries=_bounded(r, "fec_entries", 3, 1, 15),
        # Below ~100 octets no HDLC frame with redundancy fits; T.38 D.2.3 lets the peer
        # state its receive limit, ours must be sane.
        max_datagram=_bounded(r, "max_datagram", 400, 100, 65535),
        versions=r.take_list("versions", (0, 1, 2, 3), int),
        max_bitrate=r.take("max_bitrate", 14400, int),
    )
    if not config.versions or any(v not in (0, 1, 2, 3) for v in config.versions):
        raise ConfigError("t38.versions", f"must be a non-empty list drawn from 0, 1, 2, 3, got {list(config.versions)}")
    if config.max_bitrate not in (2400, 4800, 7200, 9600, 12000, 14400, 33600):
        raise ConfigError("t38.max_bitrate", f"must be one of 2400, 4800, 7200, 9600, 12000, 14400, 33600, got {config.max_bitrate}")
    r.finish([f.name for f in fields(T38Config)])
    return config


def _bounded(r: _Reader, name: str, default: int, low: int, high: int) -> int:
    value = r.take(name, default, int)
    if not low <= value <= high:
        raise ConfigError(r.key(name), f"must be {low}..{high}, got {value}")
    return value


def _build_fax(table: Any) -> FaxConfig:
    r = _Reader(table, "fax")
    ident = r.take("local_ident", "", str)
    if not _T30_IDENT.match(ident):
        raise ConfigError("fax.local_ident", f"T.30 identities are up to 20 digits, spaces or '+', got {ident!r}")
    compressions = r.take_list("compressions", ("mh", "mr", "mmr"), str)
    bad = [c for c in compressions if c not in ("mh", "mr", "mmr")]
    if bad or "mh" not in compressions:
        raise ConfigError("fax.compressions", f"must include 'mh' (T.30 mandates it) and only 'mh', 'mr', 'mmr', got {list(compressions)}")
    config = FaxConfig(local_ident=ident, ecm=r.take("ecm", True, bool), compressions=compressions)
    r.finish([f.name for f in fields(FaxConfig)])
    return config


def _build_archive(table: Any) -> ArchiveConfig:
    r = _Reader(table, "archive")
    formats = r.take_list("formats", ("pdf", "tiff"), str)
    if not formats or any(f not in ("pdf", "tiff") for f in formats):
        raise ConfigError("archive.formats", f"must be a non-empty list of 'pdf' and/or 'tiff', got {list(formats)}")
    config = ArchiveConfig(dir=r.take("dir", "var/archive", str), formats=formats,
                           audit_log=r.take("audit_log", ArchiveConfig.audit_log, str))
    if not config.dir:
        raise ConfigError("archive.dir", "must not be empty")
    r.finish([f.name for f in fields(ArchiveConfig)])
    return config


def _build_webhooks(tables: Any) -> tuple[Webhook, ...]:
    if not isinstance(tables, list):
        raise ConfigError("webhooks", "must be an array of tables ([[webhooks]])")
    hooks = []
    for index, table in enumerate(tables):
        r = _Reader(table, f"webhooks[{index}]")
        name = r.take("name", "default" if index == 0 else "", str)
        url = r.take("url", "", str)
        secret = r.take("secret", "", str)
        if not name:
            raise ConfigError(r.key("name"), "every webhook needs a name")
        allow_plain_http = r.take("allow_plain_http", False, bool)
        _check_webhook_url(url, allow_plain_http, r.key("url"))
        try:
            _webhooks.secret_key(secret, min_bytes=_webhooks.MIN_KEY_BYTES)
        except ValueError as exc:
            raise ConfigError(r.key("secret"), str(exc)) from None
        attach = r.take("attach", "pdf", str)
        if attach not in ("pdf", "tiff", "none"):
            raise ConfigError(r.key("attach"), f"must be 'pdf', 'tiff' or 'none', got {attach!r}")
        events = r.take_list("events", ("fax.received", "fax.failed"), str)
        unknown = [e for e in events if e not in _WEBHOOK_EVENTS]
        if unknown:
            raise ConfigError(r.key("events"), f"unknown event(s) {unknown}; known: {sorted(_WEBHOOK_EVENTS)}")
        max_attachment_bytes = _bounded(r, "max_attachment_bytes", Webhook.max_attachment_bytes, 0, 2**31)
        r.finish([f.name for f in fields(Webhook)])
        hooks.append(Webhook(name, url, secret, attach, events, allow_plain_http, max_attachment_bytes))
    if len({h.name for h in hooks}) != len(hooks):
        raise ConfigError("webhooks", "webhook names must be unique")
    return tuple(hooks)


def _check_webhook_url(url: str, allow_plain_http: bool, key: str) -> None:
    """https:// only, except to loopback or with ``allow_plain_http``: the body is patient data."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ConfigError(key, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(key, f"must be an https:// URL, got {_webhooks.redact_url(url)!r}")
    if parts.scheme == "http" and not allow_plain_http and not is_loopback_host(host):
        raise ConfigError(key, "plain http:// would send patient data unencrypted; use https://, or set"
                               " allow_plain_http = true on this webhook (loopback hosts are allowed)")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1 (no name resolution)."""
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build_routes(tables: Any, webhook_names: set[str], trunk_names: set[str]) -> tuple[Route, ...]:
    if not isinstance(tables, list):
        raise ConfigError("routes", "must be an array of tables ([[routes]])")
    routes = []
    for index, table in enumerate(tables):
        r = _Reader(table, f"routes[{index}]")
        values = {}
        for name in ("did", "caller", "tsi"):
            pattern = r.take(name, "", str)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(r.key(name), f"is not a valid regular expression: {exc}") from None
            values[name] = pattern
        route = Route(
            trunk=r.take("trunk", "", str),
            webhook=r.take("webhook", "", str),
            archive_subdir=r.take("archive_subdir", "", str),
            reject=r.take("reject", False, bool),
            **values,
        )
        if route.trunk and route.trunk not in trunk_names:
            raise ConfigError(r.key("trunk"), f"names no configured trunk or listener (have: {sorted(trunk_names)})")
        if route.webhook and route.webhook not in webhook_names:
            raise ConfigError(r.key("webhook"), f"names no configured webhook (have: {sorted(webhook_names) or 'none'})")
        if route.archive_subdir and (Path(route.archive_subdir).is_absolute() or ".." in Path(route.archive_subdir).parts):
            raise ConfigError(r.key("archive_subdir"), "must be a relative path inside the archive")
        r.finish([f.name for f in fields(Route)])
        routes.append(route)
    return tuple(routes)


def _build_http(table: Any) -> HttpConfig:
    r = _Reader(table, "http")
    listen = r.take("listen", "127.0.0.1:8080", str)
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError("http.listen", f"must be 'HOST:PORT', got {listen!r}")
    config = HttpConfig(listen=(host.strip("[]"), int(port)), tokens=r.take_list("tokens", (), str),
                        certificate=r.take("certificate", "", str), private_key=r.take("private_key", "", str))
    r.finish([f.name for f in fields(HttpConfig)])
    for number, token in enumerate(config.tokens, 1):
        # The token is never repeated in the message: check-config output ends up in tickets.
        if len(token) < MIN_TOKEN_CHARS or token != token.strip() or any(c.isspace() for c in token):
            raise ConfigError("http.tokens", f"token #{number} is {len(token)} characters; tokens must be at least"
                                             f" {MIN_TOKEN_CHARS} characters without spaces (e.g. the output of"
                                             " `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if not config.tokens and not is_loopback_host(config.listen[0]):
        raise ConfigError("http.listen", f"{listen!r} is not a loopback address and http.tokens is empty: the API"
                                         " would be open to the network; set http.tokens or listen on 127.0.0.1")
    if bool(config.certificate) != bool(config.private_key):
        missing = "http.private_key" if config.certificate else "http.certificate"
        raise ConfigError(missing, "http.certificate and http.private_key go together (a PEM pair serves HTTPS)")
    if config.certificate:
        check_pem_pair(config.certificate, config.private_key, "http")
    return config


MIN_TOKEN_CHARS = 32


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


def describe(config: Config) -> str:
    """A human summary of what a configuration means (for ``t38gw check-config``).

    Secrets never appear: passwords, webhook secrets and API tokens print as ``***``,
    webhook URLs lose their credentials and query string.
    """
    sip, t38, fax, http, limits = config.sip, config.t38, config.fax, config.http, config.limits
    trunks = [f"{t.name} ({t.registrar}, user {t.username or '-'}, password {'***' if t.password else 'none'}"
              + (f", media latching {t.media_latching}" if t.media_latching else "") + ")" for t in sip.trunks]
    lines = [
        "SIP listeners: " + ", ".join(map(str, sip.listen)),
        "INVITEs accepted without auth from: " + ", ".join(map(str, sip.allow_from)),
        "Digest users for other peers: "
        + (", ".join(f"{u.username} (password ***)" for u in sip.users) or "none (other peers are refused)"),
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
            f"{w.name} -> {_webhooks.redact_url(w.url)} (secret ***, attach {w.attach},"
            f" inline up to {w.max_attachment_bytes} bytes{', plain http allowed' if w.allow_plain_http else ''})"
            for w in config.webhooks) or "none"),
        f"Routes: {len(config.routes)} (first match wins)" + ("" if config.routes else "; every accepted call uses the default route"),
        f"HTTP API: {'https' if http.certificate else 'http'}://{_host_port(*http.listen)}"
        + (f", {len(http.tokens)} bearer token(s) ***" if http.tokens else ", no tokens: loopback clients only"),
        f"Logs: numbers and idents {'masked to their last 4 digits' if config.logs.redact_numbers else 'in full'}",
    ]
    return "\n".join(lines)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
