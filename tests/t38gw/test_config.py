"""Configuration: defaults, env overrides, and one clear error naming the bad key."""

import subprocess
import sys

import pytest

from t38gw.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "t38gw.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_match_design():
    config = load_config(None, environ={})
    assert [str(lst) for lst in config.sip.listen] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert config.t38.udptl_ports == (40000, 40999)
    assert config.archive.dir == "var/archive"
    assert config.spool == "var/spool.db"
    assert config.http.listen == ("127.0.0.1", 8080)
    assert [str(n) for n in config.sip.allow_from] == ["127.0.0.0/8"]
    assert config.webhooks == ()


def test_full_design_example_loads(tmp_path):
    path = write(tmp_path, r'''
[sip]
listen = ["udp:127.0.0.1:5070"]
allow_from = ["127.0.0.0/8", "::1"]
t38_reinvite_after = -1
[[sip.trunks]]
name = "carrier"
registrar = "sip:sip.example.net"
username = "u"
password = "p"
expires = 600
[t38]
udptl_ports = "41000-41010"
error_correction = "fec"
fec_span = 4
[fax]
local_ident = "+1 555 0100"
[[webhooks]]
name = "default"
url = "https://ehr.example.org/fax"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[routes]]
did = "^\\+?1555010[0-9]$"
webhook = "default"
archive_subdir = "cardiology"
''')
    config = load_config(path, environ={})
    assert config.t38.udptl_ports == (41000, 41010)
    assert config.t38.error_correction == "fec" and config.t38.fec_span == 4
    assert config.sip.trunks[0].name == "carrier"
    assert config.sip.t38_reinvite_after == -1.0
    assert config.routes[0].archive_subdir == "cardiology"


def test_env_overrides_file(tmp_path):
    path = write(tmp_path, "[t38]\nredundancy_depth = 2\n")
    config = load_config(path, environ={"T38GW_T38_REDUNDANCY_DEPTH": "5", "T38GW_SIP_LISTEN": "udp:127.0.0.1:5999",
                                        "T38GW_TESTDATA": "/elsewhere"})
    assert config.t38.redundancy_depth == 5
    assert [str(lst) for lst in config.sip.listen] == ["udp:127.0.0.1:5999"]


@pytest.mark.parametrize("text, key", [
    ("[t38]\nmax_datagram = 'big'\n", "t38.max_datagram"),
    ("[t38]\nredundancy_depth = 99\n", "t38.redundancy_depth"),
    ("[t38]\nerror_corection = 'fec'\n", "t38.error_corection"),
    ("[sip]\nlisten = ['udp:0.0.0.0']\n", "sip.listen"),
    ("[sip]\nallow_from = ['not-an-ip']\n", "sip.allow_from"),
    ("[fax]\nlocal_ident = 'ACME HOSPITAL'\n", "fax.local_ident"),
    ("[fax]\ncompressions = ['mmr']\n", "fax.compressions"),
    ("[[webhooks]]\nname='a'\nurl='ftp://x'\nsecret='whsec_AAAA'\n", "webhooks[0].url"),
    ("[[routes]]\ndid='(['\n", "routes[0].did"),
    ("[[routes]]\nwebhook='nope'\n", "routes[0].webhook"),
    ("[[routes]]\narchive_subdir='../etc'\n", "routes[0].archive_subdir"),
    ("[sipp]\nx=1\n", "sipp"),
    ("[http]\nlisten='8080'\n", "http.listen"),
])
def test_bad_key_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == key


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'error_correction'"):
        load_config(write(tmp_path, "[t38]\nerror_corection = 'fec'\n"), environ={})


def test_not_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[sip\n"), environ={})


def test_check_config_cli(tmp_path):
    good = write(tmp_path, "[fax]\necm = false\n")
    result = subprocess.run([sys.executable, "-m", "t38gw.cli", "check-config", str(good)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ECM off" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[t38]\nmax_datagram = 5\n")
    result = subprocess.run([sys.executable, "-m", "t38gw.cli", "check-config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "t38.max_datagram" in result.stderr
    assert "Traceback" not in result.stderr


def test_semicolon_separated_keys_get_a_hint(tmp_path):
    # DESIGN.md's example writes several keys on one line with ';' -- not TOML.
    with pytest.raises(ConfigError, match="newlines, not ';'"):
        load_config(write(tmp_path, '[[sip.trunks]]\nname = "c"; registrar = "sip:x"\n'), environ={})


# -- issue 9: secrets, tokens, webhook URLs, HTTPS, environment overrides -------------------

import base64  # noqa: E402
import shutil  # noqa: E402

GOOD_SECRET = "whsec_" + base64.b64encode(bytes(range(24))).decode()
TOKEN = "t" * 32


def webhook(url="https://ehr.example.org/fax", secret=GOOD_SECRET, extra=""):
    return f'[[webhooks]]\nname = "default"\nurl = "{url}"\nsecret = "{secret}"\n{extra}'


@pytest.mark.parametrize("secret, why", [
    ("whsec_abc", "base64"),                                                     # issue 9 item 5
    ("whsec_" + base64.b64encode(b"x" * 20).decode(), "20 bytes"),              # decodes, too short
    ("whsec_" + base64.b64encode(b"x" * 30).decode() + "!", "base64"),
    (base64.b64encode(b"x" * 30).decode(), "whsec_"),
])
def test_bad_webhook_secret_is_refused_at_load_without_echoing_it(tmp_path, secret, why):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, webhook(secret=secret)), environ={})
    assert info.value.key == "webhooks[0].secret" and why in str(info.value)
    assert secret.removeprefix("whsec_") not in str(info.value)


def test_a_24_byte_secret_is_accepted_and_its_key_decoded(tmp_path):
    config = load_config(write(tmp_path, webhook()), environ={})
    assert config.webhooks[0].key == bytes(range(24))


@pytest.mark.parametrize("url, extra, ok", [
    ("https://ehr.example.org/fax", "", True),
    ("http://ehr.example.org/fax", "", False),
    ("http://ehr.example.org/fax", "allow_plain_http = true\n", True),
    ("http://127.0.0.1:9000/fax", "", True),
    ("http://127.9.9.9/fax", "", True),
    ("http://localhost/fax", "", True),
    ("http://[::1]:9000/fax", "", True),
    ("http://10.0.0.5/fax", "", False),
    ("ftp://ehr.example.org/fax", "allow_plain_http = true\n", False),
    ("https:///fax", "", False),
])
def test_webhooks_need_https_except_to_loopback(tmp_path, url, extra, ok):
    path = write(tmp_path, webhook(url=url, extra=extra))
    if ok:
        assert load_config(path, environ={}).webhooks[0].url == url
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.key == "webhooks[0].url"


def test_max_attachment_bytes_defaults_to_20_mib(tmp_path):
    assert load_config(write(tmp_path, webhook()), environ={}).webhooks[0].max_attachment_bytes == 20 * 1024 * 1024
    config = load_config(write(tmp_path, webhook(extra="max_attachment_bytes = 1000\n")), environ={})
    assert config.webhooks[0].max_attachment_bytes == 1000


@pytest.mark.parametrize("tokens", [[""], ["short"], ["x" * 31], [TOKEN, ""], [" " + "y" * 32]])
def test_empty_or_short_api_tokens_are_refused(tmp_path, tokens):
    # Issue 9 item 6: tokens = [""] used to let a bare "Authorization: Bearer" in.
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[http]\ntokens = {tokens!r}\n".replace("'", '"')), environ={})
    assert info.value.key == "http.tokens"
    assert all(not t.strip() or t.strip() not in str(info.value) for t in tokens)


def test_a_32_character_token_is_accepted(tmp_path):
    assert load_config(write(tmp_path, f'[http]\ntokens = ["{TOKEN}"]\n'), environ={}).http.tokens == (TOKEN,)


@pytest.mark.parametrize("listen, tokens, ok", [
    ("127.0.0.1:8080", "", True),
    ("[::1]:8080", "", True),
    ("localhost:8080", "", True),
    ("0.0.0.0:8080", "", False),
    ("192.0.2.10:8080", "", False),
    ("0.0.0.0:8080", f'tokens = ["{TOKEN}"]', True),
])
def test_an_api_open_beyond_loopback_needs_tokens(tmp_path, listen, tokens, ok):
    path = write(tmp_path, f'[http]\nlisten = "{listen}"\n{tokens}\n')
    if ok:
        load_config(path, environ={})
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.key == "http.listen" and "http.tokens" in str(info.value)


def pem_pair(tmp_path, name):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: it makes the TLS test certificate")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_pair_is_checked_at_load(tmp_path):
    cert, key = pem_pair(tmp_path, "a")
    other_cert, other_key = pem_pair(tmp_path, "b")
    good = load_config(write(tmp_path, f'[http]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'), environ={})
    assert (good.http.certificate, good.http.private_key) == (str(cert), str(key))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for text, bad_key in [
        (f'certificate = "{cert}"\n', "http.private_key"),
        (f'private_key = "{key}"\n', "http.certificate"),
        (f'certificate = "{tmp_path / "missing.crt"}"\nprivate_key = "{key}"\n', "http.certificate"),
        (f'certificate = "{cert}"\nprivate_key = "{not_pem}"\n', "http.private_key"),
        (f'certificate = "{cert}"\nprivate_key = "{other_key}"\n', "http.certificate"),  # not its key
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, "[http]\n" + text), environ={})
        assert info.value.key == bad_key, text


@pytest.mark.parametrize("variable, value, attribute, expected", [
    ("T38GW_FAX_LOCAL_IDENT", "5550100", ("fax", "local_ident"), "5550100"),           # issue 9 item 7
    ("T38GW_FAX_ECM", "0", ("fax", "ecm"), False),
    ("T38GW_FAX_ECM", "1", ("fax", "ecm"), True),
    ("T38GW_FAX_ECM", "false", ("fax", "ecm"), False),
    ("T38GW_FAX_ECM", "TRUE", ("fax", "ecm"), True),
    ("T38GW_FAX_ECM", "no", ("fax", "ecm"), False),
    ("T38GW_FAX_ECM", "yes", ("fax", "ecm"), True),
    ("T38GW_T38_VERSIONS", "0,1", ("t38", "versions"), (0, 1)),
    ("T38GW_T38_VERSIONS", "[0, 1, 3]", ("t38", "versions"), (0, 1, 3)),
    ("T38GW_T38_MAX_BITRATE", "9600", ("t38", "max_bitrate"), 9600),
    ("T38GW_T38_UDPTL_PORTS", "41000-41099", ("t38", "udptl_ports"), (41000, 41099)),
    ("T38GW_FAX_COMPRESSIONS", "mh, mmr", ("fax", "compressions"), ("mh", "mmr")),
    ("T38GW_FAX_COMPRESSIONS", '["mh", "mr"]', ("fax", "compressions"), ("mh", "mr")),
    ("T38GW_SIP_T38_REINVITE_AFTER", "-1", ("sip", "t38_reinvite_after"), -1.0),
    ("T38GW_SIP_ANSWER_AFTER", "2.5", ("sip", "answer_after"), 2.5),
    ("T38GW_SIP_MEDIA_LATCHING", "learn", ("sip", "media_latching"), "learn"),
    ("T38GW_SIP_PUBLIC_ADDRESS", "203.0.113.7", ("sip", "public_address"), "203.0.113.7"),
    ("T38GW_LIMITS_MAX_CALLS", "10", ("limits", "max_calls"), 10),
    ("T38GW_LIMITS_MAX_PAGES_PER_CALL", "50", ("limits", "max_pages_per_call"), 50),
    ("T38GW_LIMITS_MAX_PAGE_ROWS", "4000", ("limits", "max_page_rows"), 4000),
    ("T38GW_LIMITS_MAX_CALL_SECONDS", "600", ("limits", "max_call_seconds"), 600),
    ("T38GW_LOGS_REDACT_NUMBERS", "yes", ("logs", "redact_numbers"), True),
    ("T38GW_ARCHIVE_AUDIT_LOG", "/srv/fax/audit.jsonl", ("archive", "audit_log"), "/srv/fax/audit.jsonl"),
    ("T38GW_ARCHIVE_DIR", "1234", ("archive", "dir"), "1234"),
    ("T38GW_ARCHIVE_FORMATS", "pdf", ("archive", "formats"), ("pdf",)),
    ("T38GW_HTTP_TOKENS", f"{TOKEN},{'u' * 40}", ("http", "tokens"), (TOKEN, "u" * 40)),
    ("T38GW_HTTP_LISTEN", "127.0.0.1:9090", ("http", "listen"), ("127.0.0.1", 9090)),
])
def test_env_override_is_coerced_by_the_declared_type(variable, value, attribute, expected):
    section, key = attribute
    config = load_config(None, environ={variable: value})
    assert getattr(getattr(config, section), key) == expected


def test_env_overrides_top_level_spool_and_sip_lists():
    config = load_config(None, environ={"T38GW_SPOOL": "/srv/spool.db", "T38GW_SIP_ALLOW_FROM": "10.0.0.0/8,::1",
                                        "T38GW_SIP_LISTEN": '["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]'})
    assert config.spool == "/srv/spool.db"
    assert [str(n) for n in config.sip.allow_from] == ["10.0.0.0/8", "::1/128"]
    assert [str(lst) for lst in config.sip.listen] == ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]


@pytest.mark.parametrize("variable, value, key", [
    ("T38GW_FAX_ECM", "maybe", "fax.ecm"),
    ("T38GW_LIMITS_MAX_CALLS", "ten", "limits.max_calls"),
    ("T38GW_LIMITS_MAX_CALLS", "1.5", "limits.max_calls"),
    ("T38GW_T38_VERSIONS", "0,x", "t38.versions"),
    ("T38GW_T38_VERSIONS", "[0, true]", "t38.versions"),
    ("T38GW_T38_VERSIONS", "[0, 1", "t38.versions"),
    ("T38GW_SIP_ANSWER_AFTER", "soon", "sip.answer_after"),
    ("T38GW_SIP_ANSWER_AFTER", "nan", "sip.answer_after"),
    ("T38GW_LOGS_REDACT_NUMBERS", "2", "logs.redact_numbers"),
    ("T38GW_FAX_COMPRESSIONS", "[1, 2]", "fax.compressions"),
])
def test_env_value_that_cannot_be_coerced_names_key_and_variable(variable, value, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={variable: value})
    assert info.value.key == key and variable in str(info.value)


def test_env_errors_never_echo_a_token():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"T38GW_HTTP_TOKENS": '["secret-token-value", 1]'})
    assert info.value.key == "http.tokens" and "secret-token-value" not in str(info.value)


@pytest.mark.parametrize("variable, key", [("T38GW_FAX_NO_SUCH_KEY", "fax.no_such_key"),
                                           ("T38GW_SIP_TRUNKS", "sip.trunks"), ("T38GW_SIP_USERS", "sip.users")])
def test_env_unknown_or_table_keys_are_named(variable, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={variable: "x"})
    assert info.value.key == key and variable in str(info.value)


def test_env_sets_the_sip_tls_pair(tmp_path):
    config = load_config(None, environ={"T38GW_SIP_TLS_CERTIFICATE": "/etc/t38gw/sip.crt",
                                        "T38GW_SIP_TLS_PRIVATE_KEY": "/etc/t38gw/sip.key"})
    assert (config.sip.tls.certificate, config.sip.tls.private_key) == ("/etc/t38gw/sip.crt", "/etc/t38gw/sip.key")


def test_sip_auth_algorithms_order_and_values(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[sip]\nauth_algorithms = ["MD5"]\n')
    assert load_config(path, environ={}).sip.auth_algorithms == ("MD5",)
    assert load_config(None, environ={}).sip.auth_algorithms == ("SHA-256", "MD5")
    for bad in ('[]', '["SHA-512"]', '["MD5", "MD5"]'):
        path.write_text(f'[sip]\nauth_algorithms = {bad}\n')
        with pytest.raises(ConfigError) as error:
            load_config(path, environ={})
        assert error.value.key == "sip.auth_algorithms"


# -- issue 11 item 4: one schema; parsing, env, masking and the README derive from it -------

import dataclasses  # noqa: E402
import tomllib  # noqa: E402

from tests.conftest import REPO  # noqa: E402
from t38gw import config as schema  # noqa: E402


def schema_keys(cls=schema.Config, prefix=""):
    """(dotted key, field, Setting, TOML kind) of every key, tables and arrays of tables included."""
    for f in dataclasses.fields(cls):
        spec, kind = schema._setting(f), schema._kind(f)
        yield prefix + f.name, f, spec, kind
        if kind in ("table", "tables"):
            yield from schema_keys(spec.table or spec.tables, f"{prefix}{f.name}{'[0]' if spec.tables else ''}.")


def test_every_key_is_declared_once_with_a_type_and_a_description():
    keys = list(schema_keys())
    assert len(keys) == len({k for k, *_ in keys}) > 60
    for key, f, spec, kind in keys:
        assert kind in ("str", "bool", "int", "float", "list[str]", "list[int]", "int|str", "table", "tables"), key
        if kind not in ("table", "tables") and f.name not in ("private_key", "username", "password", "secret"):
            assert spec.doc, f"{key} has no description for the README"
        if f.default is dataclasses.MISSING:
            assert spec.example is not schema._NO_EXAMPLE, f"{key} is required: the README needs an example"


def readme_config_block():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```toml\n", text.index("\n## Configuration\n")) + len("```toml\n")
    return text[start:text.index("```\n", start)]


def test_readme_config_reference_is_the_schema():
    assert readme_config_block() == schema.reference(), "run `python -m t38gw.config --reference` into README.md"


def test_reference_is_printed_by_the_module():
    result = subprocess.run([sys.executable, "-m", "t38gw.config", "--reference"], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout == schema.reference()


def test_reference_defaults_load_back_to_the_defaults():
    # Every key's rendered default parses to the default: what the README shows is what runs.
    parsed = tomllib.loads(schema.reference())
    for table in ("webhooks", "routes"):
        parsed.pop(table)  # examples of repeatable tables, not defaults
    for table in ("trunks", "users"):
        parsed["sip"].pop(table)
    assert schema._read(schema.Config, parsed, "") == schema.Config()
    assert schema._read(schema.Config, tomllib.loads(schema.to_toml(schema.Config())), "") == schema.Config()


FULL = f'''
spool = "/srv/spool.db"
[sip]
listen = ["udp:127.0.0.1:5070", "tcp:[::1]:5071"]
allow_from = ["10.0.0.0/8", "::1"]
t38_reinvite_after = -1.5
answer_after = 2
media_latching = "learn"
auth_algorithms = ["MD5"]
[[sip.trunks]]
name = "carrier"
registrar = "sip:sip.example.net"
password = "trunk-secret-1"
expires = 120
media_latching = "strict"
[[sip.users]]
username = "pbx"
password = "user-secret-2"
[t38]
udptl_ports = "41000-41010"
error_correction = "fec"
versions = [0, 3]
max_bitrate = 9600
[fax]
local_ident = "+1 555 0100"
ecm = false
compressions = ["mh"]
[archive]
formats = ["tiff"]
[limits]
max_calls = 7
[logs]
redact_numbers = true
[[webhooks]]
url = "https://user:url-secret-3@ehr.example.org/fax?k=query-secret-4"
secret = "{GOOD_SECRET}"
events = ["fax.received"]
[[routes]]
did = "^1"
trunk = "carrier"
webhook = "default"
reject = true
[http]
listen = "[::1]:9090"
tokens = ["{"s" * 40}"]
'''
FULL_SECRETS = ["trunk-secret-1", "user-secret-2", "url-secret-3", "query-secret-4",
                GOOD_SECRET.removeprefix("whsec_"), "s" * 40]


def test_a_full_config_round_trips_through_toml(tmp_path):
    config = load_config(write(tmp_path, FULL), environ={})
    assert config.sip.listen[1].host == "::1" and config.http.listen == ("::1", 9090)
    assert config.webhooks[0].name == "default" and config.sip.trunks[0].expires == 120
    again = load_config(write(tmp_path, schema.to_toml(config)), environ={})
    assert again == config


def test_every_secret_key_is_masked_by_describe_and_the_effective_dump(tmp_path):
    config = load_config(write(tmp_path, FULL), environ={})
    secret_keys = [key for key, _f, spec, _k in schema_keys() if spec.secret]
    assert set(secret_keys) >= {"sip.trunks[0].password", "sip.users[0].password", "webhooks[0].secret",
                                "http.tokens", "http.private_key", "sip.tls.private_key"}
    for text in (schema.describe(config), schema.to_toml(schema.redacted(config))):
        assert "***" in text
        for secret in FULL_SECRETS:
            assert secret not in text
    assert "ehr.example.org/fax" in schema.to_toml(schema.redacted(config))


def test_check_config_effective_prints_every_key_without_secrets(tmp_path):
    result = subprocess.run([sys.executable, "-m", "t38gw.cli", "check-config", "--effective",
                             str(write(tmp_path, FULL))], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for secret in FULL_SECRETS:
        assert secret not in result.stdout
    effective = tomllib.loads(result.stdout.split("# effective configuration", 1)[1].split("\n", 1)[1])
    assert effective["limits"] == {"max_calls": 7, "max_pages_per_call": 200, "max_page_rows": 32768,
                                   "max_call_seconds": 7200, "max_event_loop_lag": 0.15, "max_cpu": 0.85,
                                   "overload_retry_after": 10}
    assert effective["http"]["tokens"] == ["***"] and effective["sip"]["trunks"][0]["password"] == "***"


def bad_values(spec, kind, default):
    """Values the schema must refuse for a key, derived from its declared type, range and choices."""
    wrong_type = {"str": 5, "bool": "yes", "int": "5", "float": "soon", "list[str]": [1], "list[int]": ["a"],
                  "int|str": 1.5}
    yield wrong_type[kind]
    if spec.min is not None:
        yield type(default)(spec.min - 1)
    if spec.max is not None:
        yield type(default)(spec.max + 1)
    if spec.choices:
        bogus = "bogus" if kind.endswith("str]") or kind == "str" else 12345
        yield [bogus] if kind.startswith("list") else bogus


SECTION_KEYS = [(key, f, spec, kind) for key, f, spec, kind in schema_keys()
                if kind not in ("table", "tables") and "[" not in key and "." in key and not key.startswith("sip.tls.")]


@pytest.mark.parametrize("key, f, spec, kind", SECTION_KEYS, ids=[k for k, *_ in SECTION_KEYS])
def test_type_range_and_choice_errors_name_the_key(tmp_path, key, f, spec, kind):
    section, name = key.split(".")
    for value in bad_values(spec, kind, f.default):
        text = f"[{section}]\n{name} = {schema._toml_value(value)}\n"
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), environ={})
        assert info.value.key == key, (value, str(info.value))
        if spec.secret:
            assert repr(value) not in str(info.value)


@pytest.mark.parametrize("key, f, spec, kind", SECTION_KEYS, ids=[k for k, *_ in SECTION_KEYS])
def test_every_key_can_be_set_from_the_environment_by_its_declared_type(key, f, spec, kind):
    # The env text of each key's default (as its TOML renders it) loads back to the default.
    section, name = key.split(".")
    rendered = spec.render(f.default) if spec.render else f.default
    if kind == "bool":
        text = "yes" if rendered else "off"
    elif kind.startswith("list"):
        text = ",".join(map(str, rendered)) or "[]"
    else:
        text = str(rendered)
    if key == "http.tokens":
        rendered, text = (TOKEN,), TOKEN
    config = load_config(None, environ={f"T38GW_{section.upper()}_{name.upper()}": text})
    expected = spec.parse(tuple(rendered) if kind.startswith("list") else rendered, key) if spec.parse else rendered
    assert getattr(getattr(config, section), name) == (tuple(expected) if kind.startswith("list") else expected)


@pytest.mark.parametrize("text, key, suggestion", [
    ('[[sip.trunks]]\nname = "c"\nregistrar = "sip:x"\npasword = "p"\n', "sip.trunks[0].pasword", "password"),
    (f'[[webhooks]]\nurl = "https://x/"\nsecret = "{GOOD_SECRET}"\nevent = []\n', "webhooks[0].event", "events"),
    ('[sip.tls]\ncertficate = "a"\n', "sip.tls.certficate", "certificate"),
    ('[limits]\nmax_call = 5\n', "limits.max_call", "max_calls"),
    ('[limit]\nmax_calls = 5\n', "limit", "limits"),
])
def test_unknown_keys_in_any_table_get_a_suggestion(tmp_path, text, key, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == key and f"did you mean {suggestion!r}" in str(info.value)


@pytest.mark.parametrize("text, key", [
    ('[[sip.trunks]]\nregistrar = "sip:x"\n', "sip.trunks[0].name"),
    ('[[sip.users]]\nusername = "u"\n', "sip.users[0].password"),
    ('[[webhooks]]\nurl = "https://x/"\n', "webhooks[0].secret"),
    ('[[webhooks]]\nurl = "https://x/"\nsecret = "whsec_x"\n[[webhooks]]\nurl = "https://y/"\n', "webhooks[1].name"),
    ("[sip]\nanswer_after = nan\n", "sip.answer_after"),
    ("[sip]\nt38_reinvite_after = inf\n", "sip.t38_reinvite_after"),
])
def test_required_keys_and_non_finite_numbers_are_named(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == key
