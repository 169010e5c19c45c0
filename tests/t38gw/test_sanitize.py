"""Numbers and idents in the record hold only what a number or ident can; the exact value survives percent-encoded."""

from urllib.parse import unquote

from t38gw.routing import facts_of_call
from t38gw.sanitize import call_identity, clean_ident, clean_number


def identity(**overrides):
    values = dict(call_id="abc@host", from_="\"Dr X\" <sip:5550199@carrier>;tag=1", to="<sip:5550100@gw>",
                  did="5550100", caller="+15550199", remote_addr="203.0.113.5:5060", trunk="carrier")
    values.update(overrides)
    return call_identity(**values)


def test_ordinary_values_are_kept_as_they_are_without_raw():
    sip = identity()
    assert sip["did"] == "5550100" and sip["caller"] == "+15550199" and sip["trunk"] == "carrier"
    assert "raw" not in sip


def test_markup_and_control_characters_are_replaced_and_kept_percent_encoded():
    hostile = "<script>alert(1)</script>"
    sip = identity(caller=hostile, from_="\"\x1b[31mX\" <sip:a@b>", did="555\u00a00100")
    assert "<" not in sip["caller"] and ">" not in sip["caller"]
    assert sip["caller"] == "_script_alert(1)__script_"
    assert "\x1b" not in sip["from"] and sip["did"] == "555_0100"
    assert unquote(sip["raw"]["caller"]) == hostile
    assert unquote(sip["raw"]["did"]) == "555\u00a00100"
    assert set(sip["raw"]) == {"caller", "from", "did"}


def test_routing_sees_the_exact_values_the_invite_carried():
    sip = identity(did="555;0100")
    assert sip["did"] == "555_0100"
    assert facts_of_call(sip).did == "555;0100"


def test_idents_keep_letters_but_not_markup():
    assert clean_ident("+1 555 0199") == "+1 555 0199"
    assert clean_ident("CLINIC <b>") == "CLINIC _b_"
    assert clean_number("1" * 100) == "1" * 64
