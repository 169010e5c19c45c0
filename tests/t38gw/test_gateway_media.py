"""Where a call's media may come from (hardening review item 1)."""

from t38gw.negotiation import media_source_host


def test_the_sdp_address_when_it_is_reachable():
    assert media_source_host("151.101.1.69", "93.184.216.34") == "151.101.1.69"
    assert media_source_host("127.0.0.1", "127.0.0.1") == "127.0.0.1"
    assert media_source_host("10.0.0.8", "10.0.0.9") == "10.0.0.8"  # a PBX on the same LAN


def test_the_sip_source_when_the_sdp_names_a_private_address_behind_nat():
    assert media_source_host("192.168.1.20", "93.184.216.34") == "93.184.216.34"
    assert media_source_host("0.0.0.0", "93.184.216.34") == "93.184.216.34"
    assert media_source_host("fe80::1", "2001:4860::8888") == "2001:4860::8888"


def test_a_hostname_in_the_sdp_means_the_sip_source():
    assert media_source_host("sbc.example.net", "93.184.216.34") == "93.184.216.34"
