"""The outbound dial plan (``t38gw.outbound``) on configurations read the way the gateway
reads them (``t38gw.config.load_config``), and the ``[send]`` / outbound trunk keys."""

from __future__ import annotations

import pytest

from t38gw.config import ConfigError, load_config
from t38gw.outbound import DialPlanError, normalise_number, plan_dial

TRUNKS = """
[[sip.trunks]]
name = "inbound-only"
registrar = "sip:in.example.net"

[[sip.trunks]]
name = "carrier"
registrar = "sip:sip.carrier.example:5070"
username = "acct42"
password = "pa55word"
outbound = true
proxy = "sip:sbc.carrier.example:5060;transport=tcp"
from_user = "5550199"
from_domain = "fax.hospital.example"

[[sip.trunks]]
name = "backup"
registrar = "sip:backup.example"
outbound = true
"""


def config(tmp_path, text: str):
    path = tmp_path / "t38gw.toml"
    path.write_text(text)
    return load_config(path)


def load_config_text(text: str):
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "t38gw.toml")
        with open(path, "w") as file:
            file.write(text)
        return load_config(path, environ={})


def test_a_number_goes_through_the_first_outbound_trunk(tmp_path):
    cfg = config(tmp_path, TRUNKS)
    target = plan_dial("+1 (555) 010-0100", cfg.sip.trunks, allow_direct_uri=cfg.send.allow_direct_uri)
    assert target.trunk == "carrier"
    assert target.number == "+15550100100"
    assert target.uri == "sip:+15550100100@sip.carrier.example:5070"
    assert target.proxy == "sip:sbc.carrier.example:5060;transport=tcp"
    assert (target.from_user, target.from_domain) == ("5550199", "fax.hospital.example")
    assert target.credentials == ("acct42", "pa55word")
    assert "pa55word" not in repr(target)


def test_trunk_defaults_the_from_and_the_proxy_to_the_registrar(tmp_path):
    cfg = config(tmp_path, TRUNKS.replace("outbound = true\nproxy", "outbound = false\nproxy", 1))
    target = plan_dial("5550100", cfg.sip.trunks, allow_direct_uri=False)
    assert target.trunk == "backup"
    assert target.uri == "sip:5550100@backup.example" and target.proxy == "sip:backup.example"
    assert target.from_user is None and target.from_domain == "backup.example"
    assert target.credentials is None  # no username: a 401/407 ends the call (auth_failed)


def test_no_outbound_trunk_is_a_clear_error(tmp_path):
    cfg = config(tmp_path, '[[sip.trunks]]\nname = "in"\nregistrar = "sip:in.example.net"\n')
    with pytest.raises(DialPlanError, match=r"no \[\[sip.trunks\]\] has outbound = true"):
        plan_dial("5550100", cfg.sip.trunks, allow_direct_uri=False)
    with pytest.raises(DialPlanError, match="outbound = true"):
        plan_dial("5550100", load_config(None).sip.trunks, allow_direct_uri=False)


def test_a_direct_uri_is_refused_unless_allowed(tmp_path):
    cfg = config(tmp_path, TRUNKS)
    assert cfg.send.allow_direct_uri is False
    with pytest.raises(DialPlanError, match="allow_direct_uri is false"):
        plan_dial("sip:fax@203.0.113.9", cfg.sip.trunks, allow_direct_uri=cfg.send.allow_direct_uri)
    allowed = config(tmp_path, TRUNKS + "\n[send]\nallow_direct_uri = true\n")
    target = plan_dial("sips:fax@gw.example:5061", allowed.sip.trunks, allow_direct_uri=allowed.send.allow_direct_uri)
    assert target.uri == "sips:fax@gw.example:5061" and target.trunk == "" and target.number == ""
    assert target.proxy == "" and target.credentials is None  # never the trunk's password to a stranger


@pytest.mark.parametrize("to", ["", "   ", "fax", "12ab34", "+", "mailto:x@y", "tel:+15550100", "1" * 33])
def test_what_is_neither_a_number_nor_a_sip_uri_is_refused(to):
    with pytest.raises(DialPlanError, match="`to`"):
        plan_dial(to, load_config(None).sip.trunks, allow_direct_uri=True)


@pytest.mark.parametrize("to", ["sip:", "sip:fax@", "sip:fax@[::1"])
def test_a_broken_direct_uri_is_refused(to):
    with pytest.raises(DialPlanError, match="SIP URI"):
        plan_dial(to, (), allow_direct_uri=True)


@pytest.mark.parametrize("text,number", [("+1 555 0100", "+15550100"), ("555.0100", "5550100"),
                                         ("(555) 0100", "5550100"), ("+", None), ("5550100#", None)])
def test_normalise_number(text, number):
    assert normalise_number(text) == number


def test_send_section_defaults():
    send = load_config(None).send
    assert (send.allow_direct_uri, send.initial_offer, send.header_line) == (False, "audio", True)
    assert (send.retries, send.retry_after, send.max_pages_per_job) == (3, 60, 200)
    [trunk] = load_config_text('[[sip.trunks]]\nname = "x"\nregistrar = "sip:x.example"\n').sip.trunks
    assert (trunk.outbound, trunk.proxy, trunk.from_user, trunk.from_domain) == (False, "", "", "")


@pytest.mark.parametrize("line,key,problem", [
    ('proxy = "sbc.example:5060"', "sip.trunks[0].proxy", "sip: or sips: URI"),
    ('proxy = "sip:sbc.example;transport=sctp"', "sip.trunks[0].proxy", "udp, tcp or tls"),
    ('outbound = "yes"', "sip.trunks[0].outbound", ""),
])
def test_bad_outbound_trunk_keys_name_the_key(tmp_path, line, key, problem):
    text = f'[[sip.trunks]]\nname = "c"\nregistrar = "sip:c.example"\n{line}\n'
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, text)
    assert caught.value.key == key and problem in caught.value.problem


@pytest.mark.parametrize("section,problem", [
    ('initial_offer = "fax"', "initial_offer"), ("retries = -1", "retries"), ("retry_after = 0", "retry_after"),
    ("max_pages_per_job = 0", "max_pages_per_job"),
])
def test_bad_send_keys_name_the_key(tmp_path, section, problem):
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, f"[send]\n{section}\n")
    assert caught.value.key == f"send.{problem}"


def test_send_keys_take_environment_overrides():
    cfg = load_config(None, environ={"T38GW_SEND_INITIAL_OFFER": "t38", "T38GW_SEND_ALLOW_DIRECT_URI": "true"})
    assert cfg.send.initial_offer == "t38" and cfg.send.allow_direct_uri is True
