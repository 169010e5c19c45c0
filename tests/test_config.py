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
    assert [str(l) for l in config.sip.listen] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
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
    assert [str(l) for l in config.sip.listen] == ["udp:127.0.0.1:5999"]


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
